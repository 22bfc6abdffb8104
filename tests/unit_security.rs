//! The systemd unit stays tight: `systemd-analyze security --offline=true` rates
//! config/gatewayd.service at 1.5 or lower.
// Tests fail by panicking; unwrap/expect here are assertions, not error handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

const MOST_EXPOSURE: f64 = 1.5;

#[test]
fn systemd_analyze_rates_the_unit_at_most_1_5() {
    let unit = concat!(env!("CARGO_MANIFEST_DIR"), "/config/gatewayd.service");
    let output = match Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager", unit])
        .output()
    {
        Ok(output) => output,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("skipped: systemd-analyze is not installed (apt-get install systemd)");
            return;
        }
        Err(err) => panic!("systemd-analyze: {err}"),
    };
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .find(|line| line.contains("Overall exposure level"))
        .unwrap_or_else(|| {
            panic!(
                "no overall exposure in systemd-analyze's output: {text}{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    let score: f64 = line
        .split(": ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no score in {line:?}"));
    let open: Vec<&str> = text.lines().filter(|l| l.starts_with('✗')).collect();
    assert!(
        score <= MOST_EXPOSURE,
        "exposure {score} > {MOST_EXPOSURE}; still open:\n{}",
        open.join("\n")
    );
}

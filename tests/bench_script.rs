//! The benchmark is a script, not a timed test; CI only checks that `bench/run.sh --help` works.

// Tests fail by panicking; unwrap/expect here are assertions, not error handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[test]
fn bench_script_help_works_without_building_anything() {
    let output = std::process::Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/bench/run.sh"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let help = String::from_utf8_lossy(&output.stdout);
    for option in ["--duration", "--rounds", "--streams", "--soak", "--quick"] {
        assert!(
            help.contains(option),
            "--help does not document {option}:\n{help}"
        );
    }
}

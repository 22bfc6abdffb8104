//! Unit tests for the strong-key policy, key sources and keygen.

use super::policy::{ANYWHERE_WORD_LEN, DENYLIST, PLACEHOLDER_WORDS};
use super::*;
use std::collections::HashMap;

struct FakeEnv(HashMap<&'static str, String>);

impl Env for FakeEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
}

const GOOD: &str = "gwd_Q9vK2mX7pL4rT8wZ3nB6cF1hJ5sD0aGe";

#[test]
fn every_denylist_entry_is_refused() {
    for entry in DENYLIST {
        assert!(check_strength(entry).is_err(), "{entry} passed");
    }
    assert_eq!(
        check_strength("your-super-secret-jwt-token-with-at-least-32-characters-long"),
        Err(WeakKey::Denylisted)
    );
}

#[test]
fn good_key_passes() {
    assert_eq!(check_strength(GOOD), Ok(()));
}

#[test]
fn short_key_is_refused() {
    assert_eq!(
        check_strength("gwd_Q9vK2mX7pL4rT8wZ3nB6c"),
        Err(WeakKey::TooShort)
    );
}

#[test]
fn bad_characters_are_refused_without_trimming() {
    for key in [
        " gwd_Q9vK2mX7pL4rT8wZ3nB6cF1hJ5sD0aGe",
        "gwd_Q9vK2mX7pL4rT8wZ3nB6cF1hJ5sD0aGe\n",
        "gwd_Q9vK2mX7pL4rT8wZ3n\tB6cF1hJ5sD0aGe",
        "gwd_Q9vK2mX7pL4rT8wZ3nB6cF1hJ5sD0aGé",
        "gwd_Q9vK2mX7pL4rT8wZ3nB6cF1hJ5sD0aGe\u{0}",
        "gwd_Q9vK2mX7pL4rT8=wZ3nB6cF1hJ5sD0aGe",
        "gwd_Q9vK2mX7pL4rT8wZ3nB6cF1hJ5sD0aGe!",
    ] {
        assert_eq!(check_strength(key), Err(WeakKey::BadCharacter), "{key:?}");
    }
    assert_eq!(
        check_strength("gwd_Q9vK2mX7pL4rT8wZ3nB6cF1hJ5sD0aGe=="),
        Ok(())
    );
}

#[test]
fn too_few_distinct_characters_is_refused() {
    assert_eq!(
        check_strength("abababababababababababacacacacacadadadad"),
        Err(WeakKey::TooFewDistinct)
    );
}

#[test]
fn repeated_run_is_refused() {
    assert_eq!(
        check_strength("gwd_Q9vK2mX7pL4rT8wZZZZZZZZ3nB6cF1hJ5sD0aGe"),
        Err(WeakKey::RepeatedRun)
    );
    // Runs of 4 happen in random keys (about 1 in 6,000 base64 keys), so they pass.
    assert_eq!(
        check_strength("gwd_Q9vK2mX7pL4rT8wZZZZ3nB6cF1hJ5sD0aGe"),
        Ok(())
    );
}

#[test]
fn ascending_and_descending_runs_are_refused() {
    assert_eq!(
        check_strength("gwd_Q9vK2mX7pL4rT8wZ3nB6cF1hJ5sD0aGeMNOPQRST"),
        Err(WeakKey::SequentialRun)
    );
    assert_eq!(
        check_strength("gwd_Q9vK2mX7pL4rT8wZ3nB6cF1hJ5sD0aGe98765432"),
        Err(WeakKey::SequentialRun)
    );
    assert_eq!(
        check_strength("gwd_Q9vK2mX7pL4rT8wZ3nB6cF1hJ5sD0aGehgfedcba"),
        Err(WeakKey::SequentialRun)
    );
}

#[test]
fn placeholder_words_are_refused_in_any_case() {
    for word in PLACEHOLDER_WORDS {
        // Short words count only as words of their own (see ANYWHERE_WORD_LEN).
        let separator = if word.len() < ANYWHERE_WORD_LEN {
            "-"
        } else {
            ""
        };
        let key = format!(
            "Q9vK2mX7pL4rT8wZ3nB6cF1hJ5sD0aGe{separator}{}",
            word.to_uppercase()
        );
        assert_eq!(check_strength(&key), Err(WeakKey::PlaceholderWord), "{key}");
        let key = format!("{}_Q9vK2mX7pL4rT8wZ3nB6cF1hJ5sD0aGe", word);
        assert_eq!(check_strength(&key), Err(WeakKey::PlaceholderWord), "{key}");
    }
    for key in [
        "sk-test-Q9vK2mX7pL4rT8wZ3nB6cF1hJ5sD0aGe",
        "my-super-secret-key-with-enough-length-xyz",
        "your.key.goes.here.Q9vK2mX7pL4rT8wZ3nB6cF",
    ] {
        assert_eq!(check_strength(key), Err(WeakKey::PlaceholderWord), "{key}");
    }
    assert_eq!(
        check_strength("Q9vK2mX7pL4rT8wZ3nB6cF1hJ5sD0aGeSeCrEt"),
        Err(WeakKey::PlaceholderWord)
    );
}

#[test]
fn entropy_is_estimated_from_alphabet_and_length() {
    assert_eq!(Alphabet::of(&"7".repeat(40)).size, 10);
    let uuid = Alphabet::of("3f2b8c1e-9a4d-4e6f-8b2a-1c3d5e7f9a0b");
    assert_eq!((uuid.size, uuid.symbols), (16, 32));
    assert_eq!(Alphabet::of("q9vk2mx7pl4rt8wz3nb6cf1hj5sd0age").size, 36);
    assert_eq!(Alphabet::of("Q9vK2mX7pL4rT8wZ3nB6cF1hJ5sD0aGe").size, 62);
    let base64 = Alphabet::of("Q9vK2mX7pL4rT8wZ3nB6cF1hJ5sD0aGe+/Q9vK2mX7pL=");
    assert_eq!((base64.size, base64.symbols), (64, 44));
    // 32 digits carry about 106 bits: too few.
    assert_eq!(
        check_strength("73920584613049275816302947518206"),
        Err(WeakKey::LowEntropy)
    );
    // 28 hex characters are exactly 112 bits, but shorter than 32 characters.
    assert!(Alphabet::of("3f2b8c1e9a4d4e6f8b2a1c3d5e7f").bits() >= MIN_ENTROPY_BITS);
}

#[test]
fn thousand_generated_keys_pass() {
    for _ in 0..1000 {
        let key = generate().unwrap();
        assert!(key.starts_with("gwd_"));
        assert_eq!(key.len(), 4 + 43);
        assert_eq!(check_strength(&key), Ok(()), "generated key failed");
    }
}

#[test]
fn secret_debug_is_redacted() {
    let secret = Secret::new(GOOD.into());
    assert_eq!(format!("{secret:?}"), "[REDACTED]");
}

#[test]
fn weak_key_error_never_contains_the_key() {
    let env = FakeEnv(HashMap::from([(
        "API_SERVER_KEY",
        "changeme-please-0000".into(),
    )]));
    let err = load(&env, &[]).unwrap_err().to_string();
    assert!(!err.contains("changeme-please"), "{err}");
    assert!(err.contains("gatewayd keygen"));
}

#[test]
fn both_env_vars_are_ambiguous() {
    let env = FakeEnv(HashMap::from([
        ("API_SERVER_KEY", GOOD.into()),
        ("API_SERVER_KEY_FILE", "/nonexistent".into()),
    ]));
    assert!(matches!(load(&env, &[]), Err(KeyError::AmbiguousEnv)));
}

#[test]
fn unreadable_key_file_is_refused() {
    let env = FakeEnv(HashMap::from([(
        "API_SERVER_KEY_FILE",
        "/nonexistent/gatewayd/key".into(),
    )]));
    assert!(matches!(load(&env, &[]), Err(KeyError::Unreadable { .. })));
}

#[test]
fn key_file_strips_exactly_one_newline() {
    let dir = std::env::temp_dir().join(format!("gwd-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let one = dir.join("one");
    std::fs::write(&one, format!("{GOOD}\n")).unwrap();
    let env = FakeEnv(HashMap::from([(
        "API_SERVER_KEY_FILE",
        one.display().to_string(),
    )]));
    let set = load(&env, &[]).unwrap();
    assert_eq!(set.keys[0].digest, digest(GOOD.as_bytes()));
    let two = dir.join("two");
    std::fs::write(&two, format!("{GOOD}\n\n")).unwrap();
    let env = FakeEnv(HashMap::from([(
        "API_SERVER_KEY_FILE",
        two.display().to_string(),
    )]));
    assert!(matches!(load(&env, &[]), Err(KeyError::Weak { .. })));
}

#[test]
fn config_entries_are_digests() {
    let entry = KeyEntry {
        name: "ci".into(),
        sha256: hex::encode(digest(GOOD.as_bytes())),
        ..Default::default()
    };
    let set = load(&FakeEnv(HashMap::new()), std::slice::from_ref(&entry)).unwrap();
    assert_eq!(set.names(), vec!["ci"]);
    let plaintext = KeyEntry {
        sha256: GOOD.into(),
        ..entry.clone()
    };
    assert!(load(&FakeEnv(HashMap::new()), &[plaintext]).is_err());
    assert!(load(&FakeEnv(HashMap::new()), &[entry.clone(), entry]).is_err());
}

#[test]
fn entry_policy_is_checked_and_names_the_entry() {
    let entry = |extra: &str| -> Result<KeySet, KeyError> {
        let toml = format!(
            "name = \"team-a\"\nsha256 = \"{}\"\n{extra}",
            hex::encode(digest(GOOD.as_bytes()))
        );
        let entry: KeyEntry = toml::from_str(&toml).unwrap();
        load(&FakeEnv(HashMap::new()), &[entry])
    };
    let set = entry(
        "models = [\"gpt-4o*\", \"echo\"]\ntokens_per_day = 1000\nexpires_at = \"2027-01-31T23:59:59Z\"\ndisabled = true",
    )
    .unwrap();
    let policy = &set.keys[0].policy;
    assert!(policy.allows_model("gpt-4o-mini") && policy.allows_model("echo"));
    assert!(!policy.allows_model("gpt-4") && !policy.allows_model("echo-2"));
    assert_eq!(policy.tokens_per_day, Some(1000));
    assert_eq!(policy.expires_at, Some(1_801_439_999));
    assert_eq!(policy.refusal(0), Some(KeyRefusal::Disabled));
    assert_eq!(set.keys[0].origin, KeyOrigin::Config);
    let all = entry("models = [\"*\"]").unwrap();
    assert_eq!(all.keys[0].policy.models, None);
    for (extra, says) in [
        ("models = []", "models is empty"),
        ("models = [\"gpt-*-mini\"]", "not valid"),
        ("tokens_total = 0", "tokens_total must be above 0"),
        ("expires_at = \"tomorrow\"", "RFC 3339"),
    ] {
        let err = entry(extra).unwrap_err().to_string();
        assert!(err.contains("\"team-a\"") && err.contains(says), "{err}");
    }
}

#[test]
fn expiry_and_disabled_are_decided_in_one_place() {
    let policy = KeyPolicy {
        expires_at: Some(100),
        ..Default::default()
    };
    assert_eq!(policy.refusal(99), None);
    assert_eq!(policy.refusal(100), Some(KeyRefusal::Expired));
    assert_eq!(KeyPolicy::default().refusal(i64::MAX), None);
}

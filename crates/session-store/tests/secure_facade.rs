//! Secrets at rest through the facade: `[security]` read from TOML and `SESSION_*` variables,
//! its errors (naming the setting, never the secret), and the store `build` makes.
//!
//! This crate's dev-dependencies turn on `secure`, so these run with every
//! `cargo test -p session-store`.

#![cfg(all(feature = "memory", feature = "secure", feature = "json"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed unwrap is a failed test"
)]
#![allow(
    clippy::result_large_err,
    reason = "figment::Jail closures return figment::Error"
)]

use figment::Jail;
use session_store::{build, Error, Namespace, Sessions, Settings};

const SECRET: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const KEY_1: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";
const KEY_2: &str = "a2V5LXR3by1rZXktdHdvLWtleS10d28ta2V5LXR3bzI=";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn security_from_a_file_and_keys_from_the_environment() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "sessions.toml",
            &format!(
                r#"
                max_session_bytes = 2048
                [security.hashed_ids]
                enabled = true
                secret = "{SECRET}"
                [security.encryption]
                enabled = true
                "#
            ),
        )?;
        jail.set_env(
            "SESSION_SECURITY__ENCRYPTION__KEYS",
            format!("1:{KEY_1},2:{KEY_2}"),
        );
        let settings = Settings::load(Some("sessions.toml".as_ref())).unwrap();
        let shown = format!("{settings:?} {settings}");
        for secret in [SECRET, KEY_1, KEY_2] {
            assert!(!shown.contains(secret), "a secret in Debug/Display");
        }
        let ids: Vec<u16> = settings.security.encryption.keys.iter().map(|k| k.id).collect();
        assert_eq!(ids, [1, 2]);
        runtime().block_on(async {
            let built = build(&settings).await.unwrap();
            let s: Sessions<String> = Sessions::new(built.store.clone(), Namespace::new("login").unwrap())
                .with_max_bytes(built.core.max_session_bytes);
            // A session of exactly the configured limit is accepted: the backend was given
            // room for the seal.
            let limit = built.core.max_session_bytes;
            let fits = "x".repeat(limit - 52 - 2);
            let session = s.create(fits.clone()).await.unwrap();
            assert_eq!(s.load(&session.id).await.unwrap().unwrap().value, fits);
            let over = "x".repeat(limit - 52 - 1);
            let e = s.create(over).await.unwrap_err();
            assert!(matches!(e, Error::TooLarge { .. }), "{e}");
            // Hashed ids: the store cannot list its ids.
            let e = built.store.scan(None, 10).await.unwrap_err();
            assert!(e.to_string().contains("hashed ids"), "{e}");
        });
        Ok(())
    });
}

#[test]
fn a_bad_secret_or_key_names_the_setting_and_not_the_value() {
    for (toml, key) in [
        (
            "[security.hashed_ids]\nenabled = true\n".to_owned(),
            "security.hashed_ids.secret",
        ),
        (
            "[security.hashed_ids]\nenabled = true\nsecret = \"c2hvcnQtc2VjcmV0\"\n".to_owned(),
            "security.hashed_ids.secret",
        ),
        (
            "[security.encryption]\nenabled = true\nkeys = [\"3:c2hvcnQta2V5\"]\n".to_owned(),
            "security.encryption.keys[3]",
        ),
        (
            format!("[security.encryption]\nenabled = true\nkeys = [\"1:{KEY_1}\"]\ncurrent = 9\n"),
            "security.encryption.current",
        ),
    ] {
        Jail::expect_with(|jail| {
            jail.create_file("sessions.toml", &toml)?;
            let e = Settings::load(Some("sessions.toml".as_ref())).unwrap_err();
            let text = e.to_string();
            match &e {
                Error::Config { key: got, .. } => assert_eq!(got, key, "{text}"),
                other => panic!("expected a Config error, got {other}"),
            }
            for secret in ["c2hvcnQ", KEY_1] {
                assert!(!text.contains(secret), "{text}");
            }
            Ok(())
        });
    }
}

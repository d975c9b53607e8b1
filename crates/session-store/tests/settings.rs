//! Configuration: file + environment, defaults, errors that name the key,
//! redaction of secrets, and switching backend by configuration alone.

// Every test here builds or configures the memory backend (the default one).
#![cfg(feature = "memory")]
#![allow(clippy::unwrap_used, reason = "tests: a failed unwrap is a failed test")]
#![allow(
    clippy::result_large_err,
    reason = "figment::Jail closures return figment::Error"
)]

use figment::Jail;
use session_store::{Backend, CodecKind, Error, ExpiryMode, Namespace, Settings};

fn config_key(e: Error) -> String {
    match e {
        Error::Config { key, .. } => key,
        other => panic!("expected a Config error, got {other}"),
    }
}

#[test]
fn defaults() {
    let s = Settings::from_toml("").unwrap();
    assert_eq!(s.backend, Backend::Memory);
    assert_eq!(s.core.ttl_secs, 3600);
    assert_eq!(s.core.key_prefix, "session:");
    assert_eq!(s.core.max_session_bytes, 1024 * 1024);
    assert_eq!(s.core.expiry, ExpiryMode::Absolute);
}

#[test]
fn file_then_environment() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "sessions.toml",
            r#"
            backend = "memory"
            key_prefix = "omnia:session:"
            codec = "json"
            ttl_secs = 100
            [namespaces.task]
            ttl_secs = 60
            expiry = "sliding"
            [memory]
            max_entries = 10
            "#,
        )?;
        jail.set_env("SESSION_TTL_SECS", "200");
        jail.set_env("SESSION_MEMORY__MAX_ENTRIES", "20");
        jail.set_env("SESSION_NAMESPACES__ORCHESTRATOR__TTL_SECS", "7200");
        // Not configuration: ignored, not an unknown-key error.
        jail.set_env("SESSION_TEST_REDIS_URL", "redis://127.0.0.1:1");
        let s = Settings::load(Some("sessions.toml".as_ref())).unwrap();
        assert_eq!(s.core.key_prefix, "omnia:session:");
        assert_eq!(s.core.codec, CodecKind::Json);
        assert_eq!(s.core.ttl_secs, 200);
        assert_eq!(s.memory.max_entries, 20);
        let core = &s.core;
        let task = core.policy_for(&Namespace::new("task").unwrap());
        assert_eq!(task.mode, ExpiryMode::Sliding);
        assert_eq!(task.ttl.as_secs(), 60);
        let orch = core.policy_for(&Namespace::new("orchestrator").unwrap());
        assert_eq!(orch.ttl.as_secs(), 7200);
        Ok(())
    });
}

#[test]
fn missing_file_is_an_error() {
    let e = Settings::load(Some("/nonexistent/sessions.toml".as_ref())).unwrap_err();
    assert_eq!(config_key(e), "config file");
}

#[test]
fn unknown_keys_are_named_with_what_is_accepted() {
    let e = Settings::from_toml("tll_secs = 5").unwrap_err();
    let text = e.to_string();
    assert!(text.contains("tll_secs"), "{text}");
    assert!(text.contains("ttl_secs"), "lists accepted keys: {text}");
    let e = Settings::from_toml("[memory]\nmax_entriez = 5").unwrap_err();
    assert_eq!(config_key(e), "memory.max_entriez");
    Jail::expect_with(|jail| {
        jail.set_env("SESSION_MEMORY__MAX_ENTRIEZ", "5");
        let e = Settings::load(None).unwrap_err();
        assert!(e.to_string().contains("max_entriez"), "{e}");
        Ok(())
    });
}

#[test]
fn bad_values_name_their_key() {
    let cases = [
        ("ttl_secs = 0", "ttl_secs"),
        ("ttl_secs = \"soon\"", "ttl_secs"),
        ("backend = \"postgres\"", "backend"),
        ("codec = \"xml\"", "codec"),
        ("expiry = \"never\"", "expiry"),
        ("key_prefix = \"a*b\"", "key_prefix"),
        ("max_session_bytes = 10", "max_session_bytes"),
        ("[namespaces.Task]\nttl_secs = 5", "namespaces.Task"),
        ("[memory]\nmax_entries = 0", "memory.max_entries"),
        ("[metrics]\nrefresh_secs = -1", "metrics.refresh_secs"),
        ("[metrics]\nname = \" \"", "metrics.name"),
    ];
    for (toml, key) in cases {
        let e = Settings::from_toml(toml).unwrap_err();
        assert_eq!(config_key(e), key, "{toml}");
    }
}

#[test]
fn backend_switch_and_rollback_are_config_only() {
    Jail::expect_with(|jail| {
        jail.create_file("s.toml", "backend = \"memory\"")?;
        assert_eq!(
            Settings::load(Some("s.toml".as_ref())).unwrap().backend,
            Backend::Memory
        );
        jail.set_env("SESSION_BACKEND", "redis");
        let s = Settings::load(Some("s.toml".as_ref()));
        if cfg!(feature = "redis") {
            assert_eq!(s.unwrap().backend, Backend::Redis);
        } else {
            assert_eq!(config_key(s.unwrap_err()), "backend");
        }
        jail.set_env("SESSION_BACKEND", "memory");
        assert_eq!(
            Settings::load(Some("s.toml".as_ref())).unwrap().backend,
            Backend::Memory
        );
        Ok(())
    });
}

#[tokio::test]
async fn build_memory_and_use_it() {
    let s = Settings::from_toml("codec = \"json\"\n[metrics]\nrefresh_secs = 0").unwrap();
    let built = session_store::build(&s).await.unwrap();
    assert_eq!(built.backend, Backend::Memory);
    let carts = built.sessions::<Vec<String>>("cart").unwrap();
    let created = carts.create(vec!["x".into()]).await.unwrap();
    assert_eq!(
        carts.load(&created.id).await.unwrap().unwrap().value,
        vec!["x".to_string()]
    );
}

#[cfg(feature = "redis")]
mod redis {
    use super::*;

    #[test]
    fn seed_connection_strings_and_redaction() {
        for url in [
            "localhost:6379",
            "redis://127.0.0.1:6379",
            "rediss://app:pw@127.0.0.1:6380/2",
            "redis-cluster://127.0.0.1:7000?node=127.0.0.1:7001",
            "redis-sentinel://127.0.0.1:26379?sentinelServiceName=mymaster&node=127.0.0.1:26380",
        ] {
            let s = Settings::from_toml(&format!("backend = \"redis\"\n[redis]\nurl = \"{url}\"")).unwrap();
            assert_eq!(s.redis.url, url);
        }
        Jail::expect_with(|jail| {
            jail.set_env("SESSION_BACKEND", "redis");
            jail.set_env("SESSION_REDIS__URL", "redis://app:supersecret1@127.0.0.1:6379");
            jail.set_env("SESSION_REDIS__PASSWORD", "supersecret2");
            let s = Settings::load(None).unwrap();
            let shown = format!("{s:?} {s}");
            assert!(!shown.contains("supersecret1"), "{shown}");
            assert!(!shown.contains("supersecret2"), "{shown}");
            Ok(())
        });
    }

    #[test]
    fn a_numeric_password_from_the_environment_is_a_string() {
        Jail::expect_with(|jail| {
            jail.set_env("SESSION_REDIS__PASSWORD", "123456");
            let s = Settings::load(None).unwrap();
            assert_eq!(s.redis.password.as_deref(), Some("123456"));
            Ok(())
        });
    }

    #[test]
    fn bad_redis_values_never_echo_secrets() {
        let e =
            Settings::from_toml("backend = \"redis\"\n[redis]\nurl = \"redis://u:hunter2@host:notaport\"")
                .unwrap_err();
        let text = e.to_string();
        assert_eq!(config_key(e), "redis.url");
        assert!(!text.contains("hunter2"), "{text}");
        let e = Settings::from_toml("backend = \"redis\"\n[redis]\ntimeout_ms = 0").unwrap_err();
        assert_eq!(config_key(e), "redis.timeout_ms");
    }
}

#[cfg(feature = "fallback")]
mod fallback {
    use super::*;

    /// Configurations whose deadlines cannot work together are refused, naming the key to change.
    #[test]
    fn deadlines_that_cannot_recover_are_refused() {
        let refused = [
            // The fallback would abandon every call before Redis's own timeout.
            ("[redis]\ntimeout_ms = 300\n[fallback]\nprimary_timeout_ms = 300", "fallback.primary_timeout_ms"),
            ("[redis]\ntimeout_ms = 1000", "fallback.primary_timeout_ms"),
            // A stuck connection would never be replaced before a command times out.
            ("[redis]\ntimeout_ms = 500\nunresponsive_timeout_ms = 400\n[fallback]\nprimary_timeout_ms = 600", "redis.unresponsive_timeout_ms"),
        ];
        for (section, key) in refused {
            let toml = format!("backend = \"fallback\"\n{section}");
            let e = Settings::from_toml(&toml).unwrap_err();
            let text = e.to_string();
            assert_eq!(config_key(e), key, "{toml}");
            assert!(text.contains("ms"), "the message names the figures: {text}");
        }
        // The defaults, and a deadline a little above Redis's timeout, are accepted.
        Settings::from_toml("backend = \"fallback\"").unwrap();
        Settings::from_toml(
            "backend = \"fallback\"\n[redis]\ntimeout_ms = 1000\n[fallback]\nprimary_timeout_ms = 1050",
        )
        .unwrap();
        // The rule is the fallback's: with `backend = "redis"` the fallback section is not used.
        Settings::from_toml("backend = \"redis\"\n[redis]\ntimeout_ms = 1000").unwrap();
    }
}

#[test]
fn shared_settings_have_one_home() {
    for section in ["memory", "redis", "fallback"] {
        let toml = format!("[{section}]\nkey_prefix = \"app:\"");
        let Err(e) = Settings::from_toml(&toml) else {
            panic!("{toml} accepted");
        };
        let text = e.to_string();
        if cfg!(feature = "memory") && section == "memory"
            || cfg!(feature = "redis") && section == "redis"
            || cfg!(feature = "fallback") && section == "fallback"
        {
            assert_eq!(config_key(e), format!("{section}.key_prefix"));
            assert!(
                text.contains("shared setting") && text.contains("top level"),
                "{text}"
            );
        }
    }
    let s = Settings::from_toml("key_prefix = \"app:\"\nmax_session_bytes = 4096").unwrap();
    let options = s.core.store_options().unwrap();
    assert_eq!(options.key_prefix().as_str(), "app:");
    assert_eq!(options.max_session_bytes(), 4096);
}

#[test]
fn settings_from_an_applications_own_figment() {
    use figment::providers::{Format, Toml};
    let app = figment::Figment::new().merge(Toml::string(
        "[server]\nport = 8080\n[sessions]\nttl_secs = 90\n[sessions.namespaces.task]\nttl_secs = 30",
    ));
    let s = Settings::from_figment(&app.focus("sessions")).unwrap();
    assert_eq!(s.core.ttl_secs, 90);
    assert_eq!(
        s.core.policy_for(&Namespace::new("task").unwrap()).ttl.as_secs(),
        30
    );
    let e = Settings::from_figment(&app).unwrap_err();
    assert_eq!(
        config_key(e),
        "server",
        "the application's other keys are not session settings"
    );
}

#[test]
fn another_environment_prefix() {
    Jail::expect_with(|jail| {
        jail.set_env("MYAPP_SESSION_TTL_SECS", "42");
        jail.set_env("SESSION_TTL_SECS", "7");
        let s = Settings::loader().env_prefix("MYAPP_SESSION_").load().unwrap();
        assert_eq!(s.core.ttl_secs, 42);
        assert_eq!(Settings::load(None).unwrap().core.ttl_secs, 7);
        let none = Settings::loader().env_prefix("").load().unwrap();
        assert_eq!(none.core.ttl_secs, 3600);
        Ok(())
    });
}

#[test]
fn misspelt_environment_variables_are_named() {
    Jail::expect_with(|jail| {
        jail.set_env("SESSION_BAKEND", "redis");
        jail.set_env("SESSION_TTL_SEC", "5");
        jail.set_env("SESSION_TEST_REDIS_URL", "redis://127.0.0.1:1");
        let warnings = Settings::env_warnings("SESSION_");
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings
            .iter()
            .any(|w| w.contains("SESSION_BAKEND") && w.contains("SESSION_BACKEND")));
        assert!(warnings
            .iter()
            .any(|w| w.contains("SESSION_TTL_SEC ") && w.contains("SESSION_TTL_SECS")));
        // Still ignored, as before: the typo does not pick a backend.
        assert_eq!(Settings::load(None).unwrap().backend, Backend::Memory);
        Ok(())
    });
}

#[test]
fn messages_name_the_source_in_words() {
    Jail::expect_with(|jail| {
        jail.create_file("bad.toml", "ttl_secs = \"soon\"")?;
        let e = Settings::load(Some("bad.toml".as_ref())).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("bad.toml"), "names the file: {text}");
        assert!(text.contains("whole number"), "in words: {text}");
        assert!(!text.contains("u64"), "no Rust type names: {text}");

        jail.create_file("broken.toml", "ttl_secs = = 5")?;
        let e = Settings::load(Some("broken.toml".as_ref())).unwrap_err();
        let key = config_key(e);
        assert!(
            key.ends_with("broken.toml"),
            "a syntax error names the file: {key}"
        );

        jail.set_env("SESSION_MAX_SESSION_BYTES", "big");
        let e = Settings::load(None).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("SESSION_MAX_SESSION_BYTES"),
            "names the variable: {text}"
        );
        Ok(())
    });
}

#[test]
fn unknown_top_level_keys_suggest_the_closest() {
    let e = Settings::from_toml("bakend = \"memory\"").unwrap_err();
    let text = e.to_string();
    assert_eq!(config_key(e), "bakend");
    assert!(text.contains("did you mean backend"), "{text}");
}

//! Reading [`Settings`] with figment: defaults, a TOML file, environment variables or an
//! application's own figment; unknown keys and backends not built in are named.

use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Map};
use figment::{Figment, Metadata, Profile, Provider};
use serde::de::DeserializeOwned;
use session_core::{CoreConfig, Error, Result};

use super::messages::{closest, field_names, figment_error};
use super::{MetricsSettings, Settings};

/// The default prefix of environment variables ([`Settings::load`]).
pub const ENV_PREFIX: &str = "SESSION_";

/// The sections of backends (and of the backup and security), and whether this build has each.
const SECTIONS: [(&str, bool); 6] = [
    ("memory", cfg!(feature = "memory")),
    ("redis", cfg!(feature = "redis")),
    ("fallback", cfg!(feature = "fallback")),
    ("sql", cfg!(any(feature = "postgres", feature = "sqlite"))),
    ("backup", cfg!(feature = "backup")),
    ("security", cfg!(feature = "secure")),
];

/// Keys whose values are strings even when they look like numbers (`…__PASSWORD=123456`),
/// which figment's environment provider would otherwise parse.
const STRING_KEYS: [&str; 7] = [
    "password",
    "username",
    "url",
    "key_prefix",
    "service_name",
    "secret",
    "keys",
];

/// Every top-level key: `backend`, the shared settings, the sections, `metrics`.
fn top_level_keys() -> Vec<&'static str> {
    let mut keys = vec!["backend", "metrics"];
    keys.extend_from_slice(field_names::<CoreConfig>());
    keys.extend(SECTIONS.iter().map(|(name, _)| *name));
    keys
}

/// Reads [`Settings`] from layers: library defaults, an application's defaults (TOML text),
/// a TOML file, then environment variables with a prefix (`SESSION_` unless changed) and `__`
/// for nesting: `SESSION_REDIS__URL=redis://…`.
///
/// ```no_run
/// # fn demo() -> session_store::Result<()> {
/// let settings = session_store::Settings::loader()
///     .defaults("backend = \"redis\"")
///     .file("config/sessions.toml")
///     .env_prefix("MYAPP_SESSION_")
///     .load()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a loader does nothing until load"]
pub struct Loader {
    defaults: String,
    file: Option<PathBuf>,
    env_prefix: String,
}

impl Default for Loader {
    fn default() -> Self {
        Loader {
            defaults: String::new(),
            file: None,
            env_prefix: ENV_PREFIX.to_owned(),
        }
    }
}

impl Loader {
    /// An application's defaults, as TOML text, between the library's and the file.
    pub fn defaults(mut self, toml: impl Into<String>) -> Self {
        self.defaults = toml.into();
        self
    }

    /// A TOML file (it must exist).
    pub fn file(mut self, path: impl Into<PathBuf>) -> Self {
        self.file = Some(path.into());
        self
    }

    /// A TOML file if `Some`.
    pub fn file_opt(mut self, path: Option<&Path>) -> Self {
        self.file = path.map(Path::to_path_buf);
        self
    }

    /// The prefix of the environment variables read (default `SESSION_`); an empty prefix
    /// reads no environment variables.
    pub fn env_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.env_prefix = prefix.into();
        self
    }

    /// The figment these layers make, for an application that adds its own.
    ///
    /// # Errors
    /// [`Error::Config`] when the file does not exist.
    pub fn figment(&self) -> Result<Figment> {
        let mut figment = Figment::new().merge(Toml::string(&self.defaults));
        if let Some(path) = &self.file {
            if !path.is_file() {
                return Err(Error::config(
                    "config file",
                    format!("{} does not exist or is not a file", path.display()),
                ));
            }
            figment = figment.merge(Toml::file(path));
        }
        if !self.env_prefix.is_empty() {
            let keys = top_level_keys();
            let env = Env::prefixed(&self.env_prefix).split("__").filter(move |key| {
                let first = key.as_str().split('.').next().unwrap_or("");
                keys.iter().any(|k| k.eq_ignore_ascii_case(first))
            });
            figment = figment.merge(env);
            for (key, value) in string_env_vars(&self.env_prefix) {
                figment = figment.merge(Serialized::default(&key, value).profile(Profile::Default));
            }
        }
        Ok(figment)
    }

    /// Reads and checks the settings. Environment variables with the prefix that are not
    /// configuration but look like a misspelt key (`SESSION_BAKEND`) are logged at WARN with
    /// the key they are probably meant to be ([`Settings::env_warnings`]).
    ///
    /// # Errors
    /// [`Error::Config`] naming the first bad key, where it came from and what is accepted.
    pub fn load(&self) -> Result<Settings> {
        for warning in Settings::env_warnings(&self.env_prefix) {
            tracing::warn!("session store configuration: {warning}");
        }
        Settings::from_figment(&self.figment()?).map_err(|e| match (e, &self.file) {
            // A file figment could not parse: the file is what to fix.
            (Error::Config { key, message, source }, Some(file)) if key == "config" => Error::Config {
                key: file.display().to_string(),
                message,
                source,
            },
            (e, _) => e,
        })
    }
}

impl Settings {
    /// Reads the configuration: defaults, then the TOML file (if given; a missing file is an
    /// error), then environment variables `SESSION_*` with `__` for nesting
    /// (`SESSION_REDIS__URL=redis://…`). See [`Loader`] for other prefixes and layers.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first bad key and what is accepted.
    pub fn load(file: Option<&Path>) -> Result<Settings> {
        Loader::default().file_opt(file).load()
    }

    /// Like [`load`](Self::load), with an application's own defaults (TOML text) between the
    /// library defaults and the file.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first bad key.
    pub fn load_with_defaults(defaults: &str, file: Option<&Path>) -> Result<Settings> {
        Loader::default().defaults(defaults).file_opt(file).load()
    }

    /// A [`Loader`]: another environment prefix, application defaults, a file.
    pub fn loader() -> Loader {
        Loader::default()
    }

    /// Reads the configuration from TOML text (and nothing else): for tests and embedded
    /// defaults.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first bad key.
    pub fn from_toml(text: &str) -> Result<Settings> {
        Self::from_figment(&Figment::new().merge(Toml::string(text)))
    }

    /// Reads the settings from any figment, at its root: an application that keeps its
    /// session settings under a key of its own focuses first
    /// (`Settings::from_figment(&app_figment.focus("sessions"))`).
    ///
    /// # Errors
    /// [`Error::Config`] naming the first bad key, where it came from and what is accepted;
    /// a section of a backend this build does not include (`[redis]` without the `redis`
    /// feature) says so.
    pub fn from_figment(figment: &Figment) -> Result<Settings> {
        let data = figment.data().map_err(|e| figment_error(e, figment))?;
        let root = data
            .get(&figment.profile().clone())
            .or_else(|| data.get(&Profile::Default));
        let present: Vec<String> = root.map(|d| d.keys().cloned().collect()).unwrap_or_default();
        check_top_level(&present, figment)?;

        let core = extract_core(figment, root)?;
        #[cfg_attr(
            not(any(
                feature = "memory",
                feature = "redis",
                feature = "fallback",
                feature = "postgres",
                feature = "sqlite",
                feature = "backup",
                feature = "secure"
            )),
            allow(unused_mut, reason = "sections are filled in only when a backend is built")
        )]
        let mut settings = Settings {
            backend: section(figment, &present, "backend")?.unwrap_or_default(),
            core,
            metrics: section::<MetricsSettings>(figment, &present, "metrics")?.unwrap_or_default(),
            ..Settings::default()
        };
        #[cfg(feature = "memory")]
        if let Some(memory) = section(figment, &present, "memory")? {
            settings.memory = memory;
        }
        #[cfg(feature = "redis")]
        if let Some(redis) = section(figment, &present, "redis")? {
            settings.redis = redis;
        }
        #[cfg(feature = "fallback")]
        if let Some(fallback) = section(figment, &present, "fallback")? {
            settings.fallback = fallback;
        }
        #[cfg(any(feature = "postgres", feature = "sqlite"))]
        if let Some(sql) = section(figment, &present, "sql")? {
            settings.sql = sql;
        }
        #[cfg(feature = "backup")]
        if let Some(backup) = section(figment, &present, "backup")? {
            settings.backup = backup;
        }
        #[cfg(feature = "secure")]
        if let Some(security) = section(figment, &present, "security")? {
            settings.security = security;
        }
        settings.validate()?;
        Ok(settings)
    }

    /// Environment variables with `prefix` that are not configuration but look like a
    /// misspelt key, each with the key it probably means: `SESSION_BAKEND` → `backend`.
    /// Variables far from every key (`SESSION_TEST_URL`) are someone else's and not named.
    pub fn env_warnings(prefix: &str) -> Vec<String> {
        if prefix.is_empty() {
            return Vec::new();
        }
        let keys = top_level_keys();
        let mut warnings: Vec<String> = std::env::vars_os()
            .filter_map(|(name, _)| name.into_string().ok())
            .filter_map(|name| {
                let rest = name.strip_prefix(prefix)?.to_ascii_lowercase();
                let first = rest.split("__").next().unwrap_or("").to_owned();
                if keys.contains(&first.as_str()) {
                    return None;
                }
                let guess = closest(&first, &keys)?;
                let meant = format!("{prefix}{}", rest.replacen(&first, guess, 1).to_ascii_uppercase());
                Some(format!(
                    "environment variable {name} is not a configuration key and is ignored; did you mean {meant}?"
                ))
            })
            .collect();
        warnings.sort();
        warnings
    }
}

/// Every top-level key must be known, and its section built into this binary.
fn check_top_level(present: &[String], figment: &Figment) -> Result<()> {
    let keys = top_level_keys();
    for key in present {
        if let Some((name, built)) = SECTIONS.iter().find(|(name, _)| name == key) {
            if !built {
                return Err(section_not_built(name, &from(figment, key)));
            }
            continue;
        }
        if keys.contains(&key.as_str()) {
            continue;
        }
        let hint = closest(key, &keys)
            .map(|k| format!("did you mean {k}? "))
            .unwrap_or_default();
        return Err(Error::config(
            key.as_str(),
            format!(
                "unknown key{}; {hint}accepted: {}",
                from(figment, key),
                keys.join(", ")
            ),
        ));
    }
    Ok(())
}

/// A section (`[redis]`, `[sql]`, `[backup]`, …) of something this binary is built without,
/// with the cargo features that add it; `origin` is where the section came from.
fn section_not_built(name: &str, origin: &str) -> Error {
    let what = if name == "backup" {
        "backup feature".to_owned()
    } else if name == "security" {
        "secure feature".to_owned()
    } else {
        format!("{name} backend")
    };
    Error::config(
        name,
        format!(
            "this binary is built without the {what}{origin}; enable the cargo feature {} of session-store, \
             or remove the section",
            super::features_of(name)
        ),
    )
}

/// ` (in FILE)` / ` (from VARIABLE)` for a key, when figment knows where it came from.
pub(super) fn from(figment: &Figment, key: &str) -> String {
    figment
        .find_metadata(key)
        .map(|m| super::messages::origin(m, figment.profile(), &[key.to_owned()]))
        .unwrap_or_default()
}

/// The shared settings: the top-level keys that are [`CoreConfig`]'s, extracted on their own
/// (so that its unknown-key check does not see `backend` or the sections); errors still name
/// where each value came from, looked up in the whole figment.
fn extract_core(figment: &Figment, root: Option<&Dict>) -> Result<CoreConfig> {
    let names = field_names::<CoreConfig>();
    let only_core: Dict = root
        .map(|d| {
            d.iter()
                .filter(|(k, _)| names.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    let core = Figment::from(Only(only_core));
    core.extract().map_err(|e| figment_error(e, figment))
}

/// One top-level key, if present.
fn section<T: DeserializeOwned>(figment: &Figment, present: &[String], key: &str) -> Result<Option<T>> {
    if !present.iter().any(|k| k == key) {
        return Ok(None);
    }
    // A table is read through `focus` (errors name paths inside it); a value with
    // `extract_inner`, whose errors name the key last: both become `key.inner…`.
    let is_table = matches!(figment.find_value(key), Ok(figment::value::Value::Dict(..)));
    let result = if is_table {
        figment.focus(key).extract::<T>()
    } else {
        figment.extract_inner::<T>(key)
    };
    result.map(Some).map_err(|mut e| {
        if e.path.last().is_some_and(|last| last == key) {
            e.path.pop();
        }
        if e.path.first().is_none_or(|first| first != key) {
            e.path.insert(0, key.to_owned());
        }
        figment_error(e, figment)
    })
}

/// A figment provider of an already-read dictionary.
struct Only(Dict);

impl Provider for Only {
    fn metadata(&self) -> Metadata {
        Metadata::named("settings")
    }

    fn data(&self) -> std::result::Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.0.clone()))
    }
}

/// Environment variables with `prefix` whose last segment names a string-only key.
fn string_env_vars(prefix: &str) -> Vec<(String, String)> {
    let keys = top_level_keys();
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter_map(|(k, v)| {
            let rest = k.strip_prefix(prefix)?;
            let key = rest.to_ascii_lowercase().replace("__", ".");
            let last = key.rsplit('.').next().unwrap_or("");
            let first = key.split('.').next().unwrap_or("");
            (STRING_KEYS.contains(&last) && keys.contains(&first)).then_some((key, v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A unit test, so that the feature-set step runs it in the builds without the redis
    /// backend (integration tests run there only with the defaults).
    #[cfg(not(feature = "redis"))]
    #[test]
    fn a_section_of_a_backend_not_built_says_so() {
        let e = Settings::from_toml("[redis]\nurl = \"redis://127.0.0.1:6379\"")
            .err()
            .unwrap_or_else(|| panic!("a [redis] section was accepted without the redis backend"));
        let text = e.to_string();
        assert!(
            matches!(&e, Error::Config { key, .. } if key == "redis"),
            "{text}"
        );
        assert!(text.contains("built without the redis backend"), "{text}");
        assert!(!text.contains("unknown"), "{text}");
    }

    /// Whatever this build has (its tests are built with the sql and backup features, see
    /// Cargo.toml): a section of something not built names the cargo features that add it.
    #[test]
    fn a_section_not_built_names_its_features() {
        for (name, what, features) in [
            ("redis", "built without the redis backend", "\"redis\""),
            (
                "sql",
                "built without the sql backend",
                "\"postgres\" or \"sqlite\"",
            ),
            ("backup", "built without the backup feature", "\"backup\""),
            ("security", "built without the secure feature", "\"secure\""),
        ] {
            let e = section_not_built(name, " (in sessions.toml)");
            let text = e.to_string();
            assert!(matches!(&e, Error::Config { key, .. } if key == name), "{text}");
            assert!(text.contains(what), "{text}");
            assert!(text.contains(features), "{text}");
            assert!(text.contains("sessions.toml"), "{text}");
        }
    }

    #[test]
    fn every_section_is_a_top_level_key() {
        let keys = top_level_keys();
        for (section, _) in SECTIONS {
            assert!(keys.contains(&section), "{section}");
        }
        assert!(
            keys.contains(&"ttl_secs") && keys.contains(&"backend"),
            "{keys:?}"
        );
    }
}

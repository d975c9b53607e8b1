//! Configuration errors in words: which key, where it came from (the file's path, the
//! environment variable), what was expected — never a Rust type name, never a secret.

use figment::error::{Actual, Kind};
use figment::{Figment, Metadata, Profile, Source};
use serde::de::{self, Deserialize, Deserializer, Visitor};
use session_core::Error;

/// Keys that are shared settings: in a backend section they are a mistake with its own hint.
const SHARED_KEYS: [&str; 7] = [
    "ttl_secs",
    "expiry",
    "max_lifetime_secs",
    "key_prefix",
    "codec",
    "max_session_bytes",
    "namespaces",
];

/// Translates a figment error into [`Error::Config`] naming the key (or the file, for a
/// syntax error), the source of the value, and what is accepted.
pub(super) fn figment_error(e: figment::Error, figment: &Figment) -> Error {
    let path = e.path.clone();
    let origin = figment
        .find_metadata(&path.join("."))
        .or(e.metadata.as_ref())
        .map(|m| origin(m, figment.profile(), &path))
        .unwrap_or_default();
    let secret = path.iter().any(|p| p.contains("password") || p == "url");
    let (key, message) = match &e.kind {
        Kind::UnknownField(field, expected) => {
            let key = join(&path, field);
            let section: Vec<&str> = key.split('.').collect();
            let message = if section.len() > 1 && SHARED_KEYS.contains(&field.as_str()) {
                format!(
                    "{field} is a shared setting, not one of the {} section's{origin}; set it once at the top \
                     level (it applies to every backend)",
                    section[..section.len() - 1].join(".")
                )
            } else {
                let keys: Vec<&str> = expected.to_vec();
                let hint = closest(field, &keys)
                    .map(|k| format!("did you mean {k}? "))
                    .unwrap_or_default();
                format!("unknown key{origin}; {hint}accepted: {}", expected.join(", "))
            };
            (key, message)
        }
        Kind::UnknownVariant(value, expected) => (
            path.join("."),
            format!(
                "{:?} is not accepted{origin}; accepted: {}",
                session_core::backend::clip(value),
                expected.join(", ")
            ),
        ),
        Kind::MissingField(field) => (join(&path, field), format!("is required{origin}")),
        // The value of a secret (or of a URL, which may hold one) is never echoed.
        _ if secret => (
            path.join("."),
            format!("invalid value (not shown: it may hold a secret){origin}"),
        ),
        Kind::InvalidType(actual, expected) => (
            path.join("."),
            format!("expected {}, found {}{origin}", in_words(expected), found(actual)),
        ),
        Kind::InvalidValue(actual, expected) => (
            path.join("."),
            format!("expected {}, found {}{origin}", in_words(expected), found(actual)),
        ),
        Kind::InvalidLength(len, expected) => (
            path.join("."),
            format!("expected {}, found {len} items{origin}", in_words(expected)),
        ),
        kind if path.is_empty() => {
            // A file that is not valid TOML: the file is what to fix.
            let key = match e.metadata.as_ref().and_then(|m| m.source.as_ref()) {
                Some(Source::File(file)) => file.display().to_string(),
                _ => "config".to_owned(),
            };
            (key, kind.to_string())
        }
        kind => (path.join("."), format!("{kind}{origin}")),
    };
    Error::Config {
        key: if key.is_empty() { "config".to_owned() } else { key },
        message,
        source: None,
    }
}

/// `path.field`, unless the path already ends with the field.
fn join(path: &[String], field: &str) -> String {
    if path.last().is_some_and(|last| last == field) {
        path.join(".")
    } else if path.is_empty() {
        field.to_owned()
    } else {
        format!("{}.{field}", path.join("."))
    }
}

/// ` (in FILE)`, ` (from environment variable NAME)` or ` (from NAME)`.
pub(super) fn origin(metadata: &Metadata, profile: &Profile, path: &[String]) -> String {
    match &metadata.source {
        Some(Source::File(file)) => format!(" (in {})", file.display()),
        _ if metadata.name.contains("environment") => {
            // figment names the provider "`PREFIX` environment variable(s)" and interpolates
            // the key without the prefix.
            let prefix = metadata.name.split('`').nth(1).unwrap_or("");
            let keys: Vec<&str> = path.iter().map(String::as_str).collect();
            let rest = metadata.interpolate(profile, &keys).replace('.', "__");
            format!(" (from environment variable {prefix}{rest})")
        }
        _ => format!(" (from {})", metadata.name),
    }
}

/// What serde expected, in words: `u64` → `a whole number ≥ 0`.
fn in_words(expected: &str) -> String {
    let words = match expected {
        "u8" => "a whole number from 0 to 255",
        "u16" => "a whole number from 0 to 65535",
        "u32" | "u64" | "u128" | "usize" => "a whole number ≥ 0",
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number",
        "f32" | "f64" => "a number",
        "a boolean" | "bool" => "true or false",
        "a string" | "a borrowed string" | "string" => "text in quotes",
        "a sequence" => "a list",
        "a map" => "a table",
        other if other.starts_with("struct ") || other.starts_with("a map") => "a table",
        other if other.starts_with("enum ") => "one of the names listed in the docs",
        other if other.starts_with("option") => return in_words(other.trim_start_matches("option ")),
        other => other,
    };
    words.to_owned()
}

/// What was found, in words; text is clipped.
fn found(actual: &Actual) -> String {
    match actual {
        Actual::Bool(b) => b.to_string(),
        Actual::Unsigned(n) => n.to_string(),
        Actual::Signed(n) => n.to_string(),
        Actual::Float(n) => n.to_string(),
        Actual::Char(c) => format!("{c:?}"),
        Actual::Str(s) => format!("the text {:?}", session_core::backend::clip(s)),
        Actual::Map => "a table".to_owned(),
        Actual::Seq => "a list".to_owned(),
        other => other.to_string(),
    }
}

/// The closest of `keys` to `word` by edit distance, when close enough to be a typo.
pub(super) fn closest<'k>(word: &str, keys: &[&'k str]) -> Option<&'k str> {
    let word = word.to_ascii_lowercase();
    let limit = (word.chars().count() / 3).clamp(1, 3);
    keys.iter()
        .map(|k| (distance(&word, k), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Edit distance counting a swap of two neighbours as one edit (optimal string alignment):
/// `redsi` is one edit from `redis`.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// The field names a struct's `Deserialize` asks for (its configuration keys), read by
/// deserializing it from a deserializer that only records them.
pub(super) fn field_names<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    struct Names(&'static [&'static str]);
    #[derive(Debug)]
    struct Stop;
    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("field names recorded")
        }
    }
    impl std::error::Error for Stop {}
    impl de::Error for Stop {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Stop
        }
    }
    impl<'de> Deserializer<'de> for &mut Names {
        type Error = Stop;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0 = fields;
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
            unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    let mut names = Names(&[]);
    let _ = T::deserialize(&mut names);
    names.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_are_the_configuration_keys() {
        let names = field_names::<session_core::CoreConfig>();
        assert!(
            names.contains(&"ttl_secs") && names.contains(&"key_prefix"),
            "{names:?}"
        );
    }

    #[test]
    fn typos_find_their_key() {
        let keys = ["backend", "ttl_secs", "redis", "memory"];
        assert_eq!(closest("bakend", &keys), Some("backend"));
        assert_eq!(closest("tll_secs", &keys), Some("ttl_secs"));
        assert_eq!(closest("redsi", &keys), Some("redis"));
        assert_eq!(closest("test_redis_url", &keys), None);
    }
}

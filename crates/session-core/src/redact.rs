//! Passwords out of connection strings, before they reach a log line, a `Debug` dump or an
//! error message.

/// What a hidden password reads as.
pub const REDACTED: &str = "<redacted>";

/// How a parameter carrying a password ends (matched in any case).
const MARKER: &str = "password=";

/// `url` with every password it carries replaced by [`REDACTED`]: the one in the user
/// information (`scheme://user:password@host`, up to the last `@`, so a password holding an
/// unencoded `@` or `/` is hidden whole), and the value of every parameter whose name ends in
/// `password` (`?password=`, `sslpassword=`, `sentinelPassword=`, and `host:port,password=…`
/// connection strings), in any case. Everything else is kept, so the host, port and user still
/// tell an operator which server was meant. A string that is no URL at all is returned as it
/// is (with any `password=` value hidden).
#[must_use]
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(start) = out.find("://").map(|i| i + 3) {
        if let Some((colon, at)) = user_password(&out, start) {
            out.replace_range(colon + 1..at, REDACTED);
        }
    }
    let mut from = 0;
    // Lower-casing ASCII keeps every byte offset, so positions found in `lower` index `out`.
    while let Some(pos) = out.to_ascii_lowercase()[from..]
        .find(MARKER)
        .map(|i| from + i + MARKER.len())
    {
        let end = out[pos..]
            .find(['&', ',', ';', '#'])
            .map_or(out.len(), |i| pos + i);
        out.replace_range(pos..end, REDACTED);
        from = pos + REDACTED.len();
    }
    out
}

/// The `:` before the password and the `@` after it, when the authority starting at `start`
/// has user information with a password.
fn user_password(url: &str, start: usize) -> Option<(usize, usize)> {
    let rest = &url[start..];
    // The user information ends at the last `@` before the query or fragment; a password with
    // an unencoded `?` or `#` (no `/` before it) is followed to the last `@` of all.
    let query = rest.find(['?', '#']).unwrap_or(rest.len());
    let at = rest[..query].rfind('@').or_else(|| {
        if rest[..query].contains('/') {
            None
        } else {
            rest.rfind('@')
        }
    })?;
    let colon = rest[..at].find(':')?;
    Some((start + colon, start + at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_passwords_are_hidden() {
        assert_eq!(
            redact_url("rediss://app:secret@127.0.0.1:6380"),
            "rediss://app:<redacted>@127.0.0.1:6380"
        );
        assert_eq!(redact_url("redis://:pw@h:1/0"), "redis://:<redacted>@h:1/0");
        assert_eq!(
            redact_url("postgres://u:pa/ss@h/db"),
            "postgres://u:<redacted>@h/db"
        );
        assert_eq!(
            redact_url("postgres://u:p@ss@h/db"),
            "postgres://u:<redacted>@h/db"
        );
        assert_eq!(redact_url("redis://u:pa?ss@h:1"), "redis://u:<redacted>@h:1");
        assert_eq!(redact_url("redis://u:pa#ss@h:1"), "redis://u:<redacted>@h:1");
    }

    #[test]
    fn password_parameters_are_hidden() {
        assert_eq!(
            redact_url("postgres://h/db?user=a&password=p"),
            "postgres://h/db?user=a&password=<redacted>"
        );
        assert_eq!(
            redact_url("postgres://u:p@h/db?password=q&sslmode=require"),
            "postgres://u:<redacted>@h/db?password=<redacted>&sslmode=require"
        );
        assert_eq!(
            redact_url("localhost:6379,password=abc,ssl=true"),
            "localhost:6379,password=<redacted>,ssl=true"
        );
        assert_eq!(
            redact_url("redis-sentinel://h:26379/0?sentinelServiceName=m&sentinelPassword=s&x=1"),
            "redis-sentinel://h:26379/0?sentinelServiceName=m&sentinelPassword=<redacted>&x=1"
        );
        assert_eq!(redact_url("h:1,PASSWORD=abc;x"), "h:1,PASSWORD=<redacted>;x");
    }

    #[test]
    fn urls_without_passwords_are_kept() {
        for url in [
            "redis://127.0.0.1:6379",
            "redis://user@h:1/0",
            "postgres://h/db?user=a@b",
            "postgres://h:5432/db?user=name@server&sslmode=require",
            "sqlite://a.db",
            "sqlite::memory:",
            "",
            "no url at all",
            "ünïcödé://ä:ö",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }
}

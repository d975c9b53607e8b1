//! Passwords out of URLs and settings, for `Debug`, logs and error messages.

const REDACTED: &str = "<redacted>";

pub(super) fn redact_opt(v: &Option<String>) -> Option<&'static str> {
    v.as_ref().map(|_| REDACTED)
}

/// A URL with the password of its user info and any `sentinelPassword` / `password=` value
/// replaced by `<redacted>`, for logs and error messages.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    // user:password@ in the authority.
    if let Some(start) = out.find("://").map(|i| i + 3) {
        let end = out[start..]
            .find(['/', '?', '#'])
            .map_or(out.len(), |i| start + i);
        if let Some(at) = out[start..end].rfind('@').map(|i| start + i) {
            let userinfo = &out[start..at];
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u).to_owned();
            if userinfo.contains(':') {
                out.replace_range(start..at, &format!("{user}:{REDACTED}"));
            }
        }
    }
    // Query parameters and StackExchange-style options that carry a password.
    for marker in ["sentinelPassword=", "password="] {
        let mut from = 0;
        while let Some(pos) = out[from..].find(marker).map(|i| from + i + marker.len()) {
            let end = out[pos..].find(['&', ',', '#']).map_or(out.len(), |i| pos + i);
            out.replace_range(pos..end, REDACTED);
            from = pos + REDACTED.len();
        }
    }
    out
}

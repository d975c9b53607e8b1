//! The session cookie: its attributes ([`CookieConfig`]), reading the id from a request and
//! writing the `Set-Cookie` of a response.

use std::sync::Arc;

use cookie::{Cookie, SameSite as CookieSameSite};
use http::header::{HeaderMap, HeaderValue, COOKIE};
use session_core::{Error, Result, SessionId};

/// The cookie's `SameSite` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SameSite {
    /// Sent only with requests from the same site.
    Strict,
    /// Also sent with top-level navigations from other sites (following a link). The default.
    Lax,
    /// Sent with every request, cross-site ones included; needs `Secure`.
    None,
}

/// How the session cookie is named and flagged.
///
/// The defaults are the safe ones: `HttpOnly` (scripts can't read it), `Secure` (HTTPS only),
/// `SameSite=Lax`, `Path=/`, no `Domain`, and — being `Secure` with `Path=/` and no domain —
/// the `__Host-` name prefix, which browsers only accept from a secure origin and never from
/// a subdomain, so another site can't plant a session cookie. `Max-Age` is the session's
/// remaining lifetime (the namespace's TTL after a write).
///
/// For plain-http development on localhost, [`insecure_for_local_development`] drops
/// `Secure` (and so the prefix); the layer logs a warning about it when built.
///
/// [`insecure_for_local_development`]: Self::insecure_for_local_development
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieConfig {
    /// The name sent: `__Host-` and the chosen name while `Secure`.
    name: Arc<str>,
    secure: bool,
    same_site: SameSite,
}

impl Default for CookieConfig {
    fn default() -> Self {
        CookieConfig {
            name: Arc::from("__Host-id"),
            secure: true,
            same_site: SameSite::Lax,
        }
    }
}

impl CookieConfig {
    /// The safe defaults: named `__Host-id`, `HttpOnly; Secure; SameSite=Lax; Path=/`.
    pub fn new() -> Self {
        CookieConfig::default()
    }

    /// Names the cookie (`__Host-` is put in front while it is `Secure`).
    ///
    /// # Errors
    /// [`Error::Config`] for an empty name, one with a character a cookie name can't have
    /// (only letters, digits, `-`, `_` and `.`), or one that starts with `__Host-` or
    /// `__Secure-` (the prefix is the layer's to add).
    pub fn with_name(mut self, name: &str) -> Result<Self> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !valid {
            return Err(Error::config(
                "cookie.name",
                "must be 1 to 64 letters, digits, '-', '_' or '.'",
            ));
        }
        let lower = name.to_ascii_lowercase();
        if lower.starts_with("__host-") || lower.starts_with("__secure-") {
            return Err(Error::config(
                "cookie.name",
                "must not start with __Host- or __Secure-: the prefix is added while the cookie is Secure",
            ));
        }
        self.name = if self.secure {
            Arc::from(format!("__Host-{name}"))
        } else {
            Arc::from(name)
        };
        Ok(self)
    }

    /// Sets `SameSite`.
    ///
    /// # Errors
    /// [`Error::Config`] for [`SameSite::None`] on a cookie that is not `Secure` (browsers
    /// refuse it).
    pub fn with_same_site(mut self, same_site: SameSite) -> Result<Self> {
        if same_site == SameSite::None && !self.secure {
            return Err(Error::config(
                "cookie.same_site",
                "SameSite=None needs a Secure cookie",
            ));
        }
        self.same_site = same_site;
        Ok(self)
    }

    /// Drops `Secure` (and the `__Host-` prefix), so that the cookie works over plain http on
    /// localhost. Never for production: the cookie, a bearer credential, then travels in the
    /// clear. The layer logs a warning when built with it. `SameSite=None` becomes `Lax`.
    pub fn insecure_for_local_development(mut self) -> Self {
        self.secure = false;
        if let Some(chosen) = self.name.strip_prefix("__Host-") {
            self.name = Arc::from(chosen);
        }
        if self.same_site == SameSite::None {
            self.same_site = SameSite::Lax;
        }
        self
    }

    /// Whether the cookie is `Secure`.
    pub fn is_secure(&self) -> bool {
        self.secure
    }

    /// The name the cookie is sent under: `__Host-{name}` while `Secure`, else `{name}`.
    pub fn cookie_name(&self) -> &str {
        &self.name
    }

    /// The name, shared (no copy per request).
    pub(crate) fn shared_name(&self) -> Arc<str> {
        Arc::clone(&self.name)
    }

    /// The session id a request's cookies carry: the first cookie of this name whose value
    /// is a well-formed id. A malformed value, or none, is no id (a fresh session), never an
    /// error.
    pub(crate) fn read(&self, headers: &HeaderMap) -> Option<SessionId> {
        let name = self.cookie_name();
        headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(Cookie::split_parse)
            .filter_map(std::result::Result::ok)
            .filter(|c| c.name() == name)
            .find_map(|c| SessionId::parse(c.value()).ok())
    }

    /// The `Set-Cookie` value giving the browser `id` for `max_age_secs` seconds.
    pub(crate) fn set(&self, id: &SessionId, max_age_secs: u64) -> Option<HeaderValue> {
        let max_age = i64::try_from(max_age_secs).unwrap_or(i64::MAX);
        self.header(id.as_str(), time::Duration::seconds(max_age))
    }

    /// The `Set-Cookie` value removing the cookie.
    pub(crate) fn remove(&self) -> Option<HeaderValue> {
        self.header("", time::Duration::ZERO)
    }

    fn header(&self, value: &str, max_age: time::Duration) -> Option<HeaderValue> {
        let mut cookie = Cookie::build((self.cookie_name(), value))
            .http_only(true)
            .secure(self.secure)
            .path("/")
            .same_site(match self.same_site {
                SameSite::Strict => CookieSameSite::Strict,
                SameSite::Lax => CookieSameSite::Lax,
                SameSite::None => CookieSameSite::None,
            })
            .max_age(max_age)
            .build();
        if max_age.is_zero() {
            cookie.set_expires(time::OffsetDateTime::UNIX_EPOCH);
        }
        HeaderValue::from_str(&cookie.encoded().to_string()).ok()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    fn headers(cookies: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for c in cookies {
            h.append(COOKIE, HeaderValue::from_bytes(c.as_bytes()).unwrap());
        }
        h
    }

    #[test]
    fn defaults_are_secure_and_host_prefixed() {
        let c = CookieConfig::new();
        let id = SessionId::generate().unwrap();
        let v = c.set(&id, 3600).unwrap();
        let v = v.to_str().unwrap();
        assert!(v.starts_with(&format!("__Host-id={}", id.as_str())), "{v}");
        for part in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/", "Max-Age=3600"] {
            assert!(v.contains(part), "{part} missing in {v}");
        }
        assert!(!v.contains("Domain"), "{v}");
    }

    #[test]
    fn the_development_switch_drops_secure_and_the_prefix() {
        let c = CookieConfig::new().insecure_for_local_development();
        let v = c.remove().unwrap();
        let v = v.to_str().unwrap();
        assert!(v.starts_with("id=;"), "{v}");
        assert!(!v.contains("Secure"), "{v}");
        assert!(v.contains("Max-Age=0") && v.contains("HttpOnly"), "{v}");
    }

    #[test]
    fn reads_the_first_well_formed_id_and_ignores_the_rest() {
        let c = CookieConfig::new();
        let id = SessionId::generate().unwrap();
        assert_eq!(c.read(&headers(&[])), None);
        assert_eq!(c.read(&headers(&["__Host-id=short"])), None);
        assert_eq!(c.read(&headers(&["__Host-id=a*b*c*d*e*f*g*h*i*j*k"])), None);
        assert_eq!(c.read(&headers(&["id=0123456789abcdef0123"])), None, "unprefixed");
        let both = format!("other=1; __Host-id=bad; __Host-id={}", id.as_str());
        assert_eq!(c.read(&headers(&[&both])), Some(id.clone()));
        let split = format!("__Host-id={}", id.as_str());
        assert_eq!(c.read(&headers(&["x=y", &split])), Some(id));
        assert_eq!(
            c.read(&headers(&[";;;=; =", "__Host-id=\u{e9}0123456789abcdef"])),
            None
        );
    }

    #[test]
    fn names_are_checked() {
        assert!(CookieConfig::new().with_name("sid").is_ok());
        for bad in ["", "a b", "a;b", "__Host-x", "__secure-x", "é"] {
            assert!(CookieConfig::new().with_name(bad).is_err(), "{bad}");
        }
        assert!(CookieConfig::new()
            .insecure_for_local_development()
            .with_same_site(SameSite::None)
            .is_err());
    }
}

//! Cross-site request forgery protection for the console's writes: a same-site session
//! cookie plus a per-session token in every form.
//!
//! The session cookie (`iotauthz_console`, 128 random bits, `HttpOnly`, `SameSite=Strict`,
//! path `/console/`) is set on the first page. A form carries the token
//! HMAC-SHA256(server key, session ‖ caller), so a token is bound to one browser session and
//! one caller, and a page from another site can neither read it nor have the browser send
//! the cookie with its request. A write is accepted only when the cookie is present, the
//! token matches it (compared in constant time) and the browser's `Sec-Fetch-Site` and
//! `Origin` (when sent) say the request comes from the console's own origin. The server key
//! is random per process: a restart ends every console session.

use axum::http::HeaderMap;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// The session cookie's name.
pub const COOKIE: &str = "iotauthz_console";
/// The form field that carries the token.
pub const FIELD: &str = "csrf";

/// Why a write was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrfError {
    #[error("the console session cookie is missing: reload the page and submit again")]
    NoSession,
    #[error(
        "the form's anti-forgery token does not match this session: reload the page and submit again"
    )]
    BadToken,
    #[error("the request does not come from the console's own pages")]
    CrossSite,
    #[error("no random numbers available")]
    Random,
}

/// The server's key.
#[derive(Debug)]
pub struct Csrf {
    key: hmac::Key,
    rng: SystemRandom,
}

impl Csrf {
    pub fn new() -> Result<Self, CsrfError> {
        let rng = SystemRandom::new();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng).map_err(|_| CsrfError::Random)?;
        Ok(Self { key, rng })
    }

    /// A new session id (hex).
    pub fn new_session(&self) -> Result<String, CsrfError> {
        let mut bytes = [0u8; 16];
        self.rng.fill(&mut bytes).map_err(|_| CsrfError::Random)?;
        Ok(hex(&bytes))
    }

    /// The `Set-Cookie` value for a session.
    pub fn cookie(session: &str) -> String {
        format!("{COOKIE}={session}; Path=/console/; HttpOnly; SameSite=Strict")
    }

    /// The session id the browser sent, if it is one this server could have made.
    pub fn session(headers: &HeaderMap) -> Option<String> {
        headers
            .get_all(axum::http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == COOKIE)
            .map(|(_, value)| value.to_owned())
            .filter(|v| v.len() == 32 && v.bytes().all(|b| b.is_ascii_hexdigit()))
    }

    /// The token a form of `session` carries for `principal`.
    pub fn token(&self, session: &str, principal: &str) -> String {
        hex(hmac::sign(&self.key, &message(session, principal)).as_ref())
    }

    /// Checks a write: origin, session cookie and token.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        token: Option<&str>,
        principal: &str,
    ) -> Result<(), CsrfError> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let site = header("sec-fetch-site");
        if site.is_some_and(|site| site != "same-origin") {
            return Err(CsrfError::CrossSite);
        }
        // The console's pages say `Referrer-Policy: no-referrer`, under which a browser
        // sends `Origin: null` with their own form posts; that browser also sends
        // `Sec-Fetch-Site`, checked above. Without it, `null` is refused like any stranger.
        if let Some(origin) = header("origin").filter(|o| !(*o == "null" && site.is_some())) {
            let host = header("host").unwrap_or_default();
            let same = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                .is_some_and(|o| !host.is_empty() && o.eq_ignore_ascii_case(host));
            if !same {
                return Err(CsrfError::CrossSite);
            }
        }
        let session = Self::session(headers).ok_or(CsrfError::NoSession)?;
        let token = token.and_then(unhex).ok_or(CsrfError::BadToken)?;
        hmac::verify(&self.key, &message(&session, principal), &token)
            .map_err(|_| CsrfError::BadToken)
    }
}

fn message(session: &str, principal: &str) -> Vec<u8> {
    [
        b"console-csrf\0",
        session.as_bytes(),
        b"\0",
        principal.as_bytes(),
    ]
    .concat()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.len() > 128 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn a_token_is_bound_to_its_session_and_caller() {
        let csrf = Csrf::new().unwrap();
        let session = csrf.new_session().unwrap();
        let token = csrf.token(&session, "user:a");
        let cookie = format!("other=1; {COOKIE}={session}");
        let ok = headers(&[("cookie", &cookie), ("sec-fetch-site", "same-origin")]);
        assert_eq!(csrf.verify(&ok, Some(&token), "user:a"), Ok(()));
        assert_eq!(
            csrf.verify(&ok, Some(&token), "user:b"),
            Err(CsrfError::BadToken)
        );
        assert_eq!(csrf.verify(&ok, None, "user:a"), Err(CsrfError::BadToken));
        let other = csrf.new_session().unwrap();
        let wrong = headers(&[("cookie", &format!("{COOKIE}={other}"))]);
        assert_eq!(
            csrf.verify(&wrong, Some(&token), "user:a"),
            Err(CsrfError::BadToken)
        );
        assert_eq!(
            csrf.verify(&headers(&[]), Some(&token), "user:a"),
            Err(CsrfError::NoSession)
        );
        let cross = headers(&[("cookie", &cookie), ("sec-fetch-site", "cross-site")]);
        assert_eq!(
            csrf.verify(&cross, Some(&token), "user:a"),
            Err(CsrfError::CrossSite)
        );
        let origin = headers(&[
            ("cookie", &cookie),
            ("host", "console.example:8181"),
            ("origin", "https://evil.example"),
        ]);
        assert_eq!(
            csrf.verify(&origin, Some(&token), "user:a"),
            Err(CsrfError::CrossSite)
        );
        let same = headers(&[
            ("cookie", &cookie),
            ("host", "console.example:8181"),
            ("origin", "http://console.example:8181"),
        ]);
        assert_eq!(csrf.verify(&same, Some(&token), "user:a"), Ok(()));
        // `Origin: null` (a no-referrer page's own post) passes only with the browser's
        // same-origin `Sec-Fetch-Site`.
        let null = |site: Option<&'static str>| {
            let mut pairs = vec![
                ("cookie", cookie.as_str()),
                ("host", "console.example:8181"),
                ("origin", "null"),
            ];
            pairs.extend(site.map(|s| ("sec-fetch-site", s)));
            headers(&pairs)
        };
        assert_eq!(
            csrf.verify(&null(Some("same-origin")), Some(&token), "user:a"),
            Ok(())
        );
        assert_eq!(
            csrf.verify(&null(Some("cross-site")), Some(&token), "user:a"),
            Err(CsrfError::CrossSite)
        );
        assert_eq!(
            csrf.verify(&null(None), Some(&token), "user:a"),
            Err(CsrfError::CrossSite)
        );
    }
}

//! Passwords and tokens, and the one shape of a user with a password.
//!
//! A [`Secret`] never shows its value in `Debug`, so settings, states and errors that hold one
//! can be logged and printed whole. It is compared in constant time, so the time an answer
//! takes tells nothing about how much of a guess was right. Every password and token kiln
//! holds is one: the registry's users and its builders' credential, `kiln build`'s push
//! credential, the API's operator tokens.

use serde::Deserialize;

/// A password or token: its value is read with [`Secret::expose`] where it is sent, and is
/// never printed.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// `value`, kept secret.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the places that send it (an `Authorization` header, an auth file).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `candidate` is this secret, compared in constant time: every byte is looked at
    /// whatever the first difference, so timing does not lead a guesser on.
    pub fn matches(&self, candidate: &str) -> bool {
        constant_time_eq(self.0.as_bytes(), candidate.as_bytes())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.to_owned())
    }
}

/// A user name and its password (or token): how kiln logs in to a registry and how a registry
/// user logs in to kiln's.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// User name.
    pub user: String,
    /// Password or token.
    pub password: Secret,
}

impl Credentials {
    /// `user` with `password`.
    pub fn new(user: impl Into<String>, password: impl Into<Secret>) -> Self {
        Credentials {
            user: user.into(),
            password: password.into(),
        }
    }

    /// Whether `user` and `password` are these, both compared in constant time (the name as
    /// well, so timing does not tell which names exist).
    pub fn matches(&self, user: &str, password: &str) -> bool {
        constant_time_eq(self.user.as_bytes(), user.as_bytes()) & self.password.matches(password)
    }

    /// `user:password` in base64: HTTP Basic's and containers-auth.json's encoding.
    pub fn basic(&self) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            self.user,
            self.password.expose()
        ))
    }
}

/// The credentials of an `Authorization: <scheme> <credentials>` header when its scheme is
/// `scheme`, in any casing (RFC 9110; Singularity's build client sends `BEARER`), trimmed; they
/// may be empty. The one reading of the header, for kiln's APIs and its registry alike.
pub fn authorization<'a>(headers: &'a axum::http::HeaderMap, scheme: &str) -> Option<&'a str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .trim();
    let (given, credentials) = value.split_once(char::is_whitespace)?;
    given
        .eq_ignore_ascii_case(scheme)
        .then_some(credentials.trim())
}

/// Compares without leaking where `a` and `b` differ (their lengths aside).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole_and_print_nothing() {
        let secret = Secret::new("hunter2");
        assert!(secret.matches("hunter2"));
        assert!(!secret.matches("hunter3"));
        assert!(!secret.matches("hunter22"));
        assert!(!secret.matches(""));
        assert_eq!(format!("{secret:?}"), "Secret(…)");
        let credentials = Credentials::new("alice", "hunter2");
        assert!(credentials.matches("alice", "hunter2"));
        assert!(!credentials.matches("bob", "hunter2"));
        assert!(!credentials.matches("alice", "hunter"));
        let printed = format!("{credentials:?}");
        assert!(
            printed.contains("alice") && !printed.contains("hunter2"),
            "{printed}"
        );
        // "alice:hunter2"
        assert_eq!(credentials.basic(), "YWxpY2U6aHVudGVyMg==");
    }
}

//! Who may do what in the embedded registry.
//!
//! Anyone may read. Writers prove themselves with HTTP Basic credentials from the configuration,
//! either on every request or once, at the token endpoint, in exchange for a short-lived Bearer
//! token. The `/v2/` check answers callers without credentials with a Bearer challenge, the
//! flow every client knows: docker, podman, skopeo, crane and oras fetch an anonymous pull
//! token and read; given credentials they fetch a push token and write.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};
use base64::Engine as _;

use super::Credentials;

/// How long a token is good for. Clients ask for a new one when it runs out.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(300);

/// The path of the token endpoint.
pub const TOKEN_PATH: &str = "/registry/token";

/// What a request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Pull only.
    Read,
    /// Push and delete as well.
    Write,
}

/// What a token endpoint request turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// No credentials: a pull token.
    Anonymous,
    /// Valid credentials: a push token.
    User,
    /// Credentials that match no user: refused.
    Invalid,
}

/// Issued Bearer tokens, in memory: a restart costs clients one more token request.
#[derive(Debug, Default)]
pub struct Tokens {
    issued: Mutex<HashMap<String, (Access, Instant)>>,
}

impl Tokens {
    /// Issues a token granting `access` for [`TOKEN_LIFETIME`].
    pub fn issue(&self, access: Access) -> String {
        let token = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let now = Instant::now();
        let mut issued = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        issued.retain(|_, (_, expires)| *expires > now);
        issued.insert(token.clone(), (access, now + TOKEN_LIFETIME));
        token
    }

    /// What `token` grants, if it is one of ours and still valid.
    fn grant(&self, token: &str) -> Option<Access> {
        let issued = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        issued
            .get(token)
            .filter(|(_, expires)| *expires > Instant::now())
            .map(|(access, _)| *access)
    }
}

/// What the request's `Authorization` header allows.
pub fn access(users: &[Credentials], tokens: &Tokens, headers: &HeaderMap) -> Access {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Access::Read;
    };
    if let Some(token) = strip_scheme(value, "Bearer") {
        return tokens.grant(token.trim()).unwrap_or(Access::Read);
    }
    match identify(users, headers) {
        Identity::User => Access::Write,
        Identity::Anonymous | Identity::Invalid => Access::Read,
    }
}

/// Whether the request carries a user's credentials or any token kiln issued (a pull token
/// is a valid identity for the `/v2/` check too).
pub fn authenticated(users: &[Credentials], tokens: &Tokens, headers: &HeaderMap) -> bool {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| strip_scheme(v, "Bearer"));
    match bearer {
        Some(token) => tokens.grant(token.trim()).is_some(),
        None => identify(users, headers) == Identity::User,
    }
}

/// Who the Basic credentials of a request belong to.
pub fn identify(users: &[Credentials], headers: &HeaderMap) -> Identity {
    let Some(encoded) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| strip_scheme(v, "Basic"))
    else {
        return Identity::Anonymous;
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok());
    let Some((user, password)) = decoded.as_deref().and_then(|s| s.split_once(':')) else {
        return Identity::Invalid;
    };
    // Every user is compared, in constant time, so timing tells nothing about which matched.
    let known = users.iter().fold(false, |found, c| {
        found
            | (constant_time_eq(c.user.as_bytes(), user.as_bytes())
                & constant_time_eq(c.password.as_bytes(), password.as_bytes()))
    });
    if known {
        Identity::User
    } else {
        Identity::Invalid
    }
}

/// The `WWW-Authenticate` value that sends clients to the token endpoint of the host they
/// called (behind a TLS-terminating proxy, `X-Forwarded-Proto: https` makes it https).
pub fn challenge(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            h.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        })
        .unwrap_or("localhost");
    let scheme = match headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
    {
        Some("https") => "https",
        _ => "http",
    };
    format!("Bearer realm=\"{scheme}://{host}{TOKEN_PATH}\",service=\"kiln\"")
}

fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (given, rest) = value.split_once(' ')?;
    given.eq_ignore_ascii_case(scheme).then_some(rest)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            authorization.parse().expect("header"),
        );
        headers
    }

    fn basic(user: &str, password: &str) -> String {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Basic {encoded}")
    }

    #[test]
    fn who_may_write() {
        let users = vec![Credentials {
            user: "u".into(),
            password: "p".into(),
        }];
        let tokens = Tokens::default();
        assert_eq!(access(&users, &tokens, &HeaderMap::new()), Access::Read);
        assert_eq!(
            access(&users, &tokens, &headers(&basic("u", "p"))),
            Access::Write
        );
        assert_eq!(
            access(&users, &tokens, &headers(&basic("u", "x"))),
            Access::Read
        );
        assert_eq!(access(&users, &tokens, &headers("Basic !!!")), Access::Read);
        let push = tokens.issue(Access::Write);
        let pull = tokens.issue(Access::Read);
        assert_eq!(
            access(&users, &tokens, &headers(&format!("Bearer {push}"))),
            Access::Write
        );
        assert_eq!(
            access(&users, &tokens, &headers(&format!("bearer {push}"))),
            Access::Write
        );
        assert_eq!(
            access(&users, &tokens, &headers(&format!("Bearer {pull}"))),
            Access::Read
        );
        assert_eq!(
            access(&users, &tokens, &headers("Bearer forged")),
            Access::Read
        );
        assert_eq!(
            identify(&users, &headers(&basic("v", "p"))),
            Identity::Invalid
        );
    }

    #[test]
    fn challenge_points_at_the_called_host() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "kiln.example.org".parse().expect("header"));
        headers.insert("x-forwarded-proto", "https".parse().expect("header"));
        assert_eq!(
            challenge(&headers),
            "Bearer realm=\"https://kiln.example.org/registry/token\",service=\"kiln\""
        );
    }
}

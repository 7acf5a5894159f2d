//! Who may do what in the embedded registry.
//!
//! Anyone may read. Writers prove themselves with HTTP Basic credentials from the configuration,
//! either on every request or once, at the token endpoint, in exchange for a short-lived Bearer
//! token. The `/v2/` check answers callers without credentials with a Bearer challenge, the
//! flow every client knows: docker, podman, skopeo, crane and oras fetch an anonymous pull
//! token and read; given credentials they fetch a push token and write.
//!
//! kiln's own namespaces ([`RESERVED_NAMESPACES`]) hold what kiln vouches for: only kiln's
//! builders and operators write there; ordinary users write everywhere else.
//!
//! Tokens are signed, not remembered ([`crate::signing`]): a token names its holder, role and
//! expiry, followed by an HMAC-SHA256 over them with a key derived from `secret_key`. Any node
//! with that secret accepts a token another issued; without one (role `all`) the key is made
//! at start and a restart invalidates every token (clients then ask for a new one).

use std::time::{Duration, SystemTime};

use axum::http::{HeaderMap, header};
use base64::Engine as _;

use super::User;
use crate::credentials::authorization;
use crate::signing::{SigningKey, unix_millis};

/// The path of the token endpoint.
pub const TOKEN_PATH: &str = "/registry/token";

/// The first path components of repositories that hold what kiln itself made or keeps: its
/// images and library (`library/`, remote-build results included), its bases (`kiln/`) and
/// its copies of upstream images (`mirror/`).
pub const RESERVED_NAMESPACES: [&str; 3] = ["library", "kiln", "mirror"];

/// The reserved namespace repository `name` lies in, if any.
pub fn reserved_namespace(name: &str) -> Option<&'static str> {
    let first = name.split('/').next().unwrap_or_default();
    RESERVED_NAMESPACES.into_iter().find(|n| *n == first)
}

/// What a writer is to kiln.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A configured registry user: writes outside kiln's own namespaces.
    User,
    /// A configured user marked `operator = true`: writes everywhere (pushes bases).
    Operator,
    /// kiln's own builders: write everywhere, and their uploads are not capped (the number of
    /// workers bounds them).
    Builder,
}

impl Role {
    /// Whether this role may write into kiln's own namespaces.
    pub fn writes_reserved(self) -> bool {
        !matches!(self, Role::User)
    }

    fn code(self) -> char {
        match self {
            Role::User => 'u',
            Role::Operator => 'o',
            Role::Builder => 'b',
        }
    }

    fn from_code(code: char) -> Option<Self> {
        match code {
            'u' => Some(Role::User),
            'o' => Some(Role::Operator),
            'b' => Some(Role::Builder),
            _ => None,
        }
    }
}

/// What a request may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Pull only.
    Read,
    /// Push and delete as well, as `user` in `role`.
    Write { user: String, role: Role },
}

impl Access {
    /// Whether this may write (anywhere at all).
    pub fn writes(&self) -> bool {
        matches!(self, Access::Write { .. })
    }
}

/// What a token endpoint request turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// No credentials: a pull token.
    Anonymous,
    /// Valid credentials of `user` in `role`: a push token.
    Known { user: String, role: Role },
    /// Credentials that match no user: refused.
    Invalid,
}

/// Issues and checks signed Bearer tokens.
pub struct Tokens {
    key: SigningKey,
    lifetime: Duration,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

impl Tokens {
    /// Tokens good for `lifetime`, signed with `key` (for this purpose alone): every node given
    /// the same key accepts the tokens of every other.
    pub fn new(key: &SigningKey, lifetime: Duration) -> Self {
        Tokens {
            key: key.for_purpose("registry-token"),
            lifetime,
        }
    }

    /// How long a token is good for.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// A token granting `access` until `now` + the lifetime.
    pub fn issue_at(&self, access: &Access, now: SystemTime) -> String {
        let expires = unix_millis(now)
            .saturating_add(u64::try_from(self.lifetime.as_millis()).unwrap_or(u64::MAX));
        let payload = match access {
            Access::Read => format!("r:{expires}:"),
            Access::Write { user, role } => format!("{}:{expires}:{user}", role.code()),
        };
        self.key.sign(payload.as_bytes())
    }

    /// A token granting `access` for the configured lifetime.
    pub fn issue(&self, access: &Access) -> String {
        self.issue_at(access, SystemTime::now())
    }

    /// What `token` grants at `now`, if kiln signed it and it has not expired.
    pub fn grant_at(&self, token: &str, now: SystemTime) -> Option<Access> {
        let payload = String::from_utf8(self.key.open(token)?).ok()?;
        let mut parts = payload.splitn(3, ':');
        let (role, expires, user) = (parts.next()?, parts.next()?, parts.next()?);
        if expires.parse::<u64>().ok()? <= unix_millis(now) {
            return None;
        }
        let mut role = role.chars();
        match (role.next()?, role.next()) {
            ('r', None) => Some(Access::Read),
            (code, None) => Some(Access::Write {
                user: user.to_owned(),
                role: Role::from_code(code)?,
            }),
            _ => None,
        }
    }

    fn grant(&self, token: &str) -> Option<Access> {
        self.grant_at(token, SystemTime::now())
    }
}

/// What the request's `Authorization` header allows.
pub fn access(users: &[User], tokens: &Tokens, headers: &HeaderMap) -> Access {
    if let Some(token) = authorization(headers, "Bearer") {
        return tokens.grant(token).unwrap_or(Access::Read);
    }
    match identify(users, headers) {
        Identity::Known { user, role } => Access::Write { user, role },
        Identity::Anonymous | Identity::Invalid => Access::Read,
    }
}

/// Whether the request carries a user's credentials or any token kiln issued (a pull token
/// is a valid identity for the `/v2/` check too).
pub fn authenticated(users: &[User], tokens: &Tokens, headers: &HeaderMap) -> bool {
    match authorization(headers, "Bearer") {
        Some(token) => tokens.grant(token).is_some(),
        None => matches!(identify(users, headers), Identity::Known { .. }),
    }
}

/// Who the Basic credentials of a request belong to.
pub fn identify(users: &[User], headers: &HeaderMap) -> Identity {
    let Some(encoded) = authorization(headers, "Basic") else {
        return Identity::Anonymous;
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok());
    let Some((user, password)) = decoded.as_deref().and_then(|s| s.split_once(':')) else {
        return Identity::Invalid;
    };
    // Every user is compared, in constant time, so timing tells nothing about which matched.
    let known = users.iter().fold(None, |found, known| {
        let matches = known.credentials.matches(user, password);
        found.or(matches.then_some(known))
    });
    match known {
        Some(known) => Identity::Known {
            user: known.credentials.user.clone(),
            role: known.role,
        },
        None => Identity::Invalid,
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

    fn writer(user: &str, role: Role) -> Access {
        Access::Write {
            user: user.into(),
            role,
        }
    }

    #[test]
    fn who_may_write() {
        let users = vec![
            User::new("u", "p", Role::User),
            User::new("op", "secret", Role::Operator),
        ];
        let tokens = Tokens::new(&SigningKey::random(), Duration::from_secs(60));
        assert_eq!(access(&users, &tokens, &HeaderMap::new()), Access::Read);
        assert_eq!(
            access(&users, &tokens, &headers(&basic("u", "p"))),
            writer("u", Role::User)
        );
        assert_eq!(
            access(&users, &tokens, &headers(&basic("op", "secret"))),
            writer("op", Role::Operator)
        );
        assert_eq!(
            access(&users, &tokens, &headers(&basic("u", "x"))),
            Access::Read
        );
        assert_eq!(access(&users, &tokens, &headers("Basic !!!")), Access::Read);
        let push = tokens.issue(&writer("u", Role::User));
        let pull = tokens.issue(&Access::Read);
        assert_eq!(
            access(&users, &tokens, &headers(&format!("Bearer {push}"))),
            writer("u", Role::User)
        );
        assert_eq!(
            access(&users, &tokens, &headers(&format!("bearer {push}"))),
            writer("u", Role::User)
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
    fn tokens_cannot_be_altered_or_outlive_their_lifetime() {
        let key = SigningKey::random();
        let tokens = Tokens::new(&key, Duration::from_secs(3600));
        let start = SystemTime::now();
        let push = tokens.issue_at(&writer("u", Role::User), start);
        assert_eq!(
            tokens.grant_at(&push, start + Duration::from_secs(3599)),
            Some(writer("u", Role::User))
        );
        assert_eq!(
            tokens.grant_at(&push, start + Duration::from_secs(3600)),
            None
        );
        // Raising one's role, or another kiln's token, is refused.
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (payload, signature) = push.split_once('.').expect("two parts");
        let payload = String::from_utf8(engine.decode(payload).expect("base64")).expect("text");
        let raised = engine.encode(payload.replacen('u', "o", 1));
        assert_eq!(
            tokens.grant_at(&format!("{raised}.{signature}"), start),
            None
        );
        let other = Tokens::new(&SigningKey::random(), Duration::from_secs(3600));
        assert_eq!(other.grant_at(&push, start), None);
        // Another node with the same key accepts it.
        let same_key = Tokens::new(&key, Duration::from_secs(60));
        assert_eq!(
            same_key.grant_at(&push, start),
            Some(writer("u", Role::User))
        );
    }

    #[test]
    fn kilns_namespaces_are_reserved() {
        for name in [
            "library/samtools",
            "kiln/base/debian",
            "mirror/docker.io/x",
            "library",
        ] {
            assert!(reserved_namespace(name).is_some(), "{name}");
        }
        for name in ["alice/tools", "libraryx/a", "kilnx", "team/library/a"] {
            assert_eq!(reserved_namespace(name), None, "{name}");
        }
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

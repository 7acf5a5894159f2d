//! Typed parser of the part of a `/v2/` URL path after `/v2/`: repository
//! names, tags, digests and upload sessions are validated here, so nothing
//! unchecked (traversal, percent escapes, empty segments) reaches storage.

use std::fmt;

use super::error::{ErrorCode, RegistryError, Result};

/// Longest repository name accepted.
pub const MAX_NAME_LEN: usize = 255;

/// A `sha256:<64 lowercase hex>` digest; only sha256 is supported.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// Parses `sha256:<hex>`; other well-formed algorithms are UNSUPPORTED.
    pub fn parse(s: &str) -> Result<Self> {
        let invalid =
            || RegistryError::new(ErrorCode::DigestInvalid, format!("invalid digest {s:?}"));
        let (algo, hex) = s.split_once(':').ok_or_else(invalid)?;
        if algo != "sha256" {
            let algo_ok = !algo.is_empty()
                && algo
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+._-".contains(c));
            let hex_ok = !hex.is_empty()
                && hex
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '=' || c == '_' || c == '-');
            if algo_ok && hex_ok {
                return Err(RegistryError::new(
                    ErrorCode::Unsupported,
                    format!("digest algorithm {algo:?} is not supported"),
                )
                .with_status(axum::http::StatusCode::BAD_REQUEST));
            }
            return Err(invalid());
        }
        Self::from_hex(hex).ok_or_else(invalid)
    }

    /// Builds a digest from 64 lowercase hex characters.
    pub fn from_hex(hex: &str) -> Option<Self> {
        let ok = hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then(|| Self {
            hex: hex.to_owned(),
        })
    }

    /// The hex part (safe to use as a file name).
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

/// A manifest reference: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Tag(String),
    Digest(Digest),
}

impl Reference {
    /// A reference containing `:` is a digest, otherwise a tag.
    pub fn parse(s: &str) -> Result<Self> {
        if s.contains(':') {
            return Digest::parse(s).map(Self::Digest);
        }
        if is_valid_tag(s) {
            Ok(Self::Tag(s.to_owned()))
        } else {
            Err(RegistryError::new(
                ErrorCode::ManifestInvalid,
                format!("invalid tag {s:?}"),
            ))
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tag(t) => f.write_str(t),
            Self::Digest(d) => d.fmt(f),
        }
    }
}

/// An endpoint under `/v2/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Manifest { name: String, reference: Reference },
    Blob { name: String, digest: Digest },
    UploadStart { name: String },
    Upload { name: String, session: String },
    Tags { name: String },
    Referrers { name: String, digest: Digest },
}

impl Route {
    /// The repository the route addresses.
    pub fn name(&self) -> &str {
        match self {
            Self::Manifest { name, .. }
            | Self::Blob { name, .. }
            | Self::UploadStart { name }
            | Self::Upload { name, .. }
            | Self::Tags { name }
            | Self::Referrers { name, .. } => name,
        }
    }
}

fn not_found(rest: &str) -> RegistryError {
    RegistryError::new(
        ErrorCode::NameUnknown,
        format!("no such endpoint /v2/{rest}"),
    )
}

/// Parses the raw (still percent-encoded) path after `/v2/`.
pub fn parse(rest: &str) -> Result<Route> {
    if rest.contains('%') || rest.contains('\\') {
        return Err(RegistryError::new(
            ErrorCode::NameInvalid,
            "escaped characters are not allowed in paths",
        ));
    }
    let segs: Vec<&str> = rest.split('/').collect();
    let n = segs.len();
    let tail = |k: usize| -> &[&str] { &segs[n.saturating_sub(k)..] };
    let head = |k: usize| -> Result<String> { parse_name(&segs[..n.saturating_sub(k)]) };
    let route = if n >= 3 && tail(2) == ["tags", "list"] {
        Route::Tags { name: head(2)? }
    } else if n >= 4 && tail(3) == ["blobs", "uploads", ""] {
        Route::UploadStart { name: head(3)? }
    } else if n >= 3 && tail(2) == ["blobs", "uploads"] {
        Route::UploadStart { name: head(2)? }
    } else if n >= 4 && tail(3)[..2] == ["blobs", "uploads"] {
        let session = uuid::Uuid::parse_str(segs[n - 1]).map_err(|_| {
            RegistryError::new(ErrorCode::BlobUploadUnknown, "invalid upload session id")
        })?;
        Route::Upload {
            name: head(3)?,
            session: session.hyphenated().to_string(),
        }
    } else if n >= 3 && segs[n - 2] == "blobs" {
        let digest = Digest::parse(segs[n - 1])?;
        Route::Blob {
            name: head(2)?,
            digest,
        }
    } else if n >= 3 && segs[n - 2] == "manifests" {
        let reference = Reference::parse(segs[n - 1])?;
        Route::Manifest {
            name: head(2)?,
            reference,
        }
    } else if n >= 3 && segs[n - 2] == "referrers" {
        let digest = Digest::parse(segs[n - 1])?;
        Route::Referrers {
            name: head(2)?,
            digest,
        }
    } else {
        return Err(not_found(rest));
    };
    Ok(route)
}

/// Validates a whole repository name such as `library/a/b`.
pub fn parse_name_str(name: &str) -> Result<String> {
    parse_name(&name.split('/').collect::<Vec<_>>())
}

/// Validates repository name components and joins them.
fn parse_name(components: &[&str]) -> Result<String> {
    let name = components.join("/");
    let ok = !components.is_empty()
        && name.len() <= MAX_NAME_LEN
        && components.iter().all(|c| is_valid_component(c));
    if ok {
        Ok(name)
    } else {
        Err(RegistryError::new(
            ErrorCode::NameInvalid,
            format!("invalid repository name {name:?}"),
        ))
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
pub fn is_valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`
pub fn is_valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|&x| x.is_ascii_alphanumeric() || b"._-".contains(&x))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn table() {
        let d = Digest::from_hex(HEX).unwrap();
        let sess = "0b3a1a52-3c1e-4b53-9d2c-8f0c5d0e2a11";
        let ok: Vec<(String, Route)> = vec![
            (
                "library/a/b/manifests/latest".into(),
                Route::Manifest {
                    name: "library/a/b".into(),
                    reference: Reference::Tag("latest".into()),
                },
            ),
            (
                format!("a/manifests/sha256:{HEX}"),
                Route::Manifest {
                    name: "a".into(),
                    reference: Reference::Digest(d.clone()),
                },
            ),
            (
                format!("my-repo__x/y.z/blobs/sha256:{HEX}"),
                Route::Blob {
                    name: "my-repo__x/y.z".into(),
                    digest: d.clone(),
                },
            ),
            (
                "a--b/blobs/uploads/".into(),
                Route::UploadStart {
                    name: "a--b".into(),
                },
            ),
            (
                format!("a/blobs/uploads/{sess}"),
                Route::Upload {
                    name: "a".into(),
                    session: sess.into(),
                },
            ),
            (
                "tags/tags/list".into(),
                Route::Tags {
                    name: "tags".into(),
                },
            ),
            (
                format!("x/referrers/sha256:{HEX}"),
                Route::Referrers {
                    name: "x".into(),
                    digest: d.clone(),
                },
            ),
        ];
        for (p, want) in ok {
            assert_eq!(parse(&p).unwrap(), want, "{p}");
        }
        let bad: Vec<(String, ErrorCode)> = vec![
            ("../etc/manifests/latest".into(), ErrorCode::NameInvalid),
            ("a/../b/manifests/latest".into(), ErrorCode::NameInvalid),
            ("a//b/manifests/latest".into(), ErrorCode::NameInvalid),
            ("%2e%2e/manifests/latest".into(), ErrorCode::NameInvalid),
            ("A/manifests/latest".into(), ErrorCode::NameInvalid),
            ("a-/manifests/latest".into(), ErrorCode::NameInvalid),
            ("a___b/manifests/latest".into(), ErrorCode::NameInvalid),
            ("_a/manifests/latest".into(), ErrorCode::NameInvalid),
            ("/manifests/latest".into(), ErrorCode::NameInvalid),
            (
                format!("{}/manifests/latest", "a".repeat(256)),
                ErrorCode::NameInvalid,
            ),
            ("a/manifests/..".into(), ErrorCode::ManifestInvalid),
            ("a/manifests/.x".into(), ErrorCode::ManifestInvalid),
            (
                format!("a/manifests/{}", "t".repeat(129)),
                ErrorCode::ManifestInvalid,
            ),
            ("a/blobs/sha256:abc".into(), ErrorCode::DigestInvalid),
            (
                format!("a/blobs/sha256:{}", HEX.to_uppercase()),
                ErrorCode::DigestInvalid,
            ),
            (format!("a/blobs/sha512:{HEX}{HEX}"), ErrorCode::Unsupported),
            (
                "a/blobs/uploads/not-a-uuid".into(),
                ErrorCode::BlobUploadUnknown,
            ),
            ("a/whatever".into(), ErrorCode::NameUnknown),
        ];
        for (p, code) in bad {
            assert_eq!(parse(&p).unwrap_err().code(), Some(code), "{p}");
        }
        assert!(parse(&format!("{}/tags/list", "a".repeat(255))).is_ok());
    }
}

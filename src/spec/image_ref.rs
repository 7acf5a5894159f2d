//! Image references that kiln writes into recipes (`FROM ...`), taken from configuration.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::entry::printable;

/// A container image reference: `[host[:port]/]path[:tag][@sha256:<hex>]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ImageRef(String);

impl ImageRef {
    /// The reference as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Text that is not an image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{reference}` is not an image reference: {reason}")]
pub struct ImageRefError {
    reference: String,
    reason: &'static str,
}

impl FromStr for ImageRef {
    type Err = ImageRefError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let refuse = |reason| ImageRefError {
            reference: printable(s),
            reason,
        };
        if s.is_empty() || s.len() > 512 {
            return Err(refuse("it must have 1 to 512 characters"));
        }
        let (name, digest) = match s.split_once('@') {
            Some((name, digest)) => (name, Some(digest)),
            None => (s, None),
        };
        if let Some(digest) = digest {
            let hex = digest
                .strip_prefix("sha256:")
                .ok_or_else(|| refuse("a digest must start with sha256:"))?;
            if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return Err(refuse("a sha256 digest has 64 lowercase hex characters"));
            }
        }
        let last_slash = name.rfind('/').map_or(0, |at| at + 1);
        let (path, tag) = match name[last_slash..].rfind(':') {
            Some(at) => (&name[..last_slash + at], Some(&name[last_slash + at + 1..])),
            None => (name, None),
        };
        if let Some(tag) = tag {
            let valid = !tag.is_empty()
                && tag.len() <= 128
                && tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
                && tag
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            if !valid {
                return Err(refuse("a tag has letters, digits, `_`, `.` and `-`"));
            }
        }
        let mut components: Vec<&str> = path.split('/').collect();
        let has_host = components.len() > 1
            && (components[0].contains(['.', ':']) || components[0] == "localhost");
        if has_host {
            let host = components.remove(0);
            let valid = host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:".contains(c));
            if !valid {
                return Err(refuse(
                    "the registry host has letters, digits, `.`, `-` and a port",
                ));
            }
        }
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.starts_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
                && c.ends_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
                && c.chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
        };
        if !components.iter().all(|c| component_ok(c)) {
            return Err(refuse(
                "repository paths have lowercase letters, digits, `.`, `_` and `-`",
            ));
        }
        Ok(ImageRef(s.to_owned()))
    }
}

/// The registry (`host[:port]`) an image reference is pulled from, by Docker's rules: the first
/// path component when it holds a `.` or a `:`, is `localhost`, or is a bracketed IPv6
/// address; otherwise Docker Hub, `docker.io` (`debian:12`, `library/debian`). A leading
/// `docker://` is ignored.
pub fn registry_of(reference: &str) -> &str {
    let reference = reference.strip_prefix("docker://").unwrap_or(reference);
    match reference.split_once('/') {
        Some((first, _))
            if first.contains(['.', ':']) || first == "localhost" || first.starts_with('[') =>
        {
            first
        }
        _ => "docker.io",
    }
}

impl TryFrom<String> for ImageRef {
    type Error = ImageRefError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<ImageRef> for String {
    fn from(reference: ImageRef) -> Self {
        reference.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_follow_dockers_rules() {
        for (reference, registry) in [
            ("debian:12", "docker.io"),
            ("library/debian", "docker.io"),
            ("docker://alpine", "docker.io"),
            ("localhost/x", "localhost"),
            ("localhost:5000/x:1", "localhost:5000"),
            ("127.0.0.1:5000/x", "127.0.0.1:5000"),
            ("[::1]:5000/x", "[::1]:5000"),
            ("[::1]/x", "[::1]"),
            ("docker://quay.io/biocontainers/samtools:1.21", "quay.io"),
            ("169.254.169.254/latest", "169.254.169.254"),
        ] {
            assert_eq!(registry_of(reference), registry, "{reference}");
        }
    }

    #[test]
    fn references() {
        for ok in [
            "python:3.12-slim",
            "mambaorg/micromamba:2-amazon2023",
            "localhost:9090/kiln/base/debian:bookworm",
            "registry.example.org/a/b",
            &format!("debian@sha256:{}", "a".repeat(64)),
        ] {
            assert!(ok.parse::<ImageRef>().is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Python:3",
            "python:3 AS x",
            "python:3\nRUN id",
            "python:$(id)",
            "python:",
            "debian@sha256:abc",
            "a//b",
        ] {
            assert!(bad.parse::<ImageRef>().is_err(), "{bad:?}");
        }
    }
}

//! The base image a request may name instead of kiln's default: one of the bases operators keep
//! in kiln's own registry under `kiln/base/` (where `kiln base create` pushes).
//!
//! The name reaches recipes (`FROM`, `From:`) and registry paths, so it is held to the
//! registry's own grammar here, and to kiln's base namespace: a request cannot point a build at
//! another registry, or at an image someone other than an operator pushed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::entry::printable;

/// The repository prefix every base a request names must have. Only operators push there.
pub const BASE_NAMESPACE: &str = "kiln/base/";

/// The longest base name a request may give, repository, `:` and tag together.
pub const MAX_BASE_LEN: usize = 255;

/// The longest tag, as the OCI distribution spec allows.
const MAX_TAG_LEN: usize = 128;

/// A base in kiln's registry: `kiln/base/<name>:<tag>`, without a host.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KilnBase(String);

impl KilnBase {
    /// `repository:tag`, as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The repository inside kiln's registry, e.g. `kiln/base/gl`.
    pub fn repository(&self) -> &str {
        self.split().0
    }

    /// The tag, e.g. `bookworm`.
    pub fn tag(&self) -> &str {
        self.split().1
    }

    fn split(&self) -> (&str, &str) {
        // Validation guarantees the `:`; the fallback only keeps this total.
        self.0.rsplit_once(':').unwrap_or((&self.0, ""))
    }
}

impl fmt::Display for KilnBase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A base name a request may not use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the base image `{base}` was refused: {reason}. Name one of kiln's bases as \
     {BASE_NAMESPACE}NAME:TAG, e.g. {BASE_NAMESPACE}gl:bookworm (operators make them with \
     `kiln base create`), or leave it out for kiln's default base"
)]
pub struct KilnBaseError {
    base: String,
    reason: &'static str,
}

impl FromStr for KilnBase {
    type Err = KilnBaseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let refuse = |reason| KilnBaseError {
            base: printable(s),
            reason,
        };
        if s.is_empty() || s.len() > MAX_BASE_LEN {
            return Err(refuse("a base name has 1 to 255 characters"));
        }
        if s.contains('@') {
            return Err(refuse("a digest cannot be named; name the base by its tag"));
        }
        let first = s.split('/').next().unwrap_or_default();
        if s.contains('/') && (first.contains(['.', ':']) || first == "localhost") {
            return Err(refuse(
                "it names a registry host; bases are named without one, in kiln's own registry",
            ));
        }
        let Some((repository, tag)) = s.rsplit_once(':').filter(|(_, tag)| !tag.contains('/'))
        else {
            return Err(refuse("it has no tag"));
        };
        if !repository.split('/').all(is_path_component) {
            return Err(refuse(
                "repository path segments have lowercase letters and digits, joined by `.`, \
                 `_`, `__` or `-`",
            ));
        }
        if !is_tag(tag) {
            return Err(refuse(
                "a tag has up to 128 letters, digits, `_`, `.` and `-`, and does not start \
                 with `.` or `-`",
            ));
        }
        if !repository.starts_with(BASE_NAMESPACE) {
            return Err(refuse("only bases under kiln/base/ can be named"));
        }
        Ok(KilnBase(s.to_owned()))
    }
}

/// One repository path component by the OCI distribution spec:
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`. So no `.`, `..` or empty component gets through.
fn is_path_component(component: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !component.starts_with(alnum) || !component.ends_with(alnum) {
        return false;
    }
    component
        .split(alnum)
        .filter(|separator| !separator.is_empty())
        .all(|separator| {
            matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-')
        })
}

/// A tag by the OCI distribution spec: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
fn is_tag(tag: &str) -> bool {
    tag.len() <= MAX_TAG_LEN
        && tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

impl TryFrom<String> for KilnBase {
    type Error = KilnBaseError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<KilnBase> for String {
    fn from(base: KilnBase) -> Self {
        base.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(text: &str) -> &'static str {
        match text.parse::<KilnBase>() {
            Ok(base) => panic!("{text:?} was accepted as {base}"),
            Err(err) => err.reason,
        }
    }

    #[test]
    fn bases_under_kilns_namespace_are_accepted() {
        for ok in [
            "kiln/base/gl:bookworm",
            "kiln/base/jq:bookworm",
            "kiln/base/team-a/gl_2.x:v1.0-rc_1",
            "kiln/base/a__b:_x",
            "kiln/base/a---b:T",
        ] {
            let base: KilnBase = ok.parse().unwrap_or_else(|err| panic!("{ok}: {err}"));
            assert_eq!(base.as_str(), ok);
        }
        let base: KilnBase = "kiln/base/team/gl:bookworm".parse().expect("valid");
        assert_eq!(base.repository(), "kiln/base/team/gl");
        assert_eq!(base.tag(), "bookworm");
    }

    #[test]
    fn anything_else_is_refused_with_the_reason() {
        let host = "it names a registry host; bases are named without one, in kiln's own registry";
        let path = "repository path segments have lowercase letters and digits, joined by `.`, \
                    `_`, `__` or `-`";
        let tag = "a tag has up to 128 letters, digits, `_`, `.` and `-`, and does not start \
                   with `.` or `-`";
        let namespace = "only bases under kiln/base/ can be named";
        let cases: &[(&str, &str)] = &[
            ("", "a base name has 1 to 255 characters"),
            ("kiln/base/gl", "it has no tag"),
            ("kiln/base/gl:", tag),
            ("kiln/base/gl:.x", tag),
            ("kiln/base/gl:-x", tag),
            ("kiln/base/gl:a b", tag),
            ("kiln/base/gl:bookworm\nRUN id", tag),
            ("kiln/base/gl:$(id)", tag),
            ("kiln/base/gl:a/b", "it has no tag"),
            (
                "kiln/base/gl@sha256:0000",
                "a digest cannot be named; name the base by its tag",
            ),
            ("localhost:9090/kiln/base/gl:bookworm", host),
            ("registry.example.org/kiln/base/gl:bookworm", host),
            ("localhost/kiln/base/gl:bookworm", host),
            ("kiln/base/../../library/x:1", path),
            ("kiln/base/./gl:1", path),
            ("kiln/base//gl:1", path),
            ("kiln/base/gl/:1", path),
            ("/kiln/base/gl:1", path),
            ("kiln/base/Gl:1", path),
            ("kiln/base/g..l:1", path),
            ("kiln/base/g_-l:1", path),
            ("kiln/base/gl :1", path),
            ("kiln/base/gé:1", path),
            ("kiln/base:bookworm", namespace),
            ("kiln/debian:bookworm", namespace),
            ("library/samtools:1.21", namespace),
            ("debian:bookworm", namespace),
            ("kiln/basement/x:1", namespace),
        ];
        for (text, expected) in cases {
            assert_eq!(reason(text), *expected, "{text:?}");
        }
        let long_tag = format!("kiln/base/gl:{}", "t".repeat(MAX_TAG_LEN + 1));
        assert_eq!(reason(&long_tag), tag);
        let at_limit = format!("kiln/base/{}:t", "a".repeat(MAX_BASE_LEN - 12));
        assert_eq!(at_limit.len(), MAX_BASE_LEN);
        assert!(at_limit.parse::<KilnBase>().is_ok());
        let over = format!("kiln/base/{}:t", "a".repeat(MAX_BASE_LEN - 11));
        assert_eq!(reason(&over), "a base name has 1 to 255 characters");
    }

    #[test]
    fn the_message_says_what_is_allowed_and_shows_input_safely() {
        let err = "docker.io/evil/x:1\u{1b}[31m"
            .parse::<KilnBase>()
            .expect_err("a host");
        assert_eq!(
            err.to_string(),
            "the base image `docker.io/evil/x:1\\u{1b}[31m` was refused: it names a registry \
             host; bases are named without one, in kiln's own registry. Name one of kiln's bases \
             as kiln/base/NAME:TAG, e.g. kiln/base/gl:bookworm (operators make them with `kiln \
             base create`), or leave it out for kiln's default base"
        );
    }

    #[test]
    fn json_goes_through_the_same_check() {
        let base: KilnBase = serde_json::from_str(r#""kiln/base/gl:bookworm""#).expect("valid");
        assert_eq!(
            serde_json::to_string(&base).expect("json"),
            r#""kiln/base/gl:bookworm""#
        );
        assert!(serde_json::from_str::<KilnBase>(r#""python:3.12-slim""#).is_err());
    }
}

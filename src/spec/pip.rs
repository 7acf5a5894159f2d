//! Pip entries: PEP 508 requirements with a name, extras, version specifiers and markers.
//!
//! Parsed with `pep508_rs` and rendered back from the parsed form, so names are PEP 503
//! normalized, extras sorted and versions PEP 440 normalized. URL requirements are refused.

use std::fmt;
use std::str::FromStr;

use pep508_rs::{Requirement, VersionOrUrl, pep440_rs::Operator};
use serde::{Deserialize, Serialize};

/// The longest pip project name kiln accepts.
const MAX_NAME_LEN: usize = 128;

/// How often a requirement is rendered and parsed again, at most, to reach a canonical text
/// that renders to itself.
const MAX_RENDERINGS: usize = 3;

/// A validated pip requirement, stored in its canonical text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PipSpec {
    name: String,
    canonical: String,
    pinned: Option<String>,
}

/// Refuses a project or extra name that starts or ends with `.`, `_` or `-`: PEP 508 forbids
/// it, and pep508_rs 0.9.2 accepts such a name when an operator or a comma follows it and then
/// panics on its own name check (found by the `entry` fuzz target).
fn check_name_ends(text: &str) -> Result<(), PipParseError> {
    let is_name_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    let check = |what: &str, name: &str| {
        let alphanumeric = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
        if name.is_empty()
            || (alphanumeric(name.chars().next()) && alphanumeric(name.chars().last()))
        {
            Ok(())
        } else {
            Err(PipParseError::Invalid(format!(
                "the {what} `{name}` must start and end with a letter or digit"
            )))
        }
    };
    let name_len = text.find(|c| !is_name_char(c)).unwrap_or(text.len());
    check("project name", &text[..name_len])?;
    let rest = text[name_len..].trim_start();
    if let Some(extras) = rest.strip_prefix('[') {
        let extras = extras.split(']').next().unwrap_or_default();
        for extra in extras.split(',') {
            let extra = extra.trim();
            let extra_len = extra.find(|c| !is_name_char(c)).unwrap_or(extra.len());
            check("extra", &extra[..extra_len])?;
        }
    }
    Ok(())
}

/// Why a pip requirement was refused.
#[derive(Debug)]
pub(super) enum PipParseError {
    Url,
    Invalid(String),
}

impl PipSpec {
    /// The project name, PEP 503 normalized.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The version pinned with a single `==`, as normalized by PEP 440.
    pub fn pinned_version(&self) -> Option<&str> {
        self.pinned.as_deref()
    }

    pub(super) fn parse(text: &str) -> Result<Self, PipParseError> {
        let mut spec = Self::parse_once(text)?;
        // pep508_rs does not always write a marker in a form it reads back the same
        // (`python_version == "2.2.40"`, which never holds, comes out as `python_version < '0'`
        // and that comes back as `python_full_version < '0'`; found by the `entry` fuzz
        // target). The canonical text is where rendering holds still, so it parses to itself.
        for _ in 0..MAX_RENDERINGS {
            let again = Self::parse_once(&spec.canonical)?;
            if again == spec {
                return Ok(spec);
            }
            spec = again;
        }
        Err(PipParseError::Invalid(
            "its environment marker has no stable written form; simplify it".into(),
        ))
    }

    /// Parses `text` and renders its canonical text once.
    fn parse_once(text: &str) -> Result<Self, PipParseError> {
        check_name_ends(text)?;
        let mut requirement = Requirement::<pep508_rs::VerbatimUrl>::from_str(text)
            .map_err(|err| PipParseError::Invalid(first_line(&err.to_string())))?;
        let name = requirement.name.to_string();
        if name.len() > MAX_NAME_LEN {
            return Err(PipParseError::Invalid(format!(
                "the project name is longer than {MAX_NAME_LEN} characters"
            )));
        }
        requirement.extras.sort();
        requirement.extras.dedup();
        let pinned = match &requirement.version_or_url {
            Some(VersionOrUrl::Url(_)) => return Err(PipParseError::Url),
            Some(VersionOrUrl::VersionSpecifier(specifiers)) => {
                match specifiers.iter().as_slice() {
                    [only] if matches!(only.operator(), Operator::Equal | Operator::ExactEqual) => {
                        Some(only.version().to_string())
                    }
                    _ => None,
                }
            }
            None => None,
        };
        // Rendered by hand around the marker: pep508_rs writes ` ; `, and kiln's entry grammar
        // keeps whitespace out of everything before the `;`.
        let marker = requirement.marker.contents().map(|m| m.to_string());
        requirement.marker = pep508_rs::MarkerTree::TRUE;
        let canonical = match marker {
            Some(marker) => format!("{requirement}; {marker}"),
            None => requirement.to_string(),
        };
        // The marker is re-rendered by pep508_rs with its string values in single quotes; make
        // sure no value smuggled in anything a shell or a YAML file would read differently.
        if let Some(bad) = canonical
            .chars()
            .find(|c| matches!(c, '"' | '`' | '$' | '\\') || c.is_ascii_control())
        {
            return Err(PipParseError::Invalid(format!(
                "its environment marker contains {bad:?}"
            )));
        }
        Ok(PipSpec {
            name,
            canonical,
            pinned,
        })
    }
}

impl fmt::Display for PipSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical)
    }
}

/// pep508_rs errors draw a caret diagram on following lines; an error message needs only the
/// sentence.
fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or(message).trim().to_owned()
}

/// A project name in PEP 503 normal form (lowercase, each run of `-_.` as one `-`), or `None`
/// when it is not a valid PEP 508 name. kiln's only normalizer, so a name compares equal
/// wherever it was read (a request, a lock file, a `.dist-info` directory, the pip index);
/// pep508_rs does the work, and the empty name it lets through is refused here.
pub fn normalize_project_name(name: &str) -> Option<String> {
    let normalized = pep508_rs::PackageName::from_str(name).ok()?.to_string();
    (!normalized.is_empty()).then_some(normalized)
}

#[cfg(test)]
mod tests {
    use super::normalize_project_name;

    #[test]
    fn project_names_are_normalized_per_pep_503() {
        for (name, normal) in [
            ("Foo.Bar__baz", "foo-bar-baz"),
            ("Foo_Bar..baz", "foo-bar-baz"),
            ("a", "a"),
            ("zope.interface", "zope-interface"),
            ("A-_.B", "a-b"),
        ] {
            assert_eq!(
                normalize_project_name(name).as_deref(),
                Some(normal),
                "{name}"
            );
        }
        for bad in ["", "-a", "a-", "a/b", "a b", "../x", "é"] {
            assert_eq!(normalize_project_name(bad), None, "{bad}");
        }
    }
}

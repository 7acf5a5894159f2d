//! Conda entries: the subset of the MatchSpec syntax that users write on a command line.
//!
//! `[channel::]name[constraint][=build]`, where the constraint is `=1.21` (fuzzy, also
//! `=1.21.*`), `==1.21` (exact) or a comma-separated list of comparisons (`>=1.2,<2`). The parts
//! are checked against small character sets and the whole spec is also parsed by rattler, the
//! library that later solves it, so that what passes here is what the solver understands.

use std::fmt;

use rattler_conda_types::{MatchSpec, ParseMatchSpecOptions};
use serde::{Deserialize, Serialize};

/// The longest package or channel name kiln accepts.
const MAX_NAME_LEN: usize = 128;

/// A validated conda package spec.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CondaSpec {
    channel: Option<String>,
    name: String,
    constraint: Option<Constraint>,
}

/// The version part of a conda spec.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
enum Constraint {
    /// `=1.21` or `=1.21=build`: conda's fuzzy match (1.21, 1.21.x).
    Fuzzy {
        version: String,
        build: Option<String>,
    },
    /// `==1.21`: exactly this version.
    Exact { version: String },
    /// `>=1.2,<2`: comparisons, kept in the order written.
    Range(Vec<(Comparison, String)>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
enum Comparison {
    Ge,
    Gt,
    Le,
    Lt,
    Ne,
    Compatible,
}

impl Comparison {
    fn as_str(self) -> &'static str {
        match self {
            Comparison::Ge => ">=",
            Comparison::Gt => ">",
            Comparison::Le => "<=",
            Comparison::Lt => "<",
            Comparison::Ne => "!=",
            Comparison::Compatible => "~=",
        }
    }

    /// Splits a leading comparison operator off `text`.
    fn split(text: &str) -> Option<(Comparison, &str)> {
        [
            Comparison::Ge,
            Comparison::Le,
            Comparison::Ne,
            Comparison::Compatible,
            Comparison::Gt,
            Comparison::Lt,
        ]
        .into_iter()
        .find_map(|op| text.strip_prefix(op.as_str()).map(|rest| (op, rest)))
    }
}

impl CondaSpec {
    /// The package name, lowercase.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The channel named in the spec (`bioconda::`), if any.
    pub fn channel(&self) -> Option<&str> {
        self.channel.as_deref()
    }

    /// The version the spec pins with `=` or `==`, as written.
    pub fn pinned_version(&self) -> Option<&str> {
        match &self.constraint {
            Some(Constraint::Fuzzy { version, .. } | Constraint::Exact { version }) => {
                Some(version)
            }
            _ => None,
        }
    }

    /// Parses a spec; the error is a reason, without the entry (the caller names it).
    pub(super) fn parse(text: &str) -> Result<Self, String> {
        let (channel, spec) = match text.split_once("::") {
            Some((channel, spec)) => (Some(parse_channel_part(channel)?), spec),
            None => (None, text),
        };
        let name_len = spec.find(|c: char| !is_name_char(c)).unwrap_or(spec.len());
        let (name, constraint) = spec.split_at(name_len);
        let name = parse_name(name)?;
        let constraint = parse_constraint(constraint)?;
        let parsed = CondaSpec {
            channel,
            name,
            constraint,
        };
        // The solver must read the spec the same way.
        let solver_view = parsed.without_channel();
        MatchSpec::from_str(&solver_view, ParseMatchSpecOptions::lenient())
            .map_err(|err| format!("the conda solver cannot read it ({err})"))?;
        Ok(parsed)
    }

    fn without_channel(&self) -> String {
        let mut text = self.name.clone();
        if let Some(constraint) = &self.constraint {
            text.push_str(&constraint.to_string());
        }
        text
    }
}

impl fmt::Display for CondaSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(channel) = &self.channel {
            write!(f, "{channel}::")?;
        }
        f.write_str(&self.without_channel())
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Constraint::Fuzzy { version, build } => {
                write!(f, "={version}")?;
                if let Some(build) = build {
                    write!(f, "={build}")?;
                }
                Ok(())
            }
            Constraint::Exact { version } => write!(f, "=={version}"),
            Constraint::Range(parts) => {
                for (i, (op, version)) in parts.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{}{version}", op.as_str())?;
                }
                Ok(())
            }
        }
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

fn parse_name(name: &str) -> Result<String, String> {
    if name.is_empty() {
        return Err("it has no package name".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "the package name is longer than {MAX_NAME_LEN} characters"
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
        return Err("a package name must start with a letter, a digit or `_`".into());
    }
    Ok(name.to_ascii_lowercase())
}

/// Validates a channel name as written before `::` (names and labels, no URLs).
pub(super) fn parse_channel_part(channel: &str) -> Result<String, String> {
    if channel.is_empty() {
        return Err("the channel before `::` is empty".into());
    }
    if channel.len() > MAX_NAME_LEN {
        return Err(format!(
            "the channel name is longer than {MAX_NAME_LEN} characters"
        ));
    }
    let valid_segment = |segment: &str| {
        segment.starts_with(|c: char| c.is_ascii_alphanumeric())
            && segment.chars().all(is_name_char)
    };
    if channel.contains(':') {
        return Err(format!(
            "channel `{channel}` looks like a URL; name channels, and map them to mirrors in kiln's configuration"
        ));
    }
    if !channel.split('/').all(valid_segment) {
        return Err(format!(
            "channel `{channel}` is not a channel name (letters, digits, `-`, `_`, `.`, and `/` between labels)"
        ));
    }
    Ok(channel.to_ascii_lowercase())
}

fn parse_constraint(text: &str) -> Result<Option<Constraint>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    if let Some(version) = text.strip_prefix("==") {
        return Ok(Some(Constraint::Exact {
            version: parse_version(version)?,
        }));
    }
    if let Some(rest) = text.strip_prefix('=') {
        let (version, build) = match rest.split_once('=') {
            Some((version, build)) => (version, Some(parse_build(build)?)),
            None => (rest, None),
        };
        return Ok(Some(Constraint::Fuzzy {
            version: parse_version(version)?,
            build,
        }));
    }
    let mut parts = Vec::new();
    for part in text.split(',') {
        let (op, version) = Comparison::split(part).ok_or_else(|| {
            format!("`{part}` is not a version constraint (use =, ==, >=, >, <=, <, != or ~=)")
        })?;
        parts.push((op, parse_version(version)?));
    }
    Ok(Some(Constraint::Range(parts)))
}

fn parse_version(version: &str) -> Result<String, String> {
    if version.is_empty() {
        return Err("a version is missing after the operator".into());
    }
    let valid = version.starts_with(|c: char| c.is_ascii_alphanumeric())
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '*' | '+' | '!'));
    if !valid {
        return Err(format!(
            "`{version}` is not a version (letters, digits, `.`, `_`, `+`, `!` and a trailing `*`)"
        ));
    }
    Ok(version.to_owned())
}

fn parse_build(build: &str) -> Result<String, String> {
    let valid = !build.is_empty()
        && build
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '*' | '+'));
    if !valid {
        return Err(format!(
            "`{build}` is not a build string (letters, digits, `.`, `_`, `+` and `*`)"
        ));
    }
    Ok(build.to_owned())
}

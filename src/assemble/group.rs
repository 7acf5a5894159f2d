//! Which packages share a layer.
//!
//! One layer per package lets the same package build give the same layer in every image, but
//! registries and runtimes cope badly with hundreds of layers. So the largest packages — the ones
//! worth sharing — get layers of their own, and the long tail of small ones shares one.

use std::collections::BTreeMap;

/// Splits packages (id, installed size in bytes) into at most `budget` groups, one layer each.
///
/// - If there are at most `budget` distinct ids, every package is a group of its own.
/// - Otherwise the `budget - 1` largest packages (ties broken by smaller id) are alone, and all
///   the others form one group.
///
/// Order: ids within a group ascend; groups are ordered by their first id, so the shared group
/// sits wherever its smallest id falls. The result depends only on the set of (id, size) pairs,
/// never on input order. An id listed twice counts once, with its larger size. A budget of 0 is
/// treated as 1.
pub fn group_packages(packages: &[(String, u64)], budget: usize) -> Vec<Vec<String>> {
    let budget = budget.max(1);
    let mut sizes: BTreeMap<&str, u64> = BTreeMap::new();
    for (id, size) in packages {
        let slot = sizes.entry(id).or_insert(*size);
        *slot = (*slot).max(*size);
    }

    let mut groups: Vec<Vec<String>> = if sizes.len() <= budget {
        sizes.keys().map(|id| vec![(*id).to_owned()]).collect()
    } else {
        let mut by_size: Vec<(&str, u64)> = sizes.into_iter().collect();
        // Largest first; among equal sizes the smaller id first.
        by_size.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        let rest = by_size.split_off(budget - 1);
        let mut shared: Vec<String> = rest.into_iter().map(|(id, _)| id.to_owned()).collect();
        shared.sort();
        let mut groups: Vec<Vec<String>> = by_size
            .into_iter()
            .map(|(id, _)| vec![id.to_owned()])
            .collect();
        groups.push(shared);
        groups
    };
    groups.sort();
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pkgs(list: &[(&str, u64)]) -> Vec<(String, u64)> {
        list.iter()
            .map(|(id, size)| ((*id).to_owned(), *size))
            .collect()
    }

    #[test]
    fn within_budget_each_package_is_alone_in_id_order() {
        let groups = group_packages(&pkgs(&[("b", 1), ("a", 5), ("c", 3)]), 3);
        assert_eq!(groups, [vec!["a"], vec!["b"], vec!["c"]]);
    }

    #[test]
    fn over_budget_the_largest_are_alone_and_the_rest_shared() {
        let input = pkgs(&[("a", 1), ("b", 50), ("c", 2), ("d", 40), ("e", 3)]);
        let groups = group_packages(&input, 3);
        assert_eq!(groups, [vec!["a", "c", "e"], vec!["b"], vec!["d"]]);
    }

    #[test]
    fn ties_prefer_the_smaller_id() {
        let groups = group_packages(&pkgs(&[("z", 10), ("y", 10), ("x", 10)]), 2);
        assert_eq!(groups, [vec!["x"], vec!["y", "z"]]);
    }

    #[test]
    fn edge_budgets_and_duplicates() {
        assert!(group_packages(&[], 5).is_empty());
        let input = pkgs(&[("a", 1), ("b", 2)]);
        assert_eq!(group_packages(&input, 0), [vec!["a", "b"]]);
        assert_eq!(group_packages(&input, 1), [vec!["a", "b"]]);
        let dup = pkgs(&[("a", 1), ("b", 2), ("a", 9), ("c", 3)]);
        assert_eq!(group_packages(&dup, 2), [vec!["a"], vec!["b", "c"]]);
    }

    proptest! {
        #[test]
        fn covers_everything_once_within_budget_regardless_of_order(
            sizes in proptest::collection::btree_map("[a-z]{1,6}", 0u64..1000, 0..40),
            budget in 0usize..25,
            seed in any::<u64>(),
        ) {
            let input: Vec<(String, u64)> = sizes.clone().into_iter().collect();
            let groups = group_packages(&input, budget);

            prop_assert!(groups.len() <= budget.max(1));
            prop_assert!(groups.iter().all(|g| !g.is_empty()));
            let mut seen: Vec<String> = groups.concat();
            seen.sort();
            let expected: Vec<String> = sizes.keys().cloned().collect();
            prop_assert_eq!(seen, expected);

            // A deterministic shuffle of the input.
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
    }
}

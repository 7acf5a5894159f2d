//! Debian version ordering (`[epoch:]upstream[-revision]`), as dpkg compares versions: the
//! closure needs it for versioned dependencies and to pick the newest of several candidates.
//!
//! Written here rather than taken from a crate: it is one function of dpkg's, and kiln needs
//! nothing else a version crate offers. Every string compares; a malformed version simply sorts
//! where its characters put it, as with dpkg's `--compare-versions` on lax input.

use std::cmp::Ordering;

/// Compares two Debian versions: epochs numerically, then upstream versions, then revisions,
/// each with dpkg's rules (`~` sorts before everything, even the end of the string; letters
/// sort before other characters; digit runs compare as numbers).
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let a = Parts::of(a);
    let b = Parts::of(b);
    compare_numbers(a.epoch, b.epoch)
        .then_with(|| compare_fragments(a.upstream, b.upstream))
        .then_with(|| compare_fragments(a.revision, b.revision))
}

/// A version split into its three parts; a missing epoch is `0`, a missing revision empty.
struct Parts<'a> {
    epoch: &'a str,
    upstream: &'a str,
    revision: &'a str,
}

impl<'a> Parts<'a> {
    fn of(version: &'a str) -> Parts<'a> {
        let version = version.trim();
        let (epoch, rest) = match version.split_once(':') {
            Some((epoch, rest)) if epoch.bytes().all(|b| b.is_ascii_digit()) => (epoch, rest),
            _ => ("0", version),
        };
        let (upstream, revision) = rest.rsplit_once('-').unwrap_or((rest, ""));
        Parts {
            epoch,
            upstream,
            revision,
        }
    }
}

/// dpkg's `verrevcmp`: alternating runs of non-digits (compared by [`weight`]) and digits
/// (compared as numbers).
fn compare_fragments(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    while !a.is_empty() || !b.is_empty() {
        let a_text = a.iter().take_while(|c| !c.is_ascii_digit()).count();
        let b_text = b.iter().take_while(|c| !c.is_ascii_digit()).count();
        for i in 0..a_text.max(b_text) {
            let ordering = weight(a.get(i).filter(|_| i < a_text).copied())
                .cmp(&weight(b.get(i).filter(|_| i < b_text).copied()));
            if ordering != Ordering::Equal {
                return ordering;
            }
        }
        a = &a[a_text..];
        b = &b[b_text..];
        let a_digits = a.iter().take_while(|c| c.is_ascii_digit()).count();
        let b_digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
        let ordering = compare_numbers(
            std::str::from_utf8(&a[..a_digits]).unwrap_or("0"),
            std::str::from_utf8(&b[..b_digits]).unwrap_or("0"),
        );
        if ordering != Ordering::Equal {
            return ordering;
        }
        a = &a[a_digits..];
        b = &b[b_digits..];
    }
    Ordering::Equal
}

/// The sort weight of one character of a non-digit run; `None` is the run's end.
fn weight(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

/// Compares runs of ASCII digits as numbers of any length (an empty run is zero).
fn compare_numbers(a: &str, b: &str) -> Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_like_dpkg() {
        // Each pair: the first sorts before the second (checked with `dpkg --compare-versions`).
        let ascending = [
            ("1.0", "1.1"),
            ("1.9", "1.10"),
            ("1.0~rc1", "1.0"),
            ("1.0~~", "1.0~"),
            ("1.0~", "1.0"),
            ("1.0", "1.0a"),
            ("1.0a", "1.0+"),
            ("1.0", "1.0.1"),
            ("1.0-1", "1.0-2"),
            ("1.0-9", "1.0-10"),
            ("1.0-1", "1.0-1+deb12u1"),
            ("2.36-9+deb12u9", "2.36-9+deb12u10"),
            ("9.9", "1:0.1"),
            ("1:1.0", "2:0.1"),
            ("20230311", "20230311+deb12u1"),
            ("20230311+deb12u1", "20250419~deb12u2"),
            ("5.2.15-2", "5.2.15-2+b1"),
            ("3.11.2-6+deb12u1", "3.11.2-6+deb12u6"),
            ("1.0-1", "1.0.0-1~"),
            ("0", "a"),
        ];
        for (lower, higher) in ascending {
            assert_eq!(
                compare_versions(lower, higher),
                Ordering::Less,
                "{lower} < {higher}"
            );
            assert_eq!(
                compare_versions(higher, lower),
                Ordering::Greater,
                "{higher} > {lower}"
            );
        }
    }

    #[test]
    fn equal_spellings() {
        for (a, b) in [
            ("1.0", "1.0"),
            ("0:1.0", "1.0"),
            ("1.0-0", "1.0"),
            ("1.01", "1.1"),
            ("00:1.0", "1.0"),
            ("1.0-1", "1.0-01"),
        ] {
            assert_eq!(compare_versions(a, b), Ordering::Equal, "{a} = {b}");
        }
    }

    #[test]
    fn long_digit_runs_do_not_overflow() {
        assert_eq!(
            compare_versions("1.99999999999999999999999", "1.100000000000000000000000"),
            Ordering::Less
        );
    }

    #[test]
    fn hyphens_in_upstream_split_at_the_last() {
        // `1.0-rc-1`: upstream `1.0-rc`, revision `1`.
        assert_eq!(compare_versions("1.0-rc-1", "1.0-rc-2"), Ordering::Less);
        assert_eq!(compare_versions("1.0-rc-1", "1.0-1"), Ordering::Greater);
    }

    proptest::proptest! {
        /// The order is a total order on any input: antisymmetric and transitive.
        #[test]
        fn ordering_is_consistent(
            a in "([0-9]:)?[0-9a-z.+~-]{0,8}",
            b in "([0-9]:)?[0-9a-z.+~-]{0,8}",
            c in "([0-9]:)?[0-9a-z.+~-]{0,8}",
        ) {
            proptest::prop_assert_eq!(compare_versions(&a, &b), compare_versions(&b, &a).reverse());
            if compare_versions(&a, &b).is_le() && compare_versions(&b, &c).is_le() {
                proptest::prop_assert!(compare_versions(&a, &c).is_le());
            }
        }
    }
}

//! The package entry parser: whatever a user sends as an entry, an accepted entry's canonical
//! text (what recipes, names and the store see) is safe to put in a recipe and parses back to the
//! same entry, directly and through JSON.

#![no_main]

use kiln::spec::PackageEntry;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(entry) = text.parse::<PackageEntry>() else {
        return;
    };
    let canonical = entry.to_string();
    assert!(
        canonical.is_ascii()
            && !canonical.contains(['"', '`', '$', '\\', '|', '&', '\n', '\r', '\t', '\0']),
        "{text:?} has the unsafe canonical form {canonical:?}"
    );
    assert!(!entry.name().is_empty(), "{text:?} has no name");
    let again: PackageEntry = canonical
        .parse()
        .unwrap_or_else(|err| panic!("{text:?}: canonical form {canonical:?} is refused: {err}"));
    assert_eq!(
        again, entry,
        "{text:?}: canonical form {canonical:?} parses differently"
    );
    assert_eq!(
        again.to_string(),
        canonical,
        "{text:?}: the canonical form is not stable"
    );
    let json = serde_json::to_string(&entry).expect("an entry serializes");
    let from_json: PackageEntry = serde_json::from_str(&json)
        .unwrap_or_else(|err| panic!("{text:?}: JSON {json} is refused: {err}"));
    assert_eq!(from_json, entry, "{text:?}: JSON {json} parses differently");
});

//! The registry's `/v2/` path parser: an accepted path names a valid repository (no traversal,
//! nothing escaped) and its route, written back out as the server writes `Location` paths,
//! parses to the same route.

#![no_main]

use kiln::registry::path::{self, Digest, MAX_NAME_LEN, Reference, Route};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(rest) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(route) = path::parse(rest) else {
        return;
    };
    let name = route.name();
    assert!(
        name.len() <= MAX_NAME_LEN,
        "{rest:?}: name {name:?} is too long"
    );
    assert!(
        name.split('/').all(path::is_valid_component),
        "{rest:?}: name {name:?} has an invalid component"
    );
    assert_eq!(
        path::parse_name_str(name).ok().as_deref(),
        Some(name),
        "{rest:?}"
    );
    match &route {
        Route::Blob { digest, .. } | Route::Referrers { digest, .. } => check_digest(digest),
        Route::Manifest {
            reference: Reference::Digest(digest),
            ..
        } => check_digest(digest),
        Route::Manifest {
            reference: Reference::Tag(tag),
            ..
        } => assert!(path::is_valid_tag(tag), "{rest:?}: tag {tag:?} is invalid"),
        _ => {}
    }
    let written = write(&route);
    assert_eq!(
        path::parse(&written).ok(),
        Some(route.clone()),
        "{rest:?} was read as {route:?}, which written as {written:?} reads differently"
    );
});

/// A digest that is safe as a file name and reads back as itself.
fn check_digest(digest: &Digest) {
    let hex = digest.hex();
    assert!(
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "digest hex {hex:?}"
    );
    assert_eq!(
        Digest::parse(&digest.to_string()).ok().as_ref(),
        Some(digest)
    );
}

/// The path after `/v2/` that addresses `route`.
fn write(route: &Route) -> String {
    match route {
        Route::Manifest { name, reference } => format!("{name}/manifests/{reference}"),
        Route::Blob { name, digest } => format!("{name}/blobs/{digest}"),
        Route::UploadStart { name } => format!("{name}/blobs/uploads/"),
        Route::Upload { name, session } => format!("{name}/blobs/uploads/{session}"),
        Route::Tags { name } => format!("{name}/tags/list"),
        Route::Referrers { name, digest } => format!("{name}/referrers/{digest}"),
    }
}

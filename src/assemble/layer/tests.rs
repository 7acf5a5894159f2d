//! The tar writer's properties, checked through [`write_fragment`], the way builds write
//! layers: blobs are multi-member gzip, so they are read with [`MultiGzDecoder`].

use std::io::Read as _;
use std::os::unix::fs::symlink;
use std::time::{Duration, SystemTime};

use flate2::read::MultiGzDecoder;

use super::super::fragment::{END_MEMBER, LayerBlob, write_fragment};
use super::super::image::MEDIA_TYPE_LAYER_GZIP;
use super::*;

fn write(root: &Path, rel: &str, content: &[u8], mode: u32) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, content).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
}

fn touch(root: &Path, rel: &str, secs: u64) {
    let file = File::open(root.join(rel)).unwrap();
    file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
        .unwrap();
}

fn rel(list: &[&str]) -> Vec<PathBuf> {
    list.iter().map(PathBuf::from).collect()
}

/// (path, type, mode, uid, gid, mtime, link target, content) of every entry, read back.
type Entry = (
    String,
    tar::EntryType,
    u32,
    u64,
    u64,
    u64,
    Option<String>,
    Vec<u8>,
);

/// The uncompressed tar of the blob at `gz_path`: all its gzip members, in order.
fn unzip(gz_path: &Path) -> Vec<u8> {
    let mut tar = Vec::new();
    MultiGzDecoder::new(File::open(gz_path).unwrap())
        .read_to_end(&mut tar)
        .unwrap();
    tar
}

fn read_back(gz_path: &Path) -> Vec<Entry> {
    let tar = unzip(gz_path);
    let mut archive = tar::Archive::new(&tar[..]);
    let mut out = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let header = entry.header().clone();
        let path = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
        let link = entry
            .link_name_bytes()
            .map(|b| String::from_utf8(b.into_owned()).unwrap());
        let mut content = Vec::new();
        entry.read_to_end(&mut content).unwrap();
        assert!(header.username_bytes().is_none_or(<[u8]>::is_empty));
        assert!(header.groupname_bytes().is_none_or(<[u8]>::is_empty));
        out.push((
            path,
            header.entry_type(),
            header.mode().unwrap(),
            header.uid().unwrap(),
            header.gid().unwrap(),
            header.mtime().unwrap(),
            link,
            content,
        ));
    }
    out
}

fn names(entries: &[Entry]) -> Vec<&str> {
    entries.iter().map(|e| e.0.as_str()).collect()
}

/// The same tree twice, with different modes (umask), mtimes and out dirs.
#[test]
fn identical_trees_give_identical_blobs() {
    let layers: Vec<(LayerBlob, Vec<u8>, Vec<u8>)> =
        [(0o600, 0o700, 1_000), (0o664, 0o775, 2_000_000)]
            .into_iter()
            .map(|(file_mode, exec_mode, mtime)| {
                let root = tempfile::tempdir().unwrap();
                let out = tempfile::tempdir().unwrap();
                write(root.path(), "bin/tool", b"#!/bin/sh\n", exec_mode);
                write(root.path(), "lib/data.txt", b"data", file_mode);
                symlink("tool", root.path().join("bin/alias")).unwrap();
                for path in ["bin/tool", "lib/data.txt", "bin", "lib"] {
                    touch(root.path(), path, mtime);
                }
                let paths = rel(&["lib/data.txt", "bin/tool", "bin/alias"]);
                let layer = write_fragment(root.path(), &paths, out.path()).unwrap();
                let tar = unzip(&layer.gz_path);
                let gz = fs::read(&layer.gz_path).unwrap();
                (layer, tar, gz)
            })
            .collect();
    let (a, b) = (&layers[0], &layers[1]);
    assert_eq!(a.0.diff_id, b.0.diff_id);
    assert_eq!(a.0.digest, b.0.digest);
    assert_eq!(
        (a.0.size, a.0.uncompressed_size),
        (b.0.size, b.0.uncompressed_size)
    );
    assert_eq!(a.1, b.1);
    assert_eq!(a.2, b.2);
}

#[test]
fn digests_names_and_sizes_match_the_files() {
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    write(root.path(), "a.txt", b"hello", 0o644);
    let layer = write_fragment(root.path(), &rel(&["a.txt"]), out.path()).unwrap();

    let gz = fs::read(&layer.gz_path).unwrap();
    let tar = unzip(&layer.gz_path);
    assert_eq!(layer.diff_id, super::super::sha256_digest(&tar));
    assert_eq!(layer.digest, super::super::sha256_digest(&gz));
    assert_eq!(layer.uncompressed_size, tar.len() as u64);
    assert_eq!(layer.size, gz.len() as u64);
    assert_eq!(
        layer.gz_path,
        out.path()
            .join(format!("{}.tar.gz", hex_part(&layer.digest)))
    );
    // gzip header of the first member: no name flag, mtime 0, OS unknown; the last member is
    // the end-of-archive blocks.
    assert_eq!(
        (gz[3], &gz[4..8], gz[9]),
        (0, &[0u8; 4][..], GZIP_OS_UNKNOWN)
    );
    assert!(gz.ends_with(&END_MEMBER));
    assert!(tar.ends_with(&[0u8; 1024]));
    assert_eq!(read_back(&layer.gz_path)[0].7, b"hello");
    assert_eq!(layer.descriptor().media_type, MEDIA_TYPE_LAYER_GZIP);
    assert_eq!(
        (layer.descriptor().digest, layer.descriptor().size),
        (layer.digest.clone(), layer.size)
    );
    // Only final files remain (the blob and its path list): no temporaries.
    let mut left: Vec<String> = fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    let hex = hex_part(&layer.digest);
    assert_eq!(left, [format!("{hex}.paths.json"), format!("{hex}.tar.gz")]);
}

#[test]
fn modes_owners_and_times_are_normalized() {
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    write(root.path(), "d/plain", b"p", 0o600);
    write(root.path(), "d/user-exec", b"x", 0o744);
    write(root.path(), "d/other-exec", b"y", 0o641);
    fs::set_permissions(root.path().join("d"), fs::Permissions::from_mode(0o700)).unwrap();
    let paths = rel(&["d/plain", "d/user-exec", "d/other-exec"]);
    let layer = write_fragment(root.path(), &paths, out.path()).unwrap();
    let entries = read_back(&layer.gz_path);
    let modes: Vec<(&str, u32)> = entries.iter().map(|e| (e.0.as_str(), e.2)).collect();
    assert_eq!(
        modes,
        [
            ("d/", 0o755),
            ("d/other-exec", 0o755),
            ("d/plain", 0o644),
            ("d/user-exec", 0o755)
        ]
    );
    assert!(
        entries
            .iter()
            .all(|e| e.3 == 0 && e.4 == 0 && e.5 == LAYER_MTIME)
    );
}

#[test]
fn symlinks_keep_their_target_verbatim() {
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let long_target = format!("../{}/lib.so", "x".repeat(150));
    symlink("../lib//./libz.so.1", root.path().join("short")).unwrap();
    symlink(&long_target, root.path().join("long")).unwrap();
    symlink("/does/not/exist", root.path().join("dangling")).unwrap();
    let layer = write_fragment(
        root.path(),
        &rel(&["short", "long", "dangling"]),
        out.path(),
    )
    .unwrap();
    let entries = read_back(&layer.gz_path);
    let links: Vec<(&str, tar::EntryType, u32, Option<&str>)> = entries
        .iter()
        .map(|e| (e.0.as_str(), e.1, e.2, e.6.as_deref()))
        .collect();
    assert_eq!(
        links,
        [
            (
                "dangling",
                tar::EntryType::Symlink,
                0o777,
                Some("/does/not/exist")
            ),
            (
                "long",
                tar::EntryType::Symlink,
                0o777,
                Some(long_target.as_str())
            ),
            (
                "short",
                tar::EntryType::Symlink,
                0o777,
                Some("../lib//./libz.so.1")
            ),
        ]
    );
}

#[test]
fn parents_are_implicit_once_first_and_sorted_by_bytes() {
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    write(root.path(), "a/b/c.txt", b"c", 0o644);
    write(root.path(), "a/b/d.txt", b"d", 0o644);
    write(root.path(), "a-b", b"", 0o644);
    write(root.path(), "a/Z", b"", 0o644);
    let paths = rel(&[
        "a/b/d.txt",
        "./a/b/c.txt",
        "a-b",
        "a/Z",
        "a/b/c.txt",
        "a/b/",
    ]);
    let layer = write_fragment(root.path(), &paths, out.path()).unwrap();
    let entries = read_back(&layer.gz_path);
    // Directories first (a fragment's directories member), then the rest, each by bytes.
    assert_eq!(
        names(&entries),
        ["a/", "a/b/", "a-b", "a/Z", "a/b/c.txt", "a/b/d.txt"]
    );
    assert_eq!(entries[0].1, tar::EntryType::Directory);
    assert_eq!(entries[1].1, tar::EntryType::Directory);
    assert_eq!(entries[4].7, b"c");
}

#[test]
fn long_paths_round_trip() {
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = format!("{}/{}", "d".repeat(90), "e".repeat(90));
    let file = format!("{dir}/{}.py", "f".repeat(120));
    write(root.path(), &file, b"long", 0o644);
    let layer = write_fragment(root.path(), &rel(&[&file]), out.path()).unwrap();
    let entries = read_back(&layer.gz_path);
    let first = "d".repeat(90) + "/";
    assert_eq!(names(&entries), [first.as_str(), &format!("{dir}/"), &file]);
    assert_eq!(entries[2].7, b"long");
}

#[test]
fn hard_links_become_independent_files() {
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    write(root.path(), "one", b"same", 0o755);
    fs::hard_link(root.path().join("one"), root.path().join("two")).unwrap();
    let layer = write_fragment(root.path(), &rel(&["two", "one"]), out.path()).unwrap();
    let entries = read_back(&layer.gz_path);
    for (name, entry) in ["one", "two"].iter().zip(&entries) {
        assert_eq!(
            (entry.0.as_str(), entry.1, entry.2),
            (*name, tar::EntryType::Regular, 0o755)
        );
        assert_eq!(entry.7, b"same");
    }
}

#[test]
fn devices_and_sockets_are_refused() {
    let out = tempfile::tempdir().unwrap();
    let err = write_fragment(Path::new("/"), &rel(&["dev/null"]), out.path()).unwrap_err();
    assert!(
        matches!(&err, AssembleError::Unsupported { path, kind: "character device" } if path == Path::new("/dev/null")),
        "{err}"
    );
    assert!(err.to_string().contains("/dev/null"));

    let root = tempfile::tempdir().unwrap();
    let _listener = std::os::unix::net::UnixListener::bind(root.path().join("sock")).unwrap();
    let err = write_fragment(root.path(), &rel(&["sock"]), out.path()).unwrap_err();
    assert!(
        matches!(err, AssembleError::Unsupported { kind: "socket", .. }),
        "{err}"
    );
    // A failed write leaves nothing behind.
    assert_eq!(fs::read_dir(out.path()).unwrap().count(), 0);
}

#[test]
fn bad_paths_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    for bad in ["../etc/passwd", "/etc/passwd", "a/../../b", ".", ""] {
        let err = write_fragment(root.path(), &rel(&[bad]), out.path()).unwrap_err();
        assert!(
            matches!(err, AssembleError::InvalidPath { .. }),
            "{bad}: {err}"
        );
    }
    let err = write_fragment(root.path(), &rel(&["missing"]), out.path()).unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
}

#[test]
fn entries_beneath_a_symlink_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    write(root.path(), "lib/x.so", b"x", 0o644);
    symlink("lib", root.path().join("lib64")).unwrap();
    let err = write_fragment(root.path(), &rel(&["lib64/x.so"]), out.path()).unwrap_err();
    assert!(matches!(err, AssembleError::NotADirectory { .. }), "{err}");
    assert!(err.to_string().contains("lib64"));
}

/// Builds skip `write_fragment` for a blob they recorded when [`LayerBlob::find`] finds it.
#[test]
fn a_recorded_blob_is_found_only_while_intact() {
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    write(root.path(), "f", b"content", 0o644);
    let first = write_fragment(root.path(), &rel(&["f"]), out.path()).unwrap();
    let find = || {
        LayerBlob::find(
            out.path(),
            &first.digest,
            &first.diff_id,
            first.size,
            first.uncompressed_size,
        )
    };
    assert_eq!(find(), Some(first.clone()));

    // A truncated or missing blob is not found, and writing again restores it.
    fs::write(&first.gz_path, b"short").unwrap();
    assert_eq!(find(), None);
    fs::remove_file(&first.gz_path).unwrap();
    assert_eq!(find(), None);
    let again = write_fragment(root.path(), &rel(&["f"]), out.path()).unwrap();
    assert_eq!(again, first);
    assert_eq!(find(), Some(first));
}

#[test]
fn empty_layer_is_valid() {
    let root = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let layer = write_fragment(root.path(), &[], out.path()).unwrap();
    assert_eq!(layer.uncompressed_size, 1024);
    assert_eq!(unzip(&layer.gz_path), [0u8; 1024]);
    assert_eq!(layer.diff_id, super::super::sha256_digest(&[0u8; 1024]));
    assert!(read_back(&layer.gz_path).is_empty());
}

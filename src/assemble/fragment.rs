//! Layers put together from per-package fragments, without compressing file contents again.
//!
//! A package's blob is a layer by itself made of three gzip members: its parent directories'
//! entries, its files' entries (neither with the tar end-of-archive blocks), and
//! [`END_MEMBER`], the end blocks. Beside it, `<digest>.paths.json` lists its directories and
//! files. A layer of several packages is one fresh directories member (their directories
//! merged: a few hundred bytes to compress), their files members copied as they are, and the
//! end member: a multi-member gzip stream, which every gzip reader (Go's `compress/gzip`,
//! containers/storage, Python's `gzip`, flate2's `MultiGzDecoder`) reads as one tar. So a new
//! combination of known packages costs copying and hashing bytes, not deflating them again.
//!
//! A tar in a layer must not name a path twice (containers/storage refuses such layers): so
//! directories are merged, and a package whose files clash with another's in the same layer
//! gets a layer of its own instead.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use flate2::read::MultiGzDecoder;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::files::{HashWriter, TempFile, io_err};
use super::image::{Descriptor, MEDIA_TYPE_LAYER_GZIP};
use super::layer::{WriteError, hex_part, plan, reproducible_gzip, write_dirs, write_tar};
use super::{AssembleError, Result};

/// The tar end-of-archive marker: two zero blocks.
const TAR_END: [u8; 1024] = [0; 1024];

/// [`TAR_END`] as a gzip member, with the header every kiln layer has.
pub static END_MEMBER: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let mut encoder = reproducible_gzip(Vec::new());
    encoder.write_all(&TAR_END).expect("writing to memory");
    encoder.finish().expect("writing to memory")
});

/// A layer blob in the layer cache: its digests and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerBlob {
    /// `sha256:<hex>` of the uncompressed tar (config `rootfs.diff_ids`).
    pub diff_id: String,
    /// `sha256:<hex>` of the gzip blob (manifest layer digest).
    pub digest: String,
    /// Size of the gzip blob in bytes.
    pub size: u64,
    /// Size of the uncompressed tar in bytes.
    pub uncompressed_size: u64,
    /// `out_dir/<digest hex>.tar.gz`.
    pub gz_path: PathBuf,
}

impl LayerBlob {
    /// The blob `digest` in `out_dir`, as recorded, if it is there with the recorded size:
    /// anything else (removed, truncated) means making it again.
    pub fn find(
        out_dir: &Path,
        digest: &str,
        diff_id: &str,
        size: u64,
        uncompressed_size: u64,
    ) -> Option<LayerBlob> {
        let gz_path = out_dir.join(format!("{}.tar.gz", hex_part(digest)));
        let found = fs::metadata(&gz_path).ok()?.len() == size;
        found.then(|| LayerBlob {
            diff_id: diff_id.to_owned(),
            digest: digest.to_owned(),
            size,
            uncompressed_size,
            gz_path,
        })
    }

    /// The manifest descriptor of the gzip blob.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: MEDIA_TYPE_LAYER_GZIP.to_owned(),
            digest: self.digest.clone(),
            size: self.size,
            annotations: None,
        }
    }
}

/// What `<digest>.paths.json` beside a package's blob records: the length of its directories
/// member, and the paths of its entries (directories, then everything else), as UTF-8.
#[derive(Debug, Serialize, Deserialize)]
struct Paths {
    dirs_size: u64,
    dirs: Vec<PathBuf>,
    files: Vec<PathBuf>,
}

fn paths_file(out_dir: &Path, digest: &str) -> PathBuf {
    out_dir.join(format!("{}.paths.json", hex_part(digest)))
}

/// Writes the blob of `paths` (relative to `root`; files, symlinks and directories) into
/// `out_dir` as a layer by itself that [`compose`] can put together with others, and returns it.
///
/// Directory entries come first, then the other entries, each sorted by path bytes; every
/// parent directory is emitted once, even when not listed; listed directories are emitted
/// without their contents (list those too). Hard links become independent regular files.
/// Devices, FIFOs and sockets are refused. Files are replaced atomically, so concurrent builds
/// of the same blob are safe.
pub fn write_fragment(root: &Path, paths: &[PathBuf], out_dir: &Path) -> Result<LayerBlob> {
    let mut dirs = Vec::new();
    let mut files = BTreeMap::new();
    for (key, (rel, planned)) in plan(paths)? {
        let src = root.join(&rel);
        let is_dir = fs::symlink_metadata(&src)
            .map_err(io_err("read", &src))?
            .is_dir();
        if planned.parent && !is_dir {
            return Err(AssembleError::NotADirectory { path: src });
        }
        if is_dir {
            dirs.push(rel);
        } else {
            files.insert(key, (rel, planned));
        }
    }
    fs::create_dir_all(out_dir).map_err(io_err("create", out_dir))?;
    let (tmp, file) = TempFile::create(out_dir)?;
    let output = |e| io_err("write", &tmp.path)(e);
    let dirs_tar = write_dirs(&dirs, Vec::new()).map_err(output)?;
    let mut blob = HashWriter::new(BufWriter::new(file));
    let mut encoder = reproducible_gzip(&mut blob);
    encoder.write_all(&dirs_tar).map_err(output)?;
    encoder.finish().map_err(output)?;
    let dirs_size = blob.count();
    let mut tar = HashWriter::new(reproducible_gzip(blob));
    tar.hash_only(&dirs_tar);
    let mut tar = write_tar(root, &files, tar, false).map_err(|e| match e {
        WriteError::Assemble(e) => e,
        WriteError::Output(source) => output(source),
    })?;
    // Alone, the blob is a layer: its tar ends with the end blocks, which the end member holds.
    tar.hash_only(&TAR_END);
    let (encoder, diff_hex, uncompressed_size) = tar.finish();
    let mut blob = encoder.finish().map_err(output)?;
    blob.write_all(&END_MEMBER).map_err(output)?;
    let (writer, digest_hex, size) = blob.finish();
    writer
        .into_inner()
        .map_err(|e| output(e.into_error()))?
        .sync_data()
        .map_err(output)?;
    let digest = format!("sha256:{digest_hex}");
    // Without its path list (a path that is not UTF-8) the blob is still a layer, only one
    // that is never put together with others.
    let listed = Paths {
        dirs_size,
        dirs,
        files: files.into_values().map(|(rel, _)| rel).collect(),
    };
    if let Ok(json) = serde_json::to_vec(&listed) {
        let (tmp_paths, mut paths_out) = TempFile::create(out_dir)?;
        paths_out
            .write_all(&json)
            .map_err(io_err("write", &tmp_paths.path))?;
        drop(paths_out);
        tmp_paths.persist(&paths_file(out_dir, &digest))?;
    }
    let gz_path = out_dir.join(format!("{digest_hex}.tar.gz"));
    tmp.persist(&gz_path)?;
    Ok(LayerBlob {
        diff_id: format!("sha256:{diff_hex}"),
        digest,
        size,
        uncompressed_size,
        gz_path,
    })
}

/// What `out_dir/<composition>.layer.json` records: the layer made of some blobs, so the
/// same composition is hashed once.
#[derive(Debug, Serialize, Deserialize)]
struct Composed {
    diff_id: String,
    digest: String,
    size: u64,
    uncompressed_size: u64,
}

/// The layers of `parts` (blobs from [`write_fragment`]), in order: one layer of all the parts
/// that go together, then each part whose paths clash with those before it (or whose path
/// list is lost) as its own layer, after them so its files win as they would have. One part
/// is its own layer. File contents are copied, never compressed again; the diff_id is hashed
/// from the decompressed bytes once, and remembered by composition.
pub fn compose(parts: &[LayerBlob], out_dir: &Path) -> Result<Vec<LayerBlob>> {
    if parts.len() < 2 {
        return Ok(parts.to_vec());
    }
    tracing::debug!(
        parts = parts.len(),
        "composing one layer of package fragments"
    );
    let mut together: Vec<(&LayerBlob, Paths)> = Vec::new();
    let mut alone = Vec::new();
    let mut dirs: BTreeMap<Vec<u8>, PathBuf> = BTreeMap::new();
    let mut files: BTreeSet<&Path> = BTreeSet::new();
    let listed: Vec<Option<Paths>> = parts
        .iter()
        .map(|part| {
            fs::read(paths_file(out_dir, &part.digest))
                .ok()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        })
        .collect();
    for (part, paths) in parts.iter().zip(&listed) {
        let fits = paths.as_ref().is_some_and(|paths| {
            paths.files.iter().all(|file| {
                !files.contains(file.as_path()) && !dirs.contains_key(file.as_os_str().as_bytes())
            }) && paths.dirs.iter().all(|dir| !files.contains(dir.as_path()))
        });
        match paths {
            Some(paths) if fits => {
                files.extend(paths.files.iter().map(PathBuf::as_path));
                for dir in &paths.dirs {
                    dirs.insert(dir.as_os_str().as_bytes().to_vec(), dir.clone());
                }
                together.push((
                    part,
                    Paths {
                        dirs_size: paths.dirs_size,
                        dirs: Vec::new(),
                        files: Vec::new(),
                    },
                ));
            }
            _ => alone.push(part.clone()),
        }
    }
    let mut layers = match together.as_slice() {
        [] => Vec::new(),
        [(only, _)] => vec![(*only).clone()],
        _ => {
            let dirs: Vec<PathBuf> = dirs.into_values().collect();
            vec![concatenate(&together, &dirs, out_dir)?]
        }
    };
    layers.extend(alone);
    Ok(layers)
}

/// The layer of `parts`' files members under one directories member of `dirs`.
fn concatenate(
    parts: &[(&LayerBlob, Paths)],
    dirs: &[PathBuf],
    out_dir: &Path,
) -> Result<LayerBlob> {
    let mut composition = Sha256::new();
    for (part, _) in parts {
        composition.update(part.digest.as_bytes());
        composition.update(b"\n");
    }
    let memo_path = out_dir.join(format!(
        "{}.layer.json",
        hex::encode(composition.finalize())
    ));
    if let Some(known) = fs::read(&memo_path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Composed>(&bytes).ok())
        .and_then(|c| LayerBlob::find(out_dir, &c.digest, &c.diff_id, c.size, c.uncompressed_size))
    {
        return Ok(known);
    }

    let (tmp, file) = TempFile::create(out_dir)?;
    let output = |e| io_err("write", &tmp.path)(e);
    let mut blob = HashWriter::new(BufWriter::new(file));
    let mut encoder = reproducible_gzip(&mut blob);
    write_dirs(dirs, &mut encoder).map_err(output)?;
    encoder.finish().map_err(output)?;
    for (part, paths) in parts {
        copy_files_member(part, paths.dirs_size, &mut blob).map_err(|e| match e {
            WriteError::Assemble(e) => e,
            WriteError::Output(source) => output(source),
        })?;
    }
    blob.write_all(&END_MEMBER).map_err(output)?;
    let (writer, digest_hex, size) = blob.finish();
    writer
        .into_inner()
        .map_err(|e| output(e.into_error()))?
        .sync_data()
        .map_err(output)?;
    let mut tar = HashWriter::new(io::sink());
    io::copy(
        &mut MultiGzDecoder::new(io::BufReader::new(
            File::open(&tmp.path).map_err(io_err("read", &tmp.path))?,
        )),
        &mut tar,
    )
    .map_err(io_err("decompress", &tmp.path))?;
    let (_, diff_hex, uncompressed_size) = tar.finish();
    let gz_path = out_dir.join(format!("{digest_hex}.tar.gz"));
    tmp.persist(&gz_path)?;
    let composed = Composed {
        diff_id: format!("sha256:{diff_hex}"),
        digest: format!("sha256:{digest_hex}"),
        size,
        uncompressed_size,
    };
    // Only a shortcut: if it cannot be written, the next build hashes again.
    let (tmp_memo, mut memo) = TempFile::create(out_dir)?;
    let json = serde_json::to_vec(&composed).map_err(|e| io_err("write", &memo_path)(e.into()))?;
    if memo.write_all(&json).is_ok() {
        drop(memo);
        tmp_memo.persist(&memo_path)?;
    }
    Ok(LayerBlob {
        diff_id: composed.diff_id,
        digest: composed.digest,
        size,
        uncompressed_size,
        gz_path,
    })
}

/// Copies `part`'s files member: what lies between its directories member (`dirs_size`
/// bytes) and its end member, which must be [`END_MEMBER`].
fn copy_files_member<W: Write>(
    part: &LayerBlob,
    dirs_size: u64,
    out: &mut W,
) -> Result<(), WriteError> {
    let input = |e| WriteError::Assemble(io_err("read", &part.gz_path)(e));
    let mut file = File::open(&part.gz_path).map_err(input)?;
    let end = END_MEMBER.len() as u64;
    let size = file.metadata().map_err(input)?.len();
    let body = size
        .checked_sub(end + dirs_size)
        .filter(|_| size == part.size);
    let Some(body) = body else {
        return Err(input(io::Error::other(format!(
            "{size} bytes, not the {} recorded",
            part.size
        ))));
    };
    file.seek(SeekFrom::Start(dirs_size)).map_err(input)?;
    let copied = io::copy(&mut (&mut file).take(body), out).map_err(WriteError::Output)?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).map_err(input)?;
    if copied != body || tail != *END_MEMBER {
        return Err(input(io::Error::other(
            "it does not end with the end-of-archive member kiln writes",
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn tree(root: &Path, files: &[(&str, &str)]) -> Vec<PathBuf> {
        for (path, content) in files {
            let path = root.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, content).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        }
        files.iter().map(|(path, _)| PathBuf::from(path)).collect()
    }

    fn entries(gz: &Path) -> Vec<(String, Vec<u8>)> {
        let mut archive = tar::Archive::new(MultiGzDecoder::new(File::open(gz).unwrap()));
        archive
            .entries()
            .unwrap()
            .map(|entry| {
                let mut entry = entry.unwrap();
                let path = entry.path().unwrap().to_string_lossy().into_owned();
                let mut content = Vec::new();
                entry.read_to_end(&mut content).unwrap();
                (path, content)
            })
            .collect()
    }

    fn sha256_file(path: &Path, decompress: bool) -> String {
        let bytes = fs::read(path).unwrap();
        let bytes = if decompress {
            let mut out = Vec::new();
            MultiGzDecoder::new(&bytes[..])
                .read_to_end(&mut out)
                .unwrap();
            out
        } else {
            bytes
        };
        format!("sha256:{}", hex::encode(Sha256::digest(&bytes)))
    }

    #[test]
    fn fragments_are_layers_and_compose_into_one_tar_without_duplicates() {
        let root = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let a = tree(
            root.path(),
            &[("opt/conda/bin/a", "a"), ("opt/conda/lib/liba.so", "aa")],
        );
        let b = tree(root.path(), &[("opt/conda/lib/libb.so", "bbb")]);
        let fa = write_fragment(root.path(), &a, out.path()).unwrap();
        let fb = write_fragment(root.path(), &b, out.path()).unwrap();

        // Alone, a fragment is a valid layer whose digests are what they say.
        assert_eq!(sha256_file(&fa.gz_path, false), fa.digest);
        assert_eq!(sha256_file(&fa.gz_path, true), fa.diff_id);
        let names: Vec<String> = entries(&fa.gz_path).into_iter().map(|e| e.0).collect();
        assert_eq!(
            names,
            [
                "opt/",
                "opt/conda/",
                "opt/conda/bin/",
                "opt/conda/lib/",
                "opt/conda/bin/a",
                "opt/conda/lib/liba.so"
            ]
        );

        let [both] = compose(&[fa.clone(), fb.clone()], out.path())
            .unwrap()
            .try_into()
            .unwrap();
        assert_eq!(sha256_file(&both.gz_path, false), both.digest);
        assert_eq!(sha256_file(&both.gz_path, true), both.diff_id);
        assert_eq!(fs::metadata(&both.gz_path).unwrap().len(), both.size);
        assert_eq!(
            entries(&both.gz_path),
            [
                ("opt/".to_owned(), Vec::new()),
                ("opt/conda/".to_owned(), Vec::new()),
                ("opt/conda/bin/".to_owned(), Vec::new()),
                ("opt/conda/lib/".to_owned(), Vec::new()),
                ("opt/conda/bin/a".to_owned(), b"a".to_vec()),
                ("opt/conda/lib/liba.so".to_owned(), b"aa".to_vec()),
                ("opt/conda/lib/libb.so".to_owned(), b"bbb".to_vec()),
            ]
        );
        // The same composition again is the same layer (remembered), and a single part is
        // itself.
        assert_eq!(compose(&[fa.clone(), fb], out.path()).unwrap(), [both]);
        assert_eq!(
            compose(std::slice::from_ref(&fa), out.path()).unwrap(),
            [fa]
        );
        assert!(compose(&[], out.path()).unwrap().is_empty());
    }

    #[test]
    fn clashing_parts_get_layers_of_their_own() {
        let root = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let a = tree(root.path(), &[("bin/tool", "a"), ("lib/x", "x")]);
        let fa = write_fragment(root.path(), &a, out.path()).unwrap();
        let other = tempfile::tempdir().unwrap();
        let b = tree(other.path(), &[("bin/tool", "b")]);
        let fb = write_fragment(other.path(), &b, out.path()).unwrap();
        // `lib` is a file here, a directory in `a`.
        let c = tree(other.path(), &[("lib", "not a directory")]);
        let fc = write_fragment(other.path(), &c, out.path()).unwrap();
        let d = tree(other.path(), &[("share/d", "d")]);
        let fd = write_fragment(other.path(), &d, out.path()).unwrap();
        let layers = compose(&[fa.clone(), fb.clone(), fc.clone(), fd], out.path()).unwrap();
        assert_eq!(layers.len(), 3, "{layers:?}");
        assert_eq!(&layers[1..], [fb, fc]);
        let names: Vec<String> = entries(&layers[0].gz_path)
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(
            names,
            ["bin/", "lib/", "share/", "bin/tool", "lib/x", "share/d"]
        );
    }

    #[test]
    fn a_part_that_is_not_a_fragment_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let a = tree(root.path(), &[("a", "a")]);
        let b = tree(root.path(), &[("b", "b")]);
        let fa = write_fragment(root.path(), &a, out.path()).unwrap();
        let fb = write_fragment(root.path(), &b, out.path()).unwrap();
        let mut bytes = fs::read(&fb.gz_path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&fb.gz_path, bytes).unwrap();
        let err = compose(&[fa, fb], out.path()).unwrap_err();
        assert!(
            crate::error_chain(&err).contains("end-of-archive"),
            "{}",
            crate::error_chain(&err)
        );
    }
}

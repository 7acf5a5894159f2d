//! Reproducible layer tars: the entries [`super::write_fragment`] compresses into blobs.
//!
//! A layer's identity is its diff_id (the sha256 of the uncompressed tar), so the tar must depend
//! only on the files' paths, types, contents, exec bits and symlink targets — never on the host's
//! timestamps, owners, umask or directory order. The gzip settings are fixed here too
//! ([`reproducible_gzip`], which every layer blob kiln writes goes through, base layers
//! included), so a blob is a pure function of its tar.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::{Compression, GzBuilder};

use super::files::{Counting, io_err};
use super::{AssembleError, Result};

/// The mtime of every entry in every layer.
pub const LAYER_MTIME: u64 = 0;

/// The gzip level: fixed, because the compressed bytes (and so the blob digest) depend on it.
const GZIP_LEVEL: u32 = 6;

/// `255` = "unknown" in the gzip header, instead of the build host's OS.
const GZIP_OS_UNKNOWN: u8 = 255;

/// A gzip encoder whose bytes depend only on what is written to it: the one every layer blob
/// goes through (package fragments, composed layers, base layers). A blob is named by its
/// digest, and kiln promises the same inputs give the same digests on any machine and at any
/// time, so nothing of the moment or the host may reach the header: its mtime is 0 (not the
/// time of writing), it names no file, its OS byte is "unknown" (not the host's), and the
/// level is fixed (the deflate output depends on it). A change here changes every blob digest,
/// so every cached layer would be made again: see the byte-identical checks in
/// `tests/reproducible.rs`.
pub fn reproducible_gzip<W: Write>(out: W) -> GzEncoder<W> {
    GzBuilder::new()
        .mtime(0)
        .operating_system(GZIP_OS_UNKNOWN)
        .write(out, Compression::new(GZIP_LEVEL))
}

/// Link targets at least this long go into a GNU `K` entry, as GNU tar does.
const LINK_FIELD_LEN: usize = 100;

/// The hex part of a `sha256:<hex>` digest, as blob file names use it.
pub(super) fn hex_part(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// One planned tar entry: `parent` when other entries lie beneath it.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Planned {
    pub(super) parent: bool,
}

/// Normalizes the listed paths and adds their ancestors, sorted by path bytes. Byte order puts a
/// directory before its children because a path sorts before every path it prefixes.
pub(super) fn plan(paths: &[PathBuf]) -> Result<BTreeMap<Vec<u8>, (PathBuf, Planned)>> {
    let mut entries: BTreeMap<Vec<u8>, (PathBuf, Planned)> = BTreeMap::new();
    for given in paths {
        let mut rel = PathBuf::new();
        for component in given.components() {
            match component {
                Component::Normal(part) => rel.push(part),
                Component::CurDir => {}
                _ => {
                    return Err(AssembleError::InvalidPath {
                        path: given.clone(),
                    });
                }
            }
        }
        if rel.as_os_str().is_empty() {
            return Err(AssembleError::InvalidPath {
                path: given.clone(),
            });
        }
        let key = rel.as_os_str().as_bytes().to_vec();
        entries
            .entry(key)
            .or_insert_with(|| (rel.clone(), Planned::default()));
        for ancestor in rel.ancestors().skip(1) {
            if ancestor.as_os_str().is_empty() {
                break;
            }
            let key = ancestor.as_os_str().as_bytes().to_vec();
            let slot = entries
                .entry(key)
                .or_insert_with(|| (ancestor.to_path_buf(), Planned::default()));
            slot.1.parent = true;
        }
    }
    Ok(entries)
}

/// Why writing the tar failed: a problem with an input (already an [`AssembleError`]) or with
/// the output file.
pub(super) enum WriteError {
    Assemble(AssembleError),
    Output(io::Error),
}

impl From<io::Error> for WriteError {
    fn from(e: io::Error) -> Self {
        WriteError::Output(e)
    }
}

/// Writes the tar of `entries` to `out`, with the end-of-archive blocks only if `end` (a
/// fragment leaves them out: see [`super::fragment`]), and gives `out` back.
pub(super) fn write_tar<W: Write>(
    root: &Path,
    entries: &BTreeMap<Vec<u8>, (PathBuf, Planned)>,
    out: W,
    end: bool,
) -> Result<W, WriteError> {
    let mut builder = tar::Builder::new(EndGate {
        inner: out,
        closed: false,
    });
    builder.mode(tar::HeaderMode::Deterministic);
    for (rel, planned) in entries.values() {
        let src = root.join(rel);
        let meta = fs::symlink_metadata(&src)
            .map_err(|e| WriteError::Assemble(io_err("read", &src)(e)))?;
        let kind = meta.file_type();
        if planned.parent && !kind.is_dir() {
            return Err(WriteError::Assemble(AssembleError::NotADirectory {
                path: src,
            }));
        }
        if kind.is_dir() {
            append_dir(&mut builder, rel)?;
        } else if kind.is_symlink() {
            let target =
                fs::read_link(&src).map_err(|e| WriteError::Assemble(io_err("read", &src)(e)))?;
            append_symlink(&mut builder, rel, target.as_os_str().as_bytes())?;
        } else if kind.is_file() {
            append_file(&mut builder, &src, rel, meta.permissions().mode())?;
        } else {
            return Err(WriteError::Assemble(AssembleError::Unsupported {
                path: src,
                kind: special_kind(kind),
            }));
        }
    }
    // `into_inner` writes the end-of-archive blocks; a closed gate drops them.
    builder.get_mut().closed = !end;
    Ok(builder.into_inner()?.inner)
}

/// Writes the entries of the directories `dirs` (sorted, parents first), as [`write_tar`]
/// writes directories, without the end-of-archive blocks.
pub(super) fn write_dirs<W: Write>(dirs: &[PathBuf], out: W) -> io::Result<W> {
    let mut builder = tar::Builder::new(EndGate {
        inner: out,
        closed: false,
    });
    builder.mode(tar::HeaderMode::Deterministic);
    for rel in dirs {
        append_dir(&mut builder, rel)?;
    }
    builder.get_mut().closed = true;
    Ok(builder.into_inner()?.inner)
}

/// A directory entry: the same in every layer, whatever the directory's mode on disk.
fn append_dir<W: Write>(builder: &mut tar::Builder<W>, rel: &Path) -> io::Result<()> {
    let mut name = OsString::from(rel.as_os_str());
    name.push("/");
    builder.append_data(
        &mut header(tar::EntryType::Directory, 0o755, 0),
        name,
        io::empty(),
    )
}

/// Passes writes through until closed, then swallows them.
struct EndGate<W> {
    inner: W,
    closed: bool,
}

impl<W: Write> Write for EndGate<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.closed {
            return Ok(buf.len());
        }
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A GNU header with everything but type, mode and size fixed.
fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(LAYER_MTIME);
    header.set_uid(0);
    header.set_gid(0);
    header
}

/// Appends a regular file, reading exactly the size recorded in its header: a file that shrinks
/// or grows meanwhile is an error, never a corrupt archive passed off as valid.
fn append_file<W: Write>(
    builder: &mut tar::Builder<W>,
    src: &Path,
    rel: &Path,
    source_mode: u32,
) -> Result<(), WriteError> {
    let input = |e| WriteError::Assemble(io_err("read", src)(e));
    let file = File::open(src).map_err(input)?;
    let size = file.metadata().map_err(input)?.len();
    let mode = if source_mode & 0o111 != 0 {
        0o755
    } else {
        0o644
    };
    let mut reader = Counting {
        inner: file.take(size),
        count: 0,
        error: None,
    };
    let appended = builder.append_data(
        &mut header(tar::EntryType::Regular, mode, size),
        rel,
        &mut reader,
    );
    if let Some(e) = reader.error {
        return Err(input(e));
    }
    appended?;
    let mut rest = [0u8; 1];
    let grew = reader.inner.into_inner().read(&mut rest).map_err(input)? > 0;
    if reader.count != size || grew {
        return Err(WriteError::Assemble(AssembleError::Changed {
            path: src.to_path_buf(),
        }));
    }
    Ok(())
}

/// Appends a symlink with its target byte for byte (the `tar` crate's `append_link` would
/// normalize `a//b` and `./a`), using a GNU long-link entry for long targets.
fn append_symlink<W: Write>(
    builder: &mut tar::Builder<W>,
    rel: &Path,
    target: &[u8],
) -> io::Result<()> {
    let mut header = header(tar::EntryType::Symlink, 0o777, 0);
    if target.len() >= LINK_FIELD_LEN {
        let mut long = tar::Header::new_gnu();
        long.as_gnu_mut().expect("a GNU header").name[..13].copy_from_slice(b"././@LongLink");
        long.set_entry_type(tar::EntryType::GNULongLink);
        long.set_mode(0o644);
        long.set_mtime(LAYER_MTIME);
        long.set_size(target.len() as u64 + 1);
        long.set_cksum();
        builder.append(&long, target.chain(&[0u8][..]))?;
        header.set_link_name_literal(&target[..LINK_FIELD_LEN - 1])?;
    } else {
        header.set_link_name_literal(target)?;
    }
    builder.append_data(&mut header, rel, io::empty())
}

fn special_kind(kind: fs::FileType) -> &'static str {
    if kind.is_char_device() {
        "character device"
    } else if kind.is_block_device() {
        "block device"
    } else if kind.is_fifo() {
        "FIFO"
    } else if kind.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

#[cfg(test)]
mod tests;

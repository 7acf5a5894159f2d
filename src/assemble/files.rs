//! Small I/O helpers for writing layers: hashing writers, counting readers, and temp files
//! that become their final name atomically or vanish.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest as _, Sha256};

use super::{AssembleError, Result};

pub(super) fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> AssembleError {
    let path = path.to_path_buf();
    move |source| AssembleError::Io {
        action,
        path,
        source,
    }
}

/// A reader that counts bytes and keeps its own errors apart from the archive's.
pub(super) struct Counting<R> {
    pub(super) inner: R,
    pub(super) count: u64,
    pub(super) error: Option<io::Error>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.count += n as u64;
                Ok(n)
            }
            Err(e) => {
                let message = e.to_string();
                self.error = Some(e);
                Err(io::Error::other(message))
            }
        }
    }
}

/// A writer that hashes (sha256) and counts everything written through it, so a blob's
/// digest and size come out of the one pass that writes it.
#[derive(Debug)]
pub struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W> HashWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Hashes and counts `bytes` as if written, without writing them.
    pub(super) fn hash_only(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.count += bytes.len() as u64;
    }

    /// How many bytes went through so far.
    pub(super) fn count(&self) -> u64 {
        self.count
    }

    /// The inner writer, the hex sha256 and the byte count.
    pub fn finish(self) -> (W, String, u64) {
        (self.inner, hex::encode(self.hasher.finalize()), self.count)
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A file created under a unique name in the output directory, removed unless persisted.
pub(super) struct TempFile {
    pub(super) path: PathBuf,
    keep: bool,
}

impl TempFile {
    pub(super) fn create(dir: &Path) -> Result<(TempFile, File)> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!(".tmp-{}-{n}", std::process::id()));
            match File::options().write(true).create_new(true).open(&path) {
                Ok(file) => return Ok((TempFile { path, keep: false }, file)),
                // Left by a crashed process that had the same id.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_err("create", &path)(e)),
            }
        }
    }

    /// Renames the file to `to`, atomically replacing whatever is there (same content, since
    /// names are digests).
    pub(super) fn persist(mut self, to: &Path) -> Result<()> {
        fs::rename(&self.path, to).map_err(io_err("rename", to))?;
        self.keep = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_file(&self.path);
        }
    }
}

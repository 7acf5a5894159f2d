//! The build contexts of remote builds (the gzip'd tars of their `%files` sources): written
//! when a client uploads one, opened when its build unpacks it, swept when a client never came
//! back for it. They live under one directory, each user's in a directory of their own (user
//! names are library names, safe as one path component), so a context is only ever found, used
//! or deleted by its owner. The API and the definition builder both go through
//! [`BuildContexts`], and nothing else knows where the files are.

mod check;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;

pub use check::{ContextError, ContextLimits, ContextSummary, check_context};

/// How long an uploaded build context is kept when its client never deletes it (a client that
/// died mid-build): a day, as Sylabs keeps build artifacts.
pub const CONTEXT_TTL: Duration = Duration::from_secs(24 * 3600);

/// The build contexts under one directory. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildContexts {
    dir: PathBuf,
}

/// What an upload must be to become a context.
#[derive(Debug, Clone, Copy)]
pub struct Announced<'a> {
    /// Hex sha256.
    pub digest: &'a str,
    /// Bytes.
    pub size: u64,
}

/// Why an upload did not become a context; nothing of it is kept.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error("the upload broke off: {0}")]
    BrokenOff(String),
    #[error("the upload is larger than the {announced} bytes announced")]
    LargerThanAnnounced { announced: u64 },
    #[error(
        "the upload ({size} bytes, sha256.{digest}) is not the context announced \
         ({announced_size} bytes, sha256.{announced_digest})"
    )]
    NotAnnounced {
        size: u64,
        digest: String,
        announced_size: u64,
        announced_digest: String,
    },
    /// It is not a tar, or unpacks beyond the limits.
    #[error(transparent)]
    Refused(#[from] ContextError),
    /// kiln could not write it.
    #[error("cannot store the build context: {0}")]
    Store(#[from] std::io::Error),
}

/// Why a context could not be unpacked for a build.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("the build context {path} is missing: {source}")]
    Missing {
        path: String,
        source: std::io::Error,
    },
    #[error("the build context is not a gzip'd tar: {0}")]
    NotTar(std::io::Error),
    #[error("cannot unpack the build context: {0}")]
    Write(std::io::Error),
    #[error("unpacking the build context crashed: {0}")]
    Crashed(String),
}

impl BuildContexts {
    /// The contexts kept under `dir`.
    pub fn new(dir: PathBuf) -> Self {
        BuildContexts { dir }
    }

    /// Where `user`'s context with sha256 `hex` is kept.
    fn path(&self, user: &str, hex: &str) -> PathBuf {
        self.dir.join(user).join(format!("{hex}.tar.gz"))
    }

    /// Whether `user` has the context with sha256 `hex`.
    pub async fn exists(&self, user: &str, hex: &str) -> bool {
        tokio::fs::try_exists(self.path(user, hex))
            .await
            .unwrap_or(false)
    }

    /// Writes `bytes` as `user`'s context, if they are what was `announced` and unpack within
    /// `limits` ([`check_context`]). Until then they are a temporary file, removed on failure.
    pub async fn receive<S, E>(
        &self,
        user: &str,
        announced: Announced<'_>,
        bytes: S,
        limits: ContextLimits,
    ) -> Result<(), ReceiveError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        tokio::fs::create_dir_all(&self.dir).await?;
        let temp = self
            .dir
            .join(format!(".upload-{}", uuid::Uuid::new_v4().simple()));
        let result = self
            .write_checked(user, announced, bytes, limits, &temp)
            .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&temp).await;
        }
        result
    }

    async fn write_checked<S, E>(
        &self,
        user: &str,
        announced: Announced<'_>,
        mut bytes: S,
        limits: ContextLimits,
        temp: &Path,
    ) -> Result<(), ReceiveError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let mut file = tokio::fs::File::create(temp).await?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = bytes.next().await {
            let chunk = chunk.map_err(|err| ReceiveError::BrokenOff(err.to_string()))?;
            size += chunk.len() as u64;
            if size > announced.size {
                return Err(ReceiveError::LargerThanAnnounced {
                    announced: announced.size,
                });
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        let digest = hex::encode(hasher.finalize());
        if size != announced.size || digest != announced.digest {
            return Err(ReceiveError::NotAnnounced {
                size,
                digest,
                announced_size: announced.size,
                announced_digest: announced.digest.to_owned(),
            });
        }
        let checked = temp.to_owned();
        tokio::task::spawn_blocking(move || check_context(&checked, limits))
            .await
            .map_err(std::io::Error::other)??;
        let kept = self.path(user, announced.digest);
        if let Some(parent) = kept.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        tokio::fs::rename(temp, kept).await?;
        Ok(())
    }

    /// Deletes `user`'s context with sha256 `hex`; false when they have none.
    pub async fn delete(&self, user: &str, hex: &str) -> std::io::Result<bool> {
        match tokio::fs::remove_file(self.path(user, hex)).await {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Extracts `user`'s context with sha256 `hex` into `target`: regular files and
    /// directories only, never outside `target`. Returns how many files it wrote.
    pub async fn unpack(&self, user: &str, hex: &str, target: &Path) -> Result<usize, UnpackError> {
        let archive = self.path(user, hex);
        let target = target.to_owned();
        tokio::task::spawn_blocking(move || unpack(&archive, &target))
            .await
            .map_err(|err| UnpackError::Crashed(err.to_string()))?
    }

    /// Removes contexts (and broken-off uploads) older than `ttl`, also in each user's
    /// directory; returns how many.
    pub async fn remove_stale(&self, ttl: Duration) -> std::io::Result<usize> {
        let dir = &self.dir;
        let mut removed = remove_stale_files(dir, ttl).await?;
        let mut entries = match tokio::fs::read_dir(dir).await {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(err) => return Err(err),
        };
        while let Some(entry) = entries.next_entry().await? {
            if entry.file_type().await.is_ok_and(|kind| kind.is_dir()) {
                removed += remove_stale_files(&entry.path(), ttl).await?;
            }
        }
        Ok(removed)
    }
}

/// Removes the files (not directories) in `dir` older than `ttl`; returns how many.
async fn remove_stale_files(dir: &Path, ttl: Duration) -> std::io::Result<usize> {
    let mut entries = match tokio::fs::read_dir(dir).await {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(err) => return Err(err),
    };
    let mut removed = 0;
    while let Some(entry) = entries.next_entry().await? {
        if !entry.file_type().await.is_ok_and(|kind| kind.is_file()) {
            continue;
        }
        let old = entry
            .metadata()
            .await
            .ok()
            .and_then(|meta| meta.modified().ok())
            .and_then(|modified| modified.elapsed().ok())
            .is_some_and(|age| age >= ttl);
        if old && tokio::fs::remove_file(entry.path()).await.is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

/// Extracts the gzip'd tar at `archive` into `target` (see [`BuildContexts::unpack`]).
fn unpack(archive: &Path, target: &Path) -> Result<usize, UnpackError> {
    let file = std::fs::File::open(archive).map_err(|source| UnpackError::Missing {
        path: archive.display().to_string(),
        source,
    })?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut files = 0;
    for entry in tar.entries().map_err(UnpackError::NotTar)? {
        let mut entry = entry.map_err(UnpackError::NotTar)?;
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir()) {
            continue;
        }
        // `unpack_in` refuses paths that would leave `target` (`..`, absolute).
        let inside = entry.unpack_in(target).map_err(UnpackError::Write)?;
        if inside && kind.is_file() {
            files += 1;
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stale_contexts_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join(format!("{}.tar.gz", "a".repeat(64)));
        let fresh = dir.path().join(format!("{}.tar.gz", "b".repeat(64)));
        std::fs::create_dir(dir.path().join("alice")).unwrap();
        let old_of_alice = dir
            .path()
            .join("alice")
            .join(format!("{}.tar.gz", "c".repeat(64)));
        std::fs::write(&old_of_alice, b"old").unwrap();
        std::fs::write(&old, b"old").unwrap();
        std::fs::write(&fresh, b"fresh").unwrap();
        let two_days_ago = std::time::SystemTime::now() - 2 * CONTEXT_TTL;
        for path in [&old, &old_of_alice] {
            std::fs::File::options()
                .write(true)
                .open(path)
                .unwrap()
                .set_modified(two_days_ago)
                .unwrap();
        }
        let contexts = BuildContexts::new(dir.path().to_owned());
        assert_eq!(contexts.remove_stale(CONTEXT_TTL).await.unwrap(), 2);
        assert!(!old.exists() && !old_of_alice.exists() && fresh.exists());
        let missing = BuildContexts::new(dir.path().join("none"));
        assert_eq!(missing.remove_stale(CONTEXT_TTL).await.unwrap(), 0);
    }
}

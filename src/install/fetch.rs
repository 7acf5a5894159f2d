//! Downloading wheels into the package cache, checked against the lock.
//!
//! A wheel is stored under its sha256 (`<cache>/<sha256>/<file name>`), so it is downloaded
//! once for every image and platform that uses it, and a file in the cache is never trusted by
//! name alone: it was hashed on the way in, and only a matching digest is moved into place.

use std::path::{Path, PathBuf};

use futures_util::{StreamExt as _, TryStreamExt as _};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;

use crate::resolve::{LockedWheel, ResolvedWheel};

/// How many wheels download at once.
const PARALLEL_DOWNLOADS: usize = 6;

/// Why a wheel could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("downloading {url} failed: {reason}")]
    Download { url: String, reason: String },
    #[error("{url} does not match the lock: sha256 {actual}, expected {expected}")]
    Checksum {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("the wheel cache at {path} cannot be written")]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A wheel in the cache, with its lock entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedWheel {
    /// The lock entry (with the size measured on download).
    pub locked: LockedWheel,
    /// The verified file.
    pub path: PathBuf,
}

/// The content-addressed wheel cache; cheap to clone.
#[derive(Debug, Clone)]
pub struct WheelCache {
    dir: PathBuf,
    http: reqwest::Client,
}

impl WheelCache {
    /// A cache in `dir`, downloading with `http`.
    pub fn new(dir: PathBuf, http: reqwest::Client) -> Self {
        WheelCache { dir, http }
    }

    /// Every wheel of `wheels` in the cache, downloading those that are not, in the same order.
    pub async fn fetch_all(
        &self,
        wheels: &[ResolvedWheel],
    ) -> Result<Vec<FetchedWheel>, FetchError> {
        let downloads: Vec<_> = wheels.iter().map(|wheel| self.fetch(wheel)).collect();
        let fetched: Vec<FetchedWheel> = futures_util::stream::iter(downloads)
            .buffered(PARALLEL_DOWNLOADS)
            .try_collect()
            .await?;
        tracing::info!(wheels = fetched.len(), "fetched the wheels");
        Ok(fetched)
    }

    /// `wheel` in the cache.
    pub async fn fetch(&self, wheel: &ResolvedWheel) -> Result<FetchedWheel, FetchError> {
        let dir = self.dir.join(&wheel.sha256);
        let path = dir.join(safe_file_name(&wheel.file_name));
        let size = match tokio::fs::metadata(&path).await {
            Ok(meta) => meta.len(),
            Err(_) => self.download(wheel, &dir, &path).await?,
        };
        Ok(FetchedWheel {
            locked: LockedWheel {
                name: wheel.name.clone(),
                version: wheel.version.clone(),
                file_name: wheel.file_name.clone(),
                url: wheel.url.clone(),
                sha256: wheel.sha256.clone(),
                size,
                license: None,
            },
            path,
        })
    }

    async fn download(
        &self,
        wheel: &ResolvedWheel,
        dir: &Path,
        path: &Path,
    ) -> Result<u64, FetchError> {
        let cache_error = |source| FetchError::Cache {
            path: dir.to_owned(),
            source,
        };
        let failed = |reason: String| FetchError::Download {
            url: wheel.url.clone(),
            reason,
        };
        tokio::fs::create_dir_all(dir).await.map_err(cache_error)?;
        let response = self
            .http
            .get(&wheel.url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|err| failed(crate::error_chain(&err)))?;
        let temp = dir.join(format!(".download-{}", uuid::Uuid::new_v4().simple()));
        let result = async {
            let mut file = tokio::fs::File::create(&temp).await.map_err(cache_error)?;
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            let mut body = response.bytes_stream();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|err| failed(crate::error_chain(&err)))?;
                hasher.update(&chunk);
                size += chunk.len() as u64;
                file.write_all(&chunk).await.map_err(cache_error)?;
            }
            file.sync_all().await.map_err(cache_error)?;
            let actual = hex::encode(hasher.finalize());
            if actual != wheel.sha256 {
                return Err(FetchError::Checksum {
                    url: wheel.url.clone(),
                    expected: wheel.sha256.clone(),
                    actual,
                });
            }
            tokio::fs::rename(&temp, path).await.map_err(cache_error)?;
            Ok(size)
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&temp).await;
        }
        result
    }
}

/// The last path segment of a name taken from a lock, so it can only name a file in its own
/// directory.
fn safe_file_name(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.is_empty() || last.starts_with('.') {
        "wheel.whl".to_owned()
    } else {
        last.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_names_cannot_leave_the_cache() {
        assert_eq!(safe_file_name("../../etc/passwd"), "passwd");
        assert_eq!(safe_file_name(".."), "wheel.whl");
        assert_eq!(
            safe_file_name("requests-2.32.3-py3-none-any.whl"),
            "requests-2.32.3-py3-none-any.whl"
        );
    }
}

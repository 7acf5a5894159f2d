//! The build contexts of remote builds (the gzip'd tars of their `%files` sources): received
//! when a client uploads one, fetched when its build unpacks it, deleted when the client is done
//! with it or never came back for it.
//!
//! A context is kept in the registry kiln keeps its images in (embedded or external), so a
//! worker on any machine fetches it by digest: the blob in repository `kiln/contexts/<user>`
//! (user names are library names, valid repository components), referenced by a small OCI
//! artifact manifest tagged `context-<hex>`. The tag is what keeps it: both registries' garbage
//! collection keep blobs a tagged manifest references, so a context stays until its client
//! deletes it or [`CONTEXT_TTL`] passes, whatever builds are queued; deleting the manifest lets
//! the next collection take the blob. A context is only ever found, used or deleted by its
//! owner, and the embedded registry serves `kiln/contexts/` to kiln's builders and operators
//! alone ([`crate::registry::is_private`]). The API and the definition builder both go through
//! [`BuildContexts`], and nothing else knows where contexts are.

mod check;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _, TryStreamExt as _};
use serde_json::json;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;

use crate::registry::images::ImagesError;
use crate::registry::path::Digest;
use crate::registry::{CONTEXT_REPOSITORIES, Images};

pub use check::{ContextError, ContextLimits, ContextSummary, check_context};

/// How long an uploaded build context is kept when its client never deletes it (a client that
/// died mid-build): a day, as Sylabs keeps build artifacts.
pub const CONTEXT_TTL: Duration = Duration::from_secs(24 * 3600);

/// The artifact type of a context's manifest.
const ARTIFACT_TYPE: &str = "application/vnd.kiln.build-context.v1";

/// The media type of a context's one layer, the gzip'd tar itself.
const LAYER_TYPE: &str = "application/vnd.kiln.build-context.v1.tar+gzip";

/// The OCI empty descriptor's media type and content, the config of an artifact with none.
const EMPTY_TYPE: &str = "application/vnd.oci.empty.v1+json";
const EMPTY: &[u8] = b"{}";

/// The annotation a context's manifest records its upload time in, for the expiry sweep.
const CREATED: &str = "org.opencontainers.image.created";

/// The build contexts in the registry `images` reaches; uploads are checked in `scratch`
/// first. Cheap to clone.
#[derive(Debug, Clone)]
pub struct BuildContexts {
    images: Images,
    scratch: PathBuf,
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
    /// kiln could not check it on disk.
    #[error("cannot store the build context: {0}")]
    Store(#[from] std::io::Error),
    /// The registry did not take it.
    #[error("cannot store the build context in the registry")]
    Registry(#[from] ImagesError),
}

/// Why a context could not be unpacked for a build.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error(
        "the build context sha256.{hex} is no longer in the registry (its client deleted it, \
         or it expired); upload it again and resubmit"
    )]
    Missing { hex: String },
    #[error("fetching the build context from the registry failed")]
    Registry(#[from] ImagesError),
    #[error("the build context is not a gzip'd tar: {0}")]
    NotTar(std::io::Error),
    #[error("cannot unpack the build context: {0}")]
    Write(std::io::Error),
    #[error("unpacking the build context crashed: {0}")]
    Crashed(String),
}

impl BuildContexts {
    /// The contexts in the registry `images` reaches, with uploads checked under `scratch`.
    pub fn new(images: Images, scratch: PathBuf) -> Self {
        BuildContexts { images, scratch }
    }

    /// `user`'s repository.
    fn repository(user: &str) -> String {
        format!("{CONTEXT_REPOSITORIES}{user}")
    }

    /// The tag of the context with sha256 `hex` (not `sha256-<hex>`, the OCI referrers
    /// fallback's tag schema, which clients would read as a referrers index).
    fn tag(hex: &str) -> String {
        format!("context-{hex}")
    }

    /// The manifest digest of `user`'s context with sha256 `hex`, if they have it.
    async fn manifest_of(&self, user: &str, hex: &str) -> Result<Option<Digest>, ImagesError> {
        let found = self
            .images
            .tag_digest(&Self::repository(user), &Self::tag(hex))
            .await?;
        Ok(found.and_then(|digest| Digest::parse(&digest).ok()))
    }

    /// Whether `user` has the context with sha256 `hex`.
    pub async fn exists(&self, user: &str, hex: &str) -> Result<bool, ImagesError> {
        Ok(self.manifest_of(user, hex).await?.is_some())
    }

    /// Keeps `bytes` as `user`'s context, if they are what was `announced` and unpack within
    /// `limits` ([`check_context`]). They are checked as a temporary file in the scratch
    /// directory, removed afterwards, and only then stored in the registry.
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
        tokio::fs::create_dir_all(&self.scratch).await?;
        let temp = self
            .scratch
            .join(format!(".upload-{}", uuid::Uuid::new_v4().simple()));
        let result = match write_checked(announced, bytes, limits, &temp).await {
            Ok(()) => self.store(user, announced, &temp).await,
            Err(err) => Err(err),
        };
        let _ = tokio::fs::remove_file(&temp).await;
        result
    }

    /// Stores the checked upload at `file` in the registry: its blob, then the manifest whose
    /// tag keeps it.
    async fn store(
        &self,
        user: &str,
        announced: Announced<'_>,
        file: &Path,
    ) -> Result<(), ReceiveError> {
        let repository = Self::repository(user);
        let digest =
            Digest::parse(&format!("sha256:{}", announced.digest)).map_err(ImagesError::from)?;
        let reader = tokio::fs::File::open(file).await?;
        let stream = tokio_util::io::ReaderStream::with_capacity(reader, 1 << 20);
        self.images.put_blob(&repository, &digest, stream).await?;
        let empty = Digest::parse(&crate::registry::client::sha256_digest(EMPTY))
            .map_err(ImagesError::from)?;
        let empty_bytes = futures_util::stream::once(async {
            Ok::<_, std::convert::Infallible>(Bytes::from_static(EMPTY))
        });
        self.images
            .put_blob(&repository, &empty, Box::pin(empty_bytes))
            .await?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": crate::assemble::MEDIA_TYPE_MANIFEST,
            "artifactType": ARTIFACT_TYPE,
            "config": {"mediaType": EMPTY_TYPE, "digest": empty.to_string(), "size": EMPTY.len()},
            "layers": [{
                "mediaType": LAYER_TYPE,
                "digest": digest.to_string(),
                "size": announced.size,
            }],
            "annotations": {CREATED: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)},
        });
        let bytes = serde_json::to_vec(&manifest).map_err(std::io::Error::other)?;
        self.images
            .put_manifest(
                &repository,
                &Self::tag(announced.digest),
                crate::assemble::MEDIA_TYPE_MANIFEST,
                bytes.into(),
            )
            .await?;
        Ok(())
    }

    /// Deletes `user`'s context with sha256 `hex`; false when they have none.
    pub async fn delete(&self, user: &str, hex: &str) -> Result<bool, ImagesError> {
        match self.manifest_of(user, hex).await? {
            Some(manifest) => {
                self.images
                    .delete_manifest(&Self::repository(user), &manifest)
                    .await
            }
            None => Ok(false),
        }
    }

    /// Extracts `user`'s context with sha256 `hex` into `target`: regular files and
    /// directories only, never outside `target`. The archive is fetched from the registry into
    /// a file next to `target` first, removed afterwards. Returns how many files it wrote.
    pub async fn unpack(&self, user: &str, hex: &str, target: &Path) -> Result<usize, UnpackError> {
        let missing = || UnpackError::Missing {
            hex: hex.to_owned(),
        };
        if self.manifest_of(user, hex).await?.is_none() {
            return Err(missing());
        }
        let digest = Digest::parse(&format!("sha256:{hex}")).map_err(|_| missing())?;
        let blob = self
            .images
            .open_blob(&Self::repository(user), &digest)
            .await?
            .ok_or_else(missing)?;
        let archive = target.with_extension("context.tar.gz");
        let fetched = fetch_to(blob, &archive).await;
        let result = match fetched {
            Ok(()) => {
                let (archive, target) = (archive.clone(), target.to_owned());
                tokio::task::spawn_blocking(move || unpack(&archive, &target))
                    .await
                    .map_err(|err| UnpackError::Crashed(err.to_string()))
                    .and_then(|unpacked| unpacked)
            }
            Err(err) => Err(UnpackError::Write(err)),
        };
        let _ = tokio::fs::remove_file(&archive).await;
        result
    }

    /// Removes contexts uploaded longer than `ttl` ago (a client that never came back) and
    /// broken-off uploads in the scratch directory; returns how many.
    pub async fn remove_stale(&self, ttl: Duration) -> Result<usize, StaleError> {
        let mut removed = remove_stale_files(&self.scratch, ttl).await?;
        let now = chrono::Utc::now();
        for repository in self.images.repositories(CONTEXT_REPOSITORIES).await? {
            for tag in self.images.tags(&repository).await? {
                let Some(bytes) = self.images.manifest(&repository, &tag).await? else {
                    continue;
                };
                let created = serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()
                    .and_then(|manifest| {
                        let text = manifest["annotations"][CREATED].as_str()?.to_owned();
                        chrono::DateTime::parse_from_rfc3339(&text).ok()
                    });
                let expired = created.is_some_and(|created| {
                    (now - created.to_utc())
                        .to_std()
                        .is_ok_and(|age| age >= ttl)
                });
                let digest = Digest::parse(&crate::registry::client::sha256_digest(&bytes))
                    .map_err(ImagesError::from)?;
                if expired && self.images.delete_manifest(&repository, &digest).await? {
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

/// Why the sweep of stale contexts stopped.
#[derive(Debug, thiserror::Error)]
pub enum StaleError {
    #[error("cannot clean the scratch directory of uploads: {0}")]
    Scratch(#[from] std::io::Error),
    #[error("cannot list or delete build contexts in the registry")]
    Registry(#[from] ImagesError),
}

/// Writes `bytes` to `temp` if they are what was `announced` and unpack within `limits`.
async fn write_checked<S, E>(
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
    Ok(())
}

/// Writes `blob` to the file `path`.
async fn fetch_to(blob: crate::registry::images::OpenBlob, path: &Path) -> std::io::Result<()> {
    let mut file = tokio::fs::File::create(path).await?;
    let mut body = crate::registry::images::blob_body(blob, 1 << 20);
    while let Some(chunk) = body.try_next().await? {
        file.write_all(&chunk).await?;
    }
    file.flush().await
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
    let file = std::fs::File::open(archive).map_err(UnpackError::Write)?;
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

    /// A gzip'd tar holding `greeting.txt`, and its sha256 (hex).
    fn context() -> (Vec<u8>, String) {
        let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::default(),
        ));
        let text = b"hello from the client\n";
        let mut header = tar::Header::new_gnu();
        header.set_size(text.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, "greeting.txt", &text[..])
            .unwrap();
        let bytes = tar.into_inner().unwrap().finish().unwrap();
        let hex = hex::encode(Sha256::digest(&bytes));
        (bytes, hex)
    }

    /// A context in the embedded registry: kept through garbage collection while its tag stands
    /// (as a queued build needs it), unpacked from there, taken by the collection once deleted,
    /// and swept once older than the expiry.
    #[tokio::test]
    async fn contexts_live_in_the_registry_until_deleted_or_expired() {
        let data = tempfile::tempdir().unwrap();
        let config = crate::config::Config {
            data_dir: data.path().to_owned(),
            ..crate::config::Config::default()
        };
        let registry = crate::registry::RegistryState::new(config.registry_config())
            .await
            .unwrap();
        let contexts = BuildContexts::new(
            Images::embedded(registry.clone()),
            data.path().join("scratch"),
        );
        let (bytes, hex) = context();
        let limits = ContextLimits {
            max_unpacked: 1 << 20,
            max_entries: 10,
            max_expansion: 100,
        };
        let announced = Announced {
            digest: &hex,
            size: bytes.len() as u64,
        };
        let upload = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from(bytes))]);
        contexts
            .receive("alice", announced, upload, limits)
            .await
            .unwrap();
        assert!(contexts.exists("alice", &hex).await.unwrap());
        assert!(!contexts.exists("bob", &hex).await.unwrap());

        let no_grace = crate::registry::gc::GcPolicy {
            grace: Duration::ZERO,
            upload_ttl: Duration::ZERO,
            remote_build_retention: None,
        };
        let kept = registry.collect_garbage(&no_grace).await.unwrap();
        assert_eq!(kept.blobs, 0, "{kept}");
        let target = data.path().join("work/context");
        std::fs::create_dir_all(&target).unwrap();
        assert_eq!(contexts.unpack("alice", &hex, &target).await.unwrap(), 1);
        assert_eq!(
            std::fs::read_to_string(target.join("greeting.txt")).unwrap(),
            "hello from the client\n"
        );
        let theirs = contexts.unpack("bob", &hex, &target).await.unwrap_err();
        assert!(matches!(theirs, UnpackError::Missing { .. }), "{theirs}");

        assert!(!contexts.delete("bob", &hex).await.unwrap());
        assert!(contexts.delete("alice", &hex).await.unwrap());
        assert!(!contexts.exists("alice", &hex).await.unwrap());
        let collected = registry.collect_garbage(&no_grace).await.unwrap();
        assert!(
            collected.blobs >= 2,
            "the context and its config: {collected}"
        );

        let (bytes, hex) = context();
        let upload = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from(bytes))]);
        let announced = Announced {
            digest: &hex,
            size: announced.size,
        };
        contexts
            .receive("alice", announced, upload, limits)
            .await
            .unwrap();
        assert_eq!(contexts.remove_stale(CONTEXT_TTL).await.unwrap(), 0);
        assert_eq!(contexts.remove_stale(Duration::ZERO).await.unwrap(), 1);
        assert!(!contexts.exists("alice", &hex).await.unwrap());
    }
}

//! The one way the API reads and publishes images: [`Images`], in front of either kiln's
//! embedded registry (read from its storage, no HTTP round trip) or a remote registry reached
//! through [`RegistryClient`]. Builds already write through the client; with this handle the
//! API no longer knows where or how a registry keeps its files, so the registry can move out of
//! the process.

use std::pin::Pin;

use axum::http::StatusCode;
use bytes::Bytes;
use futures_util::Stream;
use serde_json::Value;
use tokio::io::AsyncRead;

use super::RegistryState;
use super::client::{ClientError, RegistryClient};
use super::error::{ErrorCode, RegistryError};
use super::path::{Digest, Reference};
use crate::assemble::{MEDIA_TYPE_MANIFEST, sif_artifact};

/// Where images are read from and published to. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Images {
    registry: Registry,
}

#[derive(Debug, Clone)]
enum Registry {
    /// kiln's own registry, in this process.
    Embedded(RegistryState),
    /// Another registry, over HTTP with the client's credentials.
    Remote(RegistryClient),
}

/// The first layer of a manifest: what a SIF artifact's file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
}

/// A blob opened for reading.
pub struct OpenBlob {
    /// Its bytes.
    pub size: u64,
    /// Its content, from the start.
    pub reader: Pin<Box<dyn AsyncRead + Send>>,
}

impl std::fmt::Debug for OpenBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenBlob")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// Why an image operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ImagesError {
    /// The bytes sent are not the ones their digest names; nothing was kept.
    #[error("the bytes sent are not those their digest names")]
    DigestMismatch,
    /// The registry refused the request as the sender's fault (too large, a bad name); the
    /// message says why and is fit for the client.
    #[error("{message}")]
    Refused { status: StatusCode, message: String },
    /// The embedded registry failed.
    #[error("the embedded registry failed")]
    Embedded(#[source] RegistryError),
    /// The remote registry failed or could not be reached.
    #[error("the registry failed")]
    Remote(#[source] ClientError),
}

impl From<RegistryError> for ImagesError {
    fn from(err: RegistryError) -> Self {
        match err {
            RegistryError::Api {
                code: ErrorCode::DigestInvalid,
                ..
            } => ImagesError::DigestMismatch,
            RegistryError::Api {
                status, message, ..
            } => ImagesError::Refused { status, message },
            other => ImagesError::Embedded(other),
        }
    }
}

impl From<ClientError> for ImagesError {
    fn from(err: ClientError) -> Self {
        if err.is_digest_invalid() {
            ImagesError::DigestMismatch
        } else {
            ImagesError::Remote(err)
        }
    }
}

/// Whether an embedded-registry failure only means "there is no such thing": a name, tag or
/// digest that is not valid or not there.
fn is_absent(err: &RegistryError) -> bool {
    matches!(err, RegistryError::Api { .. })
}

impl Images {
    /// The embedded registry's images, read from its storage.
    pub fn embedded(registry: RegistryState) -> Self {
        Images {
            registry: Registry::Embedded(registry),
        }
    }

    /// The images of the registry `client` talks to, with its credentials.
    pub fn remote(client: RegistryClient) -> Self {
        Images {
            registry: Registry::Remote(client),
        }
    }

    /// How often what `repository`'s tags resolve to may have changed so far; read it before
    /// a look-up, and an answer remembered from that look-up holds while it stays the same.
    /// A remote registry does not say, so this stays 0 there and remembered answers last
    /// their time to live.
    pub fn changes(&self, repository: &str) -> u64 {
        match &self.registry {
            Registry::Embedded(registry) => registry.storage().repository_changes(repository),
            Registry::Remote(_) => 0,
        }
    }

    /// The digest `repository:tag` points at, or `None` when there is no such tag (or the name
    /// or tag is not valid).
    pub async fn tag_digest(
        &self,
        repository: &str,
        tag: &str,
    ) -> Result<Option<String>, ImagesError> {
        match &self.registry {
            Registry::Embedded(registry) => {
                let Ok(reference) = Reference::parse(tag) else {
                    return Ok(None);
                };
                match registry
                    .storage()
                    .get_manifest(repository, &reference)
                    .await
                {
                    Ok(manifest) => Ok(Some(manifest.digest.to_string())),
                    Err(err) if is_absent(&err) => Ok(None),
                    Err(err) => Err(ImagesError::Embedded(err)),
                }
            }
            Registry::Remote(client) => Ok(client.tag_digest(repository, tag).await?),
        }
    }

    /// The exact bytes of the manifest at `reference` (a tag or `sha256:…`) of `repository`, or
    /// `None` when there is none.
    pub async fn manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<Option<Bytes>, ImagesError> {
        match &self.registry {
            Registry::Embedded(registry) => {
                let Ok(reference) = Reference::parse(reference) else {
                    return Ok(None);
                };
                match registry
                    .storage()
                    .get_manifest(repository, &reference)
                    .await
                {
                    Ok(manifest) => Ok(Some(manifest.bytes.into())),
                    Err(err) if is_absent(&err) => Ok(None),
                    Err(err) => Err(ImagesError::Embedded(err)),
                }
            }
            Registry::Remote(client) => {
                match client
                    .pull_manifest(repository, reference, &[MEDIA_TYPE_MANIFEST])
                    .await
                {
                    Ok((bytes, _)) => Ok(Some(bytes)),
                    Err(err) if err.is_not_found() => Ok(None),
                    Err(err) => Err(err.into()),
                }
            }
        }
    }

    /// The first layer of the image manifest at `reference` of `repository` (a SIF artifact's
    /// file), or `None` when there is no such manifest or it has no layer.
    pub async fn first_layer(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<Option<Layer>, ImagesError> {
        let Some(bytes) = self.manifest(repository, reference).await? else {
            return Ok(None);
        };
        let Ok(document) = serde_json::from_slice::<Value>(&bytes) else {
            return Ok(None);
        };
        let layer = &document["layers"][0];
        let parsed = (|| {
            Some(Layer {
                media_type: layer["mediaType"].as_str()?.to_owned(),
                digest: Digest::parse(layer["digest"].as_str()?).ok()?,
                size: layer["size"].as_u64()?,
            })
        })();
        Ok(parsed)
    }

    /// The size of blob `digest` of `repository`, if it is there.
    pub async fn blob_size(
        &self,
        repository: &str,
        digest: &Digest,
    ) -> Result<Option<u64>, ImagesError> {
        Ok(self
            .open_blob(repository, digest)
            .await?
            .map(|blob| blob.size))
    }

    /// Blob `digest` of `repository` opened for reading, if it is there. The embedded
    /// registry's blobs are named by content and read by digest alone, whichever of its
    /// repositories links them (as its download links are); a remote registry is asked for the
    /// blob in `repository`.
    pub async fn open_blob(
        &self,
        repository: &str,
        digest: &Digest,
    ) -> Result<Option<OpenBlob>, ImagesError> {
        match &self.registry {
            Registry::Embedded(registry) => {
                let Some((path, size)) = registry.storage().blob_file(digest).await? else {
                    return Ok(None);
                };
                let file = tokio::fs::File::open(&path)
                    .await
                    .map_err(|err| ImagesError::Embedded(err.into()))?;
                Ok(Some(OpenBlob {
                    size,
                    reader: Box::pin(file),
                }))
            }
            Registry::Remote(client) => {
                let Some(blob) = client.blob_stream(repository, &digest.to_string()).await? else {
                    return Ok(None);
                };
                Ok(Some(OpenBlob {
                    size: blob.size,
                    reader: Box::pin(tokio_util::io::StreamReader::new(blob.bytes)),
                }))
            }
        }
    }

    /// Stores `bytes` as blob `digest` of `repository`. Bytes that are not what `digest` names
    /// are refused ([`ImagesError::DigestMismatch`]), and a stream that fails stops the upload;
    /// either way nothing is kept.
    pub async fn put_blob<S, E>(
        &self,
        repository: &str,
        digest: &Digest,
        bytes: S,
    ) -> Result<(), ImagesError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
        E: std::fmt::Display,
    {
        match &self.registry {
            Registry::Embedded(registry) => Ok(registry
                .storage()
                .put_blob(repository, digest, bytes)
                .await?),
            Registry::Remote(client) => Ok(client
                .push_blob_stream(repository, &digest.to_string(), bytes)
                .await?),
        }
    }

    /// Publishes the SIF `sif_digest` of `size` bytes, already a blob of `repository`, as the
    /// ORAS artifact `singularity pull oras://` reads, named `title`: at `tag`, or by its digest
    /// alone (an untagged artifact still keeps the file from garbage collection). Returns the
    /// artifact manifest's digest.
    pub async fn publish_sif(
        &self,
        repository: &str,
        sif_digest: &Digest,
        size: u64,
        title: &str,
        tag: Option<&str>,
    ) -> Result<String, ImagesError> {
        let (config, manifest) = sif_artifact(&sif_digest.to_string(), size, title);
        let reference = tag.unwrap_or(&manifest.digest).to_owned();
        match &self.registry {
            Registry::Embedded(registry) => {
                let storage = registry.storage();
                let config_digest = Digest::parse(&config.digest)?;
                let config_bytes = futures_util::stream::once(async move {
                    Ok::<_, std::convert::Infallible>(Bytes::from(config.bytes))
                });
                storage
                    .put_blob(repository, &config_digest, Box::pin(config_bytes))
                    .await?;
                storage
                    .put_manifest(
                        repository,
                        &Reference::parse(&reference)?,
                        Some(MEDIA_TYPE_MANIFEST),
                        &manifest.bytes,
                    )
                    .await?;
            }
            Registry::Remote(client) => {
                client
                    .push_blob_bytes(repository, config.bytes.into(), None)
                    .await?;
                client
                    .push_manifest(
                        repository,
                        &reference,
                        manifest.bytes.clone().into(),
                        MEDIA_TYPE_MANIFEST,
                    )
                    .await?;
            }
        }
        Ok(manifest.digest)
    }

    /// Descriptors' digests of the manifests in `repository` whose subject is `subject` and
    /// whose artifact type is `artifact_type`: what is attached to an image, such as its SBOM.
    pub async fn referrers(
        &self,
        repository: &str,
        subject: &Digest,
        artifact_type: &str,
    ) -> Result<Vec<Digest>, ImagesError> {
        let digests = match &self.registry {
            Registry::Embedded(registry) => registry
                .storage()
                .referrers(repository, subject, Some(artifact_type))
                .await?
                .iter()
                .filter_map(|descriptor| descriptor["digest"].as_str().map(str::to_owned))
                .collect(),
            Registry::Remote(client) => {
                client
                    .referrers(repository, &subject.to_string(), artifact_type)
                    .await?
            }
        };
        Ok(digests
            .iter()
            .filter_map(|digest: &String| Digest::parse(digest).ok())
            .collect())
    }
}

impl Images {
    /// Stores manifest `bytes` of `media_type` in `repository` at `reference` (a tag, or its
    /// own digest) and returns its digest.
    pub async fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<String, ImagesError> {
        match &self.registry {
            Registry::Embedded(registry) => {
                let pushed = registry
                    .storage()
                    .put_manifest(
                        repository,
                        &Reference::parse(reference)?,
                        Some(media_type),
                        &bytes,
                    )
                    .await?;
                Ok(pushed.digest.to_string())
            }
            Registry::Remote(client) => Ok(client
                .push_manifest(repository, reference, bytes, media_type)
                .await?),
        }
    }

    /// Deletes the manifest `digest` of `repository` with its tags, so that garbage collection
    /// may take what only it kept; false when there is none.
    pub async fn delete_manifest(
        &self,
        repository: &str,
        digest: &Digest,
    ) -> Result<bool, ImagesError> {
        match &self.registry {
            Registry::Embedded(registry) => {
                let reference = Reference::Digest(digest.clone());
                match registry
                    .storage()
                    .delete_manifest(repository, &reference)
                    .await
                {
                    Ok(()) => Ok(true),
                    Err(err) if is_absent(&err) => Ok(false),
                    Err(err) => Err(ImagesError::Embedded(err)),
                }
            }
            Registry::Remote(client) => Ok(client
                .delete_manifest(repository, &digest.to_string())
                .await?),
        }
    }

    /// The tags of `repository`; none when it does not exist.
    pub async fn tags(&self, repository: &str) -> Result<Vec<String>, ImagesError> {
        match &self.registry {
            Registry::Embedded(registry) => match registry.storage().list_tags(repository).await {
                Ok(tags) => Ok(tags),
                Err(err) if is_absent(&err) => Ok(Vec::new()),
                Err(err) => Err(ImagesError::Embedded(err)),
            },
            Registry::Remote(client) => Ok(client.list_tags(repository).await?),
        }
    }

    /// The repositories whose names start with `prefix` (`kiln/contexts/`).
    pub async fn repositories(&self, prefix: &str) -> Result<Vec<String>, ImagesError> {
        match &self.registry {
            Registry::Embedded(registry) => {
                let root = registry.storage().root().join("repositories");
                let names = tokio::task::spawn_blocking(move || {
                    super::gc::repositories(&root)
                        .into_iter()
                        .filter_map(|path| {
                            let name = path.strip_prefix(&root).ok()?.to_str()?.to_owned();
                            Some(name)
                        })
                        .collect::<Vec<_>>()
                })
                .await
                .map_err(|err| ImagesError::Embedded(RegistryError::Internal(err.to_string())))?;
                Ok(names
                    .into_iter()
                    .filter(|name| name.starts_with(prefix))
                    .collect())
            }
            Registry::Remote(client) => Ok(client.repositories(prefix).await?),
        }
    }
}

/// Reads a blob's first `len` bytes, or `None` when it is shorter.
pub async fn read_head(blob: &mut OpenBlob, len: usize) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt as _;
    let mut head = vec![0u8; len];
    blob.reader.read_exact(&mut head).await.ok()?;
    Some(head)
}

/// A blob's bytes as a stream of chunks of about `chunk` bytes, for a response body.
pub fn blob_body(
    blob: OpenBlob,
    chunk: usize,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    tokio_util::io::ReaderStream::with_capacity(blob.reader, chunk)
}

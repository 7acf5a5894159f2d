//! The one registry client kiln pushes and pulls with, to its embedded registry and to external
//! ones alike, built on `oci-client`.
//!
//! Pushing a blob is "exists → mount → streamed upload", so layers already in the registry are
//! never sent twice. Manifests are pushed and pulled as exact bytes, so the digest kiln computes
//! is the digest the registry stores. Plain HTTP is used for loopback hosts and for hosts the
//! configuration marks insecure; everything else is HTTPS with the system's trust store.

use std::path::Path;

use bytes::Bytes;
use futures_util::TryStreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciEnvelope, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWrite;

use crate::credentials::{Credentials, Secret};

/// The OCI image index media type (the referrers tag schema's index).
const MEDIA_TYPE_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// How the client authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// No credentials (pulls from public registries).
    Anonymous,
    /// HTTP Basic, also used to obtain Bearer tokens from registries that issue them.
    Basic(Credentials),
    /// A Bearer token used as it is.
    Bearer(Secret),
}

/// A client for one registry host.
#[derive(Clone)]
pub struct RegistryClient {
    client: Client,
    registry: String,
    auth: RegistryAuth,
    /// For the one call oci-client lacks (deleting a manifest), and how to reach the host.
    http: reqwest::Client,
    plain_http: bool,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

/// A registry operation that failed. Messages name the registry object concerned.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the registry client for {registry} could not be set up")]
    Setup {
        registry: String,
        #[source]
        source: OciDistributionError,
    },
    #[error("{operation} {target} failed")]
    Registry {
        operation: &'static str,
        target: String,
        #[source]
        source: OciDistributionError,
    },
    #[error("reading {path} failed")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{target} could not be mounted from {source_repository}, which should hold it")]
    NotMountable {
        target: String,
        source_repository: String,
    },
    #[error("{target} has digest {actual}, not the expected {expected}")]
    DigestMismatch {
        target: String,
        expected: String,
        actual: String,
    },
}

/// How a blob reached the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobPush {
    /// The repository already had it.
    Present,
    /// The registry linked it from another repository without a transfer.
    Mounted,
    /// Its bytes were sent.
    Uploaded,
}

impl RegistryClient {
    /// A client for `registry` (`host[:port]`). Loopback hosts and those in `insecure_hosts`
    /// are spoken to over plain HTTP.
    pub fn new(registry: &str, auth: Auth, insecure_hosts: &[String]) -> Result<Self, ClientError> {
        let plain_http = is_loopback(registry) || insecure_hosts.iter().any(|h| h == registry);
        let config = ClientConfig {
            protocol: if plain_http {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            ..ClientConfig::default()
        };
        let client = Client::try_from(config).map_err(|source| ClientError::Setup {
            registry: registry.to_owned(),
            source,
        })?;
        let auth = match auth {
            Auth::Anonymous => RegistryAuth::Anonymous,
            Auth::Basic(Credentials { user, password }) => {
                RegistryAuth::Basic(user, password.expose().to_owned())
            }
            Auth::Bearer(token) => RegistryAuth::Bearer(token.expose().to_owned()),
        };
        let http = reqwest::Client::builder()
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| ClientError::Setup {
                registry: registry.to_owned(),
                source: OciDistributionError::GenericError(Some(err.to_string())),
            })?;
        Ok(RegistryClient {
            client,
            registry: registry.to_owned(),
            auth,
            http,
            plain_http,
        })
    }

    /// The registry host this client talks to.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    fn tagged(&self, repository: &str, tag: &str) -> Reference {
        Reference::with_tag(self.registry.clone(), repository.to_owned(), tag.to_owned())
    }

    fn at_digest(&self, repository: &str, digest: &str) -> Reference {
        Reference::with_digest(
            self.registry.clone(),
            repository.to_owned(),
            digest.to_owned(),
        )
    }

    fn target(&self, repository: &str, reference: &str) -> String {
        let sep = if reference.contains(':') { '@' } else { ':' };
        format!("{}/{repository}{sep}{reference}", self.registry)
    }

    async fn authenticate(
        &self,
        reference: &Reference,
        operation: RegistryOperation,
    ) -> Result<(), ClientError> {
        self.client
            .auth(reference, &self.auth, operation)
            .await
            .map(drop)
            .map_err(|source| ClientError::Registry {
                operation: "authenticating for",
                target: reference.whole(),
                source,
            })
    }

    /// Whether `repository` has the blob `digest`.
    pub async fn blob_exists(&self, repository: &str, digest: &str) -> Result<bool, ClientError> {
        let reference = self.at_digest(repository, digest);
        self.authenticate(&reference, RegistryOperation::Pull)
            .await?;
        self.client
            .blob_exists(&reference, digest)
            .await
            .map_err(|source| ClientError::Registry {
                operation: "checking blob",
                target: self.target(repository, digest),
                source,
            })
    }

    /// Makes sure `repository` has the blob stored in `path`: already there, mounted from
    /// `mount_from` (another repository of this registry that has it), or streamed from disk.
    pub async fn push_blob_file(
        &self,
        repository: &str,
        digest: &str,
        path: &Path,
        mount_from: Option<&str>,
    ) -> Result<BlobPush, ClientError> {
        if let Some(done) = self.skip_or_mount(repository, digest, mount_from).await? {
            return Ok(done);
        }
        let read_error = |source| ClientError::Read {
            path: path.display().to_string(),
            source,
        };
        let file = tokio::fs::File::open(path).await.map_err(read_error)?;
        let size = file.metadata().await.map_err(read_error)?.len();
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20)
            .map_err(OciDistributionError::from);
        let reference = self.at_digest(repository, digest);
        self.client
            .push_blob_stream(&reference, stream, digest, Some(size))
            .await
            .map_err(|source| ClientError::Registry {
                operation: "uploading blob",
                target: self.target(repository, digest),
                source,
            })?;
        Ok(BlobPush::Uploaded)
    }

    /// Makes sure `repository` has the small blob `data` (configs, artifacts' files).
    pub async fn push_blob_bytes(
        &self,
        repository: &str,
        data: Bytes,
        mount_from: Option<&str>,
    ) -> Result<(String, BlobPush), ClientError> {
        let digest = sha256_digest(&data);
        if let Some(done) = self.skip_or_mount(repository, &digest, mount_from).await? {
            return Ok((digest, done));
        }
        let reference = self.at_digest(repository, &digest);
        self.client
            .push_blob(&reference, data, &digest)
            .await
            .map_err(|source| ClientError::Registry {
                operation: "uploading blob",
                target: self.target(repository, &digest),
                source,
            })?;
        Ok((digest, BlobPush::Uploaded))
    }

    /// Makes sure `repository` has blob `digest`, which repository `source` of this registry
    /// has: already there, or mounted. Base image layers arrive this way, never downloaded.
    pub async fn mount_from(
        &self,
        repository: &str,
        digest: &str,
        source: &str,
    ) -> Result<BlobPush, ClientError> {
        match self.skip_or_mount(repository, digest, Some(source)).await? {
            Some(done) => Ok(done),
            None => Err(ClientError::NotMountable {
                target: self.target(repository, digest),
                source_repository: source.to_owned(),
            }),
        }
    }

    /// The cheap ways to get a blob into a repository: it is there, or it can be mounted.
    async fn skip_or_mount(
        &self,
        repository: &str,
        digest: &str,
        mount_from: Option<&str>,
    ) -> Result<Option<BlobPush>, ClientError> {
        let reference = self.at_digest(repository, digest);
        self.authenticate(&reference, RegistryOperation::Push)
            .await?;
        if self.blob_exists(repository, digest).await? {
            return Ok(Some(BlobPush::Present));
        }
        if let Some(source) = mount_from {
            let from = self.at_digest(source, digest);
            // A registry that cannot mount answers 202 and opens an upload session, which
            // oci-client reports as an error: that is the signal to upload instead.
            if self
                .client
                .mount_blob(&reference, &from, digest)
                .await
                .is_ok()
            {
                return Ok(Some(BlobPush::Mounted));
            }
        }
        Ok(None)
    }

    /// Pushes manifest or index `bytes` of `media_type` under `reference` (a tag, or the
    /// digest itself) and returns its digest. A manifest with a subject is also listed among
    /// its subject's referrers where the registry does not do that itself.
    pub async fn push_manifest(
        &self,
        repository: &str,
        reference: &str,
        bytes: Bytes,
        media_type: &str,
    ) -> Result<String, ClientError> {
        let digest = self
            .push_manifest_only(repository, reference, bytes.clone(), media_type)
            .await?;
        self.index_referrer(repository, &bytes, &digest, media_type)
            .await?;
        Ok(digest)
    }

    /// [`Self::push_manifest`] without the referrers index.
    async fn push_manifest_only(
        &self,
        repository: &str,
        reference: &str,
        bytes: Bytes,
        media_type: &str,
    ) -> Result<String, ClientError> {
        let digest = sha256_digest(&bytes);
        let target = if reference.contains(':') {
            self.at_digest(repository, reference)
        } else {
            self.tagged(repository, reference)
        };
        let content_type = media_type.parse().map_err(|_| ClientError::Registry {
            operation: "pushing manifest",
            target: self.target(repository, reference),
            source: OciDistributionError::GenericError(Some(format!(
                "`{media_type}` is not a media type"
            ))),
        })?;
        self.authenticate(&target, RegistryOperation::Push).await?;
        self.client
            .push_manifest_raw(&target, bytes, content_type)
            .await
            .map_err(|source| ClientError::Registry {
                operation: "pushing manifest",
                target: self.target(repository, reference),
                source,
            })?;
        Ok(digest)
    }

    /// The digest `repository:tag` points at, or `None` when there is no such tag: the
    /// cache-hit check, one HEAD request.
    pub async fn tag_digest(
        &self,
        repository: &str,
        tag: &str,
    ) -> Result<Option<String>, ClientError> {
        let reference = self.tagged(repository, tag);
        self.authenticate(&reference, RegistryOperation::Pull)
            .await?;
        match self
            .client
            .fetch_manifest_digest(&reference, &self.auth)
            .await
        {
            Ok(digest) => Ok(Some(digest)),
            Err(err) if is_not_found(&err) => Ok(None),
            Err(source) => Err(ClientError::Registry {
                operation: "looking up tag",
                target: self.target(repository, tag),
                source,
            }),
        }
    }

    /// The exact bytes and digest of a manifest or index, by tag or digest, checked against
    /// the digest when one was asked for.
    pub async fn pull_manifest(
        &self,
        repository: &str,
        reference: &str,
        accepted_media_types: &[&str],
    ) -> Result<(Bytes, String), ClientError> {
        let target = if reference.contains(':') {
            self.at_digest(repository, reference)
        } else {
            self.tagged(repository, reference)
        };
        let (bytes, digest) = self
            .client
            .pull_manifest_raw(&target, &self.auth, accepted_media_types)
            .await
            .map_err(|source| ClientError::Registry {
                operation: "pulling manifest",
                target: self.target(repository, reference),
                source,
            })?;
        let actual = sha256_digest(&bytes);
        if actual != digest || (reference.contains(':') && actual != reference) {
            return Err(ClientError::DigestMismatch {
                target: self.target(repository, reference),
                expected: digest,
                actual,
            });
        }
        Ok((bytes, digest))
    }

    /// Streams blob `digest` of `repository` into `out`, verifying its digest.
    pub async fn pull_blob(
        &self,
        repository: &str,
        digest: &str,
        out: impl AsyncWrite + Unpin,
    ) -> Result<(), ClientError> {
        let reference = self.at_digest(repository, digest);
        self.authenticate(&reference, RegistryOperation::Pull)
            .await?;
        self.client
            .pull_blob(&reference, digest, out)
            .await
            .map_err(|source| ClientError::Registry {
                operation: "pulling blob",
                target: self.target(repository, digest),
                source,
            })
    }

    /// Uploads blob `digest` of `repository` from `bytes`, always (a blob already there is sent
    /// again, so that bytes which are not what they claim are refused all the same). A failing
    /// stream stops the upload and nothing is kept.
    pub async fn push_blob_stream<S, E>(
        &self,
        repository: &str,
        digest: &str,
        bytes: S,
    ) -> Result<(), ClientError>
    where
        S: futures_util::Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: std::fmt::Display,
    {
        let reference = self.at_digest(repository, digest);
        self.authenticate(&reference, RegistryOperation::Push)
            .await?;
        let bytes = bytes.map_err(|err| OciDistributionError::GenericError(Some(err.to_string())));
        self.client
            .push_blob_stream(&reference, bytes, digest, None)
            .await
            .map(drop)
            .map_err(|source| ClientError::Registry {
                operation: "uploading blob",
                target: self.target(repository, digest),
                source,
            })
    }

    /// The digests of the manifests in `repository` whose subject is `subject` and whose
    /// artifact type is `artifact_type`.
    pub async fn referrers(
        &self,
        repository: &str,
        subject: &str,
        artifact_type: &str,
    ) -> Result<Vec<String>, ClientError> {
        let reference = self.at_digest(repository, subject);
        self.authenticate(&reference, RegistryOperation::Pull)
            .await?;
        let index = self
            .client
            .pull_referrers(&reference, Some(artifact_type))
            .await
            .map_err(|source| ClientError::Registry {
                operation: "listing referrers of",
                target: self.target(repository, subject),
                source,
            })?;
        Ok(index
            .manifests
            .into_iter()
            .map(|entry| entry.digest)
            .collect())
    }

    /// Deletes the manifest `digest` of `repository` (and so the tags pointing at it); false
    /// when there is none.
    pub async fn delete_manifest(
        &self,
        repository: &str,
        digest: &str,
    ) -> Result<bool, ClientError> {
        let path = format!("{repository}/manifests/{digest}");
        let response = self
            .raw(
                reqwest::Method::DELETE,
                repository,
                &path,
                "deleting manifest",
            )
            .await?;
        match response.status().as_u16() {
            200..=299 => Ok(true),
            404 => Ok(false),
            status => {
                let body = response.text().await.unwrap_or_default();
                Err(self.raw_failure(
                    "deleting manifest",
                    &path,
                    format!("the registry answered {status}: {body}"),
                ))
            }
        }
    }

    /// One request oci-client has no call for, to `/v2/<path>` (`repository`'s), with the
    /// Bearer token oci-client obtained when the registry issues them, else Basic.
    async fn raw(
        &self,
        method: reqwest::Method,
        repository: &str,
        path: &str,
        operation: &'static str,
    ) -> Result<reqwest::Response, ClientError> {
        let reference = self.tagged(repository, "latest");
        let token = self
            .client
            .auth(&reference, &self.auth, RegistryOperation::Push)
            .await
            .map_err(|source| ClientError::Registry {
                operation: "authenticating for",
                target: reference.whole(),
                source,
            })?;
        let scheme = if self.plain_http { "http" } else { "https" };
        let request = self
            .http
            .request(method, format!("{scheme}://{}/v2/{path}", self.registry));
        let request = match (token, &self.auth) {
            (Some(token), _) => request.bearer_auth(token),
            (None, RegistryAuth::Basic(user, password)) => request.basic_auth(user, Some(password)),
            (None, RegistryAuth::Bearer(token)) => request.bearer_auth(token),
            (None, RegistryAuth::Anonymous) => request,
        };
        request
            .send()
            .await
            .map_err(|err| self.raw_failure(operation, path, err.to_string()))
    }

    fn raw_failure(&self, operation: &'static str, path: &str, message: String) -> ClientError {
        ClientError::Registry {
            operation,
            target: format!("{}/v2/{path}", self.registry),
            source: OciDistributionError::GenericError(Some(message)),
        }
    }

    /// Lists the manifest `bytes` (`digest`, of `media_type`) among the referrers of its
    /// subject the way a registry without the referrers API needs: in the index at tag
    /// `sha256-<subject hex>` (the OCI referrers tag schema), which clients, kiln's included,
    /// read when the API answers 404. Registries with the API (kiln's own) are left alone.
    async fn index_referrer(
        &self,
        repository: &str,
        bytes: &[u8],
        digest: &str,
        media_type: &str,
    ) -> Result<(), ClientError> {
        let Ok(manifest) = serde_json::from_slice::<serde_json::Value>(bytes) else {
            return Ok(());
        };
        let Some(subject) = manifest["subject"]["digest"].as_str() else {
            return Ok(());
        };
        let path = format!("{repository}/referrers/{subject}");
        let probe = self
            .raw(
                reqwest::Method::GET,
                repository,
                &path,
                "listing referrers of",
            )
            .await?;
        if probe.status() != reqwest::StatusCode::NOT_FOUND {
            return Ok(());
        }
        let tag = subject.replacen(':', "-", 1);
        let mut index = match self
            .pull_manifest(repository, &tag, &[MEDIA_TYPE_INDEX])
            .await
        {
            Ok((existing, _)) => serde_json::from_slice(&existing).unwrap_or_default(),
            Err(err) if err.is_not_found() => serde_json::Value::Null,
            Err(err) => return Err(err),
        };
        if !index["manifests"].is_array() {
            index = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": MEDIA_TYPE_INDEX,
                "manifests": [],
            });
        }
        let mut entry = serde_json::json!({
            "mediaType": media_type,
            "digest": digest,
            "size": bytes.len(),
        });
        let artifact_type = manifest["artifactType"]
            .as_str()
            .or_else(|| manifest["config"]["mediaType"].as_str());
        if let Some(artifact_type) = artifact_type {
            entry["artifactType"] = artifact_type.into();
        }
        if manifest["annotations"].is_object() {
            entry["annotations"] = manifest["annotations"].clone();
        }
        let entries = index["manifests"]
            .as_array_mut()
            .expect("made an array above");
        if entries.iter().any(|listed| listed["digest"] == digest) {
            return Ok(());
        }
        entries.push(entry);
        let index = serde_json::to_vec(&index)
            .map_err(|err| self.raw_failure("listing referrers of", &path, err.to_string()))?;
        self.push_manifest_only(repository, &tag, index.into(), MEDIA_TYPE_INDEX)
            .await
            .map(drop)
    }

    /// The tags of `repository`; none when it does not exist.
    pub async fn list_tags(&self, repository: &str) -> Result<Vec<String>, ClientError> {
        let reference = self.tagged(repository, "latest");
        self.authenticate(&reference, RegistryOperation::Pull)
            .await?;
        match self
            .client
            .list_tags(&reference, &self.auth, None, None)
            .await
        {
            Ok(response) => Ok(response.tags),
            Err(err) if is_not_found(&err) => Ok(Vec::new()),
            Err(source) => Err(ClientError::Registry {
                operation: "listing tags of",
                target: format!("{}/{repository}", self.registry),
                source,
            }),
        }
    }

    /// The registry's repositories whose names start with `prefix`, from its catalog.
    pub async fn repositories(&self, prefix: &str) -> Result<Vec<String>, ClientError> {
        /// Repositories asked for per page.
        const PAGE: usize = 1000;
        let reference = self.tagged("catalog", "latest");
        let mut found = Vec::new();
        let mut last: Option<String> = None;
        loop {
            let page = self
                .client
                .catalog(&reference, &self.auth, Some(PAGE), last.as_deref())
                .await
                .map_err(|source| ClientError::Registry {
                    operation: "listing the repositories of",
                    target: self.registry.clone(),
                    source,
                })?;
            let full = page.repositories.len() >= PAGE;
            last = page.repositories.last().cloned();
            found.extend(
                page.repositories
                    .into_iter()
                    .filter(|name| name.starts_with(prefix)),
            );
            if !full || last.is_none() {
                return Ok(found);
            }
        }
    }

    /// Blob `digest` of `repository` as a stream checked against its digest, or `None` when the
    /// repository has no such blob.
    pub async fn blob_stream(
        &self,
        repository: &str,
        digest: &str,
    ) -> Result<Option<BlobStream>, ClientError> {
        let reference = self.at_digest(repository, digest);
        self.authenticate(&reference, RegistryOperation::Pull)
            .await?;
        let failed = |source| ClientError::Registry {
            operation: "pulling blob",
            target: self.target(repository, digest),
            source,
        };
        let sized = match self.client.pull_blob_stream(&reference, digest).await {
            Ok(sized) => sized,
            Err(err) if is_not_found(&err) => return Ok(None),
            Err(err) => return Err(failed(err)),
        };
        let size = sized.content_length.ok_or_else(|| {
            failed(OciDistributionError::GenericError(Some(
                "the registry did not say how large the blob is (no Content-Length)".into(),
            )))
        })?;
        Ok(Some(BlobStream {
            size,
            bytes: sized.stream,
        }))
    }
}

/// A blob being read from a registry: its size and its bytes, verified against its digest as
/// they come.
pub struct BlobStream {
    /// Bytes the registry said the blob has.
    pub size: u64,
    /// The bytes.
    pub bytes: futures_util::stream::BoxStream<'static, std::io::Result<Bytes>>,
}

impl std::fmt::Debug for BlobStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobStream")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl ClientError {
    /// Whether the registry said the object asked for does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ClientError::Registry { source, .. } if is_not_found(source))
    }

    /// Whether the registry refused bytes whose digest is not the one they were sent as.
    pub fn is_digest_invalid(&self) -> bool {
        let ClientError::Registry { source, .. } = self else {
            return false;
        };
        let invalid = |envelope: &OciEnvelope| {
            envelope
                .errors
                .iter()
                .any(|e| e.code == OciErrorCode::DigestInvalid)
        };
        match source {
            OciDistributionError::RegistryError { envelope, .. } => invalid(envelope),
            // The end of an upload reports the registry's error body as text.
            OciDistributionError::ServerError { message, .. } => {
                serde_json::from_str::<OciEnvelope>(message).is_ok_and(|e| invalid(&e))
            }
            _ => false,
        }
    }
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Whether `registry` (`host[:port]`) is on this machine; such registries speak plain HTTP.
pub fn is_loopback(registry: &str) -> bool {
    let host = registry
        .rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map_or(registry, |(host, _)| host);
    let ip = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || ip
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn is_not_found(err: &OciDistributionError) -> bool {
    match err {
        OciDistributionError::ImageManifestNotFoundError(_) => true,
        OciDistributionError::ServerError { code, .. } => *code == 404,
        OciDistributionError::RegistryError { envelope, .. } => envelope.errors.iter().any(|e| {
            matches!(
                e.code,
                OciErrorCode::ManifestUnknown
                    | OciErrorCode::NameUnknown
                    | OciErrorCode::BlobUnknown
            )
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_use_plain_http() {
        for host in [
            "localhost",
            "localhost:9090",
            "127.0.0.1:5000",
            "[::1]:5000",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["registry.example.org", "ghcr.io", "127.example.org:5000"] {
            assert!(!is_loopback(host), "{host}");
        }
    }
}

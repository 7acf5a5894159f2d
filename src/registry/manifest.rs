//! Manifest, tag and referrers storage (an extension of [`Storage`]):
//! manifests are kept byte-for-byte as blobs, with a per-repository marker
//! holding their media type, tags are files holding a digest, and each
//! manifest with a `subject` leaves a descriptor under `_referrers/<subject>/`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};
use tokio::fs;

use super::error::{ErrorCode, RegistryError, Result};
use super::path::{Digest, Reference, is_valid_tag};
use super::storage::{Storage, read_opt, remove_opt, sha256_hex};

/// Largest manifest accepted (bytes).
pub const MAX_MANIFEST_SIZE: usize = 4 * 1024 * 1024;

/// Media type of the referrers response.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Metadata stored beside each manifest (`_manifests/<hex>`).
#[derive(Debug, Serialize, Deserialize)]
struct ManifestMeta {
    media_type: String,
    size: u64,
    subject: Option<String>,
}

/// A manifest as pushed, with its media type.
#[derive(Debug)]
pub struct StoredManifest {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Vec<u8>,
}

/// Result of a manifest push.
#[derive(Debug)]
pub struct PushedManifest {
    pub digest: Digest,
    pub subject: Option<Digest>,
}

fn manifest_unknown(r: &impl std::fmt::Display) -> RegistryError {
    RegistryError::new(ErrorCode::ManifestUnknown, format!("manifest {r} unknown"))
}

fn invalid(msg: impl Into<String>) -> RegistryError {
    RegistryError::new(ErrorCode::ManifestInvalid, msg)
}

fn json_err(e: serde_json::Error) -> RegistryError {
    RegistryError::Internal(e.to_string())
}

/// Digests of every descriptor the manifest references (config, layers,
/// artifact blobs, index children); `subject` is deliberately excluded.
pub(super) fn referenced(doc: &Map<String, Value>) -> Result<Vec<Digest>> {
    let mut descs: Vec<&Value> = Vec::new();
    if let Some(c) = doc.get("config") {
        descs.push(c);
    }
    for key in ["layers", "blobs", "manifests"] {
        match doc.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::Array(a)) => descs.extend(a),
            Some(_) => return Err(invalid(format!("{key} must be an array"))),
        }
    }
    descs
        .into_iter()
        .map(|d| {
            let s = d
                .get("digest")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("descriptor without digest"))?;
            Digest::parse(s).map_err(|_| {
                RegistryError::new(
                    ErrorCode::ManifestBlobUnknown,
                    format!("unsupported descriptor digest {s}"),
                )
            })
        })
        .collect()
}

impl Storage {
    async fn resolve(&self, name: &str, reference: &Reference) -> Result<Digest> {
        match reference {
            Reference::Digest(d) => Ok(d.clone()),
            Reference::Tag(t) => {
                let raw = read_opt(&self.tag_path(name, t))
                    .await?
                    .ok_or_else(|| manifest_unknown(t))?;
                let s = String::from_utf8_lossy(&raw);
                Digest::parse(s.trim())
                    .map_err(|_| RegistryError::Internal(format!("corrupt tag {name}:{t}")))
            }
        }
    }

    async fn manifest_meta(&self, name: &str, d: &Digest) -> Result<Option<ManifestMeta>> {
        match read_opt(&self.manifest_path(name, d)).await? {
            Some(b) => Ok(Some(serde_json::from_slice(&b).map_err(json_err)?)),
            None => Ok(None),
        }
    }

    /// Stores a manifest under `reference`. `content_type` falls back to the
    /// body's `mediaType`.
    pub async fn put_manifest(
        &self,
        name: &str,
        reference: &Reference,
        content_type: Option<&str>,
        bytes: &[u8],
    ) -> Result<PushedManifest> {
        if bytes.len() > MAX_MANIFEST_SIZE {
            return Err(
                RegistryError::new(ErrorCode::SizeInvalid, "manifest too large")
                    .with_status(axum::http::StatusCode::PAYLOAD_TOO_LARGE),
            );
        }
        let mut h = Sha256::new();
        h.update(bytes);
        let digest = Digest::from_hex(&sha256_hex(h))
            .ok_or_else(|| RegistryError::Internal("bad hash".into()))?;
        if let Reference::Digest(d) = reference
            && *d != digest
        {
            return Err(RegistryError::new(
                ErrorCode::DigestInvalid,
                "digest does not match manifest",
            ));
        }
        let doc: Map<String, Value> = serde_json::from_slice(bytes)
            .map_err(|e| invalid(format!("manifest is not a JSON object: {e}")))?;
        let media_type = content_type
            .filter(|c| !c.is_empty())
            .or_else(|| doc.get("mediaType").and_then(Value::as_str))
            .ok_or_else(|| invalid("no Content-Type or mediaType"))?
            .to_owned();
        let references = referenced(&doc)?;
        // From here on what this manifest references must not be collected.
        let _shared = self.guard().read().await;
        self.touch(references.iter().chain([&digest]));
        for d in references {
            if !self.is_linked(name, &d).await && self.manifest_meta(name, &d).await?.is_none() {
                return Err(RegistryError::new(
                    ErrorCode::ManifestBlobUnknown,
                    format!("blob {d} unknown to repository"),
                )
                .with_detail(json!({ "digest": d.to_string() })));
            }
        }
        let subject = match doc.get("subject") {
            None | Some(Value::Null) => None,
            Some(s) => {
                let s = s
                    .get("digest")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid("subject without digest"))?;
                Some(Digest::parse(s).map_err(|_| invalid("invalid subject digest"))?)
            }
        };

        let blob = self.blob_path(&digest);
        if !fs::try_exists(&blob).await.unwrap_or(false) {
            self.atomic_write(&blob, bytes).await?;
        }
        let meta = ManifestMeta {
            media_type: media_type.clone(),
            size: bytes.len() as u64,
            subject: subject.as_ref().map(|s| s.hex().to_owned()),
        };
        let meta = serde_json::to_vec(&meta).map_err(json_err)?;
        self.atomic_write(&self.manifest_path(name, &digest), &meta)
            .await?;
        if let Some(s) = &subject {
            let artifact_type = doc
                .get("artifactType")
                .or_else(|| doc.get("config").and_then(|c| c.get("mediaType")))
                .cloned();
            let mut desc = json!({ "mediaType": media_type, "digest": digest.to_string(), "size": bytes.len() });
            if let Some(a) = artifact_type {
                desc["artifactType"] = a;
            }
            if let Some(a) = doc.get("annotations") {
                desc["annotations"] = a.clone();
            }
            let desc = serde_json::to_vec(&desc).map_err(json_err)?;
            self.atomic_write(&self.referrers_dir(name, s).join(digest.hex()), &desc)
                .await?;
        }
        if let Reference::Tag(t) = reference {
            self.atomic_write(&self.tag_path(name, t), digest.to_string().as_bytes())
                .await?;
            self.count_change(name);
        }
        Ok(PushedManifest { digest, subject })
    }

    /// Fetches a manifest by tag or digest.
    pub async fn get_manifest(&self, name: &str, reference: &Reference) -> Result<StoredManifest> {
        let digest = self.resolve(name, reference).await?;
        let meta = self
            .manifest_meta(name, &digest)
            .await?
            .ok_or_else(|| manifest_unknown(reference))?;
        let bytes = read_opt(&self.blob_path(&digest))
            .await?
            .ok_or_else(|| manifest_unknown(reference))?;
        Ok(StoredManifest {
            digest,
            media_type: meta.media_type,
            bytes,
        })
    }

    /// Deletes a tag, or a manifest (with its tags and referrer entry) by digest.
    pub async fn delete_manifest(&self, name: &str, reference: &Reference) -> Result<()> {
        let d = match reference {
            Reference::Tag(t) => {
                return if remove_opt(&self.tag_path(name, t)).await? {
                    self.count_change(name);
                    Ok(())
                } else {
                    Err(manifest_unknown(t))
                };
            }
            Reference::Digest(d) => d,
        };
        let meta = self
            .manifest_meta(name, d)
            .await?
            .ok_or_else(|| manifest_unknown(d))?;
        remove_opt(&self.manifest_path(name, d)).await?;
        // Its tags no longer resolve from here on.
        self.count_change(name);
        self.forget_blob(d).await?;
        let wanted = d.to_string();
        for tag in self.tag_names(name).await? {
            let path = self.tag_path(name, &tag);
            if read_opt(&path)
                .await?
                .is_some_and(|b| String::from_utf8_lossy(&b).trim() == wanted)
            {
                remove_opt(&path).await?;
            }
        }
        if let Some(s) = meta.subject.as_deref().and_then(Digest::from_hex) {
            remove_opt(&self.referrers_dir(name, &s).join(d.hex())).await?;
        }
        Ok(())
    }

    async fn tag_names(&self, name: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut dir = match fs::read_dir(self.repo(name).join("_tags")).await {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e.into()),
        };
        while let Some(entry) = dir.next_entry().await? {
            if let Some(t) = entry.file_name().to_str().filter(|t| is_valid_tag(t)) {
                out.push(t.to_owned());
            }
        }
        Ok(out)
    }

    /// All tags of `name`, sorted; NAME_UNKNOWN if the repository does not exist.
    pub async fn list_tags(&self, name: &str) -> Result<Vec<String>> {
        let repo = self.repo(name);
        let mut exists = false;
        for sub in ["_tags", "_manifests", "_links"] {
            exists |= fs::try_exists(repo.join(sub)).await.unwrap_or(false);
        }
        if !exists {
            return Err(RegistryError::new(
                ErrorCode::NameUnknown,
                format!("repository {name} unknown"),
            ));
        }
        let mut tags = self.tag_names(name).await?;
        tags.sort();
        Ok(tags)
    }

    /// Descriptors of manifests in `name` whose subject is `subject`,
    /// optionally filtered by artifact type, sorted by digest.
    pub async fn referrers(
        &self,
        name: &str,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut dir = match fs::read_dir(self.referrers_dir(name, subject)).await {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e.into()),
        };
        while let Some(entry) = dir.next_entry().await? {
            let Some(raw) = read_opt(&entry.path()).await? else {
                continue;
            };
            let desc: Value = serde_json::from_slice(&raw).map_err(json_err)?;
            let keep = artifact_type
                .is_none_or(|a| desc.get("artifactType").and_then(Value::as_str) == Some(a));
            if keep {
                out.push(desc);
            }
        }
        out.sort_by(|a, b| a["digest"].as_str().cmp(&b["digest"].as_str()));
        Ok(out)
    }
}

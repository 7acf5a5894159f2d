//! Filesystem store for blobs, manifests, tags, referrers and upload
//! sessions. Blobs are content-addressed under `blobs/sha256/<2>/<hex>`
//! and shared by all repositories; each repository keeps markers under
//! `repositories/<name>/{_links,_manifests,_tags,_referrers}` (the leading
//! `_` can never start a name component, so nested names cannot collide).
//! Every write goes to `tmp/` first, is fsynced, then renamed into place.
//!
//! Garbage collection ([`super::gc`]) removes blobs while pushes run: every operation that
//! makes a blob referenced (linking it, storing a manifest) holds [`Storage::guard`] shared and
//! notes the digests it touched, and the collector deletes only under the exclusive guard and
//! never what was touched since it started looking.

use std::collections::{HashMap, HashSet};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::fs;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::error::{ErrorCode, RegistryError, Result};
use super::path::Digest;

/// Metadata of an upload session (`uploads/<uuid>.json`).
#[derive(Debug, Serialize, Deserialize)]
pub struct UploadMeta {
    pub name: String,
    /// Unix seconds when the session started.
    pub started: u64,
    /// The user who opened it, when their open sessions are capped.
    #[serde(default)]
    pub owner: Option<String>,
}

/// The filesystem store.
#[derive(Debug)]
pub struct Storage {
    root: PathBuf,
    max_blob_size: u64,
    /// Running sha256 of open uploads, keyed by session, with the offset it covers.
    hashers: Mutex<HashMap<String, (u64, Sha256)>>,
    /// Open upload sessions of capped users: session id → owner.
    owners: Mutex<HashMap<String, String>>,
    /// Held shared by whatever makes a blob referenced, exclusively by the collector's sweep.
    guard: tokio::sync::RwLock<()>,
    /// While a collection runs, the digests made referenced since it started.
    touched: Mutex<Option<HashSet<Digest>>>,
    /// Counts changes to what repositories' tags resolve to (a manifest stored or deleted, a
    /// blob unlinked), by a hash of the repository name: what an in-memory answer about a tag
    /// was checked against. Striped, so it stays this size however many repositories exist.
    changes: Box<[AtomicU64]>,
    /// An exclusive lock on `root/lock`, held while this store is open: one process at a time.
    _lock: std::fs::File,
}

/// Stripes of [`Storage::changes`]: repositories sharing one only cost each other a re-check.
const CHANGE_STRIPES: usize = 1024;

/// The stripe of [`Storage::changes`] counting `name`'s changes (FNV-1a of the name).
fn change_stripe(name: &str) -> usize {
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % CHANGE_STRIPES as u64) as usize
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(super) fn sha256_hex(h: Sha256) -> String {
    hex::encode(&h.finalize()[..])
}

fn is_not_found(e: &std::io::Error) -> bool {
    e.kind() == ErrorKind::NotFound
}

/// `Ok(None)` when the file does not exist.
pub(super) async fn read_opt(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path).await {
        Ok(b) => Ok(Some(b)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub(super) async fn remove_opt(path: &Path) -> Result<bool> {
    match fs::remove_file(path).await {
        Ok(()) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn upload_unknown() -> RegistryError {
    RegistryError::new(ErrorCode::BlobUploadUnknown, "upload session unknown")
}

/// Writes a request body to `file`, hashing as it goes; fails once more than
/// `limit` bytes (counting `already`) would be stored. Returns bytes written.
async fn write_stream<S, E>(
    file: &mut fs::File,
    mut stream: S,
    mut hasher: Option<&mut Sha256>,
    already: u64,
    limit: u64,
) -> Result<u64>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut written = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            RegistryError::new(
                ErrorCode::BlobUploadInvalid,
                format!("reading body failed: {e}"),
            )
        })?;
        written += chunk.len() as u64;
        if already + written > limit {
            return Err(
                RegistryError::new(ErrorCode::SizeInvalid, "blob exceeds the size limit")
                    .with_status(axum::http::StatusCode::PAYLOAD_TOO_LARGE),
            );
        }
        if let Some(h) = hasher.as_deref_mut() {
            h.update(&chunk);
        }
        file.write_all(&chunk).await?;
    }
    file.flush().await?;
    Ok(written)
}

impl Storage {
    /// Opens (creating) a store under `root`. Fails when another process has it open: two
    /// would clear each other's temporary files and collect each other's fresh blobs.
    pub async fn new(root: PathBuf, max_blob_size: u64) -> std::io::Result<Self> {
        fs::create_dir_all(&root).await?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(root.join("lock"))?;
        if let Err(err) = lock.try_lock() {
            return Err(std::io::Error::new(
                ErrorKind::WouldBlock,
                format!(
                    "the registry storage {} is in use by another kiln process ({err}); stop \
                     it first, or let it do the work (kiln serve collects garbage itself)",
                    root.display()
                ),
            ));
        }
        // Temporary files left by writes a crash interrupted: nothing refers to them, since a
        // file becomes visible only by its final rename. One process owns this directory.
        match fs::remove_dir_all(root.join("tmp")).await {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
            _ => {}
        }
        for d in ["blobs/sha256", "repositories", "uploads", "tmp"] {
            fs::create_dir_all(root.join(d)).await?;
        }
        let owners = open_sessions(&root.join("uploads")).await?;
        Ok(Self {
            root,
            max_blob_size,
            hashers: Mutex::default(),
            owners: Mutex::new(owners),
            guard: tokio::sync::RwLock::new(()),
            touched: Mutex::new(None),
            changes: (0..CHANGE_STRIPES).map(|_| AtomicU64::new(0)).collect(),
            _lock: lock,
        })
    }

    /// How often what `name`'s tags resolve to may have changed so far. Read it before looking
    /// a tag up: an answer remembered from that look-up holds while this stays the same, since
    /// every change counts up only after it is on disk.
    pub fn repository_changes(&self, name: &str) -> u64 {
        self.changes[change_stripe(name)].load(Ordering::Acquire)
    }

    /// Counts a change to `name`'s tags, manifests or links, once it is on disk.
    pub(super) fn count_change(&self, name: &str) {
        self.changes[change_stripe(name)].fetch_add(1, Ordering::AcqRel);
    }

    /// The directory everything lives under.
    pub(super) fn root(&self) -> &Path {
        &self.root
    }

    /// Shared by writers that make blobs referenced; exclusive for the collector's deletions.
    pub(super) fn guard(&self) -> &tokio::sync::RwLock<()> {
        &self.guard
    }

    /// Notes that `digests` were just made referenced, for a collection that is running.
    pub(super) fn touch<'a>(&self, digests: impl IntoIterator<Item = &'a Digest>) {
        let mut touched = self.touched.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(set) = touched.as_mut() {
            set.extend(digests.into_iter().cloned());
        }
    }

    /// Starts (`true`) or ends (`false`) noting touched digests; ending returns them.
    pub(super) fn watch_touches(&self, on: bool) -> HashSet<Digest> {
        let mut touched = self.touched.lock().unwrap_or_else(|e| e.into_inner());
        let seen = touched.take().unwrap_or_default();
        if on {
            *touched = Some(HashSet::new());
        }
        seen
    }

    /// The digests touched since [`Self::watch_touches`] started, without ending it.
    pub(super) fn touched(&self) -> HashSet<Digest> {
        let touched = self.touched.lock().unwrap_or_else(|e| e.into_inner());
        touched.clone().unwrap_or_default()
    }

    pub(super) fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root
            .join("blobs/sha256")
            .join(&d.hex()[..2])
            .join(d.hex())
    }
    pub(super) fn repo(&self, name: &str) -> PathBuf {
        self.root.join("repositories").join(name)
    }
    pub(super) fn link_path(&self, name: &str, d: &Digest) -> PathBuf {
        self.repo(name).join("_links").join(d.hex())
    }
    pub(super) fn manifest_path(&self, name: &str, d: &Digest) -> PathBuf {
        self.repo(name).join("_manifests").join(d.hex())
    }
    pub(super) fn tag_path(&self, name: &str, tag: &str) -> PathBuf {
        self.repo(name).join("_tags").join(tag)
    }
    pub(super) fn referrers_dir(&self, name: &str, subject: &Digest) -> PathBuf {
        self.repo(name).join("_referrers").join(subject.hex())
    }
    fn upload_data(&self, id: &str) -> PathBuf {
        self.root.join("uploads").join(id)
    }
    fn upload_meta(&self, id: &str) -> PathBuf {
        self.root.join("uploads").join(format!("{id}.json"))
    }
    pub(super) fn tmp_path(&self) -> PathBuf {
        self.root.join("tmp").join(uuid::Uuid::new_v4().to_string())
    }

    /// Renames `from` to `to`, creating `to`'s directory.
    async fn commit(&self, from: &Path, to: &Path) -> Result<()> {
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent).await?;
        }
        fs::rename(from, to).await?;
        Ok(())
    }

    /// Writes `bytes` to `path` atomically (temp file, fsync, rename).
    pub(super) async fn atomic_write(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let tmp = self.tmp_path();
        let mut f = fs::File::create(&tmp).await?;
        let res = async {
            f.write_all(bytes).await?;
            f.sync_all().await?;
            drop(f);
            self.commit(&tmp, path).await
        }
        .await;
        if res.is_err() {
            let _ = fs::remove_file(&tmp).await;
        }
        res
    }

    /// Path and size of a blob linked into `name`, if any.
    pub async fn blob(&self, name: &str, d: &Digest) -> Result<Option<(PathBuf, u64)>> {
        if !self.is_linked(name, d).await {
            return Ok(None);
        }
        self.blob_file(d).await
    }

    /// Path and size of blob `d` whichever repositories link it, if it is stored at all. Blobs
    /// are named by their content, so anyone who knows the digest may read them without a
    /// repository (the `/blobs/sha256/…/data` download links).
    pub async fn blob_file(&self, d: &Digest) -> Result<Option<(PathBuf, u64)>> {
        let path = self.blob_path(d);
        match fs::metadata(&path).await {
            Ok(m) => Ok(Some((path, m.len()))),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether `name` references blob `d`.
    pub async fn is_linked(&self, name: &str, d: &Digest) -> bool {
        fs::try_exists(self.link_path(name, d))
            .await
            .unwrap_or(false)
    }

    /// Marks the link from `name` to blob `d` as just used, when it exists: a pusher that
    /// checked the blob is there (`HEAD`) and skips uploading it is about to reference it in a
    /// manifest, so the collector keeps it for another grace period.
    pub async fn refresh_link(&self, name: &str, d: &Digest) -> Result<()> {
        let _shared = self.guard.read().await;
        let link = self.link_path(name, d);
        self.touch([d]);
        let refreshed = tokio::task::spawn_blocking(move || {
            std::fs::File::options()
                .write(true)
                .open(link)
                .and_then(|file| file.set_modified(SystemTime::now()))
        })
        .await
        .map_err(|e| RegistryError::Internal(e.to_string()))?;
        match refreshed {
            Err(e) if !is_not_found(&e) => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Links blob `d` into `name`; the caller holds [`Self::guard`] shared.
    async fn link(&self, name: &str, d: &Digest) -> Result<()> {
        self.touch([d]);
        self.atomic_write(&self.link_path(name, d), b"").await
    }

    /// Removes the link from `name` to blob `d`; the data goes too unless another repository
    /// still links it, so that deleted content is not served by any route.
    pub async fn unlink_blob(&self, name: &str, d: &Digest) -> Result<()> {
        if remove_opt(&self.link_path(name, d)).await? {
            self.count_change(name);
            self.forget_blob(d).await?;
            Ok(())
        } else {
            Err(RegistryError::new(
                ErrorCode::BlobUnknown,
                format!("blob {d} unknown"),
            ))
        }
    }

    /// Deletes blob `d`'s data if no repository links it or holds it as a manifest any more.
    pub(super) async fn forget_blob(&self, d: &Digest) -> Result<()> {
        let _exclusive = self.guard.write().await;
        let root = self.root.clone();
        let hex = d.hex().to_owned();
        let used = tokio::task::spawn_blocking(move || {
            super::gc::repositories(&root.join("repositories"))
                .into_iter()
                .any(|repo| {
                    repo.join("_links").join(&hex).exists()
                        || repo.join("_manifests").join(&hex).exists()
                })
        })
        .await
        .map_err(|e| RegistryError::Internal(e.to_string()))?;
        if !used {
            remove_opt(&self.blob_path(d)).await?;
        }
        Ok(())
    }

    /// Moves a verified, fsynced file into the blob store and links it.
    async fn publish_blob(&self, name: &str, file: &Path, d: &Digest) -> Result<()> {
        let _shared = self.guard.read().await;
        let dest = self.blob_path(d);
        if fs::try_exists(&dest).await.unwrap_or(false) {
            let _ = fs::remove_file(file).await;
        } else {
            self.commit(file, &dest).await?;
        }
        self.link(name, d).await
    }

    /// Links a blob of repository `from` into `to`; false if `from` lacks it.
    pub async fn mount(&self, from: &str, to: &str, d: &Digest) -> Result<bool> {
        let _shared = self.guard.read().await;
        if self.blob(from, d).await?.is_none() {
            return Ok(false);
        }
        self.link(to, d).await?;
        Ok(true)
    }

    /// Single-request upload: streams to a temp file, verifies, publishes.
    pub async fn put_blob<S, E>(&self, name: &str, expected: &Digest, stream: S) -> Result<()>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let tmp = self.tmp_path();
        let res = async {
            let mut f = fs::File::create(&tmp).await?;
            let mut h = Sha256::new();
            write_stream(&mut f, stream, Some(&mut h), 0, self.max_blob_size).await?;
            f.sync_all().await?;
            drop(f);
            if sha256_hex(h) != expected.hex() {
                return Err(RegistryError::new(
                    ErrorCode::DigestInvalid,
                    "digest does not match content",
                ));
            }
            self.publish_blob(name, &tmp, expected).await
        }
        .await;
        if res.is_err() {
            let _ = fs::remove_file(&tmp).await;
        }
        res
    }

    /// Starts an upload session for `name`; returns its id. With `owner`, `(user, cap)`, the
    /// session counts against the user's open sessions, and a user holding `cap` already is
    /// refused with TOOMANYREQUESTS.
    pub async fn start_upload(&self, name: &str, owner: Option<(&str, usize)>) -> Result<String> {
        let id = uuid::Uuid::new_v4().hyphenated().to_string();
        if let Some((user, cap)) = owner {
            let mut owners = self.lock_owners();
            let open = owners.values().filter(|o| *o == user).count();
            if open >= cap {
                return Err(RegistryError::new(
                    ErrorCode::TooManyRequests,
                    format!(
                        "user {user} has {open} upload sessions open, the most one user may \
                         hold (embedded_registry.max_upload_sessions); finish or cancel \
                         (DELETE) one first, or wait until idle ones expire"
                    ),
                ));
            }
            owners.insert(id.clone(), user.to_owned());
        }
        let started = async {
            fs::File::create(self.upload_data(&id)).await?;
            let meta = UploadMeta {
                name: name.to_owned(),
                started: now_secs(),
                owner: owner.map(|(user, _)| user.to_owned()),
            };
            let json =
                serde_json::to_vec(&meta).map_err(|e| RegistryError::Internal(e.to_string()))?;
            self.atomic_write(&self.upload_meta(&id), &json).await
        }
        .await;
        if let Err(err) = started {
            self.lock_owners().remove(&id);
            let _ = remove_opt(&self.upload_data(&id)).await;
            return Err(err);
        }
        self.lock_hashers().insert(id.clone(), (0, Sha256::new()));
        Ok(id)
    }

    fn lock_owners(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.owners.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_hashers(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, Sha256)>> {
        self.hashers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Current offset (bytes received) of session `id` of repository `name`.
    pub async fn upload_offset(&self, name: &str, id: &str) -> Result<u64> {
        let meta = read_opt(&self.upload_meta(id))
            .await?
            .ok_or_else(upload_unknown)?;
        let meta: UploadMeta = serde_json::from_slice(&meta).map_err(|_| upload_unknown())?;
        if meta.name != name {
            return Err(upload_unknown());
        }
        match fs::metadata(self.upload_data(id)).await {
            Ok(m) => Ok(m.len()),
            Err(e) if is_not_found(&e) => Err(upload_unknown()),
            Err(e) => Err(e.into()),
        }
    }

    /// Appends a chunk. `start` (from Content-Range) must equal the current
    /// offset, else 416; `len` is the announced chunk length. Returns the new offset.
    pub async fn append_upload<S, E>(
        &self,
        name: &str,
        id: &str,
        start: Option<u64>,
        len: Option<u64>,
        stream: S,
    ) -> Result<u64>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let offset = self.upload_offset(name, id).await?;
        if start.is_some_and(|s| s != offset) {
            return Err(
                RegistryError::new(ErrorCode::BlobUploadInvalid, "chunk out of order")
                    .with_status(axum::http::StatusCode::RANGE_NOT_SATISFIABLE),
            );
        }
        let mut hasher = self
            .lock_hashers()
            .remove(id)
            .filter(|(o, _)| *o == offset)
            .map(|(_, h)| h);
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(self.upload_data(id))
            .await?;
        let res = write_stream(&mut f, stream, hasher.as_mut(), offset, self.max_blob_size).await;
        let res = match res {
            Ok(n) if len.is_some_and(|l| l != n) => Err(RegistryError::new(
                ErrorCode::BlobUploadInvalid,
                "chunk length does not match Content-Range",
            )),
            other => other,
        };
        match res {
            Ok(n) => {
                if let Some(h) = hasher {
                    self.lock_hashers().insert(id.to_owned(), (offset + n, h));
                }
                Ok(offset + n)
            }
            Err(e) => {
                // Roll back to the last good offset; the running hash is lost.
                f.set_len(offset).await?;
                Err(e)
            }
        }
    }

    /// Appends a final chunk, verifies the digest over all data and publishes
    /// the blob. On mismatch the session is discarded and nothing is visible.
    pub async fn finish_upload<S, E>(
        &self,
        name: &str,
        id: &str,
        d: &Digest,
        stream: S,
    ) -> Result<()>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let offset = self.append_upload(name, id, None, None, stream).await?;
        let data = self.upload_data(id);
        let cached = self.lock_hashers().remove(id).filter(|(o, _)| *o == offset);
        let actual = match cached {
            Some((_, h)) => sha256_hex(h),
            None => {
                let mut f = fs::File::open(&data).await?;
                let mut h = Sha256::new();
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    let n = f.read(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
                sha256_hex(h)
            }
        };
        if actual != d.hex() {
            self.cancel_upload(name, id).await?;
            return Err(RegistryError::new(
                ErrorCode::DigestInvalid,
                "digest does not match uploaded content",
            ));
        }
        fs::File::open(&data).await?.sync_all().await?;
        self.publish_blob(name, &data, d).await?;
        remove_opt(&self.upload_meta(id)).await?;
        self.lock_owners().remove(id);
        Ok(())
    }

    /// Discards an upload session.
    pub async fn cancel_upload(&self, name: &str, id: &str) -> Result<()> {
        self.upload_offset(name, id).await?;
        self.lock_hashers().remove(id);
        self.lock_owners().remove(id);
        remove_opt(&self.upload_data(id)).await?;
        remove_opt(&self.upload_meta(id)).await?;
        Ok(())
    }

    /// Removes upload sessions (and stray temp files) older than `ttl`.
    /// Returns how many upload sessions were removed and the bytes they held.
    pub async fn cleanup_expired_uploads(&self, ttl: Duration) -> Result<(usize, u64)> {
        let now = now_secs();
        let mut removed = 0;
        let mut bytes = 0;
        let mut dir = fs::read_dir(self.root.join("uploads")).await?;
        while let Some(entry) = dir.next_entry().await? {
            let file_name = entry.file_name();
            let Some(id) = file_name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            let started = match read_opt(&entry.path()).await? {
                Some(b) => serde_json::from_slice::<UploadMeta>(&b).map_or(0, |m| m.started),
                None => continue,
            };
            if now.saturating_sub(started) >= ttl.as_secs() {
                self.lock_hashers().remove(id);
                self.lock_owners().remove(id);
                if let Ok(meta) = fs::metadata(self.upload_data(id)).await {
                    bytes += meta.len();
                }
                remove_opt(&self.upload_data(id)).await?;
                remove_opt(&entry.path()).await?;
                removed += 1;
            }
        }
        let mut tmp = fs::read_dir(self.root.join("tmp")).await?;
        while let Some(entry) = tmp.next_entry().await? {
            let old = entry
                .metadata()
                .await
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= ttl);
            if old {
                remove_opt(&entry.path()).await?;
            }
        }
        Ok((removed, bytes))
    }
}

/// The open upload sessions under `uploads` that have an owner: session id → owner.
async fn open_sessions(uploads: &Path) -> std::io::Result<HashMap<String, String>> {
    let mut owners = HashMap::new();
    let mut dir = match fs::read_dir(uploads).await {
        Ok(dir) => dir,
        Err(e) if is_not_found(&e) => return Ok(owners),
        Err(e) => return Err(e),
    };
    while let Some(entry) = dir.next_entry().await? {
        let file_name = entry.file_name();
        let Some(id) = file_name.to_str().and_then(|n| n.strip_suffix(".json")) else {
            continue;
        };
        let meta = fs::read(entry.path()).await.ok();
        if let Some(owner) = meta
            .and_then(|b| serde_json::from_slice::<UploadMeta>(&b).ok())
            .and_then(|m| m.owner)
        {
            owners.insert(id.to_owned(), owner);
        }
    }
    Ok(owners)
}

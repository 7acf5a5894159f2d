//! Plain values the store takes and gives back; no database types leak out.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::spec::{self, BuildJob, BuildKind, Format, ImageName, Platform};

/// Where a build is in its life. `Done` is terminal; whether it worked is
/// [`BuildRecord::succeeded`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum BuildStatus {
    Pending,
    Building,
    Done,
}

impl BuildStatus {
    /// The spelling used in the database and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Building => "BUILDING",
            Self::Done => "DONE",
        }
    }
}

impl fmt::Display for BuildStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status string that is none of `PENDING`, `BUILDING` or `DONE`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a build status (PENDING, BUILDING or DONE)")]
pub struct UnknownStatus(pub String);

impl FromStr for BuildStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "PENDING" => Ok(Self::Pending),
            "BUILDING" => Ok(Self::Building),
            "DONE" => Ok(Self::Done),
            other => Err(UnknownStatus(other.to_owned())),
        }
    }
}

/// A build to queue, already canonicalised, keyed and named by the caller (`plan`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBuild {
    /// What tells the build apart from every other: builds of one key share an image.
    pub key: spec::ImageKey,
    /// Where the build pushes its image.
    pub image: ImageName,
    /// What the build does.
    pub job: BuildJob,
    /// The recipe shown with the build: the Dockerfile or definition generated for a package
    /// request, or the user's Dockerfile or definition file (which those jobs build).
    pub containerfile: String,
    /// The conda environment generated for a package request; empty for the other kinds.
    pub environment: String,
}

/// Who submitted a build: what cancelling and the caps on queued builds go by.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Submitter {
    /// sha256 (lowercase hex) of the token the request came with; `None` without one.
    pub token_hash: Option<String>,
    /// The client's IP address, when known.
    pub address: Option<String>,
}

/// One pushed image, per platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageOutput {
    pub platform: String,
    /// The manifest digest.
    pub digest: String,
    /// Bytes a pull downloads (for a SIF, the file's size).
    pub size: u64,
    /// Where the file downloads over plain HTTP(S), for SIFs (`singularity pull https://…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download_url: Option<String>,
}

/// One attempt at building a key, as stored. Its JSON (the build API's answer) spells the job
/// out as `format`, `platforms` and `request` (the job's JSON text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "RecordJson")]
pub struct BuildRecord {
    /// `bd-<first 16 hex of key>_<attempt>`, see [`build_id`].
    pub id: String,
    pub key: spec::ImageKey,
    /// Counts from 1 per key.
    pub attempt: u32,
    pub image: ImageName,
    pub job: BuildJob,
    /// See [`NewBuild::containerfile`].
    pub containerfile: String,
    pub environment: String,
    pub status: BuildStatus,
    /// `None` until the build is done.
    pub succeeded: Option<bool>,
    /// Why a failed build failed.
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Conda explicit lock text of the solved environment.
    pub lock: Option<String>,
    /// Manifest or index digest of the pushed image.
    pub digest: Option<String>,
    pub outputs: Vec<ImageOutput>,
    /// How often a worker has taken the build; more than one means earlier workers stopped
    /// (a crash, a lost lease). Internal, not shown.
    #[serde(skip)]
    pub claims: u32,
}

impl BuildRecord {
    /// The format of the image it makes.
    pub fn format(&self) -> Format {
        self.job.format()
    }

    /// The platforms it builds for.
    pub fn platforms(&self) -> Vec<Platform> {
        self.job.platforms()
    }
}

/// [`BuildRecord`] as the API has always shown it.
#[derive(Serialize)]
struct RecordJson {
    id: String,
    key: spec::ImageKey,
    attempt: u32,
    image: ImageName,
    format: Format,
    platforms: Vec<Platform>,
    request: String,
    containerfile: String,
    environment: String,
    status: BuildStatus,
    succeeded: Option<bool>,
    reason: Option<String>,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    lock: Option<String>,
    digest: Option<String>,
    outputs: Vec<ImageOutput>,
}

impl From<BuildRecord> for RecordJson {
    fn from(record: BuildRecord) -> Self {
        RecordJson {
            format: record.format(),
            platforms: record.platforms(),
            request: record.job.to_json(),
            id: record.id,
            key: record.key,
            attempt: record.attempt,
            image: record.image,
            containerfile: record.containerfile,
            environment: record.environment,
            status: record.status,
            succeeded: record.succeeded,
            reason: record.reason,
            created_at: record.created_at,
            started_at: record.started_at,
            finished_at: record.finished_at,
            lock: record.lock,
            digest: record.digest,
            outputs: record.outputs,
        }
    }
}

/// A client's request for a container (Wave's `POST /v1alpha2/container`), kept so its status
/// can be polled by id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRequest {
    /// 12 lowercase hex characters.
    pub id: String,
    /// The build that makes the image; `None` for an image that needed no build.
    pub build_id: Option<String>,
    /// The image the client is told to use.
    pub target_image: String,
    /// The image behind it (the build target, or the image passed through).
    pub container_image: String,
    /// `docker` or `sif`.
    pub format: String,
    /// Whether the image existed when the request came.
    pub cached: bool,
    /// Echo of the client's `freeze`.
    pub freeze: bool,
    pub created_at: DateTime<Utc>,
}

/// How a build ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BuildOutcome {
    Succeeded {
        digest: String,
        outputs: Vec<ImageOutput>,
        lock: Option<String>,
    },
    Failed {
        reason: String,
    },
}

/// What [`submit`](super::Store::submit) did: `created` is false when an
/// unfinished build for the same key was joined instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Submitted {
    pub build: BuildRecord,
    pub created: bool,
}

/// One page of log text from some offset: at most about [`LOG_PAGE`] bytes (or one longer
/// chunk). Read on from `next_offset`; an empty page means the log has no more yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogSlice {
    pub text: String,
    /// Where the next page starts: the end of `text`, or the log's length when it is empty.
    pub next_offset: u64,
}

/// The size a log page stops growing at; readers never hold a whole log.
pub const LOG_PAGE: usize = 64 << 10;

/// A level of the Singularity library, `library://entity/collection/container`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LibraryLevel {
    Entity,
    Collection,
    Container,
}

impl LibraryLevel {
    /// The word used in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Entity => "entity",
            Self::Collection => "collection",
            Self::Container => "container",
        }
    }
}

impl fmt::Display for LibraryLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An entity, a collection or a container of the library.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LibraryItem {
    /// 24 lowercase hex characters.
    pub id: String,
    /// Unique within its parent (entities: unique).
    pub name: String,
    pub description: String,
    /// The user who created it.
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

/// An item with the items above it: an entity alone, a collection with its entity, or a
/// container with its collection and entity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LibraryPath {
    pub entity: LibraryItem,
    pub collection: Option<LibraryItem>,
    /// Only when `collection` is there too.
    pub container: Option<LibraryItem>,
}

impl LibraryPath {
    /// The item this path leads to: the deepest one.
    pub fn item(&self) -> &LibraryItem {
        self.container
            .as_ref()
            .or(self.collection.as_ref())
            .unwrap_or(&self.entity)
    }

    /// The level of [`item`](Self::item).
    pub fn level(&self) -> LibraryLevel {
        match (&self.collection, &self.container) {
            (_, Some(_)) => LibraryLevel::Container,
            (Some(_), None) => LibraryLevel::Collection,
            (None, None) => LibraryLevel::Entity,
        }
    }
}

/// How to find a library item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LibraryKey<'a> {
    /// By names from the entity down: one name is an entity, two a collection, three a
    /// container.
    Names(&'a [&'a str]),
    /// By id, at a level.
    Id(LibraryLevel, &'a str),
}

/// A SIF file of a library container, known by the sha256 of its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LibraryImage {
    /// 24 lowercase hex characters.
    pub id: String,
    pub container_id: String,
    /// 64 lowercase hex characters: the sha256 of the file.
    pub hash: String,
    pub description: String,
    /// The architecture in the uploaded file's header (`amd64`, `arm64`); `None` until the
    /// file is uploaded.
    pub arch: Option<String>,
    /// Bytes of the uploaded file.
    pub size: Option<u64>,
    /// When the file was uploaded; `None` while the image is only announced.
    pub uploaded_at: Option<DateTime<Utc>>,
    /// sha256 (hex) of the secret in the upload URL handed out last, until the file is in.
    pub upload_secret: Option<String>,
    /// The user who created it.
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

impl LibraryImage {
    /// Whether the file is in.
    pub fn uploaded(&self) -> bool {
        self.uploaded_at.is_some()
    }
}

/// How to find a library image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKey<'a> {
    /// By its id.
    Id(&'a str),
    /// By the hash of its file, within a container.
    Hash {
        container_id: &'a str,
        hash: &'a str,
    },
}

/// `container:tag` for one architecture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchTag {
    pub container_id: String,
    pub arch: String,
    pub tag: String,
    pub image_id: String,
    /// When the tag was last pointed at an image.
    pub updated_at: DateTime<Utc>,
}

/// A package's own layer in kiln's layer cache, reused by every image that has the package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageLayer {
    /// sha256 (lowercase hex) of what determines the layer's bytes.
    pub key: String,
    /// `sha256:<hex>` of the gzip blob.
    pub digest: String,
    /// `sha256:<hex>` of the uncompressed tar.
    pub diff_id: String,
    /// Size of the gzip blob in bytes.
    pub size: u64,
    /// Size of the uncompressed tar in bytes.
    pub uncompressed_size: u64,
    /// The `.dist-info`/`.egg-info` paths it installs, relative to its prefix: what pip
    /// finds installed, known without installing the package again.
    pub python_metadata: Vec<String>,
    /// The license a wheel's METADATA declares.
    pub license: Option<String>,
}

/// What happened to a build (by its id), told to every process watching the store, so that
/// workers, waiters and log followers wake at once instead of polling the database.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BuildEvent {
    /// A new build (not a joined one) waits to be claimed.
    Submitted(String),
    /// Text was appended to the build's log.
    Log(String),
    /// The build is done: built, failed or cancelled.
    Finished(String),
}

impl BuildEvent {
    /// The id of the build it is about.
    pub fn build_id(&self) -> &str {
        match self {
            Self::Submitted(id) | Self::Log(id) | Self::Finished(id) => id,
        }
    }
}

/// A client's daily allowance of new builds, charged by
/// [`submit_charged`](super::Store::submit_charged) in the transaction that creates the build,
/// so every kiln process on one database counts against the same allowance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowance {
    /// Whose allowance: an anonymous client's address, a library user's name (callers prefix
    /// them so the two never collide).
    pub client: String,
    /// New builds per 24 hours; `0` allows any number.
    pub per_day: u32,
}

/// Which builds a worker takes: of these kinds, and only those whose platforms are all among
/// these (an arm64 build needs an arm64 host, or qemu on this one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerScope {
    pub kinds: Vec<BuildKind>,
    /// Empty: any platform.
    pub platforms: Vec<Platform>,
}

impl WorkerScope {
    /// Every kind on every platform.
    pub fn any() -> Self {
        Self::of_kinds(&BuildKind::ALL)
    }

    /// Builds of `kinds` on every platform.
    pub fn of_kinds(kinds: &[BuildKind]) -> Self {
        WorkerScope {
            kinds: kinds.to_vec(),
            platforms: Vec::new(),
        }
    }

    /// Whether a worker of this scope takes `build` (what the store's claim checks in SQL).
    pub fn takes(&self, build: &BuildRecord) -> bool {
        self.kinds.contains(&build.job.kind())
            && (self.platforms.is_empty()
                || build.platforms().iter().all(|p| self.platforms.contains(p)))
    }

    /// The platforms a worker of this scope does not build for: a build naming any of them is
    /// not for it. Empty when it takes any.
    pub fn refused_platforms(&self) -> Vec<Platform> {
        if self.platforms.is_empty() {
            return Vec::new();
        }
        Platform::ALL
            .into_iter()
            .filter(|p| !self.platforms.contains(p))
            .collect()
    }
}

/// How the `platforms` column spells a build's platforms: sorted, comma joined
/// (`linux/amd64,linux/arm64`), so a claim can match them with `LIKE` in any SQL database.
pub fn platforms_column(platforms: &[Platform]) -> String {
    let mut names: Vec<&str> = platforms.iter().map(|p| p.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    names.join(",")
}

/// The `LIKE` pattern matching a `platforms` column (wrapped in commas: `',' || platforms ||
/// ','`) that names `platform`.
pub fn platform_pattern(platform: Platform) -> String {
    format!("%,{},%", platform.as_str())
}

/// Ids show at a glance which key a build is for and which try it is.
pub fn build_id(key: &str, attempt: u32) -> String {
    let prefix = key.get(..16).unwrap_or(key);
    format!("bd-{prefix}_{attempt}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips_through_text() {
        for status in [
            BuildStatus::Pending,
            BuildStatus::Building,
            BuildStatus::Done,
        ] {
            assert_eq!(status.to_string().parse::<BuildStatus>(), Ok(status));
        }
        assert_eq!(
            "done".parse::<BuildStatus>(),
            Err(UnknownStatus("done".into()))
        );
    }

    /// The build API answers with the record's JSON: the job is spelled out as it always was.
    #[test]
    fn records_show_their_job_as_format_platforms_and_request() {
        let new = crate::store::contract::request(&"ab".repeat(32));
        let record = BuildRecord {
            id: build_id(new.key.as_str(), 1),
            key: new.key.clone(),
            attempt: 1,
            image: new.image.clone(),
            job: new.job.clone(),
            containerfile: new.containerfile.clone(),
            environment: new.environment.clone(),
            status: BuildStatus::Pending,
            succeeded: None,
            reason: None,
            created_at: DateTime::from_timestamp(1_800_000_000, 0).expect("a time"),
            started_at: None,
            finished_at: None,
            lock: None,
            digest: None,
            outputs: vec![],
            claims: 2,
        };
        let json = serde_json::to_value(&record).expect("serializes");
        assert_eq!(json["key"], "ab".repeat(32));
        assert_eq!(json["image"], "registry.example/kiln/app:1");
        assert_eq!(json["format"], "docker");
        assert_eq!(
            json["platforms"],
            serde_json::json!(["linux/amd64", "linux/arm64"])
        );
        assert_eq!(json["request"], new.job.to_json());
        assert_eq!(json["status"], "PENDING");
        assert!(json.get("job").is_none() && json.get("claims").is_none());
    }

    #[test]
    fn ids_name_the_key_and_the_attempt() {
        let key = "0123456789abcdef".repeat(4);
        assert_eq!(build_id(&key, 3), "bd-0123456789abcdef_3");
    }
}

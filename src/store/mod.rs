//! kiln's durable state — builds and their logs, container requests, library accounts and the
//! library's entities, collections, containers, images and tags — behind one [`Store`] trait,
//! so the rest of kiln never sees SQL. SQLite for one machine, PostgreSQL for several nodes
//! sharing one database ([`open`] picks by URL); this module depends on nothing else in kiln
//! but the pure `spec`, whose typed jobs, keys and names it keeps.

mod model;
mod postgres;
mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub use model::{
    Allowance, ArchTag, BuildEvent, BuildOutcome, BuildRecord, BuildStatus, ContainerRequest,
    ImageKey, ImageOutput, LOG_PAGE, LibraryImage, LibraryItem, LibraryKey, LibraryLevel,
    LibraryPath, LogSlice, NewBuild, PackageLayer, Submitted, Submitter, UnknownStatus,
    WorkerScope, build_id, platform_pattern, platforms_column,
};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// Opens the store `url` names: `sqlite://<path>` (a file; `sqlite:///var/lib/kiln/kiln.db`
/// is absolute, `sqlite://./kiln-data/kiln.db` relative) or `postgres://…`/`postgresql://…`
/// (a database that must exist; libpq's URL form).
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        return Ok(Arc::new(
            SqliteStore::open(std::path::Path::new(path)).await?,
        ));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Arc::new(PostgresStore::open(url).await?));
    }
    // Only the scheme is named: the rest may hold a password.
    let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
    Err(StoreError::UnsupportedUrl {
        scheme: scheme.to_owned(),
    })
}

/// Why a store call failed. Each message names the input it is about.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the database URL's scheme {scheme:?} is not one kiln knows; set database_url \
         (KILN_DATABASE_URL) to sqlite://<path> or postgres://user:password@host/database"
    )]
    UnsupportedUrl { scheme: String },
    #[error("there is no build {id:?}")]
    BuildNotFound { id: String },
    #[error("build {id:?} cannot go from {from} to {to}")]
    IllegalTransition {
        id: String,
        from: BuildStatus,
        to: BuildStatus,
    },
    #[error("build {id:?} is no longer leased to worker {worker:?}")]
    LeaseLost { id: String, worker: String },
    #[error("the database failed")]
    Database(#[from] sqlx::Error),
    #[error("the database schema could not be migrated")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("build {id:?} is stored in a form that cannot be read: {detail}")]
    Corrupt { id: String, detail: String },
    #[error("there is no library {level} with id {id:?}")]
    LibraryItemNotFound { level: LibraryLevel, id: String },
    #[error("there is no library image with id {id:?}")]
    ImageNotFound { id: String },
    #[error("a library {level} has no parent; a collection or container needs one")]
    LibraryParentMissing { level: LibraryLevel },
    #[error("{client} has started all the builds its daily allowance holds")]
    AllowanceSpent {
        client: String,
        /// How long until the oldest charge in the last 24 hours expires.
        retry_after: Duration,
    },
}

/// Builds and logs, shared by every kiln process pointed at one database.
#[async_trait]
pub trait Store: Send + Sync {
    /// Joins the unfinished build for `new.key` if there is one (single
    /// flight, also across processes); otherwise starts the next attempt.
    async fn submit(&self, new: NewBuild) -> Result<Submitted, StoreError> {
        self.submit_as(new, &Submitter::default()).await
    }

    /// [`submit`](Self::submit), recording `by` with a new build (a joined build keeps its
    /// first submitter).
    async fn submit_as(&self, new: NewBuild, by: &Submitter) -> Result<Submitted, StoreError> {
        self.submit_charged(new, by, None).await
    }

    /// [`submit_as`](Self::submit_as), charging a build it *creates* to `allowance` in the same
    /// transaction (joining an unfinished build is free). With the allowance's last 24 hours
    /// spent, nothing is created and the answer is [`StoreError::AllowanceSpent`]. Atomic
    /// across processes: racing submitters never overdraw an allowance.
    async fn submit_charged(
        &self,
        new: NewBuild,
        by: &Submitter,
        allowance: Option<&Allowance>,
    ) -> Result<Submitted, StoreError>;

    /// What happens to builds from now on — new builds, log appends, finished builds — as
    /// told by every process using this database that the backend can hear (SQLite: this
    /// process; PostgreSQL: all, by `LISTEN/NOTIFY`). A receiver that lags misses events
    /// (`RecvError::Lagged`) and should read the store again.
    fn events(&self) -> tokio::sync::broadcast::Receiver<BuildEvent>;

    /// The repository a layer blob (`sha256:…`) was first pushed to, to mount it from there.
    async fn layer_home(&self, digest: &str) -> Result<Option<String>, StoreError>;

    /// Records `repository` as where layer `digest` lives (replacing what was recorded).
    async fn set_layer_home(&self, digest: &str, repository: &str) -> Result<(), StoreError>;

    /// Who submitted build `id` (`None`: there is no such build).
    async fn submitter(&self, id: &str) -> Result<Option<Submitter>, StoreError>;

    /// How many builds wait to be claimed: all of them, and those submitted from `address`.
    async fn queued_builds(&self, address: Option<&str>) -> Result<(u64, u64), StoreError>;

    /// Deletes container requests recorded before `before`; returns how many.
    async fn prune_requests(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;

    /// Deletes the logs of builds that finished before `before`; returns how many builds'.
    async fn prune_logs(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;

    /// The build with this id, if there is one.
    async fn build(&self, id: &str) -> Result<Option<BuildRecord>, StoreError>;

    /// Succeeds when the database answers and takes a write; for health checks.
    async fn ping(&self) -> Result<(), StoreError>;

    /// The highest attempt for `key`, finished or not.
    async fn latest_for_key(&self, key: &str) -> Result<Option<BuildRecord>, StoreError>;

    /// Takes the oldest PENDING build `scope` covers (one of its kinds, all of the build's
    /// platforms among its platforms), or such a BUILDING one whose lease ran out (its worker
    /// crashed), and makes it BUILDING for `worker` until `now + lease`, counting the claim in
    /// [`BuildRecord::claims`]. Concurrent claimers, in any process, never get the same build;
    /// `None` when there is nothing to do.
    async fn claim_next(
        &self,
        worker: &str,
        scope: &WorkerScope,
        lease: Duration,
    ) -> Result<Option<BuildRecord>, StoreError>;

    /// Extends `worker`'s lease on build `id` to `now + lease`; the heartbeat
    /// of a running build. [`StoreError::LeaseLost`] when the build is done
    /// or another worker has claimed it since.
    async fn renew_lease(&self, id: &str, worker: &str, lease: Duration) -> Result<(), StoreError>;

    /// → DONE. Success only from BUILDING; failure from PENDING or BUILDING.
    async fn finish(&self, id: &str, outcome: BuildOutcome) -> Result<BuildRecord, StoreError>;

    /// Appends to the build's log and returns its new length in bytes.
    async fn append_log(&self, id: &str, chunk: &str) -> Result<u64, StoreError>;

    /// One page of the log from byte `offset` on (see [`LogSlice`]). An offset
    /// inside a character is rounded down to its start; one past the end gives
    /// empty text.
    async fn read_log(&self, id: &str, offset: u64) -> Result<LogSlice, StoreError>;

    /// Records a container request; one with the id of a recorded one (the same client asking
    /// for the same thing again) only renews that one's time, so repeated requests add no rows.
    async fn add_request(&self, request: &ContainerRequest) -> Result<(), StoreError>;

    /// The container request with this id, if there is one.
    async fn request(&self, id: &str) -> Result<Option<ContainerRequest>, StoreError>;

    /// Takes the user name `name` for whoever asks first: true when it was free and is now
    /// held, false when someone holds it already. Atomic, also across processes.
    async fn claim_user(&self, name: &str, at: DateTime<Utc>) -> Result<bool, StoreError>;

    /// Records a token of `user` by its `hash` (sha256, hex); the user is claimed on the way
    /// if nobody held the name yet.
    async fn add_token(&self, hash: &str, user: &str, at: DateTime<Utc>) -> Result<(), StoreError>;

    /// Whose token has this `hash`, if it is one.
    async fn token_user(&self, hash: &str) -> Result<Option<String>, StoreError>;

    /// The library item `key` names, with the items above it.
    async fn library_item(&self, key: LibraryKey<'_>) -> Result<Option<LibraryPath>, StoreError>;

    /// Creates `item` at `level` under the item with id `parent` (none for an entity), or,
    /// when its parent already has one of that name, gives that one back (so racing
    /// creators agree). [`StoreError::LibraryItemNotFound`] when the parent does not exist.
    async fn add_library_item(
        &self,
        level: LibraryLevel,
        parent: Option<&str>,
        item: &LibraryItem,
    ) -> Result<LibraryPath, StoreError>;

    /// Ids of what is directly inside the item `id` at `level`, oldest first: an entity's
    /// collections, a collection's containers, a container's images.
    async fn library_children(
        &self,
        level: LibraryLevel,
        id: &str,
    ) -> Result<Vec<String>, StoreError>;

    /// Announces `image` (its id, container, hash, description, creator and time are used),
    /// or, when its container already has an image with that hash, gives that one back.
    async fn add_library_image(&self, image: &LibraryImage) -> Result<LibraryImage, StoreError>;

    /// The library image `key` names, if there is one.
    async fn library_image(&self, key: ImageKey<'_>) -> Result<Option<LibraryImage>, StoreError>;

    /// Keeps `secret_hash` as the one upload URL secret of image `id` that is valid.
    async fn set_upload_secret(&self, id: &str, secret_hash: &str) -> Result<(), StoreError>;

    /// Marks image `id` uploaded: its file's architecture and size, the time; forgets its
    /// upload secret.
    async fn finish_upload(
        &self,
        id: &str,
        arch: &str,
        size: u64,
        at: DateTime<Utc>,
    ) -> Result<LibraryImage, StoreError>;

    /// Points `tag.tag` of container `tag.container_id` for `tag.arch` at `tag.image_id`.
    async fn set_library_tag(&self, tag: &ArchTag) -> Result<(), StoreError>;

    /// Every tag of container `container_id`, least recently set first.
    async fn library_tags(&self, container_id: &str) -> Result<Vec<ArchTag>, StoreError>;

    /// The package layer recorded under `key`, if any.
    async fn package_layer(&self, key: &str) -> Result<Option<PackageLayer>, StoreError>;

    /// Records `layer` under its key, replacing what was there (the same bytes, unless the
    /// layer cache lost its blob and it was made again).
    async fn add_package_layer(&self, layer: &PackageLayer) -> Result<(), StoreError>;
}

#[cfg(test)]
pub(crate) mod contract;

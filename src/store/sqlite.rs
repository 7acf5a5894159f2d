//! [`Store`] on one SQLite file, safe to share between processes.
//!
//! SQL here sticks to what PostgreSQL also accepts (`$n` parameters,
//! `RETURNING`, partial indexes) so the Postgres store can follow it closely.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, SubsecRound, TimeDelta, Utc};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlSafeStr};

use tokio::sync::broadcast;

use super::{
    Allowance, ArchTag, BuildEvent, BuildOutcome, BuildRecord, BuildStatus, ContainerRequest,
    ImageKey, LOG_PAGE, LibraryImage, LibraryItem, LibraryKey, LibraryLevel, LibraryPath, LogSlice,
    NewBuild, PackageLayer, Store, StoreError, Submitted, Submitter, WorkerScope, build_id,
    platform_pattern, platforms_column,
};
use crate::spec::{BuildJob, BuildKind, Platform};

/// How often `submit` re-reads after losing an insert race; one retry finds
/// the winner unless builds for the key finish as fast as they are created.
const SUBMIT_TRIES: usize = 3;

/// Events kept for receivers that have not read them yet; one that falls further behind is told
/// it lagged and reads the store instead.
const EVENT_BACKLOG: usize = 1024;

/// The window an [`Allowance`] covers.
const ALLOWANCE_WINDOW: TimeDelta = TimeDelta::days(1);

/// Builds and logs in a SQLite database; cheap to clone (shares one pool).
///
/// Statements with `RETURNING` are run to their end (`fetch_all`), never stopped at their first
/// row: the commit of such a statement happens after that row, and stopping early loses its
/// error — on a full disk (`SQLITE_FULL`) a rolled-back insert looked done, and the next write
/// that referred to it failed with "FOREIGN KEY constraint failed".
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// What [`Store::events`] hears: shared by every handle on the same file in this process
    /// (another process on the file cannot be told, and polls).
    events: broadcast::Sender<BuildEvent>,
}

impl SqliteStore {
    /// Opens (creating the file, not its directory) and migrates `path`. The file is created
    /// readable by kiln's user alone, and an existing one is made so (see [`restrict_modes`]).
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        restrict_modes(path).map_err(|err| StoreError::Database(sqlx::Error::Io(err)))?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // With WAL, NORMAL survives a crash of kiln (only a power loss may drop the last
            // commits) and spares every request an fsync: 2k → 13k inserts/s in the API bench.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        // Idle connections are recycled within a minute: one that met a read-only or full
        // database keeps failing until it is reopened.
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .idle_timeout(std::time::Duration::from_secs(60))
            .max_lifetime(std::time::Duration::from_secs(600))
            .connect_with(options)
            .await?;
        migrator().run(&pool).await?;
        Ok(Self {
            pool,
            events: event_channel(path),
        })
    }

    /// Tells this process's listeners about `event`; nobody listening is no error.
    fn announce(&self, event: BuildEvent) {
        let _ = self.events.send(event);
    }

    /// One try of [`Store::submit_charged`]: `Ok(None)` when another submitter's insert of the
    /// same key won the race.
    async fn try_submit(
        &self,
        new: &NewBuild,
        by: &Submitter,
        allowance: Option<&Allowance>,
    ) -> Result<Option<Submitted>, StoreError> {
        let key = new.key.as_str();
        let joined = |build| Submitted {
            build,
            created: false,
        };
        let created = |build| Submitted {
            build,
            created: true,
        };
        let Some(allowance) = allowance else {
            // Nothing to charge: short statements of their own, no lock held between them. The
            // unique index keeps one unfinished build per key; a lost race is a unique violation.
            if let Some(build) = active_build(&self.pool, key).await? {
                return Ok(Some(joined(build)));
            }
            let attempt = next_attempt(&self.pool, key).await?;
            let build = insert_build(&self.pool, new, by, attempt, now()).await?;
            return Ok(build.map(created));
        };
        // Joining, the common case (many clients asking for one image), needs no write lock:
        // an unfinished build found outside the transaction is as good as one found inside.
        if let Some(build) = active_build(&self.pool, key).await? {
            return Ok(Some(joined(build)));
        }
        // IMMEDIATE takes the write lock at once, so the look for an unfinished build, the
        // allowance's count and the insert are one step for every process on the file (a
        // deferred transaction would fail to upgrade its read lock under a race).
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        if let Some(build) = active_build(&mut *tx, key).await? {
            tx.commit().await?;
            return Ok(Some(joined(build)));
        }
        let now = now();
        // Charges older than the window count for nothing: drop them, everyone's, so the table
        // holds at most a day of new builds.
        sqlx::query("DELETE FROM allowance_charges WHERE charged_at <= $1")
            .bind(time_text(now - ALLOWANCE_WINDOW))
            .execute(&mut *tx)
            .await?;
        let (used, oldest): (i64, Option<String>) = sqlx::query_as(
            "SELECT COUNT(*), MIN(charged_at) FROM allowance_charges WHERE client = $1",
        )
        .bind(&allowance.client)
        .fetch_one(&mut *tx)
        .await?;
        if used >= i64::from(allowance.per_day) {
            let oldest = oldest
                .and_then(|text| DateTime::parse_from_rfc3339(&text).ok())
                .map_or(now, |t| t.to_utc());
            let retry_after = (oldest + ALLOWANCE_WINDOW - now)
                .to_std()
                .unwrap_or_default()
                .max(Duration::from_secs(1));
            return Err(StoreError::AllowanceSpent {
                client: allowance.client.clone(),
                retry_after,
            });
        }
        let attempt = next_attempt(&mut *tx, key).await?;
        let Some(build) = insert_build(&mut *tx, new, by, attempt, now).await? else {
            return Ok(None);
        };
        sqlx::query(
            "INSERT INTO allowance_charges (client, build_id, charged_at) VALUES ($1, $2, $3)",
        )
        .bind(&allowance.client)
        .bind(&build.id)
        .bind(time_text(now))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(created(build)))
    }

    async fn fetch(&self, sql: &'static str, arg: &str) -> Result<Option<BuildRecord>, StoreError> {
        let row = sqlx::query(sql)
            .bind(arg)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(decode).transpose()
    }

    /// Explains why a guarded `UPDATE` matched no row.
    async fn refused(&self, id: &str, to: BuildStatus) -> StoreError {
        match self.build(id).await {
            Ok(Some(build)) => StoreError::IllegalTransition {
                id: id.into(),
                from: build.status,
                to,
            },
            Ok(None) => StoreError::BuildNotFound { id: id.into() },
            Err(e) => e,
        }
    }
}

/// The unfinished build of `key`, if there is one.
async fn active_build<'e>(
    db: impl sqlx::SqliteExecutor<'e>,
    key: &str,
) -> Result<Option<BuildRecord>, StoreError> {
    let row = sqlx::query("SELECT * FROM builds WHERE key = $1 AND status <> 'DONE'")
        .bind(key)
        .fetch_optional(db)
        .await?;
    row.as_ref().map(decode).transpose()
}

/// The attempt number a new build of `key` gets.
async fn next_attempt<'e>(db: impl sqlx::SqliteExecutor<'e>, key: &str) -> Result<u32, StoreError> {
    let last: Option<u32> = sqlx::query_scalar("SELECT MAX(attempt) FROM builds WHERE key = $1")
        .bind(key)
        .fetch_one(db)
        .await?;
    Ok(last.unwrap_or(0) + 1)
}

/// Inserts `new` as PENDING attempt `attempt`; `None` when an unfinished build of its key is
/// there already (another submitter won the race).
async fn insert_build<'e>(
    db: impl sqlx::SqliteExecutor<'e>,
    new: &NewBuild,
    by: &Submitter,
    attempt: u32,
    now: DateTime<Utc>,
) -> Result<Option<BuildRecord>, StoreError> {
    let key = new.key.as_str();
    let inserted = sqlx::query(
        "INSERT INTO builds (id, key, attempt, image, format, platforms, request,
                             containerfile, environment, status, created_at,
                             owner_token, submitter_address, kind)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'PENDING', $10, $11, $12, $13)
         RETURNING *",
    )
    .bind(build_id(key, attempt))
    .bind(key)
    .bind(attempt)
    .bind(new.image.to_string())
    .bind(new.job.format().as_str())
    .bind(platforms_column(&new.job.platforms()))
    .bind(new.job.to_json())
    .bind(&new.containerfile)
    .bind(&new.environment)
    .bind(time_text(now))
    .bind(&by.token_hash)
    .bind(&by.address)
    .bind(new.job.kind().as_str())
    .fetch_all(db)
    .await
    .and_then(|rows| rows.into_iter().next().ok_or(sqlx::Error::RowNotFound));
    match inserted {
        Ok(row) => decode(&row).map(Some),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The embedded schema. Equivalent to `sqlx::migrate!("./migrations/sqlite")`
/// (same version, description and checksum), which needs sqlx's `macros`
/// feature that kiln does not enable.
fn migrator() -> Migrator {
    let migration = |version, description: &'static str, sql: &'static str| {
        Migration::new(
            version,
            description.into(),
            MigrationType::Simple,
            sql.into_sql_str(),
            false,
        )
    };
    Migrator::with_migrations(vec![
        migration(
            1,
            "builds",
            include_str!("../../migrations/sqlite/0001_builds.sql"),
        ),
        migration(
            2,
            "build leases",
            include_str!("../../migrations/sqlite/0002_build_leases.sql"),
        ),
        migration(
            3,
            "container requests",
            include_str!("../../migrations/sqlite/0003_container_requests.sql"),
        ),
        migration(
            4,
            "accounts",
            include_str!("../../migrations/sqlite/0004_accounts.sql"),
        ),
        migration(
            5,
            "bounds",
            include_str!("../../migrations/sqlite/0005_bounds.sql"),
        ),
        migration(
            6,
            "package layers",
            include_str!("../../migrations/sqlite/0006_package_layers.sql"),
        ),
        migration(
            7,
            "build kinds",
            include_str!("../../migrations/sqlite/0007_build_kinds.sql"),
        ),
        migration(
            8,
            "shared state",
            include_str!("../../migrations/sqlite/0008_shared_state.sql"),
        ),
    ])
}

/// The event channel of the database file at `path`: one per file in this process, so that
/// handles opened separately on it (as tests open a "second process") hear each other. The
/// registry holds channels weakly; a file nobody has open any more frees its entry.
fn event_channel(path: &Path) -> broadcast::Sender<BuildEvent> {
    static CHANNELS: OnceLock<Mutex<HashMap<PathBuf, broadcast::WeakSender<BuildEvent>>>> =
        OnceLock::new();
    let file = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let mut channels = CHANNELS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(sender) = channels.get(&file).and_then(broadcast::WeakSender::upgrade) {
        return sender;
    }
    channels.retain(|_, weak| weak.upgrade().is_some());
    let sender = broadcast::channel(EVENT_BACKLOG).0;
    channels.insert(file, sender.downgrade());
    sender
}

/// The columns of an entity, prefixed `e_`, and what the collection and container selects
/// add (`c_`, `k_`); a macro, so that each query is one `&'static str`.
macro_rules! entity_columns {
    () => {
        "SELECT e.id AS e_id, e.name AS e_name, e.description AS e_description,
                e.created_by AS e_created_by, e.created_at AS e_created_at"
    };
}

macro_rules! select_entity {
    () => {
        concat!(entity_columns!(), " FROM library_entities e")
    };
}

macro_rules! select_collection {
    () => {
        concat!(
            entity_columns!(),
            ", c.id AS c_id, c.name AS c_name, c.description AS c_description,
               c.created_by AS c_created_by, c.created_at AS c_created_at
             FROM library_collections c JOIN library_entities e ON e.id = c.entity_id"
        )
    };
}

macro_rules! select_container {
    () => {
        concat!(
            entity_columns!(),
            ", c.id AS c_id, c.name AS c_name, c.description AS c_description,
               c.created_by AS c_created_by, c.created_at AS c_created_at,
               k.id AS k_id, k.name AS k_name, k.description AS k_description,
               k.created_by AS k_created_by, k.created_at AS k_created_at
             FROM library_containers k
             JOIN library_collections c ON c.id = k.collection_id
             JOIN library_entities e ON e.id = c.entity_id"
        )
    };
}

/// Makes the database file (and its WAL and shared-memory files, if there are any) mode 0600:
/// it holds token hashes and users' recipes. A new file is created so before SQLite opens it;
/// SQLite gives the `-wal` and `-shm` files it creates the database file's mode.
fn restrict_modes(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    for suffix in ["", "-wal", "-shm"] {
        let file = path.with_file_name(format!("{name}{suffix}"));
        match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)) {
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            other => other?,
        }
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn submit_charged(
        &self,
        new: NewBuild,
        by: &Submitter,
        allowance: Option<&Allowance>,
    ) -> Result<Submitted, StoreError> {
        let allowance = allowance.filter(|allowance| allowance.per_day > 0);
        for _ in 0..SUBMIT_TRIES {
            if let Some(submitted) = self.try_submit(&new, by, allowance).await? {
                if submitted.created {
                    self.announce(BuildEvent::Submitted(submitted.build.id.clone()));
                }
                return Ok(submitted);
            }
        }
        // Only reachable when builds of the key finish as fast as they are created.
        Err(StoreError::Database(sqlx::Error::Protocol(format!(
            "submitting a build of {} lost {SUBMIT_TRIES} races in a row",
            new.key.as_str()
        ))))
    }

    fn events(&self) -> broadcast::Receiver<BuildEvent> {
        self.events.subscribe()
    }

    async fn layer_home(&self, digest: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT repository FROM layer_homes WHERE digest = $1")
                .bind(digest)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn set_layer_home(&self, digest: &str, repository: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO layer_homes (digest, repository) VALUES ($1, $2)
             ON CONFLICT (digest) DO UPDATE SET repository = excluded.repository",
        )
        .bind(digest)
        .bind(repository)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn submitter(&self, id: &str) -> Result<Option<Submitter>, StoreError> {
        let row = sqlx::query("SELECT owner_token, submitter_address FROM builds WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            Ok(Submitter {
                token_hash: row.try_get("owner_token")?,
                address: row.try_get("submitter_address")?,
            })
        })
        .transpose()
    }

    async fn queued_builds(&self, address: Option<&str>) -> Result<(u64, u64), StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS total,
                    COALESCE(SUM(submitter_address IS NOT NULL AND submitter_address = $1), 0)
                        AS theirs
             FROM builds WHERE status = 'PENDING'",
        )
        .bind(address)
        .fetch_one(&self.pool)
        .await?;
        Ok((row.try_get("total")?, row.try_get("theirs")?))
    }

    async fn prune_requests(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let pruned = sqlx::query("DELETE FROM container_requests WHERE created_at < $1")
            .bind(time_text(before))
            .execute(&self.pool)
            .await?;
        Ok(pruned.rows_affected())
    }

    async fn prune_logs(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        // Per build, so one pass never holds the write lock for millions of rows at once.
        let old: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM builds b
             WHERE status = 'DONE' AND finished_at < $1
               AND EXISTS (SELECT 1 FROM build_logs l WHERE l.build_id = b.id)",
        )
        .bind(time_text(before))
        .fetch_all(&self.pool)
        .await?;
        for id in &old {
            sqlx::query("DELETE FROM build_logs WHERE build_id = $1")
                .bind(id)
                .execute(&self.pool)
                .await?;
        }
        Ok(old.len() as u64)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        // A real write that changes nothing: the header's user version, set to what it is. It
        // appends a frame to the WAL, so a read-only, locked or full database fails here.
        let mut connection = self.pool.acquire().await?;
        let written = async {
            let version: i64 = sqlx::query_scalar("PRAGMA user_version")
                .fetch_one(&mut *connection)
                .await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "PRAGMA user_version = {version}"
            )))
            .execute(&mut *connection)
            .await
        }
        .await;
        if let Err(err) = written {
            // A connection that met a read-only file stays read-only: close it, so the next
            // check (and the next request) opens a fresh one once the file is writable again.
            let _ = connection.close().await;
            return Err(err.into());
        }
        Ok(())
    }

    async fn build(&self, id: &str) -> Result<Option<BuildRecord>, StoreError> {
        self.fetch("SELECT * FROM builds WHERE id = $1", id).await
    }

    async fn latest_for_key(&self, key: &str) -> Result<Option<BuildRecord>, StoreError> {
        let sql = "SELECT * FROM builds WHERE key = $1 ORDER BY attempt DESC LIMIT 1";
        self.fetch(sql, key).await
    }

    async fn claim_next(
        &self,
        worker: &str,
        scope: &WorkerScope,
        lease: Duration,
    ) -> Result<Option<BuildRecord>, StoreError> {
        // One statement, so SQLite runs the pick and the update under its
        // write lock: two claimers can never take the same row. The status
        // test is repeated on the updated row so the statement stays safe
        // where the pick runs outside that lock (Postgres re-checks the outer
        // WHERE on a row another claimer changed); Postgres also adds
        // `FOR UPDATE SKIP LOCKED` to the subquery so claimers do not queue
        // on one row. BUILDING rows without a lease (NULL; older kiln started builds so)
        // never expire. Each kind is one parameter, NULL when not asked for: a NULL matches
        // nothing in `IN`. Each platform is one parameter too: the LIKE pattern of a platform
        // the worker does not build for (a build naming it is skipped), NULL for one it does.
        const _: () = assert!(Platform::ALL.len() == 2, "one parameter per platform");
        let now = now();
        let kind = |kind: BuildKind| scope.kinds.contains(&kind).then_some(kind.as_str());
        let refused = scope.refused_platforms();
        let platform = |p: Platform| refused.contains(&p).then(|| platform_pattern(p));
        let row = sqlx::query(
            "UPDATE builds SET status = 'BUILDING', worker = $1, lease_until = $2, started_at = $3,
                               claims = claims + 1
             WHERE id = (SELECT id FROM builds
                         WHERE (status = 'PENDING' OR (status = 'BUILDING' AND lease_until < $3))
                           AND kind IN ($4, $5, $6)
                           AND ($7 IS NULL OR ',' || platforms || ',' NOT LIKE $7)
                           AND ($8 IS NULL OR ',' || platforms || ',' NOT LIKE $8)
                         ORDER BY created_at, id
                         LIMIT 1)
               AND (status = 'PENDING' OR (status = 'BUILDING' AND lease_until < $3))
             RETURNING *",
        )
        .bind(worker)
        .bind(time_text(lease_end(now, lease)))
        .bind(time_text(now))
        .bind(kind(BuildKind::Native))
        .bind(kind(BuildKind::Dockerfile))
        .bind(kind(BuildKind::Definition))
        .bind(platform(Platform::ALL[0]))
        .bind(platform(Platform::ALL[1]))
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .next();
        row.as_ref().map(decode).transpose()
    }

    async fn renew_lease(&self, id: &str, worker: &str, lease: Duration) -> Result<(), StoreError> {
        let renewed = sqlx::query(
            "UPDATE builds SET lease_until = $3
             WHERE id = $1 AND worker = $2 AND status = 'BUILDING'",
        )
        .bind(id)
        .bind(worker)
        .bind(time_text(lease_end(now(), lease)))
        .execute(&self.pool)
        .await?;
        if renewed.rows_affected() == 1 {
            return Ok(());
        }
        match self.build(id).await? {
            Some(_) => Err(StoreError::LeaseLost {
                id: id.into(),
                worker: worker.into(),
            }),
            None => Err(StoreError::BuildNotFound { id: id.into() }),
        }
    }

    async fn finish(&self, id: &str, outcome: BuildOutcome) -> Result<BuildRecord, StoreError> {
        let (succeeded, reason, digest, outputs, lock) = match outcome {
            BuildOutcome::Succeeded {
                digest,
                outputs,
                lock,
            } => (true, None, Some(digest), outputs, lock),
            BuildOutcome::Failed { reason } => (false, Some(reason), None, Vec::new(), None),
        };
        let outputs = serde_json::to_string(&outputs).expect("outputs serialize");
        let row = sqlx::query(
            "UPDATE builds SET status = 'DONE', succeeded = $2, reason = $3, finished_at = $4,
                               digest = $5, outputs = $6, conda_lock = $7, lease_until = NULL
             WHERE id = $1 AND (status = 'BUILDING' OR (status = 'PENDING' AND NOT $2))
             RETURNING *",
        )
        .bind(id)
        .bind(succeeded)
        .bind(reason)
        .bind(time_text(now()))
        .bind(digest)
        .bind(outputs)
        .bind(lock)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .next();
        match row {
            Some(row) => {
                let done = decode(&row);
                self.announce(BuildEvent::Finished(id.to_owned()));
                done
            }
            None => Err(self.refused(id, BuildStatus::Done).await),
        }
    }

    async fn append_log(&self, id: &str, chunk: &str) -> Result<u64, StoreError> {
        // One statement: SQLite runs it atomically, so concurrent appends cannot
        // pick the same seq (Postgres will need a row lock or a retry here).
        let end = sqlx::query_scalar(
            // The last chunk by the primary key, not MAX over all of them: appending to a
            // long log stays one index lookup.
            "INSERT INTO build_logs (build_id, seq, end_offset, chunk)
             SELECT $1, COALESCE(last.seq, 0) + 1, COALESCE(last.end_offset, 0) + $2, $3
             FROM (SELECT 1) LEFT JOIN (SELECT seq, end_offset FROM build_logs
                                        WHERE build_id = $1 ORDER BY seq DESC LIMIT 1) last
             RETURNING end_offset",
        )
        .bind(id)
        .bind(i64::try_from(chunk.len()).expect("chunk fits in memory"))
        .bind(chunk)
        .fetch_all(&self.pool)
        .await
        .and_then(|rows| rows.into_iter().next().ok_or(sqlx::Error::RowNotFound));
        match end {
            Ok(end) => {
                self.announce(BuildEvent::Log(id.to_owned()));
                Ok(end)
            }
            Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {
                Err(StoreError::BuildNotFound { id: id.into() })
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn read_log(&self, id: &str, from: u64) -> Result<LogSlice, StoreError> {
        use futures_util::TryStreamExt as _;
        // The log's length from its last chunk (NULL without one; no row: no such build).
        let total: Option<Option<i64>> = sqlx::query_scalar(
            "SELECT (SELECT end_offset FROM build_logs WHERE build_id = b.id
                     ORDER BY seq DESC LIMIT 1)
             FROM builds b WHERE b.id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(total) = total else {
            return Err(StoreError::BuildNotFound { id: id.into() });
        };
        let total = total.map_or(0, |total| total as u64);
        // Chunks stream in seq order and the read stops once a page is full, so a page holds
        // at most LOG_PAGE bytes and one chunk, whatever the log's length.
        let mut rows = sqlx::query(
            "SELECT end_offset, chunk FROM build_logs
             WHERE build_id = $1 AND end_offset > $2 ORDER BY seq",
        )
        .bind(id)
        .bind(i64::try_from(from).unwrap_or(i64::MAX))
        .fetch(&self.pool);
        let mut text = String::new();
        let mut page_start = None;
        while let Some(row) = rows.try_next().await? {
            let end: u64 = row.try_get("end_offset")?;
            let chunk: String = row.try_get("chunk")?;
            let start = end.saturating_sub(chunk.len() as u64);
            // Only the first chunk can start before `from`; chunk starts are
            // char boundaries, so rounding down stays inside it.
            let skip = chunk.floor_char_boundary(
                usize::try_from(from.saturating_sub(start)).unwrap_or(usize::MAX),
            );
            page_start.get_or_insert(start + skip as u64);
            text.push_str(&chunk[skip..]);
            if text.len() >= LOG_PAGE {
                break;
            }
        }
        let next_offset = page_start.map_or(total, |start| start + text.len() as u64);
        Ok(LogSlice { text, next_offset })
    }

    async fn add_request(&self, request: &ContainerRequest) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO container_requests
               (id, build_id, target_image, container_image, format, cached, freeze, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (id) DO UPDATE SET created_at = excluded.created_at",
        )
        .bind(&request.id)
        .bind(&request.build_id)
        .bind(&request.target_image)
        .bind(&request.container_image)
        .bind(&request.format)
        .bind(request.cached)
        .bind(request.freeze)
        .bind(time_text(request.created_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn request(&self, id: &str) -> Result<Option<ContainerRequest>, StoreError> {
        let row = sqlx::query("SELECT * FROM container_requests WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(decode_request).transpose()
    }

    async fn claim_user(&self, name: &str, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let claimed = sqlx::query(
            "INSERT INTO users (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(time_text(at))
        .execute(&self.pool)
        .await?;
        Ok(claimed.rows_affected() == 1)
    }

    async fn add_token(&self, hash: &str, user: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO users (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(user)
        .bind(time_text(at))
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO api_tokens (hash, user_name, created_at) VALUES ($1, $2, $3)")
            .bind(hash)
            .bind(user)
            .bind(time_text(at))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn token_user(&self, hash: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT user_name FROM api_tokens WHERE hash = $1")
                .bind(hash)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn library_item(&self, key: LibraryKey<'_>) -> Result<Option<LibraryPath>, StoreError> {
        let (sql, args): (&'static str, &[&str]) = match key {
            LibraryKey::Names(names @ [_]) => {
                (concat!(select_entity!(), " WHERE e.name = $1"), names)
            }
            LibraryKey::Names(names @ [_, _]) => (
                concat!(select_collection!(), " WHERE e.name = $1 AND c.name = $2"),
                names,
            ),
            LibraryKey::Names(names @ [_, _, _]) => (
                concat!(
                    select_container!(),
                    " WHERE e.name = $1 AND c.name = $2 AND k.name = $3"
                ),
                names,
            ),
            LibraryKey::Names(_) => return Ok(None),
            LibraryKey::Id(LibraryLevel::Entity, id) => {
                (concat!(select_entity!(), " WHERE e.id = $1"), &[id][..])
            }
            LibraryKey::Id(LibraryLevel::Collection, id) => {
                (concat!(select_collection!(), " WHERE c.id = $1"), &[id][..])
            }
            LibraryKey::Id(LibraryLevel::Container, id) => {
                (concat!(select_container!(), " WHERE k.id = $1"), &[id][..])
            }
        };
        let mut query = sqlx::query(sql);
        for arg in args {
            query = query.bind(*arg);
        }
        let row = query.fetch_optional(&self.pool).await?;
        row.as_ref().map(decode_library_path).transpose()
    }

    async fn add_library_item(
        &self,
        level: LibraryLevel,
        parent: Option<&str>,
        item: &LibraryItem,
    ) -> Result<LibraryPath, StoreError> {
        let (insert, parent_level): (&'static str, _) = match level {
            LibraryLevel::Entity => (
                "INSERT INTO library_entities (id, name, description, created_by, created_at)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING",
                None,
            ),
            LibraryLevel::Collection => (
                "INSERT INTO library_collections
                   (id, name, description, created_by, created_at, entity_id)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (entity_id, name) DO NOTHING",
                Some(LibraryLevel::Entity),
            ),
            LibraryLevel::Container => (
                "INSERT INTO library_containers
                   (id, name, description, created_by, created_at, collection_id)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (collection_id, name) DO NOTHING",
                Some(LibraryLevel::Collection),
            ),
        };
        let parent = match (parent_level, parent) {
            (None, _) => None,
            (Some(parent_level), Some(id)) => Some(
                self.library_item(LibraryKey::Id(parent_level, id))
                    .await?
                    .ok_or_else(|| StoreError::LibraryItemNotFound {
                        level: parent_level,
                        id: id.to_owned(),
                    })?,
            ),
            (Some(_), None) => return Err(StoreError::LibraryParentMissing { level }),
        };
        let mut query = sqlx::query(insert)
            .bind(&item.id)
            .bind(&item.name)
            .bind(&item.description)
            .bind(&item.created_by)
            .bind(time_text(item.created_at));
        if let Some(parent) = &parent {
            query = query.bind(&parent.item().id);
        }
        query.execute(&self.pool).await?;
        // Whoever won a race, the item of that name is there now.
        let mut names: Vec<&str> = Vec::with_capacity(3);
        if let Some(parent) = &parent {
            names.push(&parent.entity.name);
            names.extend(parent.collection.as_ref().map(|c| c.name.as_str()));
        }
        names.push(&item.name);
        self.library_item(LibraryKey::Names(&names))
            .await?
            .ok_or_else(|| StoreError::LibraryItemNotFound {
                level,
                id: item.id.clone(),
            })
    }

    async fn library_children(
        &self,
        level: LibraryLevel,
        id: &str,
    ) -> Result<Vec<String>, StoreError> {
        let sql = match level {
            LibraryLevel::Entity => {
                "SELECT id FROM library_collections WHERE entity_id = $1 ORDER BY created_at, id"
            }
            LibraryLevel::Collection => {
                "SELECT id FROM library_containers WHERE collection_id = $1 ORDER BY created_at, id"
            }
            LibraryLevel::Container => {
                "SELECT id FROM library_images WHERE container_id = $1 ORDER BY created_at, id"
            }
        };
        Ok(sqlx::query_scalar(sql)
            .bind(id)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn add_library_image(&self, image: &LibraryImage) -> Result<LibraryImage, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO library_images
               (id, container_id, hash, description, created_by, created_at)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (container_id, hash) DO NOTHING",
        )
        .bind(&image.id)
        .bind(&image.container_id)
        .bind(&image.hash)
        .bind(&image.description)
        .bind(&image.created_by)
        .bind(time_text(image.created_at))
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {
                return Err(StoreError::LibraryItemNotFound {
                    level: LibraryLevel::Container,
                    id: image.container_id.clone(),
                });
            }
            Err(e) => return Err(e.into()),
        }
        self.library_image(ImageKey::Hash {
            container_id: &image.container_id,
            hash: &image.hash,
        })
        .await?
        .ok_or_else(|| StoreError::ImageNotFound {
            id: image.id.clone(),
        })
    }

    async fn library_image(&self, key: ImageKey<'_>) -> Result<Option<LibraryImage>, StoreError> {
        let row = match key {
            ImageKey::Id(id) => {
                sqlx::query("SELECT * FROM library_images WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?
            }
            ImageKey::Hash { container_id, hash } => {
                sqlx::query("SELECT * FROM library_images WHERE container_id = $1 AND hash = $2")
                    .bind(container_id)
                    .bind(hash)
                    .fetch_optional(&self.pool)
                    .await?
            }
        };
        row.as_ref().map(decode_image).transpose()
    }

    async fn set_upload_secret(&self, id: &str, secret_hash: &str) -> Result<(), StoreError> {
        let set = sqlx::query("UPDATE library_images SET upload_secret = $2 WHERE id = $1")
            .bind(id)
            .bind(secret_hash)
            .execute(&self.pool)
            .await?;
        if set.rows_affected() == 0 {
            return Err(StoreError::ImageNotFound { id: id.into() });
        }
        Ok(())
    }

    async fn finish_upload(
        &self,
        id: &str,
        arch: &str,
        size: u64,
        at: DateTime<Utc>,
    ) -> Result<LibraryImage, StoreError> {
        let row = sqlx::query(
            "UPDATE library_images
             SET arch = $2, size = $3, uploaded_at = $4, upload_secret = NULL
             WHERE id = $1 RETURNING *",
        )
        .bind(id)
        .bind(arch)
        .bind(i64::try_from(size).unwrap_or(i64::MAX))
        .bind(time_text(at))
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .next();
        match row {
            Some(row) => decode_image(&row),
            None => Err(StoreError::ImageNotFound { id: id.into() }),
        }
    }

    async fn set_library_tag(&self, tag: &ArchTag) -> Result<(), StoreError> {
        let set = sqlx::query(
            "INSERT INTO library_tags (container_id, arch, tag, image_id, updated_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (container_id, arch, tag)
             DO UPDATE SET image_id = excluded.image_id, updated_at = excluded.updated_at",
        )
        .bind(&tag.container_id)
        .bind(&tag.arch)
        .bind(&tag.tag)
        .bind(&tag.image_id)
        .bind(time_text(tag.updated_at))
        .execute(&self.pool)
        .await;
        match set {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {
                match self.library_image(ImageKey::Id(&tag.image_id)).await? {
                    None => Err(StoreError::ImageNotFound {
                        id: tag.image_id.clone(),
                    }),
                    Some(_) => Err(StoreError::LibraryItemNotFound {
                        level: LibraryLevel::Container,
                        id: tag.container_id.clone(),
                    }),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn library_tags(&self, container_id: &str) -> Result<Vec<ArchTag>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM library_tags WHERE container_id = $1
             ORDER BY updated_at, arch, tag",
        )
        .bind(container_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ArchTag {
                    container_id: row.try_get("container_id")?,
                    arch: row.try_get("arch")?,
                    tag: row.try_get("tag")?,
                    image_id: row.try_get("image_id")?,
                    updated_at: parse_time(row, "updated_at", "library tag")?,
                })
            })
            .collect()
    }

    async fn package_layer(&self, key: &str) -> Result<Option<PackageLayer>, StoreError> {
        let row = sqlx::query("SELECT * FROM package_layers WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let corrupt = |detail: String| StoreError::Corrupt {
            id: key.to_owned(),
            detail,
        };
        let metadata: String = row.try_get("python_metadata")?;
        let size: i64 = row.try_get("size")?;
        let uncompressed: i64 = row.try_get("uncompressed_size")?;
        Ok(Some(PackageLayer {
            key: row.try_get("key")?,
            digest: row.try_get("digest")?,
            diff_id: row.try_get("diff_id")?,
            size: u64::try_from(size).map_err(|_| corrupt(format!("size {size}")))?,
            uncompressed_size: u64::try_from(uncompressed)
                .map_err(|_| corrupt(format!("uncompressed_size {uncompressed}")))?,
            python_metadata: serde_json::from_str(&metadata)
                .map_err(|err| corrupt(format!("python_metadata: {err}")))?,
            license: row.try_get("license")?,
        }))
    }

    async fn add_package_layer(&self, layer: &PackageLayer) -> Result<(), StoreError> {
        let metadata =
            serde_json::to_string(&layer.python_metadata).map_err(|err| StoreError::Corrupt {
                id: layer.key.clone(),
                detail: format!("python_metadata: {err}"),
            })?;
        let signed = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        sqlx::query(
            "INSERT INTO package_layers
                 (key, digest, diff_id, size, uncompressed_size, python_metadata, license)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (key) DO UPDATE SET digest = excluded.digest,
                 diff_id = excluded.diff_id, size = excluded.size,
                 uncompressed_size = excluded.uncompressed_size,
                 python_metadata = excluded.python_metadata, license = excluded.license",
        )
        .bind(&layer.key)
        .bind(&layer.digest)
        .bind(&layer.diff_id)
        .bind(signed(layer.size))
        .bind(signed(layer.uncompressed_size))
        .bind(metadata)
        .bind(&layer.license)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// A row of one of the selects above.
fn decode_library_path(row: &SqliteRow) -> Result<LibraryPath, StoreError> {
    fn item(row: &SqliteRow, prefix: &str) -> Result<Option<LibraryItem>, StoreError> {
        let column = |name: &str| format!("{prefix}_{name}");
        if row.try_column(column("id").as_str()).is_err() {
            return Ok(None);
        }
        let id: String = row.try_get(column("id").as_str())?;
        Ok(Some(LibraryItem {
            name: row.try_get(column("name").as_str())?,
            description: row.try_get(column("description").as_str())?,
            created_by: row.try_get(column("created_by").as_str())?,
            created_at: parse_time(row, &column("created_at"), &id)?,
            id,
        }))
    }
    let entity = item(row, "e")?.ok_or_else(|| StoreError::Corrupt {
        id: "library item".into(),
        detail: "a library select without entity columns".into(),
    })?;
    Ok(LibraryPath {
        entity,
        collection: item(row, "c")?,
        container: item(row, "k")?,
    })
}

fn decode_image(row: &SqliteRow) -> Result<LibraryImage, StoreError> {
    let id: String = row.try_get("id")?;
    let size: Option<i64> = row.try_get("size")?;
    let uploaded_at: Option<String> = row.try_get("uploaded_at")?;
    let uploaded_at = match uploaded_at {
        Some(_) => Some(parse_time(row, "uploaded_at", &id)?),
        None => None,
    };
    Ok(LibraryImage {
        container_id: row.try_get("container_id")?,
        hash: row.try_get("hash")?,
        description: row.try_get("description")?,
        arch: row.try_get("arch")?,
        size: size.map(|size| u64::try_from(size).unwrap_or(0)),
        uploaded_at,
        upload_secret: row.try_get("upload_secret")?,
        created_by: row.try_get("created_by")?,
        created_at: parse_time(row, "created_at", &id)?,
        id,
    })
}

/// The RFC 3339 text in `column` of the row of `id`.
fn parse_time(row: &SqliteRow, column: &str, id: &str) -> Result<DateTime<Utc>, StoreError> {
    let text: String = row.try_get(column)?;
    DateTime::parse_from_rfc3339(&text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|err| StoreError::Corrupt {
            id: id.to_owned(),
            detail: format!("column {column}: {err}"),
        })
}

/// Now, cut to the microseconds the database keeps, so a record returned
/// from a write equals the same record read back.
fn decode_request(row: &SqliteRow) -> Result<ContainerRequest, StoreError> {
    let id: String = row.try_get("id")?;
    let created: String = row.try_get("created_at")?;
    let created_at = DateTime::parse_from_rfc3339(&created)
        .map_err(|err| StoreError::Corrupt {
            id: id.clone(),
            detail: format!("column created_at: {err}"),
        })?
        .with_timezone(&Utc);
    Ok(ContainerRequest {
        build_id: row.try_get("build_id")?,
        target_image: row.try_get("target_image")?,
        container_image: row.try_get("container_image")?,
        format: row.try_get("format")?,
        cached: row.try_get("cached")?,
        freeze: row.try_get("freeze")?,
        created_at,
        id,
    })
}

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// When a lease taken at `now` runs out. Leases are capped at a century so
/// the end stays a four-digit year, which sorts correctly as text.
fn lease_end(now: DateTime<Utc>, lease: Duration) -> DateTime<Utc> {
    const CENTURY: TimeDelta = TimeDelta::days(36_500);
    now + TimeDelta::from_std(lease).map_or(CENTURY, |lease| lease.min(CENTURY))
}

fn time_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Turns a `builds` row into a record; any column that does not parse makes
/// the whole build [`StoreError::Corrupt`].
fn decode(row: &SqliteRow) -> Result<BuildRecord, StoreError> {
    let id: String = row.try_get("id")?;
    decode_columns(row, &id).map_err(|detail| StoreError::Corrupt { id, detail })
}

fn decode_columns(row: &SqliteRow, id: &str) -> Result<BuildRecord, String> {
    fn get<'r, T>(row: &'r SqliteRow, column: &str) -> Result<T, String>
    where
        T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
    {
        row.try_get(column)
            .map_err(|e| format!("column {column}: {e}"))
    }
    fn json<T: serde::de::DeserializeOwned>(row: &SqliteRow, column: &str) -> Result<T, String> {
        serde_json::from_str(&get::<String>(row, column)?)
            .map_err(|e| format!("column {column}: {e}"))
    }
    fn time(row: &SqliteRow, column: &str) -> Result<Option<DateTime<Utc>>, String> {
        get::<Option<String>>(row, column)?
            .map(|text| DateTime::parse_from_rfc3339(&text).map(|t| t.to_utc()))
            .transpose()
            .map_err(|e| format!("column {column}: {e}"))
    }
    fn parsed<T: std::str::FromStr>(row: &SqliteRow, column: &str) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        get::<String>(row, column)?
            .parse()
            .map_err(|e| format!("column {column}: {e}"))
    }
    let status: String = get(row, "status")?;
    // The format and platforms columns are for readers of the database: the job says both.
    let job = BuildJob::from_json(parsed(row, "kind")?, &get::<String>(row, "request")?)
        .map_err(|e| format!("column request: {e}"))?;
    Ok(BuildRecord {
        id: id.to_owned(),
        key: parsed(row, "key")?,
        attempt: get(row, "attempt")?,
        image: parsed(row, "image")?,
        job,
        containerfile: get(row, "containerfile")?,
        environment: get(row, "environment")?,
        status: status.parse().map_err(|e| format!("{e}"))?,
        succeeded: get(row, "succeeded")?,
        reason: get(row, "reason")?,
        created_at: time(row, "created_at")?.ok_or("column created_at is NULL")?,
        started_at: time(row, "started_at")?,
        finished_at: time(row, "finished_at")?,
        lock: get(row, "conda_lock")?,
        digest: get(row, "digest")?,
        outputs: json(row, "outputs")?,
        claims: get(row, "claims")?,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tempfile::TempDir;

    use super::*;
    use crate::store::contract::{Harness, contract_suite, key, request};

    struct TempDb(TempDir);

    impl Harness for TempDb {
        async fn open(&self) -> Arc<dyn Store> {
            Arc::new(
                SqliteStore::open(&self.0.path().join("kiln.db"))
                    .await
                    .unwrap(),
            )
        }
    }

    async fn temp_db() -> TempDb {
        TempDb(TempDir::new().unwrap())
    }

    contract_suite!(temp_db);

    #[tokio::test]
    async fn undecodable_rows_are_corrupt() {
        let db = temp_db().await;
        let store = SqliteStore::open(&db.0.path().join("kiln.db"))
            .await
            .unwrap();
        let id = store.submit(request(&key(1))).await.unwrap().build.id;
        sqlx::query("UPDATE builds SET outputs = 'not json'")
            .execute(&store.pool)
            .await
            .unwrap();
        let err = store.build(&id).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt { id: bad, detail } if *bad == id && detail.contains("outputs"))
        );
        sqlx::query(
            "UPDATE builds SET outputs = '[]',
                               request = '{\"containerfile\":{\"platform\":\"linux/s390x\"}}',
                               kind = 'dockerfile'",
        )
        .execute(&store.pool)
        .await
        .unwrap();
        let err = store.build(&id).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt { detail, .. } if detail.contains("linux/s390x")),
            "{err}"
        );
    }

    /// Builds stored before the `kind` column get the kind their request names.
    #[tokio::test]
    async fn older_builds_get_the_kind_their_request_names() {
        let db = temp_db().await;
        let path = db.0.path().join("kiln.db");
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true);
        let pool = SqlitePool::connect_with(options).await.unwrap();
        let mut before = migrator();
        before.migrations = before.migrations[..6].to_vec().into();
        before.run(&pool).await.unwrap();
        let rows = [
            (
                1,
                r#"{"entries":["samtools"],"channels":["bioconda"],"format":"docker","platforms":["linux/amd64"]}"#,
            ),
            (2, r#"{"containerfile":{"platform":"linux/arm64"}}"#),
            (
                3,
                r#"{"definition":{"platform":"linux/amd64","user":"alice","libraryRef":"alice/c/n","tags":["latest"],"repository":"alice/c/n"}}"#,
            ),
            (4, "not json"),
        ];
        for (n, request) in rows {
            sqlx::query(
                "INSERT INTO builds (id, key, attempt, image, format, platforms, request,
                                     containerfile, environment, status, created_at)
                 VALUES ($1, $2, 1, 'kiln.example/library/x:1', 'docker',
                         '[\"linux/arm64\",\"linux/amd64\",\"linux/arm64\"]',
                         $3, '', '', 'DONE', '2026-01-01T00:00:00.000000Z')",
            )
            .bind(build_id(&key(n), 1))
            .bind(key(n))
            .bind(request)
            .execute(&pool)
            .await
            .unwrap();
        }
        pool.close().await;

        let store = SqliteStore::open(&path).await.unwrap();
        let kinds: Vec<String> = sqlx::query_scalar("SELECT kind FROM builds ORDER BY key")
            .fetch_all(&store.pool)
            .await
            .unwrap();
        assert_eq!(kinds, ["native", "dockerfile", "definition", "native"]);
        // Platforms went from JSON arrays to the canonical comma-joined text claims match.
        let platforms: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT platforms FROM builds ORDER BY key")
                .fetch_all(&store.pool)
                .await
                .unwrap();
        assert_eq!(platforms, ["linux/amd64,linux/arm64"]);
        for (n, kind) in [
            (1, BuildKind::Native),
            (2, BuildKind::Dockerfile),
            (3, BuildKind::Definition),
        ] {
            let build = store.build(&build_id(&key(n), 1)).await.unwrap().unwrap();
            assert_eq!(build.job.kind(), kind);
        }
        assert!(matches!(
            store.build(&build_id(&key(4), 1)).await,
            Err(StoreError::Corrupt { .. })
        ));
    }
}

//! [`Store`] on PostgreSQL, shared by every kiln node pointed at one database.
//!
//! The SQL follows the SQLite store's statement for statement; where PostgreSQL runs statements
//! side by side (SQLite never does), the differences are said where they are made: claims skip
//! rows other claimers hold (`FOR UPDATE SKIP LOCKED`), log appends take their sequence number
//! from the build's row, whose lock orders them, charged submits queue on an advisory lock per
//! client, and migrations run under sqlx's advisory lock so nodes starting together migrate
//! once. Every node hears of new builds, log appends and finished builds by `LISTEN/NOTIFY`:
//! each write notifies in its own transaction, so a listener hears only what was committed.

use std::str::FromStr as _;
use std::time::Duration;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{PgConnection, Row, SqlSafeStr};
use tokio::sync::{broadcast, oneshot};

use super::{
    Allowance, ArchTag, BuildEvent, BuildOutcome, BuildRecord, BuildStatus, ContainerRequest,
    ImageKey, LOG_PAGE, LibraryImage, LibraryItem, LibraryKey, LibraryLevel, LibraryPath, LogSlice,
    NewBuild, PackageLayer, Store, StoreError, Submitted, Submitter, WorkerScope, build_id,
    platforms_column,
};
use crate::spec::BuildJob;

/// How often `submit` re-reads after losing an insert race, as in the SQLite store.
const SUBMIT_TRIES: usize = 3;

/// Connections one kiln process holds at most, unless the URL's `max_connections` parameter
/// says otherwise; one of them listens for events. Requests wait for a free one (at most
/// [`ACQUIRE_TIMEOUT`]) rather than open more, so N nodes need N × this many of the server's
/// `max_connections` (100 by default).
const MAX_CONNECTIONS: u32 = 16;

/// The range `max_connections` may be set in: the listener and at least one for queries, and
/// far below any server's limit.
const CONNECTIONS_RANGE: std::ops::RangeInclusive<u32> = 2..=1000;

/// kiln's own parameter of a PostgreSQL URL (libpq has none for it): the pool's size.
const POOL_SIZE_PARAMETER: &str = "max_connections";

/// How long a store call waits for a free connection before it fails.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// The notification channel of build events; payloads are `<event>:<build id>` (see
/// [`event_payload`]).
const EVENTS_CHANNEL: &str = "kiln_build_events";

/// Events kept for receivers that have not read them yet; one that falls further behind is told
/// it lagged and reads the store instead.
const EVENT_BACKLOG: usize = 1024;

/// The window an [`Allowance`] covers.
const ALLOWANCE_WINDOW: TimeDelta = TimeDelta::days(1);

/// Builds, logs, requests and the library in a PostgreSQL database; cheap to clone (shares one
/// pool and one listening connection).
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// What the listener hears, for [`Store::events`].
    events: broadcast::Sender<BuildEvent>,
    /// Dropped with the last clone, which stops the listener and frees its connection.
    _listening: Arc<oneshot::Sender<()>>,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:password@host:port/database?sslmode=…`, and
    /// `max_connections=N` for the pool's size) and migrates the database. The database must
    /// exist; its tables are created on first use.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let (url, max_connections) = pool_size(url)?;
        let options = PgConnectOptions::from_str(&url)?;
        // Idle connections are recycled: a server restart or a failover leaves broken ones.
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .idle_timeout(Duration::from_secs(60))
            .max_lifetime(Duration::from_secs(600))
            .connect_with(options)
            .await?;
        migrator().run(&pool).await?;
        // Listening starts before the store is handed out, so a subscriber hears every write
        // committed after `open` returns.
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.listen(EVENTS_CHANNEL).await?;
        let events = broadcast::channel(EVENT_BACKLOG).0;
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(forward_events(listener, events.clone(), stopped));
        Ok(Self {
            pool,
            events,
            _listening: Arc::new(stop),
        })
    }

    /// One try of [`Store::submit_charged`]: `Ok(None)` when another submitter's insert of the
    /// same key (or attempt) won, so the next try joins it.
    async fn try_submit(
        &self,
        new: &NewBuild,
        by: &Submitter,
        allowance: Option<&Allowance>,
    ) -> Result<Option<Submitted>, StoreError> {
        let key = new.key.as_str();
        let active = "SELECT * FROM builds WHERE key = $1 AND status <> 'DONE'";
        // Joining, the common case (many clients asking for one image), takes no transaction
        // and no lock: an unfinished build found here is as good as one found inside.
        if let Some(build) = self.fetch(active, key).await? {
            return Ok(Some(Submitted {
                build,
                created: false,
            }));
        }
        let mut tx = self.pool.begin().await?;
        if let Some(allowance) = allowance {
            // Submits charged to one client take turns (until commit), so two never both see
            // the last build left; other clients' submits do not wait.
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                .bind(&allowance.client)
                .execute(&mut *tx)
                .await?;
        }
        // Looked for again: a build created since, by a submit of the same client that held the
        // lock, is joined rather than charged.
        let active = sqlx::query(active)
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(row) = active {
            return Ok(Some(Submitted {
                build: decode(&row)?,
                created: false,
            }));
        }
        let now = now();
        if let Some(allowance) = allowance {
            charge_allowance(&mut tx, allowance, now).await?;
        }
        let last: Option<i32> =
            sqlx::query_scalar("SELECT MAX(attempt) FROM builds WHERE key = $1")
                .bind(key)
                .fetch_one(&mut *tx)
                .await?;
        let attempt = u32::try_from(last.unwrap_or(0)).unwrap_or(0) + 1;
        // A concurrent submitter's insert (maybe on another node) makes this one conflict on the
        // one-active-build index or on (key, attempt): nothing is inserted, the transaction is
        // dropped (rolling back the charge), and the next try finds the winner.
        let inserted = sqlx::query(
            "INSERT INTO builds (id, key, attempt, image, format, platforms, request,
                                 containerfile, environment, status, created_at,
                                 owner_token, submitter_address, kind)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'PENDING', $10, $11, $12, $13)
             ON CONFLICT DO NOTHING
             RETURNING *",
        )
        .bind(build_id(key, attempt))
        .bind(key)
        .bind(i32::try_from(attempt).unwrap_or(i32::MAX))
        .bind(new.image.to_string())
        .bind(new.job.format().as_str())
        .bind(platforms_column(&new.job.platforms()))
        .bind(new.job.to_json())
        .bind(&new.containerfile)
        .bind(&new.environment)
        .bind(now)
        .bind(&by.token_hash)
        .bind(&by.address)
        .bind(new.job.kind().as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = inserted else {
            return Ok(None);
        };
        let build = decode(&row)?;
        if let Some(allowance) = allowance {
            sqlx::query(
                "INSERT INTO allowance_charges (client, build_id, charged_at) VALUES ($1, $2, $3)",
            )
            .bind(&allowance.client)
            .bind(&build.id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        notify(&mut tx, &BuildEvent::Submitted(build.id.clone())).await?;
        tx.commit().await?;
        Ok(Some(Submitted {
            build,
            created: true,
        }))
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

/// The embedded schema, `migrations/postgres/` (see the SQLite store's `migrator` for why it is
/// not `sqlx::migrate!`).
fn migrator() -> Migrator {
    Migrator::with_migrations(vec![Migration::new(
        1,
        "schema".into(),
        MigrationType::Simple,
        include_str!("../../migrations/postgres/0001_schema.sql").into_sql_str(),
        false,
    )])
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

#[async_trait]
impl Store for PostgresStore {
    async fn submit_charged(
        &self,
        new: NewBuild,
        by: &Submitter,
        allowance: Option<&Allowance>,
    ) -> Result<Submitted, StoreError> {
        let allowance = allowance.filter(|allowance| allowance.per_day > 0);
        for _ in 0..SUBMIT_TRIES {
            if let Some(submitted) = self.try_submit(&new, by, allowance).await? {
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
                    COUNT(*) FILTER (WHERE submitter_address = $1) AS theirs
             FROM builds WHERE status = 'PENDING'",
        )
        .bind(address)
        .fetch_one(&self.pool)
        .await?;
        let count = |column: &str| -> Result<u64, StoreError> {
            Ok(u64::try_from(row.try_get::<i64, _>(column)?).unwrap_or(0))
        };
        Ok((count("total")?, count("theirs")?))
    }

    async fn prune_requests(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let pruned = sqlx::query("DELETE FROM container_requests WHERE created_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(pruned.rows_affected())
    }

    async fn prune_logs(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        // Per build, so one pass never holds locks on millions of rows at once.
        let old: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM builds WHERE status = 'DONE' AND finished_at < $1 AND log_chunks > 0",
        )
        .bind(before)
        .fetch_all(&self.pool)
        .await?;
        for id in &old {
            let mut tx = self.pool.begin().await?;
            sqlx::query("UPDATE builds SET log_chunks = 0, log_bytes = 0 WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM build_logs WHERE build_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        Ok(old.len() as u64)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        // A real write, so a read-only server (a standby, a full disk) fails here.
        sqlx::query(
            "INSERT INTO health_probe (id, checked_at) VALUES (1, $1)
             ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at",
        )
        .bind(now())
        .execute(&self.pool)
        .await?;
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
        // The pick locks its row and skips rows other claimers have locked, so claimers on any
        // node never wait on one another nor take the same build. A row changed by a claim that
        // committed in between is re-checked against the pick's WHERE (READ COMMITTED), and the
        // outer WHERE repeats the status test for the same reason as in the SQLite store.
        // BUILDING rows without a lease never expire. A build is in the worker's scope when
        // its kind is and its platforms (canonical, comma joined) are all among the worker's;
        // a worker naming no platforms takes any.
        let now = now();
        let kinds: Vec<&str> = scope.kinds.iter().map(|kind| kind.as_str()).collect();
        let platforms: Vec<&str> = scope.platforms.iter().map(|p| p.as_str()).collect();
        let row = sqlx::query(
            "UPDATE builds SET status = 'BUILDING', worker = $1, lease_until = $2, started_at = $3,
                               claims = claims + 1
             WHERE id = (SELECT id FROM builds
                         WHERE (status = 'PENDING' OR (status = 'BUILDING' AND lease_until < $3))
                           AND kind = ANY($4)
                           AND (cardinality($5::text[]) = 0
                                OR string_to_array(platforms, ',') <@ $5::text[])
                         ORDER BY created_at, id
                         LIMIT 1
                         FOR UPDATE SKIP LOCKED)
               AND (status = 'PENDING' OR (status = 'BUILDING' AND lease_until < $3))
             RETURNING *",
        )
        .bind(worker)
        .bind(lease_end(now, lease))
        .bind(now)
        .bind(kinds)
        .bind(platforms)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(decode).transpose()
    }

    async fn renew_lease(&self, id: &str, worker: &str, lease: Duration) -> Result<(), StoreError> {
        let renewed = sqlx::query(
            "UPDATE builds SET lease_until = $3
             WHERE id = $1 AND worker = $2 AND status = 'BUILDING'",
        )
        .bind(id)
        .bind(worker)
        .bind(lease_end(now(), lease))
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
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "UPDATE builds SET status = 'DONE', succeeded = $2, reason = $3, finished_at = $4,
                               digest = $5, outputs = $6, conda_lock = $7, lease_until = NULL
             WHERE id = $1 AND (status = 'BUILDING' OR (status = 'PENDING' AND NOT $2))
             RETURNING *",
        )
        .bind(id)
        .bind(succeeded)
        .bind(reason)
        .bind(now())
        .bind(digest)
        .bind(outputs)
        .bind(lock)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            drop(tx);
            return Err(self.refused(id, BuildStatus::Done).await);
        };
        notify(&mut tx, &BuildEvent::Finished(id.to_owned())).await?;
        tx.commit().await?;
        decode(&row)
    }

    async fn append_log(&self, id: &str, chunk: &str) -> Result<u64, StoreError> {
        // One statement (one round trip per log line): the UPDATE locks the build's row, so a
        // concurrent append (another worker thread, another node) waits for this one to commit
        // and then counts on from what it wrote; the notification, made for the inserted row
        // only, goes out with the commit. No row updated: there is no such build.
        let end: Option<i64> = sqlx::query_scalar(
            "WITH counted AS (
                 UPDATE builds SET log_chunks = log_chunks + 1, log_bytes = log_bytes + $2
                 WHERE id = $1
                 RETURNING log_chunks, log_bytes)
             INSERT INTO build_logs (build_id, seq, end_offset, chunk)
             SELECT $1, log_chunks, log_bytes, $3 FROM counted
             RETURNING end_offset, pg_notify($4, $5)",
        )
        .bind(id)
        .bind(i64::try_from(chunk.len()).expect("chunk fits in memory"))
        .bind(chunk)
        .bind(EVENTS_CHANNEL)
        .bind(event_payload(&BuildEvent::Log(id.to_owned())))
        .fetch_optional(&self.pool)
        .await?;
        match end {
            Some(end) => Ok(u64::try_from(end).unwrap_or(0)),
            None => Err(StoreError::BuildNotFound { id: id.into() }),
        }
    }

    async fn read_log(&self, id: &str, from: u64) -> Result<LogSlice, StoreError> {
        use futures_util::TryStreamExt as _;
        let total: Option<i64> = sqlx::query_scalar("SELECT log_bytes FROM builds WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        let Some(total) = total else {
            return Err(StoreError::BuildNotFound { id: id.into() });
        };
        let total = u64::try_from(total).unwrap_or(0);
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
            let end: i64 = row.try_get("end_offset")?;
            let end = u64::try_from(end).unwrap_or(0);
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
            r#"INSERT INTO container_requests
                 (id, build_id, target_image, container_image, format, cached, "freeze", created_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
               ON CONFLICT (id) DO UPDATE SET created_at = excluded.created_at"#,
        )
        .bind(&request.id)
        .bind(&request.build_id)
        .bind(&request.target_image)
        .bind(&request.container_image)
        .bind(&request.format)
        .bind(request.cached)
        .bind(request.freeze)
        .bind(request.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn request(&self, id: &str) -> Result<Option<ContainerRequest>, StoreError> {
        let row = sqlx::query("SELECT * FROM container_requests WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            Ok(ContainerRequest {
                id: row.try_get("id")?,
                build_id: row.try_get("build_id")?,
                target_image: row.try_get("target_image")?,
                container_image: row.try_get("container_image")?,
                format: row.try_get("format")?,
                cached: row.try_get("cached")?,
                freeze: row.try_get("freeze")?,
                created_at: row.try_get("created_at")?,
            })
        })
        .transpose()
    }

    async fn claim_user(&self, name: &str, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let claimed = sqlx::query(
            "INSERT INTO users (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(at)
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
        .bind(at)
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO api_tokens (hash, user_name, created_at) VALUES ($1, $2, $3)")
            .bind(hash)
            .bind(user)
            .bind(at)
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
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                None,
            ),
            LibraryLevel::Collection => (
                "INSERT INTO library_collections
                   (id, name, description, created_by, created_at, entity_id)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                Some(LibraryLevel::Entity),
            ),
            LibraryLevel::Container => (
                "INSERT INTO library_containers
                   (id, name, description, created_by, created_at, collection_id)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
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
            .bind(item.created_at);
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
        .bind(image.created_at)
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
        .bind(at)
        .fetch_optional(&self.pool)
        .await?;
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
        .bind(tag.updated_at)
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
                    updated_at: row.try_get("updated_at")?,
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

/// Takes kiln's `max_connections` parameter off `url`: the URL for sqlx (which ignores what it
/// does not know, with a warning) and the pool's size.
fn pool_size(url: &str) -> Result<(String, u32), StoreError> {
    let invalid = |detail: String| {
        StoreError::Database(sqlx::Error::Configuration(
            format!("the database URL {detail}").into(),
        ))
    };
    let mut parsed = url::Url::parse(url).map_err(|err| invalid(format!("is not a URL: {err}")))?;
    let mut size = MAX_CONNECTIONS;
    let mut rest = Vec::new();
    for (name, value) in parsed.query_pairs() {
        if name != POOL_SIZE_PARAMETER {
            rest.push((name.into_owned(), value.into_owned()));
            continue;
        }
        size = value
            .parse()
            .ok()
            .filter(|size| CONNECTIONS_RANGE.contains(size))
            .ok_or_else(|| {
                invalid(format!(
                    "sets {POOL_SIZE_PARAMETER} to {value:?}; write a number from {} to {}",
                    CONNECTIONS_RANGE.start(),
                    CONNECTIONS_RANGE.end()
                ))
            })?;
    }
    if rest.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(rest);
    }
    Ok((parsed.into(), size))
}

/// Counts `allowance`'s charges of the last day in `tx` (which holds the client's lock) and
/// refuses a new build when they are spent; drops charges that have aged out, everyone's, so
/// the table holds about a day of new builds.
async fn charge_allowance(
    tx: &mut PgConnection,
    allowance: &Allowance,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let window_start = now - ALLOWANCE_WINDOW;
    // Rows another submit is deleting are left to it: nobody waits, no two deletes deadlock.
    sqlx::query(
        "DELETE FROM allowance_charges WHERE ctid IN (
             SELECT ctid FROM allowance_charges WHERE charged_at <= $1
             FOR UPDATE SKIP LOCKED)",
    )
    .bind(window_start)
    .execute(&mut *tx)
    .await?;
    let (used, oldest): (i64, Option<DateTime<Utc>>) = sqlx::query_as(
        "SELECT COUNT(*), MIN(charged_at) FROM allowance_charges
         WHERE client = $1 AND charged_at > $2",
    )
    .bind(&allowance.client)
    .bind(window_start)
    .fetch_one(&mut *tx)
    .await?;
    if used < i64::from(allowance.per_day) {
        return Ok(());
    }
    let retry_after = (oldest.unwrap_or(now) + ALLOWANCE_WINDOW - now)
        .to_std()
        .unwrap_or_default()
        .max(Duration::from_secs(1));
    Err(StoreError::AllowanceSpent {
        client: allowance.client.clone(),
        retry_after,
    })
}

/// Queues `event` for every listener; PostgreSQL sends it when `tx` commits, and never if it
/// rolls back.
async fn notify(tx: &mut PgConnection, event: &BuildEvent) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(EVENTS_CHANNEL)
        .bind(event_payload(event))
        .execute(tx)
        .await?;
    Ok(())
}

/// How an event is written in a notification: `submitted:`, `log:` or `finished:`, then the
/// build id (ids have no colon, and are far below NOTIFY's 8000 bytes).
fn event_payload(event: &BuildEvent) -> String {
    let kind = match event {
        BuildEvent::Submitted(_) => "submitted",
        BuildEvent::Log(_) => "log",
        BuildEvent::Finished(_) => "finished",
    };
    format!("{kind}:{}", event.build_id())
}

/// The event a notification's payload tells of; `None` for a payload kiln did not write.
fn parse_event(payload: &str) -> Option<BuildEvent> {
    let (kind, id) = payload.split_once(':')?;
    let id = id.to_owned();
    match kind {
        "submitted" => Some(BuildEvent::Submitted(id)),
        "log" => Some(BuildEvent::Log(id)),
        "finished" => Some(BuildEvent::Finished(id)),
        _ => None,
    }
}

/// Hands what `listener` hears to `events` until `stop` is dropped. A lost connection is
/// reconnected (by the listener) and said in the log: what was notified in between is missed,
/// which waiters and followers make up for by polling.
async fn forward_events(
    mut listener: PgListener,
    events: broadcast::Sender<BuildEvent>,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        let received = tokio::select! {
            _ = &mut stop => return,
            received = listener.try_recv() => received,
        };
        match received {
            Ok(Some(notification)) => match parse_event(notification.payload()) {
                // Nobody subscribed is no error.
                Some(event) => drop(events.send(event)),
                None => tracing::warn!(
                    payload = notification.payload(),
                    "ignoring a build event notification kiln did not write"
                ),
            },
            Ok(None) => tracing::warn!(
                "the database connection that listens for build events was lost; \
                 reconnected, events in between are missed"
            ),
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for build events; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// A row of one of the library selects above.
fn decode_library_path(row: &PgRow) -> Result<LibraryPath, StoreError> {
    fn item(row: &PgRow, prefix: &str) -> Result<Option<LibraryItem>, StoreError> {
        let column = |name: &str| format!("{prefix}_{name}");
        if row.try_column(column("id").as_str()).is_err() {
            return Ok(None);
        }
        Ok(Some(LibraryItem {
            id: row.try_get(column("id").as_str())?,
            name: row.try_get(column("name").as_str())?,
            description: row.try_get(column("description").as_str())?,
            created_by: row.try_get(column("created_by").as_str())?,
            created_at: row.try_get(column("created_at").as_str())?,
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

fn decode_image(row: &PgRow) -> Result<LibraryImage, StoreError> {
    let size: Option<i64> = row.try_get("size")?;
    Ok(LibraryImage {
        id: row.try_get("id")?,
        container_id: row.try_get("container_id")?,
        hash: row.try_get("hash")?,
        description: row.try_get("description")?,
        arch: row.try_get("arch")?,
        size: size.map(|size| u64::try_from(size).unwrap_or(0)),
        uploaded_at: row.try_get("uploaded_at")?,
        upload_secret: row.try_get("upload_secret")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
    })
}

/// Now, cut to the microseconds PostgreSQL keeps, so a record returned from a write equals the
/// same record read back.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// When a lease taken at `now` runs out; capped at a century, like the SQLite store's.
fn lease_end(now: DateTime<Utc>, lease: Duration) -> DateTime<Utc> {
    const CENTURY: TimeDelta = TimeDelta::days(36_500);
    now + TimeDelta::from_std(lease).map_or(CENTURY, |lease| lease.min(CENTURY))
}

/// Turns a `builds` row into a record; any column that does not decode makes the whole build
/// [`StoreError::Corrupt`].
fn decode(row: &PgRow) -> Result<BuildRecord, StoreError> {
    let id: String = row.try_get("id")?;
    decode_columns(row, &id).map_err(|detail| StoreError::Corrupt { id, detail })
}

fn decode_columns(row: &PgRow, id: &str) -> Result<BuildRecord, String> {
    fn get<'r, T>(row: &'r PgRow, column: &str) -> Result<T, String>
    where
        T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
    {
        row.try_get(column)
            .map_err(|e| format!("column {column}: {e}"))
    }
    fn parsed<T: std::str::FromStr>(row: &PgRow, column: &str) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        get::<String>(row, column)?
            .parse()
            .map_err(|e| format!("column {column}: {e}"))
    }
    fn count(row: &PgRow, column: &str) -> Result<u32, String> {
        let n: i32 = get(row, column)?;
        u32::try_from(n).map_err(|_| format!("column {column}: {n} is negative"))
    }
    // The format and platforms columns are for readers of the database: the job says both.
    let job = BuildJob::from_json(parsed(row, "kind")?, &get::<String>(row, "request")?)
        .map_err(|e| format!("column request: {e}"))?;
    Ok(BuildRecord {
        id: id.to_owned(),
        key: parsed(row, "key")?,
        attempt: count(row, "attempt")?,
        image: parsed(row, "image")?,
        job,
        containerfile: get(row, "containerfile")?,
        environment: get(row, "environment")?,
        status: parsed(row, "status")?,
        succeeded: get(row, "succeeded")?,
        reason: get(row, "reason")?,
        created_at: get(row, "created_at")?,
        started_at: get(row, "started_at")?,
        finished_at: get(row, "finished_at")?,
        lock: get(row, "conda_lock")?,
        digest: get(row, "digest")?,
        outputs: serde_json::from_str(&get::<String>(row, "outputs")?)
            .map_err(|e| format!("column outputs: {e}"))?,
        claims: count(row, "claims")?,
    })
}

/// The throwaway server the integration tests use too.
#[cfg(test)]
#[path = "../../tests/support/postgres.rs"]
mod server;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::contract::{Harness, contract_suite, key, request};

    /// A fresh database on a PostgreSQL server that the tests running at the same time share.
    struct TempDb {
        url: String,
        _server: Arc<server::PostgresServer>,
    }

    impl Harness for TempDb {
        async fn open(&self) -> Arc<dyn Store> {
            Arc::new(PostgresStore::open(&self.url).await.unwrap())
        }
    }

    async fn temp_db() -> TempDb {
        let server = server::PostgresServer::shared();
        TempDb {
            url: server.url().await,
            _server: server,
        }
    }

    contract_suite!(temp_db);

    #[tokio::test]
    async fn undecodable_rows_are_corrupt() {
        let db = temp_db().await;
        let store = PostgresStore::open(&db.url).await.unwrap();
        let id = store.submit(request(&key(1))).await.unwrap().build.id;
        sqlx::query("UPDATE builds SET outputs = 'not json'")
            .execute(&store.pool)
            .await
            .unwrap();
        let err = store.build(&id).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt { id: bad, detail } if *bad == id && detail.contains("outputs")),
            "{err}"
        );
    }

    /// Many appends to one log at once, from two handles (two nodes): every chunk is kept, each
    /// once, and the offsets the appends return are the log's lengths after each of them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_appends_keep_every_chunk() {
        let db = temp_db().await;
        let stores = [db.open().await, db.open().await];
        let id = stores[0].submit(request(&key(2))).await.unwrap().build.id;
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let store = Arc::clone(&stores[i % 2]);
                let id = id.clone();
                tokio::spawn(async move { store.append_log(&id, &format!("line {i:02}\n")).await })
            })
            .collect();
        let mut ends = Vec::new();
        for task in tasks {
            ends.push(task.await.unwrap().unwrap());
        }
        ends.sort_unstable();
        let expected: Vec<u64> = (1..=40).map(|n| n * 8).collect();
        assert_eq!(ends, expected);
        let text = stores[1].read_log(&id, 0).await.unwrap().text;
        let mut lines: Vec<&str> = text.lines().collect();
        lines.sort_unstable();
        let wanted: Vec<String> = (0..40).map(|i| format!("line {i:02}")).collect();
        assert_eq!(lines, wanted);
    }

    /// A listener whose connection dies (a server restart, a proxy's idle timeout) reconnects:
    /// builds submitted after that are heard again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_come_back_after_the_listening_connection_is_lost() {
        let db = temp_db().await;
        let watcher = db.open().await;
        let writer = PostgresStore::open(&db.url).await.unwrap();
        let mut events = watcher.events();
        let terminated: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
        )
        .fetch_all(&writer.pool)
        .await
        .unwrap();
        assert_eq!(terminated, [true, true], "both stores' listeners are cut");
        // What is notified before the listener is back is missed; keep submitting until heard.
        for n in 0..20 {
            let id = writer
                .submit(request(&key(200 + n)))
                .await
                .unwrap()
                .build
                .id;
            let heard = tokio::time::timeout(Duration::from_millis(500), async {
                loop {
                    match events.recv().await {
                        Ok(BuildEvent::Submitted(submitted)) if submitted == id => return,
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => panic!("events closed"),
                    }
                }
            })
            .await;
            if heard.is_ok() {
                return;
            }
        }
        panic!("no event was heard in 10 s after the connection was lost");
    }

    /// `store::open` picks the backend by the URL's scheme and names a scheme it does not know
    /// (and nothing else of the URL, which may hold a password).
    #[tokio::test]
    async fn stores_are_opened_by_url() {
        let db = temp_db().await;
        let id = crate::store::open(&db.url)
            .await
            .unwrap()
            .submit(request(&key(3)))
            .await
            .unwrap()
            .build
            .id;
        let direct = PostgresStore::open(&db.url).await.unwrap();
        assert!(direct.build(&id).await.unwrap().is_some());
        let postgresql = db.url.replacen("postgres://", "postgresql://", 1);
        let again = crate::store::open(&postgresql).await.unwrap();
        assert!(again.build(&id).await.unwrap().is_some());

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kiln.db");
        let sqlite = crate::store::open(&format!("sqlite://{}", file.display()))
            .await
            .unwrap();
        sqlite.ping().await.unwrap();
        assert!(file.exists());

        let unknown = crate::store::open("mysql://kiln:hunter2@db.example/kiln").await;
        let err = unknown.err().expect("mysql is refused");
        assert!(
            matches!(&err, StoreError::UnsupportedUrl { scheme } if scheme == "mysql"),
            "{err}"
        );
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    /// `max_connections` sizes the pool and is not passed on; other parameters are.
    #[test]
    fn the_pool_size_is_a_parameter_of_the_url() {
        let base = "postgres://kiln:pw@db.example:5432/kiln";
        assert_eq!(pool_size(base).unwrap(), (base.to_owned(), MAX_CONNECTIONS));
        assert_eq!(
            pool_size(&format!("{base}?max_connections=40")).unwrap(),
            (base.to_owned(), 40)
        );
        assert_eq!(
            pool_size(&format!("{base}?sslmode=require&max_connections=4")).unwrap(),
            (format!("{base}?sslmode=require"), 4)
        );
        for bad in ["1", "0", "many", "1001"] {
            let err = pool_size(&format!("{base}?max_connections={bad}")).unwrap_err();
            let StoreError::Database(sqlx::Error::Configuration(detail)) = &err else {
                panic!("{err}");
            };
            assert!(detail.to_string().contains("from 2 to 1000"), "{detail}");
            assert!(!detail.to_string().contains("pw"), "{detail}");
        }
    }

    /// A pool of `max_connections` connections, one of which listens: with 2, queries run one at
    /// a time and still all finish.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_small_pool_still_serves_concurrent_calls() {
        let db = temp_db().await;
        let store = Arc::new(
            PostgresStore::open(&format!("{}?max_connections=2", db.url))
                .await
                .unwrap(),
        );
        assert_eq!(store.pool.options().get_max_connections(), 2);
        let tasks: Vec<_> = (0..8u8)
            .map(|n| {
                let store = Arc::clone(&store);
                tokio::spawn(async move { store.submit(request(&key(150 + n))).await })
            })
            .collect();
        for task in tasks {
            assert!(task.await.unwrap().unwrap().created);
        }
    }

    #[tokio::test]
    async fn a_bad_url_is_refused_before_connecting() {
        let err = PostgresStore::open("postgres://kiln@127.0.0.1:notaport/kiln")
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Database(_)), "{err}");
    }
}

//! The build queue and its workers: builds go into the store, and workers — in this process or
//! any other on the same database — claim them with a lease, run them on a [`Backend`] and record
//! how they ended.
//!
//! The store does the coordinating: it keeps one unfinished build per key (single flight), hands
//! each build to one claimer, and tells every process of new and finished builds
//! ([`Store::events`]). This module only adds the loop around it: waking workers when a build
//! arrives, renewing the lease while the backend runs, stopping a build that was ended
//! elsewhere (cancelled on any node), turning a panicking backend into a failed build, and the
//! first and last lines of every build log.

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::broadcast::{self, error::RecvError};
use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::{Backend, BuildError, BuildLog, LogLimits};
use crate::config::BuildSettings;
use crate::metrics::Metrics;
use crate::spec::BuildKind;
use crate::store::{
    Allowance, BuildEvent, BuildOutcome, BuildRecord, BuildStatus, NewBuild, Store, StoreError,
    Submitted, Submitter, WorkerScope,
};

/// How long a claim lasts without a heartbeat. Long enough to ride out a slow database write,
/// short enough that a crashed worker's build is taken over within a minute.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(45);

/// How often idle workers look for builds, and waiters at builds, that the store could not tell
/// them of (another process on one SQLite file); everything else wakes them at once.
pub const DEFAULT_POLL: Duration = Duration::from_secs(1);

/// What every build is bounded by: its time, how often it is taken up, its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildBounds {
    /// The time limit of builds whose kind has none of its own.
    pub timeout: Duration,
    /// Time limits of package builds, `containerFile` builds and definition files.
    pub native_timeout: Option<Duration>,
    pub containerfile_timeout: Option<Duration>,
    pub definition_timeout: Option<Duration>,
    /// How often a build is taken up at most; a build whose workers stopped (crashed, lost
    /// the lease) this often fails instead.
    pub max_attempts: u32,
    /// Bounds of each build's log.
    pub log: LogLimits,
}

impl Default for BuildBounds {
    fn default() -> Self {
        Self::from_settings(&BuildSettings::default())
    }
}

impl BuildBounds {
    /// The bounds `settings` give.
    pub fn from_settings(settings: &BuildSettings) -> Self {
        let secs = |secs: Option<u64>| secs.map(Duration::from_secs);
        BuildBounds {
            timeout: Duration::from_secs(settings.timeout_secs),
            native_timeout: secs(settings.timeouts.native),
            containerfile_timeout: secs(settings.timeouts.containerfile),
            definition_timeout: secs(settings.timeouts.definition),
            max_attempts: settings.max_attempts.max(1),
            log: settings.log_limits(),
        }
    }

    /// The time limit of `build`, by its kind.
    pub fn timeout_of(&self, build: &BuildRecord) -> Duration {
        let own = match build.job.kind() {
            BuildKind::Native => self.native_timeout,
            BuildKind::Dockerfile => self.containerfile_timeout,
            BuildKind::Definition => self.definition_timeout,
        };
        own.unwrap_or(self.timeout)
    }
}

/// Submits builds and runs them on a pool of workers. Cheap to clone.
#[derive(Clone)]
pub struct Queue {
    shared: Arc<Shared>,
    workers: usize,
    lease: Duration,
    poll: Duration,
    bounds: BuildBounds,
    /// The kinds and platforms of build the workers take; other builds wait for other workers.
    scope: WorkerScope,
    /// Where workers count the builds they run, when set.
    metrics: Option<Arc<Metrics>>,
}

/// What the queue and all its workers share.
struct Shared {
    store: Arc<dyn Store>,
    backend: Arc<dyn Backend>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("workers", &self.workers)
            .field("lease", &self.lease)
            .field("poll", &self.poll)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// Why [`Queue::wait`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("there is no build {id:?}")]
    NotFound { id: String },
    #[error("build {id:?} was not done after {timeout:?}")]
    Timeout { id: String, timeout: Duration },
    #[error("reading build {id:?} failed")]
    Store {
        id: String,
        #[source]
        source: StoreError,
    },
}

impl Queue {
    /// A queue over `store` that runs builds on `backend` with `workers` concurrent workers
    /// once [`start`](Self::start)ed. Submitting works without starting: another process may
    /// be the one running the builds.
    pub fn new(store: Arc<dyn Store>, backend: Arc<dyn Backend>, workers: usize) -> Self {
        Queue {
            shared: Arc::new(Shared { store, backend }),
            workers,
            lease: DEFAULT_LEASE,
            poll: DEFAULT_POLL,
            bounds: BuildBounds::default(),
            scope: WorkerScope::any(),
            metrics: None,
        }
    }

    /// Has the workers take only builds of `kinds` (every kind unless set).
    pub fn with_kinds(mut self, kinds: &[BuildKind]) -> Self {
        self.scope.kinds = kinds.to_vec();
        self
    }

    /// Has the workers take only the builds `scope` covers (every build unless set).
    pub fn with_scope(mut self, scope: WorkerScope) -> Self {
        self.scope = scope;
        self
    }

    /// Sets the time limits, the cap on attempts and the log bounds of the builds workers run.
    pub fn with_bounds(mut self, bounds: BuildBounds) -> Self {
        self.bounds = bounds;
        self
    }

    /// Sets how long a claim lasts without a heartbeat (renewed every third of it). Shorter
    /// leases let other processes take over a crashed worker's build sooner.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Sets how often idle workers look for builds, and waiters at builds, that the store did
    /// not tell of (see [`DEFAULT_POLL`]).
    pub fn with_poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// Has the workers count the builds they run (started, finished, how long) in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The store the queue keeps its builds in.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.shared.store
    }

    /// Records a build for `new.key`, or joins the unfinished one (the store keeps one per key,
    /// across processes); the store's event about a new build wakes the workers.
    pub async fn submit(&self, new: NewBuild) -> Result<Submitted, StoreError> {
        self.submit_as(new, &Submitter::default()).await
    }

    /// [`submit`](Self::submit), recording `by` as the submitter of a new build (who may
    /// cancel it, whose queued builds it counts among).
    pub async fn submit_as(&self, new: NewBuild, by: &Submitter) -> Result<Submitted, StoreError> {
        self.submit_charged(new, by, None).await
    }

    /// [`submit_as`](Self::submit_as), charging a new build to `allowance` (see
    /// [`Store::submit_charged`]).
    pub async fn submit_charged(
        &self,
        new: NewBuild,
        by: &Submitter,
        allowance: Option<&Allowance>,
    ) -> Result<Submitted, StoreError> {
        self.shared.store.submit_charged(new, by, allowance).await
    }

    /// Ends build `id` as failed for `reason` (a user cancelled it). The worker running it, in
    /// any process the store tells, hears that it finished and stops it; one the store cannot
    /// tell (another process on a SQLite file) stops at its next heartbeat, finding it done.
    /// [`StoreError::IllegalTransition`] when the build was already done.
    pub async fn cancel(&self, id: &str, reason: &str) -> Result<BuildRecord, StoreError> {
        let store = &self.shared.store;
        let build = store
            .build(id)
            .await?
            .ok_or_else(|| StoreError::BuildNotFound { id: id.to_owned() })?;
        if build.status == BuildStatus::Done {
            return Err(StoreError::IllegalTransition {
                id: id.to_owned(),
                from: BuildStatus::Done,
                to: BuildStatus::Done,
            });
        }
        // Logged first: whoever follows the log stops reading once the build is done.
        if let Err(err) = store
            .append_log(id, &format!("build cancelled: {reason}\n"))
            .await
        {
            tracing::warn!(build = %id, error = %err, "writing the build log failed");
        }
        store
            .finish(
                id,
                BuildOutcome::Failed {
                    reason: reason.to_owned(),
                },
            )
            .await
    }

    /// Build `id` once it has ended, waiting up to `timeout` for it; `None` when it has not
    /// ended by then. The store's event about the finished build wakes it, whichever process
    /// ran the build; the poll interval is the fallback for a store that cannot tell.
    pub async fn wait_finished(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<Option<BuildRecord>, StoreError> {
        if timeout.is_zero() {
            return Ok(None);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        // Subscribed before reading: a build ending after the read is told to us.
        let mut events = self.shared.store.events();
        loop {
            let build = self.shared.store.build(id).await?;
            if let Some(done) = build.filter(|build| build.status == BuildStatus::Done) {
                return Ok(Some(done));
            }
            let next_look = deadline.min(tokio::time::Instant::now() + self.poll);
            loop {
                match tokio::time::timeout_at(next_look, events.recv()).await {
                    Err(_elapsed) if next_look == deadline => return Ok(None),
                    Err(_elapsed) => break,
                    Ok(Ok(BuildEvent::Finished(done))) if done == id => break,
                    Ok(Ok(_other)) => {}
                    Ok(Err(RecvError::Lagged(_))) => break,
                    Ok(Err(RecvError::Closed)) => {
                        tokio::time::sleep_until(next_look).await;
                        break;
                    }
                }
            }
        }
    }

    /// Spawns the workers on the current tokio runtime. They run until the handle is shut
    /// down or dropped.
    pub fn start(&self) -> QueueHandle {
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        for _ in 0..self.workers {
            let worker = Worker {
                id: format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()),
                queue: self.clone(),
                stop: stop.clone(),
            };
            tasks.spawn(worker.run());
        }
        QueueHandle { stop, tasks }
    }

    /// Waits until build `id` is done and returns it, polling the store so builds run by other
    /// processes count too.
    pub async fn wait(&self, id: &str, timeout: Duration) -> Result<BuildRecord, WaitError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut pause = Duration::from_millis(20);
        loop {
            let build = self
                .shared
                .store
                .build(id)
                .await
                .map_err(|source| WaitError::Store {
                    id: id.into(),
                    source,
                })?
                .ok_or_else(|| WaitError::NotFound { id: id.into() })?;
            if build.status == BuildStatus::Done {
                return Ok(build);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(WaitError::Timeout {
                    id: id.into(),
                    timeout,
                });
            }
            tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + pause)).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }
}

/// The running workers of a [`Queue`]. Dropping it stops them too, without waiting.
#[derive(Debug)]
pub struct QueueHandle {
    stop: CancellationToken,
    tasks: JoinSet<()>,
}

impl QueueHandle {
    /// Stops the workers and waits until they have. A build in progress is abandoned: its lease
    /// runs out and a worker (after a restart, or in another process) builds it again.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        while let Some(result) = self.tasks.join_next().await {
            if let Err(err) = result
                && err.is_panic()
            {
                tracing::error!(error = %err, "a build worker panicked");
            }
        }
    }
}

impl Drop for QueueHandle {
    fn drop(&mut self) {
        // The JoinSet aborts the worker tasks as it drops; cancelling first lets a worker that
        // is mid-await notice before it is torn down.
        self.stop.cancel();
    }
}

/// One worker task: claims builds one at a time and runs them.
struct Worker {
    /// Unique across processes, so a lease names exactly one worker.
    id: String,
    queue: Queue,
    stop: CancellationToken,
}

impl Worker {
    async fn run(self) {
        tracing::debug!(worker = %self.id, "build worker started");
        let shared = &self.queue.shared;
        // Subscribed before the first claim, so a build submitted between an empty claim and
        // the wait still wakes this worker.
        let mut events = shared.store.events();
        loop {
            if self.stop.is_cancelled() {
                break;
            }
            let claimed = shared
                .store
                .claim_next(&self.id, &self.queue.scope, self.queue.lease)
                .await;
            match claimed {
                Ok(Some(build)) => {
                    let span = build_span(&build);
                    if self.build(build).instrument(span).await.is_err() {
                        break;
                    }
                    continue;
                }
                Ok(None) => {}
                Err(StoreError::Corrupt { id, detail }) => {
                    // A build that cannot be read cannot be built: it ends failed, or every
                    // lease that runs out would take it up again.
                    let reason = format!("the stored build cannot be read: {detail}");
                    tracing::warn!(worker = %self.id, build = %id, %reason, "failing a build");
                    let _ = shared
                        .store
                        .finish(&id, BuildOutcome::Failed { reason })
                        .await;
                    continue;
                }
                Err(err) => {
                    tracing::warn!(worker = %self.id, error = %err, "claiming a build failed");
                }
            }
            tokio::select! {
                () = self.stop.cancelled() => break,
                () = new_build(&mut events) => {}
                () = tokio::time::sleep(self.queue.poll) => {}
            }
        }
        tracing::debug!(worker = %self.id, "build worker stopped");
    }

    /// Runs one claimed build to its end and records the outcome. `Err` when the queue was
    /// shut down meanwhile.
    async fn build(&self, build: BuildRecord) -> Result<(), Stopped> {
        let shared = &self.queue.shared;
        let bounds = self.queue.bounds;
        let id = build.id.clone();
        let log = BuildLog::with_limits(Arc::clone(&shared.store), &id, bounds.log);
        if build.claims > bounds.max_attempts {
            let reason = format!(
                "gave up after {} attempts: each time, the worker building it stopped before \
                 the end (kiln restarted or lost the build's lease)",
                bounds.max_attempts
            );
            tracing::warn!(build = %id, reason = %reason, "build failed");
            log.status_line(format!("build failed: {reason}")).await;
            if let Err(err) = shared
                .store
                .finish(&id, BuildOutcome::Failed { reason })
                .await
            {
                tracing::error!(build = %id, error = %err, "recording the build's outcome failed");
            }
            return Ok(());
        }
        tracing::info!(build = %id, worker = %self.id, attempt = build.claims, "build started");
        if build.claims > 1 {
            log.status_line(format!(
                "build {id} started again (attempt {} of {}): an earlier worker stopped \
                 before the end; its leftovers are removed",
                build.claims, bounds.max_attempts
            ))
            .await;
        } else {
            log.status_line(format!("build {id} started")).await;
        }
        let timeout = bounds.timeout_of(&build);
        let started = Instant::now();
        // A guard: a build abandoned below (lease lost, shutdown, task aborted) comes off the
        // in-progress gauge without counting as finished.
        let running_metric = self.queue.metrics.as_ref().map(Metrics::track_build);

        // Subscribed before the backend starts: a cancel from then on is heard.
        let mut events = shared.store.events();
        // Its own task, so a panic in the backend fails the build instead of the worker; a
        // JoinSet, so dropping it (lease lost, shutdown) aborts the backend.
        let mut running = JoinSet::new();
        let backend = Arc::clone(&shared.backend);
        let backend_log = log.clone();
        running.spawn(
            async move { backend.try_run(&build, &backend_log).await }
                .instrument(tracing::Span::current()),
        );

        let outcome = tokio::select! {
            result = running.join_next() => outcome_of(result),
            () = tokio::time::sleep(timeout) => {
                // Aborted and waited for, so the backend's processes are gone (a dropped
                // buildah run kills its process group) before the build is recorded.
                running.shutdown().await;
                BuildOutcome::Failed {
                    reason: format!("timed out after {} s", timeout.as_secs()),
                }
            }
            () = finished_elsewhere(&mut events, shared.store.as_ref(), &id) => {
                // Cancelled, on this node or another: stopped and waited for, so its processes
                // are gone before this worker takes the next build.
                // No log line: whoever ended it wrote why, and that stays the log's last line.
                running.shutdown().await;
                tracing::info!(build = %id, worker = %self.id, "build ended elsewhere, stopped");
                return Ok(());
            }
            lost = self.heartbeat(&id) => {
                if matches!(shared.store.build(&id).await, Ok(Some(b)) if b.status == BuildStatus::Done) {
                    tracing::info!(build = %id, worker = %self.id, "build ended elsewhere");
                    log.status_line("the build was ended elsewhere (cancelled), so this worker stopped it")
                        .await;
                    return Ok(());
                }
                tracing::warn!(build = %id, worker = %self.id, error = %lost, "build abandoned");
                log.status_line("this worker lost the build's lease, so another worker builds it")
                    .await;
                return Ok(());
            }
            () = self.stop.cancelled() => {
                tracing::info!(build = %id, worker = %self.id, "build abandoned at shutdown");
                log.status_line("kiln stopped during the build; it will be built again").await;
                return Err(Stopped);
            }
        };

        let elapsed = started.elapsed();
        let seconds = elapsed.as_secs_f64();
        match &outcome {
            BuildOutcome::Succeeded { .. } => {
                tracing::info!(build = %id, seconds, "build succeeded");
                log.status_line(format!("build succeeded in {seconds:.1} s"))
                    .await;
            }
            BuildOutcome::Failed { reason } => {
                tracing::info!(build = %id, seconds, reason = %reason, "build failed");
                log.status_line(format!("build failed: {reason}")).await;
            }
        }
        // Last, so a log that reached its cap ends saying how much it dropped.
        log.close().await;
        // Counted before the store says the build is done, so whoever sees it done (a waiter,
        // a test) also sees it counted.
        if let Some(running) = running_metric {
            running.finish(matches!(outcome, BuildOutcome::Succeeded { .. }), elapsed);
        }
        if let Err(err) = shared.store.finish(&id, outcome).await {
            tracing::error!(build = %id, error = %err, "recording the build's outcome failed");
        }
        Ok(())
    }

    /// Renews the lease on build `id` every third of the lease; returns only when the lease is
    /// lost. A failing database is retried: the lease is only lost once another worker takes
    /// the build over, and then the renewal says so.
    async fn heartbeat(&self, id: &str) -> StoreError {
        let store = &self.queue.shared.store;
        let lease = self.queue.lease;
        // The floor keeps a zero lease from spinning on the database.
        let every = (lease / 3).max(Duration::from_millis(10));
        loop {
            tokio::time::sleep(every).await;
            match store.renew_lease(id, &self.id, lease).await {
                Ok(()) => {}
                Err(err @ (StoreError::LeaseLost { .. } | StoreError::BuildNotFound { .. })) => {
                    return err;
                }
                Err(err) => {
                    tracing::warn!(build = %id, worker = %self.id, error = %err,
                        "renewing the build's lease failed");
                }
            }
        }
    }
}

/// The span a build runs in, its backend's events too: the build's id, kind and platforms.
fn build_span(build: &BuildRecord) -> tracing::Span {
    tracing::info_span!(
        "build",
        id = %build.id,
        kind = %build.job.kind(),
        format = %build.format(),
        platform = %build.platforms().iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
    )
}

/// Returns once the store tells of a new build (or of more events than were kept, some of
/// which may have been new builds). Never returns when the store cannot tell any more: the
/// poll goes on.
async fn new_build(events: &mut broadcast::Receiver<BuildEvent>) {
    loop {
        match events.recv().await {
            Ok(BuildEvent::Submitted(_)) | Err(RecvError::Lagged(_)) => return,
            Ok(_) => {}
            Err(RecvError::Closed) => std::future::pending().await,
        }
    }
}

/// Returns once build `id` is done while this worker runs it: the store told of it, or, after
/// events were missed, the store says so. Never returns otherwise.
async fn finished_elsewhere(
    events: &mut broadcast::Receiver<BuildEvent>,
    store: &dyn Store,
    id: &str,
) {
    loop {
        match events.recv().await {
            Ok(BuildEvent::Finished(done)) if done == id => return,
            Ok(_) => {}
            Err(RecvError::Lagged(_)) => {
                if matches!(store.build(id).await, Ok(Some(b)) if b.status == BuildStatus::Done) {
                    return;
                }
            }
            Err(RecvError::Closed) => std::future::pending().await,
        }
    }
}

/// The queue was shut down while a worker was building.
#[derive(Debug)]
struct Stopped;

/// What the backend task's end means for the build: the one place a backend's failure becomes
/// the reason stored with the build; its whole cause chain goes to the log.
fn outcome_of(result: Option<Result<Result<BuildOutcome, BuildError>, JoinError>>) -> BuildOutcome {
    let reason = match result {
        Some(Ok(Ok(outcome))) => return outcome,
        Some(Ok(Err(err))) => err.reason(),
        Some(Err(err)) if err.is_panic() => {
            format!("the build crashed: {}", panic_message(err.into_panic()))
        }
        Some(Err(_)) | None => "the build was cancelled".to_owned(),
    };
    BuildOutcome::Failed { reason }
}

/// The text a panic was raised with, when it was raised with text.
fn panic_message(payload: Box<dyn Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(text) => *text,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(text) => (*text).to_owned(),
            Err(_) => "the backend panicked".to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use tempfile::TempDir;

    use super::*;
    use crate::store::contract::{key, request};
    use crate::store::{ImageOutput, SqliteStore};

    const WAIT: Duration = Duration::from_secs(20);

    /// Sleeps, counts its runs, then succeeds.
    struct Counting {
        runs: AtomicUsize,
        pause: Duration,
    }

    impl Counting {
        fn new(pause: Duration) -> Arc<Self> {
            Arc::new(Counting {
                runs: AtomicUsize::new(0),
                pause,
            })
        }

        fn runs(&self) -> usize {
            self.runs.load(Ordering::SeqCst)
        }
    }

    #[async_trait]
    impl Backend for Counting {
        async fn try_run(
            &self,
            build: &BuildRecord,
            log: &BuildLog,
        ) -> Result<BuildOutcome, BuildError> {
            self.runs.fetch_add(1, Ordering::SeqCst);
            log.line("solving").await;
            tokio::time::sleep(self.pause).await;
            Ok(BuildOutcome::Succeeded {
                digest: format!("sha256:{}", build.key),
                outputs: vec![ImageOutput {
                    platform: "linux/amd64".into(),
                    digest: "sha256:aa".into(),
                    size: 1,
                    download_url: None,
                }],
                lock: None,
            })
        }
    }

    /// Fails the first `failures` runs, then succeeds.
    struct Flaky {
        failures: usize,
        runs: AtomicUsize,
    }

    #[async_trait]
    impl Backend for Flaky {
        async fn try_run(
            &self,
            build: &BuildRecord,
            _log: &BuildLog,
        ) -> Result<BuildOutcome, BuildError> {
            if self.runs.fetch_add(1, Ordering::SeqCst) < self.failures {
                return Err(BuildError::refused("the solver found no environment"));
            }
            Ok(BuildOutcome::Succeeded {
                digest: format!("sha256:{}", build.key),
                outputs: vec![],
                lock: None,
            })
        }
    }

    /// Panics on builds of key 1, succeeds on the others.
    struct Panicky;

    #[async_trait]
    impl Backend for Panicky {
        async fn try_run(
            &self,
            build: &BuildRecord,
            _log: &BuildLog,
        ) -> Result<BuildOutcome, BuildError> {
            assert_ne!(build.key.as_str(), key(1), "the backend hit a bug");
            Ok(BuildOutcome::Succeeded {
                digest: "sha256:ok".into(),
                outputs: vec![],
                lock: None,
            })
        }
    }

    async fn open(dir: &TempDir) -> Arc<dyn Store> {
        Arc::new(
            SqliteStore::open(&dir.path().join("kiln.db"))
                .await
                .unwrap(),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_identical_submits_build_once() {
        let dir = TempDir::new().unwrap();
        let backend = Counting::new(Duration::from_millis(200));
        let queue = Queue::new(open(&dir).await, backend.clone(), 4);
        let workers = queue.start();

        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let queue = queue.clone();
                tokio::spawn(async move { queue.submit(request(&key(1))).await.unwrap() })
            })
            .collect();
        let mut created = 0;
        let mut ids = std::collections::HashSet::new();
        for task in tasks {
            let sub = task.await.unwrap();
            created += usize::from(sub.created);
            ids.insert(sub.build.id);
        }
        assert_eq!((created, ids.len()), (1, 1));
        let id = ids.into_iter().next().unwrap();
        let done = queue.wait(&id, WAIT).await.unwrap();
        assert_eq!(done.succeeded, Some(true));
        assert_eq!(done.digest, Some(format!("sha256:{}", key(1))));
        assert_eq!(backend.runs(), 1);

        let log = queue.store().read_log(&id, 0).await.unwrap().text;
        let lines: Vec<_> = log.lines().collect();
        assert_eq!(lines.len(), 3, "{log}");
        assert_eq!(
            lines[..2],
            [format!("build {id} started").as_str(), "solving"]
        );
        assert!(
            lines[2].starts_with("build succeeded in ") && lines[2].ends_with(" s"),
            "{log}"
        );
        workers.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn failed_builds_record_why_and_the_next_submit_retries() {
        let dir = TempDir::new().unwrap();
        let backend = Arc::new(Flaky {
            failures: 1,
            runs: AtomicUsize::new(0),
        });
        let queue = Queue::new(open(&dir).await, backend, 2);
        let _workers = queue.start();

        let first = queue.submit(request(&key(2))).await.unwrap().build;
        let failed = queue.wait(&first.id, WAIT).await.unwrap();
        assert_eq!(failed.succeeded, Some(false));
        assert_eq!(
            failed.reason.as_deref(),
            Some("the solver found no environment")
        );
        let log = queue.store().read_log(&first.id, 0).await.unwrap().text;
        assert!(
            log.ends_with("build failed: the solver found no environment\n"),
            "{log}"
        );

        let second = queue.submit(request(&key(2))).await.unwrap();
        assert!(second.created);
        assert_eq!(second.build.id, format!("bd-{}_2", &key(2)[..16]));
        let done = queue.wait(&second.build.id, WAIT).await.unwrap();
        assert_eq!((done.attempt, done.succeeded), (2, Some(true)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_cancelled_build_stops_and_the_worker_goes_on() {
        let dir = TempDir::new().unwrap();
        // One worker, busy for a minute unless the cancel stops it.
        let backend = Counting::new(Duration::from_secs(60));
        let queue = Queue::new(open(&dir).await, backend.clone(), 1);
        let _workers = queue.start();

        let long = queue.submit(request(&key(1))).await.unwrap().build;
        while backend.runs() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let cancelled = queue.cancel(&long.id, "cancelled by alice").await.unwrap();
        assert_eq!(
            (cancelled.status, cancelled.succeeded),
            (BuildStatus::Done, Some(false))
        );
        assert_eq!(cancelled.reason.as_deref(), Some("cancelled by alice"));
        let log = queue.store().read_log(&long.id, 0).await.unwrap().text;
        assert!(
            log.ends_with("build cancelled: cancelled by alice\n"),
            "{log}"
        );
        let again = queue.cancel(&long.id, "twice").await.unwrap_err();
        assert!(
            matches!(again, StoreError::IllegalTransition { .. }),
            "{again}"
        );

        // The worker is free at once, not after the minute.
        let next = queue.submit(request(&key(2))).await.unwrap().build;
        while backend.runs() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            queue.store().build(&next.id).await.unwrap().unwrap().status,
            BuildStatus::Building
        );
        // The cancelled build stays as the cancel left it.
        let still = queue.store().build(&long.id).await.unwrap().unwrap();
        assert_eq!(still.reason.as_deref(), Some("cancelled by alice"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn waiters_for_a_build_are_told_when_it_ends() {
        let dir = TempDir::new().unwrap();
        let backend = Counting::new(Duration::from_millis(300));
        let queue = Queue::new(open(&dir).await, backend.clone(), 1);
        let _workers = queue.start();

        let quick = queue.submit(request(&key(16))).await.unwrap().build;
        assert_eq!(
            queue
                .wait_finished(&quick.id, Duration::ZERO)
                .await
                .unwrap(),
            None,
            "no wait, no answer"
        );
        let done = queue.wait_finished(&quick.id, WAIT).await.unwrap().unwrap();
        assert_eq!(
            (done.status, done.succeeded),
            (BuildStatus::Done, Some(true))
        );
        // Ended before the call: read from the store.
        let again = queue.wait_finished(&quick.id, WAIT).await.unwrap().unwrap();
        assert_eq!(again.id, quick.id);

        // A build still running when the time is up: nothing. One cancelled meanwhile: its end.
        let slow = Queue::new(
            Arc::clone(queue.store()),
            Counting::new(Duration::from_secs(600)),
            1,
        );
        let _slow_workers = slow.start();
        let long = slow.submit(request(&key(17))).await.unwrap().build;
        let waited = slow
            .wait_finished(&long.id, Duration::from_millis(100))
            .await
            .unwrap();
        assert_eq!(waited, None);
        let waiter = {
            let slow = slow.clone();
            let id = long.id.clone();
            tokio::spawn(async move { slow.wait_finished(&id, WAIT).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        slow.cancel(&long.id, "cancelled by alice").await.unwrap();
        let ended = waiter.await.unwrap().unwrap().unwrap();
        assert_eq!(ended.succeeded, Some(false));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_panicking_backend_fails_the_build_not_the_worker() {
        let dir = TempDir::new().unwrap();
        // One worker: the build after the panic must be served by the same one.
        let queue = Queue::new(open(&dir).await, Arc::new(Panicky), 1);
        let _workers = queue.start();

        let crashing = queue.submit(request(&key(1))).await.unwrap().build;
        let crashed = queue.wait(&crashing.id, WAIT).await.unwrap();
        assert_eq!(crashed.succeeded, Some(false));
        let reason = crashed.reason.unwrap_or_default();
        assert!(
            reason.starts_with("the build crashed: ") && reason.contains("the backend hit a bug"),
            "{reason}"
        );

        let next = queue.submit(request(&key(3))).await.unwrap().build;
        let done = queue.wait(&next.id, WAIT).await.unwrap();
        assert_eq!(done.succeeded, Some(true));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_processes_on_one_database_build_once() {
        let dir = TempDir::new().unwrap();
        let backend = Counting::new(Duration::from_millis(200));
        // Separate stores (connection pools) and queues, as two kiln processes would have.
        let queues = [
            Queue::new(open(&dir).await, backend.clone(), 2),
            Queue::new(open(&dir).await, backend.clone(), 2),
        ];
        let _workers = queues.each_ref().map(Queue::start);

        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let queue = queues[i % 2].clone();
                tokio::spawn(async move { queue.submit(request(&key(4))).await.unwrap() })
            })
            .collect();
        let mut ids = std::collections::HashSet::new();
        for task in tasks {
            ids.insert(task.await.unwrap().build.id);
        }
        assert_eq!(ids.len(), 1);
        let id = ids.into_iter().next().unwrap();
        for queue in &queues {
            let done = queue.wait(&id, WAIT).await.unwrap();
            assert_eq!(done.succeeded, Some(true));
        }
        assert_eq!(backend.runs(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn builds_from_another_process_are_picked_up_by_polling() {
        let dir = TempDir::new().unwrap();
        let backend = Counting::new(Duration::ZERO);
        let builder = Queue::new(open(&dir).await, backend.clone(), 1)
            .with_poll_interval(Duration::from_millis(50));
        let _workers = builder.start();
        // This queue has no workers; the other's hear of its build from the store, or poll.
        let frontend = Queue::new(open(&dir).await, backend.clone(), 0);
        let id = frontend.submit(request(&key(5))).await.unwrap().build.id;
        let done = frontend.wait(&id, WAIT).await.unwrap();
        assert_eq!(done.succeeded, Some(true));
    }

    /// Builds submitted and cancelled through another handle on the database (another node)
    /// reach the workers at once: their poll and heartbeat are an hour apart here, and the
    /// backend takes a minute, so only the store's events can start the second build in time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn builds_and_cancels_from_another_process_reach_the_workers_at_once() {
        let dir = TempDir::new().unwrap();
        let backend = Counting::new(Duration::from_secs(60));
        let hour = Duration::from_secs(3600);
        let builder = Queue::new(open(&dir).await, backend.clone(), 1)
            .with_poll_interval(hour)
            .with_lease(hour);
        let _workers = builder.start();
        let frontend = Queue::new(open(&dir).await, backend.clone(), 0);

        let long = frontend.submit(request(&key(7))).await.unwrap().build.id;
        let deadline = Instant::now() + WAIT;
        while backend.runs() == 0 {
            assert!(Instant::now() < deadline, "the build never started");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        frontend.cancel(&long, "cancelled by bob").await.unwrap();
        frontend.submit(request(&key(8))).await.unwrap();
        while backend.runs() < 2 {
            assert!(
                Instant::now() < deadline,
                "the worker never stopped the cancelled build or never heard of the next"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let log = frontend.store().read_log(&long, 0).await.unwrap().text;
        assert!(
            log.ends_with("build cancelled: cancelled by bob\n"),
            "{log}"
        );
    }

    /// A waiter hears that a build another process ran has ended, without polling (its poll is
    /// an hour apart here).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_waiter_hears_of_a_build_another_process_ran() {
        let dir = TempDir::new().unwrap();
        let backend = Counting::new(Duration::from_millis(300));
        let builder = Queue::new(open(&dir).await, backend.clone(), 1);
        let _workers = builder.start();
        let frontend = Queue::new(open(&dir).await, backend.clone(), 0)
            .with_poll_interval(Duration::from_secs(3600));
        let id = frontend.submit(request(&key(10))).await.unwrap().build.id;
        let done = frontend.wait_finished(&id, WAIT).await.unwrap();
        assert_eq!(done.map(|b| b.succeeded), Some(Some(true)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_lost_lease_abandons_the_build() {
        let dir = TempDir::new().unwrap();
        let store = open(&dir).await;
        let backend = Counting::new(Duration::from_secs(30));
        let queue = Queue::new(Arc::clone(&store), backend.clone(), 1)
            .with_lease(Duration::from_millis(150));
        let _workers = queue.start();

        let id = queue.submit(request(&key(6))).await.unwrap().build.id;
        let deadline = Instant::now() + WAIT;
        while backend.runs() == 0 {
            assert!(Instant::now() < deadline, "the build never started");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Someone else ends the build (an operator, or a worker that took it over); the store
        // tells the worker, which lets go without recording anything.
        let failed = BuildOutcome::Failed {
            reason: "cancelled by an operator".into(),
        };
        store.finish(&id, failed).await.unwrap();
        let build = store.build(&id).await.unwrap().unwrap();
        assert_eq!(build.reason.as_deref(), Some("cancelled by an operator"));

        // The worker is free again at once, not after the 30 s build.
        let next = queue.submit(request(&key(9))).await.unwrap().build.id;
        let started = Instant::now();
        while backend.runs() < 2 {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the worker is stuck"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let next = store.build(&next).await.unwrap().unwrap();
        assert_eq!(next.status, BuildStatus::Building);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_build_past_its_time_limit_fails_and_the_worker_goes_on() {
        let dir = TempDir::new().unwrap();
        let backend = Counting::new(Duration::from_secs(600));
        let bounds = BuildBounds {
            native_timeout: Some(Duration::from_secs(1)),
            ..BuildBounds::default()
        };
        let queue = Queue::new(open(&dir).await, backend.clone(), 1).with_bounds(bounds);
        let _workers = queue.start();

        let id = queue.submit(request(&key(11))).await.unwrap().build.id;
        let done = queue.wait(&id, WAIT).await.unwrap();
        assert_eq!(done.succeeded, Some(false));
        assert_eq!(done.reason.as_deref(), Some("timed out after 1 s"));
        let log = queue.store().read_log(&id, 0).await.unwrap().text;
        assert!(
            log.ends_with("build failed: timed out after 1 s\n"),
            "{log}"
        );

        // The worker is free again: the next build runs (and times out too).
        let next = queue.submit(request(&key(12))).await.unwrap().build.id;
        queue.wait(&next, WAIT).await.unwrap();
        assert_eq!(backend.runs(), 2);
    }

    #[test]
    fn time_limits_go_by_the_kind_of_build() {
        let settings = BuildSettings {
            timeout_secs: 100,
            timeouts: crate::config::KindTimeouts {
                native: None,
                containerfile: Some(5),
                definition: Some(7),
            },
            ..BuildSettings::default()
        };
        let bounds = BuildBounds::from_settings(&settings);
        let mut build = sample_record();
        assert_eq!(bounds.timeout_of(&build), Duration::from_secs(100));
        build.job = crate::spec::BuildJob::Dockerfile(crate::spec::DockerfileJob {
            platform: crate::spec::Platform::LinuxAmd64,
        });
        assert_eq!(bounds.timeout_of(&build), Duration::from_secs(5));
        assert_eq!(BuildBounds::default().timeout, Duration::from_secs(3600));
        assert_eq!(BuildBounds::default().max_attempts, 3);
    }

    fn sample_record() -> BuildRecord {
        let new = request(&key(0));
        BuildRecord {
            id: "bd-0000000000000000_1".into(),
            key: new.key,
            attempt: 1,
            image: new.image,
            job: new.job,
            containerfile: String::new(),
            environment: String::new(),
            status: BuildStatus::Pending,
            succeeded: None,
            reason: None,
            created_at: chrono::Utc::now(),
            started_at: None,
            finished_at: None,
            lock: None,
            digest: None,
            outputs: vec![],
            claims: 0,
        }
    }

    /// A build whose stored job cannot be read (written by hand, or by a newer kiln) ends
    /// failed saying so, instead of being taken up again whenever its lease runs out.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_build_that_cannot_be_read_ends_failed() {
        let dir = TempDir::new().unwrap();
        let store = open(&dir).await;
        let backend = Counting::new(Duration::ZERO);
        let id = store.submit(request(&key(15))).await.unwrap().build.id;
        let raw = sqlx::SqlitePool::connect(&format!(
            "sqlite://{}",
            dir.path().join("kiln.db").display()
        ))
        .await
        .unwrap();
        sqlx::query("UPDATE builds SET request = 'not json' WHERE id = $1")
            .bind(&id)
            .execute(&raw)
            .await
            .unwrap();
        let queue = Queue::new(Arc::clone(&store), backend.clone(), 1);
        let _workers = queue.start();
        let deadline = Instant::now() + WAIT;
        let (status, reason) = loop {
            let row: (String, Option<String>) =
                sqlx::query_as("SELECT status, reason FROM builds WHERE id = $1")
                    .bind(&id)
                    .fetch_one(&raw)
                    .await
                    .unwrap();
            if row.0 == "DONE" || Instant::now() > deadline {
                break row;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(status, "DONE");
        let reason = reason.unwrap_or_default();
        assert!(
            reason.starts_with("the stored build cannot be read: column request"),
            "{reason}"
        );
        assert_eq!(backend.runs(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_build_whose_workers_keep_dying_fails_after_the_last_attempt() {
        let dir = TempDir::new().unwrap();
        let store = open(&dir).await;
        let backend = Counting::new(Duration::ZERO);
        let id = store.submit(request(&key(13))).await.unwrap().build.id;
        // Three workers took it and died (their leases run out at once).
        for dead in ["dead-1", "dead-2", "dead-3"] {
            let claimed = store
                .claim_next(dead, &WorkerScope::any(), Duration::ZERO)
                .await
                .unwrap();
            assert_eq!(claimed.map(|b| b.id).as_deref(), Some(id.as_str()));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Another build (of another kind, so that this claim skips the first) taken over once,
        // before the workers start: they would take it first.
        let dockerfile = crate::store::contract::request_of(BuildKind::Dockerfile, &key(14));
        let second = store.submit(dockerfile).await.unwrap().build.id;
        let claimed = store
            .claim_next(
                "dead",
                &WorkerScope::of_kinds(&[BuildKind::Dockerfile]),
                Duration::ZERO,
            )
            .await
            .unwrap();
        assert_eq!(claimed.map(|b| b.id), Some(second.clone()));
        let queue = Queue::new(Arc::clone(&store), backend.clone(), 1);
        let _workers = queue.start();
        let done = queue.wait(&id, WAIT).await.unwrap();
        assert_eq!(done.succeeded, Some(false));
        let reason = done.reason.unwrap_or_default();
        assert!(reason.starts_with("gave up after 3 attempts"), "{reason}");

        // The build taken over once more is tried again, and its log says so.
        let done = queue.wait(&second, WAIT).await.unwrap();
        assert_eq!(done.succeeded, Some(true));
        let log = store.read_log(&second, 0).await.unwrap().text;
        assert!(log.contains("started again (attempt 2 of 3)"), "{log}");
        assert_eq!(
            backend.runs(),
            1,
            "the second build ran, a fourth attempt of the first never"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_flooding_backend_leaves_a_capped_log() {
        struct Flood;
        #[async_trait]
        impl Backend for Flood {
            async fn try_run(
                &self,
                _build: &BuildRecord,
                log: &BuildLog,
            ) -> Result<BuildOutcome, BuildError> {
                log.line("x".repeat(100_000)).await;
                for n in 0..10_000 {
                    log.push(&format!("line {n}"));
                }
                log.flush().await;
                Err(BuildError::refused("flooded"))
            }
        }
        let dir = TempDir::new().unwrap();
        let bounds = BuildBounds {
            log: LogLimits {
                max_line: 1000,
                max_total: 20_000,
            },
            ..BuildBounds::default()
        };
        let queue = Queue::new(open(&dir).await, Arc::new(Flood), 1).with_bounds(bounds);
        let _workers = queue.start();
        let id = queue.submit(request(&key(15))).await.unwrap().build.id;
        queue.wait(&id, WAIT).await.unwrap();
        let store = queue.store();
        let mut log = String::new();
        let mut offset = 0;
        loop {
            let page = store.read_log(&id, offset).await.unwrap();
            if page.text.is_empty() {
                break;
            }
            log.push_str(&page.text);
            offset = page.next_offset;
        }
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(
            lines[1],
            format!("{} [… 99000 bytes cut]", "x".repeat(1000))
        );
        assert_eq!(lines[lines.len() - 2], "build failed: flooded");
        // Every line pushed: the cut line, then "line 0" … "line 9999" with newlines.
        let total: usize = lines[1].len()
            + 1
            + (0..10_000)
                .map(|n| format!("line {n}\n").len())
                .sum::<usize>();
        let kept: usize = lines[1..lines.len() - 2]
            .iter()
            .map(|line| line.len() + 1)
            .sum();
        assert!(log.len() < 21_000, "{}", log.len());
        let first_line = lines[0].len() + 1;
        assert_eq!(
            lines[lines.len() - 1],
            format!("log truncated, {} bytes dropped", total - kept),
            "{first_line}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn builds_run_by_a_queue_with_metrics_are_counted() {
        let dir = TempDir::new().unwrap();
        let metrics = Arc::new(Metrics::default());
        let queue = Queue::new(open(&dir).await, Counting::new(Duration::ZERO), 1)
            .with_metrics(Arc::clone(&metrics));
        let _workers = queue.start();

        let id = queue.submit(request(&key(10))).await.unwrap().build.id;
        let done = queue.wait(&id, WAIT).await.unwrap();
        assert_eq!(done.succeeded, Some(true));

        let text = metrics.render();
        for line in [
            "kiln_builds_total{outcome=\"succeeded\"} 1",
            "kiln_builds_total{outcome=\"failed\"} 0",
            "kiln_builds_in_progress 0",
            "kiln_build_duration_seconds_count{outcome=\"succeeded\"} 1",
            "kiln_build_duration_seconds_bucket{outcome=\"succeeded\",le=\"+Inf\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn shutdown_stops_the_workers() {
        let dir = TempDir::new().unwrap();
        let backend = Counting::new(Duration::ZERO);
        let queue = Queue::new(open(&dir).await, backend.clone(), 3)
            .with_poll_interval(Duration::from_millis(20));
        let workers = queue.start();
        let first = queue.submit(request(&key(7))).await.unwrap().build.id;
        queue.wait(&first, WAIT).await.unwrap();

        tokio::time::timeout(Duration::from_secs(5), workers.shutdown())
            .await
            .expect("workers stop promptly");
        let second = queue.submit(request(&key(8))).await.unwrap().build.id;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let pending = queue.store().build(&second).await.unwrap().unwrap();
        assert_eq!(pending.status, BuildStatus::Pending);
        assert_eq!(backend.runs(), 1);

        let err = queue
            .wait(&second, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(matches!(err, WaitError::Timeout { .. }), "{err}");
    }
}

//! A running kiln: store, embedded registry, build workers and the HTTP API on one listener,
//! or only some of them, by role (`kiln serve --role api|worker`).
//!
//! `kiln serve` and the tests start kiln the same way, through [`run`], so what the tests
//! exercise is what users run.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;

use crate::api::ops::Ops;
use crate::api::{self, App, AppState};
use crate::build::Backend;
use crate::build::Dispatch;
use crate::build::buildah::{Buildah, Storage};
use crate::build::containerfile::{ContainerfileBuilder, ContainerfileSettings};
use crate::build::contexts::{BuildContexts, CONTEXT_TTL};
use crate::build::definition::{DefinitionBuilder, DefinitionSettings};
use crate::build::native::NativeBuilder;
use crate::build::queue::Queue;
use crate::config::{Config, ExternalRegistry, NodeRole};
use crate::credentials::{Credentials, Secret};
use crate::metrics::Metrics;
use crate::registry::client::{Auth, RegistryClient};
use crate::registry::gc::GcReport;
use crate::registry::{Images, RegistryState};
use crate::store::Store;

/// Serves kiln on `listener` until `shutdown` resolves, then lets running builds finish their
/// current step and returns. What runs depends on `config.role`: the API (role `api`), build
/// workers answering only `/health` and `/metrics` (role `worker`), or both (`all`).
pub async fn run(
    mut config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.check_role()?;
    if config.secret_key.is_none() {
        // Role `all`, alone: one key for this start, so its tokens and tickets die with it.
        config.secret_key = Some(Secret::new(format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        )));
    }
    private_data_dir(&config.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {} readable by kiln's user alone",
            config.data_dir.display()
        )
    })?;
    let role = config.role;
    let address = listener.local_addr()?;
    let store = crate::store::open(config.database_url().expose()).await?;
    let registry = RegistryState::new(config.registry_config())
        .await
        .context("cannot open the embedded registry's storage")?;
    let metrics = Arc::new(Metrics::default());
    let buildah = if role.runs_builds() {
        prepared_buildah(&config, store.as_ref()).await?
    } else {
        // Never run here: the API only enqueues.
        unprepared_buildah(&config)
    };
    let (backends, repodata) = builders(&config, &registry, address, buildah, store.clone())?;
    let workers = if role.runs_builds() {
        config.build.workers
    } else {
        0
    };
    let queue = build_queue(&config, store.clone(), backends, workers)
        .with_scope(config.build.worker_scope())
        .with_metrics(metrics.clone());
    let workers = role.runs_builds().then(|| queue.start());
    match role {
        NodeRole::Worker => {
            tracing::info!(
                %address,
                kinds = ?config.build.kinds,
                platforms = ?config.build.platforms,
                "kiln is building (role worker: /health and /metrics only)"
            );
            let limits = crate::listen::Limits::new(&config.http);
            // TODO(lead): once wip/registry lands `external_registry`, check it in /health:
            // `.with_registry(RegistryProbe::new(&external.url, Some(credentials))?)`.
            let ops = Arc::new(Ops::new(config, store, metrics));
            crate::listen::serve(listener, api::ops::worker_router(ops), limits, shutdown).await;
        }
        NodeRole::All | NodeRole::Api => {
            let parts = ApiParts {
                config,
                store,
                registry,
                queue,
                repodata,
                metrics,
            };
            serve_api(parts, listener, shutdown).await?;
        }
    }
    if let Some(workers) = workers {
        workers.shutdown().await;
    }
    Ok(())
}

/// What the HTTP API is made of.
struct ApiParts {
    config: Config,
    store: Arc<dyn Store>,
    registry: RegistryState,
    queue: Queue,
    repodata: crate::resolve::Repodata,
    metrics: Arc<Metrics>,
}

/// Serves the API and the embedded registry, with their housekeeping (upload cleanup, record
/// pruning, garbage collection), until `shutdown`; then writes the request records still
/// waiting.
async fn serve_api(
    parts: ApiParts,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let ApiParts {
        config,
        store,
        registry,
        queue,
        repodata,
        metrics,
    } = parts;
    let images = image_store(&config, &registry)?;
    let contexts = BuildContexts::new(images.clone(), config.build_contexts_dir());
    let cleaner = tokio::spawn(clean_uploads(registry.clone(), contexts));
    let pruner = tokio::spawn(prune_periodically(store.clone(), config.retention));
    let collector = tokio::spawn(collect_periodically(config.clone(), registry.clone()));
    tracing::info!(
        address = %listener.local_addr()?,
        registry = %config.registry,
        role = %config.role,
        "kiln is serving"
    );
    // Search reads the builds' repodata: one gateway, one copy in memory.
    let search = crate::search::PackageIndex::from_config(&config, repodata)
        .context("cannot set up the HTTP client of package search")?;
    let state = AppState::new(
        App::new(config, store, registry, queue, search, metrics).with_image_store(images),
    );
    let stop_writer = tokio_util::sync::CancellationToken::new();
    let writer = state.requests.start(stop_writer.clone());
    let unwritten = state.requests.clone();
    let limits = crate::listen::Limits::new(&state.config.http);
    crate::listen::serve(listener, api::router(state), limits, shutdown).await;
    // The request records still waiting are written before kiln stops.
    stop_writer.cancel();
    if let Err(err) = writer.await {
        tracing::error!(error = %err, "the request records' writer failed");
    }
    // Requests answered while the writer stopped.
    if let Err(err) = unwritten.flush().await {
        tracing::error!(error = %err, "container request records were lost at shutdown");
    }
    cleaner.abort();
    pruner.abort();
    collector.abort();
    Ok(())
}

/// The buildah runner of a process that runs builds: the sandbox settings checked, its
/// containment set up, and what builds of a killed kiln left swept.
async fn prepared_buildah(config: &Config, store: &dyn Store) -> anyhow::Result<Buildah> {
    let root_on_host = crate::build::sandbox::check_settings(&config.build)?;
    if !crate::assemble::squashfs::limit_runs(config.build.mksquashfs_runs()) {
        tracing::debug!("mksquashfs runs were capped before (another kiln in this process)");
    }
    if root_on_host {
        tracing::warn!(
            "build steps run as root on the host (isolation = \"chroot\"): anyone who may \
             submit a Dockerfile or definition file can take over this machine"
        );
    }
    let buildah = buildah(config).await;
    crate::build::leftovers::sweep(&buildah, store, &config.work_dir()).await;
    Ok(buildah)
}

/// The build queue over `store`, running builds on `backend` with `workers` workers within
/// the settings' bounds (time limits, attempts, log size) and lease: `kiln serve` and
/// `kiln build` run builds alike.
pub fn build_queue(
    config: &Config,
    store: Arc<dyn Store>,
    backend: Arc<dyn Backend>,
    workers: usize,
) -> Queue {
    Queue::new(store, backend, workers)
        .with_bounds(crate::build::queue::BuildBounds::from_settings(
            &config.build,
        ))
        .with_lease(std::time::Duration::from_secs(
            config.build.lease_secs.max(1),
        ))
}

/// Creates the data directory mode 0700, or makes an existing one so: it holds the database,
/// blobs and users' build contexts, which other users of the host have no business reading.
fn private_data_dir(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
}

/// The buildah runner of Dockerfile and definition builds, with a storage of its own in the
/// data directory, not yet set up: an API node's backends, which never run.
fn unprepared_buildah(config: &Config) -> Buildah {
    Buildah::new(&config.build)
        .with_insecure_registries(&config.insecure_registries)
        .with_storage(Storage::new(&config.buildah_storage_dir()))
}

/// The buildah runner of Dockerfile and definition builds, with a storage of its own in the
/// data directory and its containment set up (and jails of dead kilns swept) now. A host that
/// cannot contain builds still serves native ones: the reason is logged here and given by each
/// buildah build that fails for it.
async fn buildah(config: &Config) -> Buildah {
    let buildah = unprepared_buildah(config);
    match buildah.prepare().await {
        Ok(containment) => tracing::info!("{containment}"),
        Err(err) => tracing::error!(
            error = %crate::error_chain(&err),
            "Dockerfile and definition builds will fail"
        ),
    }
    buildah
}

/// The registry kiln keeps its images in, as builders and the API reach it: the configured
/// external registry with its credentials, or else this process's embedded registry over
/// loopback with the builders' credential made at start.
#[derive(Debug, Clone)]
pub struct ImageRegistry {
    /// `host[:port]`, as image references name it.
    pub host: String,
    /// Who builders push (and the API reads) as.
    pub credentials: Credentials,
    /// Spoken to over plain HTTP, and without TLS verification by buildah, though it is not on
    /// loopback (which always is).
    pub insecure: bool,
}

impl ImageRegistry {
    /// The registry `config` names, or the embedded `registry` listening on `address`.
    pub fn of(
        config: &Config,
        registry: &RegistryState,
        address: SocketAddr,
    ) -> anyhow::Result<Self> {
        match &config.external_registry {
            Some(external) => Self::external(external),
            None => Ok(ImageRegistry {
                host: SocketAddr::from(([127, 0, 0, 1], address.port())).to_string(),
                credentials: registry.builder_credentials().clone(),
                insecure: false,
            }),
        }
    }

    /// The configured external registry.
    fn external(external: &ExternalRegistry) -> anyhow::Result<Self> {
        Ok(ImageRegistry {
            host: external.host(),
            credentials: external.credentials().context(
                "external_registry needs a user and a password (KILN_EXTERNAL_REGISTRY_USER \
                 and KILN_EXTERNAL_REGISTRY_PASSWORD)",
            )?,
            insecure: external.plain_http(),
        })
    }

    /// A client for it with its credentials.
    pub fn client(&self, config: &Config) -> anyhow::Result<RegistryClient> {
        let mut insecure_hosts = config.insecure_registries.clone();
        if self.insecure {
            insecure_hosts.push(self.host.clone());
        }
        Ok(RegistryClient::new(
            &self.host,
            Auth::Basic(self.credentials.clone()),
            &insecure_hosts,
        )?)
    }
}

/// Where the API reads and publishes images: the external registry when one is configured,
/// else the embedded registry's storage, read in-process.
pub fn image_store(config: &Config, registry: &RegistryState) -> anyhow::Result<Images> {
    Ok(match &config.external_registry {
        Some(external) => Images::remote(ImageRegistry::external(external)?.client(config)?),
        None => Images::embedded(registry.clone()),
    })
}

/// The build backends: they push to the registry kiln keeps its images in (see
/// [`ImageRegistry`]). Also the native builder's repodata, which search shares.
fn builders(
    config: &Config,
    registry: &RegistryState,
    address: SocketAddr,
    buildah: Buildah,
    store: Arc<dyn Store>,
) -> anyhow::Result<(Arc<dyn Backend>, crate::resolve::Repodata)> {
    let target = ImageRegistry::of(config, registry, address)?;
    let client = target.client(config)?;
    // `FROM` images in kiln's registry are pulled from it with the builders' credentials.
    let buildah =
        buildah.with_own_registry(&target.host, target.credentials.clone(), target.insecure);
    let native =
        NativeBuilder::from_config(config, client.clone(), store).map_err(anyhow::Error::msg)?;
    let repodata = native.resolver.repodata().clone();
    let containerfile = ContainerfileBuilder::new(
        buildah.clone(),
        ContainerfileSettings {
            registry: target.host.clone(),
            credentials: target.credentials.clone(),
            insecure: target.insecure,
            work_dir: config.work_dir(),
        },
    )?;
    let definition = DefinitionBuilder::new(
        buildah,
        client.clone(),
        DefinitionSettings {
            registry: target.host.clone(),
            public_registry: config.registry.to_string(),
            public_url: config.public_url(),
            contexts: BuildContexts::new(Images::remote(client), config.build_contexts_dir()),
            work_dir: config.work_dir(),
        },
    );
    let backends = Arc::new(Dispatch::new(
        Arc::new(native),
        Arc::new(containerfile),
        Arc::new(definition),
    ));
    Ok((backends, repodata))
}

/// Removes abandoned registry uploads and remote builds' stale build contexts every few
/// minutes.
async fn clean_uploads(registry: RegistryState, contexts: BuildContexts) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(300));
    loop {
        every.tick().await;
        if let Err(err) = registry.cleanup_expired_uploads().await {
            tracing::warn!(error = %err, "cleaning up expired registry uploads failed");
        }
        if let Err(err) = contexts.remove_stale(CONTEXT_TTL).await {
            tracing::warn!(error = %crate::error_chain(&err), "removing stale build contexts failed");
        }
    }
}

/// Runs [`prune`] now and then every `retention.prune_every_secs`.
async fn prune_periodically(store: Arc<dyn Store>, retention: crate::config::Retention) {
    let every = std::time::Duration::from_secs(retention.prune_every_secs.max(1));
    let mut every = tokio::time::interval(every);
    loop {
        every.tick().await;
        if let Err(err) = prune(store.as_ref(), retention, chrono::Utc::now()).await {
            tracing::warn!(error = %crate::error_chain(&err), "pruning old records failed");
        }
    }
}

/// What one pruning pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Container request records.
    pub requests: u64,
    /// Builds whose logs were deleted.
    pub logs: u64,
}

/// Deletes, as of `now`, container request records unused for longer than
/// `retention.request_days` and the logs of builds finished longer than `retention.log_days`
/// ago (a setting of 0 keeps them).
pub async fn prune(
    store: &dyn Store,
    retention: crate::config::Retention,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Pruned, crate::store::StoreError> {
    let before = |days: u64| {
        i64::try_from(days)
            .ok()
            .and_then(chrono::TimeDelta::try_days)
            .and_then(|age| now.checked_sub_signed(age))
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC)
    };
    let mut pruned = Pruned::default();
    if retention.request_days > 0 {
        pruned.requests = store.prune_requests(before(retention.request_days)).await?;
    }
    if retention.log_days > 0 {
        pruned.logs = store.prune_logs(before(retention.log_days)).await?;
    }
    if pruned != Pruned::default() {
        tracing::info!(
            requests = pruned.requests,
            logs = pruned.logs,
            "pruned old request records and build logs"
        );
    }
    Ok(pruned)
}

/// What one garbage collection removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Collected {
    /// From the embedded registry.
    pub registry: GcReport,
    /// Expired build contexts of remote builds (in the embedded or external registry).
    pub contexts: usize,
}

impl std::fmt::Display for Collected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}, {} expired build contexts",
            self.registry, self.contexts
        )
    }
}

/// One garbage collection: the embedded registry's (see [`crate::registry::gc`]) and expired
/// build contexts. `kiln gc` and the scheduled pass both run this.
pub async fn collect_garbage(
    config: &Config,
    registry: &RegistryState,
) -> anyhow::Result<Collected> {
    let report = registry
        .collect_garbage(&config.gc_policy())
        .await
        .context("collecting the registry's garbage failed")?;
    let contexts = BuildContexts::new(image_store(config, registry)?, config.build_contexts_dir())
        .remove_stale(CONTEXT_TTL)
        .await
        .context("removing expired build contexts failed")?;
    Ok(Collected {
        registry: report,
        contexts,
    })
}

/// Runs [`collect_garbage`] every `embedded_registry.gc_interval_secs` (never when `0`).
async fn collect_periodically(config: Config, registry: RegistryState) {
    let interval = config.embedded_registry.gc_interval_secs;
    if interval == 0 {
        return;
    }
    let period = std::time::Duration::from_secs(interval);
    let mut every = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        every.tick().await;
        match collect_garbage(&config, &registry).await {
            Ok(collected) => tracing::info!(%collected, "garbage collected"),
            Err(err) => tracing::warn!(error = %format!("{err:#}"), "garbage collection failed"),
        }
    }
}

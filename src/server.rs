//! A running kiln: store, embedded registry, build workers and the HTTP API on one listener.
//!
//! `kiln serve` and the tests start kiln the same way, through [`run`], so what the tests
//! exercise is what users run.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;

use crate::api::{self, App, AppState};
use crate::build::Backend;
use crate::build::buildah::Buildah;
use crate::build::containerfile::{ContainerfileBuilder, ContainerfileSettings, Dispatch};
use crate::build::definition::{DefinitionBuilder, DefinitionSettings};
use crate::build::native::NativeBuilder;
use crate::build::queue::Queue;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::registry::RegistryState;
use crate::registry::client::{Auth, RegistryClient};
use crate::store::{SqliteStore, Store};

/// Serves kiln on `listener` until `shutdown` resolves, then lets running builds finish their
/// current step and returns.
pub async fn run(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            config.data_dir.display()
        )
    })?;
    let root_on_host = crate::build::sandbox::check_settings(&config.build)?;
    if root_on_host {
        tracing::warn!(
            "build steps run as root on the host (isolation = \"chroot\"): anyone who may \
             submit a Dockerfile or definition file can take over this machine"
        );
    }
    let address = listener.local_addr()?;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&config.database_path()).await?);
    let registry = RegistryState::new(config.registry_config())
        .await
        .context("cannot open the embedded registry's storage")?;
    let cleaner = tokio::spawn(clean_uploads(registry.clone(), config.build_contexts_dir()));
    let metrics = Arc::new(Metrics::default());
    let queue = Queue::new(
        store.clone(),
        builders(&config, &registry, address, buildah(&config).await)?,
        config.build.workers,
    )
    .with_metrics(metrics.clone());
    let workers = queue.start();
    tracing::info!(%address, registry = %config.registry, "kiln is serving");
    let search = crate::search::PackageIndex::from_config(&config)
        .context("cannot set up the HTTP client of package search")?;
    let state = AppState::new(App {
        search,
        limiter: crate::api::limit::RateLimiter::new(config.api.anonymous_builds_per_day),
        user_limiter: crate::api::limit::RateLimiter::new(config.api.user_builds_per_day),
        submitting: tokio::sync::Mutex::new(()),
        contexts: Default::default(),
        config,
        store,
        registry,
        queue,
        metrics,
    });
    let served = axum::serve(
        listener,
        api::router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
    .context("the server failed");
    cleaner.abort();
    workers.shutdown().await;
    served
}

/// The buildah runner of Dockerfile and definition builds, its containment set up (and
/// abandoned builds swept) now. A host that cannot contain builds still serves native ones:
/// the reason is logged here and given by each buildah build that fails for it.
async fn buildah(config: &Config) -> Buildah {
    let buildah = Buildah::new(&config.build).with_insecure_registries(&config.insecure_registries);
    match buildah.prepare().await {
        Ok(containment) => tracing::info!("{containment}"),
        Err(err) => tracing::error!(
            error = %crate::error_chain(&err),
            "Dockerfile and definition builds will fail"
        ),
    }
    buildah
}

/// The build backends: they push to this process's own registry, over loopback, with the
/// builders' credential.
fn builders(
    config: &Config,
    registry: &RegistryState,
    address: SocketAddr,
    buildah: Buildah,
) -> anyhow::Result<Arc<dyn Backend>> {
    let builder = registry.builder_credentials().clone();
    let loopback = SocketAddr::from(([127, 0, 0, 1], address.port()));
    let client = RegistryClient::new(
        &loopback.to_string(),
        Auth::Basic {
            user: builder.user,
            password: builder.password,
        },
        &config.insecure_registries,
    )?;
    let native = NativeBuilder::from_config(config, client.clone()).map_err(anyhow::Error::msg)?;
    let containerfile = ContainerfileBuilder::new(
        buildah.clone(),
        ContainerfileSettings {
            registry: loopback.to_string(),
            user: registry.builder_credentials().user.clone(),
            password: registry.builder_credentials().password.clone(),
            insecure: false,
            work_dir: config.data_dir.join("work"),
        },
    )?;
    let definition = DefinitionBuilder::new(
        buildah,
        client,
        DefinitionSettings {
            registry: loopback.to_string(),
            public_registry: config.registry.to_string(),
            public_url: config.public_url(),
            contexts_dir: config.build_contexts_dir(),
            work_dir: config.data_dir.join("work"),
        },
    );
    Ok(Arc::new(Dispatch::new(
        Arc::new(native),
        Arc::new(containerfile),
        Arc::new(definition),
    )))
}

/// Removes abandoned registry uploads and remote builds' stale build contexts every few
/// minutes.
async fn clean_uploads(registry: RegistryState, contexts: std::path::PathBuf) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(300));
    loop {
        every.tick().await;
        if let Err(err) = registry.cleanup_expired_uploads().await {
            tracing::warn!(error = %err, "cleaning up expired registry uploads failed");
        }
        if let Err(err) = api::remove_stale_contexts(&contexts, api::CONTEXT_TTL).await {
            tracing::warn!(error = %err, "removing stale build contexts failed");
        }
    }
}

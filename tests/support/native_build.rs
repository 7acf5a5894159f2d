//! Native builds as the queue runs them, for tests: a builder pushing to a test app's
//! registry, one build of a request, and running a command in the image it made.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use kiln::build::native::NativeBuilder;
use kiln::build::{Backend, BuildLog};
use kiln::credentials::Credentials;
use kiln::plan::ImagePlan;
use kiln::registry::client::{Auth, RegistryClient};
use kiln::spec::{Request, RequestInput};
use kiln::store::{BuildOutcome, NewBuild, SqliteStore, Store};

use super::conda_channel::CHANNEL_NAME;
use super::{PUSHER, TestApp};

/// The repository of the base every test build uses, for conda and pip-only requests alike.
pub const BASE_REPOSITORY: &str = "kiln/base/debian";

/// A native builder with its own data directory (and database there), pushing to `app`'s
/// registry.
pub async fn builder(app: &TestApp, channel_url: &str, data: &Path) -> NativeBuilder {
    let base = format!("{}/{BASE_REPOSITORY}:bookworm", app.address);
    let mut config = kiln::config::Config {
        registry: app.address.to_string().parse().expect("host"),
        data_dir: data.to_owned(),
        channel_mirrors: BTreeMap::from([(CHANNEL_NAME.to_owned(), channel_url.to_owned())]),
        ..kiln::config::Config::default()
    };
    config.base.conda.image = Some(base.parse().expect("base reference"));
    config.base.python.image = Some(base.parse().expect("base reference"));
    config.base.python.python = None;
    let store = SqliteStore::open(&data.join("kiln.db"))
        .await
        .expect("the builder's database");
    NativeBuilder::from_config(&config, pusher(app), Arc::new(store)).expect("builder")
}

pub fn pusher(app: &TestApp) -> RegistryClient {
    let auth = Auth::Basic(Credentials::new(PUSHER.0, PUSHER.1));
    RegistryClient::new(&app.address.to_string(), auth, &[]).expect("client")
}

/// Runs one build of `entries` for `platforms` through `backend`, as the queue would, and
/// returns the outcome, the image name and the log.
pub async fn build(
    backend: &NativeBuilder,
    app: &TestApp,
    entries: &[&str],
    platforms: &[&str],
    tag_suffix: &str,
) -> (BuildOutcome, String, String) {
    build_format(backend, app, entries, platforms, "docker", tag_suffix).await
}

/// [`build`] in `format` (`docker` or `sif`); for sif, of the first platform's image.
pub async fn build_format(
    backend: &NativeBuilder,
    app: &TestApp,
    entries: &[&str],
    platforms: &[&str],
    format: &str,
    tag_suffix: &str,
) -> (BuildOutcome, String, String) {
    let request = Request::try_from(RequestInput {
        entries: entries.iter().map(|e| e.to_string()).collect(),
        channels: vec![CHANNEL_NAME.to_owned()],
        platforms: platforms.iter().map(|p| p.to_string()).collect(),
        format: Some(format.to_owned()),
        base: None,
    })
    .expect("valid request");
    let config = kiln::config::Config {
        registry: app.address.to_string().parse().expect("host"),
        ..kiln::config::Config::default()
    };
    let plan = ImagePlan::for_request(&request, &config.recipe_images(), &config.registry)
        .expect("plan")
        .remove(0);
    let data = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&data.path().join("kiln.db"))
            .await
            .expect("store"),
    );
    let image = format!("{}{tag_suffix}", plan.image);
    let new = NewBuild {
        image: image.parse().expect("an image name"),
        ..plan.new_build()
    };
    store.submit(new).await.expect("submit");
    let record = store
        .claim_next(
            "test",
            &kiln::store::WorkerScope::any(),
            std::time::Duration::from_secs(3600),
        )
        .await
        .expect("claim")
        .expect("the build waits");
    let log = BuildLog::new(store.clone(), record.id.clone());
    let outcome = backend.run(&record, &log).await;
    let text = store.read_log(&record.id, 0).await.expect("log").text;
    (outcome, image, text)
}

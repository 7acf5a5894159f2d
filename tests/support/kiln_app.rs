//! kiln in-process for the benchmarks: the app and its embedded registry on 127.0.0.1, and one
//! build of a request timed as the queue runs it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use kiln::build::{Backend, BuildLog};
use kiln::config::{Config, RegistryUser};
use kiln::credentials::Credentials;
use kiln::plan::ImagePlan;
use kiln::registry::client::{Auth, RegistryClient};
use kiln::spec::Request;
use kiln::store::{BuildOutcome, BuildRecord, Store};

/// kiln, served from a task on the current runtime the way `kiln serve` runs it.
#[derive(Debug)]
pub struct Kiln {
    pub address: std::net::SocketAddr,
    password: String,
    _data: tempfile::TempDir,
}

/// The registry user the benchmarks push as.
const BENCH_USER: &str = "kiln-bench";

impl Kiln {
    pub async fn start() -> Result<Kiln> {
        let data = tempfile::tempdir()?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let password = uuid::Uuid::new_v4().simple().to_string();
        let mut config = Config {
            data_dir: data.path().to_owned(),
            registry: address.to_string().parse()?,
            ..Config::default()
        };
        config.embedded_registry.users = vec![RegistryUser::new(
            BENCH_USER,
            password.clone(),
            // Benchmarks push bases and images into kiln's own namespaces.
            true,
        )];
        tokio::spawn(async move {
            if let Err(err) = kiln::server::run(config, listener, std::future::pending()).await {
                eprintln!("kiln server stopped: {err:#}");
            }
        });
        Ok(Kiln {
            address,
            password,
            _data: data,
        })
    }

    /// A client allowed to push.
    pub fn pusher(&self) -> Result<RegistryClient> {
        let auth = Auth::Basic(Credentials::new(BENCH_USER, self.password.clone()));
        Ok(RegistryClient::new(&self.address.to_string(), auth, &[])?)
    }
}

/// One timed build.
#[derive(Debug)]
pub struct Build {
    pub image: String,
    pub digest: String,
    /// Compressed size of the image, base included.
    pub image_bytes: u64,
    pub elapsed: Duration,
}

/// Builds `request` into the image its plan names, as a queue worker would (a record from the
/// store, a log into it, the outcome recorded), timing `Backend::run`; fails, with the build
/// log, unless the build succeeded; gives the build and its log. The same request again is a
/// new attempt: it rebuilds.
pub async fn timed_build(
    builder: &dyn Backend,
    store: &Arc<dyn Store>,
    kiln: &Kiln,
    request: &Request,
) -> Result<(Build, String)> {
    let config = Config {
        registry: kiln.address.to_string().parse()?,
        ..Config::default()
    };
    let plan = ImagePlan::for_request(request, &config.recipe_images(), &config.registry)?
        .into_iter()
        .next()
        .context("a docker request has one image")?;
    let image = plan.image.to_string();
    let submitted = store.submit(plan.new_build()).await?;
    let record = claim(store.as_ref(), &submitted.build.id).await?;
    let log = BuildLog::new(store.clone(), record.id.clone());
    eprintln!("building {image} ({} packages)", request.entries().len());
    let started = Instant::now();
    let outcome = builder.run(&record, &log).await;
    let elapsed = started.elapsed();
    finished_build(store, &record.id, image, outcome, elapsed).await
}

/// Records the `outcome` of build `id` (of `image`, run in `elapsed`) as a queue worker would
/// and reads its log back; fails, with the log, unless the build succeeded.
pub async fn finished_build(
    store: &Arc<dyn Store>,
    id: &str,
    image: String,
    outcome: BuildOutcome,
    elapsed: Duration,
) -> Result<(Build, String)> {
    let text = store.read_log(id, 0).await?.text;
    eprint!("{text}");
    store.finish(id, outcome.clone()).await?;
    let BuildOutcome::Succeeded {
        digest, outputs, ..
    } = outcome
    else {
        bail!("the build of {image} failed: {outcome:?}\n{text}");
    };
    Ok((
        Build {
            image,
            digest,
            image_bytes: outputs.iter().map(|output| output.size).sum(),
            elapsed,
        },
        text,
    ))
}

/// Takes build `id` off the queue as a worker would; the bench's store holds no other.
pub async fn claim(store: &dyn Store, id: &str) -> Result<BuildRecord> {
    let claimed = store
        .claim_next(
            "bench",
            &kiln::store::WorkerScope::any(),
            Duration::from_secs(24 * 3600),
        )
        .await?
        .context("the submitted build waits")?;
    if claimed.id != id {
        bail!("claimed build {} instead of {id}", claimed.id);
    }
    Ok(claimed)
}

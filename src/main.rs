//! The `kiln` command: run the service, or print recipes and image names for a request.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use kiln::build::native::NativeBuilder;
use kiln::config::Config;
use kiln::plan::ImagePlan;
use kiln::registry::client::{Auth, RegistryClient};
use kiln::spec::{Channel, Format, KilnBase, PackageEntry, Platform, Request};

/// kiln turns conda and pip package lists into container images, on demand.
#[derive(Debug, Parser)]
#[command(name = "kiln", version)]
struct Cli {
    /// A TOML configuration file (also KILN_CONFIG).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service: the HTTP API on the configured address, with its store.
    Serve {
        /// What this process does: `all` (the API and build workers), `api` (serves HTTP and
        /// enqueues builds) or `worker` (runs builds; serves only /health and /metrics).
        /// Overrides KILN_ROLE and `role` in the configuration file; default all. `api` and
        /// `worker` need secret_key (KILN_SECRET_KEY), the same on every node.
        #[arg(long, value_name = "ROLE", value_parser = clap::builder::PossibleValuesParser::new(kiln::config::NodeRole::NAMES))]
        role: Option<String>,
    },
    /// Print the recipe of a request: the Dockerfile (docker) or definition file (sif).
    Recipe {
        #[command(flatten)]
        request: RequestArgs,
        /// Print the conda environment file instead.
        #[arg(long)]
        conda_env: bool,
    },
    /// Print the image URI of a request (one line per platform for sif).
    Name {
        #[command(flatten)]
        request: RequestArgs,
    },
    /// Build the image of a request natively, push it, and print its URI.
    Build {
        #[command(flatten)]
        request: RequestArgs,
        /// Also write the SIF to this file (`--format sif`, one platform).
        #[arg(long, value_name = "FILE.sif")]
        output: Option<PathBuf>,
    },
    /// Remove what nothing needs from the embedded registry and data directory: blobs no
    /// manifest references, expired uploads, build contexts and remote-build results. `kiln
    /// serve` does this itself every `embedded_registry.gc_interval_secs`; run this one while
    /// it is stopped.
    Gc,
    /// Base images kiln builds on.
    Base {
        #[command(subcommand)]
        command: BaseCommand,
    },
    /// Tokens of the Singularity library API (`singularity remote login`).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Make a token for USER and print it: the way in when sign-up is closed
    /// (`api.open_signup = false`). kiln keeps only its hash; USER is claimed if nobody held it.
    Create {
        /// The user name, which is also the library entity the token may write under.
        user: String,
    },
}

#[derive(Debug, Subcommand)]
enum BaseCommand {
    /// Make a base image from Debian's packages (kiln's essentials plus --package ones) and
    /// push it into the registry. Runs nothing from the packages, so needs no root or qemu.
    Create {
        /// Repository and tag in the registry, e.g. kiln/base/gl:bookworm.
        #[arg(long)]
        name: String,
        /// Extra Debian packages; repeat or separate with commas (e.g. libgl1).
        #[arg(long = "package", value_delimiter = ',')]
        packages: Vec<String>,
        /// Platforms; repeat for several. Default: linux/amd64 and linux/arm64.
        #[arg(long = "platform")]
        platforms: Vec<String>,
    },
    /// Build a Debian base image with mmdebstrap and push it into the registry, for bases
    /// that need maintainer scripts to run.
    Bootstrap {
        /// Repository and tag in the registry, e.g. kiln/base/debian:bookworm.
        #[arg(long, default_value = "kiln/base/debian:bookworm")]
        name: String,
        /// Debian suite.
        #[arg(long, default_value = "bookworm")]
        suite: String,
        /// Extra Debian packages, comma-separated (e.g. python3).
        #[arg(long, value_delimiter = ',')]
        include: Vec<String>,
        /// Platforms; repeat for several.
        #[arg(long = "platform", default_value = "linux/amd64")]
        platforms: Vec<String>,
        /// Debian mirror.
        #[arg(long, default_value = kiln::base::DEFAULT_MIRROR)]
        mirror: String,
    },
}

/// A request written as command-line arguments.
#[derive(Debug, Args)]
struct RequestArgs {
    /// docker (an OCI image) or sif (a Singularity image file).
    #[arg(long, default_value = "docker")]
    format: String,
    /// Target platform; repeat for several (linux/amd64, linux/arm64).
    #[arg(long = "platform")]
    platforms: Vec<String>,
    /// Conda channel; repeat for several, highest priority first.
    #[arg(long = "channel")]
    channels: Vec<String>,
    /// A base in kiln's registry instead of the default, e.g. kiln/base/gl:bookworm (made
    /// with `kiln base create`).
    #[arg(long)]
    base: Option<String>,
    /// Packages: `samtools=1.21`, `bioconda::bcftools=1.21`, `pip:requests==2.32.3`.
    #[arg(required = true, value_name = "ENTRY")]
    entries: Vec<String>,
}

/// A request that was refused: exit status 2, like a usage error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(String);

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => match err.downcast_ref::<Refused>() {
            Some(Refused(message)) => {
                eprintln!("error: {message}");
                ExitCode::from(2)
            }
            None => {
                eprintln!("error: {err:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = Config::from_process(cli.config.as_deref())?;
    match cli.command {
        Command::Serve { role } => {
            if let Some(role) = role {
                config.role = role.parse().map_err(Refused)?;
            }
            serve(config)
        }
        Command::Recipe { request, conda_env } => {
            let plan = plan(&config, &request)?;
            let first = &plan[0];
            if conda_env {
                print!("{}", first.recipes.environment);
            } else {
                print!("{}", first.recipes.for_format(first.request.format()));
            }
            Ok(())
        }
        Command::Name { request } => {
            for image in plan(&config, &request)? {
                println!("{}", image.image);
            }
            Ok(())
        }
        Command::Build { request, output } => {
            let plans = plan(&config, &request)?;
            if output.is_some() && (plans.len() != 1 || plans[0].request.format() != Format::Sif) {
                return Err(Refused(
                    "--output writes one SIF file: use it with --format sif and one --platform"
                        .into(),
                )
                .into());
            }
            // The queue's and the backend's warnings, on stderr beside the build log; stdout
            // carries only the image names.
            init_logging(std::io::stderr, "kiln=warn");
            runtime()?.block_on(build(config, plans, output))
        }
        Command::Gc => runtime()?.block_on(gc(config)),
        Command::Base { command } => runtime()?.block_on(base(config, command)),
        Command::Token {
            command: TokenCommand::Create { user },
        } => runtime()?.block_on(create_token(config, &user)),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().context("cannot start the async runtime")
}

/// The client `kiln build` and `kiln base` push with: to the configured registry, with the
/// configured push credentials.
fn push_client(config: &Config) -> anyhow::Result<RegistryClient> {
    let auth = config
        .build
        .push_credentials()
        .map_or(Auth::Anonymous, Auth::Basic);
    Ok(RegistryClient::new(
        config.registry.as_str(),
        auth,
        &config.insecure_registries,
    )?)
}

/// `kiln build`: one build through the same queue and backend the service uses, with its log
/// shown as it grows.
async fn build(
    config: Config,
    plans: Vec<ImagePlan>,
    output: Option<PathBuf>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            config.data_dir.display()
        )
    })?;
    let store = kiln::store::open(config.database_url().expose()).await?;
    let backend = NativeBuilder::from_config(&config, push_client(&config)?, store.clone())
        .map_err(anyhow::Error::msg)?;
    let queue = kiln::server::build_queue(&config, store.clone(), Arc::new(backend), 1);
    let workers = queue.start();
    let mut failed = false;
    for plan in plans {
        let submitted = queue.submit(plan.new_build()).await?;
        let id = submitted.build.id;
        eprintln!("build {id}: {}", plan.image);
        let mut offset = 0;
        let record = loop {
            let slice = store.read_log(&id, offset).await?;
            eprint!("{}", slice.text);
            offset = slice.next_offset;
            match queue.wait(&id, std::time::Duration::from_millis(300)).await {
                Ok(record) => {
                    // The rest of the log, page by page.
                    loop {
                        let slice = store.read_log(&id, offset).await?;
                        if slice.text.is_empty() {
                            break;
                        }
                        eprint!("{}", slice.text);
                        offset = slice.next_offset;
                    }
                    break record;
                }
                Err(kiln::build::queue::WaitError::Timeout { .. }) => continue,
                Err(err) => return Err(err.into()),
            }
        };
        if record.succeeded == Some(true) {
            if let Some(path) = &output {
                save_sif(&push_client(&config)?, &plan, path).await?;
                eprintln!("wrote {}", path.display());
            }
            println!("{}", plan.image);
        } else {
            failed = true;
            eprintln!(
                "error: build {id} failed: {}",
                record.reason.unwrap_or_default()
            );
        }
    }
    workers.shutdown().await;
    if failed {
        anyhow::bail!("the build failed");
    }
    Ok(())
}

/// Downloads the SIF of a built sif `plan` (the one layer of its ORAS artifact) into `path`.
async fn save_sif(client: &RegistryClient, plan: &ImagePlan, path: &Path) -> anyhow::Result<()> {
    let repository = plan.image.repository();
    let (manifest, _) = client
        .pull_manifest(
            repository,
            plan.image.tag(),
            &[kiln::assemble::MEDIA_TYPE_MANIFEST],
        )
        .await?;
    let manifest: serde_json::Value = serde_json::from_slice(&manifest)?;
    let digest = manifest["layers"][0]["digest"]
        .as_str()
        .context("the SIF artifact has no layer")?;
    let temp = path.with_extension("sif.part");
    let file = tokio::fs::File::create(&temp)
        .await
        .with_context(|| format!("cannot create {}", temp.display()))?;
    client.pull_blob(repository, digest, file).await?;
    tokio::fs::rename(&temp, path)
        .await
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// `kiln gc`: one garbage collection, and what it removed.
async fn gc(config: Config) -> anyhow::Result<()> {
    let registry = kiln::registry::RegistryState::new(config.registry_config())
        .await
        .context("cannot open the embedded registry's storage")?;
    let collected = kiln::server::collect_garbage(&config, &registry).await?;
    println!("{collected}");
    Ok(())
}

/// `kiln token create USER`: prints a new token for USER.
async fn create_token(config: Config, user: &str) -> anyhow::Result<()> {
    use kiln::api::accounts::AccountError;
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            config.data_dir.display()
        )
    })?;
    let store = kiln::store::open(config.database_url().expose()).await?;
    match kiln::api::accounts::create_token(&*store, user).await {
        Ok(token) => {
            println!("{token}");
            Ok(())
        }
        Err(err @ (AccountError::InvalidName(_) | AccountError::Reserved)) => {
            Err(Refused(err.to_string()).into())
        }
        Err(err) => Err(err.into()),
    }
}

/// `kiln base …`.
async fn base(config: Config, command: BaseCommand) -> anyhow::Result<()> {
    match command {
        BaseCommand::Create {
            name,
            packages,
            platforms,
        } => {
            let (repository, tag) = repository_and_tag(&name)?;
            let mut platforms = parse_platforms(&platforms)?;
            if platforms.is_empty() {
                platforms = Platform::ALL.to_vec();
            }
            let client = push_client(&config)?;
            let http = kiln::base::debian::http_client()?;
            let maker = kiln::base::debian::BaseMaker::from_config(&config, http, client.clone())?;
            let work = tempfile_dir(&config.work_dir())?;
            let image = kiln::base::debian::create(
                &kiln::base::debian::DebianBase {
                    repository,
                    tag,
                    packages,
                    platforms,
                },
                maker.mirror(),
                &client,
                &work,
                |line| eprintln!("{line}"),
            )
            .await;
            let _ = std::fs::remove_dir_all(&work);
            let image = image?;
            println!("{}@{}", image.reference, image.digest);
            Ok(())
        }
        BaseCommand::Bootstrap {
            name,
            suite,
            include,
            platforms,
            mirror,
        } => {
            let (repository, tag) = repository_and_tag(&name)?;
            let platforms = parse_platforms(&platforms)?;
            let work = tempfile_dir(&config.work_dir())?;
            let image = kiln::base::bootstrap(
                &kiln::base::BootstrapOptions {
                    repository,
                    tag,
                    suite,
                    include,
                    platforms,
                    mirror,
                },
                &push_client(&config)?,
                &work,
                |line| eprintln!("{line}"),
            )
            .await;
            let _ = std::fs::remove_dir_all(&work);
            let image = image?;
            println!("{}@{}", image.reference, image.digest);
            Ok(())
        }
    }
}

/// `REPO:TAG` split, or a usage error saying what is missing.
fn repository_and_tag(name: &str) -> anyhow::Result<(String, String)> {
    match name.rsplit_once(':') {
        Some((repository, tag)) if !repository.is_empty() && !tag.contains('/') => {
            Ok((repository.to_owned(), tag.to_owned()))
        }
        _ => Err(anyhow::Error::new(Refused(format!(
            "--name {name} needs a repository and a tag, e.g. kiln/base/gl:bookworm"
        )))),
    }
}

fn parse_platforms(platforms: &[String]) -> anyhow::Result<Vec<Platform>> {
    platforms
        .iter()
        .map(|p| {
            p.parse::<Platform>()
                .map_err(|err| anyhow::Error::new(Refused(err.to_string())))
        })
        .collect()
}

/// A fresh work directory under `parent`.
fn tempfile_dir(parent: &std::path::Path) -> anyhow::Result<PathBuf> {
    let dir = parent.join(format!("base-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// Validates the request arguments and plans its images.
fn plan(config: &Config, args: &RequestArgs) -> anyhow::Result<Vec<ImagePlan>> {
    let request =
        parse_request(config, args).map_err(|message| anyhow::Error::new(Refused(message)))?;
    Ok(ImagePlan::for_request(
        &request,
        &config.recipe_images(),
        &config.registry,
    )?)
}

fn parse_request(config: &Config, args: &RequestArgs) -> Result<Request, String> {
    let entries = args
        .entries
        .iter()
        .map(|entry| entry.parse::<PackageEntry>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| err.to_string())?;
    let channels = if args.channels.is_empty() {
        config.channels.clone()
    } else {
        args.channels
            .iter()
            .map(|channel| channel.parse::<Channel>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| err.to_string())?
    };
    let format: Format = args
        .format
        .parse()
        .map_err(|err: kiln::spec::FormatError| err.to_string())?;
    let platforms = args
        .platforms
        .iter()
        .map(|platform| platform.parse::<Platform>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| err.to_string())?;
    let base = args
        .base
        .as_deref()
        .map(str::parse::<KilnBase>)
        .transpose()
        .map_err(|err| format!("--base: {err}"))?;
    Request::new(entries, channels, format, platforms)
        .map(|request| request.on_base(base))
        .map_err(|err| err.to_string())
}

/// Sends kiln's log events to `writer`, filtered by `KILN_LOG` or else by `default`.
fn init_logging<W>(writer: W, default: &str)
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_writer(writer)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KILN_LOG")
                .unwrap_or_else(|_| default.into()),
        )
        .init();
}

fn serve(config: Config) -> anyhow::Result<()> {
    init_logging(std::io::stdout, "kiln=info");
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        kiln::server::run(config, listener, shutdown_signal()).await
    })
}

/// Resolves on Ctrl-C or SIGTERM, so that in-flight requests finish before exit.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler cannot fail on unix");
    tokio::select! {
        _ = interrupt => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutting down");
}

//! The `kiln` command: run the service, or print recipes and image names for a request.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use kiln::api::{self, App, AppState};
use kiln::config::Config;
use kiln::plan::ImagePlan;
use kiln::registry::RegistryState;
use kiln::spec::{Channel, Format, PackageEntry, Platform, Request};
use kiln::store::SqliteStore;

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
    Serve,
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
    let config = Config::from_process(cli.config.as_deref())?;
    match cli.command {
        Command::Serve => serve(config),
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
    }
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
    Request::new(entries, channels, format, platforms).map_err(|err| err.to_string())
}

fn serve(config: Config) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KILN_LOG")
                .unwrap_or_else(|_| "kiln=info".into()),
        )
        .init();
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!("cannot create the data directory {}", config.data_dir.display())
        })?;
        let store = SqliteStore::open(&config.database_path()).await?;
        let registry = RegistryState::new(config.registry_config())
            .await
            .context("cannot open the embedded registry's storage")?;
        tokio::spawn(clean_uploads(registry.clone()));
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        tracing::info!(address = %listener.local_addr()?, registry = %config.registry, "kiln is serving");
        let state = AppState::new(App {
            config,
            store: Arc::new(store),
            registry,
        });
        axum::serve(listener, api::router(state))
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("the server failed")
    })
}

/// Removes abandoned registry uploads every few minutes.
async fn clean_uploads(registry: RegistryState) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(300));
    loop {
        every.tick().await;
        if let Err(err) = registry.cleanup_expired_uploads().await {
            tracing::warn!(error = %err, "cleaning up expired registry uploads failed");
        }
    }
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

//! Base images kiln makes itself, and what the native builder needs to know about any base.
//!
//! Two makers build a minimal Debian root file system per platform: [`bootstrap`] with
//! `mmdebstrap` (a child process), and [`debian`] in-process from the archive itself. Both pack
//! it as one reproducible gzip layer and push layer, config, manifests and an OCI index through
//! the registry client (the part they share is `push`), so a fresh install needs nothing but a
//! Debian mirror. [`inspect`] reads a base back from a registry, whichever way it was made.
//!
//! Depends on `assemble` (the OCI documents and the layer gzip), `registry::client` (pushes and
//! pulls) and `spec` (platforms).

mod bootstrap;
pub mod copy;
pub mod debian;
pub mod dpkg;
mod inspect;
mod push;

use std::collections::BTreeMap;
use std::io;

use crate::assemble::{
    AssembleError, BaseConfig, Descriptor, MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST,
};
use crate::registry::client::ClientError;
use crate::spec::Platform;

pub use bootstrap::{BootstrapOptions, bootstrap};
pub use inspect::inspect;

/// Debian's mirror network, the default package source.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// The Debian suite kiln's own bases are made from by default.
pub const DEFAULT_SUITE: &str = "bookworm";

/// Where kiln keeps its own conda base, tagged by suite.
pub const CONDA_BASE_REPOSITORY: &str = "kiln/base/debian";

/// Where kiln keeps its own Python base (the conda base plus python3), tagged by suite.
pub const PYTHON_BASE_REPOSITORY: &str = "kiln/base/debian-python";

/// Label: the image's human-readable name.
pub const LABEL_TITLE: &str = "org.opencontainers.image.title";
/// Label: the Debian suite the base was bootstrapped from.
pub const LABEL_SUITE: &str = "io.kiln.base.suite";
/// Label: the glibc version (`major.minor`), which decides which conda packages can run.
pub const LABEL_GLIBC: &str = "io.kiln.base.glibc";
/// Label: the python3 version (`major.minor`), present when the base has python3.
pub const LABEL_PYTHON: &str = "io.kiln.base.python";
/// Label: the interpreter of python3, which installed scripts name in their shebang.
pub const LABEL_PYTHON_INTERPRETER: &str = "io.kiln.base.python.interpreter";
/// Label: the directory pip installs distributions into on this base.
pub const LABEL_PYTHON_SITE_PACKAGES: &str = "io.kiln.base.python.site-packages";

const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const MEDIA_TYPE_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Every manifest shape a base can have: OCI or Docker, index/list or single image.
const ACCEPTED: [&str; 4] = [
    MEDIA_TYPE_INDEX,
    MEDIA_TYPE_DOCKER_LIST,
    MEDIA_TYPE_MANIFEST,
    MEDIA_TYPE_DOCKER_MANIFEST,
];

/// A base image pushed by [`bootstrap`], with the facts the resolver needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseImage {
    /// `host/repository:tag`.
    pub reference: String,
    /// Digest of the index pushed under the tag.
    pub digest: String,
    /// glibc `major.minor`; the lowest over the platforms.
    pub glibc: String,
    /// python3 `major.minor`, when the base has python3.
    pub python: Option<String>,
}

/// One platform of a base image in a registry: what the native builder stacks its layers on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseManifest {
    /// Digest of the platform's image manifest.
    pub digest: String,
    /// The base's layers, as the manifest lists them.
    pub layers: Vec<Descriptor>,
    /// The base's runtime settings and diff_ids.
    pub config: BaseConfig,
    /// The config's labels (empty when it has none).
    pub labels: BTreeMap<String, String>,
    /// [`LABEL_GLIBC`], when the base carries it.
    pub glibc: Option<String>,
    /// [`LABEL_PYTHON`], when the base carries it.
    pub python: Option<String>,
}

/// A failure while making or reading a base image. Messages name the step and, for child
/// processes, end with the last lines they wrote to stderr.
#[derive(Debug, thiserror::Error)]
pub enum BaseError {
    /// An option would not make a valid mmdebstrap argument.
    #[error("invalid {what} `{value}`: {why}")]
    InvalidOption {
        /// Which option.
        what: &'static str,
        /// The value given.
        value: String,
        /// What is allowed.
        why: &'static str,
    },
    /// A required program is not installed.
    #[error("`{program}` was not found; install it (Debian/Ubuntu: apt-get install {package})")]
    MissingProgram {
        /// The program.
        program: &'static str,
        /// The Debian package that provides it.
        package: &'static str,
    },
    /// A child process failed.
    #[error("{step} failed ({status}):\n{stderr}")]
    Child {
        /// What was being done.
        step: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The last lines of its stderr.
        stderr: String,
    },
    /// A local I/O operation failed.
    #[error("{step} failed")]
    Io {
        /// What was being done.
        step: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A fact could not be read from the target's dpkg database.
    #[error(
        "{platform}: could not read the {package} version from the dpkg database (got `{got}`)"
    )]
    Facts {
        /// The platform being built.
        platform: Platform,
        /// The package asked about.
        package: &'static str,
        /// What dpkg-query wrote.
        got: String,
    },
    /// A registry operation failed.
    #[error("{step} failed")]
    Registry {
        /// What was being done.
        step: String,
        /// The client's error.
        #[source]
        source: ClientError,
    },
    /// Reading Debian's archive failed (unreachable, bad signature, missing package, …).
    #[error(transparent)]
    Debian(#[from] debian::error::DebianError),
    /// The bootstrap has nothing to build.
    #[error("no platforms to bootstrap")]
    NoPlatforms,
    /// The base has no image for the platform.
    #[error("{reference} has no {platform} image")]
    NoPlatform {
        /// The base reference.
        reference: String,
        /// The platform asked for.
        platform: Platform,
    },
    /// A manifest or config in the registry is not what an image should be.
    #[error("{reference}: {why}")]
    Invalid {
        /// The object concerned.
        reference: String,
        /// What is wrong.
        why: String,
    },
    /// The base's config could not be parsed.
    #[error("{reference}: unreadable image config")]
    Config {
        /// The object concerned.
        reference: String,
        /// The parse error.
        #[source]
        source: AssembleError,
    },
}

fn io_error(step: String) -> impl FnOnce(io::Error) -> BaseError {
    move |source| BaseError::Io { step, source }
}

fn registry(step: String) -> impl FnOnce(ClientError) -> BaseError {
    move |source| BaseError::Registry { step, source }
}

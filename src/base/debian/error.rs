//! What can go wrong reading a Debian repository, each said so that the reader knows what
//! happened, where (the URL, file or package), and what to do about it.

use std::path::PathBuf;

/// Where the settings that choose the mirror are, for messages that suggest changing it.
const MIRROR_SETTINGS: &str = "set `[base] debian_mirror` (or KILN_DEBIAN_MIRROR) to a mirror \
     this host can reach, or a proxy through HTTP_PROXY";

/// A failure reading a Debian repository or resolving packages from it.
#[derive(Debug, thiserror::Error)]
pub enum DebianError {
    /// The mirror could not be reached or stopped answering.
    #[error("cannot reach the Debian mirror at {url} ({reason}); {MIRROR_SETTINGS}")]
    Unreachable {
        /// The URL requested.
        url: String,
        /// What failed: connection refused, timed out, ….
        reason: String,
    },
    /// The mirror answered with an HTTP error.
    #[error(
        "the Debian mirror answered {status} for {url}; check that `[base] debian_mirror` is a \
         Debian archive and `[base] debian_suite` a suite it has, or {MIRROR_SETTINGS}"
    )]
    Status {
        /// The URL requested.
        url: String,
        /// The HTTP status.
        status: reqwest::StatusCode,
    },
    /// A file was larger than kiln accepts (or than the signed Release says it is).
    #[error(
        "{url} is larger than {limit} bytes, more than kiln accepts for it; the mirror serves \
         something other than a Debian archive file, {MIRROR_SETTINGS}"
    )]
    TooLarge {
        /// The URL requested.
        url: String,
        /// The size limit in bytes.
        limit: u64,
    },
    /// `InRelease` is not signed by any key kiln trusts, or its signature is broken.
    #[error(
        "the signature of {url} does not verify ({reason}); kiln trusts Debian's archive signing \
         keys, or the keyring set as `[base] debian_keyring` for a mirror signed with other keys. \
         The mirror may serve altered files: use another mirror or set the right keyring"
    )]
    BadSignature {
        /// The `InRelease` URL.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The signed `Release` is past its `Valid-Until` date.
    #[error(
        "{url} expired at {valid_until} (its Valid-Until); the mirror is out of date: use an \
         up-to-date mirror through `[base] debian_mirror` (or KILN_DEBIAN_MIRROR)"
    )]
    Expired {
        /// The `InRelease` URL.
        url: String,
        /// When it expired.
        valid_until: String,
    },
    /// A file's bytes are not the ones the signed `Release` (or signed index) names.
    #[error(
        "{url} does not match the signed {signed_by}: it should be {expected}, it is {actual}; \
         the mirror serves an altered or half-updated file, try again later or use another \
         mirror"
    )]
    Mismatch {
        /// The URL downloaded, which names the file.
        url: String,
        /// What vouched for it: `Release` or `Packages index`.
        signed_by: &'static str,
        /// `N bytes with sha256 …`.
        expected: String,
        /// What was found: `N bytes with sha256 …`, `more than N bytes`.
        actual: String,
    },
    /// The signed `Release` does not list a file kiln needs.
    #[error(
        "the signed Release at {url} lists no {file}; check `[base] debian_suite` and that the \
         mirror carries this architecture"
    )]
    NotInRelease {
        /// The `InRelease` URL.
        url: String,
        /// The file looked for.
        file: String,
    },
    /// The signed `Release` is of another suite than the one asked for (a mirror may not pass
    /// off an older suite's signed files as the one configured).
    #[error(
        "{url} is the Release of suite {found}, not {expected}; the mirror serves the wrong \
         suite, check `[base] debian_mirror` and `[base] debian_suite`"
    )]
    WrongSuite {
        /// The `InRelease` URL.
        url: String,
        /// The suite configured.
        expected: String,
        /// `Suite`/`Codename` of the Release found.
        found: String,
    },
    /// A suite, architecture or file name that cannot be part of a mirror URL.
    #[error("`{value}` is not a valid Debian {what}{hint}")]
    Invalid {
        /// What the value is: `suite`, `architecture`, `Filename`.
        what: &'static str,
        /// The value.
        value: String,
        /// What to do, starting with `; `, or empty.
        hint: &'static str,
    },
    /// A Debian control document (Release, Packages) could not be read.
    #[error("{what} is not a valid Debian control file: {reason}")]
    Malformed {
        /// What was read: a URL, or `the Packages index`.
        what: String,
        /// What is wrong, naming the stanza or field.
        reason: String,
    },
    /// A package (asked for, or needed by one) is not in the suite.
    #[error(
        "package {package}{needed_by} is not in Debian {suite} for {arch}; check its name (the \
         names are Debian's, as `apt-cache search` shows them)"
    )]
    MissingPackage {
        /// The package.
        package: String,
        /// ` (needed by a ← b)`, empty for a package asked for directly.
        needed_by: String,
        /// The suite.
        suite: String,
        /// The architecture.
        arch: String,
    },
    /// No package in the suite satisfies a dependency.
    #[error(transparent)]
    Unsatisfiable(Box<Unsatisfiable>),
    /// A keyring file could not be read.
    #[error(
        "cannot read the OpenPGP keyring {path} (set as `[base] debian_keyring`): {reason}; give \
         a binary or ASCII-armored file of public keys, such as those in /usr/share/keyrings"
    )]
    Keyring {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// A local file operation in the cache failed.
    #[error("{action} {path} failed: {source}")]
    Io {
        /// What was done (`writing`, `reading`).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// The details of [`DebianError::Unsatisfiable`].
#[derive(Debug, thiserror::Error)]
#[error(
    "{package}{needed_by} depends on `{dependency}`, which no package in Debian {suite} for \
     {arch} satisfies{reason}"
)]
pub struct Unsatisfiable {
    /// The package that has the dependency, with its version.
    pub package: String,
    /// The dependency as written (`a (>= 1) | b`).
    pub dependency: String,
    /// ` (needed by a ← b)`, empty for a package asked for directly.
    pub needed_by: String,
    /// The suite.
    pub suite: String,
    /// The architecture.
    pub arch: String,
    /// Why the candidates failed, e.g. `: libc6 2.36-9 was chosen already`.
    pub reason: String,
}

impl DebianError {
    /// An I/O error on `path`.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> DebianError {
        let path = path.into();
        move |source| DebianError::Io {
            action,
            path,
            source,
        }
    }
}

//! Child processes with an allow-listed environment.
//!
//! kiln's own environment carries secrets (`KILN_API_TOKENS`, `KILN_PUSH_PASSWORD`, …). Every
//! program kiln runs (buildah, runc, uv, mksquashfs, mmdebstrap, slirp4netns, …) starts from
//! [`command`] or [`std_command`], which pass on only what such tools need: where programs
//! and home are, locale and time zone, temporary space, proxies, CA bundles, and the settings
//! of the container and uv tools themselves. Depends on nothing else in kiln.

use std::ffi::OsStr;

/// Variables passed on by name.
const ALLOWED: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "PIP_CERT",
    "SOURCE_DATE_EPOCH",
    "XDG_RUNTIME_DIR",
    "XDG_CONFIG_HOME",
    "XDG_CACHE_HOME",
    "XDG_DATA_HOME",
    "REGISTRY_AUTH_FILE",
];

/// Variables passed on by prefix: the settings of the tools kiln runs.
const ALLOWED_PREFIXES: &[&str] = &["BUILDAH_", "CONTAINERS_", "STORAGE_", "UV_"];

/// Whether a variable of kiln's environment may reach a child.
pub fn is_allowed(name: &str) -> bool {
    !name.starts_with("KILN_")
        && (ALLOWED.contains(&name)
            || ALLOWED_PREFIXES
                .iter()
                .any(|prefix| name.starts_with(prefix)))
}

/// The part of kiln's environment children get.
pub fn environment() -> impl Iterator<Item = (std::ffi::OsString, std::ffi::OsString)> {
    std::env::vars_os().filter(|(name, _)| name.to_str().is_some_and(is_allowed))
}

/// An async command for `program` with the allow-listed environment.
pub fn command(program: impl AsRef<OsStr>) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(program);
    command.env_clear().envs(environment());
    command
}

/// A blocking command for `program` with the allow-listed environment.
pub fn std_command(program: impl AsRef<OsStr>) -> std::process::Command {
    let mut command = std::process::Command::new(program);
    command.env_clear().envs(environment());
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_unknown_variables_stay_behind() {
        for name in [
            "KILN_API_TOKENS",
            "KILN_PUSH_PASSWORD",
            "AWS_SECRET_ACCESS_KEY",
            "DATABASE_URL",
        ] {
            assert!(!is_allowed(name), "{name} must not reach children");
        }
        for name in [
            "PATH",
            "HOME",
            "https_proxy",
            "SSL_CERT_FILE",
            "UV_CACHE_DIR",
            "BUILDAH_ISOLATION",
            "CONTAINERS_STORAGE_CONF",
        ] {
            assert!(is_allowed(name), "{name} is what a tool needs");
        }
    }

    #[test]
    fn a_child_sees_only_allowed_variables() {
        // cargo runs tests with CARGO_* variables set: a child must not see them.
        assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
        let output = std_command("env").output().expect("env runs");
        let printed = String::from_utf8_lossy(&output.stdout);
        let names: Vec<&str> = printed
            .lines()
            .filter_map(|line| line.split_once('=').map(|(name, _)| name))
            .collect();
        assert!(names.contains(&"PATH"), "{names:?}");
        for name in names {
            assert!(is_allowed(name), "{name} leaked into a child");
        }
    }
}

//! Resolving pip entries into wheels with uv, used as a resolver only.
//!
//! uv (`uv pip compile`) chooses versions for the target interpreter and platform tags, wheels
//! only, and writes a PEP 751 `pylock.toml`; kiln reads the wheel URLs and sha256 from it and
//! picks the one wheel per release the target installs best. uv never installs anything and no
//! target interpreter runs, so arm64 resolves on amd64 like any other platform.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;

use serde::Deserialize;

use super::wheel_tags::WheelTarget;
use crate::spec::{Platform, normalize_project_name};

/// One wheel a resolution chose: what to download and how to check it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedWheel {
    /// Distribution name, PEP 503 normalized.
    pub name: String,
    /// Version.
    pub version: String,
    /// Where it is downloaded from.
    pub url: String,
    /// `sha256` of the wheel file, lowercase hex.
    pub sha256: String,
    /// The wheel's file name (its tags tell which platform it is for).
    pub file_name: String,
}

/// Why pip entries could not be resolved. Each message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum PipResolveError {
    #[error(
        "uv, kiln's pip resolver, could not be started from `{uv}` (install it with `pip install uv` or set build.uv)"
    )]
    Spawn {
        uv: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the pip packages cannot be resolved for {platform} (Python {python}, {tags}): {reason}"
    )]
    Unsatisfiable {
        platform: Platform,
        python: String,
        tags: String,
        reason: String,
    },
    #[error("uv's lock for {platform} cannot be read: {reason}")]
    BadLock { platform: Platform, reason: String },
    #[error("{name} {version} has no wheel that installs on {platform} (Python {python}, {tags})")]
    NoWheel {
        name: String,
        version: String,
        platform: Platform,
        python: String,
        tags: String,
    },
    #[error("the scratch directory for resolving pip packages cannot be written")]
    Scratch(#[source] std::io::Error),
}

/// Resolves pip requirements with uv; cheap to clone.
#[derive(Debug, Clone)]
pub struct PipResolver {
    /// The uv executable.
    pub uv: PathBuf,
    /// uv's cache (package metadata), shared by all builds.
    pub cache_dir: PathBuf,
    /// A package index other than PyPI, e.g. a site mirror.
    pub index_url: Option<String>,
}

/// What the target Python installation already has (conda's Python packages in a mixed
/// request): normalized name → version.
pub type Provided = BTreeMap<String, String>;

impl PipResolver {
    /// Resolves `requirements` (canonical PEP 508 lines) for `target` and the Python
    /// `python_version` (`3.12` or `3.12.7`). Distributions in `provided` are held at their
    /// version and left out of the result: they are installed already.
    pub async fn resolve(
        &self,
        requirements: &[String],
        provided: &Provided,
        target: &WheelTarget,
        python_version: &str,
    ) -> Result<Vec<ResolvedWheel>, PipResolveError> {
        let scratch = tempfile::tempdir().map_err(PipResolveError::Scratch)?;
        let input = scratch.path().join("requirements.in");
        let constraints = scratch.path().join("constraints.txt");
        let output = scratch.path().join("pylock.toml");
        tokio::fs::write(&input, lines(requirements.iter().map(String::as_str)))
            .await
            .map_err(PipResolveError::Scratch)?;
        let pins: Vec<String> = provided
            .iter()
            .filter(|(name, version)| is_simple(name) && is_simple(version))
            .map(|(name, version)| format!("{name}=={version}"))
            .collect();
        tokio::fs::write(&constraints, lines(pins.iter().map(String::as_str)))
            .await
            .map_err(PipResolveError::Scratch)?;

        let tags = target.uv_platform();
        let mut command = crate::child::command(&self.uv);
        command
            .args(["pip", "compile", "--quiet", "--no-header", "--no-config"])
            .args(["--color", "never", "--no-progress", "--no-python-downloads"])
            .args(["--system-certs", "--only-binary", ":all:"])
            .args(["--format", "pylock.toml"])
            .arg("--python-platform")
            .arg(&tags)
            .arg("--python-version")
            .arg(python_version)
            .arg("--cache-dir")
            .arg(&self.cache_dir)
            .arg("--constraints")
            .arg(&constraints)
            .arg("--output-file")
            .arg(&output)
            .arg(&input)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let Some(index) = &self.index_url {
            command.arg("--index-url").arg(index);
        }
        let ran = command
            .output()
            .await
            .map_err(|source| PipResolveError::Spawn {
                uv: self.uv.clone(),
                source,
            })?;
        if !ran.status.success() {
            return Err(PipResolveError::Unsatisfiable {
                platform: target.platform,
                python: python_version.to_owned(),
                tags,
                reason: explanation(&String::from_utf8_lossy(&ran.stderr)),
            });
        }
        let text =
            tokio::fs::read_to_string(&output)
                .await
                .map_err(|err| PipResolveError::BadLock {
                    platform: target.platform,
                    reason: err.to_string(),
                })?;
        let mut wheels = choose_wheels(&text, target, python_version)?;
        wheels.retain(|wheel| !provided.contains_key(&wheel.name));
        tracing::info!(platform = %target.platform, wheels = wheels.len(), "resolved the pip packages");
        Ok(wheels)
    }
}

/// `pylock.toml`, the parts kiln reads.
#[derive(Debug, Deserialize)]
struct Pylock {
    #[serde(default)]
    packages: Vec<PylockPackage>,
}

#[derive(Debug, Deserialize)]
struct PylockPackage {
    name: String,
    version: Option<String>,
    #[serde(default)]
    wheels: Vec<PylockWheel>,
}

#[derive(Debug, Deserialize)]
struct PylockWheel {
    url: Option<String>,
    name: Option<String>,
    #[serde(default)]
    hashes: BTreeMap<String, String>,
}

/// The best wheel of every package in a `pylock.toml`, sorted by name.
fn choose_wheels(
    text: &str,
    target: &WheelTarget,
    python_version: &str,
) -> Result<Vec<ResolvedWheel>, PipResolveError> {
    let bad = |reason: String| PipResolveError::BadLock {
        platform: target.platform,
        reason,
    };
    let lock: Pylock = toml::from_str(text).map_err(|err| bad(err.to_string()))?;
    let mut chosen = Vec::new();
    for package in lock.packages {
        let name = normalize_project_name(&package.name)
            .ok_or_else(|| bad(format!("{:?} is not a valid project name", package.name)))?;
        let version = package
            .version
            .ok_or_else(|| bad(format!("package {name} has no version")))?;
        let best = package
            .wheels
            .into_iter()
            .filter_map(|wheel| {
                let url = wheel.url?;
                let file_name = wheel
                    .name
                    .unwrap_or_else(|| url.rsplit('/').next().unwrap_or_default().to_owned());
                let sha256 = wheel.hashes.get("sha256")?.to_ascii_lowercase();
                let rank = target.rank(&file_name)?;
                Some((rank, url, file_name, sha256))
            })
            .min_by(|a, b| a.0.cmp(&b.0).then_with(|| a.2.cmp(&b.2)));
        let Some((_, url, file_name, sha256)) = best else {
            return Err(PipResolveError::NoWheel {
                name,
                version,
                platform: target.platform,
                python: python_version.to_owned(),
                tags: target.uv_platform(),
            });
        };
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad(format!("{file_name} has a malformed sha256")));
        }
        chosen.push(ResolvedWheel {
            name,
            version,
            url,
            sha256,
            file_name,
        });
    }
    chosen.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(chosen)
}

/// Names and versions read from an installed environment go into a constraints file only when
/// they cannot change its meaning.
fn is_simple(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'+' | b'!'))
}

fn lines<'a>(items: impl Iterator<Item = &'a str>) -> String {
    items.map(|item| format!("{item}\n")).collect()
}

/// uv's explanation without its `error:`/`hint:` framing, on one line per sentence group.
fn explanation(stderr: &str) -> String {
    let text: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|line| {
            !line.is_empty() && *line != "error: No solution found when resolving dependencies"
        })
        .map(|line| {
            line.strip_prefix("error: ")
                .or_else(|| line.strip_prefix("cause: "))
                .unwrap_or(line)
        })
        .collect();
    if text.is_empty() {
        "uv failed without saying why".to_owned()
    } else {
        text.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::wheel_tags::Libc;

    const LOCK: &str = r#"
lock-version = "1.0"
created-by = "uv"

[[packages]]
name = "Charset_Normalizer"
version = "3.5.2"
wheels = [
    { url = "https://files.example.org/charset_normalizer-3.5.2-py3-none-any.whl", upload-time = 2026-09-30T04:39:21Z, hashes = { sha256 = "B6B751274ACB69D77B3323D6B7DBAA3C7FDFC1EB829B7EB61D262F32E1AF9685" } },
    { url = "https://files.example.org/charset_normalizer-3.5.2-cp311-cp311-manylinux2014_aarch64.manylinux_2_17_aarch64.whl", hashes = { sha256 = "d760fe2a4d7c3b226cb9026d6a842868d52a7901bd98420e1baf14e80da85cf5" } },
]

[[packages]]
name = "certifi"
version = "2026.10.18"
wheels = [{ url = "https://files.example.org/certifi-2026.10.18-py3-none-any.whl", hashes = { sha256 = "73191c47aaa79da394e8fee2dbc2ec827432cab56311122c9e47abf79e390f62" } }]
"#;

    fn arm() -> WheelTarget {
        WheelTarget {
            platform: Platform::LinuxArm64,
            python: (3, 11),
            libc: Libc::Glibc("2.36".into()),
        }
    }

    #[test]
    fn a_lock_becomes_one_wheel_per_package() {
        let wheels = choose_wheels(LOCK, &arm(), "3.11").unwrap();
        assert_eq!(wheels.len(), 2);
        assert_eq!(wheels[0].name, "certifi");
        assert_eq!(wheels[1].name, "charset-normalizer");
        assert!(
            wheels[1]
                .file_name
                .contains("cp311-cp311-manylinux2014_aarch64")
        );
        assert_eq!(
            wheels[1].sha256,
            "d760fe2a4d7c3b226cb9026d6a842868d52a7901bd98420e1baf14e80da85cf5"
        );
    }

    #[test]
    fn a_package_without_a_fitting_wheel_is_named() {
        let amd = WheelTarget {
            platform: Platform::LinuxAmd64,
            ..arm()
        };
        let only_arm = LOCK.replace("py3-none-any", "cp311-cp311-manylinux_2_17_aarch64");
        let err = choose_wheels(&only_arm, &amd, "3.11").unwrap_err();
        assert_eq!(
            err.to_string(),
            "charset-normalizer 3.5.2 has no wheel that installs on linux/amd64 \
             (Python 3.11, x86_64-manylinux_2_36)"
        );
    }

    #[test]
    fn only_simple_versions_are_constraints() {
        assert!(is_simple("1.26.4"));
        assert!(!is_simple("1.0; os_name"));
    }

    #[test]
    fn uv_framing_is_dropped_from_explanations() {
        let stderr = "error: No solution found when resolving dependencies\n  cause: Because \
                      pyyaml==5.1 has no usable wheels and you require pyyaml==5.1, we can \
                      conclude that your requirements are unsatisfiable.\n\nhint: Wheels are \
                      required for `pyyaml` because building from source is disabled\n";
        let text = explanation(stderr);
        assert!(
            text.starts_with("Because pyyaml==5.1 has no usable wheels"),
            "{text}"
        );
        assert!(
            text.contains("hint: Wheels are required for `pyyaml`"),
            "{text}"
        );
    }
}

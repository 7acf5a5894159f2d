//! Where Python lives in an image, and what is installed there already.
//!
//! A mixed request installs wheels into the conda environment's own Python; a pip-only request
//! installs them into the base image's Python, whose version and layout are facts of the base
//! (labels `kiln base bootstrap` writes) or, for a base kiln did not make, of its profile, which
//! defaults to the layout of the official `python` images.

use std::path::{Path, PathBuf};

use crate::base::{BaseManifest, LABEL_PYTHON_INTERPRETER, LABEL_PYTHON_SITE_PACKAGES};
use crate::install::CONDA_PREFIX;
use crate::install::wheel::PythonLayout;
use crate::resolve::{Provided, wheel_tags::major_minor};
use crate::spec::normalize_project_name;

/// A Python installation in an image: its version and where wheels go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePython {
    /// The version uv resolves for, e.g. `3.12.7` or `3.11`.
    pub version: String,
    /// `(major, minor)` of `version`.
    pub major_minor: (u32, u32),
    /// Where its wheels are installed.
    pub layout: PythonLayout,
}

impl ImagePython {
    /// The Python of a conda environment at [`CONDA_PREFIX`], version `version`.
    pub fn conda(version: &str) -> Result<ImagePython, String> {
        let (major, minor) = parse(version)?;
        let prefix = Path::new(CONDA_PREFIX);
        Ok(ImagePython {
            version: version.to_owned(),
            major_minor: (major, minor),
            layout: PythonLayout {
                interpreter: prefix.join(format!("bin/python{major}.{minor}")),
                site_packages: prefix.join(format!("lib/python{major}.{minor}/site-packages")),
                scripts: prefix.join("bin"),
                data: prefix.to_owned(),
                headers: prefix.join(format!("include/python{major}.{minor}")),
            },
        })
    }

    /// The Python of a base image: its labels, else `profile_version` with the layout of the
    /// official `python` images (`/usr/local`).
    pub fn of_base(
        base: &BaseManifest,
        profile_version: Option<&str>,
    ) -> Result<ImagePython, String> {
        let version = base.python.as_deref().or(profile_version).ok_or_else(|| {
            "the Python base image has no python3 (make one with `kiln base bootstrap \
                 --include python3`, or set base.python.python for an image that has it)"
                .to_owned()
        })?;
        let (major, minor) = parse(version)?;
        let label = |name: &str| base.labels.get(name).map(PathBuf::from);
        Ok(ImagePython {
            version: version.to_owned(),
            major_minor: (major, minor),
            layout: PythonLayout {
                interpreter: label(LABEL_PYTHON_INTERPRETER)
                    .unwrap_or_else(|| PathBuf::from("/usr/local/bin/python3")),
                site_packages: label(LABEL_PYTHON_SITE_PACKAGES).unwrap_or_else(|| {
                    PathBuf::from(format!(
                        "/usr/local/lib/python{major}.{minor}/site-packages"
                    ))
                }),
                scripts: PathBuf::from("/usr/local/bin"),
                data: PathBuf::from("/usr/local"),
                headers: PathBuf::from(format!("/usr/local/include/python{major}.{minor}")),
            },
        })
    }

    /// `site-packages` inside a staging directory that stands for `/`.
    pub fn staged_site_packages(&self, root: &Path) -> PathBuf {
        root.join(
            self.layout
                .site_packages
                .strip_prefix("/")
                .unwrap_or(&self.layout.site_packages),
        )
    }
}

fn parse(version: &str) -> Result<(u32, u32), String> {
    major_minor(version).ok_or_else(|| format!("`{version}` is not a Python version"))
}

/// The Python distributions that `metadata` (`.dist-info`/`.egg-info` paths, absolute in the
/// image) installs into `site_packages`, so pip does not install them again: known from the
/// packages' recorded files, without installing anything.
pub fn distributions_in<'a>(
    site_packages: &Path,
    metadata: impl IntoIterator<Item = &'a Path>,
) -> Provided {
    metadata
        .into_iter()
        .filter(|path| path.parent() == Some(site_packages))
        .filter_map(|path| distribution(path.file_name()?.to_str()?))
        .collect()
}

/// `(normalized project, version)` of a `.dist-info` or `.egg-info` name.
fn distribution(name: &str) -> Option<(String, String)> {
    let stem = name
        .strip_suffix(".dist-info")
        .or_else(|| name.strip_suffix(".egg-info"))?;
    let (project, rest) = stem.split_once('-')?;
    // `.egg-info` names may carry `-py3.12` after the version.
    let version = rest.split('-').next().unwrap_or(rest);
    Some((normalize_project_name(project)?, version.to_owned()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn conda_python_lives_in_the_prefix() {
        let python = ImagePython::conda("3.12.7").unwrap();
        assert_eq!(python.major_minor, (3, 12));
        assert_eq!(
            python.layout.site_packages,
            Path::new("/opt/conda/lib/python3.12/site-packages")
        );
        assert_eq!(
            python.layout.interpreter,
            Path::new("/opt/conda/bin/python3.12")
        );
        assert_eq!(
            python.staged_site_packages(Path::new("/work/amd64")),
            Path::new("/work/amd64/opt/conda/lib/python3.12/site-packages")
        );
        assert!(ImagePython::conda("three").is_err());
    }

    #[test]
    fn distributions_are_read_from_metadata_names_in_site_packages() {
        let site = Path::new("/opt/conda/lib/python3.12/site-packages");
        let paths: Vec<PathBuf> = [
            "numpy-1.26.4.dist-info",
            "PyYAML-6.0.1-py3.12.egg-info",
            "numpy",
            "README",
        ]
        .iter()
        .map(|name| site.join(name))
        .chain([PathBuf::from("/opt/conda/share/six-1.0.dist-info")])
        .collect();
        let provided = distributions_in(site, paths.iter().map(PathBuf::as_path));
        assert_eq!(
            provided,
            BTreeMap::from([
                ("numpy".to_owned(), "1.26.4".to_owned()),
                ("pyyaml".to_owned(), "6.0.1".to_owned()),
            ])
        );
    }
}

//! What a build does, typed: a package request kiln builds itself, a user's Dockerfile or a
//! user's Singularity definition file. The job travels as this enum from the API through the
//! store to the worker, so nothing downstream guesses a build's kind from its text.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::platform::{Format, Platform};
use super::request::Request;

/// The kinds of build, one per backend; workers may take only some of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildKind {
    /// A package request: resolved, installed and assembled by kiln.
    Native,
    /// A user's Dockerfile, built with buildah.
    Dockerfile,
    /// A user's Singularity definition file, built with buildah into a SIF.
    Definition,
}

impl BuildKind {
    /// Every kind, for a worker that takes them all.
    pub const ALL: [BuildKind; 3] = [
        BuildKind::Native,
        BuildKind::Dockerfile,
        BuildKind::Definition,
    ];

    /// The spelling kept in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            BuildKind::Native => "native",
            BuildKind::Dockerfile => "dockerfile",
            BuildKind::Definition => "definition",
        }
    }
}

impl fmt::Display for BuildKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A kind string that names no build kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a build kind; use native, dockerfile or definition")]
pub struct BuildKindError(String);

impl FromStr for BuildKind {
    type Err = BuildKindError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BuildKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| BuildKindError(super::entry::printable(s)))
    }
}

/// One build's work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildJob {
    /// A package request (for sif, already narrowed to one platform).
    Native(Request),
    /// A user's Dockerfile; its text is the build's recipe.
    Dockerfile(DockerfileJob),
    /// A user's definition file; its text is the build's recipe.
    Definition(DefinitionJob),
}

/// What the JSON text of a job could not be read as.
#[derive(Debug, thiserror::Error)]
#[error("the stored {kind} request cannot be read: {source}")]
pub struct BuildJobError {
    kind: BuildKind,
    source: serde_json::Error,
}

impl BuildJob {
    /// Its kind.
    pub fn kind(&self) -> BuildKind {
        match self {
            BuildJob::Native(_) => BuildKind::Native,
            BuildJob::Dockerfile(_) => BuildKind::Dockerfile,
            BuildJob::Definition(_) => BuildKind::Definition,
        }
    }

    /// The format of the image it makes: Dockerfiles make OCI images, definitions SIFs.
    pub fn format(&self) -> Format {
        match self {
            BuildJob::Native(request) => request.format(),
            BuildJob::Dockerfile(_) => Format::Docker,
            BuildJob::Definition(_) => Format::Sif,
        }
    }

    /// The platforms it builds for.
    pub fn platforms(&self) -> Vec<Platform> {
        match self {
            BuildJob::Native(request) => request.platforms().to_vec(),
            BuildJob::Dockerfile(job) => vec![job.platform],
            BuildJob::Definition(job) => vec![job.platform],
        }
    }

    /// The job as JSON text, the form stored and shown in build records: a package request as
    /// it is, the others tagged (`{"containerfile":…}`, `{"definition":…}`).
    pub fn to_json(&self) -> String {
        // Plain data always serializes.
        match self {
            BuildJob::Native(request) => serde_json::to_string(request),
            BuildJob::Dockerfile(job) => serde_json::to_string(&TaggedDockerfile::from(*job)),
            BuildJob::Definition(job) => serde_json::to_string(&TaggedDefinition {
                definition: job.clone(),
            }),
        }
        .unwrap_or_default()
    }

    /// Reads the JSON text [`to_json`](Self::to_json) wrote for a job of `kind`.
    pub fn from_json(kind: BuildKind, text: &str) -> Result<Self, BuildJobError> {
        let error = |source| BuildJobError { kind, source };
        Ok(match kind {
            BuildKind::Native => BuildJob::Native(serde_json::from_str(text).map_err(error)?),
            BuildKind::Dockerfile => {
                let TaggedDockerfile::Containerfile { platform } =
                    serde_json::from_str(text).map_err(error)?;
                BuildJob::Dockerfile(DockerfileJob { platform })
            }
            BuildKind::Definition => {
                let tagged: TaggedDefinition = serde_json::from_str(text).map_err(error)?;
                BuildJob::Definition(tagged.definition)
            }
        })
    }
}

/// How to build a user's Dockerfile (Wave's `containerFile`); the text is the build's recipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DockerfileJob {
    /// The one platform the image is built for.
    pub platform: Platform,
}

/// The stored form of a [`DockerfileJob`]: `{"containerfile":{"platform":"linux/amd64"}}`.
#[derive(Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
enum TaggedDockerfile {
    Containerfile { platform: Platform },
}

impl From<DockerfileJob> for TaggedDockerfile {
    fn from(job: DockerfileJob) -> Self {
        TaggedDockerfile::Containerfile {
            platform: job.platform,
        }
    }
}

/// A remote build of a definition file (`singularity build --remote`); the text is the
/// build's recipe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DefinitionJob {
    /// The one platform the SIF is built for.
    pub platform: Platform,
    /// The library user who asked; the build is theirs.
    pub user: String,
    /// Where the result goes in the library: `entity/collection/container`.
    pub library_ref: String,
    /// The library tags it gets (`latest` when the client named none).
    pub tags: Vec<String>,
    /// The registry repository that library container lives in.
    pub repository: String,
    /// The uploaded build context (`sha256.<hex>`) the `%files` sources come from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// The client's working directory, which relative `%files` sources are relative to.
    #[serde(default)]
    pub working_dir: String,
}

/// The stored form of a [`DefinitionJob`]: under the key `definition`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaggedDefinition {
    definition: DefinitionJob,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::RequestInput;

    #[test]
    fn jobs_round_trip_through_their_stored_text() {
        let native = BuildJob::Native(
            Request::try_from(RequestInput {
                entries: vec!["samtools=1.21".into()],
                ..RequestInput::default()
            })
            .expect("valid"),
        );
        let dockerfile = BuildJob::Dockerfile(DockerfileJob {
            platform: Platform::LinuxArm64,
        });
        let definition = BuildJob::Definition(DefinitionJob {
            platform: Platform::LinuxAmd64,
            user: "alice".into(),
            library_ref: "alice/tools/samtools".into(),
            tags: vec!["latest".into()],
            repository: "library/alice/tools/samtools".into(),
            context: None,
            working_dir: "/home/alice".into(),
        });
        assert_eq!(
            dockerfile.to_json(),
            r#"{"containerfile":{"platform":"linux/arm64"}}"#
        );
        assert!(definition.to_json().starts_with(r#"{"definition":{"#));
        for job in [native, dockerfile, definition] {
            let text = job.to_json();
            assert_eq!(BuildJob::from_json(job.kind(), &text).expect("reads"), job);
            assert_eq!(job.kind().as_str().parse::<BuildKind>(), Ok(job.kind()));
        }
        let err = BuildJob::from_json(
            BuildKind::Dockerfile,
            r#"{"containerfile":{"platform":"linux/s390x"}}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("the stored dockerfile request cannot be read"),
            "{err}"
        );
        assert!("docker".parse::<BuildKind>().is_err());
    }
}

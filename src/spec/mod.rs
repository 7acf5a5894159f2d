//! The request model: package entries, channels, formats, platforms and a base, validated and
//! put in canonical form, and the deterministic key and image name derived from them.
//!
//! Pure: no I/O, no async. Everything else in kiln depends on this module; it depends on
//! nothing in kiln. Every type that holds user input validates in `FromStr`, and its
//! `Deserialize` goes through the same check.

#![warn(missing_docs)]

mod base;
mod conda;
mod definition;
mod dockerfile;
mod entry;
mod image_ref;
mod job;
mod name;
mod pip;
mod platform;
mod request;

pub use base::{BASE_NAMESPACE, KilnBase, KilnBaseError, MAX_BASE_LEN};
pub use conda::CondaSpec;
pub use definition::{
    Bootstrap, Definition, DefinitionError, FileCopy, MAX_DEFINITION_LEN, MAX_FROM_LEN,
    POST_ENVIRONMENT, Script, exec_form, post_instruction,
};
pub use dockerfile::{Dockerfile, DockerfileError, MAX_CONTAINERFILE_LINE, PulledImage};
pub use entry::{EntryError, MAX_ENTRY_LEN, PackageEntry};
pub use image_ref::{ImageRef, ImageRefError, registry_of};
pub use job::{BuildJob, BuildJobError, BuildKind, BuildKindError, DefinitionJob, DockerfileJob};
pub use name::{
    IMAGE_FORMAT_VERSION, ImageKey, ImageKeyError, ImageName, ImageNameError, KeyInputs,
    RegistryHost, RegistryHostError,
};
pub use pip::{PipSpec, normalize_project_name};
pub use platform::{Format, FormatError, Platform, PlatformError};
pub use request::{
    Channel, ChannelError, DEFAULT_CHANNELS, MAX_ENTRIES, MAX_PLATFORMS, Request, RequestError,
    RequestInput,
};

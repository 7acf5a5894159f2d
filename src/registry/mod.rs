//! An OCI distribution-spec v1.1 registry served under `/v2/`: configuration
//! and shared state; the pieces live in the submodules.

pub mod auth;
pub mod client;
pub mod error;
pub mod gc;
pub mod images;
pub mod manifest;
pub mod path;
pub mod server;
pub mod storage;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

use crate::credentials::Credentials;
use std::sync::Arc;
use std::time::Duration;

/// The user name of kiln's own builders.
pub const BUILDER_USER: &str = "kiln-builder";

pub use server::{blob_download_path, parse_download_path, router};

/// The repositories of users' build contexts (`kiln/contexts/<user>`): kiln's builders and
/// operators alone read them, whichever registry holds them.
pub const CONTEXT_REPOSITORIES: &str = "kiln/contexts/";

/// Whether repository `name` holds users' build contexts (see [`CONTEXT_REPOSITORIES`]).
pub fn is_private(name: &str) -> bool {
    name.starts_with(CONTEXT_REPOSITORIES)
}

/// The library entity of kiln itself (and of operators).
pub const LIBRARY_OPERATOR: &str = "library";

/// The collection of one-name library references: `library://<name>` is
/// `library/default/<name>`.
pub const LIBRARY_DEFAULT_COLLECTION: &str = "default";

/// The repository that holds Singularity library image `entity/collection/container`:
/// `library/<container>` for `library/default/<container>` (where kiln's own SIFs are), and
/// `library/<entity>/<collection>/<container>` for everything else, so a SIF in the registry
/// there is pullable as `library://entity/collection/container:<tag>` too.
pub fn library_repository(entity: &str, collection: &str, container: &str) -> String {
    if entity == LIBRARY_OPERATOR && collection == LIBRARY_DEFAULT_COLLECTION {
        format!("library/{container}")
    } else {
        format!("library/{entity}/{collection}/{container}")
    }
}

pub use images::Images;
pub use storage::Storage;

/// A user allowed to write (push, delete), and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// What the user logs in with.
    pub credentials: Credentials,
    /// Where the user may write.
    pub role: auth::Role,
}

impl User {
    /// `user` with `password`, in `role`.
    pub fn new(user: &str, password: &str, role: auth::Role) -> Self {
        User {
            credentials: Credentials::new(user, password),
            role,
        }
    }
}

/// Registry settings.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Directory holding blobs, repositories and uploads.
    pub root: PathBuf,
    /// Largest blob accepted; bigger uploads get 413 SIZE_INVALID.
    pub max_blob_size: u64,
    /// Upload sessions older than this are removed by cleanup.
    pub upload_ttl: Duration,
    /// Users allowed to write.
    pub users: Vec<User>,
    /// How long a token from the token endpoint is good for.
    pub token_ttl: Duration,
    /// What tokens are signed with: the same on every node that should accept them.
    pub signing_key: crate::signing::SigningKey,
    /// Upload sessions one user may hold open at once (kiln's builders are not limited).
    pub max_upload_sessions: usize,
}

#[derive(Debug)]
struct Inner {
    storage: Storage,
    upload_ttl: Duration,
    /// The configured users, then kiln's own builder.
    users: Vec<User>,
    tokens: auth::Tokens,
    max_upload_sessions: usize,
}

/// Shared registry state; cheap to clone.
#[derive(Debug, Clone)]
pub struct RegistryState {
    inner: Arc<Inner>,
}

impl RegistryState {
    /// Opens the store under `config.root`, creating its directories.
    ///
    /// kiln's builders push with a credential of their own, made here and never written down:
    /// it lives as long as the process, like the builders that use it.
    pub async fn new(config: RegistryConfig) -> std::io::Result<Self> {
        let storage = Storage::new(config.root, config.max_blob_size).await?;
        let mut users = config.users;
        users.push(User {
            credentials: Credentials::new(
                BUILDER_USER,
                format!(
                    "{}{}",
                    uuid::Uuid::new_v4().simple(),
                    uuid::Uuid::new_v4().simple()
                ),
            ),
            role: auth::Role::Builder,
        });
        let inner = Inner {
            storage,
            upload_ttl: config.upload_ttl,
            users,
            tokens: auth::Tokens::new(&config.signing_key, config.token_ttl),
            max_upload_sessions: config.max_upload_sessions,
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The underlying store.
    pub fn storage(&self) -> &Storage {
        &self.inner.storage
    }

    /// Users allowed to write.
    pub fn users(&self) -> &[User] {
        &self.inner.users
    }

    /// The credential kiln's own builders push with.
    pub fn builder_credentials(&self) -> &Credentials {
        &self
            .inner
            .users
            .last()
            .expect("the builder credential is always added")
            .credentials
    }

    /// Bearer tokens issued by the token endpoint.
    pub fn tokens(&self) -> &auth::Tokens {
        &self.inner.tokens
    }

    /// What a request with these headers may do.
    pub fn access(&self, headers: &axum::http::HeaderMap) -> auth::Access {
        auth::access(&self.inner.users, &self.inner.tokens, headers)
    }

    /// Upload sessions one user may hold open at once.
    pub fn max_upload_sessions(&self) -> usize {
        self.inner.max_upload_sessions
    }

    /// Removes upload sessions older than the configured TTL; the caller
    /// schedules this (e.g. every few minutes). Returns how many were removed.
    pub async fn cleanup_expired_uploads(&self) -> error::Result<usize> {
        let (removed, _) = self
            .inner
            .storage
            .cleanup_expired_uploads(self.inner.upload_ttl)
            .await?;
        Ok(removed)
    }

    /// Collects garbage as `policy` allows (see [`gc`]).
    pub async fn collect_garbage(&self, policy: &gc::GcPolicy) -> error::Result<gc::GcReport> {
        self.inner.storage.collect_garbage(policy).await
    }
}

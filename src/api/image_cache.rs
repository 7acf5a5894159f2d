//! Images kiln has vouched for, remembered in memory: a request for a known key is answered
//! without reading the registry's files or the database.
//!
//! An entry is what a full check found (the tag exists and points at what the key's last,
//! successful build pushed) together with the registry's change count of the repository read
//! before that check. It is served while that count stays the same: a tag deleted, overwritten
//! or unlinked (by an operator, a library delete or garbage collection) counts up, and the next
//! request checks again. Only successful builds are ever remembered.

use std::sync::Arc;
use std::time::Duration;

use crate::registry::Images;

/// Entries kept at most (about 200 bytes each); the least used go first.
pub const MAX_ENTRIES: u64 = 100_000;

/// How long an entry is served before it is checked again, whatever happened meanwhile.
pub const TIME_TO_LIVE: Duration = Duration::from_secs(600);

/// A checked image: its name and the build that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownImage {
    /// The image name, `host/repository:tag`.
    pub image: String,
    /// The build that pushed it.
    pub build_id: String,
    /// The repository, whose change count the entry was checked at.
    repository: String,
    changes: u64,
}

/// Checked images by build key.
#[derive(Clone)]
pub struct ImageCache {
    entries: moka::future::Cache<String, Arc<KnownImage>>,
}

impl std::fmt::Debug for ImageCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageCache")
            .field("entries", &self.entries.entry_count())
            .finish()
    }
}

impl Default for ImageCache {
    fn default() -> Self {
        Self::new(MAX_ENTRIES, TIME_TO_LIVE)
    }
}

impl ImageCache {
    /// A cache of at most `capacity` entries, each served for `ttl` at most.
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        ImageCache {
            entries: moka::future::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
        }
    }

    /// The image of `key`, named `image`, when it was checked and nothing in its repository
    /// changed since.
    pub async fn get(&self, registry: &Images, key: &str, image: &str) -> Option<Arc<KnownImage>> {
        let known = self.entries.get(key).await?;
        let current = registry.changes(&known.repository);
        if known.image != image || known.changes != current {
            self.entries.invalidate(key).await;
            return None;
        }
        Some(known)
    }

    /// Remembers that `image` of `key`, in `repository`, was made by build `build_id`, as a
    /// check found after the repository's change count was `changes`.
    pub async fn insert(
        &self,
        key: &str,
        image: &str,
        repository: &str,
        changes: u64,
        build_id: &str,
    ) {
        let known = KnownImage {
            image: image.to_owned(),
            build_id: build_id.to_owned(),
            repository: repository.to_owned(),
            changes,
        };
        self.entries.insert(key.to_owned(), Arc::new(known)).await;
    }

    /// Forgets `key`: a build of it is starting, so what was known is not.
    pub async fn forget(&self, key: &str) {
        self.entries.invalidate(key).await;
    }
}

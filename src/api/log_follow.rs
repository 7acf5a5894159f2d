//! What wakes a log follower (the SSE log stream, the remote-build websocket): the store's
//! events about its build, so text written and builds ended by any process reach the follower at
//! once. A slow look at the store is the fallback for a store that cannot tell other processes
//! (a second process on one SQLite file).

use std::time::Duration;

use tokio::sync::broadcast::{self, error::RecvError};

use crate::store::{BuildEvent, Store};

/// How often a follower looks at the store when it has heard nothing.
pub const FALLBACK_LOOK: Duration = Duration::from_secs(1);

/// Watches one build for news. Made before the follower's first read, so nothing written after
/// that read goes unheard.
#[derive(Debug)]
pub struct BuildWatch {
    events: broadcast::Receiver<BuildEvent>,
    id: String,
    fallback: Duration,
}

impl BuildWatch {
    /// Starts listening for news of build `id`.
    pub fn new(store: &dyn Store, id: &str) -> Self {
        BuildWatch {
            events: store.events(),
            id: id.to_owned(),
            fallback: FALLBACK_LOOK,
        }
    }

    /// Sets how long [`changed`](Self::changed) waits in silence before it returns anyway.
    #[cfg(test)]
    pub fn with_fallback(mut self, fallback: Duration) -> Self {
        self.fallback = fallback;
        self
    }

    /// Returns when build `id`'s log may have grown or the build may have ended: an event
    /// about it, missed events, or [`FALLBACK_LOOK`] of silence. Cancel-safe.
    pub async fn changed(&mut self) {
        let silence = tokio::time::sleep(self.fallback);
        tokio::pin!(silence);
        loop {
            tokio::select! {
                () = &mut silence => return,
                event = self.events.recv() => match event {
                    Ok(BuildEvent::Log(id) | BuildEvent::Finished(id)) if id == self.id => return,
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => return,
                    Err(RecvError::Closed) => {
                        silence.as_mut().await;
                        return;
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::SqliteStore;
    use crate::store::contract::{key, request};

    /// A watch wakes when another handle on the database (another node) writes to the build's
    /// log; its fallback is set to an hour, so only the event can wake it within the test.
    #[tokio::test]
    async fn a_log_line_written_elsewhere_wakes_the_watch() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("kiln.db");
        let here: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.unwrap());
        let there: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.unwrap());
        let id = there.submit(request(&key(1))).await.unwrap().build.id;
        let other = there.submit(request(&key(2))).await.unwrap().build.id;
        let mut watch =
            BuildWatch::new(here.as_ref(), &id).with_fallback(Duration::from_secs(3600));
        let woken = tokio::spawn(async move { watch.changed().await });
        there.append_log(&other, "not this one\n").await.unwrap();
        tokio::task::yield_now().await;
        assert!(!woken.is_finished(), "news of another build is no news");
        there.append_log(&id, "step 1\n").await.unwrap();
        tokio::time::timeout(Duration::from_secs(30), woken)
            .await
            .expect("the log line wakes the watch")
            .unwrap();
    }
}

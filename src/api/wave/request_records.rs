//! Wave request records, written to the store off the request path.
//!
//! A container request answers before its record is in the database: the record waits here
//! until a writer task stores it, and reads by id look here first, so a status poll right after
//! the answer finds it all the same. A client asking again and again for a cached image makes
//! the same record (its id is a hash of what it says), so a burst of requests costs one write
//! per batch instead of one per request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::store::{ContainerRequest, Store, StoreError};

/// Records waiting for the writer at most; past it a request writes its own record, as every
/// request did before, which slows requests down to what the database takes.
pub const MAX_PENDING_RECORDS: usize = 10_000;

/// How long the writer gathers records before writing them: repeated requests within it are
/// one write.
const BATCH_WINDOW: Duration = Duration::from_millis(50);

/// How long the writer waits after the database refused a write before it tries again.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Request records not yet written, and the writer's wake-up. Cheap to clone.
#[derive(Clone)]
pub struct RequestRecords {
    shared: Arc<Pending>,
}

struct Pending {
    store: Arc<dyn Store>,
    records: Mutex<HashMap<String, ContainerRequest>>,
    wake: Notify,
}

impl std::fmt::Debug for RequestRecords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestRecords")
            .field("pending", &self.records().len())
            .finish_non_exhaustive()
    }
}

impl RequestRecords {
    /// Records for `store`; nothing is written until [`start`](Self::start) runs the writer.
    pub fn new(store: Arc<dyn Store>) -> Self {
        RequestRecords {
            shared: Arc::new(Pending {
                store,
                records: Mutex::default(),
                wake: Notify::new(),
            }),
        }
    }

    fn records(&self) -> MutexGuard<'_, HashMap<String, ContainerRequest>> {
        // A panic while holding the lock leaves the map whole; keep using it.
        self.shared
            .records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `record` (a newer one of the same id replaces the older) for the writer; writes it
    /// at once when [`MAX_PENDING_RECORDS`] are waiting.
    pub async fn add(&self, record: ContainerRequest) -> Result<(), StoreError> {
        let record = {
            let mut records = self.records();
            if records.len() < MAX_PENDING_RECORDS || records.contains_key(&record.id) {
                records.insert(record.id.clone(), record);
                None
            } else {
                Some(record)
            }
        };
        match record {
            None => {
                self.shared.wake.notify_one();
                Ok(())
            }
            Some(record) => self.shared.store.add_request(&record).await,
        }
    }

    /// Request `id`: the one waiting to be written, else the stored one.
    pub async fn get(&self, id: &str) -> Result<Option<ContainerRequest>, StoreError> {
        if let Some(record) = self.records().get(id).cloned() {
            return Ok(Some(record));
        }
        self.shared.store.request(id).await
    }

    /// Writes every waiting record. A record renewed while it was written stays for the next
    /// round; one the store refused stays too, and the error is returned.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let batch: Vec<ContainerRequest> = self.records().values().cloned().collect();
        let mut failed = None;
        for record in batch {
            match self.shared.store.add_request(&record).await {
                Ok(()) => {
                    let mut records = self.records();
                    if records.get(&record.id) == Some(&record) {
                        records.remove(&record.id);
                    }
                }
                Err(err) => failed = Some(err),
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// How many records wait for the writer.
    pub fn pending(&self) -> usize {
        self.records().len()
    }

    /// Spawns the writer on the current runtime: it writes records in batches until `stop`,
    /// then writes what is left and ends.
    pub fn start(&self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let records = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = records.shared.wake.notified() => {}
                    () = stop.cancelled() => break,
                }
                tokio::select! {
                    () = tokio::time::sleep(BATCH_WINDOW) => {}
                    () = stop.cancelled() => break,
                }
                if let Err(err) = records.flush().await {
                    tracing::warn!(error = %err, "writing container request records failed");
                    records.shared.wake.notify_one();
                    tokio::time::sleep(RETRY_PAUSE).await;
                } else if records.pending() > 0 {
                    // Renewed while they were written: another round.
                    records.shared.wake.notify_one();
                }
            }
            if let Err(err) = records.flush().await {
                tracing::error!(
                    error = %err,
                    pending = records.pending(),
                    "container request records were lost at shutdown"
                );
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    fn record(id: &str, seconds: i64) -> ContainerRequest {
        ContainerRequest {
            id: id.to_owned(),
            build_id: None,
            target_image: "quay.io/biocontainers/samtools:1.21--h50ea8bc_0".to_owned(),
            container_image: "quay.io/biocontainers/samtools:1.21--h50ea8bc_0".to_owned(),
            format: "docker".to_owned(),
            cached: true,
            freeze: false,
            created_at: chrono::DateTime::from_timestamp(seconds, 0).expect("time"),
        }
    }

    #[tokio::test]
    async fn records_are_readable_before_and_after_the_writer_stores_them() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&dir.path().join("kiln.db"))
                .await
                .unwrap(),
        );
        let records = RequestRecords::new(store.clone());
        records.add(record("0123456789ab", 1)).await.unwrap();
        records.add(record("0123456789ab", 2)).await.unwrap();
        // Not written yet (no writer runs), and found anyway: the newer of the two.
        assert_eq!(store.request("0123456789ab").await.unwrap(), None);
        let pending = records.get("0123456789ab").await.unwrap().unwrap();
        assert_eq!(pending.created_at.timestamp(), 2);

        let stop = CancellationToken::new();
        let writer = records.start(stop.clone());
        records.add(record("ba9876543210", 3)).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while records.pending() > 0 {
            assert!(tokio::time::Instant::now() < deadline, "nothing written");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let stored = store.request("0123456789ab").await.unwrap().unwrap();
        assert_eq!(stored.created_at.timestamp(), 2);
        assert!(store.request("ba9876543210").await.unwrap().is_some());

        // What is waiting at shutdown is written before the writer ends.
        records.add(record("a1a1a1a1a1a1", 4)).await.unwrap();
        stop.cancel();
        writer.await.unwrap();
        assert!(store.request("a1a1a1a1a1a1").await.unwrap().is_some());
        assert_eq!(records.pending(), 0);
    }
}

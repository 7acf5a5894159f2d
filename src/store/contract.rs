//! Behaviour every [`Store`] must show; each backend runs it with
//! [`contract_suite!`](contract_suite).

use std::sync::Arc;

use super::*;
use crate::spec::{BuildKind, Platform};

/// One empty database. `open` gives an independent handle on it each
/// call, the way a second kiln process or a restart would.
pub(crate) trait Harness {
    async fn open(&self) -> Arc<dyn Store>;
}

/// Expands to one `#[tokio::test]` per contract check; `$harness` is an
/// async fn returning a fresh [`Harness`].
macro_rules! contract_suite {
    ($harness:path) => {
        $crate::store::contract::contract_suite!(@tests $harness;
            submit_creates_first_attempt,
            submit_joins_unfinished_build,
            submit_after_done_creates_next_attempt,
            success_round_trips,
            illegal_transitions_are_rejected,
            unknown_ids_are_not_found,
            concurrent_submits_share_one_build,
            log_reads_from_byte_offsets,
            data_survives_reopen,
            claims_take_the_oldest_build_first,
            claims_take_only_the_kinds_asked_for,
            concurrent_claims_never_share_a_build,
            expired_leases_are_reclaimed,
            only_the_lease_holder_renews,
            container_requests_round_trip,
            submitters_are_kept_and_queued_builds_counted,
            logs_are_read_in_pages_and_pruned,
            users_are_claimed_once_and_tokens_name_them,
            library_items_nest_and_creation_is_idempotent,
            library_images_upload_and_get_arch_tags,
            package_layers_round_trip_and_are_replaced,
            claims_take_only_builds_on_the_workers_platforms,
            events_tell_of_new_builds_logs_and_finished_builds,
            allowances_charge_only_created_builds,
            concurrent_charged_submits_never_overdraw,
            layer_homes_round_trip_and_are_replaced,
        );
    };
    (@tests $harness:path; $($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $name() {
            $crate::store::contract::$name(&$harness().await).await;
        }
    )*};
}
pub(crate) use contract_suite;

pub(crate) fn key(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

/// A package build of `key` (64 hex characters).
pub(crate) fn request(key: &str) -> NewBuild {
    let request = crate::spec::Request::try_from(crate::spec::RequestInput {
        entries: vec!["numpy".into()],
        platforms: vec!["linux/amd64".into(), "linux/arm64".into()],
        ..crate::spec::RequestInput::default()
    })
    .expect("a valid request");
    NewBuild {
        key: key.parse().expect("a valid key"),
        image: "registry.example/kiln/app:1"
            .parse()
            .expect("an image name"),
        job: crate::spec::BuildJob::Native(request),
        containerfile: "FROM scratch\n".into(),
        environment: "dependencies: [numpy]\n".into(),
    }
}

/// A build of `kind` for `key`.
pub(crate) fn request_of(kind: BuildKind, key: &str) -> NewBuild {
    use crate::spec::{BuildJob, DefinitionJob, DockerfileJob, Platform};
    let platform = Platform::LinuxAmd64;
    let job = match kind {
        BuildKind::Native => return request(key),
        BuildKind::Dockerfile => BuildJob::Dockerfile(DockerfileJob { platform }),
        BuildKind::Definition => BuildJob::Definition(DefinitionJob {
            platform,
            user: "alice".into(),
            library_ref: "alice/tools/app".into(),
            tags: vec!["latest".into()],
            repository: "alice/tools/app".into(),
            context: None,
            working_dir: "/home/alice".into(),
        }),
    };
    NewBuild {
        job,
        environment: String::new(),
        ..request(key)
    }
}

/// Claims the next build of any kind for `worker`.
async fn claim(store: &dyn Store, worker: &str) -> Option<BuildRecord> {
    store
        .claim_next(worker, &WorkerScope::any(), LEASE)
        .await
        .unwrap()
}

fn failed() -> BuildOutcome {
    BuildOutcome::Failed {
        reason: "solver found no environment".into(),
    }
}

pub(crate) async fn submit_creates_first_attempt(h: &impl Harness) {
    let store = h.open().await;
    let sub = store.submit(request(&key(1))).await.unwrap();
    assert!(sub.created);
    let b = &sub.build;
    assert_eq!(b.id, format!("bd-{}_1", &key(1)[..16]));
    assert_eq!((b.attempt, b.status), (1, BuildStatus::Pending));
    assert_eq!(b.platforms(), request(&key(1)).job.platforms());
    assert_eq!(b.job, request(&key(1)).job);
    assert_eq!(
        (b.succeeded, b.started_at, b.finished_at),
        (None, None, None)
    );
    assert_eq!(store.build(&b.id).await.unwrap().as_ref(), Some(b));
}

pub(crate) async fn submit_joins_unfinished_build(h: &impl Harness) {
    let store = h.open().await;
    let first = store.submit(request(&key(2))).await.unwrap().build;
    let again = store.submit(request(&key(2))).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.build, first);

    assert_eq!(
        claim(&*store, "w1").await.map(|b| b.id),
        Some(first.id.clone())
    );
    let while_building = store.submit(request(&key(2))).await.unwrap();
    assert!(!while_building.created);
    assert_eq!(while_building.build.id, first.id);
}

pub(crate) async fn submit_after_done_creates_next_attempt(h: &impl Harness) {
    let store = h.open().await;
    let first = store.submit(request(&key(3))).await.unwrap().build;
    store.finish(&first.id, failed()).await.unwrap();

    let second = store.submit(request(&key(3))).await.unwrap();
    assert!(second.created);
    assert_eq!(second.build.attempt, 2);
    assert_eq!(second.build.id, format!("bd-{}_2", &key(3)[..16]));
    let latest = store.latest_for_key(&key(3)).await.unwrap().unwrap();
    assert_eq!(latest.id, second.build.id);
    let old = store.build(&first.id).await.unwrap().unwrap();
    assert_eq!(old.succeeded, Some(false));
    assert_eq!(old.reason.as_deref(), Some("solver found no environment"));
}

pub(crate) async fn success_round_trips(h: &impl Harness) {
    let store = h.open().await;
    let id = store.submit(request(&key(4))).await.unwrap().build.id;
    let started = claim(&*store, "w1").await.unwrap();
    assert_eq!(started.status, BuildStatus::Building);
    assert!(started.started_at.is_some());

    let outputs = vec![ImageOutput {
        platform: "linux/amd64".into(),
        digest: "sha256:aa".into(),
        size: 5_000_000_000,
        download_url: None,
    }];
    let lock = Some("@EXPLICIT\nhttps://conda.example/numpy.conda\n".to_owned());
    let outcome = BuildOutcome::Succeeded {
        digest: "sha256:index".into(),
        outputs: outputs.clone(),
        lock: lock.clone(),
    };
    let done = store.finish(&id, outcome).await.unwrap();
    assert_eq!(
        (done.status, done.succeeded),
        (BuildStatus::Done, Some(true))
    );
    assert_eq!(done.digest.as_deref(), Some("sha256:index"));
    assert_eq!(done.outputs, outputs);
    assert_eq!(done.lock, lock);
    assert!(done.finished_at >= done.started_at);
    assert_eq!(done.started_at, started.started_at);
    assert_eq!(done.created_at, started.created_at);
}

pub(crate) async fn illegal_transitions_are_rejected(h: &impl Harness) {
    use BuildStatus::{Done, Pending};
    let store = h.open().await;
    let id = store.submit(request(&key(5))).await.unwrap().build.id;
    let success = BuildOutcome::Succeeded {
        digest: "sha256:x".into(),
        outputs: vec![],
        lock: None,
    };
    let refused = |e: StoreError| match e {
        StoreError::IllegalTransition { from, to, .. } => (from, to),
        other => panic!("expected an illegal transition, got: {other}"),
    };
    let err = store.finish(&id, success.clone()).await.unwrap_err();
    assert_eq!(refused(err), (Pending, Done));
    claim(&*store, "w1").await.unwrap();
    store.finish(&id, failed()).await.unwrap();
    let err = store.finish(&id, failed()).await.unwrap_err();
    assert_eq!(refused(err), (Done, Done));
    let err = store.finish(&id, success).await.unwrap_err();
    assert_eq!(refused(err), (Done, Done));
}

pub(crate) async fn unknown_ids_are_not_found(h: &impl Harness) {
    let store = h.open().await;
    let missing = "bd-0000000000000000_1";
    let not_found = |e: StoreError| matches!(e, StoreError::BuildNotFound { id } if id == missing);
    assert_eq!(store.build(missing).await.unwrap(), None);
    assert_eq!(store.latest_for_key(&key(6)).await.unwrap(), None);
    assert!(not_found(
        store.finish(missing, failed()).await.unwrap_err()
    ));
    assert!(not_found(store.append_log(missing, "x").await.unwrap_err()));
    assert!(not_found(store.read_log(missing, 0).await.unwrap_err()));
}

pub(crate) async fn container_requests_round_trip(h: &impl Harness) {
    let store = h.open().await;
    let build = store.submit(request(&key(12))).await.unwrap().build;
    let with_build = ContainerRequest {
        id: "0123456789ab".into(),
        build_id: Some(build.id.clone()),
        target_image: "kiln.example/library/x:1--0123".into(),
        container_image: "kiln.example/library/x:1--0123".into(),
        format: "docker".into(),
        cached: false,
        freeze: true,
        created_at: chrono::DateTime::parse_from_rfc3339("2026-11-21T10:00:00.123456Z")
            .unwrap()
            .with_timezone(&chrono::Utc),
    };
    let pass_through = ContainerRequest {
        id: "ba9876543210".into(),
        build_id: None,
        cached: true,
        ..with_build.clone()
    };
    store.add_request(&with_build).await.unwrap();
    store.add_request(&pass_through).await.unwrap();
    let again = h.open().await;
    assert_eq!(
        again.request(&with_build.id).await.unwrap(),
        Some(with_build.clone())
    );
    assert_eq!(
        again.request(&pass_through.id).await.unwrap(),
        Some(pass_through.clone())
    );
    assert_eq!(again.request("000000000000").await.unwrap(), None);
    // Recording the same id again adds no row; it renews the record's time.
    let later = ContainerRequest {
        created_at: with_build.created_at + chrono::TimeDelta::days(3),
        ..with_build.clone()
    };
    store.add_request(&later).await.unwrap();
    assert_eq!(again.request(&with_build.id).await.unwrap(), Some(later));

    // Pruning deletes records last used before the cut.
    let cut = with_build.created_at + chrono::TimeDelta::days(1);
    assert_eq!(store.prune_requests(cut).await.unwrap(), 1);
    assert_eq!(again.request(&pass_through.id).await.unwrap(), None);
    assert!(again.request(&with_build.id).await.unwrap().is_some());
}

pub(crate) async fn submitters_are_kept_and_queued_builds_counted(h: &impl Harness) {
    let store = h.open().await;
    let alice = Submitter {
        token_hash: Some("a1".repeat(32)),
        address: Some("192.0.2.1".into()),
    };
    let first = store.submit_as(request(&key(60)), &alice).await.unwrap();
    // Joining keeps the first submitter.
    let joined = store.submit(request(&key(60))).await.unwrap();
    assert!(!joined.created);
    assert_eq!(
        store.submitter(&first.build.id).await.unwrap(),
        Some(alice.clone())
    );
    store.submit(request(&key(61))).await.unwrap();
    let other = store.submit(request(&key(62))).await.unwrap().build;
    assert_eq!(
        store.submitter(&other.id).await.unwrap(),
        Some(Submitter::default())
    );
    assert_eq!(
        store.submitter("bd-0000000000000000_1").await.unwrap(),
        None
    );

    assert_eq!(
        store.queued_builds(Some("192.0.2.1")).await.unwrap(),
        (3, 1)
    );
    assert_eq!(store.queued_builds(None).await.unwrap(), (3, 0));
    // Claimed builds wait no more.
    let claimed = store
        .claim_next("w1", &WorkerScope::any(), LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.id, first.build.id);
    assert_eq!(claimed.claims, 1);
    assert_eq!(
        store.queued_builds(Some("192.0.2.1")).await.unwrap(),
        (2, 0)
    );
}

pub(crate) async fn logs_are_read_in_pages_and_pruned(h: &impl Harness) {
    let store = h.open().await;
    let id = store.submit(request(&key(63))).await.unwrap().build.id;
    let line = format!("{}\n", "z".repeat(999));
    for _ in 0..200 {
        store.append_log(&id, &line).await.unwrap();
    }
    let mut offset = 0;
    let mut pages = 0;
    let mut read = 0;
    loop {
        let page = store.read_log(&id, offset).await.unwrap();
        if page.text.is_empty() {
            assert_eq!(page.next_offset, 200_000);
            break;
        }
        assert!(page.text.len() <= LOG_PAGE + 1000, "{}", page.text.len());
        assert_eq!(page.next_offset, offset + page.text.len() as u64);
        read += page.text.len();
        offset = page.next_offset;
        pages += 1;
    }
    assert_eq!((read, pages), (200_000, 200_000usize.div_ceil(LOG_PAGE)));

    // Only logs of builds finished before the cut go.
    let running = store.submit(request(&key(64))).await.unwrap().build.id;
    store.append_log(&running, "still going\n").await.unwrap();
    store.finish(&id, failed()).await.unwrap();
    let now = chrono::Utc::now();
    assert_eq!(
        store
            .prune_logs(now - chrono::TimeDelta::hours(1))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .prune_logs(now + chrono::TimeDelta::hours(1))
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.read_log(&id, 0).await.unwrap().text, "");
    assert!(
        store.build(&id).await.unwrap().is_some(),
        "the record stays"
    );
    assert_eq!(
        store.read_log(&running, 0).await.unwrap().text,
        "still going\n"
    );
}

fn at(seconds: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(1_800_000_000 + seconds, 0).expect("a valid time")
}

fn library_item(id: &str, name: &str) -> LibraryItem {
    LibraryItem {
        id: id.into(),
        name: name.into(),
        description: "No description".into(),
        created_by: "alice".into(),
        created_at: at(0),
    }
}

pub(crate) async fn users_are_claimed_once_and_tokens_name_them(h: &impl Harness) {
    let store = h.open().await;
    assert!(store.claim_user("alice", at(0)).await.unwrap());
    assert!(!store.claim_user("alice", at(1)).await.unwrap());
    assert_eq!(store.token_user(&"a1".repeat(32)).await.unwrap(), None);
    store
        .add_token(&"a1".repeat(32), "alice", at(2))
        .await
        .unwrap();
    // An operator minting for a name nobody holds claims it on the way.
    store
        .add_token(&"b2".repeat(32), "bob", at(3))
        .await
        .unwrap();
    assert!(!store.claim_user("bob", at(4)).await.unwrap());
    let again = h.open().await;
    assert_eq!(
        again.token_user(&"a1".repeat(32)).await.unwrap().as_deref(),
        Some("alice")
    );
    assert_eq!(
        again.token_user(&"b2".repeat(32)).await.unwrap().as_deref(),
        Some("bob")
    );
    assert!(
        store
            .add_token(&"a1".repeat(32), "bob", at(5))
            .await
            .is_err(),
        "token hashes are unique"
    );
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let store = Arc::clone(&again);
            tokio::spawn(async move { store.claim_user("carol", at(i)).await.unwrap() })
        })
        .collect();
    let mut won = 0;
    for task in tasks {
        won += usize::from(task.await.unwrap());
    }
    assert_eq!(won, 1, "one claimer wins a name");
}

pub(crate) async fn library_items_nest_and_creation_is_idempotent(h: &impl Harness) {
    use LibraryLevel::{Collection, Container, Entity};
    let store = h.open().await;
    let entity = store
        .add_library_item(Entity, None, &library_item(&"e".repeat(24), "alice"))
        .await
        .unwrap();
    assert_eq!(entity.level(), Entity);
    assert_eq!(entity.item().name, "alice");
    let collection = store
        .add_library_item(
            Collection,
            Some(&"e".repeat(24)),
            &library_item(&"c".repeat(24), "tools"),
        )
        .await
        .unwrap();
    assert_eq!(collection.entity, entity.entity);
    assert_eq!(collection.level(), Collection);
    let container = store
        .add_library_item(
            Container,
            Some(&"c".repeat(24)),
            &library_item(&"d".repeat(24), "samtools"),
        )
        .await
        .unwrap();
    assert_eq!(container.level(), Container);
    assert_eq!(container.collection, collection.collection);
    assert_eq!(container.item().id, "d".repeat(24));

    // The same name again gives the first item back, whatever id was proposed.
    let twice = store
        .add_library_item(
            Container,
            Some(&"c".repeat(24)),
            &library_item(&"f".repeat(24), "samtools"),
        )
        .await
        .unwrap();
    assert_eq!(twice, container);

    let again = h.open().await;
    for (key, expected) in [
        (LibraryKey::Names(&["alice"]), Some(&entity)),
        (LibraryKey::Names(&["alice", "tools"]), Some(&collection)),
        (
            LibraryKey::Names(&["alice", "tools", "samtools"]),
            Some(&container),
        ),
        (LibraryKey::Names(&["alice", "samtools"]), None),
        (LibraryKey::Names(&["bob"]), None),
        (LibraryKey::Names(&[]), None),
        (LibraryKey::Id(Entity, &"e".repeat(24)), Some(&entity)),
        (
            LibraryKey::Id(Collection, &"c".repeat(24)),
            Some(&collection),
        ),
        (LibraryKey::Id(Container, &"d".repeat(24)), Some(&container)),
        (LibraryKey::Id(Container, &"c".repeat(24)), None),
    ] {
        assert_eq!(
            again.library_item(key).await.unwrap().as_ref(),
            expected,
            "{key:?}"
        );
    }
    assert_eq!(
        again
            .library_children(Entity, &"e".repeat(24))
            .await
            .unwrap(),
        vec!["c".repeat(24)]
    );
    assert_eq!(
        again
            .library_children(Collection, &"c".repeat(24))
            .await
            .unwrap(),
        vec!["d".repeat(24)]
    );
    let orphan = store
        .add_library_item(
            Collection,
            Some(&"0".repeat(24)),
            &library_item(&"1".repeat(24), "x"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&orphan, StoreError::LibraryItemNotFound { level: Entity, id } if *id == "0".repeat(24)),
        "{orphan}"
    );
    assert!(matches!(
        store
            .add_library_item(Container, None, &library_item(&"1".repeat(24), "x"))
            .await,
        Err(StoreError::LibraryParentMissing { level: Container })
    ));
}

pub(crate) async fn library_images_upload_and_get_arch_tags(h: &impl Harness) {
    use LibraryLevel::{Collection, Container, Entity};
    let store = h.open().await;
    store
        .add_library_item(Entity, None, &library_item(&"e".repeat(24), "alice"))
        .await
        .unwrap();
    store
        .add_library_item(
            Collection,
            Some(&"e".repeat(24)),
            &library_item(&"c".repeat(24), "tools"),
        )
        .await
        .unwrap();
    let container = "d".repeat(24);
    store
        .add_library_item(
            Container,
            Some(&"c".repeat(24)),
            &library_item(&container, "samtools"),
        )
        .await
        .unwrap();
    let announced = LibraryImage {
        id: "1".repeat(24),
        container_id: container.clone(),
        hash: "ab".repeat(32),
        description: "samtools".into(),
        arch: None,
        size: None,
        uploaded_at: None,
        upload_secret: None,
        created_by: "alice".into(),
        created_at: at(10),
    };
    let image = store.add_library_image(&announced).await.unwrap();
    assert_eq!(image, announced);
    assert!(!image.uploaded());
    let same_hash = LibraryImage {
        id: "2".repeat(24),
        ..announced.clone()
    };
    assert_eq!(
        store.add_library_image(&same_hash).await.unwrap(),
        announced
    );
    let elsewhere = LibraryImage {
        container_id: "0".repeat(24),
        ..same_hash.clone()
    };
    assert!(matches!(
        store.add_library_image(&elsewhere).await,
        Err(StoreError::LibraryItemNotFound {
            level: Container,
            ..
        })
    ));

    store
        .set_upload_secret(&image.id, &"5e".repeat(32))
        .await
        .unwrap();
    let by_hash = store
        .library_image(ImageKey::Hash {
            container_id: &container,
            hash: &"ab".repeat(32),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_hash.upload_secret, Some("5e".repeat(32)));
    assert!(matches!(
        store.set_upload_secret(&"9".repeat(24), "x").await,
        Err(StoreError::ImageNotFound { .. })
    ));
    let uploaded = store
        .finish_upload(&image.id, "arm64", 5_000_000_000, at(11))
        .await
        .unwrap();
    assert!(uploaded.uploaded());
    assert_eq!(
        (
            uploaded.arch.as_deref(),
            uploaded.size,
            uploaded.upload_secret.as_deref()
        ),
        (Some("arm64"), Some(5_000_000_000), None)
    );
    let again = h.open().await;
    assert_eq!(
        again.library_image(ImageKey::Id(&image.id)).await.unwrap(),
        Some(uploaded.clone())
    );
    assert_eq!(
        again
            .library_image(ImageKey::Id(&"9".repeat(24)))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        again.library_children(Container, &container).await.unwrap(),
        vec![image.id.clone()]
    );

    let amd64 = store
        .add_library_image(&LibraryImage {
            id: "3".repeat(24),
            hash: "cd".repeat(32),
            created_at: at(12),
            ..announced.clone()
        })
        .await
        .unwrap();
    let tag = |arch: &str, tag: &str, image_id: &str, when: i64| ArchTag {
        container_id: container.clone(),
        arch: arch.into(),
        tag: tag.into(),
        image_id: image_id.into(),
        updated_at: at(when),
    };
    store
        .set_library_tag(&tag("arm64", "latest", &image.id, 20))
        .await
        .unwrap();
    store
        .set_library_tag(&tag("amd64", "latest", &image.id, 21))
        .await
        .unwrap();
    // Moving a tag keeps one row per (arch, tag).
    store
        .set_library_tag(&tag("amd64", "latest", &amd64.id, 22))
        .await
        .unwrap();
    store
        .set_library_tag(&tag("arm64", "1.21", &image.id, 23))
        .await
        .unwrap();
    assert_eq!(
        again.library_tags(&container).await.unwrap(),
        vec![
            tag("arm64", "latest", &image.id, 20),
            tag("amd64", "latest", &amd64.id, 22),
            tag("arm64", "1.21", &image.id, 23),
        ]
    );
    assert!(matches!(
        store
            .set_library_tag(&tag("amd64", "x", &"9".repeat(24), 24))
            .await,
        Err(StoreError::ImageNotFound { .. })
    ));
    assert_eq!(again.library_tags(&"0".repeat(24)).await.unwrap(), vec![]);
}

pub(crate) async fn concurrent_submits_share_one_build(h: &impl Harness) {
    let stores = [h.open().await, h.open().await];
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = Arc::clone(&stores[i % 2]);
            tokio::spawn(async move { store.submit(request(&key(7))).await.unwrap() })
        })
        .collect();
    let mut created = 0;
    let mut ids = std::collections::HashSet::new();
    for task in tasks {
        let sub = task.await.unwrap();
        created += usize::from(sub.created);
        ids.insert(sub.build.id);
    }
    assert_eq!(created, 1);
    assert_eq!(ids.len(), 1);
}

pub(crate) async fn log_reads_from_byte_offsets(h: &impl Harness) {
    let store = h.open().await;
    let id = store.submit(request(&key(8))).await.unwrap().build.id;
    assert_eq!(store.read_log(&id, 0).await.unwrap().next_offset, 0);

    assert_eq!(store.append_log(&id, "héllo ").await.unwrap(), 7);
    assert_eq!(store.append_log(&id, "wörld ✓").await.unwrap(), 17);
    for (offset, text) in [
        (0, "héllo wörld ✓"),
        (3, "llo wörld ✓"),  // spans both chunks
        (7, "wörld ✓"),      // a chunk start
        (2, "éllo wörld ✓"), // inside é: rounds down
        (9, "örld ✓"),       // inside ö: rounds down
        (16, "✓"),           // inside ✓: rounds down
        (17, ""),
        (u64::MAX, ""),
    ] {
        let slice = store.read_log(&id, offset).await.unwrap();
        assert_eq!(
            (slice.text.as_str(), slice.next_offset),
            (text, 17),
            "offset {offset}"
        );
    }
}

pub(crate) async fn data_survives_reopen(h: &impl Harness) {
    let (id, before) = {
        let store = h.open().await;
        let id = store.submit(request(&key(9))).await.unwrap().build.id;
        claim(&*store, "w1").await.unwrap();
        store.append_log(&id, "step 1\n").await.unwrap();
        (id.clone(), store.build(&id).await.unwrap())
    };
    let store = h.open().await;
    assert_eq!(store.build(&id).await.unwrap(), before);
    assert_eq!(store.read_log(&id, 0).await.unwrap().text, "step 1\n");
}
const LEASE: Duration = Duration::from_secs(60);

pub(crate) async fn claims_take_the_oldest_build_first(h: &impl Harness) {
    let store = h.open().await;
    assert_eq!(
        store
            .claim_next("w1", &WorkerScope::any(), LEASE)
            .await
            .unwrap(),
        None
    );
    let mut ids = Vec::new();
    for n in [20, 21, 22] {
        ids.push(store.submit(request(&key(n))).await.unwrap().build.id);
    }
    for id in &ids {
        let claimed = store
            .claim_next("w1", &WorkerScope::any(), LEASE)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&claimed.id, id);
        assert_eq!(claimed.status, BuildStatus::Building);
        assert!(claimed.started_at.is_some());
    }
    // Claimed builds hold live leases, so nothing is left.
    assert_eq!(
        store
            .claim_next("w2", &WorkerScope::any(), LEASE)
            .await
            .unwrap(),
        None
    );
    // A claimed build finishes like a started one.
    let done = store.finish(&ids[0], failed()).await.unwrap();
    assert_eq!(done.status, BuildStatus::Done);
    assert_eq!(
        store
            .claim_next("w2", &WorkerScope::any(), Duration::ZERO)
            .await
            .unwrap(),
        None
    );
}

pub(crate) async fn claims_take_only_the_kinds_asked_for(h: &impl Harness) {
    use BuildKind::{Definition, Dockerfile, Native};
    let store = h.open().await;
    let mut ids = std::collections::HashMap::new();
    for (n, kind) in [(70, Definition), (71, Native), (72, Dockerfile)] {
        let build = store.submit(request_of(kind, &key(n))).await.unwrap().build;
        assert_eq!(build.job.kind(), kind);
        ids.insert(kind, build.id);
    }
    assert_eq!(
        store
            .claim_next("w1", &WorkerScope::of_kinds(&[]), LEASE)
            .await
            .unwrap(),
        None
    );
    // The oldest build of the kinds asked for, whatever older ones of others wait.
    let native = store
        .claim_next("w1", &WorkerScope::of_kinds(&[Native, Dockerfile]), LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((&native.id, native.job.kind()), (&ids[&Native], Native));
    let next = store
        .claim_next("w1", &WorkerScope::of_kinds(&[Dockerfile]), LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next.id, ids[&Dockerfile]);
    assert_eq!(next.job, request_of(Dockerfile, &key(72)).job);
    assert_eq!(
        store
            .claim_next("w1", &WorkerScope::of_kinds(&[Native, Dockerfile]), LEASE)
            .await
            .unwrap(),
        None
    );
    // A kind left alone is there for a worker that takes it, in another process too.
    let definition = claim(&*h.open().await, "w2").await.unwrap();
    assert_eq!(definition.id, ids[&Definition]);
    assert_eq!(definition.job, request_of(Definition, &key(70)).job);
}

pub(crate) async fn concurrent_claims_never_share_a_build(h: &impl Harness) {
    let stores = [h.open().await, h.open().await];
    let mut submitted = std::collections::HashSet::new();
    for n in 30..35 {
        submitted.insert(stores[0].submit(request(&key(n))).await.unwrap().build.id);
    }
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let store = Arc::clone(&stores[i % 2]);
            tokio::spawn(async move {
                let worker = format!("w{i}");
                store
                    .claim_next(&worker, &WorkerScope::any(), LEASE)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut claimed = Vec::new();
    for task in tasks {
        claimed.extend(task.await.unwrap().map(|b| b.id));
    }
    claimed.sort();
    let unique: std::collections::HashSet<_> = claimed.iter().cloned().collect();
    assert_eq!(claimed.len(), 5, "each build is claimed once: {claimed:?}");
    assert_eq!(unique, submitted);
}

pub(crate) async fn expired_leases_are_reclaimed(h: &impl Harness) {
    let store = h.open().await;
    let id = store.submit(request(&key(40))).await.unwrap().build.id;
    let first = store
        .claim_next("crashed", &WorkerScope::any(), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(first.map(|b| b.id).as_ref(), Some(&id));
    tokio::time::sleep(Duration::from_millis(5)).await;

    let again = store
        .claim_next("w2", &WorkerScope::any(), LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (again.id.as_str(), again.status),
        (id.as_str(), BuildStatus::Building)
    );
    // The crashed worker's heartbeat finds out; the new holder's works.
    let lost = store.renew_lease(&id, "crashed", LEASE).await.unwrap_err();
    assert!(matches!(lost, StoreError::LeaseLost { worker, .. } if worker == "crashed"));
    store.renew_lease(&id, "w2", LEASE).await.unwrap();
    assert_eq!(claim(&*store, "w3").await, None);
}

pub(crate) async fn package_layers_round_trip_and_are_replaced(h: &impl Harness) {
    let store = h.open().await;
    let layer = PackageLayer {
        key: key(7),
        digest: format!("sha256:{}", key(8)),
        diff_id: format!("sha256:{}", key(9)),
        size: 1234,
        uncompressed_size: u64::from(u32::MAX) + 5,
        python_metadata: vec!["lib/python3.12/site-packages/six-1.16.0.dist-info".into()],
        license: Some("MIT".into()),
    };
    assert_eq!(store.package_layer(&layer.key).await.unwrap(), None);
    store.add_package_layer(&layer).await.unwrap();
    assert_eq!(
        h.open().await.package_layer(&layer.key).await.unwrap(),
        Some(layer.clone())
    );
    let again = PackageLayer {
        digest: format!("sha256:{}", key(10)),
        python_metadata: Vec::new(),
        license: None,
        ..layer.clone()
    };
    store.add_package_layer(&again).await.unwrap();
    assert_eq!(store.package_layer(&layer.key).await.unwrap(), Some(again));
    assert_eq!(store.package_layer(&key(1)).await.unwrap(), None);
}

pub(crate) async fn only_the_lease_holder_renews(h: &impl Harness) {
    let store = h.open().await;
    let id = store.submit(request(&key(50))).await.unwrap().build.id;
    let lost = |e: StoreError| matches!(e, StoreError::LeaseLost { id: lost, .. } if lost == id);
    // Not claimed yet: nobody holds it.
    assert!(lost(store.renew_lease(&id, "w1", LEASE).await.unwrap_err()));
    store
        .claim_next("w1", &WorkerScope::any(), LEASE)
        .await
        .unwrap()
        .unwrap();
    store.renew_lease(&id, "w1", LEASE).await.unwrap();
    assert!(lost(store.renew_lease(&id, "w2", LEASE).await.unwrap_err()));
    store.finish(&id, failed()).await.unwrap();
    assert!(lost(store.renew_lease(&id, "w1", LEASE).await.unwrap_err()));

    let missing = "bd-0000000000000000_1";
    let err = store.renew_lease(missing, "w1", LEASE).await.unwrap_err();
    assert!(matches!(err, StoreError::BuildNotFound { id } if id == missing));
}

pub(crate) async fn claims_take_only_builds_on_the_workers_platforms(h: &impl Harness) {
    use crate::spec::Platform::{LinuxAmd64, LinuxArm64};
    let store = h.open().await;
    let scope = |platforms: &[Platform]| WorkerScope {
        kinds: BuildKind::ALL.to_vec(),
        platforms: platforms.to_vec(),
    };
    // Both platforms (the older build), then amd64 alone.
    let both = store.submit(request(&key(80))).await.unwrap().build;
    let amd64 = store
        .submit(request_of(BuildKind::Dockerfile, &key(81)))
        .await
        .unwrap()
        .build;
    assert_eq!(amd64.platforms(), [LinuxAmd64]);
    assert_eq!(
        store
            .claim_next("arm", &scope(&[LinuxArm64]), LEASE)
            .await
            .unwrap(),
        None,
        "an arm64 worker takes no build that needs amd64"
    );
    let taken = store
        .claim_next("x86", &scope(&[LinuxAmd64]), LEASE)
        .await
        .unwrap();
    assert_eq!(
        taken.map(|b| b.id),
        Some(amd64.id),
        "the older build needs arm64 too"
    );
    assert!(!scope(&[LinuxAmd64]).takes(&both));
    // Both platforms, in either order, or any platform at all.
    let taken = store
        .claim_next("both", &scope(&[LinuxArm64, LinuxAmd64]), LEASE)
        .await
        .unwrap();
    assert_eq!(taken.map(|b| b.id), Some(both.id.clone()));
    store.finish(&both.id, failed()).await.unwrap();
    let again = store.submit(request(&key(80))).await.unwrap().build;
    assert!(WorkerScope::any().takes(&again));
    assert_eq!(claim(&*store, "any").await.map(|b| b.id), Some(again.id));
}

/// The next event on `events`, failing the test after a while (PostgreSQL's notifications
/// arrive asynchronously, SQLite's at once).
async fn next_event(events: &mut tokio::sync::broadcast::Receiver<BuildEvent>) -> BuildEvent {
    tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("an event within 10 s")
        .expect("the event channel is open and kept up")
}

pub(crate) async fn events_tell_of_new_builds_logs_and_finished_builds(h: &impl Harness) {
    let writer = h.open().await;
    // Another handle on the database, as another process would have.
    let watcher = h.open().await;
    let mut events = watcher.events();
    let mut own = writer.events();
    let id = writer.submit(request(&key(90))).await.unwrap().build.id;
    assert_eq!(
        next_event(&mut events).await,
        BuildEvent::Submitted(id.clone())
    );
    // Joining is no new build: the next event is the log line.
    assert!(!writer.submit(request(&key(90))).await.unwrap().created);
    writer.append_log(&id, "resolving\n").await.unwrap();
    assert_eq!(next_event(&mut events).await, BuildEvent::Log(id.clone()));
    // A refused transition tells nothing; a done build is told.
    let success = BuildOutcome::Succeeded {
        digest: "sha256:x".into(),
        outputs: vec![],
        lock: None,
    };
    writer.finish(&id, success).await.unwrap_err();
    writer.finish(&id, failed()).await.unwrap();
    assert_eq!(
        next_event(&mut events).await,
        BuildEvent::Finished(id.clone())
    );
    // The writer's own listeners hear the same, in order.
    for expected in [
        BuildEvent::Submitted(id.clone()),
        BuildEvent::Log(id.clone()),
        BuildEvent::Finished(id.clone()),
    ] {
        assert_eq!(next_event(&mut own).await, expected);
    }
}

pub(crate) async fn allowances_charge_only_created_builds(h: &impl Harness) {
    let store = h.open().await;
    let by = Submitter::default();
    let alice = Allowance {
        client: "address:10.0.0.1".into(),
        per_day: 2,
    };
    let first = store
        .submit_charged(request(&key(100)), &by, Some(&alice))
        .await
        .unwrap();
    assert!(first.created);
    // Joining the unfinished build is free, however often.
    for _ in 0..3 {
        let joined = store
            .submit_charged(request(&key(100)), &by, Some(&alice))
            .await
            .unwrap();
        assert!(!joined.created);
    }
    assert!(
        store
            .submit_charged(request(&key(101)), &by, Some(&alice))
            .await
            .unwrap()
            .created
    );
    match store
        .submit_charged(request(&key(102)), &by, Some(&alice))
        .await
    {
        Err(StoreError::AllowanceSpent {
            client,
            retry_after,
        }) => {
            assert_eq!(client, alice.client);
            let day = Duration::from_secs(24 * 3600);
            assert!(retry_after <= day && retry_after > day - Duration::from_secs(600));
        }
        other => panic!("expected the allowance to be spent, got {other:?}"),
    }
    assert_eq!(
        store.latest_for_key(&key(102)).await.unwrap(),
        None,
        "a refused submit creates nothing"
    );
    // Still free to join with the allowance spent; other clients and no allowance are apart.
    assert!(
        !store
            .submit_charged(request(&key(101)), &by, Some(&alice))
            .await
            .unwrap()
            .created
    );
    let bob = Allowance {
        client: "address:10.0.0.2".into(),
        ..alice.clone()
    };
    assert!(
        store
            .submit_charged(request(&key(102)), &by, Some(&bob))
            .await
            .unwrap()
            .created
    );
    assert!(store.submit(request(&key(103))).await.unwrap().created);
    let unlimited = Allowance {
        per_day: 0,
        ..alice.clone()
    };
    assert!(
        store
            .submit_charged(request(&key(104)), &by, Some(&unlimited))
            .await
            .unwrap()
            .created
    );
    // Another process on the database counts the same charges.
    let other = h.open().await;
    assert!(matches!(
        other
            .submit_charged(request(&key(105)), &by, Some(&alice))
            .await,
        Err(StoreError::AllowanceSpent { .. })
    ));
}

pub(crate) async fn concurrent_charged_submits_never_overdraw(h: &impl Harness) {
    let stores = [h.open().await, h.open().await];
    let allowance = Allowance {
        client: "user:carol".into(),
        per_day: 3,
    };
    let tasks: Vec<_> = (0..12u8)
        .map(|n| {
            let store = Arc::clone(&stores[usize::from(n) % 2]);
            let allowance = allowance.clone();
            tokio::spawn(async move {
                store
                    .submit_charged(
                        request(&key(110 + n)),
                        &Submitter::default(),
                        Some(&allowance),
                    )
                    .await
            })
        })
        .collect();
    let (mut created, mut refused) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(submitted) => {
                assert!(submitted.created);
                created += 1;
            }
            Err(StoreError::AllowanceSpent { .. }) => refused += 1,
            Err(other) => panic!("submitting failed: {other}"),
        }
    }
    assert_eq!((created, refused), (3, 9));
}

pub(crate) async fn layer_homes_round_trip_and_are_replaced(h: &impl Harness) {
    let store = h.open().await;
    let digest = format!("sha256:{}", "ab".repeat(32));
    assert_eq!(store.layer_home(&digest).await.unwrap(), None);
    store.set_layer_home(&digest, "kiln/app-a").await.unwrap();
    assert_eq!(
        h.open().await.layer_home(&digest).await.unwrap().as_deref(),
        Some("kiln/app-a")
    );
    store.set_layer_home(&digest, "kiln/app-b").await.unwrap();
    assert_eq!(
        store.layer_home(&digest).await.unwrap().as_deref(),
        Some("kiln/app-b")
    );
    let other = format!("sha256:{}", "cd".repeat(32));
    assert_eq!(store.layer_home(&other).await.unwrap(), None);
}

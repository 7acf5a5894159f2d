//! Deleted content is gone from every route, and garbage collection removes only what nothing
//! references, also while pushes run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::StatusCode;

use super::super::gc::{GcPolicy, GcReport};
use super::*;

fn download(d: &str) -> String {
    super::super::blob_download_path(d).unwrap()
}

fn policy(grace: Duration) -> GcPolicy {
    GcPolicy {
        grace,
        upload_ttl: Duration::from_secs(3600),
        remote_build_retention: Some(Duration::from_secs(3600)),
    }
}

/// Pushes a manifest referencing config `{"n": n}` and `layers` (already pushed); returns
/// its digest.
async fn push_image(reg: &Reg, name: &str, tag: &str, config: &str, layers: &[&str]) -> String {
    let layers: Vec<Value> = layers
        .iter()
        .map(|d| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": 1}))
        .collect();
    let m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 1},
        "layers": layers,
    });
    let bytes = serde_json::to_vec(&m).unwrap();
    let r = reg.push_manifest(name, tag, OCI_MANIFEST, &bytes).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    r.header("docker-content-digest").to_owned()
}

async fn status(reg: &Reg, uri: &str) -> StatusCode {
    reg.req("GET", uri, &[], Body::empty()).await.status
}

#[tokio::test]
async fn deleted_content_is_not_served_by_any_route() {
    let reg = setup().await;
    let config = reg.push_blob("alice/app", b"{\"n\":1}").await;
    let layer = reg.push_blob("alice/app", b"secret layer").await;
    let shared = reg.push_blob("alice/app", b"shared layer").await;
    reg.push_blob("bob/app", b"shared layer").await;
    let manifest = push_image(&reg, "alice/app", "v1", &config, &[&layer, &shared]).await;
    assert_eq!(status(&reg, &download(&layer)).await, StatusCode::OK);
    assert_eq!(status(&reg, &download(&manifest)).await, StatusCode::OK);

    let deleted = reg
        .req(
            "DELETE",
            &format!("/v2/alice/app/manifests/{manifest}"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(deleted.status, StatusCode::ACCEPTED);
    for blob in [&layer, &shared, &config] {
        let r = reg
            .req(
                "DELETE",
                &format!("/v2/alice/app/blobs/{blob}"),
                &[],
                Body::empty(),
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED);
    }
    for gone in [&layer, &config, &manifest] {
        assert_eq!(
            status(&reg, &format!("/v2/alice/app/blobs/{gone}")).await,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status(&reg, &download(gone)).await,
            StatusCode::NOT_FOUND,
            "{gone} is still downloadable"
        );
    }
    assert_eq!(
        status(&reg, &format!("/v2/alice/app/manifests/{manifest}")).await,
        StatusCode::NOT_FOUND
    );
    // What another repository still holds stays.
    assert_eq!(
        status(&reg, &format!("/v2/bob/app/blobs/{shared}")).await,
        StatusCode::OK
    );
    assert_eq!(status(&reg, &download(&shared)).await, StatusCode::OK);
}

#[tokio::test]
async fn collection_removes_only_unreferenced_blobs_past_the_grace_period() {
    let reg = setup().await;
    let storage = reg.state.storage();
    let config = reg.push_blob("alice/app", b"{\"n\":1}").await;
    let kept = reg.push_blob("alice/app", b"kept layer").await;
    let image = push_image(&reg, "alice/app", "v1", &config, &[&kept]).await;
    let orphan = reg.push_blob("alice/app", b"orphan!").await;
    let old = reg.push_blob("alice/app", b"old layer").await;
    let old_image = push_image(&reg, "alice/app", "v0", &config, &[&old]).await;
    let r = reg
        .req(
            "DELETE",
            &format!("/v2/alice/app/manifests/{old_image}"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);

    // Young garbage stays.
    let report = storage
        .collect_garbage(&policy(Duration::from_secs(3600)))
        .await
        .unwrap();
    assert_eq!(report, GcReport::default());
    assert_eq!(status(&reg, &download(&orphan)).await, StatusCode::OK);

    let report = storage
        .collect_garbage(&policy(Duration::ZERO))
        .await
        .unwrap();
    assert_eq!((report.blobs, report.links), (2, 2), "{report}");
    assert_eq!(
        report.blob_bytes,
        (b"orphan!".len() + b"old layer".len()) as u64
    );
    assert!(
        report.to_string().starts_with("removed 2 blobs (16 bytes)"),
        "{report}"
    );
    for gone in [&orphan, &old] {
        assert_eq!(
            status(&reg, &format!("/v2/alice/app/blobs/{gone}")).await,
            StatusCode::NOT_FOUND
        );
        assert_eq!(status(&reg, &download(gone)).await, StatusCode::NOT_FOUND);
    }
    for live in [&config, &kept] {
        assert_eq!(
            status(&reg, &format!("/v2/alice/app/blobs/{live}")).await,
            StatusCode::OK
        );
    }
    assert_eq!(
        status(&reg, &format!("/v2/alice/app/manifests/{image}")).await,
        StatusCode::OK
    );
    // Nothing left to do.
    let again = storage
        .collect_garbage(&policy(Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(again, GcReport::default());
}

#[tokio::test]
async fn remote_build_results_expire() {
    let reg = setup().await;
    let op = basic("op", "op-secret");
    let name = "library/alice/remote-builds/rb-0123456789abcdef";
    let layer = b"a sif".to_vec();
    let d = digest(&layer);
    let r = reg
        .req_as(
            Some(&op),
            "POST",
            &format!("/v2/{name}/blobs/uploads/?digest={d}"),
            &[],
            layer,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let config = digest(b"{}");
    let r = reg
        .req_as(
            Some(&op),
            "POST",
            &format!("/v2/{name}/blobs/uploads/?digest={config}"),
            &[],
            b"{}".to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let m = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.sylabs.sif.config.v1+json", "digest": config, "size": 2},
        "layers": [{"mediaType": "application/vnd.sylabs.sif.layer.v1.sif", "digest": d, "size": 5}],
    });
    let r = reg
        .req_as(
            Some(&op),
            "PUT",
            &format!("/v2/{name}/manifests/latest"),
            &[("content-type", OCI_MANIFEST)],
            serde_json::to_vec(&m).unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let storage = reg.state.storage();
    let mut keep = policy(Duration::ZERO);
    keep.remote_build_retention = Some(Duration::from_secs(3600));
    assert_eq!(
        storage.collect_garbage(&keep).await.unwrap().remote_builds,
        0
    );
    assert_eq!(
        status(&reg, &format!("/v2/{name}/manifests/latest")).await,
        StatusCode::OK
    );
    let mut expire = policy(Duration::ZERO);
    expire.remote_build_retention = Some(Duration::ZERO);
    let report = storage.collect_garbage(&expire).await.unwrap();
    // The layer and the config; the manifest went with its deletion.
    assert_eq!((report.remote_builds, report.blobs), (1, 2), "{report}");
    assert_eq!(
        status(&reg, &format!("/v2/{name}/manifests/latest")).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(status(&reg, &download(&d)).await, StatusCode::NOT_FOUND);
}

/// One pusher's images: each a fresh config and layer plus `reused`, an old blob that the
/// collector running meanwhile wants to remove. It is re-uploaded (or mounted, when `mount`)
/// as a client would: `HEAD` first, upload when missing.
async fn pusher(
    reg: Arc<Reg>,
    id: usize,
    images: usize,
    reused: (Vec<u8>, String),
    mount: bool,
) -> Vec<(String, String, Vec<String>)> {
    let name = format!("team/pusher{id}");
    let mut pushed = Vec::new();
    for n in 0..images {
        let config = reg
            .push_blob(&name, format!("{{\"pusher\":{id},\"n\":{n}}}").as_bytes())
            .await;
        let layer = reg
            .push_blob(&name, format!("layer {id}/{n}").as_bytes())
            .await;
        let (bytes, d) = &reused;
        let head = reg
            .req_as(
                Some(&basic("u", "p")),
                "HEAD",
                &format!("/v2/{name}/blobs/{d}"),
                &[],
                Body::empty(),
            )
            .await;
        if head.status != StatusCode::OK {
            let mounted = mount
                && reg
                    .req(
                        "POST",
                        &format!("/v2/{name}/blobs/uploads/?mount={d}&from=old/orphans"),
                        &[],
                        Body::empty(),
                    )
                    .await
                    .status
                    == StatusCode::CREATED;
            if !mounted {
                reg.push_blob(&name, bytes).await;
            }
        }
        let layers = vec![layer, d.clone()];
        let refs: Vec<&str> = layers.iter().map(String::as_str).collect();
        let manifest = push_image(&reg, &name, &format!("v{n}"), &config, &refs).await;
        pushed.push((name.clone(), manifest, [vec![config], layers].concat()));
    }
    pushed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn collection_under_concurrent_pushes_keeps_every_pushed_image_whole() {
    let reg = Arc::new(setup().await);
    let grace = Duration::from_secs(2);
    // Old garbage: orphaned blobs, one of which the pushers will reuse.
    let mut orphans = Vec::new();
    for n in 0..40 {
        let bytes = format!("orphan {n}").into_bytes();
        let d = reg.push_blob("old/orphans", &bytes).await;
        orphans.push((bytes, d));
    }
    tokio::time::sleep(grace + Duration::from_millis(200)).await;

    let reused = orphans[0].clone();
    let stop = Arc::new(AtomicBool::new(false));
    let collector = {
        let reg = Arc::clone(&reg);
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut total = GcReport::default();
            let mut passes = 0;
            while !stop.load(Ordering::Relaxed) || passes == 0 {
                let report = reg
                    .state
                    .storage()
                    .collect_garbage(&policy(grace))
                    .await
                    .unwrap();
                total.blobs += report.blobs;
                passes += 1;
                tokio::task::yield_now().await;
            }
            (total, passes)
        })
    };
    let pushers: Vec<_> = (0..4)
        .map(|id| {
            tokio::spawn(pusher(
                Arc::clone(&reg),
                id,
                12,
                reused.clone(),
                id % 2 == 0,
            ))
        })
        .collect();
    let mut images = Vec::new();
    for p in pushers {
        images.extend(p.await.unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    let (during, passes) = collector.await.unwrap();
    assert!(
        passes > 1,
        "the collector ran {passes} times while pushes ran"
    );

    // Whatever was collected meanwhile, one more pass takes the rest of the old garbage.
    let after = reg
        .state
        .storage()
        .collect_garbage(&policy(grace))
        .await
        .unwrap();
    // (The reused blob may have been collected before a pusher uploaded it again.)
    assert!(during.blobs + after.blobs >= orphans.len() - 1, "{after}");

    for (name, manifest, blobs) in &images {
        let r = reg
            .req(
                "GET",
                &format!("/v2/{name}/manifests/{manifest}"),
                &[],
                Body::empty(),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{name}@{manifest}");
        for blob in blobs {
            let r = reg
                .req(
                    "GET",
                    &format!("/v2/{name}/blobs/{blob}"),
                    &[],
                    Body::empty(),
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{name}: {blob}");
            assert_eq!(digest(&r.body), *blob);
        }
    }
    for (_, gone) in &orphans[1..] {
        assert_eq!(status(&reg, &download(gone)).await, StatusCode::NOT_FOUND);
        assert_eq!(
            status(&reg, &format!("/v2/old/orphans/blobs/{gone}")).await,
            StatusCode::NOT_FOUND
        );
    }
    assert_eq!(status(&reg, &download(&reused.1)).await, StatusCode::OK);
}

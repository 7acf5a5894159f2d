//! Blob push, pull, ranges, chunked uploads, size limit and mounts.

use axum::body::Body;
use axum::http::StatusCode;

use super::*;

#[tokio::test]
async fn monolithic_push_get_head_range() {
    let reg = setup().await;
    let data = b"0123456789";
    let d = reg.push_blob("lib/a/b", data).await;
    let uri = format!("/v2/lib/a/b/blobs/{d}");
    let r = reg.req("GET", &uri, &[], Body::empty()).await;
    assert_eq!((r.status, &r.body[..]), (StatusCode::OK, &data[..]));
    assert_eq!(r.header("docker-content-digest"), d);
    let r = reg.req("HEAD", &uri, &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-length"), "10");
    assert!(r.body.is_empty());
    let r = reg
        .req("GET", &uri, &[("range", "bytes=2-4")], Body::empty())
        .await;
    assert_eq!(
        (r.status, &r.body[..]),
        (StatusCode::PARTIAL_CONTENT, &b"234"[..])
    );
    assert_eq!(r.header("content-range"), "bytes 2-4/10");
    let r = reg
        .req("GET", &uri, &[("range", "bytes=7-")], Body::empty())
        .await;
    assert_eq!(
        (r.status, &r.body[..]),
        (StatusCode::PARTIAL_CONTENT, &b"789"[..])
    );
    let r = reg
        .req("GET", &uri, &[("range", "bytes=10-")], Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.header("content-range"), "bytes */10");
    // Not linked into another repository.
    let r = reg
        .req("GET", &format!("/v2/other/blobs/{d}"), &[], Body::empty())
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::NOT_FOUND, "BLOB_UNKNOWN")
    );
    // Delete unlinks.
    assert_eq!(
        reg.req("DELETE", &uri, &[], Body::empty()).await.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        reg.req("HEAD", &uri, &[], Body::empty()).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn chunked_upload_and_out_of_order() {
    let reg = setup().await;
    let r = reg
        .req("POST", "/v2/a/blobs/uploads/", &[], Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let loc = r.header("location").to_owned();
    assert!(loc.starts_with("/v2/a/blobs/uploads/"));
    assert_eq!(
        r.header("docker-upload-uuid"),
        loc.rsplit('/').next().unwrap()
    );
    let r = reg
        .req("PATCH", &loc, &[("content-range", "0-4")], "hello")
        .await;
    assert_eq!((r.status, r.header("range")), (StatusCode::ACCEPTED, "0-4"));
    let r = reg
        .req("PATCH", &loc, &[("content-range", "10-14")], "xxxxx")
        .await;
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.header("range"), "0-4");
    let r = reg
        .req("PATCH", &loc, &[("content-range", "5-5")], " ")
        .await;
    assert_eq!((r.status, r.header("range")), (StatusCode::ACCEPTED, "0-5"));
    let r = reg.req("PATCH", &loc, &[], "wor").await;
    assert_eq!((r.status, r.header("range")), (StatusCode::ACCEPTED, "0-8"));
    let r = reg.req("GET", &loc, &[], Body::empty()).await;
    assert_eq!(
        (r.status, r.header("range")),
        (StatusCode::NO_CONTENT, "0-8")
    );
    let d = digest(b"hello world");
    let r = reg
        .req("PUT", &format!("{loc}?digest={d}"), &[], "ld")
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.header("location"), format!("/v2/a/blobs/{d}"));
    assert_eq!(r.header("docker-content-digest"), d);
    let r = reg
        .req("GET", &format!("/v2/a/blobs/{d}"), &[], Body::empty())
        .await;
    assert_eq!(&r.body[..], b"hello world");
    // Session is gone.
    assert_eq!(
        reg.req("GET", &loc, &[], Body::empty()).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn digest_mismatch_leaves_nothing() {
    let reg = setup().await;
    let wrong = digest(b"other");
    let r = reg
        .req(
            "POST",
            &format!("/v2/a/blobs/uploads/?digest={wrong}"),
            &[],
            "data",
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID")
    );
    let r = reg
        .req("POST", "/v2/a/blobs/uploads/", &[], Body::empty())
        .await;
    let loc = r.header("location").to_owned();
    reg.req("PATCH", &loc, &[], "data").await;
    let r = reg
        .req("PUT", &format!("{loc}?digest={wrong}"), &[], Body::empty())
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID")
    );
    for d in [wrong, digest(b"data")] {
        let r = reg
            .req("HEAD", &format!("/v2/a/blobs/{d}"), &[], Body::empty())
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
    }
    let root = reg._dir.path();
    for sub in ["blobs/sha256", "uploads", "tmp"] {
        assert_eq!(
            std::fs::read_dir(root.join(sub)).unwrap().count(),
            0,
            "{sub}"
        );
    }
}

#[tokio::test]
async fn blob_size_limit() {
    let reg = setup_with(8).await;
    let data = b"0123456789";
    let r = reg
        .req(
            "POST",
            &format!("/v2/a/blobs/uploads/?digest={}", digest(data)),
            &[],
            data.to_vec(),
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "SIZE_INVALID")
    );
}

#[tokio::test]
async fn cross_repo_mount() {
    let reg = setup().await;
    let d = reg.push_blob("src/x", b"shared").await;
    let r = reg
        .req(
            "POST",
            &format!("/v2/dst/blobs/uploads/?mount={d}&from=src/x"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.header("location"), format!("/v2/dst/blobs/{d}"));
    let r = reg
        .req("GET", &format!("/v2/dst/blobs/{d}"), &[], Body::empty())
        .await;
    assert_eq!(&r.body[..], b"shared");
    // Not in `from`: falls back to a normal upload session.
    let r = reg
        .req(
            "POST",
            &format!("/v2/dst2/blobs/uploads/?mount={d}&from=other"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert!(r.header("location").starts_with("/v2/dst2/blobs/uploads/"));
}

//! Manifest push/pull/delete, tags and referrers.

use axum::body::Body;
use axum::http::StatusCode;
use serde_json::json;

use super::*;

#[tokio::test]
async fn manifest_missing_blob() {
    let reg = setup().await;
    let m = reg.image("a", json!({})).await;
    // Same manifest in a repository that has none of the blobs.
    let r = reg.push_manifest("b", "latest", OCI_MANIFEST, &m).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN")
    );
    let r = reg
        .req("GET", "/v2/b/manifests/latest", &[], Body::empty())
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN")
    );
}

#[tokio::test]
async fn manifest_round_trip_custom_media_type() {
    let reg = setup().await;
    let ct = "application/vnd.example.thing.v1+json";
    let blob = reg.push_blob("a", b"payload").await;
    let body = format!(
        "{{ \"schemaVersion\": 2,\n  \"artifactType\": \"application/x-thing\",\n  \"config\": {{\"mediaType\": \"application/x-cfg\", \"digest\": \"{blob}\", \"size\": 7}},\n  \"layers\": [] }}\n"
    );
    let r = reg.push_manifest("a", "v1", ct, body.as_bytes()).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let d = digest(body.as_bytes());
    assert_eq!(r.header("docker-content-digest"), d);
    assert_eq!(r.header("location"), format!("/v2/a/manifests/{d}"));
    for reference in ["v1", d.as_str()] {
        let r = reg
            .req(
                "GET",
                &format!("/v2/a/manifests/{reference}"),
                &[],
                Body::empty(),
            )
            .await;
        assert_eq!((r.status, &r.body[..]), (StatusCode::OK, body.as_bytes()));
        assert_eq!(r.header("content-type"), ct);
        assert_eq!(r.header("docker-content-digest"), d);
        let r = reg
            .req(
                "HEAD",
                &format!("/v2/a/manifests/{reference}"),
                &[],
                Body::empty(),
            )
            .await;
        assert_eq!(r.header("content-length"), body.len().to_string());
    }
    // Push by a wrong digest is refused.
    let r = reg
        .push_manifest("a", &digest(b"x"), ct, body.as_bytes())
        .await;
    assert_eq!(r.code(), "DIGEST_INVALID");
    // Delete the tag, then the manifest.
    assert_eq!(
        reg.req("DELETE", "/v2/a/manifests/v1", &[], Body::empty())
            .await
            .status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        reg.req("GET", "/v2/a/manifests/v1", &[], Body::empty())
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let uri = format!("/v2/a/manifests/{d}");
    assert_eq!(
        reg.req("GET", &uri, &[], Body::empty()).await.status,
        StatusCode::OK
    );
    assert_eq!(
        reg.req("DELETE", &uri, &[], Body::empty()).await.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        reg.req("GET", &uri, &[], Body::empty()).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn tags_pagination() {
    let reg = setup().await;
    let r = reg
        .req("GET", "/v2/nope/tags/list", &[], Body::empty())
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::NOT_FOUND, "NAME_UNKNOWN")
    );
    let m = reg.image("a", json!({})).await;
    for t in ["e", "b", "d", "a", "c"] {
        assert_eq!(
            reg.push_manifest("a", t, OCI_MANIFEST, &m).await.status,
            StatusCode::CREATED
        );
    }
    let r = reg.req("GET", "/v2/a/tags/list", &[], Body::empty()).await;
    assert_eq!(
        r.json(),
        json!({"name": "a", "tags": ["a", "b", "c", "d", "e"]})
    );
    let mut uri = "/v2/a/tags/list?n=2".to_owned();
    let mut pages = Vec::new();
    loop {
        let r = reg.req("GET", &uri, &[], Body::empty()).await;
        pages.push(r.json()["tags"].clone());
        let link = r.header("link");
        if link.is_empty() {
            break;
        }
        assert!(link.ends_with(">; rel=\"next\""));
        uri = link[1..link.find('>').unwrap()].to_owned();
    }
    assert_eq!(
        pages,
        vec![json!(["a", "b"]), json!(["c", "d"]), json!(["e"])]
    );
}

#[tokio::test]
async fn referrers_listing() {
    let reg = setup().await;
    let subject = reg.image("a", json!({})).await;
    let sd = digest(&subject);
    assert_eq!(
        reg.push_manifest("a", "v1", OCI_MANIFEST, &subject)
            .await
            .status,
        StatusCode::CREATED
    );
    let subj = json!({"subject": {"mediaType": OCI_MANIFEST, "digest": sd, "size": subject.len()}});
    let mut extra = subj.clone();
    extra["artifactType"] = json!("application/x-sig");
    extra["annotations"] = json!({"k": "v"});
    let sig = reg.image("a", extra).await;
    let r = reg
        .push_manifest("a", &digest(&sig), OCI_MANIFEST, &sig)
        .await;
    assert_eq!(
        (r.status, r.header("oci-subject")),
        (StatusCode::CREATED, sd.as_str())
    );
    let sbom = reg.image("a", subj).await; // artifact type falls back to the config media type
    assert_eq!(
        reg.push_manifest("a", "sbom", OCI_MANIFEST, &sbom)
            .await
            .status,
        StatusCode::CREATED
    );

    let r = reg
        .req("GET", &format!("/v2/a/referrers/{sd}"), &[], Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.header("content-type"),
        "application/vnd.oci.image.index.v1+json"
    );
    let idx = r.json();
    assert_eq!(idx["manifests"].as_array().unwrap().len(), 2);
    let r = reg
        .req(
            "GET",
            &format!("/v2/a/referrers/{sd}?artifactType=application/x-sig"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.header("oci-filters-applied"), "artifactType");
    let want = json!([{"mediaType": OCI_MANIFEST, "digest": digest(&sig), "size": sig.len(),
        "artifactType": "application/x-sig", "annotations": {"k": "v"}}]);
    assert_eq!(r.json()["manifests"], want);
    // Media types hold `+`: percent-encoded as clients send it, or typed as it is (which
    // form decoding would read as a space).
    for plus in ["%2B", "+"] {
        let r = reg
            .req(
                "GET",
                &format!("/v2/a/referrers/{sd}?artifactType=application/vnd.oci.image.config.v1{plus}json"),
                &[],
                Body::empty(),
            )
            .await;
        let found = r.json()["manifests"].as_array().unwrap().len();
        assert_eq!(found, 1, "artifactType with {plus}");
    }
    // Deleting a referrer removes it from the listing.
    let r = reg
        .req(
            "DELETE",
            &format!("/v2/a/manifests/{}", digest(&sig)),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let r = reg
        .req("GET", &format!("/v2/a/referrers/{sd}"), &[], Body::empty())
        .await;
    let only = &r.json()["manifests"];
    assert_eq!(only.as_array().unwrap().len(), 1);
    assert_eq!(
        only[0]["artifactType"],
        "application/vnd.oci.image.config.v1+json"
    );
}

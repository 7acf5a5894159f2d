//! Who may write where, signed tokens that expire, and the cap on open upload sessions.

use std::time::Duration;

use axum::body::Body;
use axum::http::StatusCode;

use super::*;

/// A Bearer token from the token endpoint for these Basic credentials.
async fn token(reg: &Reg, user: &str, password: &str) -> String {
    let r = reg
        .req_as(
            Some(&basic(user, password)),
            "GET",
            "/registry/token",
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["expires_in"], 3600);
    format!("Bearer {}", r.json()["token"].as_str().unwrap())
}

#[tokio::test]
async fn kilns_namespaces_are_written_only_by_its_builders_and_operators() {
    let reg = setup().await;
    let data = b"poison";
    let d = digest(data);
    let user = basic("u", "p");
    let user_token = token(&reg, "u", "p").await;
    for name in ["library/samtools", "kiln/base/debian", "mirror/docker.io/x"] {
        for authorization in [&user, &user_token] {
            let r = reg
                .req_as(
                    Some(authorization),
                    "POST",
                    &format!("/v2/{name}/blobs/uploads/?digest={d}"),
                    &[],
                    data.to_vec(),
                )
                .await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{name}");
            assert_eq!(r.code(), "DENIED");
            let message = r.json()["errors"][0]["message"]
                .as_str()
                .unwrap()
                .to_owned();
            let namespace = name.split('/').next().unwrap();
            assert!(
                message.contains(&format!("repository {name} is in {namespace}/")),
                "{message}"
            );
        }
    }
    // Manifests and deletes alike.
    let manifest = reg.image("alice/tools", json!({})).await;
    let r = reg
        .req_as(
            Some(&user),
            "PUT",
            "/v2/library/samtools/manifests/1.0--0123456789abcdef",
            &[("content-type", OCI_MANIFEST)],
            manifest.clone(),
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::FORBIDDEN, "DENIED")
    );
    let r = reg
        .req_as(
            Some(&user),
            "DELETE",
            "/v2/kiln/base/debian/manifests/bookworm",
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // Everywhere else the user writes.
    let r = reg
        .push_manifest("alice/tools", "1.0", OCI_MANIFEST, &manifest)
        .await;
    assert_eq!(r.status, StatusCode::CREATED);

    // An operator writes in kiln's namespaces, with Basic credentials or a token, and
    // kiln's builders too.
    let builder = reg.state.builder_credentials().clone();
    let operator_token = token(&reg, "op", "op-secret").await;
    for authorization in [
        basic("op", "op-secret"),
        operator_token,
        basic(&builder.user, builder.password.expose()),
    ] {
        let r = reg
            .req_as(
                Some(&authorization),
                "POST",
                &format!("/v2/kiln/base/debian/blobs/uploads/?digest={d}"),
                &[],
                data.to_vec(),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
}

#[tokio::test]
async fn tokens_expire() {
    let reg = setup_config(|c| c.token_ttl = Duration::from_secs(1)).await;
    let r = reg
        .req_as(
            Some(&basic("u", "p")),
            "GET",
            "/registry/token",
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.json()["expires_in"], 1);
    let bearer = format!("Bearer {}", r.json()["token"].as_str().unwrap());
    let reg = &reg;
    let push = |bearer: String| async move {
        reg.req_as(
            Some(&bearer),
            "POST",
            "/v2/alice/tools/blobs/uploads/",
            &[],
            Body::empty(),
        )
        .await
    };
    assert_eq!(push(bearer.clone()).await.status, StatusCode::ACCEPTED);
    let base = reg
        .req_as(Some(&bearer), "GET", "/v2/", &[], Body::empty())
        .await;
    assert_eq!(base.status, StatusCode::OK);

    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = push(bearer.clone()).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::UNAUTHORIZED, "UNAUTHORIZED")
    );
    assert!(r.header("www-authenticate").starts_with("Bearer realm="));
    let base = reg
        .req_as(Some(&bearer), "GET", "/v2/", &[], Body::empty())
        .await;
    assert_eq!(base.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn open_upload_sessions_are_capped_per_user() {
    let reg = setup().await;
    let start = |authorization: String| {
        let reg = &reg;
        async move {
            reg.req_as(
                Some(&authorization),
                "POST",
                "/v2/alice/tools/blobs/uploads/",
                &[],
                Body::empty(),
            )
            .await
        }
    };
    let mut sessions = Vec::new();
    for _ in 0..4 {
        let r = start(basic("u", "p")).await;
        assert_eq!(r.status, StatusCode::ACCEPTED);
        sessions.push(r.header("location").to_owned());
    }
    let refused = start(basic("u", "p")).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.code(), "TOOMANYREQUESTS");
    let message = refused.json()["errors"][0]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("user u has 4 upload sessions open")
            && message.contains("embedded_registry.max_upload_sessions"),
        "{message}"
    );
    // Through a token it is the same user.
    let bearer = token(&reg, "u", "p").await;
    assert_eq!(start(bearer).await.status, StatusCode::TOO_MANY_REQUESTS);
    // Another user has an allowance of their own; kiln's builders have none.
    assert_eq!(
        start(basic("op", "op-secret")).await.status,
        StatusCode::ACCEPTED
    );
    let builder = reg.state.builder_credentials().clone();
    for _ in 0..6 {
        let r = start(basic(&builder.user, builder.password.expose())).await;
        assert_eq!(r.status, StatusCode::ACCEPTED);
    }

    // A finished session and a cancelled one free their places.
    let data = b"layer";
    let finished = reg
        .req(
            "PUT",
            &format!("{}?digest={}", sessions[0], digest(data)),
            &[],
            data.to_vec(),
        )
        .await;
    assert_eq!(finished.status, StatusCode::CREATED);
    assert_eq!(start(basic("u", "p")).await.status, StatusCode::ACCEPTED);
    assert_eq!(
        reg.req("DELETE", &sessions[1], &[], Body::empty())
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(start(basic("u", "p")).await.status, StatusCode::ACCEPTED);
    assert_eq!(
        start(basic("u", "p")).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // So do expired ones.
    reg.state
        .storage()
        .cleanup_expired_uploads(Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(start(basic("u", "p")).await.status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn debug_shows_no_password() {
    let reg = setup().await;
    let printed = format!("{:?}", reg.state);
    let builder = reg.state.builder_credentials().password.expose().to_owned();
    for password in ["op-secret", builder.as_str()] {
        assert!(!printed.contains(password), "{password} in {printed}");
    }
    assert!(printed.contains("\"op\""), "{printed}");
}

/// Users' build contexts (`kiln/contexts/<user>`) are read by kiln's builders and operators
/// alone: to anyone else the repository is not there.
#[tokio::test]
async fn build_contexts_are_not_there_for_others() {
    let reg = setup().await;
    let operator = basic("op", "op-secret");
    let name = "kiln/contexts/alice";
    let layer = digest(b"context");
    for (data, d) in [(&b"context"[..], &layer), (&b"{}"[..], &digest(b"{}"))] {
        let r = reg
            .req_as(
                Some(&operator),
                "POST",
                &format!("/v2/{name}/blobs/uploads/?digest={d}"),
                &[],
                data.to_vec(),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": digest(b"{}"), "size": 2},
        "layers": [{"mediaType": "application/vnd.kiln.build-context.v1.tar+gzip", "digest": layer, "size": 7}],
    }))
    .unwrap();
    let r = reg
        .req_as(
            Some(&operator),
            "PUT",
            &format!("/v2/{name}/manifests/context-1"),
            &[("content-type", OCI_MANIFEST)],
            manifest,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let user = basic("u", "p");
    for path in [
        format!("/v2/{name}/manifests/context-1"),
        format!("/v2/{name}/tags/list"),
        format!("/v2/{name}/blobs/{layer}"),
    ] {
        for authorization in [None, Some(user.as_str())] {
            let r = reg
                .req_as(authorization, "GET", &path, &[], Body::empty())
                .await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
            assert_eq!(r.code(), "NAME_UNKNOWN", "{path}");
        }
        let r = reg
            .req_as(Some(&operator), "GET", &path, &[], Body::empty())
            .await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
    }
}

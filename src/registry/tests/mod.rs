//! End-to-end tests: the router driven in-process with `oneshot`;
//! shared helpers here, blob and manifest tests in the submodules.

mod access;
mod blobs;
mod gc;
mod manifests;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tower::ServiceExt;

use super::auth::Role;
use super::{RegistryConfig, RegistryState, User, router};

struct Reg {
    _dir: tempfile::TempDir,
    app: Router,
    state: RegistryState,
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Resp {
    fn header(&self, k: &str) -> &str {
        self.headers.get(k).map_or("", |v| v.to_str().unwrap())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    fn code(&self) -> String {
        self.json()["errors"][0]["code"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

/// A registry whose ordinary user is `u`/`p` and operator `op`/`op-secret`.
fn config(dir: &std::path::Path, max_blob_size: u64) -> RegistryConfig {
    RegistryConfig {
        root: dir.to_path_buf(),
        max_blob_size,
        upload_ttl: std::time::Duration::from_secs(3600),
        users: vec![
            User::new("u", "p", Role::User),
            User::new("op", "op-secret", Role::Operator),
        ],
        token_ttl: std::time::Duration::from_secs(3600),
        signing_key: crate::signing::SigningKey::random(),
        max_upload_sessions: 4,
    }
}

async fn setup_with(max_blob_size: u64) -> Reg {
    setup_config(|c| c.max_blob_size = max_blob_size).await
}

async fn setup_config(change: impl FnOnce(&mut RegistryConfig)) -> Reg {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), 1 << 20);
    change(&mut config);
    let state = RegistryState::new(config).await.unwrap();
    Reg {
        _dir: dir,
        app: router(state.clone()),
        state,
    }
}

async fn setup() -> Reg {
    setup_with(1 << 20).await
}

fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

fn digest(data: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(data);
    format!("sha256:{}", hex::encode(&h.finalize()[..]))
}

impl Reg {
    async fn req(
        &self,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> Resp {
        let authorization = (!matches!(method, "GET" | "HEAD")).then(|| basic("u", "p"));
        self.req_as(authorization.as_deref(), method, uri, headers, body)
            .await
    }

    /// A request with this `Authorization` header, if any.
    async fn req_as(
        &self,
        authorization: Option<&str>,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> Resp {
        let mut b = Request::builder().method(method).uri(uri);
        if let Some(authorization) = authorization {
            b = b.header("authorization", authorization);
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let resp = self
            .app
            .clone()
            .oneshot(b.body(body.into()).unwrap())
            .await
            .unwrap();
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Resp {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    async fn push_blob(&self, name: &str, data: &[u8]) -> String {
        let d = digest(data);
        let r = self
            .req(
                "POST",
                &format!("/v2/{name}/blobs/uploads/?digest={d}"),
                &[],
                data.to_vec(),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
        d
    }

    async fn push_manifest(&self, name: &str, reference: &str, ct: &str, body: &[u8]) -> Resp {
        self.req(
            "PUT",
            &format!("/v2/{name}/manifests/{reference}"),
            &[("content-type", ct)],
            body.to_vec(),
        )
        .await
    }

    /// Pushes config + layer and returns an image manifest referencing them.
    async fn image(&self, name: &str, extra: Value) -> Vec<u8> {
        let config = self.push_blob(name, b"{}").await;
        let layer = self.push_blob(name, b"layer").await;
        let mut m = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": 5}],
        });
        if let (Some(m), Some(extra)) = (m.as_object_mut(), extra.as_object()) {
            m.extend(extra.clone());
        }
        serde_json::to_vec(&m).unwrap()
    }
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

#[tokio::test]
async fn base_check() {
    let reg = setup().await;
    let anonymous = reg.req("GET", "/v2/", &[], Body::empty()).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert!(
        anonymous
            .header("www-authenticate")
            .starts_with("Bearer realm=")
    );
    let credentials = basic("u", "p");
    let r = reg
        .req(
            "GET",
            "/v2/",
            &[("authorization", &credentials)],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("docker-distribution-api-version"), "registry/2.0");
    assert_eq!(r.json(), json!({}));
}
#[tokio::test]
async fn writes_need_credentials() {
    let reg = setup().await;
    for auth in [None, Some(basic("u", "wrong")), Some(basic("x", "p"))] {
        let mut b = Request::builder()
            .method("POST")
            .uri("/v2/a/blobs/uploads/");
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        let r = reg
            .app
            .clone()
            .oneshot(b.body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
        assert!(challenge.starts_with("Bearer realm="), "{challenge}");
        let body = r.into_body().collect().await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["errors"][0]["code"], "UNAUTHORIZED");
    }
}

#[tokio::test]
async fn cleanup_and_concurrent_same_blob() {
    let reg = setup().await;
    let st = reg.state.storage();
    let data = Bytes::from_static(b"same bytes");
    let d = super::path::Digest::parse(&digest(&data)).unwrap();
    let s = || futures_util::stream::iter([Ok::<_, std::io::Error>(data.clone())]);
    let (a, b) = tokio::join!(st.put_blob("x", &d, s()), st.put_blob("y", &d, s()));
    a.unwrap();
    b.unwrap();
    assert!(st.blob("x", &d).await.unwrap().is_some() && st.blob("y", &d).await.unwrap().is_some());

    st.start_upload("x", None).await.unwrap();
    assert_eq!(reg.state.cleanup_expired_uploads().await.unwrap(), 0);
    assert_eq!(
        st.cleanup_expired_uploads(std::time::Duration::ZERO)
            .await
            .unwrap(),
        (1, 0)
    );
    assert_eq!(
        std::fs::read_dir(reg._dir.path().join("uploads"))
            .unwrap()
            .count(),
        0
    );
}

//! The Singularity library API as SingularityCE's clients use it: service discovery, tokens
//! from the token page (and `kiln token create`), `singularity push library://…` call for call
//! (reference §2.5: v2 single-part upload and v2 arch tags, and the v1 legacy upload), pulls of
//! what was pushed (§2.2), per-architecture tags, refusals (401, 403, a wrong file, bad names),
//! and pulls of SIFs pushed straight into the registry.
//!
//! The SIFs are written with kiln's own writer over a tiny squashfs: no build needed.

use crate::support::forms;

use std::path::Path;

use crate::support::snapshot::Answers;
use crate::support::{PUSHER, TestApp};
use forms::form_session;
use kiln::assemble::sif::{SifArch, SifInput, write_sif};
use kiln::credentials::Credentials;
use kiln::registry::client::{Auth, RegistryClient};
use kiln::store::{SqliteStore, Store};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// The operator token every app here is configured with.
const OPERATOR: &str = "operator-test-token";

async fn start(open_signup: bool) -> TestApp {
    TestApp::start_with(move |config| {
        config.api.tokens = vec![OPERATOR.into()];
        config.api.open_signup = open_signup;
    })
    .await
}

/// A SIF for `arch` whose root file system holds `/hello` with `text`, and its sha256 (hex).
pub(crate) async fn sif(arch: SifArch, text: &str) -> (Vec<u8>, String) {
    sized_sif(arch, text, 0).await
}

/// [`sif`] with `noise` more bytes that do not compress, in `/noise`.
async fn sized_sif(arch: SifArch, text: &str, noise: usize) -> (Vec<u8>, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).expect("root");
    std::fs::write(root.join("hello"), text).expect("file");
    if noise > 0 {
        // xorshift64: random enough that gzip cannot shrink it.
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let bytes: Vec<u8> = (0..noise.div_ceil(8))
            .flat_map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state.to_le_bytes()
            })
            .collect();
        std::fs::write(root.join("noise"), bytes).expect("noise");
    }
    let squashfs = dir.path().join("root.squashfs");
    kiln::assemble::squashfs::mksquashfs(&root, &squashfs)
        .await
        .expect("mksquashfs");
    let out = dir.path().join("image.sif");
    let summary = write_sif(
        &SifInput {
            id: kiln::assemble::sif::uuid_from(text.as_bytes()),
            created: 1_700_000_000,
            arch,
            definition: b"Bootstrap: scratch\n",
            inspect: br#"{"data":{"attributes":{}},"type":"container"}"#,
            oci_config: None,
            squashfs: &squashfs,
        },
        &out,
    )
    .expect("write the SIF");
    let bytes = std::fs::read(&out).expect("read the SIF");
    assert_eq!(sha256(&bytes), summary.sha256);
    (bytes, summary.sha256)
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// An HTTP client of one kiln, with or without a token.
pub(crate) struct Client<'a> {
    app: &'a TestApp,
    http: reqwest::Client,
    token: Option<String>,
}

impl<'a> Client<'a> {
    pub(crate) fn new(app: &'a TestApp, token: Option<&str>) -> Self {
        Client {
            app,
            http: reqwest::Client::new(),
            token: token.map(str::to_owned),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, self.app.url(path));
        if let Some(token) = &self.token {
            // The library client's spelling.
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let text = response.text().await.expect("body");
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|err| panic!("{path}: not JSON ({err}): {text:?}"));
        (status, value)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::PUT, path, Some(body)).await
    }
}

/// An error answer: the status and the envelope with the same code; returns the message.
fn error_message(status: StatusCode, value: &Value, expected: StatusCode) -> String {
    assert_eq!(status, expected, "{value}");
    assert_eq!(value["error"]["code"], expected.as_u16(), "{value}");
    assert!(value.get("data").is_none(), "{value}");
    value["error"]["message"]
        .as_str()
        .expect("a message")
        .to_owned()
}

/// A success: 200 and the envelope's data, never with an error next to it.
fn data(status: StatusCode, value: Value) -> Value {
    assert_eq!(status, StatusCode::OK, "{value}");
    assert!(value.get("error").is_none_or(Value::is_null), "{value}");
    value["data"].clone()
}

/// What the token page answered: status, Cache-Control, HTML.
async fn token_form(
    app: &TestApp,
    fields: &[(&str, &str)],
) -> (StatusCode, Option<String>, String) {
    let (cookie, form_token) = form_session(&app.url("/auth/tokens")).await;
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .append_pair("form_token", &form_token)
        .finish();
    let response = reqwest::Client::new()
        .post(app.url("/auth/tokens"))
        .header("cookie", cookie)
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("POST /auth/tokens");
    let status = response.status();
    let cache = response
        .headers()
        .get(CACHE_CONTROL)
        .map(|v| v.to_str().expect("ASCII").to_owned());
    (status, cache, response.text().await.expect("HTML"))
}

/// The token shown on a page.
fn token_in(html: &str) -> String {
    let start = html
        .find("kiln_")
        .unwrap_or_else(|| panic!("no token in {html}"));
    let hex: String = html[start + 5..]
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect();
    assert_eq!(hex.len(), 64, "{html}");
    format!("kiln_{hex}")
}

/// A token for `user`, from the page.
pub(crate) async fn signup(app: &TestApp, user: &str) -> String {
    let (status, cache, html) = token_form(app, &[("user", user)]).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert_eq!(cache.as_deref(), Some("no-store"));
    token_in(&html)
}

async fn token_status(app: &TestApp, authorization: Option<&str>) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new().get(app.url("/v1/token-status"));
    if let Some(value) = authorization {
        request = request.header(AUTHORIZATION, value);
    }
    let response = request.send().await.expect("token status");
    let status = response.status();
    (status, response.json().await.expect("JSON"))
}

#[tokio::test]
async fn discovery_and_tokens() {
    let app = start(true).await;
    let base = app.url("");
    let config: Value = reqwest::get(app.url("/assets/config/config.prod.json"))
        .await
        .expect("config")
        .json()
        .await
        .expect("JSON");
    let services = config.as_object().expect("an object");
    for service in ["libraryAPI", "builderAPI", "keystoreAPI", "tokenAPI"] {
        assert_eq!(config[service]["uri"], base, "{config}");
    }
    assert!(services.values().all(Value::is_object), "{config}");
    let (status, version) = Client::new(&app, None).get("/version").await;
    assert_eq!(data(status, version)["apiVersion"], "2.0.0-alpha.2");

    let page = reqwest::get(app.url("/auth/tokens")).await.expect("page");
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.expect("HTML");
    assert!(
        html.contains(r#"<form class="card token-form" method="post" action="/auth/tokens">"#),
        "{html}"
    );
    assert!(html.contains(r#"name="user""#) && html.contains(r#"name="current_token""#));
    assert!(
        html.contains("goes to whoever asks for it first"),
        "the policy is on the page"
    );

    let alice = signup(&app, "alice").await;
    for scheme in ["Bearer", "BEARER", "bearer"] {
        let (status, body) = token_status(&app, Some(&format!("{scheme} {alice}"))).await;
        assert_eq!(data(status, body)["status"], "valid");
    }
    let (status, body) = token_status(&app, Some(&format!("Bearer {alice}x"))).await;
    let message = error_message(status, &body, StatusCode::UNAUTHORIZED);
    assert!(
        message.contains(&format!("{base}/auth/tokens")),
        "{message}"
    );
    let (status, body) = token_status(&app, None).await;
    error_message(status, &body, StatusCode::UNAUTHORIZED);
    let (status, body) = token_status(&app, Some(&format!("Bearer {OPERATOR}"))).await;
    assert_eq!(data(status, body)["user"], "library");

    // The name is alice's now: another token needs one of hers.
    let (status, _, html) = token_form(&app, &[("user", "alice")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(html.contains("`alice` is taken"), "{html}");
    assert!(!html.contains("kiln_"), "{html}");
    let (status, _, html) = token_form(&app, &[("user", "alice"), ("current_token", &alice)]).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    let second = token_in(&html);
    assert_ne!(second, alice);
    for token in [&alice, &second] {
        let (status, _) = token_status(&app, Some(&format!("Bearer {token}"))).await;
        assert_eq!(status, StatusCode::OK);
    }
    let bob = signup(&app, "bob").await;
    let (status, _, html) = token_form(&app, &[("user", "alice"), ("current_token", &bob)]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(html.contains("the current token is `bob`"), "{html}");
    let (status, _, html) =
        token_form(&app, &[("user", "alice"), ("current_token", "kiln_nope")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(html.contains("the current token is not valid"), "{html}");
    // An operator makes tokens for any name.
    let (status, _, html) =
        token_form(&app, &[("user", "alice"), ("current_token", OPERATOR)]).await;
    assert_eq!(status, StatusCode::OK, "{html}");

    let (status, _, html) = token_form(&app, &[("user", "Alice<b>")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        html.contains("`Alice&#60;b&#62;` is not a user name"),
        "{html}"
    );
    assert!(
        html.contains(r#"id="user-error""#),
        "next to the field: {html}"
    );
    let (status, _, html) =
        token_form(&app, &[("user", "library"), ("current_token", OPERATOR)]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        html.contains("`library` is kiln&#39;s own entity"),
        "{html}"
    );
}

#[tokio::test]
async fn closed_signup_needs_an_operator() {
    let app = start(false).await;
    let (status, _, html) = token_form(&app, &[("user", "carol")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(html.contains("sign-up is closed"), "{html}");
    assert!(
        html.contains(r#"id="token-error""#),
        "next to the field: {html}"
    );
    let (status, _, html) =
        token_form(&app, &[("user", "carol"), ("current_token", OPERATOR)]).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    let carol = token_in(&html);
    // Even her own token makes no more on a closed kiln.
    let (status, _, _) = token_form(&app, &[("user", "carol"), ("current_token", &carol)]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // `kiln token create` for operators on the server.
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("kiln.toml");
    std::fs::write(
        &config,
        format!("data_dir = \"{}\"\n", dir.path().join("data").display()),
    )
    .expect("config");
    let kiln = |user: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("--config")
            .arg(&config)
            .args(["token", "create", user])
            .env_clear()
            .output()
            .expect("kiln runs")
    };
    let created = kiln("dave");
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let token = String::from_utf8(created.stdout).expect("UTF-8");
    let token = token.trim();
    assert!(token.starts_with("kiln_") && token.len() == 69, "{token}");
    let store = SqliteStore::open(&dir.path().join("data/kiln.db"))
        .await
        .expect("store");
    assert_eq!(
        store
            .token_user(&sha256(token.as_bytes()))
            .await
            .expect("read"),
        Some("dave".to_owned())
    );
    let refused = kiln("library");
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("`library` is kiln's own entity"));
}

/// The ids `singularity push` learns on the way.
pub(crate) struct Pushed {
    container: String,
    image: String,
}

/// `singularity push <file> library://<reference>:<tag>` for `arch`, call for call as the
/// library client makes them with API 2.0.0-alpha.2 (v2 single-part upload, v2 tags).
pub(crate) async fn push(
    client: &Client<'_>,
    reference: &str,
    tag: &str,
    file: &[u8],
    arch: &str,
) -> Pushed {
    let [entity, collection, container] = reference.split('/').collect::<Vec<_>>()[..] else {
        panic!("entity/collection/container: {reference}");
    };
    let hash = sha256(file);
    // The OCI path first; any failure means the legacy flow.
    let (status, _) = client
        .get(&format!(
            "/v1/oci-redirect?namespace={reference}&mapped=1&accessTypes=pull,push"
        ))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The Go client's structs, zero values and all.
    let base_model = json!({"deleted": false, "createdBy": "", "createdAt": "0001-01-01T00:00:00Z", "updatedAt": "0001-01-01T00:00:00Z"});
    let with = |fields: Value| {
        let mut body = base_model.clone();
        if let (Value::Object(body), Value::Object(fields)) = (&mut body, fields) {
            body.extend(fields);
        }
        body
    };

    let entity_id = match client.get(&format!("/v1/entities/{entity}")).await {
        (StatusCode::NOT_FOUND, _) => {
            let (status, body) = client
                .post(
                    "/v1/entities",
                    with(json!({"id": "", "name": entity, "description": "No description", "collections": null, "size": 0, "quota": 0, "defaultPrivate": false, "customData": ""})),
                )
                .await;
            data(status, body)["id"].as_str().expect("id").to_owned()
        }
        (status, body) => data(status, body)["id"].as_str().expect("id").to_owned(),
    };
    let collection_id = match client
        .get(&format!("/v1/collections/{entity}/{collection}"))
        .await
    {
        (StatusCode::NOT_FOUND, _) => {
            let (status, body) = client
                .post(
                    "/v1/collections",
                    with(json!({"id": "", "name": collection, "description": "No description", "entity": entity_id, "containers": null, "size": 0, "private": false, "customData": ""})),
                )
                .await;
            let data = data(status, body);
            assert_eq!(data["entityName"], entity);
            data["id"].as_str().expect("id").to_owned()
        }
        (status, body) => data(status, body)["id"].as_str().expect("id").to_owned(),
    };
    let container_id = match client.get(&format!("/v1/containers/{reference}")).await {
        (StatusCode::NOT_FOUND, _) => {
            let (status, body) = client
                .post(
                    "/v1/containers",
                    with(json!({"id": "", "name": container, "description": "No description", "fullDescription": "", "collection": collection_id, "images": null, "imageTags": null, "archTags": null, "size": 0, "downloadCount": 0, "stars": 0, "private": false, "readOnly": false, "customData": ""})),
                )
                .await;
            let data = data(status, body);
            assert_eq!(
                (
                    &data["entityName"],
                    &data["collectionName"],
                    &data["collection"]
                ),
                (&json!(entity), &json!(collection), &json!(collection_id))
            );
            data["id"].as_str().expect("id").to_owned()
        }
        (status, body) => data(status, body)["id"].as_str().expect("id").to_owned(),
    };
    let image = match client
        .get(&format!("/v1/images/{reference}:sha256.{hash}?arch={arch}"))
        .await
    {
        (StatusCode::NOT_FOUND, body) => {
            error_message(StatusCode::NOT_FOUND, &body, StatusCode::NOT_FOUND);
            let (status, body) = client
                .post(
                    "/v1/images",
                    with(json!({"id": "", "hash": format!("sha256.{hash}"), "description": "", "container": container_id, "size": 0, "uploaded": false, "customData": "", "containerStars": 0, "containerDownloads": 0})),
                )
                .await;
            data(status, body)
        }
        (status, body) => data(status, body),
    };
    let image_id = image["id"].as_str().expect("id").to_owned();
    assert_eq!(image_id.len(), 24);
    assert_eq!(image["hash"], format!("sha256.{hash}"));
    if image["uploaded"] == false {
        let (status, version) = client.get("/version").await;
        assert_eq!(data(status, version)["apiVersion"], "2.0.0-alpha.2");
        // Large files try multipart first; a 404 means one part.
        let (status, _) = client
            .post(
                &format!("/v2/imagefile/{image_id}/_multipart"),
                json!({"filesize": file.len()}),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, body) = client
            .post(
                &format!("/v2/imagefile/{image_id}"),
                json!({"filesize": file.len(), "sha256sum": hash, "md5sum": ""}),
            )
            .await;
        let url = data(status, body)["uploadURL"]
            .as_str()
            .expect("an upload URL")
            .to_owned();
        assert!(url.starts_with(&client.app.url("/")), "{url}");
        // Like a presigned S3 PUT: no token.
        let uploaded = reqwest::Client::new()
            .put(&url)
            .header(CONTENT_TYPE, "application/octet-stream")
            .header("x-amz-content-sha256", &hash)
            .body(file.to_vec())
            .send()
            .await
            .expect("PUT");
        assert_eq!(uploaded.status(), StatusCode::OK);
        let (status, body) = client
            .put(&format!("/v2/imagefile/{image_id}/_complete"), json!({}))
            .await;
        let complete = data(status, body);
        assert_eq!(complete["containerUrl"], reference);
    }
    let (status, body) = client.get(&format!("/v2/tags/{container_id}")).await;
    assert!(data(status, body).is_object());
    let (status, body) = client
        .post(
            &format!("/v2/tags/{container_id}"),
            json!({"Arch": arch, "Tag": tag, "ImageID": image_id}),
        )
        .await;
    assert_eq!(data(status, body)[arch][tag], image_id);
    Pushed {
        container: container_id,
        image: image_id,
    }
}

/// `singularity pull library://<reference>:<tag>` for `arch`: the image record, then the file.
pub(crate) async fn pull(
    app: &TestApp,
    reference: &str,
    tag: &str,
    arch: &str,
) -> (Value, Vec<u8>) {
    let client = Client::new(app, None);
    let (status, body) = client
        .get(&format!("/v1/images/{reference}:{tag}?arch={arch}"))
        .await;
    let image = data(status, body);
    let (status, _) = client
        .get(&format!(
            "/v1/oci-redirect?namespace={reference}&mapped=1&accessTypes=pull"
        ))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, version) = client.get("/version").await;
    assert_eq!(data(status, version)["apiVersion"], "2.0.0-alpha.2");
    let file = reqwest::get(app.url(&format!("/v1/imagefile/{reference}:{tag}?arch={arch}")))
        .await
        .expect("image file");
    assert_eq!(file.status(), StatusCode::OK);
    let bytes = file.bytes().await.expect("body").to_vec();
    assert_eq!(
        image["hash"],
        format!("sha256.{}", sha256(&bytes)),
        "{image}"
    );
    assert_eq!(image["size"], bytes.len(), "{image}");
    assert_eq!(image["arch"], arch, "{image}");
    (image, bytes)
}

#[tokio::test]
async fn push_then_pull_as_singularity_does() {
    let app = start(true).await;
    let alice = signup(&app, "alice").await;
    let client = Client::new(&app, Some(&alice));
    let (file, hash) = sif(SifArch::Amd64, "hello from alice").await;
    let pushed = push(&client, "alice/tools/hello", "1.0", &file, "amd64").await;

    let (image, bytes) = pull(&app, "alice/tools/hello", "1.0", "amd64").await;
    assert_eq!(bytes, file);
    assert_eq!(image["id"], pushed.image);
    assert_eq!(image["uploaded"], true);
    assert_eq!(image["tags"], json!(["1.0"]));
    assert_eq!(
        (
            &image["entityName"],
            &image["collectionName"],
            &image["containerName"]
        ),
        (&json!("alice"), &json!("tools"), &json!("hello"))
    );
    assert!(
        image["createdAt"].as_str().expect("a time").ends_with('Z'),
        "{image}"
    );
    let (status, body) = Client::new(&app, None)
        .get(&format!(
            "/v1/images/alice/tools/hello:sha256.{hash}?arch=amd64"
        ))
        .await;
    assert_eq!(data(status, body)["id"], pushed.image);
    let (status, body) = Client::new(&app, None)
        .get("/v1/images/alice/tools/hello:1.0?arch=arm64")
        .await;
    error_message(status, &body, StatusCode::NOT_FOUND);

    let (status, body) = client.get("/v1/containers/alice/tools/hello").await;
    let container = data(status, body);
    assert_eq!(
        container["archTags"],
        json!({"amd64": {"1.0": pushed.image}})
    );
    assert_eq!(container["imageTags"], json!({"1.0": pushed.image}));
    assert_eq!(container["images"], json!([pushed.image]));
    let (status, body) = client.get(&format!("/v1/tags/{}", pushed.container)).await;
    assert_eq!(data(status, body), json!({"1.0": pushed.image}));
    let (status, body) = client.get("/v1/entities/alice").await;
    assert_eq!(
        data(status, body)["collections"].as_array().map(Vec::len),
        Some(1)
    );

    // Pushing the same file again finds everything and uploads nothing.
    let again = push(&client, "alice/tools/hello", "latest", &file, "amd64").await;
    assert_eq!(
        (again.container, again.image),
        (pushed.container, pushed.image.clone())
    );
    let (image, _) = pull(&app, "alice/tools/hello", "latest", "amd64").await;
    assert_eq!(image["tags"], json!(["1.0", "latest"]));

    // The same SIF is an ORAS artifact in the registry, its config downloadable.
    let manifest: Value = reqwest::Client::new()
        .get(app.url("/v2/library/alice/tools/hello/manifests/1.0"))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .expect("manifest")
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        manifest["layers"][0]["digest"],
        format!("sha256:{hash}"),
        "{manifest}"
    );
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.sylabs.sif.layer.v1.sif"
    );
    assert_eq!(
        manifest["layers"][0]["annotations"]["org.opencontainers.image.title"],
        "hello_1.0.sif"
    );
    let config = reqwest::get(app.url(&format!(
        "/v2/library/alice/tools/hello/blobs/{}",
        manifest["config"]["digest"].as_str().expect("digest")
    )))
    .await
    .expect("config blob");
    assert_eq!(config.status(), StatusCode::OK);
    let blob = reqwest::get(app.url(&format!(
        "/v2/library/alice/tools/hello/blobs/sha256:{hash}"
    )))
    .await
    .expect("SIF blob");
    assert_eq!(blob.bytes().await.expect("bytes").to_vec(), file);
    // The registry keeps its own paths below the library's routes.
    let tags = reqwest::get(app.url("/v2/tags/tags/list"))
        .await
        .expect("tags");
    assert_eq!(tags.status(), StatusCode::NOT_FOUND);
    let tags: Value = tags.json().await.expect("a registry error");
    assert_eq!(tags["errors"][0]["code"], "NAME_UNKNOWN", "{tags}");
}

#[tokio::test]
async fn refusals() {
    let app = start(true).await;
    let alice = signup(&app, "alice").await;
    let bob = signup(&app, "bob").await;
    let anonymous = Client::new(&app, None);
    let alice_client = Client::new(&app, Some(&alice));
    let bob_client = Client::new(&app, Some(&bob));
    let operator = Client::new(&app, Some(OPERATOR));
    let (file, _) = sif(SifArch::Amd64, "alice's").await;
    let pushed = push(&alice_client, "alice/tools/hello", "1.0", &file, "amd64").await;
    let mut answers = Answers::new();
    answers.redact(app.address.to_string(), "kiln");
    answers.redact(&pushed.container, "container id");
    answers.redact(&pushed.image, "image id");

    for (client, who) in [
        (&anonymous, "no token"),
        (&Client::new(&app, Some("kiln_0000")), "an unknown token"),
    ] {
        let (status, body) = client.post("/v1/entities", json!({"name": "alice"})).await;
        error_message(status, &body, StatusCode::UNAUTHORIZED);
        answers.json(&format!("an entity, {who}"), status, &body, &[]);
    }
    let (status, body) = bob_client
        .post("/v1/entities", json!({"name": "alice"}))
        .await;
    error_message(status, &body, StatusCode::FORBIDDEN);
    answers.json("bob makes alice", status, &body, &[]);
    let (status, body) = bob_client
        .post("/v1/entities", json!({"name": "library"}))
        .await;
    error_message(status, &body, StatusCode::FORBIDDEN);
    answers.json("bob makes library", status, &body, &[]);
    let (status, body) = alice_client.get("/v1/entities/alice").await;
    let alice_entity = data(status, body)["id"].as_str().expect("id").to_owned();
    answers.redact(&alice_entity, "entity id");
    let (status, body) = bob_client
        .post(
            "/v1/collections",
            json!({"name": "mine", "entity": alice_entity}),
        )
        .await;
    error_message(status, &body, StatusCode::FORBIDDEN);
    answers.json("bob makes a collection of alice's", status, &body, &[]);
    let (status, body) = bob_client
        .post(
            &format!("/v2/tags/{}", pushed.container),
            json!({"Arch": "amd64", "Tag": "evil", "ImageID": pushed.image}),
        )
        .await;
    error_message(status, &body, StatusCode::FORBIDDEN);
    answers.json("bob tags alice's image", status, &body, &[]);
    // Operators write anywhere, `library` included.
    let (status, body) = operator
        .post("/v1/entities", json!({"name": "library"}))
        .await;
    assert_eq!(data(status, body)["name"], "library");
    let (status, body) = operator
        .post(
            "/v1/collections",
            json!({"name": "ops", "entity": alice_entity}),
        )
        .await;
    assert_eq!(data(status, body)["entityName"], "alice");

    // Bad names and tags are named.
    let (status, body) = alice_client.get("/v1/collections/alice/tools").await;
    let collection = data(status, body)["id"].as_str().expect("id").to_owned();
    answers.redact(&collection, "collection id");
    let (status, body) = alice_client
        .post(
            "/v1/containers",
            json!({"name": "Hello_World!", "collection": collection}),
        )
        .await;
    error_message(status, &body, StatusCode::BAD_REQUEST);
    answers.json("a bad container name", status, &body, &[]);
    let (status, body) = alice_client
        .post(
            &format!("/v2/tags/{}", pushed.container),
            json!({"Arch": "amd64", "Tag": "no/slash", "ImageID": pushed.image}),
        )
        .await;
    error_message(status, &body, StatusCode::BAD_REQUEST);
    answers.json("a bad tag", status, &body, &[]);
    let (status, body) = alice_client
        .post(
            &format!("/v2/tags/{}", pushed.container),
            json!({"Arch": "arm64", "Tag": "x", "ImageID": pushed.image}),
        )
        .await;
    error_message(status, &body, StatusCode::BAD_REQUEST);
    answers.json("a tag for another architecture", status, &body, &[]);
    let (status, body) = alice_client
        .post("/v1/entities", json!({"name": "bad name"}))
        .await;
    error_message(status, &body, StatusCode::BAD_REQUEST);
    answers.json("a bad entity name", status, &body, &[]);
    let (status, body) = alice_client
        .post(
            "/v1/images",
            json!({"hash": "md5.abc", "container": pushed.container}),
        )
        .await;
    error_message(status, &body, StatusCode::BAD_REQUEST);
    answers.json("a bad image hash", status, &body, &[]);

    // A file whose bytes are not the image's hash is refused and not kept.
    let (other, other_hash) = sif(SifArch::Amd64, "another one").await;
    answers.redact(&other_hash, "other hash");
    let (status, body) = alice_client
        .post(
            "/v1/images",
            json!({"hash": format!("sha256.{other_hash}"), "container": pushed.container}),
        )
        .await;
    let image = data(status, body)["id"].as_str().expect("id").to_owned();
    answers.redact(&image, "other image id");
    let (status, body) = alice_client
        .put(&format!("/v2/imagefile/{image}/_complete"), json!({}))
        .await;
    error_message(status, &body, StatusCode::BAD_REQUEST);
    answers.json("completing an upload without a file", status, &body, &[]);
    let (status, body) = alice_client
        .post(
            &format!("/v2/imagefile/{image}"),
            json!({"filesize": other.len()}),
        )
        .await;
    let url = data(status, body)["uploadURL"]
        .as_str()
        .expect("URL")
        .to_owned();
    let put = |url: String, bytes: Vec<u8>| async move {
        let response = reqwest::Client::new()
            .put(url)
            .body(bytes)
            .send()
            .await
            .expect("PUT");
        let status = response.status();
        (status, response.json::<Value>().await.expect("JSON"))
    };
    let (status, body) = put(url.clone(), file.clone()).await;
    error_message(status, &body, StatusCode::BAD_REQUEST);
    answers.json("uploading the wrong bytes", status, &body, &[]);
    let (status, body) = put(format!("{url}x"), other.clone()).await;
    error_message(status, &body, StatusCode::FORBIDDEN);
    answers.json("uploading to a bad URL", status, &body, &[]);
    let (status, body) = anonymous
        .get(&format!(
            "/v1/images/alice/tools/hello:sha256.{other_hash}?arch=amd64"
        ))
        .await;
    assert_eq!(data(status, body)["uploaded"], false);
    let not_there = reqwest::get(app.url(&format!(
        "/v1/imagefile/alice/tools/hello:sha256.{other_hash}?arch=amd64"
    )))
    .await
    .expect("file");
    assert_eq!(not_there.status(), StatusCode::NOT_FOUND);
    let blob = reqwest::get(app.url(&format!(
        "/v2/library/alice/tools/hello/blobs/sha256:{other_hash}"
    )))
    .await
    .expect("blob");
    assert_eq!(blob.status(), StatusCode::NOT_FOUND, "nothing was kept");
    // The right bytes through the same URL work; then the URL is spent.
    let (status, body) = put(url.clone(), other.clone()).await;
    assert_eq!(data(status, body)["uploaded"], true);
    let (status, body) = put(url, other).await;
    error_message(status, &body, StatusCode::FORBIDDEN);
    answers.json("uploading twice", status, &body, &[]);

    // A file that is no SIF, though its hash is right.
    let not_sif = vec![b'x'; 100_000];
    let (status, body) = alice_client
        .post(
            "/v1/images",
            json!({"hash": format!("sha256.{}", sha256(&not_sif)), "container": pushed.container}),
        )
        .await;
    let image = data(status, body)["id"].as_str().expect("id").to_owned();
    answers.redact(&image, "not-a-SIF image id");
    let (status, body) = alice_client
        .post(&format!("/v2/imagefile/{image}"), json!({}))
        .await;
    let url = data(status, body)["uploadURL"]
        .as_str()
        .expect("URL")
        .to_owned();
    let (status, body) = put(url, not_sif).await;
    error_message(status, &body, StatusCode::BAD_REQUEST);
    answers.json("uploading a file that is no SIF", status, &body, &[]);
    let (status, body) = bob_client
        .post(&format!("/v2/imagefile/{image}"), json!({}))
        .await;
    error_message(status, &body, StatusCode::FORBIDDEN);
    answers.json("bob uploads to alice's image", status, &body, &[]);
    let (status, body) = anonymous.get("/v1/containers/alice/tools/nothing").await;
    error_message(status, &body, StatusCode::NOT_FOUND);
    answers.json("a container that is not there", status, &body, &[]);
    insta::assert_snapshot!(answers.render());
}

#[tokio::test]
async fn one_tag_per_architecture() {
    let app = start(true).await;
    let alice = signup(&app, "alice").await;
    let client = Client::new(&app, Some(&alice));
    let (amd64, amd64_hash) = sif(SifArch::Amd64, "x86_64 build").await;
    // Bigger than any request body limit: uploads stream.
    let (arm64, arm64_hash) = sized_sif(SifArch::Arm64, "aarch64 build", 5 << 20).await;
    assert!(arm64.len() > 5 << 20);
    let first = push(&client, "alice/multi/tool", "2.0", &amd64, "amd64").await;
    let second = push(&client, "alice/multi/tool", "2.0", &arm64, "arm64").await;
    assert_eq!(first.container, second.container);
    assert_ne!(first.image, second.image);
    let (_, bytes) = pull(&app, "alice/multi/tool", "2.0", "amd64").await;
    assert_eq!(sha256(&bytes), amd64_hash);
    let (_, bytes) = pull(&app, "alice/multi/tool", "2.0", "arm64").await;
    assert_eq!(sha256(&bytes), arm64_hash);
    let (status, body) = client.get(&format!("/v2/tags/{}", first.container)).await;
    assert_eq!(
        data(status, body),
        json!({"amd64": {"2.0": first.image}, "arm64": {"2.0": second.image}})
    );
    // Without an architecture, and in the registry, the last one tagged wins.
    let (status, body) = client.get("/v1/images/alice/multi/tool:2.0").await;
    assert_eq!(data(status, body)["arch"], "arm64");
    let manifest: Value = reqwest::get(app.url("/v2/library/alice/multi/tool/manifests/2.0"))
        .await
        .expect("manifest")
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        manifest["layers"][0]["digest"],
        format!("sha256:{arm64_hash}")
    );

    // Clients older than API 2.0: the file in the POST body, v1 tags (the file's arch).
    let (legacy, legacy_hash) = sized_sif(SifArch::Amd64, "legacy client", 3 << 20).await;
    let (status, body) = client
        .post(
            "/v1/images",
            json!({"hash": format!("sha256.{legacy_hash}"), "container": first.container}),
        )
        .await;
    let image = data(status, body)["id"].as_str().expect("id").to_owned();
    let uploaded = reqwest::Client::new()
        .post(app.url(&format!("/v1/imagefile/{image}")))
        .header(AUTHORIZATION, format!("Bearer {alice}"))
        .body(legacy.clone())
        .send()
        .await
        .expect("POST the file");
    assert_eq!(uploaded.status(), StatusCode::OK);
    let (status, body) = client
        .post(
            &format!("/v1/tags/{}", first.container),
            json!({"Tag": "old", "ImageID": image}),
        )
        .await;
    assert_eq!(data(status, body)["old"], image);
    let (_, bytes) = pull(&app, "alice/multi/tool", "old", "amd64").await;
    assert_eq!(bytes, legacy);
}

/// Remote builds push SIFs straight into the registry at `library/<e>/<c>/<n>`; the library
/// finds them there, reading the architecture from the file.
#[tokio::test]
async fn sifs_pushed_to_the_registry_are_pulled_through_the_library() {
    let app = start(true).await;
    let (file, hash) = sif(SifArch::Arm64, "built remotely").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("built.sif");
    std::fs::write(&path, &file).expect("write");
    push_to_registry(
        &app,
        "library/carol/builds/tool",
        "1",
        &path,
        &hash,
        file.len(),
    )
    .await;

    let (image, bytes) = pull(&app, "carol/builds/tool", "1", "arm64").await;
    assert_eq!(bytes, file);
    assert_eq!(image["entityName"], "carol");
    let (status, body) = Client::new(&app, None)
        .get("/v1/images/carol/builds/tool:1?arch=amd64")
        .await;
    error_message(status, &body, StatusCode::NOT_FOUND);
    // One name is `library/default/<name>`, which is kiln's `library/<name>`.
    push_to_registry(&app, "library/tool", "2", &path, &hash, file.len()).await;
    let (image, _) = pull(&app, "tool", "2", "arm64").await;
    assert_eq!(image["collectionName"], "default");
    pull(&app, "library/default/tool", "2", "arm64").await;
}

async fn push_to_registry(
    app: &TestApp,
    repository: &str,
    tag: &str,
    file: &Path,
    hash: &str,
    size: usize,
) {
    let client = RegistryClient::new(
        &app.address.to_string(),
        Auth::Basic(Credentials::new(PUSHER.0, PUSHER.1)),
        &[],
    )
    .expect("client");
    let digest = format!("sha256:{hash}");
    let (config, manifest) = kiln::assemble::sif_artifact(&digest, size as u64, "tool.sif");
    client
        .push_blob_bytes(repository, config.bytes.into(), None)
        .await
        .expect("config");
    client
        .push_blob_file(repository, &digest, file, None)
        .await
        .expect("SIF");
    client
        .push_manifest(
            repository,
            tag,
            manifest.bytes.into(),
            kiln::assemble::MEDIA_TYPE_MANIFEST,
        )
        .await
        .expect("manifest");
}

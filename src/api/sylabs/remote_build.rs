//! The Sylabs build service protocol (reference §1), so `singularity build --remote` and
//! `scs-build` build definition files on kiln: submit, status, cancel, the build log over a
//! websocket, and build contexts for `%files`.
//!
//! A remote build is a kiln build like any other (queue, store, log); its request says it is a
//! definition ([`DefinitionJob`]) and the definition builder runs it. Its SIF lands in the
//! library under `libraryRef`, where the client downloads it with a library pull. Every call
//! needs a token (`Authorization: BEARER …`, any casing), and a build is only visible to the
//! user who submitted it (and operators).
//!
//! A definition is checked when submitted, as the builder checks it, and its `From:` registry
//! with [`check_base_images`]: one that could only fail costs no build and no allowance. Build
//! contexts are checked before they are kept ([`crate::build::contexts::check_context`]) and
//! belong to the user who uploaded them: kept in that user's repository of the registry, found
//! and deleted only by them, fetched by digest by whichever worker runs the build.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::AppState;
use crate::api::accounts::is_library_name;
use crate::api::auth::{User, authenticate};
use crate::api::base_hosts::{BaseImage, check_base_images};
use crate::api::error::ApiError;
use crate::api::log_follow::BuildWatch;
use crate::api::sylabs::library::registry_repository;
use crate::build::contexts::{Announced, BuildContexts, ContextError, ContextLimits, ReceiveError};
use crate::signing::{SigningKey, unix_millis};
use crate::spec::{Bootstrap, BuildJob, Definition, DefinitionJob, Platform};
use crate::store::{BuildRecord, BuildStatus, StoreError};

/// The largest definition file accepted.
const MAX_DEFINITION: usize = 1 << 20;

/// How long a build context upload URL stays valid.
const UPLOAD_TTL: Duration = Duration::from_secs(3600);

/// How often an idle websocket is pinged, so proxies keep it open through long steps.
const PING_EVERY: Duration = Duration::from_secs(30);

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/convert-def-file", post(convert_definition))
        .route("/v1/build", post(submit))
        .route("/v1/build/{id}", get(status))
        .route("/v1/build/{id}/_cancel", put(cancel))
        .route("/v1/build-ws/{id}", get(output))
        .route("/v1/build-context", post(start_context_upload))
        .route("/v1/build-context/uploads/{ticket}", put(upload_context))
        .route("/v1/build-context/{digest}", delete(delete_context))
}

/// Tickets of build-context uploads announced but not yet made: the ticket in each upload URL
/// is the only credential the client's PUT carries. A ticket is signed, not remembered
/// ([`crate::signing`]), so any node with the same `secret_key` takes the PUT, whichever node
/// announced it. It names the user whose context the bytes become, the digest and size they
/// must have, and when it expires. Being stateless, it may be used more than once until then:
/// harmless, as only bytes of the announced digest are kept, and as that same user's context.
#[derive(Debug)]
pub struct ContextUploads {
    key: SigningKey,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Ticket {
    /// The user who announced it, whose context it becomes.
    user: String,
    /// Hex sha256 the upload must have.
    digest: String,
    /// Bytes it must have.
    size: u64,
}

impl ContextUploads {
    /// Tickets signed with `key` (for this purpose alone).
    pub fn new(key: &SigningKey) -> Self {
        ContextUploads {
            key: key.for_purpose("build-context-upload"),
        }
    }

    fn issue(&self, user: &str, digest: &str, size: u64) -> String {
        self.issue_at(user, digest, size, SystemTime::now())
    }

    fn issue_at(&self, user: &str, digest: &str, size: u64, now: SystemTime) -> String {
        let expires = unix_millis(now + UPLOAD_TTL);
        // The user is a library name and the digest hex: neither holds a `:`.
        self.key
            .sign(format!("{expires}:{size}:{digest}:{user}").as_bytes())
    }

    fn redeem(&self, ticket: &str) -> Option<Ticket> {
        self.redeem_at(ticket, SystemTime::now())
    }

    fn redeem_at(&self, ticket: &str, now: SystemTime) -> Option<Ticket> {
        let payload = String::from_utf8(self.key.open(ticket)?).ok()?;
        let mut parts = payload.splitn(4, ':');
        let expires: u64 = parts.next()?.parse().ok()?;
        let size = parts.next()?.parse().ok()?;
        let digest = parts.next()?.to_owned();
        let user = parts.next()?.to_owned();
        (unix_millis(now) < expires).then_some(Ticket { user, digest, size })
    }
}

/// The caller's user; remote builds are never anonymous.
async fn user(state: &AppState, headers: &HeaderMap) -> Result<User, ApiError> {
    authenticate(state, headers).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            format!(
                "remote builds need a valid token: get one at {}/auth/tokens and run \
                 `singularity remote login`",
                state.config.public_url()
            ),
        )
    })
}

/// `scs-build` asks the service to parse the definition before submitting it, to learn which
/// `%files` sources to upload. It shows no message from an error here, only the status, so a
/// definition kiln cannot build is answered with no files and refused when submitted, with a
/// 400 whose message the client shows. Parsing needs no token.
async fn convert_definition(body: Bytes) -> Response {
    let Ok(text) = std::str::from_utf8(&body) else {
        return ApiError::bad_request("the definition file is not UTF-8 text").into_response();
    };
    let files: Vec<Value> = Definition::parse(text)
        .map(|definition| {
            definition
                .files
                .iter()
                .map(|copy| json!({"source": copy.source, "destination": copy.destination}))
                .collect()
        })
        .unwrap_or_default();
    let sections = if files.is_empty() {
        Vec::new()
    } else {
        vec![json!({"args": "", "files": files})]
    };
    Json(json!({"data": {"buildData": {"files": sections}}})).into_response()
}

/// What clients POST to `/v1/build` (unknown fields, like old clients' `callbackURL`, are
/// ignored).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubmitBody {
    definition_raw: Option<String>,
    #[serde(default)]
    library_ref: Option<String>,
    #[serde(default)]
    builder_requirements: Option<HashMap<String, String>>,
    #[serde(default)]
    context_digest: Option<String>,
    #[serde(default)]
    working_dir: Option<String>,
}

async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let (build, request) = submit_build(&state, &headers, &body).await?;
    Ok(Json(
        json!({ "data": build_info(&state, &build, &request).await }),
    ))
}

async fn submit_build(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(BuildRecord, DefinitionJob), ApiError> {
    let user = user(state, headers).await?;
    let body: SubmitBody = serde_json::from_slice(body)
        .map_err(|err| ApiError::bad_request(format!("the build request is not valid: {err}")))?;
    let definition = decode_definition(body.definition_raw.as_deref())?;
    let parsed = Definition::parse(&definition).map_err(|err| {
        ApiError::bad_request(format!("the definition file cannot be built: {err}"))
    })?;
    if parsed.bootstrap == Bootstrap::Docker {
        let from = BaseImage {
            reference: parsed.from.clone(),
            place: "in `From:`".to_owned(),
        };
        check_base_images(&state.config, &[from])
            .await
            .map_err(|err| ApiError::bad_request(err.to_string()))?;
    }
    let platform = platform_of(body.builder_requirements.as_ref())?;
    let context = match body.context_digest.as_deref().filter(|d| !d.is_empty()) {
        Some(digest) => {
            let hex = context_hex(digest)?;
            let uploaded = build_contexts(state)
                .exists(&user.name, hex)
                .await
                .map_err(|err| ApiError::internal(&err))?;
            if !uploaded {
                return Err(ApiError::bad_request(format!(
                    "contextDigest {digest}: no such build context was uploaded"
                )));
            }
            Some(digest.to_owned())
        }
        None if !parsed.files.is_empty() => {
            return Err(ApiError::bad_request(
                "the definition has a %files section, but no build context was uploaded \
                 (contextDigest is missing)",
            ));
        }
        None => None,
    };
    let working_dir = body.working_dir.unwrap_or_default();
    if !(working_dir.is_empty() || working_dir.starts_with('/'))
        || working_dir.len() > 4096
        || working_dir.contains('\0')
    {
        return Err(ApiError::bad_request(format!(
            "workingDir {working_dir:?} is not an absolute path"
        )));
    }

    let key = crate::plan::definition_key(&definition);
    let default_ref = format!("{}/remote-builds/rb-{}", user.name, key.short());
    let target = LibraryTarget::parse(body.library_ref.as_deref(), &default_ref)?;
    if target.entity != user.name && !user.operator {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "library://{}/… belongs to {}; this token is {}'s",
                target.entity, target.entity, user.name
            ),
        ));
    }
    let repository = registry_repository(&target.entity, &target.collection, &target.container);
    let request = DefinitionJob {
        platform,
        user: user.name.clone(),
        library_ref: target.path(),
        tags: target.tags.clone(),
        repository: repository.clone(),
        context,
        working_dir,
    };
    let new =
        crate::plan::definition_build(&state.config.registry, key, definition, request.clone());
    // Charged in the store as the build is created: a joined build is free.
    let allowance = if user.operator {
        None
    } else {
        crate::api::limit::user(&state.config, &user.name)
    };
    let submitted = state
        .queue
        .submit_charged(new, &Default::default(), allowance.as_ref())
        .await
        .map_err(|err| match err {
            StoreError::AllowanceSpent { retry_after, .. } => {
                crate::api::limit::user_spent(&state.config, &user.name, retry_after)
            }
            other => other.into(),
        })?;
    tracing::info!(build = %submitted.build.id, user = %user.name, "remote build submitted");
    Ok((submitted.build, request))
}

/// `definitionRaw`: base64 of UTF-8 text, at most [`MAX_DEFINITION`] bytes.
fn decode_definition(raw: Option<&str>) -> Result<String, ApiError> {
    let raw = raw.ok_or_else(|| ApiError::bad_request("definitionRaw is missing"))?;
    let text = crate::api::base64_text(raw, "definitionRaw", MAX_DEFINITION)
        .map_err(ApiError::bad_request)?;
    if text.trim().is_empty() {
        return Err(ApiError::bad_request("the definition file is empty"));
    }
    Ok(text)
}

/// `builderRequirements.arch`: `amd64` (the default) or `arm64`.
fn platform_of(requirements: Option<&HashMap<String, String>>) -> Result<Platform, ApiError> {
    match requirements.and_then(|r| r.get("arch")).map(String::as_str) {
        None | Some("" | "amd64" | "x86_64") => Ok(Platform::LinuxAmd64),
        Some("arm64" | "aarch64") => Ok(Platform::LinuxArm64),
        Some(other) => Err(ApiError::bad_request(format!(
            "builderRequirements.arch {other:?}: kiln builds for amd64 and arm64"
        ))),
    }
}

/// Where a remote build's SIF goes: `entity/collection/container:tag[,tag…]`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LibraryTarget {
    entity: String,
    collection: String,
    container: String,
    tags: Vec<String>,
}

impl LibraryTarget {
    /// Reads a client's `libraryRef` (`""`, `library://e/c/n:t`, scs-build's `library:e/c/n:t`
    /// or `e/c/n`); an empty one means `default`.
    fn parse(reference: Option<&str>, default: &str) -> Result<Self, ApiError> {
        let given = reference.map(str::trim).filter(|r| !r.is_empty());
        let text = given.unwrap_or(default);
        let bad = |why: &str| ApiError::bad_request(format!("libraryRef {text:?} {why}"));
        let path = text
            .strip_prefix("library://")
            .or_else(|| text.strip_prefix("library:"))
            .unwrap_or(text);
        let (path, tags) = match path.rsplit_once(':') {
            Some((path, tags)) => (path, tags),
            None => (path, "latest"),
        };
        let parts: Vec<&str> = path.split('/').collect();
        let [entity, collection, container] = parts.as_slice() else {
            return Err(bad(
                "must be entity/collection/container[:tag], without a host",
            ));
        };
        for part in [entity, collection, container] {
            if !is_library_name(part) {
                return Err(bad(&format!(
                    "has {part:?}, which is not a library name (lowercase letters and digits, \
                     joined by . _ or -)"
                )));
            }
        }
        let tags: Vec<String> = tags.split(',').map(str::to_owned).collect();
        if let Some(tag) = tags.iter().find(|tag| !is_library_name(tag)) {
            return Err(bad(&format!("has the tag {tag:?}, which is not valid")));
        }
        Ok(LibraryTarget {
            entity: (*entity).to_owned(),
            collection: (*collection).to_owned(),
            container: (*container).to_owned(),
            tags,
        })
    }

    fn path(&self) -> String {
        format!("{}/{}/{}", self.entity, self.collection, self.container)
    }
}

/// A remote build the caller may see: theirs, or any for an operator.
async fn own_build(
    state: &AppState,
    user: &User,
    id: &str,
) -> Result<(BuildRecord, DefinitionJob), ApiError> {
    let build = state
        .store
        .build(id)
        .await?
        .ok_or_else(|| ApiError::does_not_exist(format!("build {id}")))?;
    let BuildJob::Definition(request) = build.job.clone() else {
        return Err(ApiError::does_not_exist(format!("build {id}")));
    };
    if request.user != user.name && !user.operator {
        return Err(ApiError::does_not_exist(format!("build {id}")));
    }
    Ok((build, request))
}

async fn status(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let user = user(&state, &headers).await?;
    let (build, request) = own_build(&state, &user, &id).await?;
    Ok(Json(
        json!({ "data": build_info(&state, &build, &request).await }),
    ))
}

/// The build as clients read it (`BuildInfo`): complete once done; a failed build is complete
/// with no image size, which is how clients learn it failed.
async fn build_info(state: &AppState, build: &BuildRecord, request: &DefinitionJob) -> Value {
    let public = state.config.public_url();
    let ws_base = public
        .strip_prefix("https://")
        .map(|rest| format!("wss://{rest}"))
        .or_else(|| {
            public
                .strip_prefix("http://")
                .map(|rest| format!("ws://{rest}"))
        })
        .unwrap_or_else(|| public.clone());
    let mut info = json!({
        "id": build.id,
        "isComplete": build.status == BuildStatus::Done,
        // With the scheme: scs-build splits the reference at its first `:` after removing
        // `library://`, and singularity strips the scheme too.
        "libraryRef": format!("library://{}:{}", request.library_ref, request.tags[0]),
        "libraryURL": public,
        "submitTime": build.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "wsURL": format!("{ws_base}/v1/build-ws/{}", build.id),
    });
    if let Some(started) = build.started_at {
        info["startTime"] = started
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            .into();
    }
    if let Some(finished) = build.finished_at {
        info["completeTime"] = finished
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            .into();
    }
    if build.succeeded == Some(true)
        && let Some(output) = build.outputs.first()
    {
        info["imageSize"] = output.size.into();
        if let Some(checksum) = sif_checksum(state, &request.repository, &output.digest).await {
            info["imageChecksum"] = checksum.into();
        }
    }
    info
}

/// `sha256.<hex>` of the SIF an ORAS manifest in kiln's registry points at.
async fn sif_checksum(state: &AppState, repository: &str, manifest: &str) -> Option<String> {
    let layer = state
        .image_store
        .first_layer(repository, manifest)
        .await
        .ok()??;
    Some(format!("sha256.{}", layer.digest.hex()))
}

async fn cancel(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let user = user(&state, &headers).await?;
    own_build(&state, &user, &id).await?;
    match state
        .queue
        .cancel(&id, &format!("cancelled by {}", user.name))
        .await
    {
        Ok(_) => Ok(StatusCode::NO_CONTENT),
        Err(StoreError::IllegalTransition { .. }) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("build {id} has already finished"),
        )),
        Err(err) => Err(err.into()),
    }
}

/// The build's log over a websocket: everything so far, then new text as it comes, as text
/// frames; closed with 1000 once the build is done (successful or not), after its status says
/// so.
async fn output(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let user = user(&state, &headers).await?;
    own_build(&state, &user, &id).await?;
    Ok(upgrade.on_upgrade(move |socket| follow_log(state, id, socket)))
}

async fn follow_log(state: AppState, id: String, mut socket: WebSocket) {
    // Before the first read: the store's news of the build, from any node, wakes the loop.
    let mut watch = BuildWatch::new(state.store.as_ref(), &id);
    let mut offset = 0;
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        // Status first: a build seen done has written its whole log, so the read after it
        // gets the end.
        let Ok(Some(build)) = state.store.build(&id).await else {
            return;
        };
        let Ok(slice) = state.store.read_log(&id, offset).await else {
            return;
        };
        if !slice.text.is_empty() {
            offset = slice.next_offset;
            if socket.send(Message::Text(slice.text.into())).await.is_err() {
                return;
            }
            continue;
        }
        if build.status == BuildStatus::Done {
            let close = CloseFrame {
                code: 1000,
                reason: "build finished".into(),
            };
            let _ = socket.send(Message::Close(Some(close))).await;
            return;
        }
        tokio::select! {
            () = watch.changed() => {}
            _ = ping.tick() => {
                if socket.send(Message::Ping(Bytes::new())).await.is_err() {
                    return;
                }
            }
            message = socket.recv() => match message {
                // The client went away (Ctrl-C); the build goes on unless it cancels it.
                None | Some(Err(_) | Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// `{"size": N, "digest": "sha256.<hex>"}`, announcing a build context upload.
#[derive(Debug, Deserialize)]
struct ContextAnnouncement {
    size: u64,
    digest: String,
}

async fn start_context_upload(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let user = user(&state, &headers).await?;
    let announced: ContextAnnouncement = serde_json::from_slice(&body).map_err(|err| {
        ApiError::bad_request(format!("the build context request is not valid: {err}"))
    })?;
    let hex = context_hex(&announced.digest)?;
    let limit = state.config.embedded_registry.max_blob_size;
    if announced.size > limit {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the build context has {} bytes; the limit is {limit}",
                announced.size
            ),
        ));
    }
    let mut response = Json(json!({"data": {}})).into_response();
    // Without a Location the client takes the context as already here.
    let present = build_contexts(&state)
        .exists(&user.name, hex)
        .await
        .map_err(|err| ApiError::internal(&err))?;
    if !present {
        let ticket = state.contexts.issue(&user.name, hex, announced.size);
        let location = format!(
            "{}/v1/build-context/uploads/{ticket}",
            state.config.public_url()
        );
        if let Ok(value) = HeaderValue::from_str(&location) {
            response.headers_mut().insert(header::LOCATION, value);
        }
    }
    Ok(response)
}

/// The PUT to an upload URL: the ticket is the credential. The bytes must be what was
/// announced and unpack within the limits ([`BuildContexts::receive`]); only then do they become the
/// context of the user who announced them.
async fn upload_context(
    State(state): State<AppState>,
    Path(ticket): Path<String>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let ticket = state.contexts.redeem(&ticket).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "this upload URL is unknown or has expired",
        )
    })?;
    receive_context(&state, &ticket, body).await?;
    Ok(StatusCode::OK)
}

async fn receive_context(state: &AppState, ticket: &Ticket, body: Body) -> Result<(), ApiError> {
    let limits = ContextLimits {
        max_unpacked: state.config.api.context_max_unpacked_bytes,
        max_entries: state.config.api.context_max_files,
        max_expansion: state.config.api.context_max_expansion,
    };
    let announced = Announced {
        digest: &ticket.digest,
        size: ticket.size,
    };
    build_contexts(state)
        .receive(&ticket.user, announced, body.into_data_stream(), limits)
        .await
        .map_err(|err| {
            let status = match &err {
                ReceiveError::Refused(ContextError::NotTar(_))
                | ReceiveError::BrokenOff(_)
                | ReceiveError::LargerThanAnnounced { .. }
                | ReceiveError::NotAnnounced { .. } => StatusCode::BAD_REQUEST,
                ReceiveError::Refused(_) => StatusCode::PAYLOAD_TOO_LARGE,
                ReceiveError::Store(_) | ReceiveError::Registry(_) => {
                    return ApiError::internal(&err);
                }
            };
            ApiError::new(status, err.to_string())
        })
}

async fn delete_context(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(digest): Path<String>,
) -> Result<StatusCode, ApiError> {
    let user = user(&state, &headers).await?;
    let hex = context_hex(&digest)?;
    // Only the caller's own contexts are looked at: another user's is "not found", never
    // "forbidden", which would tell that it exists.
    match build_contexts(&state).delete(&user.name, hex).await {
        Ok(true) => Ok(StatusCode::OK),
        Ok(false) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("there is no build context {digest}"),
        )),
        Err(err) => Err(ApiError::internal(&err)),
    }
}

/// The hex of a `sha256.<hex>` context digest.
fn context_hex(digest: &str) -> Result<&str, ApiError> {
    digest
        .strip_prefix("sha256.")
        .filter(|hex| {
            hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "{digest:?} is not a digest of the form sha256.<hex>"
            ))
        })
}

/// The build contexts, in the registry kiln keeps its images in; only [`BuildContexts`] knows
/// how.
fn build_contexts(state: &AppState) -> BuildContexts {
    BuildContexts::new(state.image_store.clone(), state.config.build_contexts_dir())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    #[test]
    fn upload_tickets_are_taken_by_any_node_with_the_key_until_they_expire() {
        let key = SigningKey::random();
        let issued = SystemTime::now();
        let digest = "a".repeat(64);
        let ticket = ContextUploads::new(&key).issue_at("alice", &digest, 42, issued);
        let expected = Ticket {
            user: "alice".into(),
            digest: digest.clone(),
            size: 42,
        };
        // Another node with the same key.
        let other_node = ContextUploads::new(&key);
        assert_eq!(other_node.redeem_at(&ticket, issued), Some(expected));
        let last = issued + UPLOAD_TTL - Duration::from_secs(1);
        assert!(other_node.redeem_at(&ticket, last).is_some());
        assert_eq!(other_node.redeem_at(&ticket, issued + UPLOAD_TTL), None);
        // Another key, or a registry token made with the same key, is no ticket.
        let stranger = ContextUploads::new(&SigningKey::random());
        assert_eq!(stranger.redeem_at(&ticket, issued), None);
        let token = crate::registry::auth::Tokens::new(&key, UPLOAD_TTL)
            .issue_at(&crate::registry::auth::Access::Read, issued);
        assert_eq!(other_node.redeem_at(&token, issued), None);
        assert_eq!(other_node.redeem_at("forged", issued), None);
    }

    #[test]
    fn library_refs_as_clients_send_them() {
        let default = "alice/remote-builds/rb-0123456789abcdef";
        let target = |r: Option<&str>| LibraryTarget::parse(r, default);
        let default_target = target(None).unwrap();
        assert_eq!(default_target.path(), default);
        assert_eq!(default_target.tags, ["latest"]);
        assert_eq!(target(Some("")).unwrap(), default_target);
        for sent in [
            "library://alice/project/numpy:1.26,latest",
            "library:alice/project/numpy:1.26,latest",
            "alice/project/numpy:1.26,latest",
        ] {
            let parsed = target(Some(sent)).unwrap();
            assert_eq!(parsed.path(), "alice/project/numpy", "{sent}");
            assert_eq!(parsed.tags, ["1.26", "latest"], "{sent}");
        }
        for bad in [
            "library://kiln.example.org/alice/project/numpy",
            "alice/numpy",
            "Alice/project/numpy",
            "alice/project/numpy:Latest",
            "alice/project/num py",
        ] {
            let failure = target(Some(bad)).unwrap_err();
            assert_eq!(failure.status, StatusCode::BAD_REQUEST, "{bad}");
            assert!(
                failure.message.contains("libraryRef"),
                "{}",
                failure.message
            );
        }
    }

    #[test]
    fn definitions_and_arches_are_checked() {
        let encoded = base64::engine::general_purpose::STANDARD.encode("Bootstrap: docker\n");
        assert_eq!(
            decode_definition(Some(&encoded)).unwrap(),
            "Bootstrap: docker\n"
        );
        assert!(
            decode_definition(None)
                .unwrap_err()
                .message
                .contains("missing")
        );
        assert!(
            decode_definition(Some("%%%"))
                .unwrap_err()
                .message
                .contains("not base64")
        );
        let empty = base64::engine::general_purpose::STANDARD.encode("  \n");
        assert!(
            decode_definition(Some(&empty))
                .unwrap_err()
                .message
                .contains("empty")
        );

        let arch = |a: &str| HashMap::from([("arch".to_owned(), a.to_owned())]);
        assert_eq!(platform_of(None).unwrap(), Platform::LinuxAmd64);
        assert_eq!(
            platform_of(Some(&arch("arm64"))).unwrap(),
            Platform::LinuxArm64
        );
        assert!(
            platform_of(Some(&arch("ppc64le")))
                .unwrap_err()
                .message
                .contains("ppc64le")
        );
        assert!(context_hex("sha256.abc").is_err());
        assert!(context_hex(&format!("sha256.{}", "a".repeat(64))).is_ok());
    }
}

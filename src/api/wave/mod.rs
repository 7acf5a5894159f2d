//! The Wave-compatible API, as Nextflow's Wave client speaks it: submit a container request,
//! poll its status, read a build's status, log, lock and record, and the service info.
//!
//! Bodies are Wave's (null fields accepted, unknown ones ignored; nulls left out of answers).
//! kiln always answers with the durable image in its registry — there are no ephemeral `/wt/`
//! tokens — so `freeze` is echoed but changes nothing.
//!
//! A `containerFile` runs its user's commands, so it needs a token unless
//! `api.anonymous_recipes` is on, and it is checked (as its builder checks it, and where its
//! images come from) before it costs a build; package requests stay anonymous.

pub mod request_records;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::api::AppState;
use crate::api::auth::{Caller, ClientAddress, require_recipe_token};
use crate::api::base_hosts::{BaseImage, check_base_images};
use crate::api::error::ApiError;
use crate::api::submit::{ImageState, ensure_image, wait_for_new_build};
use crate::metrics::RequestResult;
use crate::plan::ImagePlan;
use crate::spec::{Dockerfile, Format, MAX_PLATFORMS, Platform, Request, RequestInput};
use crate::store::{BuildRecord, BuildStatus, ContainerRequest, NewBuild};

/// The largest Dockerfile accepted, decoded (Wave allows 10 000 bytes).
const MAX_CONTAINER_FILE: usize = 64 * 1024;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1alpha2/container", post(submit))
        .route("/v1alpha2/container/{id}/status", get(container_status))
        .route("/v1alpha2/container/{id}", get(container_record))
        .route("/v1alpha1/builds/{id}/status", get(build_status))
        .route("/v1alpha1/builds/{id}/logs", get(build_logs))
        .route("/v1alpha1/builds/{id}/condalock", get(build_lock))
        .route("/v1alpha1/builds/{id}", get(build_record))
        .route("/service-info", get(service_info))
}

/// `POST /v1alpha2/container`, the fields kiln reads.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubmitRequest {
    tower_access_token: Option<String>,
    container_image: Option<String>,
    container_file: Option<String>,
    container_config: Option<ContainerConfig>,
    container_platform: Option<String>,
    packages: Option<Packages>,
    freeze: Option<bool>,
    format: Option<String>,
    dry_run: Option<bool>,
    mirror: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerConfig {
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    env: Option<Vec<String>>,
    working_dir: Option<String>,
    layers: Option<Vec<serde_json::Value>>,
}

impl ContainerConfig {
    /// Nextflow always sends the object; only a non-empty one asks for something.
    fn is_empty(&self) -> bool {
        self.entrypoint.as_ref().is_none_or(Vec::is_empty)
            && self.cmd.as_ref().is_none_or(Vec::is_empty)
            && self.env.as_ref().is_none_or(Vec::is_empty)
            && self.working_dir.as_ref().is_none_or(String::is_empty)
            && self.layers.as_ref().is_none_or(Vec::is_empty)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Packages {
    #[serde(rename = "type")]
    kind: Option<String>,
    environment: Option<String>,
    entries: Option<Vec<String>>,
    channels: Option<Vec<String>>,
}

/// The answer to a container request; `None` fields are left out, as Wave does.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct SubmitResponse {
    request_id: String,
    target_image: String,
    container_image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    build_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cached: Option<bool>,
    freeze: bool,
    mirror: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    succeeded: Option<bool>,
}

async fn submit(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<SubmitResponse>, ApiError> {
    let request: SubmitRequest = serde_json::from_slice(&body)
        .map_err(|err| ApiError::bad_request(format!("the request body is not valid: {err}")))?;
    let caller = Caller::new(
        &state,
        &headers,
        address,
        request.tower_access_token.as_deref(),
    );
    if request.mirror == Some(true) {
        return Err(ApiError::bad_request(
            "`mirror` is not supported: kiln builds images, it does not copy them",
        ));
    }
    if request
        .container_config
        .as_ref()
        .is_some_and(|config| !config.is_empty())
    {
        return Err(ApiError::bad_request(
            "`containerConfig` is not supported: kiln serves the image as built, without \
             added layers or settings",
        ));
    }
    let freeze = request.freeze.unwrap_or(false);
    let dry_run = request.dry_run.unwrap_or(false);
    match (
        &request.container_image,
        &request.container_file,
        &request.packages,
    ) {
        (Some(_), Some(_), _) => Err(ApiError::bad_request(
            "Attributes 'containerImage' and 'containerFile' cannot be used in the same request",
        )),
        (_, Some(_), Some(_)) => Err(ApiError::bad_request(
            "Attribute `containerFile` and `packages` conflicts each other",
        )),
        (Some(_), None, Some(_)) => Err(ApiError::bad_request(
            "Attributes 'containerImage' and 'packages' cannot be used in the same request: \
             kiln builds packages on its own base images",
        )),
        (Some(image), None, None) => pass_through(&state, address, image, freeze).await,
        (None, Some(file), None) => {
            require_recipe_token(&state, &headers, request.tower_access_token.as_deref()).await?;
            let new = containerfile_build(&state, file, &request).await?;
            answer(&state, caller, new, freeze, dry_run).await
        }
        (None, None, Some(packages)) => {
            let plan = packages_plan(&state, packages, &request)?;
            answer(&state, caller, plan.new_build(), freeze, dry_run).await
        }
        (None, None, None) => Err(ApiError::bad_request(
            "the request names no `packages`, `containerFile` or `containerImage`",
        )),
    }
}

/// An image that needs no build: recorded so its status can be polled like any other.
async fn pass_through(
    state: &AppState,
    address: Option<std::net::IpAddr>,
    image: &str,
    freeze: bool,
) -> Result<Json<SubmitResponse>, ApiError> {
    crate::spec::ImageRef::try_from(image.to_owned())
        .map_err(|err| ApiError::bad_request(format!("`containerImage`: {err}")))?;
    let mut record = ContainerRequest {
        id: String::new(),
        build_id: None,
        target_image: image.to_owned(),
        container_image: image.to_owned(),
        format: "docker".to_owned(),
        cached: true,
        freeze,
        created_at: Utc::now(),
    };
    record.id = request_id(address, &record);
    let answer = SubmitResponse {
        request_id: record.id.clone(),
        target_image: record.target_image.clone(),
        container_image: record.container_image.clone(),
        build_id: None,
        cached: None,
        freeze,
        mirror: false,
        succeeded: Some(true),
    };
    state.requests.add(record).await?;
    state.metrics.container_request(RequestResult::PassThrough);
    Ok(Json(answer))
}

/// Makes sure the image of `new` exists or is being built (waiting a little for a build this
/// request starts), records the request, and answers.
async fn answer(
    state: &AppState,
    caller: Caller,
    new: NewBuild,
    freeze: bool,
    dry_run: bool,
) -> Result<Json<SubmitResponse>, ApiError> {
    let image = new.image.to_string();
    if dry_run {
        // `nextflow inspect`: names only, nothing built, nothing counted.
        return Ok(Json(SubmitResponse {
            request_id: new_request_id(),
            target_image: image.clone(),
            container_image: image,
            build_id: Some(format!("{}_0", new.key.short())),
            cached: None,
            freeze,
            mirror: false,
            succeeded: None,
        }));
    }
    let format = new.job.format().to_string();
    let address = caller.address;
    let placed = ensure_image(state, caller, new).await?;
    // A build finished by now is answered as a cached image: Nextflow starts the task at once.
    let placed = wait_for_new_build(state, placed).await?;
    let (cached, succeeded) = match &placed {
        ImageState::Ready { .. } => (true, Some(true)),
        ImageState::Building { .. } => (false, None),
    };
    let mut record = ContainerRequest {
        id: String::new(),
        build_id: placed.build_id().map(str::to_owned),
        target_image: image.clone(),
        container_image: image,
        format,
        cached,
        freeze,
        created_at: Utc::now(),
    };
    record.id = request_id(address, &record);
    let answer = SubmitResponse {
        request_id: record.id.clone(),
        target_image: record.target_image.clone(),
        container_image: record.container_image.clone(),
        cached: Some(cached),
        build_id: record.build_id.clone(),
        freeze,
        mirror: false,
        succeeded,
    };
    // Written by the records' writer; a status poll finds it before that too.
    state.requests.add(record).await?;
    Ok(Json(answer))
}

/// The plan of a package request: entries (or a conda environment file), channels, platform
/// and format, validated like every request kiln takes.
fn packages_plan(
    state: &AppState,
    packages: &Packages,
    request: &SubmitRequest,
) -> Result<ImagePlan, ApiError> {
    if let Some(kind) = &packages.kind
        && !kind.eq_ignore_ascii_case("conda")
    {
        return Err(ApiError::bad_request(format!(
            "`packages.type` {kind} is not supported; kiln builds CONDA packages (with pip: \
             entries)"
        )));
    }
    let (entries, channels) = match (&packages.entries, &packages.environment) {
        (Some(entries), None) if !entries.is_empty() => (
            entries.clone(),
            packages.channels.clone().unwrap_or_default(),
        ),
        (None | Some(_), Some(environment)) => {
            let (entries, channels) = environment_entries(environment)?;
            let channels = if channels.is_empty() {
                packages.channels.clone().unwrap_or_default()
            } else {
                channels
            };
            (entries, channels)
        }
        _ => {
            return Err(ApiError::bad_request(
                "`packages` needs `entries` or an `environment`",
            ));
        }
    };
    crate::api::rest::images::check_channel_count(state, &channels, "`packages.channels`")?;
    if entries.iter().any(|entry| entry.contains("://")) {
        return Err(ApiError::bad_request(
            "`packages.entries`: remote conda lock files are not supported; list the packages",
        ));
    }
    let channels = if channels.is_empty() {
        state.config.channel_names()
    } else {
        channels
    };
    let input = RequestInput {
        entries,
        channels,
        platforms: platforms(request.container_platform.as_deref())?,
        format: Some(format(request.format.as_deref())),
        // Nextflow always sends `condaOpts.baseImage` (Wave's default, `ubuntu:24.04`), so it
        // says nothing about what the user wants: Wave requests build on kiln's default base.
        base: None,
    };
    let parsed = Request::try_from(input)
        .map_err(|err| ApiError::bad_request(format!("`packages`: {err}")))?;
    if parsed.format() == Format::Sif && parsed.platforms().len() != 1 {
        return Err(ApiError::bad_request(
            "`containerPlatform`: a SIF holds one platform; ask for one",
        ));
    }
    let mut plans = ImagePlan::for_request(
        &parsed,
        &state.config.recipe_images(),
        &state.config.registry,
    )
    .map_err(|err| ApiError::bad_request(format!("`packages`: {err}")))?;
    Ok(plans.remove(0))
}

/// A conda environment file (base64 YAML, as Nextflow sends an nf-core `environment.yml`) as
/// kiln entries and channels: strings are conda specs, a `pip:` list becomes `pip:` entries.
fn environment_entries(encoded: &str) -> Result<(Vec<String>, Vec<String>), ApiError> {
    #[derive(Deserialize)]
    struct Environment {
        #[serde(default)]
        channels: Vec<String>,
        #[serde(default)]
        dependencies: Vec<Dependency>,
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Dependency {
        Conda(String),
        Pip { pip: Vec<String> },
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|err| {
            ApiError::bad_request(format!("`packages.environment` is not base64: {err}"))
        })?;
    let environment: Environment = yaml_serde::from_slice(&bytes).map_err(|err| {
        ApiError::bad_request(format!(
            "`packages.environment` is not a conda environment file: {err}"
        ))
    })?;
    let mut entries = Vec::new();
    for dependency in environment.dependencies {
        match dependency {
            Dependency::Conda(spec) => entries.push(spec.split_whitespace().collect::<String>()),
            Dependency::Pip { pip } => {
                entries.extend(
                    pip.into_iter()
                        .map(|requirement| format!("pip:{requirement}")),
                );
            }
        }
    }
    if entries.is_empty() {
        return Err(ApiError::bad_request(
            "`packages.environment` lists no dependencies",
        ));
    }
    Ok((entries, environment.channels))
}

/// Wave's platform names: `linux/amd64`, the bare architecture names and their aliases, and
/// comma-joined lists.
fn platforms(text: Option<&str>) -> Result<Vec<String>, ApiError> {
    let Some(text) = text.filter(|text| !text.trim().is_empty()) else {
        return Ok(Vec::new());
    };
    let count = text.split(',').count();
    if count > MAX_PLATFORMS {
        return Err(ApiError::bad_request(format!(
            "`containerPlatform` lists {count} platforms; the limit is {MAX_PLATFORMS}"
        )));
    }
    text.split(',')
        .map(|one| {
            let name = one.trim().trim_start_matches("linux/");
            match name {
                "amd64" | "x86_64" => Ok(Platform::LinuxAmd64.to_string()),
                "arm64" | "aarch64" | "arm64/v8" => Ok(Platform::LinuxArm64.to_string()),
                _ => Err(ApiError::bad_request(format!(
                    "`containerPlatform`: `{one}` is not supported; use linux/amd64 or \
                     linux/arm64"
                ))),
            }
        })
        .collect()
}

fn format(text: Option<&str>) -> String {
    match text {
        Some(format) if format.eq_ignore_ascii_case("sif") => "sif".to_owned(),
        _ => "docker".to_owned(),
    }
}

/// A user's Dockerfile, built with buildah on one platform and named by its content. It is
/// checked as the builder checks it, and the registries of the images it pulls are checked, so
/// a Dockerfile that could only fail costs no build.
async fn containerfile_build(
    state: &AppState,
    encoded: &str,
    request: &SubmitRequest,
) -> Result<NewBuild, ApiError> {
    if format(request.format.as_deref()) == "sif" {
        return Err(ApiError::bad_request(
            "`containerFile` with `format: sif` is not supported here; build Singularity \
             definition files with `singularity build --remote` against kiln",
        ));
    }
    let text = crate::api::base64_text(encoded, "`containerFile`", MAX_CONTAINER_FILE)
        .map_err(ApiError::bad_request)?;
    let refused =
        |err: &dyn std::fmt::Display| ApiError::bad_request(format!("`containerFile`: {err}"));
    let dockerfile = Dockerfile::parse(&text).map_err(|err| refused(&err))?;
    let images: Vec<BaseImage> = dockerfile
        .images
        .into_iter()
        .map(|image| BaseImage {
            reference: image.reference,
            place: format!("at line {}", image.line),
        })
        .collect();
    check_base_images(&state.config, &images)
        .await
        .map_err(|err| refused(&err))?;
    let platforms = platforms(request.container_platform.as_deref())?;
    let platform = match platforms.as_slice() {
        [] => Platform::LinuxAmd64,
        [one] => one
            .parse()
            .map_err(|err| ApiError::bad_request(format!("{err}")))?,
        _ => {
            return Err(ApiError::bad_request(
                "`containerPlatform`: a `containerFile` is built for one platform",
            ));
        }
    };
    Ok(crate::plan::dockerfile_build(
        &state.config.registry,
        text,
        platform,
    ))
}

/// 12 lowercase hex characters, like Wave's request ids.
fn new_request_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// The id of a recorded request: the same for the same client asking for the same thing with
/// the same answer, so a client polling for a cached image renews one record instead of adding
/// a row per call (a 10 s load test once added 44,000).
fn request_id(address: Option<std::net::IpAddr>, record: &ContainerRequest) -> String {
    let mut hash = Sha256::new();
    let address = address
        .map(|address| address.to_string())
        .unwrap_or_default();
    for part in [
        address.as_str(),
        record.build_id.as_deref().unwrap_or(""),
        &record.target_image,
        &record.container_image,
        &record.format,
        if record.cached { "cached" } else { "built" },
        if record.freeze { "freeze" } else { "" },
    ] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    hex::encode(&hash.finalize()[..6])
}

/// `GET /v1alpha2/container/{id}/status`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ContainerStatus {
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    build_id: Option<String>,
    status: &'static str,
    creation_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    details_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    succeeded: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

async fn container_status(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ContainerStatus>, ApiError> {
    let request = state
        .requests
        .get(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("container request {id}")))?;
    let build = match &request.build_id {
        Some(build_id) => state.store.build(build_id).await?,
        None => None,
    };
    let details_uri = build
        .as_ref()
        .map(|build| format!("{}/view/builds/{}", state.config.public_url(), build.id));
    let mut status = ContainerStatus {
        id: request.id.clone(),
        build_id: request.build_id.clone(),
        status: "DONE",
        creation_time: iso(request.created_at),
        details_uri: None,
        duration: Some(seconds(Utc::now() - request.created_at)),
        succeeded: Some(true),
        reason: None,
    };
    let Some(build) = build.filter(|_| !request.cached) else {
        return Ok(Json(status));
    };
    match build.status {
        BuildStatus::Pending | BuildStatus::Building => {
            status.status = if build.status == BuildStatus::Pending {
                "PENDING"
            } else {
                "BUILDING"
            };
            status.duration = None;
            status.succeeded = None;
        }
        BuildStatus::Done => {
            let finished = build.finished_at.unwrap_or_else(Utc::now);
            status.duration = Some(seconds(finished - request.created_at.min(build.created_at)));
            status.succeeded = Some(build.succeeded == Some(true));
            if build.succeeded != Some(true) {
                status.reason = Some(match &build.reason {
                    Some(reason) => {
                        let reason = crate::api::redact::public_text(&state.config, reason);
                        format!("Container build did not complete successfully: {reason}")
                    }
                    None => "Container build did not complete successfully".to_owned(),
                });
                status.details_uri = details_uri;
            }
        }
    }
    Ok(Json(status))
}

/// `GET /v1alpha2/container/{id}`: the stored request.
async fn container_record(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ContainerRequest>, ApiError> {
    state
        .requests
        .get(&id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("container request {id}")))
}

async fn find_build(state: &AppState, id: &str) -> Result<BuildRecord, ApiError> {
    state
        .public_build(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("build {id}")))
}

/// `GET /v1alpha1/builds/{id}/status`, the older status Nextflow falls back on.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct BuildStatusResponse {
    id: String,
    status: &'static str,
    start_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    succeeded: Option<bool>,
}

async fn build_status(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<BuildStatusResponse>, ApiError> {
    let build = find_build(&state, &id).await?;
    let start = build.started_at.unwrap_or(build.created_at);
    let done = build.status == BuildStatus::Done;
    Ok(Json(BuildStatusResponse {
        id: build.id,
        status: if done { "COMPLETED" } else { "PENDING" },
        start_time: iso(start),
        duration: build
            .finished_at
            .filter(|_| done)
            .map(|end| (end - start).as_seconds_f64()),
        succeeded: build.succeeded.filter(|_| done),
    }))
}

/// `GET /v1alpha1/builds/{id}/logs`: the log so far, as text.
async fn build_logs(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    find_build(&state, &id).await?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        axum::body::Body::from_stream(log_pages(state.store.clone(), id)),
    )
        .into_response())
}

/// The log as it is now, page by page from the store: however long it is, one page at a
/// time is in memory.
fn log_pages(
    store: std::sync::Arc<dyn crate::store::Store>,
    id: String,
) -> impl futures_util::Stream<Item = Result<String, crate::store::StoreError>> {
    futures_util::stream::try_unfold(0u64, move |offset| {
        let store = store.clone();
        let id = id.clone();
        async move {
            let page = store.read_log(&id, offset).await?;
            Ok((!page.text.is_empty()).then(|| {
                let next = page.next_offset;
                (page.text, next)
            }))
        }
    })
}

/// `GET /v1alpha1/builds/{id}/condalock`: the build's lock (conda explicit file, then wheels).
async fn build_lock(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let build = find_build(&state, &id).await?;
    build
        .lock
        .map(text)
        .ok_or_else(|| ApiError::not_found(format!("a lock of build {id} (it has not succeeded)")))
}

/// `GET /v1alpha1/builds/{id}`: the build record in Wave's field names.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct WaveBuildRecord {
    build_id: String,
    docker_file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    conda_file: Option<String>,
    target_image: String,
    start_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_status: Option<i32>,
    platform: String,
    format: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<String>,
    status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

async fn build_record(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<WaveBuildRecord>, ApiError> {
    let build = find_build(&state, &id).await?;
    let start = build.started_at.unwrap_or(build.created_at);
    let platform = build
        .platforms()
        .iter()
        .map(|platform| platform.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let format = match build.format() {
        Format::Sif => "SINGULARITY",
        Format::Docker => "DOCKER",
    };
    Ok(Json(WaveBuildRecord {
        docker_file: build.containerfile,
        conda_file: Some(build.environment).filter(|text| !text.is_empty()),
        target_image: build.image.to_string(),
        start_time: iso(start),
        duration: build.finished_at.map(|end| (end - start).as_seconds_f64()),
        exit_status: build.succeeded.map(|ok| if ok { 0 } else { 1 }),
        platform,
        format,
        digest: build.digest,
        status: build.status.to_string(),
        reason: build
            .reason
            .map(|reason| crate::api::redact::public_text(&state.config, &reason)),
        build_id: build.id,
    }))
}

/// `GET /service-info`.
async fn service_info() -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "serviceInfo": {
            "version": env!("CARGO_PKG_VERSION"),
            "commitId": option_env!("KILN_COMMIT").unwrap_or("unknown"),
        }
    }))
}

fn text(body: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

/// An ISO-8601 instant, as Nextflow's `Instant.parse` reads it.
fn iso(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Decimal seconds with nanoseconds, Wave's (Jackson's) form of a duration.
fn seconds(duration: chrono::TimeDelta) -> String {
    let nanos = duration.num_nanoseconds().unwrap_or(i64::MAX).max(0);
    format!("{}.{:09}", nanos / 1_000_000_000, nanos % 1_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_take_waves_aliases() {
        assert_eq!(platforms(None).unwrap(), Vec::<String>::new());
        assert_eq!(
            platforms(Some("linux/amd64,linux/arm64")).unwrap(),
            ["linux/amd64", "linux/arm64"]
        );
        assert_eq!(platforms(Some("aarch64")).unwrap(), ["linux/arm64"]);
        assert_eq!(platforms(Some("linux/arm64/v8")).unwrap(), ["linux/arm64"]);
        let many = ["linux/amd64"; MAX_PLATFORMS + 1].join(",");
        let err = platforms(Some(&many)).unwrap_err();
        assert!(err.message.contains("9 platforms"), "{}", err.message);
        let err = platforms(Some("linux/s390x")).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert!(err.message.contains("containerPlatform"), "{}", err.message);
    }

    #[test]
    fn environment_files_become_entries() {
        let yaml = "channels:\n  - conda-forge\n  - bioconda\ndependencies:\n  - bioconda::samtools=1.21\n  - pip\n  - pip:\n    - requests==2.32.3\n";
        let encoded = base64::engine::general_purpose::STANDARD.encode(yaml);
        let (entries, channels) = environment_entries(&encoded).unwrap();
        assert_eq!(
            entries,
            ["bioconda::samtools=1.21", "pip", "pip:requests==2.32.3"]
        );
        assert_eq!(channels, ["conda-forge", "bioconda"]);
        assert!(environment_entries("not base64!").is_err());
    }

    #[test]
    fn durations_are_decimal_seconds() {
        assert_eq!(
            seconds(chrono::TimeDelta::milliseconds(123_914)),
            "123.914000000"
        );
        assert_eq!(seconds(chrono::TimeDelta::seconds(-1)), "0.000000000");
    }
}

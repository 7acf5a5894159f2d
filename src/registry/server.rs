//! axum handlers: one catch-all route under `/v2/` whose path is parsed by
//! [`super::path`] and dispatched on (method, route) to [`Storage`].
//! Reads are anonymous; every write needs HTTP Basic credentials or a push token, and writes
//! into kiln's own namespaces need kiln's builders or an operator.
//!
//! Next to `/v2/`, `/blobs/sha256/<aa>/<hex>/data` serves any stored blob by its digest alone,
//! the shape of docker/distribution's storage layout that Seqera Containers links to: plain
//! https downloads (`singularity pull https://…`, curl) of SIF files, no registry protocol.

use std::collections::HashMap;
use std::io::SeekFrom;
use std::path::Path;
use std::time::SystemTime;

use axum::body::{Body, to_bytes};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use super::RegistryState;
use super::auth::{self, Access, Identity, Role};
use super::error::{ErrorCode, RegistryError, Result};
use super::manifest::{MAX_MANIFEST_SIZE, OCI_INDEX};
use super::path::{self, Digest, Route};

const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
const CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
const UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");
const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
const OCI_FILTERS: HeaderName = HeaderName::from_static("oci-filters-applied");

/// The registry's routes (`/v2/` and everything below it).
pub fn router(state: RegistryState) -> Router {
    Router::new()
        .route("/v2", get(base))
        .route("/v2/", get(base))
        .route("/v2/{*rest}", any(dispatch))
        .route(auth::TOKEN_PATH, get(token))
        .route("/blobs/{*rest}", get(download))
        .with_state(state)
}

/// Where the download links live; [`blob_download_path`] builds them.
const DOWNLOAD_PREFIX: &str = "/blobs/sha256/";

/// What a download link looks like, told to whoever follows a malformed one.
const DOWNLOAD_SHAPE: &str =
    "blob links look like /blobs/sha256/<first 2 hex digits>/<64 lowercase hex digits>/data";

/// The download path (`/blobs/sha256/<aa>/<hex>/data`) of blob `digest` (`sha256:<hex>`), for
/// putting next to an image's `oras://` reference: a plain https URL that `singularity pull`,
/// curl or a browser can fetch without speaking the registry protocol. `None` if `digest` is
/// not a sha256 digest.
pub fn blob_download_path(digest: &str) -> Option<String> {
    let d = Digest::parse(digest).ok()?;
    let hex = d.hex();
    Some(format!("{DOWNLOAD_PREFIX}{}/{hex}/data", &hex[..2]))
}

/// The digest a download path names: `sha256/<aa>/<hex>/data` (after `/blobs/`), where `aa`
/// repeats the first two digits of `hex` as in docker/distribution's layout. Anything else names
/// no blob.
pub fn parse_download_path(rest: &str) -> Option<Digest> {
    let mut parts = rest.split('/');
    let (Some("sha256"), Some(prefix), Some(hex), Some("data"), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let d = Digest::from_hex(hex)?;
    (hex.get(..2) == Some(prefix)).then_some(d)
}

/// `GET`/`HEAD /blobs/sha256/<aa>/<hex>/data`: any stored blob, anonymously, with headers that
/// let caches keep it forever (the URL names the content, so it can never change).
///
/// A malformed link answers 404 like an unknown blob, not 400: either way nothing is there, and
/// the message tells the two apart (and what a link should look like).
async fn download(
    State(state): State<RegistryState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let served = async {
        // The raw path, not a percent-decoded one: an escaped link is not a blob's address.
        let rest = uri.path().strip_prefix("/blobs/").unwrap_or_default();
        let d = parse_download_path(rest).ok_or_else(|| {
            RegistryError::new(
                ErrorCode::BlobUnknown,
                format!("{} is not a blob link: {DOWNLOAD_SHAPE}", uri.path()),
            )
        })?;
        let (path, size) = state
            .storage()
            .blob_file(&d)
            .await?
            .ok_or_else(|| blob_unknown(&d))?;
        let cache = vec![
            (header::ETAG, format!("\"{d}\"")),
            (
                header::CACHE_CONTROL,
                "public, max-age=31536000, immutable".to_owned(),
            ),
        ];
        serve_blob(&path, size, &d, &headers, method == Method::HEAD, cache).await
    };
    served.await.unwrap_or_else(IntoResponse::into_response)
}

fn blob_unknown(d: &Digest) -> RegistryError {
    RegistryError::new(ErrorCode::BlobUnknown, format!("blob {d} unknown"))
}

/// The API base check. Callers without valid credentials or token get a 401 with a Bearer
/// challenge: that is how clients learn where to get a token (anonymous reads still work).
async fn base(State(state): State<RegistryState>, headers: HeaderMap) -> Response {
    if !state.users().is_empty() && !auth::authenticated(state.users(), state.tokens(), &headers) {
        return unauthorized(&headers);
    }
    let mut resp = Json(json!({})).into_response();
    resp.headers_mut()
        .insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    resp
}

/// The token endpoint: a push token for valid credentials, a pull token for none, 401 for
/// wrong ones.
async fn token(State(state): State<RegistryState>, headers: HeaderMap) -> Response {
    let access = match auth::identify(state.users(), &headers) {
        Identity::Invalid => return unauthorized(&headers),
        Identity::Known { user, role } => Access::Write { user, role },
        Identity::Anonymous => Access::Read,
    };
    let token = state.tokens().issue(&access);
    Json(json!({
        "token": token,
        "access_token": token,
        "expires_in": state.tokens().lifetime().as_secs(),
        "issued_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    }))
    .into_response()
}

/// 401 UNAUTHORIZED with the challenge that leads to the token endpoint.
fn unauthorized(headers: &HeaderMap) -> Response {
    let mut resp =
        RegistryError::new(ErrorCode::Unauthorized, "authentication required").into_response();
    if let Ok(value) = HeaderValue::from_str(&auth::challenge(headers)) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, value);
    }
    resp
}

/// Read size when streaming blobs to clients.
const STREAM_BUFFER: usize = 512 << 10;

fn reply(status: StatusCode, headers: Vec<(HeaderName, String)>, body: Body) -> Result<Response> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    for (k, v) in headers {
        let v = HeaderValue::from_str(&v).map_err(|e| RegistryError::Internal(e.to_string()))?;
        resp.headers_mut().insert(k, v);
    }
    Ok(resp)
}

/// Reads and discards a request body that will not be used, up to a limit, so that the client
/// finishes sending and its keep-alive connection stays healthy. Past the limit the connection
/// is simply closed.
async fn drain(body: Body) {
    const DRAIN_LIMIT: usize = 64 << 20;
    let _ = to_bytes(body, DRAIN_LIMIT).await;
}

async fn dispatch(State(state): State<RegistryState>, req: Request) -> Response {
    handle(state, req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn handle(state: RegistryState, req: Request) -> Result<Response> {
    let (parts, body) = req.into_parts();
    let method = parts.method.clone();
    let reading = matches!(method, Method::GET | Method::HEAD);
    let access = state.access(&parts.headers);
    if !reading && !access.writes() {
        // Clients send the body before they see the 401 and retry with credentials on the
        // same connection; reading it keeps that connection usable.
        drain(body).await;
        return Ok(unauthorized(&parts.headers));
    }
    let rest = parts.uri.path().strip_prefix("/v2/").unwrap_or_default();
    let route = path::parse(rest).map_err(|err| {
        // A reference that cannot exist is, to a reader, simply not there.
        if reading && err.code() == Some(ErrorCode::ManifestInvalid) {
            RegistryError::new(ErrorCode::ManifestUnknown, "manifest unknown")
        } else {
            err
        }
    })?;
    let builder_or_operator = matches!(
        &access,
        Access::Write {
            role: auth::Role::Builder | auth::Role::Operator,
            ..
        }
    );
    if super::is_private(route.name()) && !builder_or_operator {
        // Users' build contexts: not there, to anyone else.
        drain(body).await;
        return Err(RegistryError::new(
            ErrorCode::NameUnknown,
            format!("repository {} unknown", route.name()),
        ));
    }
    if let Access::Write { user, role } = &access
        && !reading
        && let Err(err) = may_write(route.name(), user, *role)
    {
        drain(body).await;
        return Err(err);
    }
    let query: HashMap<String, String> = Query::try_from_uri(&parts.uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let q = |k: &str| query.get(k).map(String::as_str);
    let head = method == Method::HEAD;
    let st = state.storage();
    match (&method, route) {
        (&Method::GET | &Method::HEAD, Route::Manifest { name, reference }) => {
            let m = st.get_manifest(&name, &reference).await?;
            let headers = vec![
                (header::CONTENT_TYPE, m.media_type),
                (CONTENT_DIGEST, m.digest.to_string()),
                (header::CONTENT_LENGTH, m.bytes.len().to_string()),
            ];
            reply(
                StatusCode::OK,
                headers,
                if head {
                    Body::empty()
                } else {
                    Body::from(m.bytes)
                },
            )
        }
        (&Method::PUT, Route::Manifest { name, reference }) => {
            let ct = parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            let bytes = to_bytes(body, MAX_MANIFEST_SIZE).await.map_err(|_| {
                RegistryError::new(ErrorCode::SizeInvalid, "manifest too large or unreadable")
                    .with_status(StatusCode::PAYLOAD_TOO_LARGE)
            })?;
            let pushed = st.put_manifest(&name, &reference, ct, &bytes).await?;
            let mut headers = vec![
                (
                    header::LOCATION,
                    format!("/v2/{name}/manifests/{}", pushed.digest),
                ),
                (CONTENT_DIGEST, pushed.digest.to_string()),
            ];
            if let Some(s) = pushed.subject {
                headers.push((OCI_SUBJECT, s.to_string()));
            }
            reply(StatusCode::CREATED, headers, Body::empty())
        }
        (&Method::DELETE, Route::Manifest { name, reference }) => {
            st.delete_manifest(&name, &reference).await?;
            reply(StatusCode::ACCEPTED, vec![], Body::empty())
        }
        (&Method::GET | &Method::HEAD, Route::Blob { name, digest }) => {
            if head && access.writes() {
                st.refresh_link(&name, &digest).await?;
            }
            get_blob(&state, &name, &digest, &parts.headers, head).await
        }
        (&Method::DELETE, Route::Blob { name, digest }) => {
            st.unlink_blob(&name, &digest).await?;
            reply(StatusCode::ACCEPTED, vec![], Body::empty())
        }
        (&Method::POST, Route::UploadStart { name }) => {
            if let Some(d) = q("digest") {
                let d = Digest::parse(d)?;
                st.put_blob(&name, &d, body.into_data_stream()).await?;
                return blob_created(&name, &d);
            }
            if let (Some(m), Some(from)) = (q("mount"), q("from")) {
                let d = Digest::parse(m)?;
                if let Ok(from) = path::parse_name_str(from)
                    && st.mount(&from, &name, &d).await?
                {
                    return blob_created(&name, &d);
                }
            }
            // kiln's own builders are bounded by the number of workers.
            let owner = match &access {
                Access::Write { user, role } if *role != Role::Builder => {
                    Some((user.as_str(), state.max_upload_sessions()))
                }
                _ => None,
            };
            let id = st.start_upload(&name, owner).await?;
            reply(
                StatusCode::ACCEPTED,
                upload_headers(&name, &id, 0),
                Body::empty(),
            )
        }
        (&Method::GET, Route::Upload { name, session }) => {
            let offset = st.upload_offset(&name, &session).await?;
            reply(
                StatusCode::NO_CONTENT,
                upload_headers(&name, &session, offset),
                Body::empty(),
            )
        }
        (&Method::PATCH, Route::Upload { name, session }) => {
            let range = match parts.headers.get(header::CONTENT_RANGE) {
                Some(v) => Some(parse_content_range(v.to_str().unwrap_or_default())?),
                None => None,
            };
            let offset = st.upload_offset(&name, &session).await?;
            if range.is_some_and(|(a, _)| a != offset) {
                drain(body).await;
                let err = RegistryError::new(ErrorCode::BlobUploadInvalid, "chunk out of order")
                    .with_status(StatusCode::RANGE_NOT_SATISFIABLE);
                let mut resp = err.into_response();
                for (k, v) in upload_headers(&name, &session, offset) {
                    if let Ok(v) = HeaderValue::from_str(&v) {
                        resp.headers_mut().insert(k, v);
                    }
                }
                return Ok(resp);
            }
            let len = range.map(|(a, b)| b - a + 1);
            let start = range.map(|(a, _)| a);
            let stream = body.into_data_stream();
            let offset = st
                .append_upload(&name, &session, start, len, stream)
                .await?;
            reply(
                StatusCode::ACCEPTED,
                upload_headers(&name, &session, offset),
                Body::empty(),
            )
        }
        (&Method::PUT, Route::Upload { name, session }) => {
            let d = q("digest").ok_or_else(|| {
                RegistryError::new(ErrorCode::DigestInvalid, "digest parameter missing")
            })?;
            let d = Digest::parse(d)?;
            st.finish_upload(&name, &session, &d, body.into_data_stream())
                .await?;
            blob_created(&name, &d)
        }
        (&Method::DELETE, Route::Upload { name, session }) => {
            st.cancel_upload(&name, &session).await?;
            reply(StatusCode::NO_CONTENT, vec![], Body::empty())
        }
        (&Method::GET | &Method::HEAD, Route::Tags { name }) => {
            list_tags(&state, &name, q("n"), q("last")).await
        }
        (&Method::GET | &Method::HEAD, Route::Referrers { name, digest }) => {
            // Media types have no spaces but often a `+` (`application/spdx+json`), which
            // form decoding turns into a space when a client does not percent-encode it.
            let filter = q("artifactType")
                .filter(|a| !a.is_empty())
                .map(|a| a.replace(' ', "+"));
            let manifests = st.referrers(&name, &digest, filter.as_deref()).await?;
            let body =
                json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests });
            let mut headers = vec![(header::CONTENT_TYPE, OCI_INDEX.to_owned())];
            if filter.is_some() {
                headers.push((OCI_FILTERS, "artifactType".to_owned()));
            }
            reply(StatusCode::OK, headers, Body::from(body.to_string()))
        }
        (m, r) => Err(RegistryError::new(
            ErrorCode::Unsupported,
            format!("{m} is not supported on {}", route_kind(&r)),
        )),
    }
}

/// Whether `user` in `role` may write to repository `name`: DENIED for ordinary users in
/// kiln's own namespaces, whose content kiln serves as its own (cached builds, bases, library).
fn may_write(name: &str, user: &str, role: Role) -> Result<()> {
    match auth::reserved_namespace(name) {
        Some(namespace) if !role.writes_reserved() => Err(RegistryError::new(
            ErrorCode::Denied,
            format!(
                "repository {name} is in {namespace}/, one of kiln's own namespaces ({}): only \
                 kiln's builders and registry operators write there; {user} may push to \
                 repositories outside them, e.g. {user}/{}",
                auth::RESERVED_NAMESPACES
                    .map(|n| format!("{n}/"))
                    .join(", "),
                name.rsplit('/').next().unwrap_or(name)
            ),
        )),
        _ => Ok(()),
    }
}

fn route_kind(r: &Route) -> &'static str {
    match r {
        Route::Manifest { .. } => "manifests",
        Route::Blob { .. } => "blobs",
        Route::UploadStart { .. } | Route::Upload { .. } => "uploads",
        Route::Tags { .. } => "tags",
        Route::Referrers { .. } => "referrers",
    }
}

fn blob_created(name: &str, d: &Digest) -> Result<Response> {
    let headers = vec![
        (header::LOCATION, format!("/v2/{name}/blobs/{d}")),
        (CONTENT_DIGEST, d.to_string()),
    ];
    reply(StatusCode::CREATED, headers, Body::empty())
}

fn upload_headers(name: &str, id: &str, offset: u64) -> Vec<(HeaderName, String)> {
    vec![
        (header::LOCATION, format!("/v2/{name}/blobs/uploads/{id}")),
        (header::RANGE, format!("0-{}", offset.saturating_sub(1))),
        (UPLOAD_UUID, id.to_owned()),
    ]
}

/// `a-b`, also accepting `bytes a-b/total`.
fn parse_content_range(v: &str) -> Result<(u64, u64)> {
    let bad = || {
        RegistryError::new(
            ErrorCode::BlobUploadInvalid,
            format!("invalid Content-Range {v:?}"),
        )
    };
    let v = v
        .trim()
        .trim_start_matches("bytes ")
        .trim_start_matches("bytes=");
    let v = v.split('/').next().unwrap_or_default();
    let (a, b) = v.split_once('-').ok_or_else(bad)?;
    let (a, b): (u64, u64) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    if b < a {
        return Err(bad());
    }
    Ok((a, b))
}

/// Parses a single `Range: bytes=...` against `size`: `None` = whole blob,
/// `Some(Err(()))` = unsatisfiable, `Some(Ok((start, end)))` inclusive.
fn parse_range(headers: &HeaderMap, size: u64) -> Option<std::result::Result<(u64, u64), ()>> {
    let spec = headers
        .get(header::RANGE)?
        .to_str()
        .ok()?
        .trim()
        .strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let range = match (a.trim(), b.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().ok()?;
            if n == 0 || size == 0 {
                return Some(Err(()));
            }
            (size.saturating_sub(n), size - 1)
        }
        (a, "") => (a.parse().ok()?, size.saturating_sub(1)),
        (a, b) => {
            let (a, b): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
            if b < a {
                return None;
            }
            (a, b.min(size.saturating_sub(1)))
        }
    };
    if range.0 >= size {
        Some(Err(()))
    } else {
        Some(Ok(range))
    }
}

async fn get_blob(
    state: &RegistryState,
    name: &str,
    d: &Digest,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response> {
    let (path, size) = state
        .storage()
        .blob(name, d)
        .await?
        .ok_or_else(|| blob_unknown(d))?;
    serve_blob(&path, size, d, headers, head, Vec::new()).await
}

/// An HTTP date (IMF-fixdate, RFC 9110 §5.6.7), as `Last-Modified` wants it.
fn http_date(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t)
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

/// Answers a `GET`/`HEAD` of stored blob `d` (file `path`, `size` bytes) for both blob routes:
/// the whole file (200) or the one byte range asked for (206, 416 if it lies past the end),
/// plus `extra` headers.
///
/// `Last-Modified` is the file's mtime: a blob is written once (to a temporary file renamed into
/// place) and never rewritten, so it is stable; `singularity pull https://…` keys its cache on it.
async fn serve_blob(
    path: &Path,
    size: u64,
    d: &Digest,
    headers: &HeaderMap,
    head: bool,
    extra: Vec<(HeaderName, String)>,
) -> Result<Response> {
    let mut file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        // Removed since it was looked up.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(blob_unknown(d)),
        Err(e) => return Err(e.into()),
    };
    let mut out = vec![
        (CONTENT_DIGEST, d.to_string()),
        (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
        (header::ACCEPT_RANGES, "bytes".to_owned()),
    ];
    if let Ok(modified) = file.metadata().await?.modified() {
        out.push((header::LAST_MODIFIED, http_date(modified)));
    }
    out.extend(extra);
    let (status, start, len) = match parse_range(headers, size) {
        None => (StatusCode::OK, 0, size),
        Some(Err(())) => {
            out.push((header::CONTENT_RANGE, format!("bytes */{size}")));
            return reply(StatusCode::RANGE_NOT_SATISFIABLE, out, Body::empty());
        }
        Some(Ok((a, b))) => {
            out.push((header::CONTENT_RANGE, format!("bytes {a}-{b}/{size}")));
            (StatusCode::PARTIAL_CONTENT, a, b - a + 1)
        }
    };
    out.push((header::CONTENT_LENGTH, len.to_string()));
    if head {
        return reply(status, out, Body::empty());
    }
    file.seek(SeekFrom::Start(start)).await?;
    // Large reads: the default 4 KiB buffer costs one blocking-pool round trip per 4 KiB.
    let body = Body::from_stream(ReaderStream::with_capacity(file.take(len), STREAM_BUFFER));
    reply(status, out, body)
}

async fn list_tags(
    state: &RegistryState,
    name: &str,
    n: Option<&str>,
    last: Option<&str>,
) -> Result<Response> {
    let mut tags = state.storage().list_tags(name).await?;
    if let Some(last) = last {
        tags.retain(|t| t.as_str() > last);
    }
    let mut headers = vec![(header::CONTENT_TYPE, "application/json".to_owned())];
    if let Some(n) = n.and_then(|n| n.parse::<usize>().ok())
        && tags.len() > n
    {
        tags.truncate(n);
        if let Some(last) = tags.last() {
            headers.push((
                header::LINK,
                format!("</v2/{name}/tags/list?n={n}&last={last}>; rel=\"next\""),
            ));
        }
    }
    let body = json!({ "name": name, "tags": tags });
    reply(StatusCode::OK, headers, Body::from(body.to_string()))
}

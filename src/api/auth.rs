//! Who is calling, as kiln's own APIs see it: one reading of `Authorization: Bearer …`,
//! operators' tokens (`api.tokens`) compared in constant time, library users' tokens looked up
//! by their hash, and the extractors handlers take:
//!
//! - [`Caller`]: anyone asking for an image, with their address and whether their token lifts
//!   the anonymous allowance;
//! - [`LibraryUser`]: a user with a valid token (401 without one); handlers that word the 401
//!   themselves (remote builds, cancelling a build) call [`authenticate`];
//! - [`LibraryWriter`]: a library user about to write, checked against the entity written.
//!
//! The embedded registry (`/v2/`) has its own credentials and tokens, in
//! [`crate::registry::auth`].

use std::net::IpAddr;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};

use crate::api::accounts::{OPERATOR, login_needed, token_hash};
use crate::api::error::ApiError;
use crate::api::{App, AppState};
use crate::credentials::authorization;
use crate::store::Submitter;

/// The token of an `Authorization: Bearer …` header. The scheme may come in any casing
/// (Singularity's library client sends `Bearer`, its build client `BEARER`); an empty token is
/// none.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    authorization(headers, "Bearer").filter(|token| !token.is_empty())
}

/// Whether `token` is one of the operators' tokens (`api.tokens`). Every configured token is
/// compared, each in constant time.
fn is_operator_token(app: &App, token: &str) -> bool {
    app.config
        .api
        .tokens
        .iter()
        .fold(false, |found, configured| found | configured.matches(token))
}

/// Who sent a request, as its token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct User {
    /// The user name, which is also the library entity the user may write under; [`OPERATOR`]
    /// for an operator.
    pub name: String,
    /// A token from `api.tokens`: may write anywhere.
    pub operator: bool,
}

impl User {
    /// Whether this user may create and change things under library entity `entity`.
    pub(crate) fn may_write(&self, entity: &str) -> bool {
        self.operator || self.name == entity
    }
}

/// The user whose token came as `Authorization: Bearer <token>` ([`bearer`]). A token from
/// `api.tokens` is the operator ([`OPERATOR`]); a token kiln made is its user.
///
/// `Ok(None)` when there is no such header or the token is not valid: callers decide whether
/// that is a 401. `Err` only when the store fails.
pub(crate) async fn authenticate(app: &App, headers: &HeaderMap) -> Result<Option<User>, ApiError> {
    match bearer(headers) {
        Some(token) => user_of(app, token).await,
        None => Ok(None),
    }
}

/// The user `token` belongs to, if it is valid.
pub(crate) async fn user_of(app: &App, token: &str) -> Result<Option<User>, ApiError> {
    if is_operator_token(app, token) {
        return Ok(Some(User {
            name: OPERATOR.to_owned(),
            operator: true,
        }));
    }
    // Looked up by hash: what the comparison could leak is the hash, not the token.
    let user = app.store.token_user(&token_hash(token)).await?;
    Ok(user.map(|name| User {
        name,
        operator: false,
    }))
}

/// A user with a valid token; without one the request is answered 401, saying where to get
/// one. Handlers that word that 401 themselves call [`authenticate`].
#[derive(Debug)]
pub(crate) struct LibraryUser(pub User);

impl FromRequestParts<AppState> for LibraryUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match authenticate(state, &parts.headers).await? {
            Some(user) => Ok(LibraryUser(user)),
            None => Err(login_needed(state)),
        }
    }
}

/// The user behind a library write: a request without a valid token is answered 401, saying
/// where to get one; [`LibraryWriter::check`] answers 403 outside the user's entity.
#[derive(Debug)]
pub(crate) struct LibraryWriter(pub User);

impl FromRequestParts<AppState> for LibraryWriter {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let LibraryUser(user) = LibraryUser::from_request_parts(parts, state).await?;
        Ok(LibraryWriter(user))
    }
}

impl LibraryWriter {
    /// 403 unless the user may write under `entity`.
    pub(crate) fn check(&self, entity: &str) -> Result<(), ApiError> {
        if self.0.may_write(entity) {
            return Ok(());
        }
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "`{}` may write under the entity `{}` only, not under `{entity}`",
                self.0.name, self.0.name
            ),
        ))
    }
}

/// Who is asking for an image: their address, and whether they showed a configured token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The client's address, when the server knows it.
    pub address: Option<IpAddr>,
    /// A configured token came with the request: no rate limit.
    pub trusted: bool,
    /// sha256 (hex) of the token the request came with, if any; not checked yet.
    pub token_hash: Option<String>,
}

impl Caller {
    /// The caller of a request with `headers` from `address`; `body_token` is a token sent in
    /// the body (Wave's `towerAccessToken`).
    pub fn new(
        app: &App,
        headers: &HeaderMap,
        address: Option<IpAddr>,
        body_token: Option<&str>,
    ) -> Caller {
        let bearer = bearer(headers);
        let known = |token: &str| is_operator_token(app, token);
        Caller {
            address,
            trusted: bearer.is_some_and(known) || body_token.is_some_and(known),
            token_hash: bearer
                .or(body_token)
                .filter(|token| !token.is_empty())
                .map(token_hash),
        }
    }

    /// Who the store records as a new build's submitter: the token only when it is a real
    /// one (configured, or a library user's), so a made-up token owns nothing.
    pub(super) async fn submitter(&self, app: &App) -> Result<Submitter, ApiError> {
        let token_hash = match &self.token_hash {
            Some(hash) if self.trusted || app.store.token_user(hash).await?.is_some() => {
                Some(hash.clone())
            }
            _ => None,
        };
        Ok(Submitter {
            token_hash,
            address: self.address.map(|address| address.to_string()),
        })
    }
}

/// The caller of a request whose token, if any, is in its headers.
impl FromRequestParts<AppState> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let ClientAddress(address) = ClientAddress::from_request_parts(parts, state).await?;
        Ok(Caller::new(state, &parts.headers, address, None))
    }
}

/// The client's address when the server was started with connection info (`kiln serve`
/// is); `None` otherwise, which then counts as one shared anonymous client.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddress(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddress(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|info| info.0.ip()),
        ))
    }
}

/// Lets a request that runs a user's recipe (Wave's `containerFile`) through only with a valid
/// token — an operator's from `api.tokens` or a library user's from `/auth/tokens`, sent as
/// `Authorization: Bearer …` or as Wave's `towerAccessToken` (`body_token`) — unless
/// `api.anonymous_recipes` lets anyone in. Recipes are strangers' code run on kiln's machines;
/// package requests run none and never come here.
pub async fn require_recipe_token(
    state: &AppState,
    headers: &HeaderMap,
    body_token: Option<&str>,
) -> Result<(), ApiError> {
    if state.config.api.anonymous_recipes {
        return Ok(());
    }
    if authenticate(state, headers).await?.is_some() {
        return Ok(());
    }
    if let Some(token) = body_token.map(str::trim).filter(|token| !token.is_empty())
        && user_of(state, token).await?.is_some()
    {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNAUTHORIZED,
        format!(
            "a `containerFile` runs its commands on kiln's build machines, so it needs a \
             token: get one at {}/auth/tokens (or ask the operator for one), and send it as \
             `Authorization: Bearer <token>` or, from Nextflow, as `tower.accessToken`",
            state.config.public_url()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use axum::http::header;

    use super::*;

    #[test]
    fn bearer_tokens_in_any_casing() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, value.parse().unwrap());
            bearer(&headers).map(str::to_owned)
        };
        assert_eq!(with("Bearer abc").as_deref(), Some("abc"));
        assert_eq!(with("BEARER abc").as_deref(), Some("abc"));
        assert_eq!(with("bEaReR  abc ").as_deref(), Some("abc"));
        assert_eq!(with("Basic abc"), None);
        assert_eq!(with("Bearer "), None);
        assert_eq!(with("Bearerabc"), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }
}

//! Accounts of the Singularity library API: who holds which user name, the tokens that prove it,
//! the page where people get one, and what `singularity remote add|login|status` asks for
//! (reference §1.2): service discovery at `/assets/config/config.prod.json` and
//! `/v1/token-status`.
//!
//! A user name is a library entity name (`library://<user>/…`, see [`is_library_name`]); a user
//! may write under that entity only. Who gets a token at `/auth/tokens`:
//!
//! - a name nobody holds yet goes to whoever asks for it first, when `api.open_signup` is true
//!   (the default);
//! - for a name someone holds, the form needs a valid token of that user (its "current token"
//!   field) to make another one, e.g. for a second machine;
//! - an operator — a token from `api.tokens` in the same field — makes tokens for any name;
//!   with `open_signup` false only operators do (also with `kiln token create`);
//! - `library` is kiln's own entity, where its SIFs live: only the operators' configured tokens
//!   act as `library`, no token is ever made for it.
//!
//! Tokens are `kiln_` and 64 hex digits (two v4 UUIDs' worth of randomness); the store keeps
//! only their sha256, so a token is shown once. Depends on `store` and `config` through
//! [`App`]; who a token belongs to is decided in [`crate::api::auth`].

use askama::Template;
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use chrono::Utc;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::api::auth::{LibraryUser, user_of};
use crate::api::error::ApiError;
use crate::api::web::csrf::{self, FormToken};
use crate::api::web::views;
use crate::api::{App, AppState};
use crate::store::{Store, StoreError};

/// The user operators act as, with a token from `api.tokens`: the entity kiln's own SIFs are
/// under (`library://library/default/<name>`).
pub use crate::registry::LIBRARY_OPERATOR as OPERATOR;

/// Longest user (and library entity, collection, container) name.
pub const MAX_NAME_LEN: usize = 64;

/// What the store keeps of a token (or an upload URL's secret): its sha256, as hex.
pub(crate) fn token_hash(token: &str) -> String {
    hex::encode(&Sha256::digest(token.as_bytes())[..])
}

/// 32 random bytes as 64 hex digits (from two v4 UUIDs: 244 random bits).
pub(crate) fn new_secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Whether `name` may name a user, and so a library entity, collection or container:
/// lowercase letters and digits in groups separated by one `.`, `_` or `-`, at most
/// [`MAX_NAME_LEN`] characters (`^[a-z0-9]+(?:[._-][a-z0-9]+)*$`). Every such name is also a
/// valid OCI repository path component.
pub fn is_library_name(name: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_NAME_LEN
        && alnum(bytes[0])
        && alnum(bytes[bytes.len() - 1])
        && bytes
            .windows(2)
            .all(|pair| alnum(pair[0]) || alnum(pair[1]))
        && bytes.iter().all(|&b| alnum(b) || b"._-".contains(&b))
}

/// Why a token could not be made.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error(
        "`{0}` is not a user name: use lowercase letters and digits, separated by single `.`, \
         `_` or `-`, at most 64 characters"
    )]
    InvalidName(String),
    #[error(
        "`library` is kiln's own entity: operators act as it with a token from kiln's \
         configuration (`api.tokens`), no token is made for it"
    )]
    Reserved,
    #[error("kiln could not record the token")]
    Store(#[source] StoreError),
}

/// Makes a token for `user` and records its hash, claiming the name if nobody held it. Checks
/// the name, not who asks: callers decide that (the page by its policy, `kiln token create` by
/// being run on the server).
pub async fn create_token(store: &dyn Store, user: &str) -> Result<String, AccountError> {
    if !is_library_name(user) {
        return Err(AccountError::InvalidName(user.to_owned()));
    }
    if user == OPERATOR {
        return Err(AccountError::Reserved);
    }
    let token = format!("kiln_{}", new_secret());
    store
        .add_token(&token_hash(&token), user, Utc::now())
        .await
        .map_err(AccountError::Store)?;
    Ok(token)
}

/// Discovery, token check and the token page.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/assets/config/config.prod.json", get(discovery))
        .route(
            "/v1/token-status",
            get(token_status).layer(axum::middleware::map_response(
                crate::api::error::sylabs_shape,
            )),
        )
        .route("/auth/tokens", get(token_page).post(token_form))
}

/// Where Singularity finds each service after `singularity remote add NAME https://HOST`: all
/// of them here. Every top-level value must be an object with a `uri` (reference §1.2).
async fn discovery(State(state): State<AppState>) -> Json<Value> {
    let uri = state.config.public_url();
    Json(json!({
        "libraryAPI": {"uri": uri},
        "builderAPI": {"uri": uri},
        "keystoreAPI": {"uri": uri},
        "tokenAPI": {"uri": uri},
    }))
}

/// `singularity remote login|status`: 200 for a valid token, 401 otherwise.
async fn token_status(LibraryUser(user): LibraryUser) -> Json<Value> {
    Json(json!({"data": {"status": "valid", "user": user.name}}))
}

/// The 401 of a request without a valid token, saying where to get one.
pub(super) fn login_needed(app: &App) -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        format!(
            "this needs a valid token (Authorization: Bearer …): get one at {}/auth/tokens and \
             log in with `singularity remote login`",
            app.config.public_url()
        ),
    )
}

/// The token page; see the module documentation for who gets one.
#[derive(Debug, Template)]
#[template(path = "tokens.html")]
struct TokensPage {
    /// The user name typed, kept after a refusal.
    user: String,
    /// Why the user name was refused.
    user_error: Option<String>,
    /// Why the current token was refused, or why one is needed.
    token_error: Option<String>,
    /// Whether names nobody holds go to whoever asks first.
    open_signup: bool,
    /// What to tell `singularity remote add`.
    public_url: String,
    /// The token just made, shown once.
    created: Option<Created>,
    /// The form's CSRF token ([`csrf`]).
    form_token: String,
}

#[derive(Debug)]
struct Created {
    user: String,
    token: String,
}

impl TokensPage {
    fn new(app: &App, form_token: &FormToken) -> Self {
        TokensPage {
            form_token: form_token.field.clone(),
            user: String::new(),
            user_error: None,
            token_error: None,
            open_signup: app.config.api.open_signup,
            public_url: app.config.public_url(),
            created: None,
        }
    }
}

async fn token_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let token = state.forms.issue(&headers);
    token.attach(views::page(
        StatusCode::OK,
        &TokensPage::new(&state, &token),
    ))
}

/// The form as posted: `user` and, for a name already held, `current_token`.
#[derive(Debug, Default, PartialEq, Eq)]
struct TokenForm {
    user: String,
    current_token: Option<String>,
}

impl TokenForm {
    fn parse(body: &[u8]) -> Self {
        let mut form = TokenForm::default();
        for (key, value) in url::form_urlencoded::parse(body) {
            match key.as_ref() {
                "user" => value.trim().clone_into(&mut form.user),
                "current_token" if !value.trim().is_empty() => {
                    form.current_token = Some(value.trim().to_owned());
                }
                _ => {}
            }
        }
        form
    }
}

/// Which field of the form a refusal is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    User,
    Token,
}

/// A refused form: the status, the field at fault and why.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    field: Field,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, field: Field, message: impl Into<String>) -> Self {
        Refusal {
            status,
            field,
            message: message.into(),
        }
    }
}

impl From<ApiError> for Refusal {
    fn from(err: ApiError) -> Self {
        Refusal::new(err.status, Field::Token, err.message)
    }
}

async fn token_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(refused) = state
        .forms
        .verify(&headers, csrf::field_of(&body).as_deref())
    {
        return refused.page();
    }
    let token = state.forms.issue(&headers);
    let form = TokenForm::parse(&body);
    let mut page = TokensPage::new(&state, &token);
    match mint(&state, &form).await {
        Ok(token) => {
            page.created = Some(Created {
                user: form.user,
                token,
            });
            let mut response = views::page(StatusCode::OK, &page);
            // The token is in this page: no cache may keep it.
            response.headers_mut().insert(
                header::CACHE_CONTROL,
                header::HeaderValue::from_static("no-store"),
            );
            response
        }
        Err(refusal) => {
            page.user = form.user;
            match refusal.field {
                Field::User => page.user_error = Some(refusal.message),
                Field::Token => page.token_error = Some(refusal.message),
            }
            views::page(refusal.status, &page)
        }
    }
}

/// Applies the policy of the module documentation to a posted form.
async fn mint(app: &App, form: &TokenForm) -> Result<String, Refusal> {
    let name = form.user.as_str();
    if !is_library_name(name) {
        let message = AccountError::InvalidName(name.to_owned()).to_string();
        return Err(Refusal::new(StatusCode::BAD_REQUEST, Field::User, message));
    }
    if name == OPERATOR {
        let message = AccountError::Reserved.to_string();
        return Err(Refusal::new(StatusCode::FORBIDDEN, Field::User, message));
    }
    let forbidden = |message: String| Refusal::new(StatusCode::FORBIDDEN, Field::Token, message);
    let closed = || {
        forbidden(
            "sign-up is closed on this kiln: only an operator makes tokens (paste an operator \
             token here, or run `kiln token create` on the server)"
                .to_owned(),
        )
    };
    let asker = match &form.current_token {
        Some(token) => Some(user_of(app, token).await?.ok_or_else(|| {
            forbidden("the current token is not valid: paste a token kiln made".to_owned())
        })?),
        None => None,
    };
    match asker {
        Some(asker) if asker.operator => {}
        Some(_) if !app.config.api.open_signup => return Err(closed()),
        Some(asker) if asker.name == name => {}
        Some(asker) => {
            return Err(forbidden(format!(
                "the current token is `{}`'s, not `{name}`'s",
                asker.name
            )));
        }
        None if !app.config.api.open_signup => return Err(closed()),
        None => {
            if !app
                .store
                .claim_user(name, Utc::now())
                .await
                .map_err(ApiError::from)?
            {
                return Err(forbidden(format!(
                    "`{name}` is taken: to make another token for it, paste a current token \
                     of `{name}`; otherwise choose another name"
                )));
            }
        }
    }
    create_token(app.store.as_ref(), name)
        .await
        .map_err(|err| match err {
            AccountError::Store(err) => Refusal::from(ApiError::from(err)),
            other => Refusal::new(StatusCode::BAD_REQUEST, Field::User, other.to_string()),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_names() {
        for good in ["alice", "a", "a.b", "a_b-c", "0day", &"x".repeat(64)] {
            assert!(is_library_name(good), "{good}");
        }
        for bad in [
            "",
            "Alice",
            "a..b",
            "a-",
            "-a",
            "a__b",
            "a b",
            "a/b",
            "é",
            &"x".repeat(65),
        ] {
            assert!(!is_library_name(bad), "{bad}");
        }
    }

    #[test]
    fn tokens_are_random_and_kept_as_hashes() {
        let (a, b) = (new_secret(), new_secret());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn forms_trim_and_drop_empty_tokens() {
        assert_eq!(
            TokenForm::parse(b"user=+alice+&current_token="),
            TokenForm {
                user: "alice".into(),
                current_token: None,
            }
        );
        assert_eq!(
            TokenForm::parse(b"user=bob&current_token=kiln_1%2B2&x=y"),
            TokenForm {
                user: "bob".into(),
                current_token: Some("kiln_1+2".into()),
            }
        );
    }
}

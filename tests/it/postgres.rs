//! kiln serving from PostgreSQL (`database_url = postgres://…`): two kiln instances on one
//! database answer for each other's builds, as the nodes of a multi-node kiln do.
//!
//! No build runs here (no workers): what is checked is that the store is PostgreSQL's and shared.

use serde_json::{Value, json};

use crate::support::TestApp;
use crate::support::postgres::PostgresServer;

/// kiln without build workers, storing in the database at `url`, naming images after one public
/// registry host as every node of one kiln does.
async fn start(url: &str) -> TestApp {
    let url = url.to_owned();
    TestApp::start_with(move |config| {
        config.registry = "kiln.example".parse().expect("a registry host");
        config.database_url = Some(url.into());
        config.build.workers = 0;
        config.api.wait_for_build_ms = 0;
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_on_one_database_share_builds() {
    let server = PostgresServer::start();
    let url = server.url().await;
    let (a, b) = (start(&url).await, start(&url).await);
    for app in [&a, &b] {
        let health = reqwest::get(app.url("/health")).await.expect("GET /health");
        assert_eq!(health.status(), 200, "the store takes a write");
    }
    let request = json!({"packages": ["samtools=1.21"], "channels": ["bioconda"]});
    let client = reqwest::Client::new();
    let submit = |app: &TestApp| client.post(app.url("/api/v1/images")).json(&request).send();
    let first: Value = submit(&a).await.expect("POST").json().await.expect("JSON");
    let id = first["build"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{first}"));
    // The same request on the other instance joins the build (single flight across nodes) ...
    let second: Value = submit(&b).await.expect("POST").json().await.expect("JSON");
    assert_eq!(second["build"]["id"], id, "{second}");
    // ... which the other instance reads from the shared database.
    let build: Value = reqwest::get(b.url(&format!("/api/v1/builds/{id}")))
        .await
        .expect("GET build")
        .json()
        .await
        .expect("JSON");
    assert_eq!(build["id"], id, "{build}");
    assert_eq!(build["status"], "PENDING", "{build}");
    // Nothing went to a SQLite file.
    let rows: i64 = {
        use sqlx::Connection as _;
        let mut connection = sqlx::PgConnection::connect(&url).await.expect("connect");
        sqlx::query_scalar("SELECT count(*) FROM builds")
            .fetch_one(&mut connection)
            .await
            .expect("count")
    };
    assert_eq!(rows, 1);
}

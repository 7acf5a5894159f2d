//! kiln started in-process for HTTP tests.

use std::sync::Arc;

use kiln::api::{self, App, AppState};
use kiln::config::{Config, RegistryUser};
use kiln::registry::RegistryState;
use kiln::store::SqliteStore;

/// The registry user every test app accepts for pushes.
pub const PUSHER: (&str, &str) = ("kiln-test", "test-password");

/// kiln running in-process on a free loopback port, with its data in a temporary directory.
pub struct TestApp {
    pub address: std::net::SocketAddr,
    _data: tempfile::TempDir,
    server: tokio::task::JoinHandle<()>,
}

impl TestApp {
    pub async fn start() -> TestApp {
        let data = tempfile::tempdir().expect("temp dir");
        let mut config = Config {
            data_dir: data.path().to_owned(),
            ..Config::default()
        };
        config.embedded_registry.users = vec![RegistryUser {
            user: PUSHER.0.into(),
            password: PUSHER.1.into(),
        }];
        let store = SqliteStore::open(&config.database_path())
            .await
            .expect("store opens");
        let registry = RegistryState::new(config.registry_config())
            .await
            .expect("registry storage opens");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("local address");
        let router = api::router(AppState::new(App {
            config,
            store: Arc::new(store),
            registry,
        }));
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.expect("server runs");
        });
        TestApp {
            address,
            _data: data,
            server,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

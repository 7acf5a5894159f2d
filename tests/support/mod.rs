//! What the integration tests (`tests/it`) and the benchmarks (`benches/`) share: kiln started
//! in-process the way `kiln serve` starts it (here for tests, in `kiln_app` for benchmarks),
//! and the fixtures both build on. Each benchmark includes this whole module with
//! `#[path]`, so nothing is copied between them.

pub mod bench_base;
pub mod bench_channel;
pub mod big_channel;
pub mod cluster;
pub mod conda_channel;
pub mod debian_base;
pub mod debian_mirror;
pub mod distribution;
pub mod forms;
pub mod go_tools;
pub mod kiln_app;
pub mod native_build;
pub mod pip_builder;
pub mod postgres;
pub mod rng;
pub mod run_image;
pub mod snapshot;
pub mod wave;

use kiln::config::{Config, RegistryUser};

/// The registry operator every test app accepts for pushes, into kiln's own namespaces too
/// (bases under `kiln/base/…`, images made outside the app under `library/…`).
pub const PUSHER: (&str, &str) = ("kiln-test", "test-password");

/// An ordinary registry user of every test app: writes outside kiln's own namespaces.
pub const REGISTRY_USER: (&str, &str) = ("alice", "alice-password");

/// kiln running in-process on a free loopback port, with its data in a temporary directory.
#[derive(Debug)]
pub struct TestApp {
    pub address: std::net::SocketAddr,
    _data: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
}

impl TestApp {
    pub async fn start() -> TestApp {
        TestApp::start_with(|_| {}).await
    }

    /// Starts kiln with the test defaults changed by `configure`, which sees the address kiln
    /// will listen on (the registry host of image names).
    pub async fn start_with(configure: impl FnOnce(&mut Config)) -> TestApp {
        let data = tempfile::tempdir().expect("temp dir");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("local address");
        let mut config = Config {
            data_dir: data.path().to_owned(),
            registry: address.to_string().parse().expect("registry host"),
            ..Config::default()
        };
        config.embedded_registry.users = vec![
            RegistryUser::new(PUSHER.0, PUSHER.1, true),
            RegistryUser::new(REGISTRY_USER.0, REGISTRY_USER.1, false),
        ];
        configure(&mut config);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            kiln::server::run(config, listener, shutdown)
                .await
                .expect("kiln serves");
        });
        TestApp {
            address,
            _data: data,
            stop: Some(stop),
            server,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.server.abort();
    }
}

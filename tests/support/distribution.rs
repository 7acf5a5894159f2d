//! CNCF Distribution (Debian's `docker-registry`) on a free loopback port, with HTTP Basic auth.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `docker-registry`, killed on drop.
#[derive(Debug)]
pub struct Distribution {
    pub host: String,
    pub user: &'static str,
    pub password: &'static str,
    child: Child,
    _root: tempfile::TempDir,
}

impl Distribution {
    pub async fn start() -> Distribution {
        let (user, password) = ("distribution-test", "distribution-password");
        let root = tempfile::tempdir().expect("temp dir");
        let htpasswd = Command::new("htpasswd")
            .args(["-Bbn", user, password])
            .output()
            .expect("htpasswd (apache2-utils) is installed by scripts/test");
        assert!(htpasswd.status.success(), "htpasswd failed");
        std::fs::write(root.path().join("htpasswd"), &htpasswd.stdout).expect("write htpasswd");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let config = format!(
            "version: 0.1\nlog: {{level: error}}\nstorage:\n  filesystem: {{rootdirectory: {data}}}\n  delete: {{enabled: true}}\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: kiln-test\nauth:\n  htpasswd: {{realm: kiln-test, path: {htpasswd}}}\n",
            data = root.path().join("data").display(),
            htpasswd = root.path().join("htpasswd").display(),
        );
        let config_path = root.path().join("config.yml");
        std::fs::write(&config_path, config).expect("write config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry is installed by scripts/test");
        let host = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        let url = format!("http://{host}/v2/");
        while reqwest::get(&url).await.is_err() {
            assert!(Instant::now() < deadline, "docker-registry did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Distribution {
            host,
            user,
            password,
            child,
            _root: root,
        }
    }
}

impl Distribution {
    /// The URL kiln's `[external_registry] url` takes for this registry.
    pub fn url(&self) -> String {
        format!("http://{}", self.host)
    }

    /// The registry's process id, for benchmarks that read its CPU time.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs Distribution's offline garbage collection (`docker-registry garbage-collect
    /// --delete-untagged`) on its storage, as an operator would; nothing may push meanwhile.
    pub fn collect_garbage(&self) {
        let output = Command::new("docker-registry")
            .args(["garbage-collect", "--delete-untagged"])
            .arg(self._root.path().join("config.yml"))
            .output()
            .expect("docker-registry runs");
        assert!(
            output.status.success(),
            "garbage-collect failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// `user:password`, as `skopeo --creds` takes them.
    pub fn creds(&self) -> String {
        format!("{}:{}", self.user, self.password)
    }
}

impl Drop for Distribution {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

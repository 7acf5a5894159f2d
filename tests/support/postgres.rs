//! A throwaway PostgreSQL server for tests: Debian's `initdb` and `pg_ctl` (from
//! `/usr/lib/postgresql/<version>/bin`, installed by scripts/test) make a cluster in a temporary
//! directory and run it on a free loopback port, with trust authentication and without fsync.
//! PostgreSQL refuses to run as root, so when the tests do (CI) its commands run as the
//! unprivileged [`SERVER_USER`] (via `setpriv`), which owns the directory. Also compiled into
//! the library's unit tests (`#[path]`), so it uses nothing but kiln's dependencies.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use sqlx::Connection as _;

/// Who runs the server when the tests run as root: the user Debian's `postgresql` package
/// creates (scripts/test creates it where it is missing).
const SERVER_USER: &str = "postgres";

/// The superuser `initdb` makes; every test database belongs to it.
const SUPERUSER: &str = "kiln";

/// A PostgreSQL server on 127.0.0.1, stopped (and its files removed) on drop.
#[derive(Debug)]
pub struct PostgresServer {
    port: u16,
    bin: PathBuf,
    data: PathBuf,
    databases: AtomicU32,
    _root: tempfile::TempDir,
}

impl PostgresServer {
    /// Makes a cluster and starts it; waits until it takes connections.
    pub fn start() -> PostgresServer {
        let bin = bin_dir();
        let root = tempfile::tempdir().expect("temp dir");
        let owner = server_owner();
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(root.path(), Some(uid), Some(gid))
                .expect("give the server user its directory");
        }
        let data = root.path().join("data");
        let log = root.path().join("server.log");
        run(
            &bin,
            "initdb",
            root.path(),
            &[
                "-D".as_ref(),
                data.as_os_str(),
                format!("--username={SUPERUSER}").as_ref(),
                "--auth=trust".as_ref(),
                "--encoding=UTF8".as_ref(),
                "--locale=C".as_ref(),
                "--no-sync".as_ref(),
                "--no-instructions".as_ref(),
            ],
        );
        // A few tries: the free port found below may be taken before the server binds it.
        for _ in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .expect("free port")
                .port();
            // Later lines of postgresql.conf win. Only TCP on loopback (no Unix socket in a
            // shared directory); no fsync, as the data dies with the test; room for the pools
            // of the tests that share one server.
            let settings = format!(
                "\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = ''\n\
                 fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
                 max_connections = 300\nshared_buffers = 32MB\n"
            );
            let conf = data.join("postgresql.conf");
            let mut text = std::fs::read_to_string(&conf).expect("read postgresql.conf");
            text.push_str(&settings);
            std::fs::write(&conf, text).expect("write postgresql.conf");
            let started = command(&bin, "pg_ctl", root.path())
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "60", "start"])
                .output()
                .expect("run pg_ctl");
            if started.status.success() {
                return PostgresServer {
                    port,
                    bin,
                    data,
                    databases: AtomicU32::new(0),
                    _root: root,
                };
            }
            eprintln!(
                "pg_ctl start failed, trying another port: {}\n{}",
                String::from_utf8_lossy(&started.stderr),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        panic!(
            "PostgreSQL did not start; its log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// The server the tests running at this moment share, started by the first that asks; it
    /// stops when the last of them lets go. Each test still gets databases of its own.
    pub fn shared() -> Arc<PostgresServer> {
        static SHARED: Mutex<Weak<PostgresServer>> = Mutex::new(Weak::new());
        let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(server) = shared.upgrade() {
            return server;
        }
        let server = Arc::new(PostgresServer::start());
        *shared = Arc::downgrade(&server);
        server
    }

    /// The URL of a new, empty database on this server.
    pub async fn url(&self) -> String {
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        let name = format!("kiln_test_{n}");
        let base = format!("postgres://{SUPERUSER}@127.0.0.1:{}", self.port);
        let mut admin = sqlx::PgConnection::connect(&format!("{base}/postgres"))
            .await
            .expect("connect to the test server");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create a test database");
        admin.close().await.expect("disconnect");
        format!("{base}/{name}")
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let stopped = command(&self.bin, "pg_ctl", &self.data)
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        if let Err(err) = stopped {
            eprintln!("cannot stop the test PostgreSQL: {err}");
        }
    }
}

/// The `bin` directory of the newest PostgreSQL installed the Debian way.
fn bin_dir() -> PathBuf {
    let versions = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL (Debian's postgresql package) is installed by scripts/test");
    versions
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .max()
        .map(|(_, bin)| bin)
        .expect("no /usr/lib/postgresql/<version>/bin/initdb; scripts/test installs postgresql")
}

/// The uid and gid the server runs as: [`SERVER_USER`]'s when the tests run as root, none
/// (the tests' own) otherwise.
fn server_owner() -> Option<(u32, u32)> {
    if !rustix::process::geteuid().is_root() {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let entry = passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&SERVER_USER) && fields.len() > 3)
        .unwrap_or_else(|| {
            panic!("user {SERVER_USER} is missing; scripts/test creates it (useradd --system)")
        });
    let id = |field: &str| field.parse().expect("a numeric id in /etc/passwd");
    Some((id(entry[2]), id(entry[3])))
}

/// `program` from `bin`, run as the server's user, in `dir` (which that user can enter).
fn command(bin: &Path, program: &str, dir: &Path) -> Command {
    let mut command = match server_owner() {
        Some(_) => {
            let mut setpriv = Command::new("setpriv");
            setpriv.args([
                format!("--reuid={SERVER_USER}"),
                format!("--regid={SERVER_USER}"),
                "--clear-groups".into(),
            ]);
            setpriv.arg(bin.join(program));
            setpriv
        }
        None => Command::new(bin.join(program)),
    };
    command.current_dir(dir);
    command
}

/// Runs `program` with `args` to its end; panics with its output when it fails.
fn run(bin: &Path, program: &str, dir: &Path, args: &[&std::ffi::OsStr]) {
    let output = command(bin, program, dir)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("cannot run {program}: {err}"));
    assert!(
        output.status.success(),
        "{program} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

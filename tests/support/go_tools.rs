//! The Go tools the client tests drive (crane, oras, siftool, scs-build), built once per
//! `target/` by `tests/support/go-tools.sh`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The path of Go tool `name`, building the tools first if this test binary has not yet.
pub fn tool(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = root.join("target/tools");
        let output = Command::new(root.join("tests/support/go-tools.sh"))
            .arg(&dir)
            .output()
            .expect("tests/support/go-tools.sh runs");
        assert!(
            output.status.success(),
            "building the Go tools failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        dir
    });
    dir.join(name)
}

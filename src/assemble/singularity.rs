//! The `/.singularity.d` metadata tree that SingularityCE and Apptainer expect in a SIF's root
//! file system, written into a flattened root before it is packed.
//!
//! The layout is what `singularity build` makes from an OCI image (project Singularity reference
//! §5.1–5.3): the definition file, environment scripts (the OCI `Env` among them), the runscript
//! (the OCI `Entrypoint` and `Cmd`), labels, legacy action scripts, the top-level compatibility
//! symlinks, and the mount points the runtime binds onto. The scripts are kiln's own. Everything
//! is a pure function of the arguments: no dates, no host names, no versions. In particular the
//! `org.label-schema.build-date` label singularity adds is not written (the caller's labels are
//! written as given): it is the one value that would change on every build, and nothing reads it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{self, File, Permissions};
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::spec::POST_ENVIRONMENT;

/// The runtime settings of the OCI image config that a SIF carries over.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// `KEY=value` (or bare `KEY`) entries, in image config order.
    pub env: Vec<String>,
    /// The OCI `Entrypoint`.
    pub entrypoint: Option<Vec<String>>,
    /// The OCI `Cmd`.
    pub cmd: Option<Vec<String>>,
}

/// Why the metadata could not be written.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// A file-system operation failed.
    #[error("could not {action} {}", path.display())]
    Io {
        /// What was being done, as a verb phrase.
        action: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A directory in the image sits where singularity needs one of its symlinks.
    #[error("{} is a directory in the image, where singularity needs a symlink", path.display())]
    Occupied {
        /// The path concerned.
        path: PathBuf,
    },
    /// An `Entrypoint` or `Cmd` argument contains a NUL byte, which no command line can hold.
    #[error("the image's {field} contains a NUL byte")]
    Nul {
        /// `Entrypoint` or `Cmd`.
        field: &'static str,
    },
}

type Result<T, E = MetadataError> = std::result::Result<T, E>;

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> MetadataError {
    let path = path.to_path_buf();
    move |source| MetadataError::Io {
        action,
        path,
        source,
    }
}

/// Sources the container environment, as every legacy action script does first.
const SOURCE_ENV: &str = "#!/bin/sh
for script in /.singularity.d/env/*.sh; do
    if [ -f \"$script\" ]; then
        . \"$script\"
    fi
done
";

/// The legacy action scripts (the runtime now uses built-in ones), after [`SOURCE_ENV`].
const ACTIONS: [(&str, &str); 5] = [
    ("exec", "exec \"$@\"\n"),
    (
        "run",
        "if [ -x /.singularity.d/runscript ]; then
    exec /.singularity.d/runscript \"$@\"
fi
exec /bin/sh \"$@\"
",
    ),
    (
        "shell",
        "if [ -n \"${SINGULARITY_SHELL:-}\" ] && [ -x \"$SINGULARITY_SHELL\" ]; then
    exec \"$SINGULARITY_SHELL\" \"$@\"
fi
if [ -x /bin/bash ]; then
    exec /bin/bash --norc \"$@\"
fi
exec /bin/sh \"$@\"
",
    ),
    ("start", "exec /.singularity.d/startscript \"$@\"\n"),
    (
        "test",
        "if [ -x /.singularity.d/test ]; then
    exec /.singularity.d/test \"$@\"
fi
echo \"This container has no test script.\" >&2
",
    ),
];

const BASE_ENV: &str = "#!/bin/sh
# Environment shared by all containers; the image's own follows in later files.
";

const ENVIRONMENT: &str = "#!/bin/sh
# Custom environment shell code should follow

";

const BASE_ENV_LAST: &str = "#!/bin/sh
# Libraries bound in by --nv, --rocm and the like go to /.singularity.d/libs.
if [ -n \"${LD_LIBRARY_PATH:-}\" ]; then
    LD_LIBRARY_PATH=\"$LD_LIBRARY_PATH:/.singularity.d/libs\"
else
    LD_LIBRARY_PATH=/.singularity.d/libs
fi
PS1=\"Singularity> \"
export LD_LIBRARY_PATH PS1
";

const RUNTIME_VARS: &str = "#!/bin/sh
# PATH changes requested on the command line (--env PREPEND_PATH=..., APPEND_PATH, PATH).
if [ -n \"${SING_USER_DEFINED_PREPEND_PATH:-}\" ]; then
    PATH=\"$SING_USER_DEFINED_PREPEND_PATH:$PATH\"
fi
if [ -n \"${SING_USER_DEFINED_APPEND_PATH:-}\" ]; then
    PATH=\"$PATH:$SING_USER_DEFINED_APPEND_PATH\"
fi
if [ -n \"${SING_USER_DEFINED_PATH:-}\" ]; then
    PATH=\"$SING_USER_DEFINED_PATH\"
fi
unset SING_USER_DEFINED_PREPEND_PATH SING_USER_DEFINED_APPEND_PATH SING_USER_DEFINED_PATH
export PATH
";

const START_SCRIPT: &str = "#!/bin/sh\n";

/// Top-level compatibility symlinks (§5.1), relative so they also work outside the container.
const SYMLINKS: [(&str, &str); 6] = [
    (".exec", ".singularity.d/actions/exec"),
    (".run", ".singularity.d/actions/run"),
    (".shell", ".singularity.d/actions/shell"),
    (".test", ".singularity.d/actions/test"),
    ("singularity", ".singularity.d/runscript"),
    ("environment", ".singularity.d/env/90-environment.sh"),
];

/// Directories the runtime mounts or binds onto (§5.1, §5.2), with the mode used if missing.
const MOUNT_DIRS: [(&str, u32); 9] = [
    ("dev", 0o755),
    ("etc", 0o755),
    ("home", 0o755),
    ("proc", 0o555),
    ("root", 0o700),
    ("sys", 0o555),
    ("tmp", 0o1777),
    ("var", 0o755),
    ("var/tmp", 0o1777),
];

/// Files the runtime binds onto by default (§5.2), created empty (0644) if missing.
const MOUNT_FILES: [&str; 5] = [
    "etc/group",
    "etc/hosts",
    "etc/localtime",
    "etc/passwd",
    "etc/resolv.conf",
];

/// Writes `/.singularity.d` (replacing any the layers brought but for the `export`s a definition's
/// `%post` appended to `$SINGULARITY_ENVIRONMENT`, `env/91-environment.sh`), the top-level
/// symlinks and the missing mount points into the flattened root `root`.
///
/// `definition` becomes `/.singularity.d/Singularity`; `labels` becomes `labels.json` as is
/// (merge the image's labels and any build labels first). `runtime.env` goes to
/// `env/10-docker2singularity.sh`: `PATH` is set outright, other variables only when the host or
/// `--env` does not set them, and entries whose name is not a shell identifier are skipped (as
/// singularity does), like values holding a NUL byte. The runscript runs the `Entrypoint`
/// followed by the `run` arguments, or by `Cmd` when there are none, passing every argument
/// verbatim: unlike singularity's default runscript it never `eval`s them, so `$VAR` in an
/// argument stays literal, as with `docker run` (singularity's `SINGULARITY_NO_EVAL` behaviour).
///
/// Existing mount points are left alone, whatever they are (including symlinks and non-empty
/// `/etc/passwd`); nothing is created beneath a symlink, so a hostile image cannot redirect
/// these writes outside `root`.
pub fn write_singularity_metadata(
    root: &Path,
    runtime: &RuntimeConfig,
    definition: &str,
    labels: &BTreeMap<String, String>,
) -> Result<()> {
    let meta = root.join(".singularity.d");
    let post_environment = read_regular_file(root, POST_ENVIRONMENT)?;
    remove(&meta)?;
    for dir in ["", "actions", "env", "libs"] {
        create_dir(&meta.join(dir), 0o755)?;
    }
    if let Some(exports) = post_environment {
        let path = meta.join("env/91-environment.sh");
        fs::write(&path, exports).map_err(io_err("write", &path))?;
        fs::set_permissions(&path, Permissions::from_mode(0o755))
            .map_err(io_err("write", &path))?;
    }
    write(&meta.join("Singularity"), definition, 0o644)?;
    for (name, body) in ACTIONS {
        write(
            &meta.join("actions").join(name),
            &format!("{SOURCE_ENV}{body}"),
            0o755,
        )?;
    }
    let env = meta.join("env");
    write(&env.join("01-base.sh"), BASE_ENV, 0o755)?;
    write(
        &env.join("10-docker2singularity.sh"),
        &env_script(&runtime.env),
        0o755,
    )?;
    write(&env.join("90-environment.sh"), ENVIRONMENT, 0o755)?;
    write(&env.join("99-base.sh"), BASE_ENV_LAST, 0o755)?;
    write(&env.join("99-runtimevars.sh"), RUNTIME_VARS, 0o755)?;
    let mut json = serde_json::to_string_pretty(labels)
        .map_err(|e| io_err("write", &meta.join("labels.json"))(e.into()))?;
    json.push('\n');
    write(&meta.join("labels.json"), &json, 0o644)?;
    write(&meta.join("runscript"), &runscript(runtime)?, 0o755)?;
    write(&meta.join("startscript"), START_SCRIPT, 0o755)?;

    for (name, target) in SYMLINKS {
        let path = root.join(name);
        if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            return Err(MetadataError::Occupied { path });
        }
        remove(&path)?;
        std::os::unix::fs::symlink(target, &path).map_err(io_err("create", &path))?;
    }
    for (dir, mode) in MOUNT_DIRS {
        if let Some(path) = missing(root, dir)? {
            create_dir(&path, mode)?;
        }
    }
    for file in MOUNT_FILES {
        if let Some(path) = missing(root, file)? {
            write(&path, "", 0o644)?;
        }
    }
    Ok(())
}

/// The scripts a definition file's sections give (`%environment`, `%runscript`, `%startscript`,
/// `%help`), each already in its final form; `None` keeps what
/// [`write_singularity_metadata`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DefinitionScripts {
    /// Shell code appended to `env/90-environment.sh`, sourced before every command.
    pub environment: Option<String>,
    /// The whole `runscript` file, shebang included.
    pub runscript: Option<String>,
    /// The whole `startscript` file, shebang included.
    pub startscript: Option<String>,
    /// `runscript.help`, what `singularity run-help` prints.
    pub help: Option<String>,
}

/// Writes a definition file's scripts over the ones [`write_singularity_metadata`] wrote into
/// `root`, where `singularity build` puts them (reference §5.1).
pub fn write_definition_scripts(root: &Path, scripts: &DefinitionScripts) -> Result<()> {
    let meta = root.join(".singularity.d");
    let files = [
        (
            meta.join("env/90-environment.sh"),
            scripts
                .environment
                .as_ref()
                .map(|code| format!("{ENVIRONMENT}{code}\n")),
            0o755,
        ),
        (meta.join("runscript"), scripts.runscript.clone(), 0o755),
        (meta.join("startscript"), scripts.startscript.clone(), 0o755),
        (meta.join("runscript.help"), scripts.help.clone(), 0o644),
    ];
    for (path, contents, mode) in files {
        if let Some(contents) = contents {
            remove(&path)?;
            write(&path, &contents, mode)?;
        }
    }
    Ok(())
}

/// `10-docker2singularity.sh`: one `export` per valid `Env` entry.
fn env_script(env: &[String]) -> String {
    let mut script = String::from("#!/bin/sh\n# The image config's Env.\n");
    for entry in env {
        let (key, value) = match entry.split_once('=') {
            Some((key, value)) => (key, Some(value)),
            None => (entry.as_str(), None),
        };
        let mut chars = key.chars();
        let valid = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid || value.is_some_and(|v| v.contains('\0')) {
            continue;
        }
        // `writeln!` into a String cannot fail.
        let _ = match value {
            None => writeln!(script, "export {key}=\"${{{key}:-}}\""),
            Some(value) if key == "PATH" => writeln!(script, "export PATH=\"{}\"", escape(value)),
            Some(value) => writeln!(script, "export {key}=\"${{{key}:-\"{}\"}}\"", escape(value)),
        };
    }
    script
}

/// Escapes `value` for use inside double quotes, where only these four characters are special.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | '"' | '`' | '$') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The runscript: `Entrypoint`, then the arguments given, or `Cmd` when none are.
fn runscript(runtime: &RuntimeConfig) -> Result<String> {
    let entrypoint = quote_all(
        runtime.entrypoint.as_deref().unwrap_or_default(),
        "Entrypoint",
    )?;
    let cmd = quote_all(runtime.cmd.as_deref().unwrap_or_default(), "Cmd")?;
    let mut script = String::from(
        "#!/bin/sh\n# The image config's Entrypoint, then the arguments given or else its Cmd.\n",
    );
    if !cmd.is_empty() {
        script.push_str(&format!("if [ \"$#\" -eq 0 ]; then\n    set --{cmd}\nfi\n"));
    }
    if !entrypoint.is_empty() {
        script.push_str(&format!("set --{entrypoint} \"$@\"\n"));
    }
    if cmd.is_empty() && entrypoint.is_empty() {
        script.push_str(
            "if [ \"$#\" -eq 0 ]; then
    echo \"This image has no Entrypoint or Cmd; give the command to run.\" >&2
    exit 1
fi
",
        );
    }
    script.push_str("exec \"$@\"\n");
    Ok(script)
}

/// Each argument single-quoted (`'` as `'"'"'`), each preceded by a space.
fn quote_all(args: &[String], field: &'static str) -> Result<String> {
    let mut out = String::new();
    for arg in args {
        if arg.contains('\0') {
            return Err(MetadataError::Nul { field });
        }
        out.push_str(" '");
        out.push_str(&arg.replace('\'', "'\"'\"'"));
        out.push('\'');
    }
    Ok(out)
}

/// `root/rel` when nothing is there and every parent is a real directory (missing parents are
/// created 0755); `None` when it exists or a parent is a symlink or not a directory.
fn missing(root: &Path, rel: &str) -> Result<Option<PathBuf>> {
    let mut path = root.to_path_buf();
    let mut parts = rel.split('/').peekable();
    while let Some(part) = parts.next() {
        path.push(part);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() && parts.peek().is_some() => {}
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if parts.peek().is_none() {
                    return Ok(Some(path));
                }
                create_dir(&path, 0o755)?;
            }
            Err(e) => return Err(io_err("read", &path)(e)),
        }
    }
    Ok(None)
}

/// The bytes of the regular file at `rel` (relative, `/`-separated) under `root`, or `None` when
/// anything on the way is not a directory or the file is not a regular file: symlinks in a
/// hostile image would lead outside `root`.
fn read_regular_file(root: &Path, rel: &str) -> Result<Option<Vec<u8>>> {
    let mut path = root.to_path_buf();
    let mut parts = rel.trim_start_matches('/').split('/').peekable();
    while let Some(part) = parts.next() {
        path.push(part);
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        let fits = if parts.peek().is_some() {
            meta.is_dir()
        } else {
            meta.is_file()
        };
        if !fits {
            return Ok(None);
        }
    }
    fs::read(&path).map(Some).map_err(io_err("read", &path))
}

fn remove(path: &Path) -> Result<()> {
    let removed = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    removed.map_err(io_err("remove", path))
}

fn create_dir(path: &Path, mode: u32) -> Result<()> {
    fs::create_dir(path).map_err(io_err("create", path))?;
    fs::set_permissions(path, Permissions::from_mode(mode)).map_err(io_err("set the mode of", path))
}

/// Creates `path` (never through an existing file or symlink) with exactly `mode`.
fn write(path: &Path, contents: &str, mode: u32) -> Result<()> {
    let mut file = File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err("create", path))?;
    file.write_all(contents.as_bytes())
        .map_err(io_err("write", path))?;
    file.set_permissions(Permissions::from_mode(mode))
        .map_err(io_err("set the mode of", path))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;
    use std::process::Command;

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| (*s).to_owned()).collect()
    }

    fn write_into(root: &Path, runtime: &RuntimeConfig) {
        let labels = BTreeMap::from([
            ("b".to_owned(), "2".to_owned()),
            ("a".to_owned(), "1".to_owned()),
        ]);
        write_singularity_metadata(root, runtime, "Bootstrap: docker\n", &labels).unwrap();
    }

    /// Runs `sh <script> args...` with a clean environment; returns (status, stdout lines).
    fn sh(script: &Path, args: &[&str]) -> (bool, Vec<String>) {
        let output = Command::new("sh")
            .arg(script)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .output()
            .unwrap();
        let stdout = String::from_utf8(output.stdout).unwrap();
        (
            output.status.success(),
            stdout.lines().map(str::to_owned).collect(),
        )
    }

    #[test]
    fn writes_the_tree_with_modes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        std::os::unix::fs::symlink("/run/resolv.conf", root.join("etc/resolv.conf")).unwrap();
        fs::create_dir_all(root.join(".singularity.d/stale")).unwrap();
        fs::write(root.join("environment"), "old").unwrap();
        write_into(root, &RuntimeConfig::default());

        let meta = root.join(".singularity.d");
        let mut files = Vec::new();
        for path in [
            "",
            "Singularity",
            "actions",
            "actions/exec",
            "actions/run",
            "actions/shell",
            "actions/start",
            "actions/test",
            "env",
            "env/01-base.sh",
            "env/10-docker2singularity.sh",
            "env/90-environment.sh",
            "env/99-base.sh",
            "env/99-runtimevars.sh",
            "labels.json",
            "libs",
            "runscript",
            "startscript",
        ] {
            files.push(format!("{path} {:o}", mode(&meta.join(path))));
        }
        assert_eq!(
            files.join("\n"),
            " 755\nSingularity 644\nactions 755\nactions/exec 755\nactions/run 755\n\
             actions/shell 755\nactions/start 755\nactions/test 755\nenv 755\n\
             env/01-base.sh 755\nenv/10-docker2singularity.sh 755\nenv/90-environment.sh 755\n\
             env/99-base.sh 755\nenv/99-runtimevars.sh 755\nlabels.json 644\nlibs 755\n\
             runscript 755\nstartscript 755"
        );
        let mut entries: Vec<_> = fs::read_dir(&meta)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        entries.sort();
        assert_eq!(
            entries,
            [
                "Singularity",
                "actions",
                "env",
                "labels.json",
                "libs",
                "runscript",
                "startscript"
            ]
        );
        assert_eq!(fs::read_dir(meta.join("libs")).unwrap().count(), 0);
        assert_eq!(
            fs::read_to_string(meta.join("Singularity")).unwrap(),
            "Bootstrap: docker\n"
        );
        assert_eq!(
            fs::read_to_string(meta.join("labels.json")).unwrap(),
            "{\n  \"a\": \"1\",\n  \"b\": \"2\"\n}\n"
        );
        assert_eq!(
            fs::read_to_string(meta.join("startscript")).unwrap(),
            "#!/bin/sh\n"
        );
        for (name, target) in SYMLINKS {
            assert_eq!(fs::read_link(root.join(name)).unwrap(), Path::new(target));
            assert!(root.join(name).is_file(), "{name} resolves");
        }
        for (dir, mode_if_new) in MOUNT_DIRS {
            let expected = if dir == "etc" { 0o755 } else { mode_if_new };
            assert_eq!(mode(&root.join(dir)), expected, "{dir}");
        }
        assert_eq!(
            fs::read_to_string(root.join("etc/passwd")).unwrap(),
            "root:x:0:0::/root:/bin/sh\n"
        );
        assert!(
            fs::symlink_metadata(root.join("etc/resolv.conf"))
                .unwrap()
                .is_symlink()
        );
        for file in ["etc/hosts", "etc/group", "etc/localtime"] {
            assert_eq!(fs::read(root.join(file)).unwrap(), b"");
            assert_eq!(mode(&root.join(file)), 0o644);
        }

        // Running it again gives the same tree (deterministic, idempotent).
        let first = fs::read(meta.join("env/99-base.sh")).unwrap();
        write_into(root, &RuntimeConfig::default());
        assert_eq!(fs::read(meta.join("env/99-base.sh")).unwrap(), first);

        // Without an Entrypoint or Cmd, `run` needs arguments.
        assert!(!sh(&meta.join("runscript"), &[]).0);
        assert_eq!(
            sh(&meta.join("runscript"), &["echo", "a  b"]),
            (true, strings(&["a  b"]))
        );
    }

    #[test]
    fn never_writes_through_symlinked_mount_points() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        let root = dir.path().join("root");
        fs::create_dir_all(&outside).unwrap();
        fs::create_dir_all(&root).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("etc")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("var")).unwrap();
        write_into(&root, &RuntimeConfig::default());
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);

        fs::remove_file(root.join("singularity")).unwrap();
        fs::create_dir(root.join("singularity")).unwrap();
        let err =
            write_singularity_metadata(&root, &RuntimeConfig::default(), "", &BTreeMap::new())
                .unwrap_err();
        assert!(matches!(err, MetadataError::Occupied { .. }), "{err:?}");
    }

    #[test]
    fn keeps_what_post_appended_to_singularity_environment() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(root.join(".singularity.d/env")).unwrap();
        let exports = "export FROM_POST=\"built at $(date)\"\n";
        fs::write(root.join(".singularity.d/env/91-environment.sh"), exports).unwrap();
        fs::write(root.join(".singularity.d/env/50-stale.sh"), "stale").unwrap();
        write_into(&root, &RuntimeConfig::default());
        let kept = root.join(".singularity.d/env/91-environment.sh");
        assert_eq!(fs::read_to_string(&kept).unwrap(), exports);
        assert_eq!(mode(&kept), 0o755);
        assert!(!root.join(".singularity.d/env/50-stale.sh").exists());

        // Through a symlink, the file would be the host's: it is not read.
        let outside = dir.path().join("outside");
        fs::create_dir_all(outside.join("env")).unwrap();
        fs::write(outside.join("env/91-environment.sh"), "host secret").unwrap();
        for linked in [
            ".singularity.d",
            ".singularity.d/env",
            ".singularity.d/env/91-environment.sh",
        ] {
            let root = dir.path().join(format!("linked-{}", linked.len()));
            let target = match linked {
                ".singularity.d" => outside.clone(),
                ".singularity.d/env" => outside.join("env"),
                _ => outside.join("env/91-environment.sh"),
            };
            let parent = root.join(linked);
            fs::create_dir_all(parent.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(&target, &parent).unwrap();
            write_into(&root, &RuntimeConfig::default());
            assert!(
                !root.join(".singularity.d/env/91-environment.sh").exists(),
                "{linked} was followed"
            );
        }
        assert_eq!(
            fs::read_to_string(outside.join("env/91-environment.sh")).unwrap(),
            "host secret"
        );
    }

    #[test]
    fn env_values_are_literal() {
        let dir = tempfile::tempdir().unwrap();
        let pwned = dir.path().join("pwned");
        let hostile = format!(
            "$(touch {0}) `touch {0}` ${{HOME}} \\\" ' \\ \n}} end\\",
            pwned.display()
        );
        let runtime = RuntimeConfig {
            env: vec![
                format!("HOSTILE={hostile}"),
                "PATH=/opt/conda/bin:/usr/bin:$PATH".to_owned(),
                "LANG=C.UTF-8".to_owned(),
                "EMPTY".to_owned(),
                "EQUALS=a=b".to_owned(),
                "1BAD=x".to_owned(),
                "BAD-KEY=x".to_owned(),
                "=x".to_owned(),
                format!("BAD$(touch {})=x", pwned.display()),
                "NUL=a\0b".to_owned(),
            ],
            ..RuntimeConfig::default()
        };
        write_into(dir.path(), &runtime);
        let file = dir
            .path()
            .join(".singularity.d/env/10-docker2singularity.sh");
        let text = fs::read_to_string(&file).unwrap();
        assert!(
            text.contains("export PATH=\"/opt/conda/bin:/usr/bin:\\$PATH\"\n"),
            "{text}"
        );
        assert!(
            text.contains("export LANG=\"${LANG:-\"C.UTF-8\"}\"\n"),
            "{text}"
        );
        assert!(text.contains("export EMPTY=\"${EMPTY:-}\"\n"), "{text}");
        assert!(!text.contains("BAD") && !text.contains("NUL") && !text.contains("=x"));

        for shell in ["sh", "bash"] {
            let output = Command::new(shell)
                .arg("-c")
                .arg(". \"$1\"; printf '%s|' \"$HOSTILE\" \"$PATH\" \"$LANG\" \"$EQUALS\" \"${EMPTY-unset}\"")
                .arg("sh")
                .arg(&file)
                .env_clear()
                .env("LANG", "host")
                .output()
                .unwrap();
            assert!(output.status.success(), "{output:?}");
            assert_eq!(
                String::from_utf8(output.stdout).unwrap(),
                format!("{hostile}|/opt/conda/bin:/usr/bin:$PATH|host|a=b||"),
                "{shell}"
            );
        }
        assert!(!pwned.exists());
    }

    #[test]
    fn runscript_passes_arguments_verbatim() {
        let dir = tempfile::tempdir().unwrap();
        let runscript = dir.path().join(".singularity.d/runscript");
        let python = RuntimeConfig {
            entrypoint: Some(strings(&["/opt/conda/bin/python", "-c"])),
            cmd: Some(strings(&["print('hi there')"])),
            ..RuntimeConfig::default()
        };
        write_into(dir.path(), &python);
        let text = fs::read_to_string(&runscript).unwrap();
        assert!(
            text.contains("    set -- 'print('\"'\"'hi there'\"'\"')'\n"),
            "{text}"
        );
        assert!(
            text.contains("set -- '/opt/conda/bin/python' '-c' \"$@\"\n"),
            "{text}"
        );

        // The same, with a printing program in front of the entrypoint to see the argv.
        let printing = RuntimeConfig {
            entrypoint: Some(strings(&[
                "printf",
                "[%s]\\n",
                "/opt/conda/bin/python",
                "-c",
            ])),
            ..python
        };
        write_into(dir.path(), &printing);
        assert_eq!(
            sh(&runscript, &[]),
            (
                true,
                strings(&["[/opt/conda/bin/python]", "[-c]", "[print('hi there')]"])
            )
        );
        let args = [
            "a b",
            "it's",
            "\"q\"",
            "$(touch x)",
            "`id`",
            "$HOME",
            "",
            "-x",
        ];
        let expected: Vec<String> = ["/opt/conda/bin/python", "-c"]
            .iter()
            .chain(&args)
            .map(|a| format!("[{a}]"))
            .collect();
        assert_eq!(sh(&runscript, &args), (true, expected));
        assert!(!dir.path().join("x").exists());

        // Without an entrypoint the arguments replace Cmd entirely.
        let cmd_only = RuntimeConfig {
            cmd: Some(strings(&["printf", "<%s>\\n", "from cmd"])),
            ..RuntimeConfig::default()
        };
        write_into(dir.path(), &cmd_only);
        assert_eq!(sh(&runscript, &[]), (true, strings(&["<from cmd>"])));
        assert_eq!(
            sh(&runscript, &["printf", "{%s}\\n", "x y"]),
            (true, strings(&["{x y}"]))
        );

        let nul = RuntimeConfig {
            cmd: Some(strings(&["a\0b"])),
            ..RuntimeConfig::default()
        };
        let err = write_singularity_metadata(dir.path(), &nul, "", &BTreeMap::new()).unwrap_err();
        assert!(
            matches!(err, MetadataError::Nul { field: "Cmd" }),
            "{err:?}"
        );
    }

    #[test]
    fn actions_source_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        write_into(dir.path(), &RuntimeConfig::default());
        let exec = fs::read_to_string(dir.path().join(".singularity.d/actions/exec")).unwrap();
        assert!(exec.starts_with("#!/bin/sh\nfor script in /.singularity.d/env/*.sh; do"));
        assert!(exec.ends_with("exec \"$@\"\n"));
        let base = dir.path().join(".singularity.d/env/99-base.sh");
        let output = Command::new("sh")
            .arg("-c")
            .arg(". \"$1\"; printf '%s|%s' \"$LD_LIBRARY_PATH\" \"$PS1\"")
            .arg("sh")
            .arg(&base)
            .env_clear()
            .env("LD_LIBRARY_PATH", "/host")
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8(output.stdout).unwrap(),
            "/host:/.singularity.d/libs|Singularity> "
        );
    }
}

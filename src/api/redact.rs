//! Server paths out of what the public reads: a build's failure reason often quotes a file
//! under kiln's data directory or a temporary directory (`open /srv/kiln/work/bd-…/ctx/x: no
//! such file`), which tells a stranger how the host is laid out. Each such path becomes
//! [`PLACEHOLDER`] where reasons are served (kiln's API, Wave's status, the build pages).

use std::path::Path;

use crate::config::Config;

/// What a server path is replaced with.
pub const PLACEHOLDER: &str = "<server path>";

/// `text` with every path under the data directory or a temporary directory replaced.
pub fn public_text(config: &Config, text: &str) -> String {
    let roots = server_roots(&config.data_dir);
    redact(text, &roots)
}

/// The directories whose paths are the server's: the data directory as configured and as the
/// file system resolves it, the process's temporary directory, and `/var/tmp` (buildah's).
fn server_roots(data_dir: &Path) -> Vec<String> {
    let mut roots = vec![data_dir.to_string_lossy().into_owned()];
    if let Ok(resolved) = std::fs::canonicalize(data_dir) {
        roots.push(resolved.to_string_lossy().into_owned());
    }
    roots.push(std::env::temp_dir().to_string_lossy().into_owned());
    roots.push("/var/tmp".to_owned());
    roots.retain(|root| root.trim_end_matches('/').len() > 1);
    for root in &mut roots {
        let trimmed = root.trim_end_matches('/').len();
        root.truncate(trimmed);
    }
    // Longest first, so a root inside another is replaced whole.
    roots.sort_by_key(|root| std::cmp::Reverse(root.len()));
    roots.dedup();
    roots
}

/// Replaces each path that starts with one of `roots` (at a word boundary) up to where the
/// path ends: whitespace, a quote, a bracket, `,`, `;`, or a `:` that ends it (`path: error`).
fn redact(text: &str, roots: &[String]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    'scan: while !rest.is_empty() {
        for root in roots {
            let Some(after) = rest.strip_prefix(root.as_str()) else {
                continue;
            };
            let at_boundary = out
                .chars()
                .last()
                .is_none_or(|c| !(c.is_alphanumeric() || "/._-~".contains(c)));
            let whole = after.is_empty() || after.starts_with(['/', ' ', ':', '"', '\'']);
            if at_boundary && whole {
                let end = path_end(after);
                out.push_str(PLACEHOLDER);
                rest = &after[end..];
                continue 'scan;
            }
        }
        let next = rest.chars().next().map_or(1, char::len_utf8);
        out.push_str(&rest[..next]);
        rest = &rest[next..];
    }
    out
}

/// Where the path at the start of `text` ends.
fn path_end(text: &str) -> usize {
    let bytes = text.as_bytes();
    for (index, &byte) in bytes.iter().enumerate() {
        let ends = byte.is_ascii_whitespace()
            || b"\"'`,;()[]{}<>".contains(&byte)
            || (byte == b':' && bytes.get(index + 1).is_none_or(u8::is_ascii_whitespace));
        if ends {
            return index;
        }
    }
    text.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roots() -> Vec<String> {
        vec!["/srv/kiln-data".into(), "/tmp".into()]
    }

    #[test]
    fn server_paths_are_replaced_and_the_rest_kept() {
        let cases = [
            (
                "open /srv/kiln-data/work/bd-1/context/x.txt: no such file or directory",
                "open <server path>: no such file or directory",
            ),
            (
                "buildah failed in \"/tmp/buildah123/run\" (exit 1)",
                "buildah failed in \"<server path>\" (exit 1)",
            ),
            ("COPY x /tmpfiles/y", "COPY x /tmpfiles/y"),
            ("/srv/kiln-data", "<server path>"),
            ("a/srv/kiln-data/x", "a/srv/kiln-data/x"),
            ("nothing provides numpy <1", "nothing provides numpy <1"),
            (
                "files: /tmp/a, /tmp/b; done",
                "files: <server path>, <server path>; done",
            ),
            ("é /tmp/x é", "é <server path> é"),
        ];
        for (text, expected) in cases {
            assert_eq!(redact(text, &roots()), expected, "{text}");
        }
    }

    #[test]
    fn the_data_directory_is_found_however_it_is_written() {
        let data = tempfile::tempdir().expect("temp dir");
        let config = Config {
            data_dir: data.path().join("."),
            ..Config::default()
        };
        let inside = data.path().join("work/bd-1");
        let text = format!("failed in {}", inside.display());
        assert_eq!(
            public_text(&config, &text),
            format!("failed in {PLACEHOLDER}")
        );
    }
}

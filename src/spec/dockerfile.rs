//! Users' Dockerfiles (Wave's `containerFile`), checked before kiln takes one: what buildah would
//! refuse, or silently misread, is refused here by name, and the images the stages build on are
//! listed, so the API can check where they would be pulled from before any build starts.
//!
//! The same check runs when kiln takes the Dockerfile and when its builder runs it, so a build
//! never starts from text that could only fail.

use std::collections::{HashMap, HashSet};

use super::entry::printable;

/// The longest line buildah 1.28 reads: its parser scans with Go's default `bufio.Scanner`,
/// whose 64 KiB buffer must hold the line and its newline. A longer line is not an error there:
/// buildah silently builds without it and everything after it.
pub const MAX_CONTAINERFILE_LINE: usize = 64 * 1024 - 1;

/// The instructions buildah knows.
const INSTRUCTIONS: &[&str] = &[
    "from",
    "run",
    "cmd",
    "label",
    "maintainer",
    "expose",
    "env",
    "add",
    "copy",
    "entrypoint",
    "volume",
    "user",
    "workdir",
    "arg",
    "onbuild",
    "stopsignal",
    "healthcheck",
    "shell",
];

/// A Dockerfile that passed the checks, and the images it pulls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// Every image the build pulls: each stage's `FROM` (other than an earlier stage) and each
    /// `COPY --from=<image>`, with build arguments' defaults filled in, in order.
    pub images: Vec<PulledImage>,
}

/// An image a Dockerfile pulls, and where it says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledImage {
    /// The line of the instruction (its first line, when continued).
    pub line: usize,
    /// The reference, as buildah will read it.
    pub reference: String,
}

/// Why a Dockerfile was refused. Each message names the line and the text at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[expect(
    missing_docs,
    reason = "each variant's fields are what its message names"
)]
pub enum DockerfileError {
    /// No instruction at all.
    #[error("the Dockerfile has no instructions; it needs at least a `FROM` line")]
    Empty,
    /// A NUL byte, which no Dockerfile holds.
    #[error("the Dockerfile contains a NUL byte at line {line}")]
    NulByte { line: usize },
    /// A line buildah would silently drop, with everything after it.
    #[error(
        "line {line} of the Dockerfile is {len} bytes long; buildah reads at most \
         {MAX_CONTAINERFILE_LINE} bytes a line (put long scripts in several RUN lines)"
    )]
    LineTooLong { line: usize, len: usize },
    /// An instruction buildah does not know.
    #[error("`{instruction}` at line {line} is not a Dockerfile instruction")]
    UnknownInstruction { instruction: String, line: usize },
    /// An instruction before the first `FROM` other than `ARG`.
    #[error(
        "the Dockerfile must start with `FROM` (only `ARG` may come before it), but line \
         {line} is `{instruction}`"
    )]
    FromNotFirst { instruction: String, line: usize },
    /// A `FROM` that is not `FROM [--platform=…] image [AS name]`.
    #[error("`FROM` at line {line} is `{text}`; write `FROM [--platform=…] image [AS name]`")]
    MalformedFrom { text: String, line: usize },
    /// An image name holding a variable kiln cannot fill in.
    #[error(
        "the image `{image}` at line {line} uses a build argument without a default value; \
         kiln takes no build arguments, so give the `ARG` before the first `FROM` a default or \
         write the image name out"
    )]
    UnresolvedVariable { image: String, line: usize },
    /// An image name with characters no image reference has.
    #[error("the image `{image}` at line {line} contains {problem}")]
    InvalidImage {
        image: String,
        line: usize,
        problem: String,
    },
}

use DockerfileError as E;

impl Dockerfile {
    /// Checks a Dockerfile and lists the images it pulls.
    pub fn parse(text: &str) -> Result<Dockerfile, DockerfileError> {
        if let Some(at) = text.find('\0') {
            let line = text[..at].matches('\n').count() + 1;
            return Err(E::NulByte { line });
        }
        for (index, line) in text.split('\n').enumerate() {
            if line.len() > MAX_CONTAINERFILE_LINE {
                return Err(E::LineTooLong {
                    line: index + 1,
                    len: line.len(),
                });
            }
        }
        let mut arguments: HashMap<String, Option<String>> = HashMap::new();
        let mut stages: HashSet<String> = HashSet::new();
        let mut images = Vec::new();
        let mut seen_from = false;
        for (line, instruction) in instructions(text) {
            let (keyword, rest) = instruction
                .split_once(char::is_whitespace)
                .unwrap_or((&instruction, ""));
            let lower = keyword.to_ascii_lowercase();
            if !INSTRUCTIONS.contains(&lower.as_str()) {
                return Err(E::UnknownInstruction {
                    instruction: printable(keyword),
                    line,
                });
            }
            match lower.as_str() {
                "from" => {
                    seen_from = true;
                    let (image, stage) = parse_from(rest, line)?;
                    if !stages.contains(&image.to_ascii_lowercase()) {
                        images.push(pulled(&image, &arguments, line)?);
                    }
                    if let Some(stage) = stage {
                        stages.insert(stage.to_ascii_lowercase());
                    }
                }
                "arg" if !seen_from => {
                    for word in rest.split_whitespace() {
                        let (name, default) = match word.split_once('=') {
                            Some((name, value)) => (name, Some(unquoted(value).to_owned())),
                            None => (word, None),
                        };
                        arguments.insert(name.to_owned(), default);
                    }
                }
                _ if !seen_from => {
                    return Err(E::FromNotFirst {
                        instruction: printable(keyword),
                        line,
                    });
                }
                "copy" => {
                    let from = rest
                        .split_whitespace()
                        .take_while(|word| word.starts_with("--"))
                        .find_map(|flag| flag.strip_prefix("--from="));
                    if let Some(from) = from {
                        let from = unquoted(from);
                        let stage = stages.contains(&from.to_ascii_lowercase())
                            || from.bytes().all(|b| b.is_ascii_digit());
                        if !stage {
                            images.push(pulled(from, &arguments, line)?);
                        }
                    }
                }
                _ => {}
            }
        }
        if !seen_from {
            return Err(E::Empty);
        }
        Ok(Dockerfile { images })
    }
}

/// The instructions of a Dockerfile with the line each starts on: comment and blank lines
/// dropped, continued lines (ending in the escape character, `\` unless a `# escape=`
/// directive says otherwise) joined.
fn instructions(text: &str) -> Vec<(usize, String)> {
    let escape = escape_character(text);
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (index, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let (body, continued) = match trimmed.strip_suffix(escape) {
            Some(body) => (body, true),
            None => (trimmed, false),
        };
        let (_, text) = current.get_or_insert_with(|| (index + 1, String::new()));
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(body.trim());
        if !continued && let Some(done) = current.take() {
            out.push(done);
        }
    }
    out.extend(current);
    out
}

/// The escape character a `# escape=` parser directive at the top sets, `\` by default.
fn escape_character(text: &str) -> char {
    for line in text.lines() {
        let Some(directive) = line.trim().strip_prefix('#') else {
            break;
        };
        let Some((key, value)) = directive.split_once('=') else {
            break;
        };
        if key.trim().eq_ignore_ascii_case("escape") && value.trim() == "`" {
            return '`';
        }
    }
    '\\'
}

/// The image and stage name of `FROM [--flag=…]… image [AS name]`.
fn parse_from(rest: &str, line: usize) -> Result<(String, Option<String>), DockerfileError> {
    let words: Vec<&str> = rest
        .split_whitespace()
        .skip_while(|word| word.starts_with("--"))
        .collect();
    match words[..] {
        [image] => Ok((image.to_owned(), None)),
        [image, alias, stage] if alias.eq_ignore_ascii_case("as") => {
            Ok((image.to_owned(), Some(stage.to_owned())))
        }
        _ => Err(E::MalformedFrom {
            text: printable(rest.trim()),
            line,
        }),
    }
}

/// `image` with the build arguments declared before the first `FROM` filled in (`$NAME`,
/// `${NAME}`, `${NAME:-default}`), checked for characters no reference has.
fn pulled(
    image: &str,
    arguments: &HashMap<String, Option<String>>,
    line: usize,
) -> Result<PulledImage, DockerfileError> {
    let unresolved = || E::UnresolvedVariable {
        image: printable(image),
        line,
    };
    let mut out = String::new();
    let mut rest = image;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, fallback, consumed) = if let Some(braced) = after.strip_prefix('{') {
            let end = braced.find('}').ok_or_else(unresolved)?;
            let inner = &braced[..end];
            let (name, fallback) = match inner.split_once(":-") {
                Some((name, fallback)) => (name, Some(fallback)),
                None => (inner, None),
            };
            (name, fallback, end + 2)
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], None, end)
        };
        let valid =
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(unresolved());
        }
        let value = match arguments.get(name) {
            Some(Some(value)) if !value.is_empty() => value.as_str(),
            _ => fallback.ok_or_else(unresolved)?,
        };
        out.push_str(value);
        rest = &after[consumed..];
    }
    out.push_str(rest);
    let problem = out.chars().find_map(|ch| match ch {
        '$' => Some("a `$` that is not a build argument".to_owned()),
        _ if ch.is_control() => Some(format!("the control character {ch:?}")),
        _ if ch.is_whitespace() => Some("whitespace".to_owned()),
        '"' | '\'' | '\\' => Some(format!("`{ch}`")),
        _ => None,
    });
    if out.is_empty() {
        return Err(E::MalformedFrom {
            text: printable(image),
            line,
        });
    }
    match problem {
        Some(problem) => Err(E::InvalidImage {
            image: printable(&out),
            line,
            problem,
        }),
        None => Ok(PulledImage {
            line,
            reference: out,
        }),
    }
}

/// `value` without one pair of surrounding quotes.
fn unquoted(value: &str) -> &str {
    for quote in ['"', '\''] {
        if let Some(inner) = value
            .strip_prefix(quote)
            .and_then(|v| v.strip_suffix(quote))
        {
            return inner;
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images(text: &str) -> Vec<(usize, String)> {
        Dockerfile::parse(text)
            .unwrap_or_else(|err| panic!("{text:?} was refused: {err}"))
            .images
            .into_iter()
            .map(|image| (image.line, image.reference))
            .collect()
    }

    fn refused(text: &str) -> String {
        Dockerfile::parse(text).expect_err(text).to_string()
    }

    #[test]
    fn every_stage_and_copied_image_is_listed() {
        let text = "# syntax comment\nARG BASE=debian\nARG TAG\n\
            FROM --platform=linux/amd64 ${BASE}:12 AS build\n\
            RUN echo \\\n  FROM nowhere\n\
            from build as second\n\
            FROM ghcr.io/org/tool:${TAG:-1.0}\n\
            COPY --from=second /a /a\n\
            COPY --from=0 /b /b\n\
            COPY --chown=1:1 --from=\"quay.io/x/y:2\" /c /c\n\
            FROM 127.0.0.1:5000/base\n";
        assert_eq!(
            images(text),
            [
                (4, "debian:12".to_owned()),
                (8, "ghcr.io/org/tool:1.0".to_owned()),
                (11, "quay.io/x/y:2".to_owned()),
                (12, "127.0.0.1:5000/base".to_owned()),
            ]
        );
        assert_eq!(
            images("# escape=`\nFROM `\n  alpine\nRUN dir c:\\\n"),
            [(2, "alpine".to_owned())]
        );
        assert_eq!(images("FROM scratch"), [(1, "scratch".to_owned())]);
    }

    #[test]
    fn refusals_name_their_reason() {
        let cases = [
            ("", "the Dockerfile has no instructions"),
            ("# only a comment\n\n", "the Dockerfile has no instructions"),
            ("FROM a\nRUN x\0\n", "contains a NUL byte at line 2"),
            (
                "RUN id\nFROM a\n",
                "only `ARG` may come before it), but line 1 is `RUN`",
            ),
            (
                "FROM a\nFORM b\n",
                "`FORM` at line 2 is not a Dockerfile instruction",
            ),
            ("FROM\n", "`FROM` at line 1 is ``"),
            ("FROM a b\n", "`FROM` at line 1 is `a b`"),
            (
                "FROM $BASE\n",
                "the image `$BASE` at line 1 uses a build argument",
            ),
            (
                "ARG B\nFROM ${B}\n",
                "the image `${B}` at line 2 uses a build argument",
            ),
            ("FROM a:${X\n", "uses a build argument"),
            ("FROM \"a\"\n", "at line 1 contains `\"`"),
            ("FROM a\nCOPY --from=$X /a /a\n", "the image `$X` at line 2"),
        ];
        for (text, expected) in cases {
            let message = refused(text);
            assert!(message.contains(expected), "{text:?}: {message}");
        }
        let long = format!("FROM a\nRUN {}\n", "x".repeat(MAX_CONTAINERFILE_LINE));
        assert_eq!(
            refused(&long),
            "line 2 of the Dockerfile is 65539 bytes long; buildah reads at most 65535 bytes \
             a line (put long scripts in several RUN lines)"
        );
        let longest = format!("FROM a\nRUN {}\n", "x".repeat(MAX_CONTAINERFILE_LINE - 4));
        assert!(Dockerfile::parse(&longest).is_ok());
    }
}

//! SingularityCE/Apptainer definition files sent to kiln's remote builder.
//!
//! Parsing follows SingularityCE's own parser wherever kiln honors a feature, and refuses by name
//! every feature kiln does not honor, so a definition never quietly builds into something other
//! than what its author wrote. The Containerfile kiln builds from one is written by
//! `recipe::definition_containerfile`; only its `%post` line ([`post_instruction`]) is made
//! here, because parsing refuses a `%post` whose line buildah could not read. In it, as in the
//! rest of that Containerfile, every user string is a JSON string inside an exec-form array
//! ([`exec_form`]): it never becomes shell or Containerfile syntax.

use super::dockerfile::MAX_CONTAINERFILE_LINE;
use super::entry::printable;

/// The longest definition file kiln accepts, in bytes (1 MiB).
pub const MAX_DEFINITION_LEN: usize = 1024 * 1024;

/// The longest `From:` value kiln accepts, in bytes.
pub const MAX_FROM_LEN: usize = 512;

/// The longest `%files` path kiln accepts, in bytes: Linux's `PATH_MAX`.
const MAX_PATH_LEN: usize = 4096;

/// Header keys SingularityCE knows that serve only the bootstrap agents kiln does not offer,
/// besides `otherurl<N>`.
const UNHONORED_HEADER_KEYS: &str = "includecmd mirrorurl updateurl osversion include library \
    registry namespace stage product user regcode productpgp registerurl modules fingerprints setopt";

/// Where `%post` appends `export` lines for run time, as `$SINGULARITY_ENVIRONMENT`; as in
/// SingularityCE, the SIF keeps the file and sources it after `%environment`.
pub const POST_ENVIRONMENT: &str = "/.singularity.d/env/91-environment.sh";

/// Shell text that sets up what SingularityCE gives `%post`: `$SINGULARITY_ENVIRONMENT`, naming
/// a file that exists.
fn prepare_post() -> String {
    format!(
        "SINGULARITY_ENVIRONMENT={POST_ENVIRONMENT}; export SINGULARITY_ENVIRONMENT; \
         mkdir -p /.singularity.d/env && : >> \"$SINGULARITY_ENVIRONMENT\" || exit; "
    )
}

/// Runs `$1` (the script) with `/bin/sh -e -x`, as SingularityCE runs a plain `%post`.
const RUN_SH: &str = "exec /bin/sh -e -x -c \"$1\"";

/// Runs `$2` (the interpreter) on `$1` (the script) the way SingularityCE does: the script is
/// written to `/.post.script`, where SingularityCE puts it, and the interpreter gets its path,
/// without `-e -x`. Both stay positional parameters, never part of this shell text.
const RUN_INTERPRETER: &str = "printf '%s' \"$1\" > /.post.script || exit; \
     \"$2\" /.post.script; status=$?; rm -f /.post.script; exit \"$status\"";

/// A parsed, validated definition file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    /// The text as sent; kiln stores it in the SIF unchanged.
    pub raw: String,
    /// Where the base image comes from.
    pub bootstrap: Bootstrap,
    /// The `From:` value, trimmed and validated; kiln resolves it to the image it builds on.
    pub from: String,
    /// The `%files` lines, in order.
    pub files: Vec<FileCopy>,
    /// `%post`, run in the image while it is built.
    pub post: Option<Script>,
    /// The `%environment` body, verbatim.
    pub environment: Option<String>,
    /// `%runscript`, run by `singularity run`.
    pub runscript: Option<Script>,
    /// `%startscript`, run by `singularity instance start`.
    pub startscript: Option<Script>,
    /// The `%labels` lines as `(key, value)`, in order; a key alone has the value `""`. A key
    /// given twice is kept twice: the later wins, as in SingularityCE.
    pub labels: Vec<(String, String)>,
    /// The `%help` body, verbatim.
    pub help: Option<String>,
}

/// The bootstrap agents kiln offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bootstrap {
    /// `Bootstrap: docker`: an image in kiln's registry.
    Docker,
    /// `Bootstrap: localimage`: a SIF that kiln holds.
    LocalImage,
}

/// The body of a script section and the interpreter `-c` named for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// The absolute path given with `-c`; `None` means `/bin/sh`.
    pub interpreter: Option<String>,
    /// The body, verbatim: each line followed by `\n`.
    pub body: String,
}

/// One `%files` line: `source [destination]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCopy {
    /// As written; the client resolves a relative source against its working directory.
    pub source: String,
    /// Absolute in the image: a relative destination, or the default (the source), gets a
    /// leading `/`, as SingularityCE copies relative to the image root.
    pub destination: String,
}

/// Why a definition file was refused. Each message names the offending text and its line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[expect(
    missing_docs,
    reason = "each variant's fields are what its message names"
)]
pub enum DefinitionError {
    /// The text is longer than [`MAX_DEFINITION_LEN`].
    #[error("the definition file is {len} bytes long; the limit is {MAX_DEFINITION_LEN} (1 MiB)")]
    TooLong { len: usize },
    /// A NUL byte, which no definition file holds.
    #[error("the definition file contains a NUL byte at line {line}")]
    NulByte { line: usize },
    /// No `Bootstrap:` line in the header.
    #[error("the definition file has no `Bootstrap:` header line")]
    MissingBootstrap,
    /// A header key comes before `Bootstrap:`.
    #[error("the first header key must be `Bootstrap`, but line {line} sets `{key}` before it")]
    BootstrapNotFirst { key: String, line: usize },
    /// No `From:` line in the header.
    #[error("the definition file has no `From:` header line")]
    MissingFrom,
    /// A header line without a key, a `:` and (for `Bootstrap` and `From`) a value.
    #[error("line {line} of the header is not a `Key: value` line: `{text}`")]
    MalformedHeaderLine { line: usize, text: String },
    /// A bootstrap agent other than `docker` and `localimage`.
    #[error(
        "bootstrap agent `{agent}` at line {line} is not supported: kiln builds from `docker` \
         images in its registry or from a `localimage` SIF that kiln holds"
    )]
    UnsupportedBootstrap { agent: String, line: usize },
    /// A header key SingularityCE knows for the agents kiln does not offer.
    #[error("kiln does not honor header key `{key}` (line {line})")]
    UnhonoredHeaderKey { key: String, line: usize },
    /// A header key SingularityCE does not know either.
    #[error("`{key}` at line {line} is not a definition file header key")]
    UnknownHeaderKey { key: String, line: usize },
    /// A header key given twice.
    #[error("the header key `{key}` is given twice (again at line {line})")]
    DuplicateHeaderKey { key: String, line: usize },
    /// A second `Bootstrap:` line, which starts another build stage.
    #[error("multi-stage definitions are not supported: line {line} starts another stage")]
    MultiStage { line: usize },
    /// A `From:` value unsafe to resolve or to put in a Containerfile line.
    #[error("the `From:` value `{from}` at line {line} {problem}")]
    InvalidFrom {
        from: String,
        line: usize,
        problem: String,
    },
    /// A section SingularityCE knows that kiln's builder does not run.
    #[error(
        "the %{section} section at line {line} is not supported by kiln's remote builder ({reason})"
    )]
    UnsupportedSection {
        section: String,
        line: usize,
        reason: &'static str,
    },
    /// A section SingularityCE does not know either.
    #[error("unknown section %{section} at line {line}")]
    UnknownSection { section: String, line: usize },
    /// A section given twice.
    #[error("the %{section} section is given twice (at lines {first} and {line})")]
    DuplicateSection {
        section: String,
        first: usize,
        line: usize,
    },
    /// `%files from <stage>`, which copies from another build stage.
    #[error(
        "`%files from {stage}` at line {line} copies from another stage; multi-stage definitions are not supported"
    )]
    FilesFromStage { stage: String, line: usize },
    /// An argument a section does not take.
    #[error("the %{section} section at line {line} does not take the argument `{argument}`")]
    UnexpectedArgument {
        section: String,
        argument: String,
        line: usize,
    },
    /// `-c` with no interpreter, or one that is not an absolute path.
    #[error(
        "`-c` in the %{section} section at line {line} needs an absolute path, e.g. `-c /bin/bash`; `{interpreter}` is not one"
    )]
    InvalidInterpreter {
        section: String,
        interpreter: String,
        line: usize,
    },
    /// A `%files` line with more than a source and a destination.
    #[error("%files line {line} `{text}` has more than two fields; write `source [destination]`")]
    FilesFieldCount { text: String, line: usize },
    /// A `%files` path the Containerfile would not keep literal.
    #[error("the %files path `{path}` at line {line} {problem}")]
    InvalidPath {
        path: String,
        line: usize,
        problem: String,
    },
    /// A `%labels` key holding `=` or a control character.
    #[error("the label key `{key}` at line {line} {problem}")]
    InvalidLabelKey {
        key: String,
        line: usize,
        problem: String,
    },
    /// A `%post` too long for one Containerfile line.
    #[error(
        "the %post section at line {line} makes a {len}-byte Containerfile line; buildah reads \
         at most {MAX_CONTAINERFILE_LINE} bytes a line, so put long scripts in a %files file"
    )]
    PostTooLong { len: usize, line: usize },
}

use DefinitionError as E;

/// A line of the text with its 1-based number.
type Line<'a> = (usize, &'a str);

impl Definition {
    /// Parses and validates a definition file.
    pub fn parse(text: &str) -> Result<Definition, DefinitionError> {
        if text.len() > MAX_DEFINITION_LEN {
            return Err(E::TooLong { len: text.len() });
        }
        if let Some(at) = text.find('\0') {
            let line = text[..at].matches('\n').count() + 1;
            return Err(E::NulByte { line });
        }
        let lines: Vec<Line<'_>> = text.lines().enumerate().map(|(i, l)| (i + 1, l)).collect();
        let is_head = |(_, l): &Line<'_>| section_head(l).is_some();
        let (header, mut rest) =
            lines.split_at(lines.iter().position(is_head).unwrap_or(lines.len()));
        // SingularityCE starts a stage at every line that begins with `bootstrap:`.
        let stage = |(_, l): &&Line<'_>| {
            l.get(..10)
                .is_some_and(|s| s.eq_ignore_ascii_case("bootstrap:"))
        };
        if let Some(&(line, _)) = rest.iter().find(stage) {
            return Err(E::MultiStage { line });
        }
        let (bootstrap, from) = parse_header(header)?;
        let mut definition = Definition {
            raw: text.to_owned(),
            bootstrap,
            from,
            files: Vec::new(),
            post: None,
            environment: None,
            runscript: None,
            startscript: None,
            labels: Vec::new(),
            help: None,
        };
        let mut seen: Vec<(String, usize)> = Vec::new();
        while let Some((&(line, head), after)) = rest.split_first() {
            let (body, next) =
                after.split_at(after.iter().position(is_head).unwrap_or(after.len()));
            rest = next;
            let (name, args) = section_head(head).unwrap_or_default();
            let interpreter = check_section(&name, line, &args)?;
            if let Some(&(_, first)) = seen.iter().find(|(seen, _)| *seen == name) {
                return Err(E::DuplicateSection {
                    section: name,
                    first,
                    line,
                });
            }
            let body_text = body.iter().map(|(_, l)| format!("{l}\n")).collect();
            let script = Script {
                interpreter,
                body: body_text,
            };
            match name.as_str() {
                "files" => definition.files = parse_files(body)?,
                "labels" => definition.labels = parse_labels(body)?,
                "environment" => definition.environment = Some(script.body),
                "help" => definition.help = Some(script.body),
                "runscript" => definition.runscript = Some(script),
                "startscript" => definition.startscript = Some(script),
                _ => {
                    let len = post_instruction(&script).len();
                    if len > MAX_CONTAINERFILE_LINE {
                        return Err(E::PostTooLong { len, line });
                    }
                    definition.post = Some(script);
                }
            }
            seen.push((name, line));
        }
        Ok(definition)
    }
}

/// The `RUN` line for `%post`: one physical line, since every string in it is JSON-escaped (a
/// newline becomes `\n`, a trailing backslash `\\`), and it ends in `"]`, never in the `\` that
/// continues a Containerfile line. buildah decodes a JSON array and never expands a `RUN`'s.
/// The body (and the interpreter) are arguments 4 (and 5) of the array, never shell text.
pub fn post_instruction(post: &Script) -> String {
    let body = post.body.as_str();
    let args = match &post.interpreter {
        None => {
            let script = prepare_post() + RUN_SH;
            exec_form(&["/bin/sh", "-c", &script, "kiln-post", body])
        }
        Some(shell) => {
            let script = prepare_post() + RUN_INTERPRETER;
            exec_form(&["/bin/sh", "-c", &script, "kiln-post", body, shell])
        }
    };
    format!("RUN {args}")
}

/// An exec-form array (`["a", "b"]`) of `items`: each string JSON-escaped, so none of them is
/// read as shell or Containerfile syntax.
pub fn exec_form(items: &[&str]) -> String {
    let items: Vec<String> = items
        .iter()
        .map(|item| serde_json::Value::from(*item).to_string())
        .collect();
    format!("[{}]", items.join(", "))
}

/// The name (lowercase, without `%`) and arguments of a section line, or `None` for any other
/// line. As in SingularityCE, a line starts a section when its first word starts with `%`.
fn section_head(line: &str) -> Option<(String, Vec<&str>)> {
    let mut words = uncommented(line).split_whitespace();
    let name = words.next()?.strip_prefix('%')?;
    Some((
        name.trim_start_matches('%').to_ascii_lowercase(),
        words.collect(),
    ))
}

/// The text of a line before any `#`: SingularityCE reads a `#` anywhere in a header or a
/// section line as the start of a comment.
fn uncommented(line: &str) -> &str {
    line.split_once('#').map_or(line, |(before, _)| before)
}

/// The bootstrap agent and the `From:` value of the header lines.
fn parse_header(lines: &[Line<'_>]) -> Result<(Bootstrap, String), DefinitionError> {
    let (mut bootstrap, mut from) = (None, None);
    for &(line, text) in lines {
        let content = uncommented(text).trim();
        let malformed = || E::MalformedHeaderLine {
            line,
            text: printable(content),
        };
        if content.is_empty() {
            continue;
        }
        let (key, value) = content.split_once(':').ok_or_else(malformed)?;
        let (key, value, lower) = (key.trim(), value.trim(), key.trim().to_ascii_lowercase());
        if lower == "bootstrap" && bootstrap.is_some() {
            return Err(E::MultiStage { line });
        }
        if key.is_empty() || (value.is_empty() && (lower == "bootstrap" || lower == "from")) {
            return Err(malformed());
        }
        let key = printable(key);
        if lower != "bootstrap" && bootstrap.is_none() {
            return Err(E::BootstrapNotFirst { key, line });
        }
        let numbered = |n: &str| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
        let known = UNHONORED_HEADER_KEYS.split_whitespace().any(|k| k == lower)
            || lower.strip_prefix("otherurl").is_some_and(numbered);
        match lower.as_str() {
            "bootstrap" => match value.to_ascii_lowercase().as_str() {
                "docker" => bootstrap = Some(Bootstrap::Docker),
                "localimage" => bootstrap = Some(Bootstrap::LocalImage),
                _ => {
                    return Err(E::UnsupportedBootstrap {
                        agent: printable(value),
                        line,
                    });
                }
            },
            "from" if from.is_some() => return Err(E::DuplicateHeaderKey { key, line }),
            "from" => match problem(value, MAX_FROM_LEN, &['"']) {
                None => from = Some(value.to_owned()),
                Some(problem) => {
                    return Err(E::InvalidFrom {
                        from: printable(value),
                        line,
                        problem,
                    });
                }
            },
            _ if known => return Err(E::UnhonoredHeaderKey { key, line }),
            _ => return Err(E::UnknownHeaderKey { key, line }),
        }
    }
    let bootstrap = bootstrap.ok_or(E::MissingBootstrap)?;
    Ok((bootstrap, from.ok_or(E::MissingFrom)?))
}

/// What is wrong with a word of user text, if anything: longer than `max` bytes, or holding
/// whitespace, a control character or one of `refused`.
fn problem(text: &str, max: usize, refused: &[char]) -> Option<String> {
    if text.len() > max {
        return Some(format!("is {} bytes long; the limit is {max}", text.len()));
    }
    text.chars().find_map(|ch| match ch {
        _ if ch.is_control() => Some(format!("contains the control character {ch:?}")),
        _ if ch.is_whitespace() => Some("contains whitespace".to_owned()),
        _ if refused.contains(&ch) => Some(format!("contains `{ch}`, which is not allowed there")),
        _ => None,
    })
}

/// Checks a section line and returns the interpreter its `-c` names. Refuses the sections kiln
/// does not honor, any argument on a section that takes none, and any argument but
/// `-c <absolute path>` on a script section.
fn check_section(
    name: &str,
    line: usize,
    args: &[&str],
) -> Result<Option<String>, DefinitionError> {
    let section = printable(name);
    let reason = match name {
        "files" | "environment" | "labels" | "help" | "post" | "runscript" | "startscript" => None,
        "setup" => Some("it runs on the build host"),
        "pre" => Some("it runs on the build host before the bootstrap"),
        "test" => Some("it runs the built image; use `singularity test` on it"),
        "arguments" => Some("kiln does not take build arguments"),
        "appinstall" | "apphelp" | "apprun" | "applabels" | "appenv" | "appfiles" | "appstart"
        | "apptest" => Some("SCIF apps are not supported"),
        _ => return Err(E::UnknownSection { section, line }),
    };
    if let Some(reason) = reason {
        return Err(E::UnsupportedSection {
            section,
            line,
            reason,
        });
    }
    let script = matches!(name, "post" | "runscript" | "startscript");
    let unexpected = |argument: &str| {
        let (section, argument) = (printable(name), printable(argument));
        Err(E::UnexpectedArgument {
            section,
            argument,
            line,
        })
    };
    match args {
        [] => Ok(None),
        ["-c", path]
            if script && path.starts_with('/') && problem(path, usize::MAX, &[]).is_none() =>
        {
            Ok(Some((*path).to_owned()))
        }
        ["-c"] | ["-c", _] if script => {
            let interpreter = printable(args.get(1).copied().unwrap_or_default());
            Err(E::InvalidInterpreter {
                section,
                interpreter,
                line,
            })
        }
        ["-c", _, argument, ..] if script => unexpected(argument),
        [from, stage @ ..] if name == "files" && from.eq_ignore_ascii_case("from") => {
            Err(E::FilesFromStage {
                stage: printable(&stage.join(" ")),
                line,
            })
        }
        [argument, ..] => unexpected(argument),
    }
}

/// The lines of a `%files` or `%labels` body that are neither blank nor comments, trimmed.
fn entries<'a>(body: &'a [Line<'a>]) -> impl Iterator<Item = Line<'a>> {
    (body.iter())
        .map(|&(line, text)| (line, text.trim()))
        .filter(|(_, text)| !text.is_empty() && !text.starts_with('#'))
}

/// The `%files` entries: `source [destination]` per line.
///
/// buildah applies shell-like quoting, escapes and `$` substitution to `COPY` arguments even in
/// exec form, so paths holding `"`, `'`, `\` or `$` are refused rather than misread; that
/// includes the quoted paths SingularityCE allows for names with spaces.
fn parse_files(body: &[Line<'_>]) -> Result<Vec<FileCopy>, DefinitionError> {
    let mut files = Vec::new();
    for (line, text) in entries(body) {
        let paths: Vec<&str> = text.split_whitespace().collect();
        for path in &paths {
            if let Some(problem) = problem(path, MAX_PATH_LEN, &['"', '\'', '\\', '$']) {
                return Err(E::InvalidPath {
                    path: printable(path),
                    line,
                    problem,
                });
            }
        }
        let (source, destination) = match paths[..] {
            [source] => (source, source),
            [source, destination] => (source, destination),
            _ => {
                return Err(E::FilesFieldCount {
                    text: printable(text),
                    line,
                });
            }
        };
        let destination = match destination.starts_with('/') {
            true => destination.to_owned(),
            false => format!("/{destination}"),
        };
        files.push(FileCopy {
            source: source.to_owned(),
            destination,
        });
    }
    Ok(files)
}

/// The `%labels` entries: `KEY value...` per line.
fn parse_labels(body: &[Line<'_>]) -> Result<Vec<(String, String)>, DefinitionError> {
    let mut labels = Vec::new();
    for (line, text) in entries(body) {
        let (key, value) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
        if let Some(problem) = problem(key, usize::MAX, &['=']) {
            return Err(E::InvalidLabelKey {
                key: printable(key),
                line,
                problem,
            });
        }
        labels.push((key.to_owned(), value.trim().to_owned()));
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "Bootstrap: docker\nFrom: ubuntu:22.04\n";

    fn parsed(text: &str) -> Definition {
        Definition::parse(text).unwrap_or_else(|err| panic!("{text:?} was refused: {err}"))
    }

    fn refused(text: &str) -> String {
        Definition::parse(text).expect_err(text).to_string()
    }

    /// `HEADER` followed by `sections`.
    fn def(sections: &str) -> String {
        format!("{HEADER}{sections}")
    }

    /// Asserts that each text is refused with a message holding the expected words.
    macro_rules! refusals {
        ($($text:expr => $expected:expr;)*) => {$(
            let message = refused(&$text);
            assert!(message.contains($expected), "{message:?} lacks {:?}", $expected);
        )*};
    }

    /// The array of the `RUN` line, decoded as buildah decodes it.
    fn run_args(containerfile: &str) -> Vec<String> {
        let line = containerfile.lines().find_map(|l| l.strip_prefix("RUN "));
        serde_json::from_str(line.expect("a RUN line")).expect("a JSON array of strings")
    }

    #[test]
    fn a_typical_definition_parses() {
        let text = "# kiln\nBootStrap: Docker\nFROM: ubuntu:22.04   # the base\n\n%files\n  \
            data/in.txt\n  /etc/hosts opt/hosts\n  # comment\n\n  build/tool /usr/bin/tool\n\
            %post -c /bin/bash # bash, please\n  apt-get update\n  echo \"done\" > /done\n\n\
            %Environment\n  export LC_ALL=C\n  export PATH=/opt/bin:$PATH\n\n\
            %runscript\n  exec tool \"$@\"\n\
            %labels\n  Author a@example.org\n  Version  v1.0 beta \n\n  # none\n  Flag\n\
            %help\n  Runs tool.\n";
        let file = |source: &str, destination: &str| FileCopy {
            source: source.into(),
            destination: destination.into(),
        };
        let script = |interpreter: Option<&str>, body: &str| Script {
            interpreter: interpreter.map(Into::into),
            body: body.into(),
        };
        let label = |key: &str, value: &str| (key.to_owned(), value.to_owned());
        let expected = Definition {
            raw: text.to_owned(),
            bootstrap: Bootstrap::Docker,
            from: "ubuntu:22.04".into(),
            files: vec![
                file("data/in.txt", "/data/in.txt"),
                file("/etc/hosts", "/opt/hosts"),
                file("build/tool", "/usr/bin/tool"),
            ],
            post: Some(script(
                Some("/bin/bash"),
                "  apt-get update\n  echo \"done\" > /done\n\n",
            )),
            environment: Some("  export LC_ALL=C\n  export PATH=/opt/bin:$PATH\n\n".into()),
            runscript: Some(script(None, "  exec tool \"$@\"\n")),
            startscript: None,
            labels: vec![
                label("Author", "a@example.org"),
                label("Version", "v1.0 beta"),
                label("Flag", ""),
            ],
            help: Some("  Runs tool.\n".into()),
        };
        assert_eq!(parsed(text), expected);
        let local = parsed("Bootstrap: LocalImage\nFrom: /images/base.sif\n");
        assert_eq!(
            (local.bootstrap, local.from.as_str()),
            (Bootstrap::LocalImage, "/images/base.sif")
        );
    }

    #[test]
    fn header_refusals_name_their_reason() {
        refusals! {
            def(&format!("%help\n{}", "a".repeat(MAX_DEFINITION_LEN))) => "is 1048619 bytes long; the limit is 1048576 (1 MiB)";
            def("%help\nx\0y\n") => "the definition file contains a NUL byte at line 4";
            "" => "the definition file has no `Bootstrap:` header line";
            "# a comment\n%post\n echo\n" => "the definition file has no `Bootstrap:` header line";
            "From: ubuntu\nBootstrap: docker\n" => "the first header key must be `Bootstrap`, but line 1 sets `From` before it";
            "Bootstrap: docker\n" => "the definition file has no `From:` header line";
            "Bootstrap: docker\nubuntu\n" => "line 2 of the header is not a `Key: value` line: `ubuntu`";
            "Bootstrap:\nFrom: x\n" => "line 1 of the header is not a `Key: value` line: `Bootstrap:`";
            "Bootstrap: docker\nFrom: # later\n" => "line 2 of the header is not a `Key: value` line: `From:`";
            def("from: b\n") => "the header key `from` is given twice (again at line 3)";
            def("IncludeCmd: yes\n") => "kiln does not honor header key `IncludeCmd` (line 3)";
            def("otherurl2: x\n") => "kiln does not honor header key `otherurl2` (line 3)";
            def("Stage: one\n") => "kiln does not honor header key `Stage`";
            def("SetOpt: x\n") => "kiln does not honor header key `SetOpt`";
            def("Colour: red\n") => "`Colour` at line 3 is not a definition file header key";
            def("otherurl: x\n") => "`otherurl` at line 3 is not a definition file header key";
            "Bootstrap: docker\nBootstrap: docker\n" => "multi-stage definitions are not supported: line 2 starts another stage";
            def("%post\n x\nbootstrap: oci\n") => "multi-stage definitions are not supported: line 5 starts another stage";
            "Bootstrap: docker\nFrom: ubuntu 22.04\n" => "the `From:` value `ubuntu 22.04` at line 2 contains whitespace";
            "Bootstrap: docker\nFrom: ubuntu\u{a0}22.04\n" => "the `From:` value `ubuntu\\u{a0}22.04` at line 2 contains whitespace";
            "Bootstrap: docker\nFrom: ubu\u{7}ntu\n" => "the `From:` value `ubu\\u{7}ntu` at line 2 contains the control character '\\u{7}'";
            "Bootstrap: docker\nFrom: a\rRUN id\n" => "the `From:` value `a\\rRUN id` at line 2 contains the control character '\\r'";
            "Bootstrap: docker\nFrom: \"a\"\n" => "the `From:` value `\\\"a\\\"` at line 2 contains `\"`, which is not allowed there";
            format!("Bootstrap: docker\nFrom: {}\n", "a".repeat(513)) => "at line 2 is 513 bytes long; the limit is 512";
            "Bootstrap: docker\nFrom: ubuntu\nRUN rm -rf /\n" => "line 3 of the header is not a `Key: value` line: `RUN rm -rf /`";
        }
        parsed(&format!(
            "Bootstrap: docker\nFrom: {}\n",
            "a".repeat(MAX_FROM_LEN)
        ));
        let agents = "library oras shub busybox debootstrap yum dnf zypper arch scratch \
            docker-daemon docker-archive oci oci-archive Library";
        for agent in agents.split(' ') {
            assert_eq!(
                refused(&format!("Bootstrap: {agent}\nFrom: x\n")),
                format!(
                    "bootstrap agent `{agent}` at line 1 is not supported: kiln builds from \
                     `docker` images in its registry or from a `localimage` SIF that kiln holds"
                )
            );
        }
    }

    #[test]
    fn section_refusals_name_their_reason() {
        refusals! {
            def("%setup\n touch x\n") => "the %setup section at line 3 is not supported by kiln's remote builder (it runs on the build host)";
            def("%test\n true\n") => "the %test section at line 3 is not supported by kiln's remote builder (it runs the built image";
            def("%pre\n true\n") => "the %pre section at line 3 is not supported by kiln's remote builder (it runs on the build host";
            def("%arguments\n v=1\n") => "the %arguments section at line 3 is not supported by kiln's remote builder (kiln does not";
            def("%appinstall foo\n true\n") => "the %appinstall section at line 3 is not supported by kiln's remote builder (SCIF apps";
            def("%apprun foo\n") => "the %apprun section at line 3 is not supported";
            def("%foo\n") => "unknown section %foo at line 3";
            def("  %Bar baz\n") => "unknown section %bar at line 3";
            def("%post\n a\n%help\n h\n%POST\n b\n") => "the %post section is given twice (at lines 3 and 7)";
            def("%files from build\n /a /b\n") => "`%files from build` at line 3 copies from another stage; multi-stage definitions";
            def("%post -x\n") => "the %post section at line 3 does not take the argument `-x`";
            def("%runscript -c /bin/bash -l\n") => "the %runscript section at line 3 does not take the argument `-l`";
            def("%startscript -c\n") => "`-c` in the %startscript section at line 3 needs an absolute path, e.g. `-c /bin/bash`";
            def("%post -c bash\n") => "`-c` in the %post section at line 3 needs an absolute path, e.g. `-c /bin/bash`; `bash` is not one";
            def("%environment --x\n") => "the %environment section at line 3 does not take the argument `--x`";
            def("%help me\n") => "the %help section at line 3 does not take the argument `me`";
            def("%labels x\n") => "the %labels section at line 3 does not take the argument `x`";
            def("%files\n a b c\n") => "%files line 4 `a b c` has more than two fields";
            def("%files\n \"my file\" /x\n") => "the %files path `\\\"my` at line 4 contains `\"`, which is not allowed there";
            def("%files\n a /opt/$HOME\n") => "the %files path `/opt/$HOME` at line 4 contains `$`";
            def("%files\n a\\b\n") => "the %files path `a\\\\b` at line 4 contains `\\`";
            def("%files\n it's\n") => "the %files path `it\\'s` at line 4 contains `'`";
            def("%labels\n a=b c\n") => "the label key `a=b` at line 4 contains `=`";
        }
        // The longest `%post` body whose RUN line buildah still reads, and one byte more.
        let empty = Script {
            interpreter: None,
            body: "\n".into(),
        };
        let longest = MAX_CONTAINERFILE_LINE - post_instruction(&empty).len();
        refusals! {
            def(&format!("%post\n{}\n", "x".repeat(longest + 1))) => "the %post section at line 3 makes a 65536-byte Containerfile line; buildah reads at most 65535 bytes a line";
        }
        parsed(&def(&format!("%post\n{}\n", "x".repeat(longest))));
    }

    #[test]
    fn hostile_post_bodies_round_trip_on_one_line() {
        let body =
            "echo \"]\"\n\"]\nx=$(rm -rf /)\n`id`; echo a\\\n  printf '%s\\n' \\\\\nRUN id \\\n";
        let post = |definition: &Definition| post_instruction(definition.post.as_ref().unwrap());
        let definition = parsed(&def(&format!("%post\n{body}")));
        let line = post(&definition);
        assert_eq!(line.lines().count(), 1, "{line}");
        assert!(line.ends_with("\"]"), "{line}");
        let plain = run_args(&line);
        assert_eq!(plain[..2], ["/bin/sh", "-c"]);
        assert_eq!(plain[2], prepare_post() + RUN_SH);
        assert_eq!(plain[3..], ["kiln-post", body]);

        let with_bash = parsed(&def(&format!("%post -c /bin/bash\n{body}")));
        let line = post(&with_bash);
        assert_eq!(line.lines().count(), 1, "{line}");
        let with_interpreter = run_args(&line);
        assert_eq!(with_interpreter[2], prepare_post() + RUN_INTERPRETER);
        assert_eq!(with_interpreter[3..], ["kiln-post", body, "/bin/bash"]);

        // Parsing ends every body with `\n`, but a body ending in `\` still ends the line.
        let line = post_instruction(&Script {
            interpreter: None,
            body: "echo \\".into(),
        });
        assert!(line.ends_with("\\\\\"]"), "{line}");
        assert_eq!(run_args(&line)[4], "echo \\");
    }

    proptest::proptest! {
        /// Whatever a script holds, its RUN line is one line ending in `"]` that decodes to
        /// exactly the body and the interpreter.
        #[test]
        fn run_lines_round_trip(body in "(?s).{0,200}", shell in proptest::option::of("/(?s).{0,20}")) {
            let line = post_instruction(&Script { interpreter: shell.clone(), body: body.clone() });
            proptest::prop_assert!(!line.contains(['\n', '\r']) && line.ends_with("\"]"));
            let args = run_args(&line);
            proptest::prop_assert_eq!(&args[4], &body);
            proptest::prop_assert_eq!(args.get(5), shell.as_ref());
        }
    }
}

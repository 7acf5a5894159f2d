//! The definition file parser: whatever a remote-build client sends, an accepted definition's
//! user text stays data in the Containerfile kiln builds from it. Every line of that
//! Containerfile is one of kiln's own instructions, short enough for buildah to read, and each
//! user string comes back intact from its JSON array.

#![no_main]

use kiln::recipe::definition_containerfile::{ContextSource, containerfile};
use kiln::spec::{Definition, MAX_FROM_LEN};
use libfuzzer_sys::fuzz_target;

/// The longest Containerfile line buildah 1.28 reads (a 64 KiB scanner buffer, newline included).
const MAX_CONTAINERFILE_LINE: usize = 64 * 1024 - 1;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(definition) = Definition::parse(text) else {
        return;
    };
    assert_eq!(definition.raw, text);
    let from = &definition.from;
    assert!(
        !from.is_empty()
            && from.len() <= MAX_FROM_LEN
            && !from.contains(|c: char| c.is_whitespace() || c.is_control() || c == '"'),
        "{text:?}: unsafe From: {from:?}"
    );
    for file in &definition.files {
        assert!(file.destination.starts_with('/'), "{text:?}: {file:?}");
    }
    // Every other %files source is a directory, which adds a `RUN` that copies it.
    let context: Vec<ContextSource> = (0..definition.files.len())
        .map(|index| ContextSource {
            path: format!("files/{index}"),
            directory: index % 2 == 1,
        })
        .collect();
    let directories = context.iter().filter(|source| source.directory).count();
    let containerfile = containerfile(&definition, "kiln.test/base@sha256:0", &context);
    let lines: Vec<&str> = containerfile.lines().collect();
    let expected =
        1 + definition.files.len() + directories + usize::from(definition.post.is_some());
    assert_eq!(lines.len(), expected, "{text:?} gives\n{containerfile}");
    assert_eq!(lines[0], "FROM kiln.test/base@sha256:0");
    let arrays: Vec<Vec<String>> = lines[1..]
        .iter()
        .map(|line| {
            assert!(
                line.len() <= MAX_CONTAINERFILE_LINE,
                "{text:?}: a {}-byte line",
                line.len()
            );
            let array = line
                .strip_prefix("COPY ")
                .or_else(|| line.strip_prefix("RUN "))
                .unwrap_or_else(|| panic!("{text:?}: a line that is not kiln's: {line:?}"));
            serde_json::from_str(array)
                .unwrap_or_else(|err| panic!("{text:?}: {line:?} is not a JSON array: {err}"))
        })
        .collect();
    let mut arrays = arrays.iter();
    for (file, source) in definition.files.iter().zip(&context) {
        let copy = arrays.next().expect("a COPY per file");
        assert_eq!(copy[0], source.path);
        if source.directory {
            let run = arrays.next().expect("a RUN per directory");
            assert_eq!(run.last(), Some(&file.destination), "{text:?}");
        } else {
            assert_eq!(copy[1], file.destination, "{text:?}");
        }
    }
    if let Some(post) = &definition.post {
        let run = arrays.next().expect("a RUN for %post");
        assert_eq!(run[4], post.body, "{text:?}: %post body");
        assert_eq!(
            run.get(5),
            post.interpreter.as_ref(),
            "{text:?}: %post interpreter"
        );
    }
});

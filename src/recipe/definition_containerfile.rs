//! The Containerfile kiln builds a definition file with (`buildah bud`), for the remote builder.
//!
//! The definition arrives parsed and validated ([`Definition`]); this writes `FROM`, a `COPY`
//! per `%files` entry (and a `cp` step for directories) and the `%post` line
//! ([`post_instruction`], made by `spec` since parsing checks its length). Every user string is a
//! JSON string inside an exec-form array ([`exec_form`]): it never becomes shell or Containerfile
//! syntax.

use crate::spec::{Definition, exec_form, post_instruction};

/// Where a `%files` directory waits in the image until `cp` puts it in place.
const FILES_STAGING: &str = "/.kiln-files";

/// Copies the staged directory `$1` to `$2` as SingularityCE's `%files` does (`cp -fLr`, after
/// making `$2`, when it ends in `/`, or else its parent), then removes the staging directory.
const COPY_DIRECTORY: &str = "case \"$2\" in */) mkdir -p \"$2\" ;; \
     *) mkdir -p \"$(dirname \"$2\")\" ;; esac && cp -fLr \"$1\" \"$2\" && rm -rf /.kiln-files";

/// Where the builder put a `%files` source in the build context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextSource {
    /// Relative to the build context (a glob stays a glob, for `COPY` to expand).
    pub path: String,
    /// Whether it is a directory, which SingularityCE copies differently from a file.
    pub directory: bool,
}

/// The Containerfile kiln builds with `buildah bud`: `base` is the image reference buildah
/// pulls (kiln resolves [`Definition::from`] to it), and `context_files[i]` says where, in
/// the build context, the source of `definition.files[i]` was put. Both are kiln's own text, not
/// the user's.
///
/// `%files` are copied before `%post` runs, as SingularityCE does. A file is a `COPY`. A
/// directory is copied the way SingularityCE's `cp -fLr source destination` copies it, which
/// `COPY` cannot do: into an existing directory it lands as `destination/<its name>`,
/// otherwise it becomes `destination`. So it is `COPY`'d to a staging path and copied from
/// there with the image's own `cp` once the base's file system is known. `%post` runs as
/// `/bin/sh -e -x -c <body>`, like SingularityCE's `/bin/sh -ex <script>`. With
/// `-c <interpreter>`, SingularityCE instead writes the body to `/.post.script` and runs
/// `<interpreter> /.post.script` without `-e -x`, and so does kiln: any interpreter works
/// (`perl` and `Rscript` take no `-c`), and a failing command stops the build exactly when it
/// would stop `singularity build`. Labels, help and the runtime scripts go into the SIF.
///
/// # Panics
///
/// If `context_files` and `definition.files` differ in length, which is a bug in kiln.
pub fn containerfile(
    definition: &Definition,
    base: &str,
    context_files: &[ContextSource],
) -> String {
    assert_eq!(
        context_files.len(),
        definition.files.len(),
        "one context path per %files entry"
    );
    let mut out = format!("FROM {base}\n");
    for (index, (file, source)) in definition.files.iter().zip(context_files).enumerate() {
        let destination = file.destination.as_str();
        if !source.directory {
            out += &format!("COPY {}\n", exec_form(&[&source.path, destination]));
            continue;
        }
        let name = source.path.rsplit('/').find(|part| !part.is_empty());
        let staged = format!("{FILES_STAGING}/{index}/{}", name.unwrap_or("root"));
        out += &format!("COPY {}\n", exec_form(&[&source.path, &staged]));
        let copy = [COPY_DIRECTORY, "kiln-files", &staged, destination];
        out += &format!(
            "RUN {}\n",
            exec_form(&[&["/bin/sh", "-c"][..], &copy].concat())
        );
    }
    if let Some(post) = &definition.post {
        out += &format!("{}\n", post_instruction(post));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "Bootstrap: docker\nFrom: ubuntu:22.04\n";

    fn parsed(text: &str) -> Definition {
        Definition::parse(text).unwrap_or_else(|err| panic!("{text:?} was refused: {err}"))
    }

    /// `HEADER` followed by `sections`.
    fn def(sections: &str) -> String {
        format!("{HEADER}{sections}")
    }

    #[test]
    fn the_containerfile_copies_files_then_runs_post() {
        let definition = parsed(&def(
            "%files\n  a.txt /opt/a.txt\n  b\n%post\n  echo hi\n  touch /b\n",
        ));
        let file = |path: &str| ContextSource {
            path: path.into(),
            directory: false,
        };
        let context = [file("files/0"), file("files/1")];
        assert_eq!(
            containerfile(
                &definition,
                "registry.local:5000/library/ubuntu:22.04",
                &context
            ),
            "FROM registry.local:5000/library/ubuntu:22.04\n\
             COPY [\"files/0\", \"/opt/a.txt\"]\n\
             COPY [\"files/1\", \"/b\"]\n\
             RUN [\"/bin/sh\", \"-c\", \"SINGULARITY_ENVIRONMENT=/.singularity.d/env/91-environment.sh; \
             export SINGULARITY_ENVIRONMENT; mkdir -p /.singularity.d/env && \
             : >> \\\"$SINGULARITY_ENVIRONMENT\\\" || exit; exec /bin/sh -e -x -c \\\"$1\\\"\", \
             \"kiln-post\", \"  echo hi\\n  touch /b\\n\"]\n"
        );
        assert_eq!(containerfile(&parsed(HEADER), "base", &[]), "FROM base\n");
    }

    #[test]
    fn directories_are_copied_as_cp_copies_them() {
        let definition = parsed(&def("%files\n  data /opt\n  /home/u/ /srv/in/\n  a.txt\n"));
        let directory = |path: &str| ContextSource {
            path: path.into(),
            directory: true,
        };
        let context = [
            directory("home/u/data"),
            directory("home/u"),
            ContextSource {
                path: "home/u/a.txt".into(),
                directory: false,
            },
        ];
        let containerfile = containerfile(&definition, "base", &context);
        let lines: Vec<&str> = containerfile.lines().collect();
        assert_eq!(lines.len(), 6, "{containerfile}");
        assert_eq!(lines[1], r#"COPY ["home/u/data", "/.kiln-files/0/data"]"#);
        let run = |line: &str| -> Vec<String> {
            serde_json::from_str(line.strip_prefix("RUN ").expect("RUN")).expect("JSON")
        };
        assert_eq!(
            run(lines[2]),
            [
                "/bin/sh",
                "-c",
                COPY_DIRECTORY,
                "kiln-files",
                "/.kiln-files/0/data",
                "/opt"
            ]
        );
        assert_eq!(lines[3], r#"COPY ["home/u", "/.kiln-files/1/u"]"#);
        assert_eq!(run(lines[4])[4..], ["/.kiln-files/1/u", "/srv/in/"]);
        assert_eq!(lines[5], r#"COPY ["home/u/a.txt", "/a.txt"]"#);
    }

    /// The shell step of a directory copy does what `cp -fLr` does in SingularityCE's build.
    #[test]
    fn the_directory_copy_nests_into_existing_directories() {
        let root = tempfile::tempdir().expect("temp dir");
        let staged = root.path().join("staged/data");
        std::fs::create_dir_all(staged.join("sub")).expect("mkdir");
        std::fs::write(staged.join("sub/f"), "x").expect("write");
        std::fs::create_dir_all(root.path().join("opt")).expect("mkdir");
        // The script removes `/.kiln-files`, which never exists on the test host.
        let copy = |destination: &str| {
            let status = std::process::Command::new("/bin/sh")
                .args(["-c", COPY_DIRECTORY, "kiln-files"])
                .arg(&staged)
                .arg(root.path().join(destination))
                .status()
                .expect("sh runs");
            assert!(status.success());
        };
        copy("opt");
        copy("new/place");
        copy("made/");
        for path in ["opt/data/sub/f", "new/place/sub/f", "made/data/sub/f"] {
            assert!(root.path().join(path).is_file(), "{path} missing");
        }
    }

    #[test]
    fn the_post_line_ends_the_containerfile_on_one_line() {
        let body = "echo \"]\"\n`id`; echo a\\\nRUN id \\\n";
        let definition = parsed(&def(&format!("%post\n{body}")));
        let containerfile = containerfile(&definition, "base", &[]);
        let post = post_instruction(definition.post.as_ref().unwrap());
        assert_eq!(containerfile, format!("FROM base\n{post}\n"));
        assert_eq!(containerfile.lines().count(), 2, "{containerfile}");
    }
}

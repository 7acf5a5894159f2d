//! The `kiln` command as a user runs it: names, recipes, refusals.

use std::process::{Command, Output};

/// Runs `kiln` with a clean environment (no KILN_* from the host) and the given arguments.
fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .env_clear()
        .args(args)
        .output()
        .expect("kiln runs")
}

/// Runs `kiln` and returns its standard output, failing on a non-zero exit.
fn stdout(args: &[&str]) -> String {
    let output = kiln(args);
    assert!(
        output.status.success(),
        "kiln {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

#[test]
fn names_do_not_depend_on_entry_order() {
    let forward = stdout(&["name", "samtools=1.21", "bioconda::bcftools=1.21"]);
    let backward = stdout(&["name", "bioconda::bcftools=1.21", "samtools=1.21"]);
    assert_eq!(forward, backward);
    let name = forward.trim();
    assert!(
        name.starts_with("localhost:9090/library/bcftools_samtools:1.21--"),
        "{name}"
    );
    let key16 = name.rsplit("--").next().expect("tag has a key");
    assert_eq!(key16.len(), 16);
    assert!(key16.bytes().all(|b| b.is_ascii_hexdigit()));
}

#[test]
fn format_and_platform_change_the_tag() {
    let docker = stdout(&["name", "samtools=1.21", "bioconda::bcftools=1.21"]);
    let sif = stdout(&[
        "name",
        "--format",
        "sif",
        "samtools=1.21",
        "bioconda::bcftools=1.21",
    ]);
    let arm = stdout(&[
        "name",
        "--platform",
        "linux/arm64",
        "samtools=1.21",
        "bioconda::bcftools=1.21",
    ]);
    assert!(
        sif.starts_with("oras://localhost:9090/library/bcftools_samtools:1.21--"),
        "{sif}"
    );
    let tag = |name: &str| {
        name.trim()
            .rsplit(':')
            .next()
            .expect("has a tag")
            .to_owned()
    };
    assert_ne!(tag(&docker), tag(&sif));
    assert_ne!(tag(&docker), tag(&arm));
    assert_ne!(tag(&sif), tag(&arm));
    // Aliases name the same platform.
    assert_eq!(
        arm,
        stdout(&[
            "name",
            "--platform",
            "aarch64",
            "bioconda::bcftools=1.21",
            "samtools=1.21"
        ])
    );
}

#[test]
fn sif_for_two_platforms_gives_one_image_each() {
    let names = stdout(&[
        "name",
        "--format",
        "sif",
        "--platform",
        "arm64",
        "--platform",
        "amd64",
        "samtools=1.21",
    ]);
    let lines: Vec<&str> = names.lines().collect();
    assert_eq!(lines.len(), 2, "{names}");
    assert_ne!(lines[0], lines[1]);
    let amd = stdout(&["name", "--format", "sif", "samtools=1.21"]);
    assert_eq!(
        lines[0],
        amd.trim(),
        "the amd64 image of a two-platform request is the amd64 image"
    );
}

#[test]
fn registry_comes_from_configuration() {
    let output = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .env_clear()
        .env("KILN_REGISTRY", "containers.example.org")
        .args(["name", "samtools=1.21"])
        .output()
        .expect("kiln runs");
    let name = String::from_utf8(output.stdout).expect("utf-8");
    assert!(
        name.starts_with("containers.example.org/library/samtools:1.21--"),
        "{name}"
    );
    let default = stdout(&["name", "samtools=1.21"]);
    assert_ne!(
        name.rsplit("--").next(),
        default.rsplit("--").next(),
        "the repository is part of the key"
    );
}

#[test]
fn hostile_entries_exit_2_naming_the_entry() {
    let cases = [
        (
            "numpy;rm -rf /",
            "package entry `numpy;rm -rf /` contains `;`",
        ),
        ("numpy$(id)", "package entry `numpy$(id)` contains `$`"),
        ("pip::requests", "write `pip:requests`"),
        ("--", ""),
    ];
    for (entry, expected) in cases {
        let output = kiln(&["recipe", entry]);
        assert_eq!(output.status.code(), Some(2), "{entry:?}");
        assert!(
            output.stdout.is_empty(),
            "nothing is printed to stdout for {entry:?}"
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{entry:?}: {stderr}");
    }
    let output = kiln(&["recipe", "numpy;rm -rf /"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert_eq!(
        kiln(&["name", "--platform", "s390x", "numpy"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        kiln(&["name", "--format", "tar", "numpy"]).status.code(),
        Some(2)
    );
    assert_eq!(
        kiln(&["name", "--channel", "http://evil", "numpy"])
            .status
            .code(),
        Some(2)
    );
    let outside = kiln(&["recipe", "--base", "docker.io/library/debian:12", "numpy"]);
    assert_eq!(outside.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&outside.stderr);
    assert!(
        stderr
            .starts_with("error: --base: the base image `docker.io/library/debian:12` was refused")
            && stderr.contains("kiln/base/NAME:TAG"),
        "{stderr}"
    );
}

/// `--base` names a base in kiln's registry: the recipe starts from it and the name differs
/// from the same packages' on the default base only in its key.
#[test]
fn a_named_base_starts_the_recipe_and_changes_the_key() {
    let recipe = stdout(&["recipe", "--base", "kiln/base/gl:bookworm", "numpy=2.1"]);
    assert!(
        recipe.contains("\nFROM localhost:9090/kiln/base/gl:bookworm\n"),
        "{recipe}"
    );
    let default = stdout(&["name", "numpy=2.1"]);
    let on_gl = stdout(&["name", "--base", "kiln/base/gl:bookworm", "numpy=2.1"]);
    assert_ne!(default, on_gl);
    assert_eq!(
        default.rsplit_once("--").map(|(name, _)| name),
        on_gl.rsplit_once("--").map(|(name, _)| name)
    );
}

/// Golden files of every generated text, for conda-only, pip-only and mixed requests.
#[test]
fn generated_recipes() {
    let requests: [(&str, &[&str]); 3] = [
        (
            "conda",
            &[
                "bioconda::samtools=1.21",
                "bcftools>=1.20,<2",
                "htslib=1.21=h566b1c6_1",
            ],
        ),
        (
            "pip",
            &[
                "pip:requests==2.32.3",
                "pip:Black",
                "pip:pandas[excel]>=2.2",
            ],
        ),
        (
            "mixed",
            &[
                "python=3.12",
                "numpy=2.1",
                "pip:requests==2.32.3; python_version >= '3.9'",
            ],
        ),
    ];
    for (kind, entries) in requests {
        let with = |extra: &[&str]| {
            let mut args = vec!["recipe"];
            args.extend_from_slice(extra);
            args.extend_from_slice(entries);
            stdout(&args)
        };
        insta::assert_snapshot!(format!("{kind}.Dockerfile"), with(&[]));
        insta::assert_snapshot!(format!("{kind}.def"), with(&["--format", "sif"]));
        insta::assert_snapshot!(format!("{kind}.conda.yml"), with(&["--conda-env"]));
    }
}

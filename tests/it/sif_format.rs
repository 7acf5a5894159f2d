//! kiln's SIF files, read back by `siftool`, sylabs/sif's own reader.
//!
//! Each test makes a small squashfs root file system with `mksquashfs` (gzip, root-owned, as
//! singularity makes them), wraps it with [`kiln::assemble::sif::write_sif`], and checks with
//! `siftool` that the header and every descriptor say what singularity would write and that
//! `siftool dump` gives back exactly the bytes that went in. siftool is built, pinned, into
//! `target/tools/` by `tests/support/go-tools.sh` (it needs Go); `mksquashfs` comes from the
//! system (squashfs-tools). A missing tool fails the tests rather than skipping them.

use crate::support::go_tools;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use go_tools::tool;
use sha2::{Digest as _, Sha256};

use kiln::assemble::sif::{
    SifArch, SifDataType, SifInput, SifObject, SifSummary, uuid_from, write_sif,
};

const DEFINITION: &[u8] = b"bootstrap: docker\nfrom: kiln.example/env:1\n\n";
const INSPECT: &[u8] = br##"{"data":{"attributes":{"labels":{"org.label-schema.schema-version":"1.0"},"runscript":"#!/bin/sh\nexec python \"$@\"\n","deffile":"bootstrap: docker\nfrom: kiln.example/env:1"}},"type":"container"}"##;
const OCI_CONFIG: &[u8] = br#"{"Env":["PATH=/opt/conda/bin:/usr/bin:/bin"],"Cmd":["python"]}"#;
const CREATED: i64 = 1_700_000_000;

/// siftool, built once per test run by `tests/support/go-tools.sh`.
fn siftool() -> PathBuf {
    tool("siftool")
}

/// Runs `cmd` and returns its stdout; panics with the command, status and output on failure.
fn run(cmd: &mut Command) -> Vec<u8> {
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} could not be started: {e}"));
    assert!(
        output.status.success(),
        "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// `siftool ARGS… FILE` as text.
fn siftool_text(args: &[&str], sif: &Path) -> String {
    let stdout = run(Command::new(siftool()).args(args).arg(sif));
    String::from_utf8(stdout).expect("siftool prints UTF-8")
}

/// A squashfs of a tiny root file system, made the way singularity makes them (§5.4 of the
/// reference): gzip, default 128 KiB blocks, root-owned; fixed times so it is reproducible.
fn squashfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    fs::create_dir_all(root.join(".singularity.d/env")).expect("create the rootfs");
    fs::create_dir_all(root.join("opt")).expect("create the rootfs");
    fs::write(root.join("opt/hello.txt"), "hello from kiln\n").expect("write a rootfs file");
    let runscript = root.join(".singularity.d/runscript");
    fs::write(&runscript, "#!/bin/sh\nexec python \"$@\"\n").expect("write the runscript");
    fs::set_permissions(&runscript, fs::Permissions::from_mode(0o755))
        .expect("chmod the runscript");

    let out = dir.join("rootfs.squashfs");
    run(Command::new("mksquashfs")
        .arg(&root)
        .arg(&out)
        .args(["-noappend", "-comp", "gzip", "-all-root"])
        .args([
            "-mkfs-time",
            "0",
            "-all-time",
            "0",
            "-quiet",
            "-no-progress",
        ]));
    out
}

fn input<'a>(arch: SifArch, oci_config: Option<&'a [u8]>, squashfs: &'a Path) -> SifInput<'a> {
    SifInput {
        id: uuid_from(b"kiln build key"),
        created: CREATED,
        arch,
        definition: DEFINITION,
        inspect: INSPECT,
        oci_config,
        squashfs,
    }
}

/// The `siftool list` row of an object, and the `Key: value` pairs `siftool info` prints for it.
fn expected(object: &SifObject, arch: SifArch) -> (String, BTreeMap<String, String>) {
    let (list_type, info_type) = match object.data_type {
        SifDataType::Definition => ("Def.FILE".to_owned(), "Def.FILE"),
        SifDataType::GenericJson => ("JSON.Generic".to_owned(), "JSON.Generic"),
        SifDataType::Partition => (format!("FS (Squashfs/*System/{})", arch.as_str()), "FS"),
    };
    let row = format!(
        "{:<5}|1       |NONE    |{:<26}|{list_type}",
        object.id,
        format!("{}-{}", object.offset, object.offset + object.size),
    );
    let time = created_text();
    let mut info = vec![
        ("Data Type", info_type.to_owned()),
        ("ID", object.id.to_string()),
        ("Group ID", "1".to_owned()),
        ("Linked ID", "NONE".to_owned()),
        ("Offset", object.offset.to_string()),
        ("Size", object.size.to_string()),
        ("Created At", time.clone()),
        ("Modified At", time),
    ];
    if !object.name.is_empty() {
        info.push(("Name", object.name.to_owned()));
    }
    if object.data_type == SifDataType::Partition {
        info.push(("Filesystem Type", "Squashfs".to_owned()));
        info.push(("Partition Type", "*System".to_owned()));
        info.push(("Architecture", arch.as_str().to_owned()));
    }
    let info = info.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    (row, info)
}

/// [`CREATED`] as siftool prints times.
fn created_text() -> String {
    chrono::DateTime::from_timestamp(CREATED, 0)
        .expect("CREATED is a valid time")
        .format("%Y-%m-%d %H:%M:%S +0000 UTC")
        .to_string()
}

/// `siftool info` (or `header`) output as `Key: value` pairs (its column widths vary with the keys shown).
fn parse_info(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
        .collect()
}

/// Writes a SIF for `arch` and checks everything siftool can say about it.
fn check_arch(arch: SifArch, oci_config: Option<&[u8]>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let squashfs = squashfs(dir.path());
    let sif = dir.path().join("image.sif");
    let summary = write_sif(&input(arch, oci_config, &squashfs), &sif).expect("write_sif");

    let mut contents: Vec<(SifDataType, &[u8])> = vec![
        (SifDataType::Definition, DEFINITION),
        (SifDataType::GenericJson, INSPECT),
    ];
    if let Some(config) = oci_config {
        contents.push((SifDataType::GenericJson, config));
    }
    let squashfs_bytes = fs::read(&squashfs).expect("read the squashfs");
    contents.push((SifDataType::Partition, &squashfs_bytes));
    assert_eq!(summary.objects.len(), contents.len());

    let header = siftool_text(&["header"], &sif);
    println!("siftool header ({}):\n{header}", arch.as_str());
    let time = created_text();
    let id = uuid::Uuid::from_bytes(uuid_from(b"kiln build key")).to_string();
    let free = (48 - contents.len()).to_string();
    let expected_header: BTreeMap<String, String> = [
        ("Launch Script", "#!/usr/bin/env run-singularity"),
        ("Version", "01"),
        ("Primary Architecture", arch.as_str()),
        ("ID", &id),
        ("Created At", &time),
        ("Modified At", &time),
        ("Descriptors Free", &free),
        ("Descriptors Total", "48"),
        ("Descriptors Offset", "4096"),
        ("Descriptors Size", "27 KiB"),
        ("Data Offset", "32176"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    // siftool rounds the data size to KiB; the exact value is checked through the file size.
    let mut got_header = parse_info(&header);
    assert!(got_header.remove("Data Size").is_some(), "{header}");
    assert_eq!(got_header, expected_header, "siftool header:\n{header}");
    let data_end = summary
        .objects
        .last()
        .map(|o| o.offset + o.size)
        .expect("a SIF has objects");
    assert_eq!(data_end, summary.size);

    let list = siftool_text(&["list"], &sif);
    println!("siftool list ({}):\n{list}", arch.as_str());
    let rows: Vec<&str> = list
        .lines()
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    assert_eq!(rows.len(), contents.len(), "{list}");

    for (object, (data_type, bytes)) in summary.objects.iter().zip(&contents) {
        assert_eq!(object.data_type, *data_type);
        let (row, info) = expected(object, arch);
        assert_eq!(rows[object.id as usize - 1], row, "{list}");

        let id = object.id.to_string();
        let got = siftool_text(&["info", &id], &sif);
        println!("siftool info {id} ({}):\n{got}", arch.as_str());
        assert_eq!(parse_info(&got), info, "siftool info {id}:\n{got}");

        let dumped = run(Command::new(siftool()).args(["dump", &id]).arg(&sif));
        assert!(dumped == *bytes, "siftool dump {id} differs from the input");
    }

    // The partition is 4096-aligned, as singularity's reader and the kernel loop device expect.
    let partition = summary.objects.last().expect("a SIF has objects");
    assert_eq!(partition.offset % 4096, 0);
    assert_file_digest(&sif, &summary);
}

fn assert_file_digest(path: &Path, summary: &SifSummary) {
    let bytes = fs::read(path).expect("read the SIF");
    assert_eq!(summary.size, bytes.len() as u64);
    assert_eq!(summary.sha256, hex::encode(Sha256::digest(&bytes)));
}

#[test]
fn amd64_sif_reads_back_with_siftool() {
    check_arch(SifArch::Amd64, Some(OCI_CONFIG));
}

#[test]
fn arm64_sif_reads_back_with_siftool() {
    check_arch(SifArch::Arm64, None);
}

#[test]
fn same_input_gives_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let squashfs = squashfs(dir.path());
    let input = input(SifArch::Amd64, Some(OCI_CONFIG), &squashfs);
    let first = dir.path().join("first.sif");
    let second = dir.path().join("second.sif");
    let a = write_sif(&input, &first).unwrap();
    let b = write_sif(&input, &second).unwrap();

    assert_eq!(a, b);
    assert_file_digest(&first, &a);
    assert_file_digest(&second, &b);
    assert!(fs::read(&first).unwrap() == fs::read(&second).unwrap());

    // The header carries the caller's UUID and time, not random ones or the clock.
    let header = fs::read(&first).unwrap();
    assert_eq!(&header[48..64], &uuid_from(b"kiln build key"));
    assert_eq!(&header[64..72], &CREATED.to_le_bytes());

    // A rewrite replaces the file in place with identical bytes.
    let again = write_sif(&input, &first).unwrap();
    assert_eq!(again, a);
    assert_file_digest(&first, &a);
}

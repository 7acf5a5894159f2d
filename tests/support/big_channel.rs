//! A conda channel the size of conda-forge, `kiln-big`, generated on disk in seconds: for the
//! repodata benchmark and the test that solves against it.
//!
//! Each platform subdir gets [`Scale::platform_records`] records and `noarch`
//! [`Scale::noarch_records`] (conda-forge: about 300,000 and 100,000), written as
//! `repodata.json` and `repodata.json.zst`. Most records are generated: tens of thousands of
//! names built from syllables (`py-`, `r-`, `lib…`), several versions and builds each, with
//! license, checksums, sizes, timestamps, 4–9 dependencies and 1–2 constraints on other
//! generated names, so a record is about as long as conda-forge's (about 730 bytes). No
//! archive exists for them.
//!
//! A handful of `kiln-*` packages have thousands of versions, and only the version a request
//! should get has a real `.conda` archive (and its true sha256 in the repodata), so a solver
//! that picks anything else fails to install:
//!
//! | request | picks | out of |
//! | --- | --- | --- |
//! | `kiln-app` | the newest, which depends on `kiln-core >=4,<5.0a0` and `kiln-data >=2` | 60 versions |
//! | (dependency) `kiln-core` | the newest 4.x | 8 majors × [`Scale::minors`] |
//! | `kiln-tool>=2,<3` | the newest 2.x.y | 4 majors × 30 minors × 25 patches |
//! | (dependency) `kiln-data` (`noarch`) | the newest 3.x | 3 majors × [`Scale::minors`] |
//!
//! Seven small libraries ([`LIBRARIES`], two of them `noarch`, most depending on others) have
//! 3 majors × [`Scale::minors`] versions each, and only the newest has an archive. With them,
//! [`BigChannel::FULL_REQUEST`] installs every archive of the channel, and each of
//! [`BigChannel::COMBINATIONS`] is a different subset of it: a new environment made only of
//! packages an earlier build installed.
//!
//! The JSON is written in batches straight to the file, so generating holds little memory
//! (the benchmark measures kiln's).

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use rattler_conda_types::compression_level::CompressionLevel;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::rng::SplitMix64;

/// The channel's name: its directory and the first path segment its server answers.
pub const BIG_CHANNEL_NAME: &str = "kiln-big";

/// The build timestamp of the real packages (2023-01-01), in milliseconds.
const TIMESTAMP_MS: u64 = 1_672_531_200_000;

/// How big to make the channel.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    /// Records in each platform subdir.
    pub platform_records: usize,
    /// Records in `noarch`.
    pub noarch_records: usize,
    /// Whether `linux-aarch64` is written too (else only `linux-64` and `noarch`).
    pub aarch64: bool,
    /// Minor versions per major of `kiln-core` and `kiln-data`.
    pub minors: usize,
}

impl Scale {
    /// conda-forge's size: 300,000 records per platform subdir, 100,000 in `noarch`.
    pub const CONDA_FORGE: Scale = Scale {
        platform_records: 300_000,
        noarch_records: 100_000,
        aarch64: true,
        minors: 500,
    };

    /// A few thousand records, for smoke runs.
    pub const SMALL: Scale = Scale {
        platform_records: 3_000,
        noarch_records: 1_000,
        aarch64: false,
        minors: 20,
    };
}

/// A generated channel in a temporary directory, removed on drop.
#[derive(Debug)]
pub struct BigChannel {
    /// The channel directory (named [`BIG_CHANNEL_NAME`]).
    pub dir: PathBuf,
    /// Bytes of each subdir's `repodata.json`, by subdir.
    pub repodata_bytes: Vec<(&'static str, u64)>,
    /// Bytes of each subdir's `repodata.json.zst`, by subdir.
    pub zst_bytes: Vec<(&'static str, u64)>,
    /// What the request [`BigChannel::REQUEST`] must resolve to: (name, version, subdir kind),
    /// `noarch` or `platform`, sorted by name.
    pub expected: Vec<(&'static str, String, &'static str)>,
    /// Every package with an archive, as [`BigChannel::expected`]: what
    /// [`BigChannel::FULL_REQUEST`] must resolve to.
    pub archives: Vec<(&'static str, String, &'static str)>,
    _temp: tempfile::TempDir,
}

impl BigChannel {
    /// The request whose packages have archives.
    pub const REQUEST: [&'static str; 2] = ["kiln-app", "kiln-tool>=2,<3"];

    /// A request that installs every archive of the channel ([`BigChannel::archives`]).
    pub const FULL_REQUEST: [&'static str; 5] = [
        "kiln-app",
        "kiln-tool>=2,<3",
        "kiln-git",
        "kiln-sql",
        "kiln-schemas",
    ];

    /// Three requests, each a different subset of what [`BigChannel::FULL_REQUEST`] installs
    /// (dependencies included), and none the same as it.
    pub const COMBINATIONS: [&'static [&'static str]; 3] = [
        &["kiln-curl", "kiln-docs"],
        &["kiln-app", "kiln-sql"],
        &["kiln-tool>=2,<3", "kiln-ssl", "kiln-schemas"],
    ];

    /// Writes the channel at `scale`.
    pub fn generate(scale: Scale) -> io::Result<BigChannel> {
        let temp = tempfile::tempdir()?;
        let dir = temp.path().join(BIG_CHANNEL_NAME);
        let mut platforms = vec!["linux-64"];
        if scale.aarch64 {
            platforms.push("linux-aarch64");
        }
        let mut repodata_bytes = Vec::new();
        let mut zst_bytes = Vec::new();
        let subdirs: Vec<(&'static str, usize)> = platforms
            .iter()
            .map(|&p| (p, scale.platform_records))
            .chain([("noarch", scale.noarch_records)])
            .collect();
        for (subdir, records) in subdirs {
            let subdir_dir = dir.join(subdir);
            fs::create_dir_all(&subdir_dir)?;
            let real = real_records(&subdir_dir, subdir, scale)?;
            let path = subdir_dir.join("repodata.json");
            let written = write_repodata(&path, subdir, records.saturating_sub(real.len()), &real)?;
            repodata_bytes.push((subdir, written));
            zst_bytes.push((subdir, compress(&path)?));
        }
        let last_minor = scale.minors - 1;
        let expected = vec![
            ("kiln-app", "60.0".to_owned(), "platform"),
            ("kiln-core", format!("4.{last_minor}"), "platform"),
            ("kiln-data", format!("3.{last_minor}"), "noarch"),
            ("kiln-tool", "2.29.24".to_owned(), "platform"),
        ];
        let mut archives = expected.clone();
        archives.extend(LIBRARIES.iter().map(|&(name, noarch, _)| {
            let kind = if noarch { "noarch" } else { "platform" };
            (name, format!("3.{last_minor}"), kind)
        }));
        archives.sort();
        Ok(BigChannel {
            dir,
            repodata_bytes,
            zst_bytes,
            expected,
            archives,
            _temp: temp,
        })
    }

    /// All records in all subdirs.
    pub fn record_count(scale: Scale) -> usize {
        scale.platform_records * if scale.aarch64 { 2 } else { 1 } + scale.noarch_records
    }
}

/// One repodata record.
struct Record {
    name: String,
    version: String,
    build: String,
    build_number: u32,
    depends: Vec<String>,
    constrains: Vec<String>,
    sha256: String,
    md5: Option<String>,
    size: u64,
    timestamp: u64,
}

impl Record {
    fn file_name(&self) -> String {
        format!("{}-{}-{}.conda", self.name, self.version, self.build)
    }

    /// `"<file>": {…}` into `out`.
    fn write(&self, out: &mut String, subdir: &str) {
        let _ = write!(
            out,
            r#""{}":{{"build":"{}","build_number":{},"depends":["#,
            self.file_name(),
            self.build,
            self.build_number
        );
        for (i, depend) in self.depends.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, r#""{depend}""#);
        }
        out.push_str(r#"],"constrains":["#);
        for (i, constraint) in self.constrains.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, r#""{constraint}""#);
        }
        let _ = write!(out, r#"],"license":"BSD-3-Clause","license_family":"BSD","#);
        if let Some(md5) = &self.md5 {
            let _ = write!(out, r#""md5":"{md5}","#);
        }
        let _ = write!(
            out,
            r#""name":"{}","sha256":"{}","size":{},"subdir":"{subdir}","timestamp":{},"version":"{}""#,
            self.name, self.sha256, self.size, self.timestamp, self.version
        );
        if subdir == "noarch" {
            out.push_str(r#","noarch":"generic""#);
        }
        out.push('}');
    }
}

/// The small libraries: name, whether it is `noarch`, and what each of its versions depends
/// on. Each has 3 majors × [`Scale::minors`] versions; the newest, 3.x, has an archive.
pub const LIBRARIES: [(&str, bool, &[&str]); 7] = [
    ("kiln-zlib", false, &[]),
    ("kiln-ssl", false, &["kiln-zlib >=2"]),
    (
        "kiln-curl",
        false,
        &["kiln-ssl >=3,<4.0a0", "kiln-zlib >=2"],
    ),
    ("kiln-git", false, &["kiln-curl >=3", "kiln-docs >=2"]),
    ("kiln-sql", false, &["kiln-zlib >=3"]),
    ("kiln-docs", true, &[]),
    ("kiln-schemas", true, &["kiln-docs >=3,<4.0a0"]),
];

/// The `kiln-*` records of `subdir`; the ones a request picks get archives.
fn real_records(subdir_dir: &Path, subdir: &str, scale: Scale) -> io::Result<Vec<Record>> {
    let mut records = Vec::new();
    let mut rng = SplitMix64(0x6b69_6c6e ^ subdir.len() as u64);
    let last_minor = scale.minors - 1;
    let mut add = |name: &str, version: String, depends: Vec<String>, real: bool| {
        let record = Record {
            name: name.to_owned(),
            build: "h0_0".to_owned(),
            build_number: 0,
            depends,
            constrains: Vec::new(),
            sha256: hex(&mut rng, 32),
            md5: None,
            size: 4096,
            timestamp: TIMESTAMP_MS,
            version,
        };
        (record, real)
    };
    let mut planned = Vec::new();
    if subdir == "noarch" {
        for major in 1..=3 {
            for minor in 0..scale.minors {
                let real = major == 3 && minor == last_minor;
                planned.push(add(
                    "kiln-data",
                    format!("{major}.{minor}"),
                    Vec::new(),
                    real,
                ));
            }
        }
    } else {
        for major in 1..=60 {
            let depends = if major == 60 {
                vec![
                    "kiln-core >=4,<5.0a0".to_owned(),
                    "kiln-data >=2".to_owned(),
                    "__glibc >=2.17,<3.0.a0".to_owned(),
                ]
            } else {
                vec![format!("kiln-core >={},<{}", major % 8 + 1, major % 8 + 2)]
            };
            planned.push(add("kiln-app", format!("{major}.0"), depends, major == 60));
        }
        for major in 1..=8 {
            for minor in 0..scale.minors {
                let real = major == 4 && minor == last_minor;
                planned.push(add(
                    "kiln-core",
                    format!("{major}.{minor}"),
                    Vec::new(),
                    real,
                ));
            }
        }
        for major in 1..=4 {
            for minor in 0..30 {
                for patch in 0..25 {
                    let real = major == 2 && minor == 29 && patch == 24;
                    let version = format!("{major}.{minor}.{patch}");
                    planned.push(add("kiln-tool", version, Vec::new(), real));
                }
            }
        }
    }
    for &(name, noarch, depends) in &LIBRARIES {
        if noarch != (subdir == "noarch") {
            continue;
        }
        for major in 1..=3 {
            for minor in 0..scale.minors {
                let real = major == 3 && minor == last_minor;
                let depends = depends.iter().map(|d| (*d).to_owned()).collect();
                planned.push(add(name, format!("{major}.{minor}"), depends, real));
            }
        }
    }
    for (mut record, real) in planned {
        if real {
            let archive = subdir_dir.join(record.file_name());
            let bytes = write_archive(&archive, &record, subdir)?;
            record.sha256 = hex::encode(Sha256::digest(&bytes));
            record.size = bytes.len() as u64;
        }
        records.push(record);
    }
    Ok(records)
}

/// Writes a real `.conda` archive of `record`: one file, `share/<name>/VERSION`.
fn write_archive(archive: &Path, record: &Record, subdir: &str) -> io::Result<Vec<u8>> {
    let staging = tempfile::tempdir()?;
    let base = staging.path();
    let relative = format!("share/{}/VERSION", record.name);
    let contents = format!("{} {}\n", record.name, record.version);
    fs::create_dir_all(base.join(format!("share/{}", record.name)))?;
    fs::write(base.join(&relative), &contents)?;
    fs::create_dir_all(base.join("info"))?;
    let mut index = json!({
        "name": record.name,
        "version": record.version,
        "build": record.build,
        "build_number": record.build_number,
        "depends": record.depends,
        "license": "BSD-3-Clause",
        "subdir": subdir,
        "timestamp": record.timestamp,
    });
    if subdir == "noarch" {
        index["noarch"] = json!("generic");
    }
    fs::write(base.join("info/index.json"), index.to_string())?;
    let paths = json!({
        "paths": [{
            "_path": relative,
            "path_type": "hardlink",
            "sha256": hex::encode(Sha256::digest(contents.as_bytes())),
            "size_in_bytes": contents.len(),
        }],
        "paths_version": 1,
    });
    fs::write(base.join("info/paths.json"), paths.to_string())?;
    let files: Vec<PathBuf> = [relative.as_str(), "info/index.json", "info/paths.json"]
        .iter()
        .map(|path| base.join(path))
        .collect();
    let stem = record.file_name();
    let stem = stem.trim_end_matches(".conda");
    rattler_package_streaming::write::write_conda_package(
        fs::File::create(archive)?,
        base,
        &files,
        CompressionLevel::Numeric(3),
        Some(1),
        stem,
        None,
        None,
    )
    .map_err(io::Error::other)?;
    fs::read(archive)
}

/// Syllables generated names are made of.
const PREFIXES: [&str; 12] = [
    "",
    "py-",
    "r-",
    "lib",
    "perl-",
    "bioconductor-",
    "ros-",
    "go-",
    "rust-",
    "jupyter-",
    "xorg-",
    "font-",
];
const STEMS: [&str; 40] = [
    "arrow",
    "boost",
    "cairo",
    "dask",
    "eigen",
    "fftw",
    "gdal",
    "hdf",
    "icu",
    "jpeg",
    "krb",
    "lz",
    "mpi",
    "netcdf",
    "openssl",
    "pandas",
    "qt",
    "root",
    "scipy",
    "tiff",
    "uv",
    "vtk",
    "wx",
    "xz",
    "yaml",
    "zlib",
    "blas",
    "curl",
    "expat",
    "ffi",
    "glib",
    "harfbuzz",
    "json",
    "matplotlib",
    "numpy",
    "pillow",
    "sqlite",
    "torch",
    "xml",
    "zstd",
];
const SUFFIXES: [&str; 12] = [
    "", "-core", "-base", "-tools", "-devel", "-utils", "-static", "-plugins", "-data", "-python",
    "-cpp", "-io",
];

/// The generated name number `i`: unique per `i` for the first 5,760 × 100 numbers.
fn generated_name(i: usize) -> String {
    let prefix = PREFIXES[i % PREFIXES.len()];
    let stem = STEMS[(i / PREFIXES.len()) % STEMS.len()];
    let suffix = SUFFIXES[(i / (PREFIXES.len() * STEMS.len())) % SUFFIXES.len()];
    let round = i / (PREFIXES.len() * STEMS.len() * SUFFIXES.len());
    if round == 0 {
        format!("{prefix}{stem}{suffix}")
    } else {
        format!("{prefix}{stem}{round}{suffix}")
    }
}

/// Names generated per batch (one batch per thread at a time).
const BATCH_NAMES: usize = 1_000;

/// Writes `subdir`'s `repodata.json`: `count` generated records and `real`. Returns its size.
fn write_repodata(path: &Path, subdir: &str, count: usize, real: &[Record]) -> io::Result<u64> {
    let mut file = io::BufWriter::with_capacity(1 << 20, fs::File::create(path)?);
    write!(
        file,
        r#"{{"info":{{"subdir":"{subdir}"}},"packages":{{}},"packages.conda":{{"#
    )?;
    // Every subdir has real records, so generated ones always follow a comma.
    for (i, record) in real.iter().enumerate() {
        let mut text = String::new();
        if i > 0 {
            text.push(',');
        }
        record.write(&mut text, subdir);
        file.write_all(text.as_bytes())?;
    }
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let mut written = 0;
    let mut next_name = 0;
    while written < count {
        // Each batch may write up to its share of what is left (names have 1-36 records).
        let mut left = count - written;
        let mut batches = Vec::new();
        for t in 0..threads {
            let limit = left.min(BATCH_NAMES * 13);
            if limit == 0 {
                break;
            }
            batches.push((next_name + t * BATCH_NAMES, limit));
            left -= limit;
        }
        let texts: Vec<(String, usize)> = std::thread::scope(|scope| {
            let workers: Vec<_> = batches
                .iter()
                .map(|&(names, limit)| scope.spawn(move || generate_batch(subdir, names, limit)))
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("generator thread"))
                .collect()
        });
        for (text, records) in texts {
            if records > 0 {
                file.write_all(b",")?;
                file.write_all(text.as_bytes())?;
            }
            written += records;
        }
        next_name += threads * BATCH_NAMES;
    }
    file.write_all(b"},\"removed\":[],\"repodata_version\":1}")?;
    file.flush()?;
    drop(file);
    Ok(fs::metadata(path)?.len())
}

/// Up to `limit` records of names `first_name..first_name + BATCH_NAMES`; their text
/// (comma-separated) and count.
fn generate_batch(subdir: &str, first_name: usize, limit: usize) -> (String, usize) {
    let mut rng = SplitMix64((first_name as u64) << 8 ^ subdir.len() as u64);
    let mut text = String::with_capacity(limit * 760);
    let mut count = 0;
    let noarch = subdir == "noarch";
    // noarch names are their own range, so they differ from the platform subdirs' names.
    let offset = if noarch { 400_000 } else { 0 };
    'names: for n in first_name..first_name + BATCH_NAMES {
        let name = generated_name(n + offset);
        let versions = 1 + rng.below(12);
        let builds = 1 + rng.below(3);
        for v in 0..versions {
            let version = format!("{}.{}.{}", 1 + v / 4, (v % 4) * 3, rng.below(10));
            for b in 0..builds {
                if count == limit {
                    break 'names;
                }
                let depends = (0..4 + rng.below(6))
                    .map(|_| {
                        let other = generated_name(rng.below(first_name + BATCH_NAMES) + offset);
                        let major = 1 + rng.below(3);
                        format!("{other} >={major}.{},<{}.0a0", rng.below(10), major + 1)
                    })
                    .chain((!noarch).then(|| "libgcc-ng >=12".to_owned()))
                    .chain((!noarch).then(|| "__glibc >=2.17,<3.0.a0".to_owned()))
                    .collect();
                let constrains = (0..1 + rng.below(2))
                    .map(|_| {
                        let other = generated_name(rng.below(first_name + BATCH_NAMES) + offset);
                        format!("{other} >={}.{}", 1 + rng.below(4), rng.below(20))
                    })
                    .collect();
                let record = Record {
                    name: name.clone(),
                    constrains,
                    build: if noarch {
                        format!("pyhd8ed1ab_{b}")
                    } else {
                        format!("h{}_{b}", hex(&mut rng, 4))
                    },
                    build_number: b as u32,
                    depends,
                    sha256: hex(&mut rng, 32),
                    md5: Some(hex(&mut rng, 16)),
                    size: 10_000 + rng.below(50_000_000) as u64,
                    timestamp: TIMESTAMP_MS + rng.below(100_000_000) as u64,
                    version: version.clone(),
                };
                if count > 0 {
                    text.push(',');
                }
                record.write(&mut text, subdir);
                count += 1;
            }
        }
    }
    (text, count)
}

/// Writes `<path>.zst` (zstd level 3); returns its size.
fn compress(path: &Path) -> io::Result<u64> {
    let zst = path.with_extension("json.zst");
    let mut input = io::BufReader::new(fs::File::open(path)?);
    let output = io::BufWriter::new(fs::File::create(&zst)?);
    let mut encoder = zstd::Encoder::new(output, 3)?;
    io::copy(&mut input, &mut encoder)?;
    encoder.finish()?.flush()?;
    Ok(fs::metadata(&zst)?.len())
}

/// `bytes` random bytes as lowercase hex.
fn hex(rng: &mut SplitMix64, bytes: usize) -> String {
    let mut out = String::with_capacity(bytes * 2);
    while out.len() < bytes * 2 {
        let _ = write!(out, "{:016x}", rng.next_u64());
    }
    out.truncate(bytes * 2);
    out
}

//! Search benchmark: how long the package search behind the web UI's autocomplete takes per
//! keystroke, against a target of well under 50 ms.
//!
//! It generates a conda channel of 10,000 realistic-looking package names (bioinformatics-ish
//! words with prefixes and suffixes, 2–6 versions each, spread over `linux-64`, `linux-aarch64`
//! and `noarch`) as in-memory `repodata.json`, and measures:
//!
//! 1. **index build**: parsing the repodata and building the sorted index (done in the
//!    background by kiln, hourly);
//! 2. **index search**: 1,000 queries of 1–6 characters, prefixes of generated names as someone
//!    types them, straight on the index (`CondaIndex::search`);
//! 3. **HTTP search**: the same queries as `GET /api/v1/search?q=…` to kiln served in-process
//!    on 127.0.0.1, whose channel is a local axum server serving the generated repodata and
//!    whose pip index is a local server without projects (so the whole path runs: routing,
//!    query parsing, the index, the pip lookup or its cached answer, JSON).
//!
//! It prints p50, p99 and max per query in microseconds.
//!
//! ```sh
//! cargo bench --bench search
//! ```
//!
//! No network is needed. `cargo test --all-targets` runs it without `--bench`: then the
//! channel has 1,000 names and 100 queries are timed, a smoke test that keeps it working.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use axum::http::{StatusCode, Uri};
use axum::response::IntoResponse as _;
use kiln::config::{Config, RegistryUser};
use kiln::search::{ChannelPackages, CondaIndex, MAX_CONDA_HITS, RepodataNames, SUBDIRS};
use serde_json::{Value, json};

/// The generated channel's name.
const CHANNEL: &str = "kiln-bench";

/// What a single search must stay under.
const TARGET: Duration = Duration::from_millis(50);

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; without it this is the smoke run of `cargo test`.
    let full = std::env::args().any(|arg| arg == "--bench");
    let (package_count, query_count) = if full { (10_000, 1_000) } else { (1_000, 100) };
    let packages = generate_names(package_count);
    let repodata = generate_repodata(&packages)?;
    let queries = typed_queries(&packages, query_count);

    let built = Instant::now();
    let parsed = repodata
        .iter()
        .map(|(_, bytes)| RepodataNames::parse(bytes).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    let index = CondaIndex::build(&[ChannelPackages {
        name: CHANNEL.to_owned(),
        repodata: parsed,
        summaries: Arc::default(),
    }]);
    let build_time = built.elapsed();
    ensure!(
        index.len() == package_count,
        "indexed {} packages of {package_count}",
        index.len()
    );

    let mut direct = Vec::with_capacity(queries.len());
    let mut hits = 0;
    for query in &queries {
        let started = Instant::now();
        let found = index.search(query, MAX_CONDA_HITS);
        direct.push(started.elapsed());
        hits += found.len();
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut http = runtime.block_on(over_http(repodata, &queries))?;

    println!();
    println!(
        "search: {package_count} conda package names, {} queries of 1-6 characters",
        queries.len()
    );
    println!(
        "index build (parse + sort): {:.1} ms; {:.1} conda hits per query on average",
        build_time.as_secs_f64() * 1e3,
        hits as f64 / queries.len() as f64
    );
    println!();
    println!(
        "| {:<28} | {:>10} | {:>10} | {:>10} |",
        "per query", "p50 µs", "p99 µs", "max µs"
    );
    println!("|{:-<30}|{:->12}|{:->12}|{:->12}|", "", "", "", "");
    for (name, times) in [
        ("index search (in memory)", &mut direct),
        ("GET /api/v1/search (HTTP)", &mut http),
    ] {
        let (p50, p99, max) = percentiles(times);
        println!(
            "| {name:<28} | {:>10.1} | {:>10.1} | {:>10.1} |",
            micros(p50),
            micros(p99),
            micros(max)
        );
    }
    let (_, p99, _) = percentiles(&mut direct);
    println!();
    println!(
        "target: < {} ms per search: {}",
        TARGET.as_millis(),
        if p99 < TARGET { "met" } else { "NOT met" }
    );
    ensure!(p99 < TARGET, "p99 of the index search is {p99:?}");
    Ok(())
}

/// Serves the repodata and kiln, waits for the first load, then times every query.
async fn over_http(
    repodata: Vec<(&'static str, Vec<u8>)>,
    queries: &[String],
) -> Result<Vec<Duration>> {
    let files: Arc<Vec<(String, Vec<u8>)>> = Arc::new(
        repodata
            .into_iter()
            .map(|(subdir, bytes)| (format!("/{CHANNEL}/{subdir}/repodata.json"), bytes))
            .collect(),
    );
    let channel = axum::Router::new().fallback(move |uri: Uri| {
        let files = files.clone();
        async move {
            match files.iter().find(|(path, _)| path == uri.path()) {
                Some((_, bytes)) => bytes.clone().into_response(),
                // Everything else (channeldata.json, pip projects) is missing.
                None => StatusCode::NOT_FOUND.into_response(),
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let channel_address = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, channel).await });

    let data = tempfile::tempdir()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let mut config = Config {
        data_dir: data.path().to_owned(),
        registry: address.to_string().parse()?,
        channels: vec![CHANNEL.parse()?],
        ..Config::default()
    };
    config.channel_mirrors.insert(
        CHANNEL.to_owned(),
        format!("http://{channel_address}/{CHANNEL}"),
    );
    config.build.pip_index_url = Some(format!("http://{channel_address}/simple/"));
    config.embedded_registry.users = vec![RegistryUser::new(
        "kiln-bench",
        uuid::Uuid::new_v4().simple().to_string(),
        // It pushes bases and images into kiln's own namespaces.
        true,
    )];
    tokio::spawn(async move {
        if let Err(err) = kiln::server::run(config, listener, std::future::pending()).await {
            eprintln!("kiln server stopped: {err:#}");
        }
    });

    let client = reqwest::Client::builder().no_proxy().build()?;
    let url = format!("http://{address}/api/v1/search");
    let search = |q: &str| {
        let request = client.get(&url).query(&[("q", q)]);
        async move {
            let response = request.send().await?.error_for_status()?;
            anyhow::Ok(response.json::<Value>().await?)
        }
    };
    // kiln loads its index on the first search; wait until it has it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut ready = false;
    while !ready {
        ensure!(
            Instant::now() < deadline,
            "kiln did not answer searches in time"
        );
        ready = match search(&queries[0]).await {
            Ok(answer) => answer["conda"]
                .as_array()
                .is_some_and(|hits| !hits.is_empty()),
            Err(_) => false,
        };
        if !ready {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let mut times = Vec::with_capacity(queries.len());
    for query in queries {
        let started = Instant::now();
        let answer = search(query)
            .await
            .with_context(|| format!("searching {query:?}"))?;
        times.push(started.elapsed());
        ensure!(answer["conda"].is_array(), "{answer}");
    }
    drop(data);
    Ok(times)
}

/// A small deterministic generator, so every run measures the same names and queries.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

/// `count` distinct names like `perl-bio-samtools`, `r-seqkit`, `fastqc`, `libhts-utils2`.
fn generate_names(count: usize) -> Vec<String> {
    const PREFIXES: [&str; 12] = [
        "",
        "",
        "",
        "",
        "py",
        "r-",
        "perl-",
        "lib",
        "bioconductor-",
        "ucsc-",
        "python-",
        "perl-bio-",
    ];
    const STEMS: [&str; 40] = [
        "sam",
        "bam",
        "hts",
        "seq",
        "fastq",
        "fasta",
        "vcf",
        "bcf",
        "bed",
        "gff",
        "blast",
        "bowtie",
        "bwa",
        "star",
        "salmon",
        "kallisto",
        "kraken",
        "spades",
        "megahit",
        "prokka",
        "busco",
        "minimap",
        "pilon",
        "racon",
        "medaka",
        "nanopolish",
        "canu",
        "flye",
        "trinity",
        "hmmer",
        "diamond",
        "mmseqs",
        "cd-hit",
        "picard",
        "gatk",
        "deeptools",
        "macs",
        "homer",
        "multiqc",
        "snpeff",
    ];
    const SUFFIXES: [&str; 16] = [
        "", "tools", "kit", "-utils", "2", "3", "-lite", "-core", "-plus", "qc", "-align", "-viz",
        "stats", "-db", "-cli", "filter",
    ];
    let mut random = Lcg(0x6b69_6c6e);
    let mut seen = std::collections::HashSet::with_capacity(count);
    let mut names = Vec::with_capacity(count);
    while names.len() < count {
        let mut name = format!(
            "{}{}{}",
            PREFIXES[random.below(PREFIXES.len())],
            STEMS[random.below(STEMS.len())],
            SUFFIXES[random.below(SUFFIXES.len())]
        );
        // The combinations run out long before 10,000: number the rest, as real channels do
        // with their `-2`, `5`, `-ng` variants.
        if seen.contains(&name) {
            name = format!("{name}-{}", random.below(count * 4));
        }
        if seen.insert(name.clone()) {
            names.push(name);
        }
    }
    names
}

/// `repodata.json` for every subdir; each name in one subdir with 2–6 versions and two builds.
fn generate_repodata(names: &[String]) -> Result<Vec<(&'static str, Vec<u8>)>> {
    let mut random = Lcg(42);
    let mut subdirs: Vec<serde_json::Map<String, Value>> = vec![Default::default(); SUBDIRS.len()];
    for name in names {
        let subdir = random.below(SUBDIRS.len());
        for v in 0..2 + random.below(5) {
            let version = format!("{}.{}.{}", 1 + v / 3, (v * 7) % 23, random.below(4));
            for build in 0..2 {
                subdirs[subdir].insert(
                    format!("{name}-{version}-h{build}_0.conda"),
                    json!({"name": name, "version": version, "build": format!("h{build}_0"),
                        "build_number": build, "depends": [], "sha256": "0".repeat(64),
                        "size": 1000, "subdir": SUBDIRS[subdir]}),
                );
            }
        }
    }
    SUBDIRS
        .iter()
        .zip(subdirs)
        .map(|(subdir, packages)| {
            let document = json!({"info": {"subdir": subdir}, "packages": {},
                "packages.conda": packages, "repodata_version": 1});
            Ok((*subdir, serde_json::to_vec(&document)?))
        })
        .collect()
}

/// `count` queries as typed: 1 to 6 leading characters of generated names.
fn typed_queries(names: &[String], count: usize) -> Vec<String> {
    let mut random = Lcg(7);
    let mut queries = Vec::with_capacity(count);
    while queries.len() < count {
        let name = &names[random.below(names.len())];
        for len in 1..=6.min(name.len()) {
            if queries.len() < count {
                queries.push(name[..len].to_owned());
            }
        }
    }
    queries
}

/// p50, p99 and max.
fn percentiles(times: &mut [Duration]) -> (Duration, Duration, Duration) {
    times.sort_unstable();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99), at(1.0))
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

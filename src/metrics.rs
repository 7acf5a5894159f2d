//! What kiln counts, served at `/metrics` in the Prometheus text exposition format 0.0.4.
//!
//! Written by hand rather than with a metrics crate: kiln has a handful of series, and the text
//! format is small enough that getting it exactly right here is cheaper than a dependency.
//!
//! The series:
//!
//! - `kiln_http_requests_total{route,status}`: counter, per route *template* and status code.
//! - `kiln_container_requests_total{result}`: counter, `hit`, `miss` or `pass_through`.
//! - `kiln_builds_total{outcome}`: counter, `succeeded` or `failed`.
//! - `kiln_builds_in_progress`: gauge, builds this process's workers are running.
//! - `kiln_build_duration_seconds{outcome}`: histogram of build wall time. Labelled by outcome,
//!   because failed builds usually end early (a solver error in seconds) and would drag the
//!   distribution of real build times down; `sum by (le)` gives the combined one.
//! - `kiln_rate_limited_total`: counter, requests turned away by the rate limiter.
//!
//! Series with a fixed label set (results, outcomes) are always rendered, zeros included, so
//! `rate()` and `increase()` see their first increment; HTTP series appear once seen.

use std::collections::BTreeMap;
use std::fmt::{self, Display, Write as _};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

/// The `Content-Type` of [`Metrics::render`]'s text, as Prometheus expects it.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds, in seconds, of the build duration histogram's buckets (`+Inf` comes on top).
/// Builds range from seconds (everything cached) to tens of minutes (large CUDA stacks).
pub const BUILD_DURATION_BUCKETS: [f64; 10] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 2400.0,
];

/// How a container request was served, for `kiln_container_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestResult {
    /// The image was already built (or being built) for this key.
    Hit,
    /// The request started a new build.
    Miss,
    /// The request needed no build at all.
    PassThrough,
}

impl RequestResult {
    /// In rendering order, which is the order of their labels.
    const ALL: [RequestResult; 3] = [Self::Hit, Self::Miss, Self::PassThrough];

    /// The `result` label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::PassThrough => "pass_through",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::Hit => 0,
            Self::Miss => 1,
            Self::PassThrough => 2,
        }
    }
}

/// The process's metrics. Share it through an `Arc`; every method takes `&self`.
///
/// Counters are atomics, so recording never waits. The HTTP counters sit behind a read-mostly
/// lock only to add a series the first time a route and status are seen; the histogram is
/// behind a mutex so that a scrape sees its buckets, sum and count from the same moment.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Route template → status code → requests. Nested so lookups borrow the `&str` route.
    http_requests: RwLock<BTreeMap<String, BTreeMap<u16, AtomicU64>>>,
    /// Indexed by [`RequestResult::index`].
    container_requests: [AtomicU64; 3],
    /// Signed so that a bookkeeping bug shows up as a negative value instead of wrapping.
    builds_in_progress: AtomicI64,
    /// Indexed by [`Outcome`]; also the source of `kiln_builds_total`, so the two always agree.
    build_durations: Mutex<[Histogram; 2]>,
    rate_limited: AtomicU64,
}

impl Metrics {
    /// Counts one HTTP response. `route` must be the route *template* (`/v1alpha2/container`,
    /// `/v1alpha2/builds/{id}`), never the raw path: every distinct value becomes a series
    /// that lives for the life of the process.
    pub fn http_request(&self, route: &str, status: u16) {
        {
            let routes = self
                .http_requests
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(counter) = routes.get(route).and_then(|codes| codes.get(&status)) {
                counter.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        // First time for this series: another thread may have added it since the read lock
        // was released, which `entry` takes care of.
        let mut routes = self
            .http_requests
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        routes
            .entry(route.to_owned())
            .or_default()
            .entry(status)
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one container request by how it was served.
    pub fn container_request(&self, result: RequestResult) {
        self.container_requests[result.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one request turned away by the rate limiter.
    pub fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    /// A worker started running a build. Pair it with [`build_finished`](Self::build_finished)
    /// or [`build_abandoned`](Self::build_abandoned), or use [`track_build`](Self::track_build),
    /// which cannot forget to.
    pub fn build_started(&self) {
        self.builds_in_progress.fetch_add(1, Ordering::Relaxed);
    }

    /// A build started with [`build_started`](Self::build_started) ended after `duration`:
    /// counts it and its duration by outcome, and takes it off the in-progress gauge.
    pub fn build_finished(&self, succeeded: bool, duration: Duration) {
        let outcome = if succeeded {
            Outcome::Succeeded
        } else {
            Outcome::Failed
        };
        self.build_durations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)[outcome as usize]
            .observe(duration.as_secs_f64());
        self.builds_in_progress.fetch_sub(1, Ordering::Relaxed);
    }

    /// A build started with [`build_started`](Self::build_started) stopped without an outcome
    /// of this worker's (its lease was lost, or kiln shut down): it comes off the in-progress
    /// gauge but is not counted as a build, since whoever finishes it counts it.
    pub fn build_abandoned(&self) {
        self.builds_in_progress.fetch_sub(1, Ordering::Relaxed);
    }

    /// Calls [`build_started`](Self::build_started) and returns a guard that calls
    /// [`build_finished`](Self::build_finished) when [finished](RunningBuild::finish), or
    /// [`build_abandoned`](Self::build_abandoned) when dropped before: an early return or a
    /// cancelled task cannot leave the in-progress gauge counting a build forever.
    pub fn track_build(self: &Arc<Self>) -> RunningBuild {
        self.build_started();
        RunningBuild {
            metrics: Some(Arc::clone(self)),
        }
    }

    /// All series in the text exposition format 0.0.4, served with [`CONTENT_TYPE`]. Families
    /// come in a fixed order and series sorted by their labels, so two scrapes of the same
    /// state give the same text.
    pub fn render(&self) -> String {
        Exposition(self).to_string()
    }
}

/// A build counted in `kiln_builds_in_progress`, from [`Metrics::track_build`].
#[derive(Debug)]
#[must_use = "dropping it at once counts the build as abandoned"]
pub struct RunningBuild {
    /// `None` once finished, so that dropping afterwards does nothing.
    metrics: Option<Arc<Metrics>>,
}

impl RunningBuild {
    /// The build ended after `duration`; see [`Metrics::build_finished`].
    pub fn finish(mut self, succeeded: bool, duration: Duration) {
        if let Some(metrics) = self.metrics.take() {
            metrics.build_finished(succeeded, duration);
        }
    }
}

impl Drop for RunningBuild {
    fn drop(&mut self) {
        if let Some(metrics) = self.metrics.take() {
            metrics.build_abandoned();
        }
    }
}

/// The `outcome` label of builds; the discriminant indexes [`Metrics::build_durations`].
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Failed = 0,
    Succeeded = 1,
}

impl Outcome {
    /// In rendering order, which is the order of their labels.
    const ALL: [Outcome; 2] = [Self::Failed, Self::Succeeded];

    fn label(self) -> &'static str {
        match self {
            Self::Failed => "failed",
            Self::Succeeded => "succeeded",
        }
    }
}

/// One histogram series over [`BUILD_DURATION_BUCKETS`].
#[derive(Debug, Default, Clone, Copy)]
struct Histogram {
    /// Observations per bucket, *not* cumulative: index `i` counts values in
    /// `(bound[i-1], bound[i]]`, and the last index those above every bound. Rendering adds
    /// them up, which is what Prometheus's `le` buckets mean.
    buckets: [u64; BUILD_DURATION_BUCKETS.len() + 1],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, value: f64) {
        // `le` is inclusive: a value on a bound falls in that bound's bucket.
        let bucket = BUILD_DURATION_BUCKETS.partition_point(|&bound| bound < value);
        self.buckets[bucket] += 1;
        self.count += 1;
        self.sum += value;
    }
}

/// Writes the exposition text, so that rendering is plain `fmt::Write` with `?` throughout.
struct Exposition<'a>(&'a Metrics);

impl Display for Exposition<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let metrics = self.0;

        family(
            f,
            "kiln_http_requests_total",
            "counter",
            "HTTP responses by route template and status code.",
        )?;
        {
            let routes = metrics
                .http_requests
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            for (route, codes) in routes.iter() {
                for (status, count) in codes {
                    sample(
                        f,
                        "kiln_http_requests_total",
                        &[("route", route), ("status", &status.to_string())],
                        count.load(Ordering::Relaxed),
                    )?;
                }
            }
        }

        family(
            f,
            "kiln_container_requests_total",
            "counter",
            "Container requests by whether the image existed (hit), needed a build (miss) \
             or needed none (pass_through).",
        )?;
        for result in RequestResult::ALL {
            sample(
                f,
                "kiln_container_requests_total",
                &[("result", result.label())],
                metrics.container_requests[result.index()].load(Ordering::Relaxed),
            )?;
        }

        // One copy, so the counter, the histogram and its buckets agree within a scrape.
        let durations = *metrics
            .build_durations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);

        family(
            f,
            "kiln_builds_total",
            "counter",
            "Builds run by this process's workers, by outcome.",
        )?;
        for outcome in Outcome::ALL {
            sample(
                f,
                "kiln_builds_total",
                &[("outcome", outcome.label())],
                durations[outcome as usize].count,
            )?;
        }

        family(
            f,
            "kiln_builds_in_progress",
            "gauge",
            "Builds this process's workers are running now.",
        )?;
        sample(
            f,
            "kiln_builds_in_progress",
            &[],
            metrics.builds_in_progress.load(Ordering::Relaxed),
        )?;

        family(
            f,
            "kiln_build_duration_seconds",
            "histogram",
            "Wall time of builds run by this process's workers, by outcome.",
        )?;
        for outcome in Outcome::ALL {
            let histogram = &durations[outcome as usize];
            let outcome = outcome.label();
            let mut cumulative = 0;
            for (bucket, count) in histogram.buckets.iter().enumerate() {
                cumulative += count;
                let le = BUILD_DURATION_BUCKETS
                    .get(bucket)
                    .map_or_else(|| "+Inf".to_owned(), f64::to_string);
                sample(
                    f,
                    "kiln_build_duration_seconds_bucket",
                    &[("outcome", outcome), ("le", &le)],
                    cumulative,
                )?;
            }
            sample(
                f,
                "kiln_build_duration_seconds_sum",
                &[("outcome", outcome)],
                histogram.sum,
            )?;
            sample(
                f,
                "kiln_build_duration_seconds_count",
                &[("outcome", outcome)],
                histogram.count,
            )?;
        }

        family(
            f,
            "kiln_rate_limited_total",
            "counter",
            "Requests turned away by the rate limiter.",
        )?;
        sample(
            f,
            "kiln_rate_limited_total",
            &[],
            metrics.rate_limited.load(Ordering::Relaxed),
        )
    }
}

/// The `# HELP` and `# TYPE` lines of a family. `help` is one of the constant texts above,
/// which have no backslash or line break to escape.
fn family(f: &mut fmt::Formatter<'_>, name: &str, kind: &str, help: &str) -> fmt::Result {
    writeln!(f, "# HELP {name} {help}")?;
    writeln!(f, "# TYPE {name} {kind}")
}

/// One sample line: `name value` or `name{label="value",...} value`.
fn sample(
    f: &mut fmt::Formatter<'_>,
    name: &str,
    labels: &[(&str, &str)],
    value: impl Display,
) -> fmt::Result {
    f.write_str(name)?;
    if !labels.is_empty() {
        f.write_char('{')?;
        for (i, (label, text)) in labels.iter().enumerate() {
            if i > 0 {
                f.write_char(',')?;
            }
            write!(f, "{label}=\"{}\"", LabelValue(text))?;
        }
        f.write_char('}')?;
    }
    writeln!(f, " {value}")
}

/// A label value escaped as the text format requires: backslash, double quote and line feed.
struct LabelValue<'a>(&'a str);

impl Display for LabelValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '"' => f.write_str("\\\"")?,
                '\n' => f.write_str("\\n")?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A sample line taken apart: name, labels (unescaped), value.
    type Sample = (String, Vec<(String, String)>, f64);

    /// Parses a sample line strictly (`name value` or `name{l="v",...} value`), undoing the
    /// label escapes; `None` for anything else.
    fn parse_sample(line: &str) -> Option<Sample> {
        fn is_name(text: &str) -> bool {
            let mut chars = text.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        }

        let name_end = line.find(['{', ' '])?;
        let name = &line[..name_end];
        if !is_name(name) {
            return None;
        }
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(after) = rest.strip_prefix('{') {
            rest = after;
            loop {
                let (label, after) = rest.split_once("=\"")?;
                if !is_name(label) || label.contains(':') {
                    return None;
                }
                let mut value = String::new();
                let mut chars = after.char_indices();
                let end = loop {
                    match chars.next()? {
                        (i, '"') => break i,
                        (_, '\\') => match chars.next()?.1 {
                            '\\' => value.push('\\'),
                            '"' => value.push('"'),
                            'n' => value.push('\n'),
                            _ => return None,
                        },
                        (_, '\n') => return None,
                        (_, c) => value.push(c),
                    }
                };
                labels.push((label.to_owned(), value));
                rest = &after[end + 1..];
                if let Some(after) = rest.strip_prefix(',') {
                    rest = after;
                } else {
                    rest = rest.strip_prefix('}')?;
                    break;
                }
            }
        }
        let value = rest.strip_prefix(' ')?;
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            // Only plain numbers: Rust's parser would also take "inf" and "infinity".
            _ if value
                .chars()
                .all(|c| c.is_ascii_digit() || "+-.eE".contains(c)) =>
            {
                value.parse().ok()?
            }
            _ => return None,
        };
        Some((name.to_owned(), labels, value))
    }

    /// Parses all of `text`, checking it is well formed: every line is a comment or a sample,
    /// every sample belongs to a family declared by a `# TYPE` line above it, and the text
    /// ends with a line feed.
    fn parse(text: &str) -> Vec<Sample> {
        assert!(text.ends_with('\n'), "{text}");
        let mut families = Vec::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(comment) = line.strip_prefix("# ") {
                let mut words = comment.splitn(3, ' ');
                match (words.next(), words.next(), words.next()) {
                    (Some("HELP"), Some(_), Some(_)) => {}
                    (Some("TYPE"), Some(name), Some(kind)) => {
                        assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                        families.push(name.to_owned());
                    }
                    _ => panic!("not a HELP or TYPE line: {line:?}"),
                }
                continue;
            }
            let sample = parse_sample(line)
                .unwrap_or_else(|| panic!("not `name{{labels}} value`: {line:?}"));
            let family = families.last().expect("a sample before any # TYPE");
            let suffix = sample.0.strip_prefix(family.as_str());
            assert!(
                matches!(suffix, Some("" | "_bucket" | "_sum" | "_count")),
                "{} is not in family {family}",
                sample.0
            );
            samples.push(sample);
        }
        samples
    }

    #[test]
    fn the_line_checker_rejects_malformed_samples() {
        for line in [
            "kiln_x 1",
            "kiln_x{a=\"b\"} 1",
            "kiln_x{a=\"b\\\"c\",d=\"\"} +Inf",
        ] {
            assert!(parse_sample(line).is_some(), "{line}");
        }
        for line in [
            "kiln_x",
            "kiln_x  1",
            "kiln_x 1 2",
            "kiln_x inf",
            "1kiln 1",
            "kiln_x{} 1",
            "kiln_x{a=b} 1",
            "kiln_x{a=\"b} 1",
            "kiln_x{a=\"b\"c\"} 1",
            "kiln_x{a=\"\\t\"} 1",
            "kiln_x{a=\"b\",} 1",
        ] {
            assert_eq!(parse_sample(line), None, "{line}");
        }
    }

    #[test]
    fn a_fresh_registry_renders_zeros_for_fixed_series() {
        let text = Metrics::default().render();
        let samples = parse(&text);
        // No HTTP series yet; 3 results, 2 outcomes, 1 gauge, 2 × (11 buckets + sum + count),
        // 1 rate-limit counter.
        assert_eq!(samples.len(), 3 + 2 + 1 + 2 * 13 + 1, "{text}");
        assert!(samples.iter().all(|s| s.2 == 0.0), "{text}");
    }

    #[test]
    fn a_small_scenario_renders_exactly() {
        let metrics = Arc::new(Metrics::default());
        metrics.http_request("/v1alpha2/container", 200);
        metrics.http_request("/v1alpha2/builds/{id}", 404);
        metrics.http_request("/v1alpha2/container", 200);
        metrics.http_request("/v1alpha2/container", 429);
        metrics.container_request(RequestResult::Miss);
        metrics.container_request(RequestResult::Hit);
        metrics.container_request(RequestResult::Hit);
        metrics.rate_limited();

        metrics.build_started();
        metrics.build_started();
        metrics.build_started();
        metrics.build_started();
        // On a bound (inclusive), between bounds, and above the last one.
        metrics.build_finished(true, Duration::from_secs(5));
        metrics.build_finished(true, Duration::from_millis(90_500));
        metrics.build_finished(false, Duration::from_secs(3000));
        // Two still running.

        let expected = r#"# HELP kiln_http_requests_total HTTP responses by route template and status code.
# TYPE kiln_http_requests_total counter
kiln_http_requests_total{route="/v1alpha2/builds/{id}",status="404"} 1
kiln_http_requests_total{route="/v1alpha2/container",status="200"} 2
kiln_http_requests_total{route="/v1alpha2/container",status="429"} 1
# HELP kiln_container_requests_total Container requests by whether the image existed (hit), needed a build (miss) or needed none (pass_through).
# TYPE kiln_container_requests_total counter
kiln_container_requests_total{result="hit"} 2
kiln_container_requests_total{result="miss"} 1
kiln_container_requests_total{result="pass_through"} 0
# HELP kiln_builds_total Builds run by this process's workers, by outcome.
# TYPE kiln_builds_total counter
kiln_builds_total{outcome="failed"} 1
kiln_builds_total{outcome="succeeded"} 2
# HELP kiln_builds_in_progress Builds this process's workers are running now.
# TYPE kiln_builds_in_progress gauge
kiln_builds_in_progress 1
# HELP kiln_build_duration_seconds Wall time of builds run by this process's workers, by outcome.
# TYPE kiln_build_duration_seconds histogram
kiln_build_duration_seconds_bucket{outcome="failed",le="1"} 0
kiln_build_duration_seconds_bucket{outcome="failed",le="5"} 0
kiln_build_duration_seconds_bucket{outcome="failed",le="15"} 0
kiln_build_duration_seconds_bucket{outcome="failed",le="30"} 0
kiln_build_duration_seconds_bucket{outcome="failed",le="60"} 0
kiln_build_duration_seconds_bucket{outcome="failed",le="120"} 0
kiln_build_duration_seconds_bucket{outcome="failed",le="300"} 0
kiln_build_duration_seconds_bucket{outcome="failed",le="600"} 0
kiln_build_duration_seconds_bucket{outcome="failed",le="1200"} 0
kiln_build_duration_seconds_bucket{outcome="failed",le="2400"} 0
kiln_build_duration_seconds_bucket{outcome="failed",le="+Inf"} 1
kiln_build_duration_seconds_sum{outcome="failed"} 3000
kiln_build_duration_seconds_count{outcome="failed"} 1
kiln_build_duration_seconds_bucket{outcome="succeeded",le="1"} 0
kiln_build_duration_seconds_bucket{outcome="succeeded",le="5"} 1
kiln_build_duration_seconds_bucket{outcome="succeeded",le="15"} 1
kiln_build_duration_seconds_bucket{outcome="succeeded",le="30"} 1
kiln_build_duration_seconds_bucket{outcome="succeeded",le="60"} 1
kiln_build_duration_seconds_bucket{outcome="succeeded",le="120"} 2
kiln_build_duration_seconds_bucket{outcome="succeeded",le="300"} 2
kiln_build_duration_seconds_bucket{outcome="succeeded",le="600"} 2
kiln_build_duration_seconds_bucket{outcome="succeeded",le="1200"} 2
kiln_build_duration_seconds_bucket{outcome="succeeded",le="2400"} 2
kiln_build_duration_seconds_bucket{outcome="succeeded",le="+Inf"} 2
kiln_build_duration_seconds_sum{outcome="succeeded"} 95.5
kiln_build_duration_seconds_count{outcome="succeeded"} 2
# HELP kiln_rate_limited_total Requests turned away by the rate limiter.
# TYPE kiln_rate_limited_total counter
kiln_rate_limited_total 1
"#;
        let text = metrics.render();
        assert_eq!(text, expected);
        assert_eq!(parse(&text).len(), 3 + 3 + 2 + 1 + 26 + 1);

        // The fourth build was abandoned: off the gauge, not counted as a build.
        drop(metrics.track_build());
        metrics.build_abandoned();
        let text = metrics.render();
        assert!(text.contains("\nkiln_builds_in_progress 0\n"), "{text}");
        assert!(text.contains("\nkiln_builds_total{outcome=\"failed\"} 1\n"));
        assert!(text.contains("\nkiln_builds_total{outcome=\"succeeded\"} 2\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        let metrics = Metrics::default();
        metrics.http_request("a\\b\"c\nd", 200);
        let text = metrics.render();
        assert!(
            text.contains(
                "\nkiln_http_requests_total{route=\"a\\\\b\\\"c\\nd\",status=\"200\"} 1\n"
            ),
            "{text}"
        );
        let samples = parse(&text);
        assert_eq!(
            samples[0].1,
            [
                ("route".to_owned(), "a\\b\"c\nd".to_owned()),
                ("status".to_owned(), "200".to_owned()),
            ]
        );
    }

    #[test]
    fn a_tracked_build_counts_once_however_it_ends() {
        let metrics = Arc::new(Metrics::default());
        let finished = metrics.track_build();
        let abandoned = metrics.track_build();
        assert_eq!(metrics.builds_in_progress.load(Ordering::Relaxed), 2);
        finished.finish(false, Duration::from_secs(2));
        drop(abandoned);
        assert_eq!(metrics.builds_in_progress.load(Ordering::Relaxed), 0);
        let text = metrics.render();
        assert!(
            text.contains("\nkiln_builds_total{outcome=\"failed\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("\nkiln_builds_total{outcome=\"succeeded\"} 0\n"));
        assert!(text.contains("\nkiln_build_duration_seconds_sum{outcome=\"failed\"} 2\n"));
    }

    #[test]
    fn recording_from_many_threads_loses_nothing() {
        let metrics = Arc::new(Metrics::default());
        std::thread::scope(|scope| {
            for thread in 0..8_u16 {
                let metrics = &metrics;
                scope.spawn(move || {
                    for i in 0..1000_u16 {
                        metrics.http_request("/v1alpha2/container", 200 + (i + thread) % 3);
                        metrics
                            .track_build()
                            .finish(true, Duration::from_millis(10));
                    }
                });
            }
        });
        let samples = parse(&metrics.render());
        let total: f64 = samples
            .iter()
            .filter(|s| s.0 == "kiln_http_requests_total")
            .map(|s| s.2)
            .sum();
        assert_eq!(total, 8000.0);
        let builds = samples
            .iter()
            .find(|s| s.0 == "kiln_build_duration_seconds_count" && s.1[0].1 == "succeeded")
            .map(|s| s.2);
        assert_eq!(builds, Some(8000.0));
    }

    proptest! {
        /// Whatever a route holds, the text stays well formed and gives the route back.
        #[test]
        fn any_route_parses_back(route in any::<String>(), status in 100_u16..600) {
            let metrics = Metrics::default();
            metrics.http_request(&route, status);
            let samples = parse(&metrics.render());
            prop_assert_eq!(
                &samples[0].1,
                &[
                    ("route".to_owned(), route.clone()),
                    ("status".to_owned(), status.to_string()),
                ]
            );
            prop_assert_eq!(samples[0].2, 1.0);
        }
    }
}

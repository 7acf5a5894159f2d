//! One `buildah bud` run inside a build job, as both buildah backends (Dockerfile builds in
//! [`super::containerfile`], definition files in [`super::definition`]) do it: a fresh build
//! context, the Containerfile written next to it, buildah's output streamed into the build log
//! while the last lines are kept for the failure reason, and the local image removed at the end.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::BuildLog;
use super::buildah::{Buildah, BuildahError};
use super::native::Failure;
use crate::store::BuildOutcome;

/// How many of buildah's last output lines a failure reason quotes.
const TAIL_LINES: usize = 12;

/// Longest quoted output line; buildah's progress lines can be very long.
const TAIL_LINE_CHARS: usize = 400;

/// Makes `work` afresh with an empty build context in it, and returns the context's path.
pub(super) async fn fresh_context(work: &Path) -> Result<PathBuf, Failure> {
    if let Err(err) = tokio::fs::remove_dir_all(work).await
        && err.kind() != std::io::ErrorKind::NotFound
    {
        return Err(Failure::io(format!("cannot clear {}", work.display()))(err));
    }
    let context = work.join("context");
    tokio::fs::create_dir_all(&context)
        .await
        .map_err(Failure::io(format!("cannot create {}", context.display())))?;
    Ok(context)
}

/// Writes `text` as `work/Containerfile` and returns its path.
pub(super) async fn write_containerfile(work: &Path, text: &str) -> Result<PathBuf, Failure> {
    let path = work.join("Containerfile");
    tokio::fs::write(&path, text)
        .await
        .map_err(Failure::io(format!("cannot write {}", path.display())))?;
    Ok(path)
}

/// Ends a buildah build however it went: removes its image `local` from buildah's storage
/// (absent when the build failed before committing, which is nothing to report) and passes
/// the result on.
pub(super) async fn finish(
    buildah: &Buildah,
    local: &str,
    result: Result<BuildOutcome, Failure>,
) -> Result<BuildOutcome, Failure> {
    if let Err(err) = buildah.remove_image(local).await {
        tracing::debug!(image = %local, error = %err, "removing a build's local image failed");
    }
    result
}

/// Runs a buildah step whose output arrives through a sync callback, appending each line to
/// `log` as it comes (so clients following the log watch the build) and returning the last
/// ones for a failure reason. `step` gets the [`Lines`] its callback ([`forward`]) queues lines
/// on; what waits for the store is bounded by the log's cap, and while a batch is being
/// stored the step is not polled, so a fast printer waits on its pipe.
pub(super) async fn streamed<T>(log: &BuildLog, step: impl FnOnce(Lines) -> T) -> (T::Output, Tail)
where
    T: Future,
{
    let lines = Lines {
        log: log.clone(),
        tail: Arc::default(),
        queued: Arc::default(),
    };
    let (tail, queued) = (Arc::clone(&lines.tail), Arc::clone(&lines.queued));
    let mut running = std::pin::pin!(step(lines));
    let output = loop {
        tokio::select! {
            output = &mut running => break output,
            () = queued.notified() => log.flush().await,
        }
    };
    log.flush().await;
    let tail = std::mem::take(
        &mut *tail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    (output, tail)
}

/// What [`forward`] hands buildah's lines to: the log's queue and the failure tail.
pub(super) struct Lines {
    log: BuildLog,
    tail: Arc<std::sync::Mutex<Tail>>,
    /// Wakes [`streamed`] to store what was queued.
    queued: Arc<tokio::sync::Notify>,
}

/// buildah's line callback for [`streamed`]: queues each line for the log and keeps the last
/// ones (also those a full log drops) for the failure reason.
pub(super) fn forward(lines: Lines) -> impl FnMut(&str) + Send {
    move |line| {
        lines
            .tail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(line);
        lines.log.push(line);
        lines.queued.notify_one();
    }
}

/// The last lines of buildah's output and the last Dockerfile step it started.
#[derive(Debug, Default)]
pub(super) struct Tail {
    lines: VecDeque<String>,
    step: Option<String>,
}

impl Tail {
    fn push(&mut self, line: &str) {
        let line: String = line.chars().take(TAIL_LINE_CHARS).collect();
        if line.starts_with("STEP ") {
            self.step = Some(line.clone());
        }
        if self.lines.len() == TAIL_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    fn text(&self) -> String {
        self.lines
            .iter()
            .map(|line| format!("  {line}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Why `buildah bud` failed building `what` ("the Dockerfile"), naming the step and quoting
/// buildah's last lines when it ran; what kept it from running otherwise.
pub(super) fn build_failure(err: BuildahError, tail: &Tail, what: &str) -> Failure {
    match (&err, &tail.step) {
        (BuildahError::Failed { .. }, Some(step)) => Failure::Refused(format!(
            "{what} failed at {step}: {}",
            failure_detail(&err, tail)
        )),
        (BuildahError::Failed { .. }, None) => Failure::Refused(format!(
            "buildah could not build {what}: {}",
            failure_detail(&err, tail)
        )),
        _ => err.into(),
    }
}

/// buildah's exit status and its last output lines, or what kept it from running.
pub(super) fn failure_detail(err: &BuildahError, tail: &Tail) -> String {
    match err {
        BuildahError::Failed { step, status } => {
            let status = status
                .code()
                .map_or_else(|| status.to_string(), |code| format!("exit code {code}"));
            if tail.lines.is_empty() {
                format!("`buildah {step}` ended with {status} and printed nothing")
            } else {
                format!(
                    "`buildah {step}` ended with {status}; its last output:\n{}",
                    tail.text()
                )
            }
        }
        other => crate::error_chain(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_name_the_step_and_quote_the_last_lines() {
        let mut tail = Tail::default();
        for line in ["STEP 1/2: FROM base", "STEP 2/2: RUN exit 3"] {
            tail.push(line);
        }
        for n in 0..20 {
            tail.push(&format!("noise {n}"));
        }
        tail.push("error building at STEP \"RUN exit 3\": exit status 3");
        let status = std::process::Command::new("sh")
            .args(["-c", "exit 1"])
            .status()
            .unwrap();
        let err = BuildahError::Failed {
            step: "bud",
            status,
        };
        let reason = build_failure(err, &tail, "the Dockerfile").reason();
        assert!(
            reason.starts_with("the Dockerfile failed at STEP 2/2: RUN exit 3: `buildah bud` ended with exit code 1"),
            "{reason}"
        );
        assert!(reason.ends_with("exit status 3"), "{reason}");
        assert!(!reason.contains("noise 8\n"), "{reason}");
        assert_eq!(reason.lines().count(), 1 + TAIL_LINES);
    }
}

//! Build logs with bounds: a cap per line and a cap per build, so one build printing without
//! end costs kiln a fixed amount of memory and database, and a reader of child output that
//! never holds more than one capped line.
//!
//! A line longer than the line cap keeps its start and ends with a marker saying how many bytes
//! were cut. Once a build's log reaches its cap, further lines are counted, not kept, and the
//! log ends with one line saying how many bytes were dropped.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use crate::store::Store;

/// The most of one line of child output kiln reads into memory; the line cap setting cannot
/// be larger.
pub const MAX_LINE_LIMIT: usize = 1 << 20;

/// How long lines and whole logs may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// Bytes of one line kept (its newline not counted).
    pub max_line: usize,
    /// Bytes of one build's log kept, newlines counted.
    pub max_total: u64,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            max_line: 16 << 10,
            max_total: 8 << 20,
        }
    }
}

/// The most bytes one write to the store carries: lines are batched up to this, so a log of
/// many short lines is a few rows, and a reader's page holds few rows.
pub const CHUNK: usize = 64 << 10;

/// Where a running build writes its log: the store, in batches of lines, so clients can follow
/// it. Cheap to clone; clones share the budget and the lines not yet stored.
#[derive(Clone)]
pub struct BuildLog {
    store: Arc<dyn Store>,
    id: String,
    limits: LogLimits,
    budget: Arc<Mutex<Budget>>,
    /// Held while storing, so batches reach the store in the order they were taken.
    writing: Arc<tokio::sync::Mutex<()>>,
}

/// What a log has used of its cap, and what is on its way to the store.
#[derive(Debug, Default)]
struct Budget {
    /// Bytes admitted (stored or pending).
    kept: u64,
    /// Bytes of lines refused because the log was full.
    dropped: u64,
    /// Admitted lines not stored yet; never more than the log's cap.
    pending: String,
}

impl std::fmt::Debug for BuildLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildLog")
            .field("id", &self.id)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl BuildLog {
    /// The log of build `id`, with the default limits.
    pub fn new(store: Arc<dyn Store>, id: impl Into<String>) -> Self {
        Self::with_limits(store, id, LogLimits::default())
    }

    /// The log of build `id`, bounded by `limits`.
    pub fn with_limits(store: Arc<dyn Store>, id: impl Into<String>, limits: LogLimits) -> Self {
        BuildLog {
            store,
            id: id.into(),
            limits,
            budget: Arc::default(),
            writing: Arc::default(),
        }
    }

    fn budget(&self) -> std::sync::MutexGuard<'_, Budget> {
        self.budget.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends one line, cut to the line cap, and stores it; once the log is full the line is
    /// only counted. A log that cannot be written is reported, never fatal to the build.
    pub async fn line(&self, text: impl AsRef<str>) {
        self.push(text.as_ref());
        self.flush().await;
    }

    /// Cuts `text` to the line cap and queues it for [`flush`](Self::flush) if the log has
    /// room; otherwise counts it as dropped. Synchronous, for producers that cannot wait (a
    /// child's output callback); what it queues is bounded by the log's cap.
    pub fn push(&self, text: &str) {
        let line = cap_line(text, self.limits.max_line);
        let size = line.len() as u64 + 1;
        let mut budget = self.budget();
        if budget.dropped == 0 && budget.kept + size <= self.limits.max_total {
            budget.kept += size;
            budget.pending.push_str(&line);
            budget.pending.push('\n');
        } else {
            budget.dropped += size;
        }
    }

    /// Stores the queued lines, in chunks of about [`CHUNK`] bytes.
    pub async fn flush(&self) {
        let _writing = self.writing.lock().await;
        let pending = std::mem::take(&mut self.budget().pending);
        let mut rest = pending.as_str();
        while !rest.is_empty() {
            let end = chunk_end(rest);
            let (chunk, after) = rest.split_at(end);
            if let Err(err) = self.store.append_log(&self.id, chunk).await {
                tracing::warn!(build = %self.id, error = %err, "writing the build log failed");
            }
            rest = after;
        }
    }

    /// Appends a line the queue writes about the build (how it ended), past both caps: readers
    /// need it, and it is kiln's own text (a failure reason quotes a few capped lines at most).
    pub async fn status_line(&self, text: impl AsRef<str>) {
        {
            let mut budget = self.budget();
            budget
                .pending
                .push_str(&cap_line(text.as_ref(), MAX_LINE_LIMIT));
            budget.pending.push('\n');
        }
        self.flush().await;
    }

    /// Bytes refused so far because the log was full.
    pub fn dropped(&self) -> u64 {
        self.budget().dropped
    }

    /// Stores what is queued and ends a log that reached its cap with the line saying how much
    /// was dropped.
    pub async fn close(&self) {
        let dropped = self.dropped();
        if dropped > 0 {
            self.budget()
                .pending
                .push_str(&format!("log truncated, {dropped} bytes dropped\n"));
        }
        self.flush().await;
    }
}

/// Where the first chunk of `text` (whole lines) ends: after the last line break within
/// [`CHUNK`] bytes, or after the first line when that alone is longer.
fn chunk_end(text: &str) -> usize {
    if text.len() <= CHUNK {
        return text.len();
    }
    match text.as_bytes()[..CHUNK].iter().rposition(|&b| b == b'\n') {
        Some(at) => at + 1,
        None => text.find('\n').map_or(text.len(), |at| at + 1),
    }
}

/// The marker a cut line ends with.
fn cut_marker(cut: u64) -> String {
    format!(" [… {cut} bytes cut]")
}

/// `text` without its line break, at most `max` bytes of it (on a character boundary) plus a
/// marker counting what was cut, including what an earlier cut (the reader's) already took.
pub fn cap_line(text: &str, max: usize) -> String {
    let text = text.strip_suffix('\n').unwrap_or(text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    let (body, earlier) = split_marker(text);
    if body.len() <= max {
        return text.to_owned();
    }
    let kept = body.floor_char_boundary(max);
    let cut = (body.len() - kept) as u64 + earlier;
    let mut line = String::with_capacity(kept + 32);
    line.push_str(&body[..kept]);
    line.push_str(&cut_marker(cut));
    line
}

/// A line's text before a cut marker, and the bytes that marker counts (0 without one).
fn split_marker(text: &str) -> (&str, u64) {
    let Some(rest) = text.strip_suffix(" bytes cut]") else {
        return (text, 0);
    };
    let Some(start) = rest.rfind(" [… ") else {
        return (text, 0);
    };
    match rest[start + " [… ".len()..].parse() {
        Ok(cut) => (&text[..start], cut),
        Err(_) => (text, 0),
    }
}

/// Lines of `reader`, each at most `max` bytes (plus a cut marker), without ever holding more:
/// the rest of a longer line is read and counted, not kept. Invalid UTF-8 is replaced.
#[derive(Debug)]
pub struct BoundedLines<R> {
    reader: R,
    max: usize,
    /// The current line's first `max` bytes.
    line: Vec<u8>,
    /// Bytes of the current line past `max`, read and not kept.
    cut: u64,
}

impl<R: AsyncBufRead + Unpin> BoundedLines<R> {
    /// Reads `reader` in lines of at most `max` bytes (capped at [`MAX_LINE_LIMIT`]).
    pub fn new(reader: R, max: usize) -> Self {
        BoundedLines {
            reader,
            max: max.min(MAX_LINE_LIMIT),
            line: Vec::new(),
            cut: 0,
        }
    }

    /// The next line without its line break; `None` at the end. Cancel-safe: a line read
    /// partly when the future is dropped continues with the next call.
    pub async fn next_line(&mut self) -> std::io::Result<Option<String>> {
        loop {
            let available = self.reader.fill_buf().await?;
            if available.is_empty() {
                if self.line.is_empty() && self.cut == 0 {
                    return Ok(None);
                }
                return Ok(Some(self.take()));
            }
            let newline = memchr(available);
            let part = &available[..newline.unwrap_or(available.len())];
            let room = self.max.saturating_sub(self.line.len());
            let kept = part.len().min(room);
            self.line.extend_from_slice(&part[..kept]);
            self.cut += (part.len() - kept) as u64;
            let consumed = newline.map_or(available.len(), |at| at + 1);
            self.reader.consume(consumed);
            if newline.is_some() {
                return Ok(Some(self.take()));
            }
        }
    }

    fn take(&mut self) -> String {
        let cut = std::mem::take(&mut self.cut);
        let bytes = std::mem::take(&mut self.line);
        let mut line = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(err) => String::from_utf8_lossy(err.as_bytes()).into_owned(),
        };
        if line.ends_with('\r') {
            line.pop();
        }
        if cut > 0 {
            line.push_str(&cut_marker(cut));
        }
        line
    }
}

fn memchr(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_keep_their_start_and_count_the_cut() {
        assert_eq!(cap_line("short", 16), "short");
        assert_eq!(cap_line("abcdefghij\n", 4), "abcd [… 6 bytes cut]");
        // Never inside a character: é is two bytes.
        assert_eq!(cap_line("aé", 2), "a [… 2 bytes cut]");
        // A line the reader cut already keeps one marker with both cuts counted.
        let read = format!("{}{}", "x".repeat(10), cut_marker(100));
        assert_eq!(cap_line(&read, 4), "xxxx [… 106 bytes cut]");
        assert_eq!(cap_line(&read, 10), read);
    }

    #[tokio::test]
    async fn the_reader_holds_at_most_one_capped_line() {
        let mut input = Vec::new();
        input.extend_from_slice(b"first\n");
        input.extend(std::iter::repeat_n(b'y', 3 << 20));
        input.extend_from_slice(b"\nlast\r\nno newline");
        // A small buffer, so the long line arrives in many reads.
        let reader = tokio::io::BufReader::with_capacity(4096, &input[..]);
        let mut lines = BoundedLines::new(reader, 1000);
        assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("first"));
        let long = lines.next_line().await.unwrap().unwrap();
        assert_eq!(
            long,
            format!("{} [… {} bytes cut]", "y".repeat(1000), (3 << 20) - 1000)
        );
        assert!(lines.line.capacity() <= 4096 + 1000);
        assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("last"));
        assert_eq!(
            lines.next_line().await.unwrap().as_deref(),
            Some("no newline")
        );
        assert_eq!(lines.next_line().await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_full_log_keeps_its_start_and_ends_with_the_count() {
        let dir = tempfile::TempDir::new().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            crate::store::SqliteStore::open(&dir.path().join("kiln.db"))
                .await
                .unwrap(),
        );
        let id = store
            .submit(crate::store::contract::request(
                &crate::store::contract::key(1),
            ))
            .await
            .unwrap()
            .build
            .id;
        let limits = LogLimits {
            max_line: 8,
            max_total: 20,
        };
        let log = BuildLog::with_limits(Arc::clone(&store), &id, limits);
        log.line("one").await; // 4 bytes
        log.line("a line far too long").await; // 8 + marker: over the 20 left? no: 30 bytes
        log.line("two").await; // refused: the log is full once a line did not fit
        log.status_line("build failed: x").await;
        log.close().await;
        let text = store.read_log(&id, 0).await.unwrap().text;
        let cut = "a line f [… 11 bytes cut]\n".len() as u64;
        assert_eq!(
            text,
            format!(
                "one\nbuild failed: x\nlog truncated, {} bytes dropped\n",
                cut + 4
            )
        );
    }
}

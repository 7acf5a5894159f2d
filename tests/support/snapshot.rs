//! HTTP answers as insta snapshots. A test records the answers it reads, in order, and
//! compares them all at once with its snapshot: a change to any field, message or page shows
//! as a diff to review, where a `contains` check would let it through. What differs from run
//! to run (ports, ids, digests, times) is replaced by a placeholder naming it.

use std::fmt::Write as _;

use serde_json::Value;

/// The answers one test read, rendered for [`insta::assert_snapshot!`].
#[derive(Debug, Default)]
pub struct Answers {
    rendered: String,
    redactions: Vec<(String, String)>,
}

impl Answers {
    pub fn new() -> Answers {
        Answers::default()
    }

    /// From now on, and in what was recorded before, `actual` reads `[name]`.
    pub fn redact(&mut self, actual: impl Into<String>, name: &str) {
        let actual = actual.into();
        assert!(!actual.is_empty(), "nothing to redact as {name}");
        self.redactions.push((actual, format!("[{name}]")));
    }

    /// Records a JSON answer under `label`, with the fields at the JSON pointers `volatile`
    /// (which must be there) replaced by their names.
    pub fn json(
        &mut self,
        label: &str,
        status: impl std::fmt::Display,
        body: &Value,
        volatile: &[&str],
    ) {
        let mut body = body.clone();
        for pointer in volatile {
            let field = body
                .pointer_mut(pointer)
                .unwrap_or_else(|| panic!("{label}: no {pointer} in the answer"));
            *field = Value::String(format!("[{}]", pointer.trim_start_matches('/')));
        }
        let pretty = serde_json::to_string_pretty(&body).expect("JSON");
        let _ = writeln!(self.rendered, "## {label}: {status}\n{pretty}\n");
    }

    /// Records a text or HTML answer under `label`.
    pub fn text(&mut self, label: &str, status: impl std::fmt::Display, body: &str) {
        let _ = writeln!(self.rendered, "## {label}: {status}\n{body}\n");
    }

    /// Everything recorded, redacted; longer values first, so a value containing another
    /// (an image name holding the registry's address) is named as a whole.
    pub fn render(&self) -> String {
        let mut redactions: Vec<_> = self.redactions.iter().collect();
        redactions.sort_by_key(|(actual, _)| std::cmp::Reverse(actual.len()));
        redactions
            .iter()
            .fold(self.rendered.clone(), |text, (actual, name)| {
                text.replace(actual.as_str(), name)
            })
    }
}

//! The deb822 format of Debian's control documents (`Release`, `Packages`): paragraphs of
//! `Name: value` fields separated by blank lines, a value continued on lines that start with a
//! space or tab. Only splitting lives here; what the fields mean is the callers' business.

/// One paragraph (stanza) of a control document.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Paragraph<'a> {
    /// The paragraph's lines verbatim, each ending in `\n` (the last one too, if the document
    /// ended in one).
    pub text: &'a str,
    /// The 1-based line number of its first line, for messages.
    pub line: usize,
}

/// The paragraphs of `document`, in order; runs of blank (or whitespace-only) lines separate
/// them, and leading or trailing blank lines are ignored.
pub(crate) fn paragraphs(document: &str) -> impl Iterator<Item = Paragraph<'_>> {
    let mut offset = 0;
    let mut line_number = 0;
    std::iter::from_fn(move || {
        let mut start = None;
        let mut first_line = 0;
        let mut end = offset;
        while offset < document.len() {
            let rest = &document[offset..];
            let length = rest.find('\n').map_or(rest.len(), |i| i + 1);
            let line = &rest[..length];
            line_number += 1;
            offset += length;
            if line.trim().is_empty() {
                if start.is_some() {
                    break;
                }
            } else {
                if start.is_none() {
                    start = Some(offset - length);
                    first_line = line_number;
                }
                end = offset;
            }
        }
        start.map(|start| Paragraph {
            text: &document[start..end],
            line: first_line,
        })
    })
}

/// The fields of a paragraph in order, as `(name, value)`: the value is everything after the
/// colon, continuation lines included (with their newlines and leading whitespace), the first
/// line's leading whitespace and the final newline removed. Errors name the offending line.
pub(crate) fn fields(paragraph: &str) -> Result<Vec<(&str, &str)>, String> {
    let mut fields: Vec<(&str, &str)> = Vec::new();
    let mut current: Option<(&str, usize, usize)> = None;
    let mut offset = 0;
    for line in paragraph.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        let content = line.trim_end_matches(['\n', '\r']);
        if content.starts_with([' ', '\t']) {
            match current.as_mut() {
                Some((_, _, end)) => *end = start + content.len(),
                None => {
                    return Err(format!(
                        "continuation line `{}` before any field",
                        content.trim()
                    ));
                }
            }
            continue;
        }
        if content.starts_with('#') {
            continue;
        }
        let Some((name, _)) = content.split_once(':') else {
            return Err(format!(
                "line `{content}` is neither a field nor a continuation"
            ));
        };
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(format!("`{name}` is not a field name"));
        }
        if let Some((name, value_start, end)) = current.take() {
            fields.push((name, paragraph[value_start..end].trim_start()));
        }
        current = Some((name, start + name.len() + 1, start + content.len()));
    }
    if let Some((name, value_start, end)) = current {
        fields.push((name, paragraph[value_start..end].trim_start()));
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_paragraphs_on_blank_lines() {
        let document = "\nA: 1\nB: 2\n\n  \n\nA: 3\n C\n\n";
        let found: Vec<_> = paragraphs(document).map(|p| (p.text, p.line)).collect();
        assert_eq!(found, [("A: 1\nB: 2\n", 2), ("A: 3\n C\n", 7)]);
    }

    #[test]
    fn last_paragraph_without_newline() {
        let found: Vec<_> = paragraphs("A: 1\n\nB: 2").map(|p| p.text).collect();
        assert_eq!(found, ["A: 1\n", "B: 2"]);
    }

    #[test]
    fn fields_keep_continuations() {
        let fields = fields("Package: bash\nSHA256:\n abc 1 x\n def 2 y\nEmpty:\nX:y:z\n")
            .expect("valid paragraph");
        assert_eq!(
            fields,
            [
                ("Package", "bash"),
                ("SHA256", "abc 1 x\n def 2 y"),
                ("Empty", ""),
                ("X", "y:z"),
            ]
        );
    }

    #[test]
    fn rejects_lines_that_are_not_fields() {
        let error = fields("Package: bash\nno colon here\n").expect_err("invalid");
        assert!(error.contains("no colon here"), "{error}");
        let error = fields(" leading continuation\n").expect_err("invalid");
        assert!(error.contains("before any field"), "{error}");
    }
}

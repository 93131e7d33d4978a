//! Aligned text tables and terminal-safe text for the admin CLI's human output.
//!
//! Everything shown comes from the server, and much of it (descriptions, owners, subjects) was
//! typed by someone else: control and bidirectional-formatting characters are escaped so that a
//! registered agent's description cannot move the cursor, recolour the terminal or make one name
//! look like another.

use std::fmt::Write as _;

/// Columns are separated by this many spaces.
const GAP: usize = 2;

/// A table: a header row and rows of cells, printed with aligned columns.
#[derive(Debug, Default)]
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Appends a row; its cells are made terminal-safe here.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows
            .push(cells.iter().map(|cell| clean(cell)).collect());
    }

    /// Whether no row was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table, one line per row, without trailing spaces.
    pub fn render(&self) -> String {
        let columns = self
            .rows
            .iter()
            .map(Vec::len)
            .chain(std::iter::once(self.headers.len()))
            .max()
            .unwrap_or(0);
        let mut widths = vec![0; columns];
        let header: Vec<String> = self.headers.iter().map(|h| (*h).to_owned()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (index, cell) in row.iter().enumerate() {
                if index > 0 {
                    line.push_str(&" ".repeat(GAP));
                }
                line.push_str(cell);
                let width = widths.get(index).copied().unwrap_or(0);
                line.push_str(&" ".repeat(width.saturating_sub(cell.chars().count())));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `name  value` lines with the names aligned (for one record).
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (name, value) in pairs {
        let _ = writeln!(out, "{name:<width$}  {}", clean(value));
    }
    out
}

/// Control characters (C0, DEL, C1), bidirectional formatting characters and line or paragraph
/// separators: what hostile text could use to drive or disguise a terminal.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `text` with every unsafe character (newlines included: one value, one line) written as
/// `\u{…}`.
pub fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if is_unsafe(c) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

/// JSON text with unsafe characters inside strings escaped as `\uXXXX` (all of them are in the
/// BMP), so that it stays JSON with the same meaning; the newlines of pretty output are kept.
pub fn clean_json(json_text: &str) -> String {
    let mut out = String::with_capacity(json_text.len());
    for c in json_text.chars() {
        if c != '\n' && is_unsafe(c) {
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    #[test]
    fn columns_align_on_the_widest_cell_without_trailing_spaces() {
        let mut table = Table::new(&["ID", "STATE", "OWNERS"]);
        table.row(vec!["a".into(), "active".into(), "x@example.com".into()]);
        table.row(vec!["booking-tool".into(), "staged".into(), String::new()]);
        assert_eq!(
            table.render(),
            "ID            STATE   OWNERS\n\
             a             active  x@example.com\n\
             booking-tool  staged\n"
        );
    }

    #[test]
    fn hostile_text_is_escaped() {
        let mut table = Table::new(&["DESCRIPTION"]);
        table.row(vec!["ok\u{1b}[2J\u{202e}evil\nnext".into()]);
        let text = table.render();
        assert!(text.contains(r"ok\u{1b}[2J\u{202e}evil\u{a}next"), "{text}");
        assert_eq!(text.lines().count(), 2);
        let json = clean_json("{\"a\": \"\u{202e}\u{9b}\"}");
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed["a"], "\u{202e}\u{9b}");
        assert!(!json.contains('\u{202e}'));
    }

    #[test]
    fn fields_align_names() {
        assert_eq!(
            fields(&[("id", "a".into()), ("state", "active".into())]),
            "id     a\nstate  active\n"
        );
    }
}

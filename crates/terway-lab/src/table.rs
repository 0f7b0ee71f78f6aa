//! Plain-text tables for the terminal, with green/red status cells when stdout is a terminal.

use std::io::IsTerminal;

/// A cell: text plus an optional verdict that colours it.
#[derive(Debug, Clone)]
pub struct Cell {
    text: String,
    verdict: Option<bool>,
}

impl Cell {
    /// A neutral cell.
    pub fn plain(text: impl Into<String>) -> Self {
        Cell {
            text: text.into(),
            verdict: None,
        }
    }
    /// A cell that is green when `ok`, red otherwise.
    pub fn status(text: impl Into<String>, ok: bool) -> Self {
        Cell {
            text: text.into(),
            verdict: Some(ok),
        }
    }
}

/// Render `rows` under `headers` with aligned columns.
pub fn render(headers: &[&str], rows: &[Vec<Cell>]) -> String {
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, c) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.text.chars().count());
            }
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<(String, Option<bool>)>| -> String {
        let mut s = String::new();
        for (i, (text, verdict)) in cells.into_iter().enumerate() {
            let pad = widths
                .get(i)
                .copied()
                .unwrap_or(0)
                .saturating_sub(text.chars().count());
            let body = match (color, verdict) {
                (true, Some(true)) => format!("\x1b[32m{text}\x1b[0m"),
                (true, Some(false)) => format!("\x1b[31;1m{text}\x1b[0m"),
                _ => text,
            };
            s.push_str(&body);
            s.push_str(&" ".repeat(pad + 2));
        }
        s.trim_end().to_string() + "\n"
    };
    out.push_str(&line(
        headers.iter().map(|h| (h.to_string(), None)).collect(),
    ));
    out.push_str(&line(
        widths.iter().map(|w| ("-".repeat(*w), None)).collect(),
    ));
    for row in rows {
        out.push_str(&line(
            row.iter().map(|c| (c.text.clone(), c.verdict)).collect(),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns() {
        let t = render(
            &["a", "bb"],
            &[vec![Cell::plain("xxx"), Cell::status("ok", true)]],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "a    bb");
        assert_eq!(lines[1], "---  --");
        assert!(lines[2].starts_with("xxx  "));
    }
}

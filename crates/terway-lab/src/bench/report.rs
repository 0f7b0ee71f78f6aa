//! What every benchmark hands back: a JSON section (figures in ms, per-second and bytes), tables for the
//! terminal, goals with their verdicts, and chart data for the plot.

use serde::Serialize;
use serde_json::Value;

use super::stats::{verdict, Verdict};
use crate::table::{self, Cell};

/// A table for the terminal.
#[derive(Debug, Clone)]
pub struct Table {
    /// Caption printed above it.
    pub title: String,
    /// Column headers.
    pub headers: Vec<String>,
    /// Rows.
    pub rows: Vec<Vec<Cell>>,
}

impl Table {
    /// An empty table.
    pub fn new(title: impl Into<String>, headers: &[&str]) -> Self {
        Table {
            title: title.into(),
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Append a row of plain cells.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells.into_iter().map(Cell::plain).collect());
    }

    /// Render for the terminal.
    pub fn render(&self) -> String {
        let h: Vec<&str> = self.headers.iter().map(String::as_str).collect();
        format!("{}\n{}", self.title, table::render(&h, &self.rows))
    }
}

/// One goal from issue 7 and how the run did against it.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// What is measured, e.g. "CNI ADD p50 vs bridge+host-local".
    pub name: String,
    /// The goal in words, e.g. "<= 0.30x".
    pub goal: String,
    /// The measured value (same unit as the goal).
    pub value: Option<f64>,
    /// Met / missed / unknown.
    pub verdict: Verdict,
}

impl Target {
    /// A goal `value <= goal` (`at_most`) or `value >= goal`.
    pub fn new(
        name: impl Into<String>,
        value: Option<f64>,
        goal: f64,
        at_most: bool,
        unit: &str,
    ) -> Self {
        let op = if at_most { "<=" } else { ">=" };
        Target {
            name: name.into(),
            goal: format!("{op} {goal}{unit}"),
            value,
            verdict: verdict(value, goal, at_most),
        }
    }
}

/// Chart data; the plot module draws it.
#[derive(Debug, Clone)]
pub enum Chart {
    /// Grouped bars: one group per label, one bar per series.
    Bars {
        /// Title.
        title: String,
        /// Y axis label (unit).
        y_label: String,
        /// Group labels along X.
        groups: Vec<String>,
        /// (series name, one value per group).
        series: Vec<(String, Vec<f64>)>,
    },
    /// Lines over a numeric X axis.
    Lines {
        /// Title.
        title: String,
        /// X axis label.
        x_label: String,
        /// Y axis label.
        y_label: String,
        /// (series name, points).
        series: Vec<(String, Vec<(f64, f64)>)>,
    },
}

/// The result of one benchmark.
#[derive(Debug, Clone)]
pub struct Section {
    /// `cni`, `churn`, …
    pub name: &'static str,
    /// Every figure, machine-readable.
    pub json: Value,
    /// Terminal tables.
    pub tables: Vec<Table>,
    /// Goals.
    pub targets: Vec<Target>,
    /// Plot data.
    pub charts: Vec<Chart>,
}

impl Section {
    /// An empty section.
    pub fn new(name: &'static str) -> Self {
        Section {
            name,
            json: Value::Null,
            tables: Vec::new(),
            targets: Vec::new(),
            charts: Vec::new(),
        }
    }
}

/// Format an optional number with `digits` decimals, `-` when absent.
pub fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "-".into())
}

/// Format a ratio as `0.42x`.
pub fn fmt_ratio(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.2}x")).unwrap_or_else(|| "-".into())
}

/// The goals table of all sections.
pub fn targets_table(sections: &[Section]) -> Option<Table> {
    let all: Vec<&Target> = sections.iter().flat_map(|s| s.targets.iter()).collect();
    if all.is_empty() {
        return None;
    }
    let mut t = Table::new(
        "Targets (issue 7)",
        &["target", "goal", "measured", "verdict"],
    );
    for g in all {
        let cell = match g.verdict {
            Verdict::Met => Cell::status("met", true),
            Verdict::Missed => Cell::status("MISSED", false),
            Verdict::Unknown => Cell::plain("not measured"),
        };
        t.rows.push(vec![
            Cell::plain(g.name.clone()),
            Cell::plain(g.goal.clone()),
            Cell::plain(fmt(g.value, 3)),
            cell,
        ]);
    }
    Some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_render_verdicts() {
        let mut s = Section::new("cni");
        s.targets
            .push(Target::new("ADD p50 ratio", Some(0.2), 0.3, true, "x"));
        s.targets
            .push(Target::new("ADD/s", Some(150.0), 200.0, false, "/s"));
        assert_eq!(s.targets[0].verdict, Verdict::Met);
        assert_eq!(s.targets[1].verdict, Verdict::Missed);
        assert_eq!(s.targets[1].goal, ">= 200/s");
        let t = targets_table(&[s]).unwrap().render();
        assert!(t.contains("MISSED") && t.contains("met"));
        assert_eq!(fmt(None, 2), "-");
        assert_eq!(fmt_ratio(Some(0.4242)), "0.42x");
    }
}

//! The printed tables (Markdown, so they paste into `docs/benchmarks.md`).

use std::fmt::Write as _;

use crate::measure::{CpuShare, Latency, Measured};
use crate::raw::Baselines;

/// One line of a scenario's table.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    pub count: u64,
    pub secs: f64,
    pub rate: f64,
    pub latency: Option<Latency>,
    pub errors: u64,
    /// The baseline this row is compared with: its name and rate.
    pub baseline: Option<(String, f64)>,
    /// Peak RSS of the bench process during this row, MiB.
    pub rss_mib: Option<f64>,
    pub cpu: Option<CpuShare>,
}

impl Row {
    /// A row from a measured phase.
    pub fn of(name: impl Into<String>, m: &Measured, rss_mib: Option<f64>) -> Self {
        Self {
            name: name.into(),
            count: m.ok + m.errors,
            secs: m.elapsed.as_secs_f64(),
            rate: m.rate(),
            latency: m.latency,
            errors: m.errors,
            baseline: None,
            rss_mib,
            cpu: m.cpu,
        }
    }

    /// Rows for a paced phase: latency counted from each operation's schedule, and a second
    /// row with latency counted from its release by the pacer thread (leaving out only that
    /// thread's own lateness).
    pub fn paced(name: &str, m: &Measured, rss_mib: Option<f64>) -> Vec<Self> {
        let mut rows = vec![Self::of(name, m, rss_mib)];
        if m.issued.is_some() {
            let mut from_issue = Self::of(format!("{name}, latency from issue"), m, rss_mib);
            from_issue.latency = m.issued;
            rows.push(from_issue);
        }
        rows
    }

    /// Compares the row with a baseline.
    pub fn vs(mut self, name: &str, rate: f64) -> Self {
        self.baseline = Some((name.to_owned(), rate));
        self
    }
}

/// Baseline names used in the tables.
pub const RAW_ASYNC: &str = "raw async publish";
pub const RAW_SYNC: &str = "raw publish-and-wait";
pub const RAW_CONSUME: &str = "raw ordered consume";
/// The raw ordered consume measured again right before the row compared with it.
pub const RAW_CONSUME_BESIDE: &str = "raw ordered consume, just before";

/// The baseline rows themselves.
pub fn baseline_rows(b: &Baselines) -> Vec<Row> {
    let mut rows = vec![
        Row::of(
            format!("{RAW_ASYNC} ({} acks in flight)", b.plan.window),
            &b.async_publish,
            None,
        ),
        Row::of(RAW_SYNC, &b.sync_publish, None),
        Row::of(format!("{RAW_CONSUME} (no acks)"), &b.consume, None),
        Row::of(
            "ref: raw async publish + 2 Crm-* headers",
            &b.async_publish_headers,
            None,
        )
        .vs(RAW_ASYNC, b.async_publish.rate()),
        Row::of(
            "ref: raw ordered consume + 2 Crm-* headers",
            &b.consume_headers,
            None,
        )
        .vs(RAW_CONSUME, b.consume.rate()),
    ];
    if let Some(lean) = &b.consume_lean {
        rows.push(
            Row::of(
                "ref: raw consume on a lean connection (crm_log::wire, pulls of 10,000)",
                lean,
                None,
            )
            .vs(RAW_CONSUME, b.consume.rate()),
        );
    }
    rows
}

/// Everything printed for one scenario.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub scenario: String,
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
}

fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn thousands(v: f64) -> String {
    let n = v.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl Table {
    /// The table as Markdown.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "### {}\n", self.scenario);
        let _ = writeln!(
            out,
            "| scenario | count | time s | throughput /s | p50 ms | p99 ms | p99.9 ms | errors | baseline | baseline /s | ratio | CPU % bench / nats | peak RSS MiB |"
        );
        let _ = writeln!(
            out,
            "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|"
        );
        for r in &self.rows {
            let (p50, p99, p999) = match r.latency {
                Some(l) => (ms(l.p50), ms(l.p99), ms(l.p999)),
                None => ("".into(), "".into(), "".into()),
            };
            let (bname, brate, ratio) = match &r.baseline {
                Some((n, b)) => (
                    n.clone(),
                    thousands(*b),
                    format!("{:.1} %", 100.0 * r.rate / b.max(1e-9)),
                ),
                None => (String::new(), String::new(), String::new()),
            };
            let cpu = r
                .cpu
                .map(|c| format!("{:.0} / {:.0}", c.bench, c.nats))
                .unwrap_or_default();
            let rss = r.rss_mib.map(|m| format!("{m:.0}")).unwrap_or_default();
            let _ = writeln!(
                out,
                "| {} | {} | {:.2} | {} | {p50} | {p99} | {p999} | {} | {bname} | {brate} | {ratio} | {cpu} | {rss} |",
                r.name,
                thousands(r.count as f64),
                r.secs,
                thousands(r.rate),
                r.errors,
            );
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for n in &self.notes {
                let _ = writeln!(out, "- {n}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
        assert_eq!(ms(0.1234), "0.12");
        assert_eq!(ms(12.34), "12.3");
        assert_eq!(ms(123.4), "123");
    }

    #[test]
    fn ratio_is_against_the_baseline() {
        let m = Measured {
            ok: 50,
            errors: 0,
            first_error: None,
            elapsed: std::time::Duration::from_secs(1),
            latency: None,
            issued: None,
            cpu: None,
        };
        let t = Table {
            scenario: "x".into(),
            rows: vec![Row::of("r", &m, None).vs("b", 200.0)],
            notes: vec![],
        };
        assert!(t.render().contains("| 25.0 % |"), "{}", t.render());
    }
}

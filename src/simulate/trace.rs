//! The arrival trace: `t_seconds,count` rows, each spreading its jobs evenly up to the next row.
//! Errors name the line.

use std::path::Path;

use super::{Error, Result};

/// The header every trace starts with.
pub const HEADER: &str = "t_seconds,count";

/// One row of a trace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TraceRow {
    /// When the row's jobs start arriving, in seconds from the start of the run.
    pub t_s: f64,
    /// Jobs arriving evenly over `[t_s, next row's t_s)`, or all at `t_s` on the last row.
    pub count: u64,
}

/// A validated arrival trace: rows sorted by time, times finite and non-negative.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    rows: Vec<TraceRow>,
    jobs: u64,
}

impl Trace {
    /// Parses CSV text: the header `t_seconds,count`, then one row per line; blank lines are
    /// skipped. An error names the 1-based line.
    pub fn parse(text: &str) -> Result<Self> {
        Self::parse_from("trace", text)
    }

    /// Reads and parses a trace file; errors name the file and the line.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text =
            std::fs::read_to_string(path).map_err(|source| Error::ReadTrace { path: path.to_path_buf(), source })?;
        Self::parse_from(&path.display().to_string(), &text)
    }

    /// A trace from rows already in memory (synthetic workloads); line numbers in errors count
    /// rows from 1.
    pub fn from_rows(rows: Vec<TraceRow>) -> Result<Self> {
        let mut previous = 0.0;
        for (i, row) in rows.iter().enumerate() {
            check_row(row, previous).map_err(|message| Error::Trace { origin: "rows".into(), line: i + 1, message })?;
            previous = row.t_s;
        }
        if rows.is_empty() {
            return Err(Error::Trace { origin: "rows".into(), line: 0, message: "no rows".into() });
        }
        let jobs = total(&rows).map_err(|(line, message)| Error::Trace { origin: "rows".into(), line, message })?;
        Ok(Self { rows, jobs })
    }

    fn parse_from(origin: &str, text: &str) -> Result<Self> {
        let error = |line: usize, message: String| Error::Trace { origin: origin.to_string(), line, message };
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())).filter(|(_, l)| !l.is_empty());
        match lines.next() {
            Some((_, header)) if header.replace(' ', "") == HEADER => {}
            Some((n, other)) => return Err(error(n, format!("expected the header {HEADER:?}, found {other:?}"))),
            None => return Err(error(1, format!("empty trace: expected the header {HEADER:?} and rows"))),
        }
        let mut rows = Vec::new();
        let (mut previous, mut jobs) = (0.0, 0u64);
        let mut last_line = 1;
        for (n, line) in lines {
            last_line = n;
            let row = parse_row(line).map_err(|m| error(n, m))?;
            check_row(&row, previous).map_err(|m| error(n, m))?;
            jobs = jobs.checked_add(row.count).ok_or_else(|| error(n, TOO_MANY.into()))?;
            previous = row.t_s;
            rows.push(row);
        }
        if rows.is_empty() {
            return Err(error(last_line, "no rows after the header".into()));
        }
        Ok(Self { rows, jobs })
    }

    /// The rows, sorted by time.
    pub fn rows(&self) -> &[TraceRow] {
        &self.rows
    }

    /// Jobs in the whole trace.
    pub fn jobs(&self) -> u64 {
        self.jobs
    }

    /// The last row's time: when the last jobs have arrived.
    pub fn duration_s(&self) -> f64 {
        self.rows.last().map_or(0.0, |r| r.t_s)
    }

    /// The arrival times, in order.
    pub fn arrivals(&self) -> Arrivals<'_> {
        Arrivals { rows: &self.rows, row: 0, k: 0 }
    }
}

fn parse_row(line: &str) -> Result<TraceRow, String> {
    let mut fields = line.split(',').map(str::trim);
    let (Some(t), Some(count), None) = (fields.next(), fields.next(), fields.next()) else {
        return Err(format!("expected two fields `t_seconds,count`, found {line:?}"));
    };
    let t_s = t.parse::<f64>().map_err(|_| format!("t_seconds {t:?} is not a number"))?;
    let count = count.parse::<u64>().map_err(|_| format!("count {count:?} is not a whole number of jobs"))?;
    Ok(TraceRow { t_s, count })
}

fn check_row(row: &TraceRow, previous: f64) -> Result<(), String> {
    if !row.t_s.is_finite() || row.t_s < 0.0 {
        return Err(format!("t_seconds = {} must be a finite number of seconds, zero or more", row.t_s));
    }
    if row.t_s < previous {
        return Err(format!("t_seconds = {} is before the previous row's {previous}: sort the rows by time", row.t_s));
    }
    Ok(())
}

/// A cursor over the arrival times, computed on the fly: a million-job trace needs no
/// million-entry buffer.
#[derive(Debug, Clone)]
pub struct Arrivals<'a> {
    rows: &'a [TraceRow],
    /// The row whose jobs arrive next.
    row: usize,
    /// Jobs of that row already arrived.
    k: u64,
}

impl Arrivals<'_> {
    /// The time of the next arrival, `None` when the trace is over.
    pub fn peek(&mut self) -> Option<f64> {
        while let Some(row) = self.rows.get(self.row) {
            if self.k < row.count {
                let span = self.rows.get(self.row + 1).map_or(0.0, |next| next.t_s - row.t_s);
                return Some(row.t_s + span * self.k as f64 / row.count as f64);
            }
            self.row += 1;
            self.k = 0;
        }
        None
    }

    /// Consumes the arrival [`peek`](Self::peek) returned.
    pub fn advance(&mut self) {
        self.k += 1;
    }
}

/// Why a trace whose counts add up past `u64::MAX` is refused.
const TOO_MANY: &str = "the counts add up to more than 2^64 jobs";

/// The jobs of all rows, or the 1-based row whose count takes the total past `u64::MAX`.
fn total(rows: &[TraceRow]) -> std::result::Result<u64, (usize, String)> {
    rows.iter().enumerate().try_fold(0u64, |sum, (i, row)| sum.checked_add(row.count).ok_or((i + 1, TOO_MANY.into())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn times(trace: &Trace) -> Vec<f64> {
        let mut arrivals = trace.arrivals();
        let mut out = Vec::new();
        while let Some(t) = arrivals.peek() {
            out.push(t);
            arrivals.advance();
        }
        out
    }

    #[test]
    fn rows_spread_their_jobs_until_the_next_row() {
        let trace = Trace::parse("t_seconds,count\n0,4\n\n10,0\n20,2\n20,0\n30,3\n").unwrap();
        assert_eq!(trace.jobs(), 9);
        assert_eq!(trace.duration_s(), 30.0);
        // 4 over [0, 10); none over [10, 20); 2 at once at 20 (next row at the same time); the
        // last row's 3 all at 30.
        assert_eq!(times(&trace), [0.0, 2.5, 5.0, 7.5, 20.0, 20.0, 30.0, 30.0, 30.0]);
    }

    #[test]
    fn the_header_may_have_spaces_and_crlf() {
        let trace = Trace::parse("t_seconds, count\r\n0, 1\r\n").unwrap();
        assert_eq!(trace.rows(), [TraceRow { t_s: 0.0, count: 1 }]);
    }

    #[test]
    fn unsorted_rows_are_refused_with_the_line() {
        let err = Trace::parse("t_seconds,count\n0,1\n10,1\n5,1\n").unwrap_err().to_string();
        assert!(err.starts_with("trace:4:") && err.contains("sort the rows"), "{err}");
    }

    #[test]
    fn bad_lines_are_refused_with_the_line() {
        let cases = [
            ("t,count\n0,1\n", "trace:1:", "header"),
            ("t_seconds,count\n0,1\nten,1\n", "trace:3:", "not a number"),
            ("t_seconds,count\n0,1.5\n", "trace:2:", "whole number"),
            ("t_seconds,count\n0,1,2\n", "trace:2:", "two fields"),
            ("t_seconds,count\n-1,1\n", "trace:2:", "zero or more"),
            ("t_seconds,count\ninf,1\n", "trace:2:", "finite"),
            ("t_seconds,count\n", "trace:1:", "no rows"),
            ("", "trace:1:", "empty"),
            ("t_seconds,count\n0,18446744073709551615\n\n1,1\n", "trace:4:", "2^64"),
        ];
        for (text, prefix, words) in cases {
            let err = Trace::parse(text).unwrap_err().to_string();
            assert!(err.starts_with(prefix) && err.contains(words), "{text:?} gave {err}");
        }
    }

    #[test]
    fn load_names_the_file() {
        let dir = std::env::temp_dir().join(format!("skyburst-trace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.csv");
        std::fs::write(&path, "t_seconds,count\n0,x\n").unwrap();
        let err = Trace::load(&path).unwrap_err().to_string();
        assert!(err.contains("bad.csv:2:"), "{err}");
        assert!(matches!(Trace::load(dir.join("missing.csv")), Err(Error::ReadTrace { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn from_rows_checks_the_order() {
        let rows = vec![TraceRow { t_s: 5.0, count: 1 }, TraceRow { t_s: 1.0, count: 1 }];
        assert!(Trace::from_rows(rows).unwrap_err().to_string().starts_with("rows:2:"));
        assert!(Trace::from_rows(vec![]).is_err());
        let huge = vec![TraceRow { t_s: 0.0, count: u64::MAX }, TraceRow { t_s: 1.0, count: 1 }];
        assert!(Trace::from_rows(huge).unwrap_err().to_string().starts_with("rows:2:"));
    }
}

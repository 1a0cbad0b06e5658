//! Presents result records: JSON lines for programs, CSV for spreadsheets, an aligned table
//! for people, followed by each target's capability flags. JSON and CSV carry every field of
//! [`ResultRecord`] under its stable name. Table cells are one line each, without control
//! characters, whatever a provider put in them.

use std::io::{self, Write};

use crate::capability::Capabilities;
use crate::result::ResultRecord;
use crate::sanitize::one_line;

/// Output formats of `sonde probe`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// An aligned table for a terminal.
    Table,
    /// One JSON object per line.
    Json,
    /// A header and one row per run.
    Csv,
}

/// Longest error text shown in a table cell; JSON and CSV keep it whole.
const TABLE_ERROR_CHARS: usize = 70;

/// Writes `records` to `out` in `format`.
pub fn write(out: &mut dyn Write, format: Format, records: &[ResultRecord]) -> io::Result<()> {
    match format {
        Format::Json => {
            for record in records {
                serde_json::to_writer(&mut *out, record)?;
                out.write_all(b"\n")?;
            }
            Ok(())
        }
        Format::Csv => {
            let mut writer = csv::Writer::from_writer(out);
            for record in records {
                writer.serialize(record).map_err(io::Error::other)?;
            }
            writer.flush()
        }
        Format::Table => write_table(out, records),
    }
}

fn write_table(out: &mut dyn Write, records: &[ResultRecord]) -> io::Result<()> {
    const HEADER: [&str; 13] = [
        "target", "probe", "outcome", "http", "ttfb ms", "ttft ms", "e2e ms", "itl p50", "tok/s",
        "tokens", "streamed", "served", "error",
    ];
    let rows: Vec<[String; 13]> = records.iter().map(row).collect();
    let mut widths = HEADER.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut line = |cells: &[String]| -> io::Result<()> {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            let numeric = (3..=9).contains(&i);
            let pad = width.saturating_sub(cell.chars().count());
            if i > 0 {
                text.push_str("  ");
            }
            if numeric {
                text.push_str(&" ".repeat(pad));
                text.push_str(cell);
            } else {
                text.push_str(cell);
                if i + 1 < cells.len() {
                    text.push_str(&" ".repeat(pad));
                }
            }
        }
        writeln!(out, "{}", text.trim_end())
    };
    line(&HEADER.map(str::to_owned))?;
    for row in &rows {
        line(row)?;
    }
    write_capabilities(out, records)
}

/// Below the table: per target, what this round showed it can do (targets whose probes claim
/// no capability are left out).
fn write_capabilities(out: &mut dyn Write, records: &[ResultRecord]) -> io::Result<()> {
    let mut targets: Vec<&str> = Vec::new();
    for record in records {
        if !targets.contains(&record.target.as_str()) {
            targets.push(&record.target);
        }
    }
    let summaries: Vec<(&str, Capabilities)> = targets
        .into_iter()
        .map(|target| {
            let flags = Capabilities::over(records.iter().filter(|r| r.target == target));
            (target, flags)
        })
        .filter(|(_, flags)| !flags.is_unknown())
        .collect();
    if summaries.is_empty() {
        return Ok(());
    }
    let width = summaries
        .iter()
        .map(|(t, _)| t.chars().count())
        .max()
        .unwrap_or(0);
    writeln!(out, "\ncapabilities")?;
    for (target, flags) in summaries {
        writeln!(out, "{:<width$}  {}", one_line(target), flags.describe())?;
    }
    Ok(())
}

fn row(record: &ResultRecord) -> [String; 13] {
    let ms = |value: Option<f64>| value.map_or("-".to_owned(), |v| format!("{v:.1}"));
    let tokens = match (record.output_tokens, record.tokens_estimated) {
        (Some(tokens), true) => format!("~{tokens}"),
        (Some(tokens), false) => tokens.to_string(),
        (None, _) => "-".to_owned(),
    };
    let mut error = one_line(record.problem().as_deref().unwrap_or_default());
    if error.chars().count() > TABLE_ERROR_CHARS {
        error = error
            .chars()
            .take(TABLE_ERROR_CHARS - 1)
            .collect::<String>()
            + "…";
    }
    // Who answered, when the provider says and it is worth saying: another model than the
    // one asked for (`≠`), or a gateway's upstream.
    let mut served = match (&record.served_model, record.model_substituted) {
        (Some(model), true) => format!("≠ {}", one_line(model)),
        _ => String::new(),
    };
    if let Some(upstream) = &record.upstream {
        served = format!("{served} via {}", one_line(upstream))
            .trim()
            .to_owned();
    }
    [
        one_line(&record.target),
        record.probe.clone(),
        record.outcome.to_string(),
        record.http_status.map_or("-".to_owned(), |s| s.to_string()),
        ms(record.ttfb_ms),
        ms(record.ttft_ms),
        ms(record.e2e_ms),
        ms(record.itl_p50_ms),
        record
            .tokens_per_s
            .map_or("-".to_owned(), |v| format!("{v:.1}")),
        tokens,
        // Only a probe that checks streaming says anything about it: a one-token ping
        // arrives whole from any provider.
        crate::capability::word(record.cap_streaming).to_owned(),
        if served.is_empty() {
            "–".to_owned()
        } else {
            served
        },
        error,
    ]
}

//! `report.md`: a bench's figures as GitHub Markdown — a verdict line and a table of
//! percentiles per target × probe, ready for a step summary or a PR comment.

use std::fmt::Write as _;

use super::figures::{Summary, TargetSummary, ms, number, top_errors};

/// `report.md`: fit for `$GITHUB_STEP_SUMMARY` and a PR comment.
pub fn markdown(summary: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# sonde bench\n");
    let _ = writeln!(
        out,
        "{} — {}. Latencies count from each request's intended send time; sonde {}.\n",
        summary.generated, summary.load, summary.sonde_version
    );
    for target in &summary.targets {
        section(&mut out, target);
    }
    out
}

fn section(out: &mut String, s: &TargetSummary) {
    let _ = writeln!(out, "## `{}` · {}\n", s.target, s.probe);
    let _ = writeln!(out, "**{}**\n", s.verdict);
    let _ = writeln!(
        out,
        "| requests | ok | errors | elapsed | throughput | output tokens/s | cost |"
    );
    let _ = writeln!(out, "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let _ = writeln!(
        out,
        "| {} | {} | {} | {:.2} s | {:.1} req/s | {:.0} | ${:.4} |\n",
        s.requests,
        s.ok,
        s.errors,
        s.elapsed_s,
        s.throughput_rps,
        s.output_tokens_per_s,
        s.cost_usd
    );
    if s.errors > 0 {
        let _ = writeln!(out, "Errors by outcome: {}.\n", top_errors(s));
    }
    if let Some(goodput) = &s.goodput {
        let _ = writeln!(
            out,
            "Goodput: **{:.1} %** of requests were ok with a TTFT within the SLO's {} \
             ({} of {}, {:.1} req/s).\n",
            goodput.share * 100.0,
            ms(goodput.ttft_bound_ms),
            goodput.good,
            s.requests,
            goodput.per_second
        );
    }
    let _ = writeln!(out, "| metric | p50 | p90 | p95 | p99 | max | samples |");
    let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    let l = &s.latency;
    for (name, figures) in [
        ("TTFT (ms)", &l.ttft_ms),
        ("E2E (ms)", &l.e2e_ms),
        ("ITL (ms)", &l.itl_ms),
        ("tokens/s", &l.tokens_per_s),
    ] {
        let cell = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), number);
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {} | {} |",
            cell(figures.p50),
            cell(figures.p90),
            cell(figures.p95),
            cell(figures.p99),
            cell(figures.max),
            figures.count
        );
    }
    out.push('\n');
    if let Some(omission) = &s.coordinated_omission {
        let measured = &l.ttft_ms;
        let corrected = &omission.corrected_ttft_ms;
        let pair = |q: &str, m: Option<f64>, c: Option<f64>| match (m, c) {
            (Some(m), Some(c)) => Some(format!("{q} {} → {}", ms(m), ms(c))),
            _ => None,
        };
        let pairs: Vec<String> = [
            pair("p90", measured.p90, corrected.p90),
            pair("p99", measured.p99, corrected.p99),
            pair("max", measured.max, corrected.max),
        ]
        .into_iter()
        .flatten()
        .collect();
        let understated = corrected.p99 > measured.p99 || corrected.p90 > measured.p90;
        if understated {
            let _ = writeln!(
                out,
                "> **Closed loop: these tail figures understate latency.** A slow answer held \
                 its worker, so the requests it would have sent meanwhile were never measured \
                 (coordinated omission). Corrected for an expected interval of {} (the median \
                 E2E), TTFT would be {}. Run with `--rate` for tail figures that hold.\n",
                ms(omission.expected_interval_ms),
                pairs.join(", ")
            );
        } else {
            let _ = writeln!(
                out,
                "> Closed loop: a stall would hide the requests its worker did not send \
                 (coordinated omission), understating the tail. In this run no TTFT exceeded \
                 the expected interval of {} (the median E2E) by enough to change p90 or p99. \
                 Use `--rate` for tail figures that hold under stalls.\n",
                ms(omission.expected_interval_ms)
            );
        }
    }
}

//! `sonde bench`: load one or more targets, write `report.md`, `results.csv` and
//! `summary.json`, and gate on a baseline.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use sonde::bench::arrivals::Process;
use sonde::bench::figures::{SCHEMA, Summary, Tally};
use sonde::bench::report;
use sonde::bench::{self, Load, Plan, gate};
use sonde::config::Config;
use sonde::owned_dir::{self, Protected, REPORT_MARKER};
use sonde::result::{Outcome, ResultRecord};
use sonde::runner::Runner;

/// Arguments of `sonde bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    select: super::Targets,
    /// The probes to load each target with. Repeatable.
    #[arg(long = "probe", short = 'p', default_value = "stream")]
    probes: Vec<String>,
    /// Requests per target × probe (with --duration, whichever ends first).
    #[arg(long, short = 'n')]
    requests: Option<u64>,
    /// How long to send per target × probe, e.g. `30s`.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Closed loop: this many workers, each sending when its previous request ended
    /// (the default, with 1 worker).
    #[arg(long, conflicts_with = "rate")]
    concurrency: Option<usize>,
    /// Open loop: this many requests per second on average, sent whatever the server does.
    #[arg(long)]
    rate: Option<f64>,
    /// Open loop: the Gamma shape of the gaps; 1 is Poisson, below 1 burstier.
    #[arg(long, default_value_t = 1.0, requires = "rate")]
    burstiness: f64,
    /// Open loop: runs in flight at most; later sends wait, and the wait counts as latency.
    #[arg(long, default_value_t = 10_000)]
    max_in_flight: usize,
    /// Client threads. One drives thousands of streaming requests per second and leaves the
    /// other cores to a server on the same machine; raise it for a remote server at higher
    /// rates.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Seed of the arrival process (random when absent).
    #[arg(long)]
    seed: Option<u64>,
    /// Where the reports go (default `reports/bench-<UTC time>`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// An earlier `summary.json` to compare with; exit 1 when a metric regressed.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// How much worse a metric may get before the gate fails: `10%` or `0.1`.
    #[arg(long, default_value = "10%", value_parser = parse_fraction, requires = "baseline")]
    max_regression: f64,
}

/// Exit 0 when every target answered and the gate (if any) passed, 1 otherwise, 2 for a bad
/// config.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::init_logging("warn");
    let plan = plan(&args)?;
    let config = Config::load(&args.select.config)?;
    let jobs = super::select(&config, &args.select.targets, &args.probes)?;
    let baseline = match &args.baseline {
        Some(path) => Some(Summary::load(path)?),
        None => None,
    };
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("reports").join(format!(
            "bench-{}",
            chrono::Utc::now().format("%Y%m%d-%H%M%S")
        ))
    });
    let out = Protected::new(&config.file, config.store.file()).check(&out)?;
    owned_dir::claim(&out, REPORT_MARKER)?;
    let csv_path = out.join("results.csv");
    let csv_file =
        File::create(&csv_path).with_context(|| format!("cannot write {}", csv_path.display()))?;
    let mut csv = csv::Writer::from_writer(BufWriter::new(csv_file));
    let runner = Arc::new(Runner::new(&config)?);
    let runtime = super::runtime_with(args.threads)?;
    eprintln!("sonde bench: {} → {}", plan.describe(), out.display());
    let mut targets = Vec::new();
    for (target, probe) in &jobs {
        let label = format!("{} · {}", target.id, probe.name);
        let progress = Progress::new(&label, &plan);
        let mut tally = Tally::default();
        let mut written: csv::Result<()> = Ok(());
        let elapsed = runtime.block_on(bench::run(
            Arc::clone(&runner),
            target,
            probe,
            plan,
            |record: ResultRecord| {
                if written.is_ok() {
                    written = csv.serialize(&record);
                }
                let outcome = record.outcome;
                tally.add(record);
                progress.update(&tally, outcome);
            },
        ));
        progress.finish(&tally, elapsed);
        written.with_context(|| format!("cannot write {}", csv_path.display()))?;
        targets.extend(tally.summarize(&plan, elapsed, target.model.slo.as_ref()));
    }
    csv.flush()
        .with_context(|| format!("cannot write {}", csv_path.display()))?;
    let summary = Summary {
        schema: SCHEMA.to_owned(),
        sonde_version: env!("CARGO_PKG_VERSION").to_owned(),
        generated: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        load: plan.describe(),
        closed_loop: matches!(plan.load, Load::Closed { .. }),
        targets,
    };
    let mut markdown = report::markdown(&summary);
    let mut gate_failed = false;
    if let (Some(baseline), Some(path)) = (&baseline, &args.baseline) {
        let comparison = gate::compare(baseline, &summary, args.max_regression)?;
        gate_failed = comparison.regressed();
        markdown.push_str(&comparison.markdown(&path.display().to_string()));
    }
    write(
        &out.join("summary.json"),
        &serde_json::to_vec_pretty(&summary)?,
    )?;
    write(&out.join("report.md"), markdown.as_bytes())?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(markdown.as_bytes())?;
    stdout.flush()?;
    let silent = summary.targets.iter().any(|t| t.ok == 0) || summary.targets.len() < jobs.len();
    Ok(if gate_failed || silent {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn plan(args: &Args) -> anyhow::Result<Plan> {
    if args.requests.is_none() && args.duration.is_none() {
        bail!("say how much to send: --requests N, --duration D, or both");
    }
    if args.requests == Some(0) {
        bail!("--requests must be at least 1");
    }
    let load = match (args.rate, args.concurrency) {
        (Some(rate), _) => {
            if !(rate.is_finite() && rate > 0.0) {
                bail!("--rate must be a positive number of requests per second");
            }
            if !(args.burstiness.is_finite() && args.burstiness > 0.0) {
                bail!("--burstiness must be a positive number (1 is Poisson)");
            }
            Load::Open(Process {
                rate,
                burstiness: args.burstiness,
            })
        }
        (None, concurrency) => {
            let concurrency = concurrency.unwrap_or(1);
            if concurrency == 0 {
                bail!("--concurrency must be at least 1");
            }
            Load::Closed { concurrency }
        }
    };
    Ok(Plan {
        load,
        requests: args.requests,
        duration: args.duration,
        max_in_flight: args.max_in_flight.max(1),
        seed: args.seed.unwrap_or_else(rand::random),
    })
}

/// `10%`, `10 %` or `0.1`.
fn parse_fraction(text: &str) -> Result<f64, String> {
    let text = text.trim();
    let value = match text.strip_suffix('%') {
        Some(percent) => percent.trim().parse::<f64>().map(|p| p / 100.0),
        None => text.parse::<f64>(),
    }
    .map_err(|_| format!("{text:?} is not a fraction: write 10% or 0.1"))?;
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(format!("{text:?} must be 0 or more"))
    }
}

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// A progress bar on a terminal; plain lines every few seconds otherwise (CI logs).
struct Progress {
    bar: Option<ProgressBar>,
    label: String,
    started: Instant,
    next_line: std::cell::Cell<Instant>,
    errors: std::cell::Cell<u64>,
}

/// How often a plain progress line is written.
const LINE_EVERY: Duration = Duration::from_secs(5);

impl Progress {
    fn new(label: &str, plan: &Plan) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = match plan.requests {
                Some(n) => ProgressBar::new(n),
                None => ProgressBar::new_spinner(),
            };
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {pos}/{len} {per_sec} {elapsed} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix(label.to_owned());
            bar
        });
        let now = Instant::now();
        Progress {
            bar,
            label: label.to_owned(),
            started: now,
            next_line: std::cell::Cell::new(now + LINE_EVERY),
            errors: std::cell::Cell::new(0),
        }
    }

    fn update(&self, tally: &Tally, outcome: Outcome) {
        if outcome != Outcome::Ok {
            self.errors.set(self.errors.get() + 1);
        }
        match &self.bar {
            Some(bar) => {
                bar.set_position(tally.requests());
                if outcome != Outcome::Ok {
                    bar.set_message(format!("{} errors", self.errors.get()));
                }
            }
            None if Instant::now() >= self.next_line.get() => {
                self.next_line.set(Instant::now() + LINE_EVERY);
                eprintln!(
                    "{}: {} runs, {} errors, {:.0} s",
                    self.label,
                    tally.requests(),
                    self.errors.get(),
                    self.started.elapsed().as_secs_f64()
                );
            }
            None => {}
        }
    }

    fn finish(&self, tally: &Tally, elapsed: Duration) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        eprintln!(
            "{}: {} runs, {} ok, in {:.2} s",
            self.label,
            tally.requests(),
            tally.ok(),
            elapsed.as_secs_f64()
        );
    }
}

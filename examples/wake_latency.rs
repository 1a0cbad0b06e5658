//! How late this machine wakes a sleeping task: the floor under every latency measured on it.
//!
//! Waits 50 ms, idle, 200 times through sonde's precise `Timer` and through tokio's
//! `sleep_until`, and prints how late each woke (p50, p90, p99, max). A measured TTFT over
//! loopback pays this wake-up about three times (the server reading the request, the server's
//! injected delay ending, the client reading the answer), so it says how much of a client's
//! overhead in `benches/peers/run.sh` is the machine's rather than the client's.
//!
//! ```sh
//! cargo run --release --example wake_latency
//! ```

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

const WAITS: usize = 200;
const IDLE: Duration = Duration::from_millis(50);

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(async {
        let precise = lateness(Wait::Precise(sonde::timer::Timer::default())).await;
        println!("sonde Timer (timerfd):    {}", summary(&precise));
        let ticks = lateness(Wait::Ticks).await;
        println!("tokio sleep_until:        {}", summary(&ticks));
    });
}

/// The two ways of waiting compared.
enum Wait {
    /// sonde's timerfd-backed timer.
    Precise(sonde::timer::Timer),
    /// tokio's timer wheel (1 ms ticks).
    Ticks,
}

/// How late each of `WAITS` waits of `IDLE` woke, in µs.
async fn lateness(mut wait: Wait) -> Histogram<u64> {
    let mut late = Histogram::new(3).expect("3 significant digits is a valid precision");
    for _ in 0..WAITS {
        let deadline = Instant::now() + IDLE;
        match &mut wait {
            Wait::Precise(timer) => timer.until(deadline).await,
            Wait::Ticks => tokio::time::sleep_until(deadline.into()).await,
        }
        late.saturating_record(deadline.elapsed().as_micros() as u64);
    }
    late
}

/// "late by p50 … µs", the percentiles as sonde's reports take them from a histogram.
fn summary(late: &Histogram<u64>) -> String {
    format!(
        "late by p50 {} µs, p90 {} µs, p99 {} µs, max {} µs",
        late.value_at_quantile(0.50),
        late.value_at_quantile(0.90),
        late.value_at_quantile(0.99),
        late.max()
    )
}

//! Request latencies: each shard records its APIs' latencies in hdrhistograms of two windows of
//! a minute (so quantiles describe recent requests), and a scrape merges the shards' histograms
//! into one summary per API (merged at scrape time, so a shard never waits for another).

use std::fmt::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use kafka_protocol::messages::ApiKey;

use super::exposition::write_family;
use super::lock;
use super::shard::ShardMetrics;

/// API keys are small numbers; latencies are kept for keys below this.
pub(super) const API_KEYS: usize = 80;

/// Latencies are recorded in microseconds up to a minute (longer ones count as a minute) with
/// two significant digits: quantiles within 1 %, in ≈ 20 KiB per histogram.
const LATENCY_MICROS_MAX: u64 = 60_000_000;
const LATENCY_SIGNIFICANT_DIGITS: u8 = 2;

/// Latency quantiles describe the requests answered in the current window and the one before
/// it: the last one to two windows.
pub(super) const LATENCY_WINDOW: Duration = Duration::from_secs(60);

/// The latency quantiles exposed.
const QUANTILES: [f64; 5] = [0.5, 0.9, 0.99, 0.999, 0.9999];

fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MICROS_MAX, LATENCY_SIGNIFICANT_DIGITS)
        .expect("constant bounds hdrhistogram accepts")
}

/// One API's latencies on one shard.
#[derive(Default)]
pub(super) struct ApiLatency {
    /// Requests answered since start (exact).
    pub(super) requests: u64,
    pub(super) latency_micros_sum: u64,
    /// Allocated on the API's first request: most APIs are never used.
    pub(super) recent: Option<RecentLatencies>,
}

/// The latency histograms of the current window and of the one before it.
pub(super) struct RecentLatencies {
    pub(super) current: Histogram<u64>,
    previous: Histogram<u64>,
    current_ends: Instant,
}

impl RecentLatencies {
    pub(super) fn new(now: Instant) -> RecentLatencies {
        RecentLatencies {
            current: latency_histogram(),
            previous: latency_histogram(),
            current_ends: now + LATENCY_WINDOW,
        }
    }

    /// Moves on to the window `now` falls in (at most two steps: after that both are empty).
    pub(super) fn rotate(&mut self, now: Instant) {
        for _ in 0..2 {
            if now < self.current_ends {
                return;
            }
            std::mem::swap(&mut self.current, &mut self.previous);
            self.current.reset();
            self.current_ends += LATENCY_WINDOW;
        }
        if now >= self.current_ends {
            self.current_ends = now + LATENCY_WINDOW;
        }
    }
}

/// One API's latencies over every shard.
struct MergedLatency {
    requests_per_shard: Vec<u64>,
    latency_micros_sum: u64,
    recent: Histogram<u64>,
}

/// Every shard's latencies of `api_key`, or `None` if no shard answered one.
fn merged_latency(shards: &[Arc<ShardMetrics>], key: usize, now: Instant) -> Option<MergedLatency> {
    let mut merged = MergedLatency {
        requests_per_shard: Vec::with_capacity(shards.len()),
        latency_micros_sum: 0,
        recent: latency_histogram(),
    };
    for shard in shards.iter() {
        let mut api = lock(&shard.apis[key]);
        merged.requests_per_shard.push(api.requests);
        merged.latency_micros_sum = merged
            .latency_micros_sum
            .saturating_add(api.latency_micros_sum);
        if let Some(recent) = &mut api.recent {
            recent.rotate(now);
            for histogram in [&recent.current, &recent.previous] {
                merged
                    .recent
                    .add(histogram)
                    .expect("histograms of one configuration merge");
            }
        }
    }
    merged
        .requests_per_shard
        .iter()
        .any(|&requests| requests > 0)
        .then_some(merged)
}

pub(super) fn render_latencies(out: &mut String, shards: &[Arc<ShardMetrics>], now: Instant) {
    let apis: Vec<(String, MergedLatency)> = (0..API_KEYS)
        .filter_map(|key| {
            let api_key = ApiKey::try_from(key as i16).ok()?;
            Some((format!("{api_key:?}"), merged_latency(shards, key, now)?))
        })
        .collect();

    let name = "ferrite_requests_total";
    write_family(
        out,
        name,
        "counter",
        "Requests answered, per shard and API.",
    );
    for (api, latency) in &apis {
        for (shard, requests) in latency.requests_per_shard.iter().enumerate() {
            let _ = writeln!(out, "{name}{{shard=\"{shard}\",api=\"{api}\"}} {requests}");
        }
    }

    let seconds = |micros: u64| micros as f64 / 1e6;
    // An empty window has no quantiles, which Prometheus writes as NaN.
    let recent_seconds = |histogram: &Histogram<u64>, micros: u64| {
        if histogram.is_empty() {
            f64::NAN
        } else {
            seconds(micros)
        }
    };
    let name = "ferrite_request_latency_seconds";
    write_family(
        out,
        name,
        "summary",
        "Time from a request's decoding to its reply being ready, per API, merged over \
         shards. Quantiles (within 1%) cover the last 1 to 2 minutes; sum and count, \
         everything since start.",
    );
    for (api, latency) in &apis {
        for quantile in QUANTILES {
            let micros = latency.recent.value_at_quantile(quantile);
            let value = recent_seconds(&latency.recent, micros);
            let _ = writeln!(
                out,
                "{name}{{api=\"{api}\",quantile=\"{quantile}\"}} {value}"
            );
        }
        let sum = seconds(latency.latency_micros_sum);
        let count: u64 = latency.requests_per_shard.iter().sum();
        let _ = writeln!(out, "{name}_sum{{api=\"{api}\"}} {sum}");
        let _ = writeln!(out, "{name}_count{{api=\"{api}\"}} {count}");
    }

    let name = "ferrite_request_latency_seconds_max";
    write_family(
        out,
        name,
        "gauge",
        "Longest time from a request's decoding to its reply being ready in the last 1 to 2 \
         minutes, per API, over all shards.",
    );
    for (api, latency) in &apis {
        let value = recent_seconds(&latency.recent, latency.recent.max());
        let _ = writeln!(out, "{name}{{api=\"{api}\"}} {value}");
    }
}

//! What metrics cost the request path: one request's latency recorded (a lock only the scraper
//! contends, an hdrhistogram record) and one produced batch counted per topic (the same lock
//! pattern, a hash lookup), alone and while another thread scrapes in a loop (far more often
//! than any Prometheus would); and what a scrape costs the metrics thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use kafka_protocol::messages::ApiKey;
use net::metrics::MetricsRegistry;

fn record(registry: &MetricsRegistry, criterion: &mut Criterion, case: &str) {
    let shard = registry.shard(0);
    criterion.bench_function(&format!("request_answered/{case}"), |bench| {
        bench.iter(|| {
            shard.request_answered(ApiKey::Produce, Duration::from_micros(700), Instant::now())
        })
    });
    criterion.bench_function(&format!("batch_produced/{case}"), |bench| {
        bench.iter(|| shard.batch_produced("orders", 16_384, 100))
    });
}

fn bench_recording(criterion: &mut Criterion) {
    let registry = MetricsRegistry::new(4);
    record(&registry, criterion, "alone");

    let scraping = Arc::new(AtomicBool::new(true));
    let scraper = {
        let (registry, scraping) = (registry.clone(), scraping.clone());
        thread::spawn(move || {
            while scraping.load(Ordering::Relaxed) {
                std::hint::black_box(registry.render());
            }
        })
    };
    record(&registry, criterion, "scraped_continuously");
    scraping.store(false, Ordering::Relaxed);
    scraper.join().expect("the scraper does not panic");

    criterion.bench_function("render/4_shards_2_apis_1_topic", |bench| {
        registry
            .shard(1)
            .request_answered(ApiKey::Fetch, Duration::from_millis(3), Instant::now());
        bench.iter(|| registry.render())
    });
}

criterion_group!(benches, bench_recording);
criterion_main!(benches);

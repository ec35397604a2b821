use std::time::{Duration, Instant};

use bytes::BytesMut;
use engine::quotas::{ClientQuotas, EntityName, QuotaChange, QuotaEntity, QuotaKey, QuotaTable};
use kafka_protocol::messages::{ApiKey, FetchResponse, ProduceResponse, ResponseHeader};
use kafka_protocol::protocol::Decodable;

use super::window::{throttle_time, RateWindow, SAMPLES, THROTTLE_MAX};
use super::*;
use crate::response::put_response;

#[test]
fn a_new_client_is_measured_over_ten_samples_as_kafka_measures_it() {
    let start = Instant::now();
    let mut window = RateWindow::new(start);
    window.record(10_000.0, start);
    // Half a second in: 10 000 bytes over 10.5 s.
    let rate = window.rate(start + Duration::from_millis(500));
    assert!((rate - 10_000.0 / 10.5).abs() < 1e-6, "{rate}");
    // Twenty seconds in, the sample is older than the window: nothing is left.
    assert_eq!(window.rate(start + Duration::from_secs(20)), 0.0);
}

#[test]
fn a_steady_client_is_measured_at_its_rate() {
    let start = Instant::now();
    let mut window = RateWindow::new(start);
    for tenth in 0..300 {
        window.record(100.0, start + Duration::from_millis(100 * tenth));
    }
    // 1000 per second for 30 s: the window holds the last 11 samples (10 full + the current).
    let rate = window.rate(start + Duration::from_millis(29_950));
    assert!((rate - 1000.0).abs() < 50.0, "{rate}");
}

#[test]
fn the_throttle_brings_the_rate_back_to_the_quota() {
    assert_eq!(
        throttle_time(100.0, 100.0, Duration::from_secs(10)),
        Duration::ZERO
    );
    assert_eq!(
        throttle_time(150.0, 100.0, Duration::from_secs(10)),
        Duration::from_secs(5)
    );
    assert_eq!(
        throttle_time(1e12, 1.0, Duration::from_secs(10)),
        THROTTLE_MAX
    );
    // A client steadily at twice its quota waits about the whole window (capped by it).
    let start = Instant::now();
    let mut window = RateWindow::new(start);
    for tenth in 0..200 {
        window.record(200.0, start + Duration::from_millis(100 * tenth));
    }
    let throttle = window.throttle(1000.0, start + Duration::from_millis(19_950));
    assert!(
        throttle >= Duration::from_secs(9) && throttle <= THROTTLE_MAX,
        "{throttle:?}"
    );
    assert_eq!(THROTTLE_MAX, Duration::from_secs(SAMPLES as u64));
    // Within the quota: no throttle.
    assert_eq!(
        window.throttle(3000.0, start + Duration::from_millis(19_950)),
        Duration::ZERO
    );
}

fn entity(user: Option<&str>, client_id: Option<&str>) -> QuotaEntity {
    QuotaEntity {
        user: user.map(|user| EntityName::Named(user.to_owned())),
        client_id: client_id.map(|client_id| EntityName::Named(client_id.to_owned())),
    }
}

fn usage_with(changes: &[QuotaChange]) -> QuotaUsage {
    let quotas = ClientQuotas::in_memory(QuotaTable::new());
    quotas.alter(changes).unwrap();
    QuotaUsage::new(Arc::new(quotas))
}

fn produce(usage: &QuotaUsage, user: &str, client_id: &str, bytes: u64, now: Instant) -> Duration {
    usage.record(
        QuotaKey::ProducerByteRate,
        user,
        client_id,
        bytes as f64,
        now,
    )
}

#[test]
fn a_users_connections_share_one_usage_and_others_are_not_throttled() {
    let usage = usage_with(&[QuotaChange {
        entity: entity(Some("alice"), None),
        key: QuotaKey::ProducerByteRate,
        value: Some(1000.0),
    }]);
    let now = Instant::now();
    // Two clients of alice (different shards, different client ids) together go over.
    assert_eq!(produce(&usage, "alice", "a", 6000, now), Duration::ZERO);
    let throttle = produce(&usage, "alice", "b", 6000, now);
    assert!(throttle > Duration::ZERO, "{throttle:?}");
    // bob has no quota: recorded nowhere.
    assert_eq!(produce(&usage, "bob", "a", 1 << 30, now), Duration::ZERO);
    assert_eq!(
        usage.tracked(),
        1,
        "alice's bytes (no request time quota is set)"
    );
}

#[test]
fn request_percentage_is_a_share_of_one_shards_second() {
    let usage = usage_with(&[QuotaChange {
        entity: entity(None, Some("busy")),
        key: QuotaKey::RequestPercentage,
        value: Some(10.0),
    }]);
    let now = Instant::now();
    let handling = |millis: u64| Duration::from_millis(millis).as_nanos() as f64;
    // 10 % of a second over the first (padded) ten seconds is one second.
    assert_eq!(
        usage.record(QuotaKey::RequestPercentage, "u", "busy", handling(900), now),
        Duration::ZERO
    );
    assert!(
        usage.record(QuotaKey::RequestPercentage, "u", "busy", handling(300), now) > Duration::ZERO
    );
}

#[test]
fn the_usage_kept_is_bounded_and_idle_clients_go_first() {
    let usage = usage_with(&[QuotaChange {
        entity: QuotaEntity {
            user: None,
            client_id: Some(EntityName::Default),
        },
        key: QuotaKey::ProducerByteRate,
        value: Some(1e9),
    }]);
    let start = Instant::now();
    let clients = STRIPES * TRACKED_PER_STRIPE_MAX;
    for client in 0..clients {
        produce(&usage, "u", &client.to_string(), 1, start);
    }
    let tracked = usage.tracked();
    assert!(tracked <= clients && tracked > clients / 2, "{tracked}");
    // A new client after the idle time sweeps the idle ones of its stripe away.
    let later = start + IDLE_MAX + Duration::from_secs(1);
    produce(&usage, "u", "newcomer", 1, later);
    assert!(
        usage.tracked() < tracked,
        "{} of {tracked}",
        usage.tracked()
    );
    // Later, new clients push out the idle ones: never more than the bound.
    for client in 0..clients {
        produce(&usage, "u", &format!("new-{client}"), 1, later);
    }
    assert!(usage.tracked() <= STRIPES * TRACKED_PER_STRIPE_MAX);
}

#[test]
fn the_throttle_time_lands_in_produce_and_fetch_responses() {
    for version in [3i16, 8, 9] {
        let mut out = BytesMut::new();
        put_response(
            &mut out,
            ApiKey::Produce,
            version,
            7,
            &ProduceResponse::default(),
        )
        .unwrap();
        let mut reply: Reply = vec![ResponsePart::Memory(out.freeze())];
        set_throttle_time(&mut reply, ApiKey::Produce, version, 1234);
        let ResponsePart::Memory(bytes) = &reply[0] else {
            unreachable!()
        };
        let mut body = bytes.slice(4..);
        ResponseHeader::decode(&mut body, ApiKey::Produce.response_header_version(version))
            .unwrap();
        let decoded = ProduceResponse::decode(&mut body, version).unwrap();
        assert_eq!(decoded.throttle_time_ms, 1234, "Produce v{version}");
    }
    for version in [4i16, 11, 12] {
        let mut out = BytesMut::new();
        put_response(
            &mut out,
            ApiKey::Fetch,
            version,
            7,
            &FetchResponse::default(),
        )
        .unwrap();
        let mut reply: Reply = vec![ResponsePart::Memory(out.freeze())];
        set_throttle_time(&mut reply, ApiKey::Fetch, version, 99);
        let ResponsePart::Memory(bytes) = &reply[0] else {
            unreachable!()
        };
        let mut body = bytes.slice(4..);
        ResponseHeader::decode(&mut body, ApiKey::Fetch.response_header_version(version)).unwrap();
        let decoded = FetchResponse::decode(&mut body, version).unwrap();
        assert_eq!(decoded.throttle_time_ms, 99, "Fetch v{version}");
    }
}

#[test]
fn a_muted_connection_waits_out_the_longest_mute() {
    let throttle = ConnectionThrottle::default();
    let now = Instant::now();
    assert_eq!(throttle.remaining(now), Duration::ZERO);
    throttle.mute_until(now + Duration::from_secs(2));
    throttle.mute_until(now + Duration::from_secs(1));
    assert_eq!(throttle.remaining(now), Duration::from_secs(2));
    assert_eq!(quota_user("User:alice"), "alice");
}

//! Client quota enforcement (KIP-13, KIP-55, KIP-124, KIP-219): each request's usage is
//! recorded against the quota that applies to its client (`engine::quotas::resolve`), and a
//! client over its quota is told `throttle_time_ms` in the response and its connection is muted
//! for that long: the connection reads no further request until the time has passed
//! ([`ConnectionThrottle`]), so the bound holds whether or not the client honours the field.
//!
//! Usage is per broker, as Kafka's: one [`QuotaUsage`] shared by every shard, so a user whose
//! connections sit on different shards is measured as one (ARCHITECTURE.md says why this and
//! not a share of the quota per shard). It is touched only when some quota is set; each record
//! takes one lock of one of [`STRIPES`] maps, so shards contend only over the same stripe.
//!
//! What is measured, as Kafka measures it: Produce, the request's bytes, recorded as the request
//! starts (so the mute holds back the very next request: librdkafka pipelines hundreds of
//! produce requests, which would all start before the first answer); Fetch, the response's
//! bytes; every request, the time the shard spent handling it (the time its handling future
//! was being polled), against `request_percentage` of one shard's time.

pub mod window;

use std::cell::Cell;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use engine::quotas::{resolve, ClientQuotas, QuotaKey};
use kafka_protocol::messages::ApiKey;

use crate::broker::{Reply, ResponsePart};
pub use window::RateWindow;

/// Locks (and maps) the usage is spread over, by a hash of the client's tags.
pub const STRIPES: usize = 16;
/// Clients whose usage one stripe keeps at most (`STRIPES` times this in all): past it idle
/// ones go, then the least recently used. Idle ones also go whenever a new client comes to a
/// stripe not swept for [`IDLE_MAX`].
pub const TRACKED_PER_STRIPE_MAX: usize = 4096;
/// A window not recorded in for this long holds nothing any more (every sample is older than
/// the whole window), so dropping it loses nothing.
pub const IDLE_MAX: Duration = Duration::from_secs(window::SAMPLES as u64);

/// Whose usage a window counts: the quota's kind and Kafka's metric tags.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct UsageKey {
    key: QuotaKey,
    user: String,
    client_id: String,
}

/// The quotas and every client's usage of them on this broker (shared by the shards, `Arc`).
pub struct QuotaUsage {
    pub quotas: Arc<ClientQuotas>,
    stripes: Box<[Mutex<Stripe>]>,
}

/// One lock's share of the usage.
struct Stripe {
    windows: HashMap<UsageKey, RateWindow>,
    swept_at: Instant,
}

impl QuotaUsage {
    pub fn new(quotas: Arc<ClientQuotas>) -> QuotaUsage {
        QuotaUsage {
            quotas,
            stripes: (0..STRIPES)
                .map(|_| {
                    Mutex::new(Stripe {
                        windows: HashMap::new(),
                        swept_at: Instant::now(),
                    })
                })
                .collect(),
        }
    }

    /// Whether any quota is set (otherwise nothing is measured).
    pub fn is_active(&self) -> bool {
        !self.quotas.is_empty()
    }

    /// Records `value` of quota `key` (bytes, or nanoseconds of a shard's time) for `user`'s
    /// client `client_id` and returns how long the client is throttled for it (zero when no
    /// quota of that kind applies to it, or it is within it).
    pub fn record(
        &self,
        key: QuotaKey,
        user: &str,
        client_id: &str,
        value: f64,
        now: Instant,
    ) -> Duration {
        let table = self.quotas.table();
        let Some(applied) = resolve(&table, key, user, client_id) else {
            return Duration::ZERO;
        };
        // Request time is recorded in nanoseconds; its quota is a percentage of a second.
        let limit_per_second = match key {
            QuotaKey::RequestPercentage => applied.limit / 100.0 * 1e9,
            QuotaKey::ProducerByteRate | QuotaKey::ConsumerByteRate => applied.limit,
        };
        let usage_key = UsageKey {
            key,
            user: applied.user_tag,
            client_id: applied.client_id_tag,
        };
        let mut hasher = DefaultHasher::new();
        usage_key.hash(&mut hasher);
        let stripe = &self.stripes[(hasher.finish() % STRIPES as u64) as usize];
        let mut stripe = stripe
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !stripe.windows.contains_key(&usage_key) {
            stripe.make_room(now);
        }
        let window = stripe
            .windows
            .entry(usage_key)
            .or_insert_with(|| RateWindow::new(now));
        window.record(value, now);
        window.throttle(limit_per_second, now)
    }

    /// Clients whose usage is kept now.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.stripes
            .iter()
            .map(|stripe| {
                stripe
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .windows
                    .len()
            })
            .sum()
    }
}

impl Stripe {
    /// Before a new client's window goes in: drops the idle windows if the stripe is full or
    /// was not swept for [`IDLE_MAX`], and the least recently used one if it is still full.
    fn make_room(&mut self, now: Instant) {
        let full = self.windows.len() >= TRACKED_PER_STRIPE_MAX;
        if full || now.saturating_duration_since(self.swept_at) >= IDLE_MAX {
            self.windows
                .retain(|_, window| now.saturating_duration_since(window.last_used()) < IDLE_MAX);
            self.swept_at = now;
        }
        if self.windows.len() < TRACKED_PER_STRIPE_MAX {
            return;
        }
        let oldest = self
            .windows
            .iter()
            .min_by_key(|(_, window)| window.last_used())
            .map(|(key, _)| key.clone());
        if let Some(oldest) = oldest {
            self.windows.remove(&oldest);
        }
    }
}

/// A future with the time spent polling it: the shard's time handling a request, without the
/// time it waited (a long poll, a commit on another shard).
pub struct PollTimed<F> {
    inner: F,
    spent: Duration,
}

impl<F> PollTimed<F> {
    pub fn new(inner: F) -> PollTimed<F> {
        PollTimed {
            inner,
            spent: Duration::ZERO,
        }
    }
}

impl<F: Future + Unpin> Future for PollTimed<F> {
    type Output = (F::Output, Duration);

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        let polled_at = Instant::now();
        let polled = Pin::new(&mut self.inner).poll(context);
        self.spent += polled_at.elapsed();
        polled.map(|output| (output, self.spent))
    }
}

/// A connection's mute (KIP-219): when it may read its next request.
#[derive(Debug, Default)]
pub struct ConnectionThrottle {
    muted_until: Cell<Option<Instant>>,
}

impl ConnectionThrottle {
    /// Mutes the connection until `until` (or later, if it is muted longer already).
    pub fn mute_until(&self, until: Instant) {
        let later = self
            .muted_until
            .get()
            .map_or(until, |muted| muted.max(until));
        self.muted_until.set(Some(later));
    }

    /// How long the connection must still wait at `now` before reading its next request.
    pub fn remaining(&self, now: Instant) -> Duration {
        self.muted_until
            .get()
            .map_or(Duration::ZERO, |until| until.saturating_duration_since(now))
    }
}

/// The user a quota knows a principal as: its name after `User:` (Kafka's
/// `KafkaPrincipal.getName`), `ANONYMOUS` for an unauthenticated client.
pub fn quota_user(principal: &str) -> &str {
    principal.strip_prefix("User:").unwrap_or(principal)
}

/// Bytes a reply puts on the wire.
pub fn reply_bytes(reply: &Reply) -> u64 {
    reply
        .iter()
        .map(|part| match part {
            ResponsePart::Memory(bytes) => bytes.len() as u64,
            ResponsePart::File { length, .. } => *length,
        })
        .sum()
}

/// Writes `throttle_ms` into the `throttle_time_ms` of a framed Produce (v3+) or Fetch (v4+)
/// response — where librdkafka and the Java client read it — leaving other replies alone
/// (their connection is muted all the same). Fetch's is the body's first field, Produce's its
/// last (before v9's tagged fields, which Ferrite leaves empty).
pub fn set_throttle_time(reply: &mut Reply, api_key: ApiKey, api_version: i16, throttle_ms: i32) {
    let Some(ResponsePart::Memory(first)) = reply.first() else {
        return;
    };
    let header_bytes = 4 + 4 + usize::from(api_key.response_header_version(api_version) >= 1);
    let at = match (api_key, api_version) {
        (ApiKey::Fetch, 4..) => header_bytes,
        (ApiKey::Produce, 3..) if reply.len() == 1 => {
            let tagged_fields_bytes = usize::from(api_version >= 9);
            match first.len().checked_sub(4 + tagged_fields_bytes) {
                Some(at) if at >= header_bytes => at,
                _ => return,
            }
        }
        _ => return,
    };
    if first.len() < at + 4 {
        return;
    }
    let mut patched = first.to_vec();
    patched[at..at + 4].copy_from_slice(&throttle_ms.to_be_bytes());
    reply[0] = ResponsePart::Memory(patched.into());
}

#[cfg(test)]
mod tests;

//! Stress tests of glommio's reactor as patched under `vendor/glommio` (vendor/README.md): every
//! shard of the broker runs on it, so a reactor that sleeps through a timer or a wake-up is a
//! shard that stops (the first version of the patch left a shard that never finished its
//! shutdown).
//!
//! The patch keeps a still-pending preemption timer across executor turns instead of cancelling
//! and re-arming it, and pairs two `SeqCst` fences instead of calling `membarrier` before a
//! reactor sleeps. The windows where either can go wrong are a few microseconds wide, so each
//! test drives them thousands of times a second and fails when a sleep ends far past its
//! deadline or an executor stops making progress; a watchdog thread notices a stuck executor
//! (which would otherwise hang the test) and wakes it from outside.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use glommio::channels::shared_channel;
use glommio::{timer, LocalExecutorBuilder, Placement};
use proptest::prelude::RngExt;
use proptest::test_runner::{RngAlgorithm, TestRng};

/// The executors' preemption slice: short, so that its timer fires thousands of times a second.
const PREEMPT: Duration = Duration::from_micros(200);
/// How far past its deadline a sleep may end, or how long an executor may make no progress,
/// before the test calls it lost. Wide: this machine is shared and loaded; a lost timer or
/// wake-up is a stall that never ends by itself.
const STALL_MAX: Duration = Duration::from_secs(1);
/// How long the timer test drives the race.
const RUN_TIME: Duration = Duration::from_secs(2);

/// An executor on any CPU with a short preemption slice (`PREEMPT`), so that slices end often.
fn executor_builder(name: &str) -> LocalExecutorBuilder {
    LocalExecutorBuilder::new(Placement::Unbound)
        .name(name)
        .io_memory(1 << 20)
        .preempt_timer(PREEMPT)
}

/// Busy-waits for `duration`: a CPU-bound slice that never yields.
fn spin(duration: Duration) {
    let start = Instant::now();
    while start.elapsed() < duration {
        std::hint::spin_loop();
    }
}

/// Progress of an executor as the watchdog sees it, and the way to wake that executor from
/// another thread when it stopped.
#[derive(Default)]
struct Watched {
    /// Bumped by the executor each time it gets something done.
    progress: AtomicU64,
    /// Set by the watchdog when `progress` stood still for `STALL_MAX`.
    stalled: AtomicBool,
    /// Set by the executor when it finished.
    finished: AtomicBool,
    /// A waker of a task of the executor, woken by the watchdog (a foreign wake-up) to end a
    /// stall.
    rescue: Mutex<Option<Waker>>,
}

impl Watched {
    /// Resolves once the watchdog declared a stall (registering this task's waker first, so a
    /// declaration cannot be missed).
    async fn stall_declared(&self) {
        std::future::poll_fn(|cx| {
            *self.rescue.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
            if self.stalled.load(Ordering::SeqCst) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// Watches until the executor finished; declares a stall (and wakes the executor, once) if
    /// its progress stood still for `STALL_MAX`.
    fn watch(&self) {
        let mut seen = self.progress.load(Ordering::SeqCst);
        let mut seen_at = Instant::now();
        while !self.finished.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(10));
            let now = self.progress.load(Ordering::SeqCst);
            if now != seen {
                (seen, seen_at) = (now, Instant::now());
            } else if seen_at.elapsed() > STALL_MAX && !self.stalled.load(Ordering::SeqCst) {
                self.stalled.store(true, Ordering::SeqCst);
                let waker = self.rescue.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some(waker) = waker {
                    waker.wake();
                }
            }
        }
    }
}

/// The race the first version of the patch lost: a task runs for about one preemption slice
/// and then sleeps, so the reactor parks (with the sleep's deadline as its user timer) just as
/// the preemption timer it kept from the last turn fires. The patch must not take "a timer is
/// pending" from before it consumed that timer's completion: the reactor then slept with no
/// timer at all, and only an unrelated event (here: the watchdog) ever woke it.
#[test]
fn sleeps_end_on_time_when_the_kept_preemption_timer_fires_as_the_reactor_parks() {
    let watched = Arc::new(Watched::default());
    let in_executor = watched.clone();
    let executor = executor_builder("timer-race")
        .spawn(move || async move {
            let watched = in_executor;
            let rescue = glommio::spawn_local({
                let watched = watched.clone();
                async move { watched.stall_declared().await }
            })
            .detach();
            let mut rng = TestRng::deterministic_rng(RngAlgorithm::ChaCha);
            let mut overshoot_max = Duration::ZERO;
            let mut sleeps = 0_u64;
            let end = Instant::now() + RUN_TIME;
            while Instant::now() < end && !watched.stalled.load(Ordering::SeqCst) {
                // A slice that ends around the preemption deadline, so that the kept timer
                // fires somewhere in the reactor's way to sleep, a different place each time.
                spin(PREEMPT * rng.random_range(60..=110) / 100);
                let sleep = PREEMPT * rng.random_range(100..=300) / 100;
                let start = Instant::now();
                timer::sleep(sleep).await;
                overshoot_max = overshoot_max.max(start.elapsed().saturating_sub(sleep));
                sleeps += 1;
                watched.progress.fetch_add(1, Ordering::SeqCst);
            }
            watched.finished.store(true, Ordering::SeqCst);
            // The waker belongs to this executor: drop it here, not on the test's thread.
            drop(
                watched
                    .rescue
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take(),
            );
            drop(rescue);
            (sleeps, overshoot_max)
        })
        .expect("the executor starts");
    watched.watch();
    let (sleeps, overshoot_max) = executor.join().expect("the executor finishes");
    assert!(
        !watched.stalled.load(Ordering::SeqCst),
        "the executor made no progress for {STALL_MAX:?} after {sleeps} sleeps: a reactor slept \
         without its timer"
    );
    assert!(
        overshoot_max < STALL_MAX,
        "a sleep ended {overshoot_max:?} past its deadline"
    );
    assert!(sleeps > 100, "only {sleeps} sleeps in {RUN_TIME:?}");
}

/// The fence pair that replaced `membarrier`: two executors bounce a counter over glommio's
/// shared channels, each parking between messages (nothing else wakes either), while both run
/// short CPU slices of varying length so that publishes land at every point of the peer's way
/// to sleep. A lost wake-up stops both for good.
#[test]
fn cross_executor_wakes_are_never_lost_while_reactors_go_to_sleep() {
    const ROUND_TRIPS: u64 = 20_000;
    let (to_echo, from_pinger) = shared_channel::new_bounded::<u64>(1);
    let (to_pinger, from_echo) = shared_channel::new_bounded::<u64>(1);
    let watched = Arc::new(Watched::default());

    let echo = executor_builder("echo")
        .spawn(move || async move {
            let receiver = from_pinger.connect().await;
            let sender = to_pinger.connect().await;
            let mut rng = TestRng::deterministic_rng(RngAlgorithm::XorShift);
            let mut echoed = 0_u64;
            while let Some(value) = receiver.recv().await {
                spin(Duration::from_nanos(rng.random_range(0..20_000)));
                if sender.send(value).await.is_err() {
                    break;
                }
                echoed += 1;
            }
            echoed
        })
        .expect("the echo executor starts");

    let in_executor = watched.clone();
    let pinger = executor_builder("pinger")
        .spawn(move || async move {
            let watched = in_executor;
            let sender = to_echo.connect().await;
            let receiver = from_echo.connect().await;
            let mut rng = TestRng::deterministic_rng(RngAlgorithm::ChaCha);
            let mut round_trips = 0_u64;
            let mut wrong = None;
            while round_trips < ROUND_TRIPS && !watched.stalled.load(Ordering::SeqCst) {
                if sender.send(round_trips).await.is_err() {
                    break;
                }
                spin(Duration::from_nanos(rng.random_range(0..20_000)));
                match receiver.recv().await {
                    Some(value) if value == round_trips => {}
                    other => {
                        wrong = Some(other);
                        break;
                    }
                }
                round_trips += 1;
                watched.progress.fetch_add(1, Ordering::SeqCst);
            }
            watched.finished.store(true, Ordering::SeqCst);
            (round_trips, wrong)
        })
        .expect("the pinger executor starts");

    // A lost wake-up leaves both executors asleep with nothing that would ever wake them, so
    // on a stall this test fails without joining them (they end with the test process).
    let watchdog_view = watched.clone();
    let watchdog = std::thread::spawn(move || watchdog_view.watch());
    let deadline = Instant::now() + Duration::from_secs(60);
    while !watched.finished.load(Ordering::SeqCst) && !watched.stalled.load(Ordering::SeqCst) {
        assert!(
            Instant::now() < deadline,
            "the round trips took over a minute"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        !watched.stalled.load(Ordering::SeqCst),
        "no round trip for {STALL_MAX:?} after {} of {ROUND_TRIPS}: a cross-executor wake-up \
         was lost",
        watched.progress.load(Ordering::SeqCst)
    );
    let (round_trips, wrong) = pinger.join().expect("the pinger finishes");
    assert_eq!(wrong, None, "the echo answered out of order");
    assert_eq!(round_trips, ROUND_TRIPS);
    watchdog.join().expect("the watchdog finishes");
    // The pinger's channel ends are gone, so the echo sees its receiver close and ends.
    assert_eq!(echo.join().expect("the echo finishes"), ROUND_TRIPS);
}

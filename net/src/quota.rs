//! Client quota enforcement on a shard: Kafka's `ClientQuotaManager`, per shard, without locks.
//!
//! Contract: each shard measures, in thread-local state, one [`Rate`] per quota kind and per
//! set of clients sharing a quota (the metric tags `sluice_shard::metadata::quota::resolve`
//! names: a user-level quota is shared by all that user's client ids), for the connections it
//! accepted; nothing crosses cores. The rate is Kafka's `Rate` over a `SampledStat`:
//! `quota_window_num` samples of `quota_window_size_seconds`, a sample untouched for
//! num × size dropped, and the elapsed time never taken as less than num − 1 whole samples
//! (so a client's first burst may reach (num − 1) × size × quota before it is throttled, as in
//! Kafka). Recording a value that takes the rate above the quota gives Kafka's throttle time,
//! `(rate − quota) / quota × window` (`QuotaUtils.throttleTime`; request-time throttles are
//! capped at one sample, as Kafka's `ClientRequestQuotaManager`). The caller answers with that
//! `throttle_time_ms` and [`mute`]s the connection for that long (KIP-219): the connection's
//! reader reads no further request until then. A quota is per broker in Kafka; here it is per
//! shard (see ARCHITECTURE.md, "Client quotas"): a client whose connections all landed on one
//! shard gets exactly its quota, one with connections on k shards up to k times it. With no
//! quota set (the snapshot has none) every call costs one branch.

use crate::api::Ctx;
use sluice_core::limits::{MAX_QUOTA_SENSORS_PER_SHARD, MAX_QUOTA_THROTTLE_MS, QUOTA_SENSOR_IDLE_MS};
use sluice_shard::metadata::quota::{resolve, QuotaKind, Resolved};
use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The sampling of a rate (Kafka's `quota.window.num`, `quota.window.size.seconds`).
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub num: u32,
    pub size_ms: i64,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    start_ms: i64,
    last_ms: i64,
    value: f64,
}

impl Sample {
    fn new(now: i64) -> Sample {
        Sample { start_ms: now, last_ms: now, value: 0.0 }
    }
}

/// Kafka's `Rate` of a `WindowedSum`: a ring of `num + 1` samples.
#[derive(Debug, Default)]
pub struct Rate {
    samples: Vec<Sample>,
    current: usize,
}

impl Rate {
    /// Adds `value` at `now` (ms, not decreasing) to the current sample, starting a new one
    /// when the current one is `size_ms` old.
    pub fn record(&mut self, w: Window, value: f64, now: i64) {
        if self.samples.is_empty() {
            self.samples.push(Sample::new(now));
        }
        if now - self.samples[self.current].start_ms >= w.size_ms {
            let ring = w.num as usize + 1;
            self.current = (self.current + 1) % ring;
            if self.current >= self.samples.len() {
                self.samples.push(Sample::new(now));
            } else {
                self.samples[self.current] = Sample::new(now);
            }
        }
        let s = &mut self.samples[self.current];
        s.value += value;
        s.last_ms = now;
        debug_assert!(self.samples.len() <= w.num as usize + 1);
    }

    /// Resets samples untouched for `num × size_ms` (Kafka's `purgeObsoleteSamples`).
    fn purge(&mut self, w: Window, now: i64) {
        let expire = i64::from(w.num) * w.size_ms;
        for s in self.samples.iter_mut().filter(|s| now - s.last_ms >= expire) {
            *s = Sample::new(now);
        }
    }

    /// The time the rate is measured over (Kafka's `Rate.windowSize`): since the oldest
    /// sample's start, and at least `num − 1` whole samples; at least 1 ms.
    pub fn window_size(&mut self, w: Window, now: i64) -> i64 {
        self.purge(w, now);
        if self.samples.is_empty() {
            self.samples.push(Sample::new(now));
        }
        let oldest = self.samples.iter().map(|s| s.start_ms).min().expect("not empty");
        let mut elapsed = now - oldest;
        let full = elapsed / w.size_ms;
        let min_full = i64::from(w.num) - 1;
        if full < min_full {
            elapsed += (min_full - full) * w.size_ms;
        }
        elapsed.max(1)
    }

    /// The rate per second at `now`.
    pub fn measure(&mut self, w: Window, now: i64) -> f64 {
        self.purge(w, now);
        let sum: f64 = self.samples.iter().map(|s| s.value).sum();
        sum / (self.window_size(w, now) as f64 / 1000.0)
    }

    /// Records `value` and answers Kafka's throttle time when the rate now exceeds `bound`
    /// (`Sensor.record` with quota checks, then `QuotaUtils.throttleTime`), else 0.
    pub fn record_and_throttle(&mut self, w: Window, value: f64, now: i64, bound: f64) -> i64 {
        self.record(w, value, now);
        let rate = self.measure(w, now);
        if rate <= bound {
            return 0;
        }
        saturating_i64(((rate - bound) / bound * self.window_size(w, now) as f64).round())
    }
}

/// A float as an integer: Rust's `as` saturates (NaN → 0), which is what a throttle or a byte
/// budget wants.
#[allow(clippy::cast_possible_truncation)]
fn saturating_i64(v: f64) -> i64 {
    v as i64
}

struct Sensor {
    rate: Rate,
    last_used: i64,
}

type SensorKey = (QuotaKind, String, String);

struct Sensors {
    /// The clock rates are measured on (monotonic; ms since the first use on this shard).
    epoch: Instant,
    map: HashMap<SensorKey, Sensor>,
}

thread_local! {
    static SENSORS: RefCell<Option<Sensors>> = const { RefCell::new(None) };
}

/// A client as quotas see it: its principal's name (`ANONYMOUS` without authentication) and
/// its client id (empty when it sent none).
fn user(ctx: &Ctx) -> String {
    ctx.session.borrow().principal.clone().unwrap_or_else(|| "ANONYMOUS".to_string())
}

fn window(ctx: &Ctx) -> Window {
    Window {
        num: ctx.shard.config.quota_window_num,
        size_ms: i64::from(ctx.shard.config.quota_window_size_seconds) * 1000,
    }
}

/// The quota of `kind` that applies to the connection's user and `client_id`, if any.
fn applies(ctx: &Ctx, client_id: Option<&str>, kind: QuotaKind) -> Option<Resolved> {
    let snap = ctx.shard.metadata();
    if snap.quotas.is_empty() {
        return None;
    }
    resolve(&snap.quotas, kind, &user(ctx), client_id.unwrap_or(""))
}

/// Runs `f` on the sensor of `r` (created when missing; idle and, at the cap, least recently
/// used sensors dropped first) with the shard's current time.
fn with_sensor<T>(kind: QuotaKind, r: &Resolved, f: impl FnOnce(&mut Rate, i64) -> T) -> T {
    SENSORS.with(|cell| {
        let mut cell = cell.borrow_mut();
        let sensors = cell.get_or_insert_with(|| Sensors { epoch: Instant::now(), map: HashMap::new() });
        let now = i64::try_from(sensors.epoch.elapsed().as_millis()).unwrap_or(i64::MAX);
        let key = (kind, r.user_tag.clone(), r.client_tag.clone());
        if !sensors.map.contains_key(&key) && sensors.map.len() >= MAX_QUOTA_SENSORS_PER_SHARD {
            sensors.map.retain(|_, s| now - s.last_used < QUOTA_SENSOR_IDLE_MS);
            if sensors.map.len() >= MAX_QUOTA_SENSORS_PER_SHARD {
                let oldest = sensors.map.iter().min_by_key(|(_, s)| s.last_used).map(|(k, _)| k.clone());
                oldest.and_then(|k| sensors.map.remove(&k));
            }
        }
        let sensor = sensors.map.entry(key).or_insert_with(|| Sensor { rate: Rate::default(), last_used: now });
        sensor.last_used = now;
        let out = f(&mut sensor.rate, now);
        debug_assert!(sensors.map.len() <= MAX_QUOTA_SENSORS_PER_SHARD);
        out
    })
}

/// Records `value` (bytes, or percent of a thread for [`QuotaKind::Request`]) for the
/// connection's user and `client_id` and returns the throttle time in ms (0: within its quota, or none set).
pub fn record(ctx: &Ctx, client_id: Option<&str>, kind: QuotaKind, value: f64) -> i32 {
    let Some(r) = applies(ctx, client_id, kind) else { return 0 };
    let w = window(ctx);
    let ms = with_sensor(kind, &r, |rate, now| rate.record_and_throttle(w, value, now, r.bound));
    let cap = match kind {
        QuotaKind::Request => w.size_ms,
        _ => MAX_QUOTA_THROTTLE_MS,
    };
    i32::try_from(ms.clamp(0, cap)).expect("bounded by limits.rs")
}

/// Takes back a value recorded for a request that is answered without it (a throttled
/// fetch is answered empty, as Kafka's `unrecordQuotaSensor`).
pub fn unrecord(ctx: &Ctx, client_id: Option<&str>, kind: QuotaKind, value: f64) {
    if let Some(r) = applies(ctx, client_id, kind) {
        let w = window(ctx);
        with_sensor(kind, &r, |rate, now| rate.record(w, -value, now));
    }
}

/// The most a single response may carry without being throttled for sure (Kafka's
/// `getMaxValueInQuotaWindow`: quota × (num − 1) × sample size), when a quota applies.
pub fn max_in_window(ctx: &Ctx, client_id: Option<&str>, kind: QuotaKind) -> Option<usize> {
    let r = applies(ctx, client_id, kind)?;
    let w = window(ctx);
    let most = r.bound * f64::from(w.num.saturating_sub(1)) * (w.size_ms as f64 / 1000.0);
    Some(usize::try_from(saturating_i64(most).max(1)).unwrap_or(usize::MAX))
}

/// Request time in Kafka's unit: percent of one thread over a second.
pub fn request_percentage(elapsed: Duration) -> f64 {
    elapsed.as_nanos() as f64 * 100.0 / 1e9
}

/// Mutes the connection for `ms` (KIP-219): its reader starts no further request before then.
pub fn mute(ctx: &Ctx, ms: i32) {
    if ms <= 0 {
        return;
    }
    let until = Instant::now() + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    let later = ctx.muted_until.get().is_none_or(|t| t < until);
    if later {
        ctx.muted_until.set(Some(until));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Window = Window { num: 11, size_ms: 1000 };

    #[test]
    fn the_first_burst_is_measured_over_num_minus_one_windows() {
        let mut r = Rate::default();
        // 10 windows assumed: 10,000 bytes at once is 1,000/s, within a 1,000/s quota.
        assert_eq!(r.record_and_throttle(W, 10_000.0, 0, 1000.0), 0);
        // 1,000 more: 1,100/s over 10 s → (1100 − 1000) / 1000 × 10 s = 1 s.
        assert_eq!(r.record_and_throttle(W, 1_000.0, 0, 1000.0), 1000);
    }

    #[test]
    fn a_steady_rate_under_the_quota_is_not_throttled_and_twice_it_is() {
        // (Exactly at the quota Kafka's measure briefly reads a little over it, each time a
        // new sample starts while the ring still holds num + 1 samples: so does this one.)
        let mut r = Rate::default();
        let mut throttled = 0;
        for t in 0..60_000i64 {
            if t % 100 == 0 {
                throttled += r.record_and_throttle(W, 90.0, t, 1000.0);
            }
        }
        assert_eq!(throttled, 0, "900 bytes/s against a 1,000/s quota");
        let mut r = Rate::default();
        let mut last = 0;
        for t in 0..60_000i64 {
            if t % 100 == 0 {
                last = r.record_and_throttle(W, 200.0, t, 1000.0);
            }
        }
        // 2,000/s measured over ~11 s: (2000 − 1000)/1000 × ~11 s.
        assert!((10_000..=11_100).contains(&last), "{last}");
    }

    #[test]
    fn a_client_that_waits_its_throttle_stays_at_its_quota() {
        // A client that sends 5,000 bytes, then waits the throttle it is given, over 100 s.
        let mut r = Rate::default();
        let (mut t, mut sent) = (0i64, 0f64);
        while t < 100_000 {
            sent += 5_000.0;
            let wait = r.record_and_throttle(W, 5_000.0, t, 1000.0);
            t += wait.max(10);
        }
        let rate = sent / (t as f64 / 1000.0);
        // The first burst of 10 windows' worth is the only excess: (100 + 10) / 100.
        assert!(rate < 1000.0 * 1.15 && rate > 900.0, "{rate}");
    }

    #[test]
    fn idle_samples_expire_and_unrecord_takes_a_value_back() {
        let mut r = Rate::default();
        r.record(W, 50_000.0, 0);
        assert!(r.measure(W, 0) > 1000.0);
        // Untouched for num × size: forgotten.
        assert_eq!(r.measure(W, 11_000), 0.0);
        r.record(W, 20_000.0, 12_000);
        r.record(W, -20_000.0, 12_000);
        assert_eq!(r.record_and_throttle(W, 1.0, 12_001, 1000.0), 0);
        assert!(r.samples.len() <= W.num as usize + 1);
    }

    #[test]
    fn window_size_counts_at_least_num_minus_one_samples() {
        let mut r = Rate::default();
        r.record(W, 1.0, 0);
        assert_eq!(r.window_size(W, 0), 10_000);
        assert_eq!(r.window_size(W, 500), 10_500);
        r.record(W, 1.0, 10_500);
        assert_eq!(r.window_size(W, 10_500), 10_500);
        // One sample per window: the window covers what the ring holds.
        let mut r = Rate::default();
        for t in (0..30_000).step_by(1000) {
            r.record(W, 1.0, t);
        }
        let size = r.window_size(W, 29_500);
        assert!((10_000..=12_000).contains(&size), "{size}");
    }
}

//! How fast something answers while it is busy: a moving average of the time between two answers
//! while requests were waiting (idle gaps left out). The node keeps one for all its requests and
//! each model one for its own (`Node::expect_in_time` reads both). Everything spent per request is
//! in it — HTTP, tokenization, the engine, the refusals written meanwhile, and for a model the
//! other models' turns — which the inference threads' own accounting (`Pool::per_request`) misses.

use std::time::{Duration, Instant};

/// The weight of the newest interval: small, as a batch's answers come all at once.
const WEIGHT: f64 = 0.02;
/// How long a pace stays current: at light load, intervals between answers while requests wait
/// are rare, and an old one (a stall of the whole process, say) says nothing of now.
const FRESH: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub struct Pace {
    last: Option<Instant>,
    seconds: f64,
    /// When an interval last counted.
    updated: Option<Instant>,
}

impl Pace {
    /// Counts an answer at `now`; the interval to the next one counts only if requests still
    /// wait (`busy`).
    pub fn answered(&mut self, now: Instant, busy: bool) {
        if let Some(last) = self.last {
            let dt = now.duration_since(last).as_secs_f64();
            self.seconds = if self.seconds == 0.0 { dt } else { self.seconds + WEIGHT * (dt - self.seconds) };
            self.updated = Some(now);
        }
        self.last = busy.then_some(now);
    }

    /// Seconds between answers while busy, if an interval counted in the last second; else 0.
    pub fn seconds(&self) -> f64 {
        match self.updated {
            Some(t) if t.elapsed() <= FRESH => self.seconds,
            _ => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_gaps_do_not_count_and_an_old_pace_is_not_current() {
        let mut p = Pace::default();
        let t0 = Instant::now() - Duration::from_millis(500);
        p.answered(t0, true);
        p.answered(t0 + Duration::from_millis(10), false);
        assert!((p.seconds() - 0.010).abs() < 1e-9);
        // Idle until the next answer: that gap is not the pace.
        p.answered(t0 + Duration::from_millis(400), true);
        assert!((p.seconds() - 0.010).abs() < 1e-9);
        let mut old = Pace::default();
        let long_ago = Instant::now() - Duration::from_secs(5);
        old.answered(long_ago, true);
        old.answered(long_ago + Duration::from_millis(10), true);
        assert_eq!(old.seconds(), 0.0);
    }
}

//! Exponential backoff with full jitter, as a pure schedule.

use std::time::Duration;

/// Retry schedule: attempt `n` (0-based) waits a uniformly random time in
/// `[0, min(max, initial * 2^n)]` ("full jitter": retries of many workers spread out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Ceiling of the first wait.
    pub initial: Duration,
    /// Ceiling of any wait.
    pub max: Duration,
    /// Retries after the first attempt.
    pub retries: u32,
}

impl Backoff {
    /// The wait before retry `attempt` (0-based) given `unit`, a uniform sample in `[0, 1)`;
    /// `None` once the retries are used up.
    pub fn delay(&self, attempt: u32, unit: f64) -> Option<Duration> {
        if attempt >= self.retries {
            return None;
        }
        let ceiling = self
            .initial
            .saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
            .min(self.max);
        Some(ceiling.mul_f64(unit.clamp(0.0, 1.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn delays_stay_under_the_ceiling(attempt in 0u32..64, unit in 0.0f64..1.0) {
            let b = Backoff { initial: Duration::from_millis(50), max: Duration::from_secs(2), retries: 40 };
            match b.delay(attempt, unit) {
                Some(d) => {
                    prop_assert!(attempt < 40);
                    prop_assert!(d <= Duration::from_secs(2));
                    let ceiling = Duration::from_millis(50).saturating_mul(1 << attempt.min(31)).min(b.max);
                    prop_assert!(d <= ceiling);
                }
                None => prop_assert!(attempt >= 40),
            }
        }
    }

    #[test]
    fn grows_then_caps() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(350),
            retries: 4,
        };
        let full: Vec<_> = (0..5).map(|a| b.delay(a, 1.0)).collect();
        assert_eq!(
            full,
            vec![
                Some(Duration::from_millis(100)),
                Some(Duration::from_millis(200)),
                Some(Duration::from_millis(350)),
                Some(Duration::from_millis(350)),
                None
            ]
        );
    }
}

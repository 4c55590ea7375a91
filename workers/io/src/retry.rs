//! The one retry loop of the worker: run an operation; after a failure ask the caller whether
//! to go on, wait the backoff's jittered delay and run it again, until it succeeds, the
//! error is not worth retrying or the retries are used up. Media fetches, output
//! publishing, the backfill's listing and the crash guard's marks all go through it.

use std::future::Future;

use fusionstream_core::backoff::Backoff;

/// A uniform sample in `[0, 1)` for [`Backoff::delay`]'s full jitter.
pub fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    // A fresh random hasher per call: enough randomness to spread retries.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// The waits of one operation's retries, for a loop that cannot be a closure (it borrows
/// something mutably across attempts).
#[derive(Debug)]
pub struct Attempts<'a> {
    backoff: &'a Backoff,
    attempt: u32,
}

impl<'a> Attempts<'a> {
    /// No retry yet.
    pub fn new(backoff: &'a Backoff) -> Self {
        Self {
            backoff,
            attempt: 0,
        }
    }

    /// Retries so far.
    pub fn count(&self) -> u32 {
        self.attempt
    }

    /// Wait before the next retry; false (no wait) once the retries are used up.
    pub async fn wait(&mut self) -> bool {
        let Some(wait) = self.backoff.delay(self.attempt, jitter()) else {
            return false;
        };
        tokio::time::sleep(wait).await;
        self.attempt = self.attempt.saturating_add(1);
        true
    }
}

/// Run `op` until it succeeds; after a failure, `retry_after(&error, attempt)` (attempt from
/// 0) says whether to try again (it also logs or counts), then `backoff` gives the wait.
/// Returns the last error when `retry_after` says no or the retries are used up. Wrap the
/// call in a `select!` with a cancellation to stop waiting early.
pub async fn retry<T, E, F, Fut, R>(
    backoff: &Backoff,
    mut op: F,
    mut retry_after: R,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    R: FnMut(&E, u32) -> bool,
{
    let mut attempts = Attempts::new(backoff);
    loop {
        let e = match op().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if !retry_after(&e, attempts.count()) || !attempts.wait().await {
            return Err(e);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::time::Duration;

    const QUICK: Backoff = Backoff {
        initial: Duration::from_millis(1),
        max: Duration::from_millis(2),
        retries: 3,
    };

    #[tokio::test]
    async fn retries_until_success() {
        let calls = Cell::new(0);
        let r: Result<u32, &str> = retry(
            &QUICK,
            || {
                calls.set(calls.get() + 1);
                let n = calls.get();
                async move {
                    if n < 3 {
                        Err("again")
                    } else {
                        Ok(n)
                    }
                }
            },
            |_, _| true,
        )
        .await;
        assert_eq!(r, Ok(3));
    }

    #[tokio::test]
    async fn gives_up_after_the_retries_or_when_told() {
        let calls = Cell::new(0);
        let r: Result<(), &str> = retry(
            &QUICK,
            || {
                calls.set(calls.get() + 1);
                async { Err("down") }
            },
            |_, _| true,
        )
        .await;
        assert_eq!((r, calls.get()), (Err("down"), 4), "1 try + 3 retries");
        calls.set(0);
        let r: Result<(), &str> = retry(
            &QUICK,
            || {
                calls.set(calls.get() + 1);
                async { Err("poison") }
            },
            |e, _| *e != "poison",
        )
        .await;
        assert_eq!((r, calls.get()), (Err("poison"), 1));
    }

    #[test]
    fn jitter_is_a_unit_sample() {
        for _ in 0..1000 {
            let u = jitter();
            assert!((0.0..1.0).contains(&u));
        }
    }
}

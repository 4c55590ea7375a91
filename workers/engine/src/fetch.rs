//! Fetching an event's image: a timeout per attempt and jittered retries of retryable errors
//! until the retries are used up (under a slot of `media.concurrency` the caller holds).

use std::time::Duration;

use fusionstream_core::event::ImageSource;
use fusionstream_core::{Classify, ErrorClass, ReasonCode};
use fusionstream_io::media::FetchError;
use fusionstream_io::media::MediaStores;
use fusionstream_io::retry::retry;

use super::report::{Report, Reporter};
use super::Settings;

/// Fetch with per-attempt timeout and jittered retries of retryable errors. The caller
/// holds a slot of `media.concurrency` (the intake's `fetch_slots`) from before the fetch until
/// the bytes are decoded, so fetched images waiting for a CPU are bounded too.
pub(crate) async fn fetch(
    media: &MediaStores,
    s: &Settings,
    reporter: &dyn Reporter,
    src: &ImageSource,
) -> Result<Vec<u8>, ReasonCode> {
    let _running = InFlight::new(reporter);
    let r = with_retries(s.fetch_timeout, &s.fetch_backoff, || media.fetch(src)).await;
    if let Err(code) = &r {
        tracing::debug!(reason = %code, "image fetch failed");
    }
    r
}

/// Reports a fetch's start, and its end when dropped (also when its future is dropped
/// mid-way).
struct InFlight<'a>(&'a dyn Reporter);

impl<'a> InFlight<'a> {
    fn new(r: &'a dyn Reporter) -> Self {
        r.report(Report::FetchStarted);
        Self(r)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.report(Report::FetchEnded);
    }
}

/// Run `attempt` with a timeout per try; retry retryable errors with jittered backoff until
/// the retries are used up; return the reason code of the last error.
pub(crate) async fn with_retries<F, Fut>(
    timeout: Duration,
    backoff: &fusionstream_core::backoff::Backoff,
    mut attempt: F,
) -> Result<Vec<u8>, ReasonCode>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Vec<u8>, FetchError>>,
{
    let timed = || {
        let fut = attempt();
        async move {
            match tokio::time::timeout(timeout, fut).await {
                Ok(r) => r,
                Err(_) => Err(FetchError::Timeout(timeout)),
            }
        }
    };
    retry(backoff, timed, |e, n| {
        let again = e.class() == ErrorClass::Retryable;
        if again {
            tracing::debug!(error = %e, attempt = n, "retrying fetch");
        }
        again
    })
    .await
    .map_err(|e| e.reason_code())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fusionstream_core::backoff::Backoff;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn backoff(retries: u32) -> Backoff {
        Backoff {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(4),
            retries,
        }
    }

    #[tokio::test]
    async fn retryable_errors_are_retried_then_succeed() {
        let calls = AtomicU32::new(0);
        let r = with_retries(Duration::from_secs(1), &backoff(3), || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 2 {
                    Err(FetchError::Transient("reset".into()))
                } else {
                    Ok(vec![7])
                }
            }
        })
        .await;
        assert_eq!(r, Ok(vec![7]));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn timeouts_are_retried_then_reported() {
        let calls = AtomicU32::new(0);
        let r = with_retries(Duration::from_millis(5), &backoff(2), || {
            calls.fetch_add(1, Ordering::SeqCst);
            async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                Ok(vec![])
            }
        })
        .await;
        assert_eq!(r, Err(ReasonCode::ImageFetchTimeout));
        assert_eq!(calls.load(Ordering::SeqCst), 3, "first try + 2 retries");
    }

    #[tokio::test]
    async fn poison_errors_are_not_retried() {
        let calls = AtomicU32::new(0);
        let r = with_retries(Duration::from_secs(1), &backoff(5), || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(FetchError::NotFound("x".into())) }
        })
        .await;
        assert_eq!(r, Err(ReasonCode::ImageNotFound));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}

//! The worker's control state, apart from its counters: whether the model is loaded and
//! whether shutdown has begun. `/readyz` reads it (with the consumer group's assignment); the
//! engine sets `stopping` when it starts draining, and the Kafka source reads it to stop
//! waiting for in-flight events that can no longer finish.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use fusionstream_io::metrics::AdapterMetrics;
use tokio_util::sync::CancellationToken;

/// Readiness and shutdown state of one worker.
#[derive(Debug, Default)]
pub struct Health {
    /// The model is loaded (and warmed up when configured).
    pub model_loaded: AtomicBool,
    /// Shutdown has begun: readiness goes away, nothing new starts, nothing waits for
    /// what can no longer finish.
    pub stopping: CancellationToken,
}

impl Health {
    /// Why the worker is not ready, or `None` when it is: the model must be loaded, shutdown
    /// not begun, and a consumer-group worker must have partitions assigned.
    pub fn not_ready(&self, adapter: &AdapterMetrics) -> Option<&'static str> {
        if !self.model_loaded.load(Relaxed) {
            Some("model not loaded yet")
        } else if self.stopping.is_cancelled() {
            Some("shutting down")
        } else if adapter.partitions_assigned.load(Relaxed) == 0 {
            Some("no partitions assigned")
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_once_loaded_assigned_and_not_stopping() {
        let h = Health::default();
        let a = AdapterMetrics::default();
        assert_eq!(h.not_ready(&a), Some("model not loaded yet"));
        h.model_loaded.store(true, Relaxed);
        assert_eq!(h.not_ready(&a), None, "not a consumer group: -1 partitions");
        a.partitions_assigned.store(0, Relaxed);
        assert_eq!(h.not_ready(&a), Some("no partitions assigned"));
        a.partitions_assigned.store(2, Relaxed);
        assert_eq!(h.not_ready(&a), None);
        h.stopping.cancel();
        assert_eq!(h.not_ready(&a), Some("shutting down"));
    }
}

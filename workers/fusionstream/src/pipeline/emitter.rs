//! The source's handle into the pipeline: an [`Emitter`] reserves room for one more event
//! (the in-flight permit), asks the crash guard about the record, tracks its position and
//! hands it on as a [`Taken`] with its span.

use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use fusionstream_core::crash_guard::Admit;
use fusionstream_core::position::PositionTracker;
use fusionstream_io::SourceRecord;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::{lock, CrashGuard, Stats};

/// A record handed from the source to the pipeline, with its in-flight permit.
#[derive(Debug)]
pub(crate) struct Taken {
    pub(crate) rec: SourceRecord,
    pub(crate) permit: OwnedSemaphorePermit,
    pub(crate) received_at: SystemTime,
    pub(crate) started: Instant,
    /// The event's span, parented to the record's `traceparent`; it lives until the
    /// event's outputs are acknowledged.
    pub(crate) span: tracing::Span,
    /// The crash guard refused it: the worker died this many times while it ran alone.
    pub(crate) refused: Option<u32>,
}

/// The source's handle into the pipeline.
#[derive(Debug, Clone)]
pub struct Emitter {
    pub(crate) permits: Arc<Semaphore>,
    pub(crate) tracker: Arc<Mutex<PositionTracker>>,
    pub(crate) tx: mpsc::Sender<Taken>,
    pub(crate) cancel: CancellationToken,
    pub(crate) stats: Arc<Stats>,
    pub(crate) max_event_bytes: usize,
    pub(crate) guard: Option<Arc<CrashGuard>>,
}

/// Room for one more event in the pipeline.
#[derive(Debug)]
pub struct Slot(OwnedSemaphorePermit);

impl Emitter {
    /// Hand one record to the pipeline, waiting for room; false when shutting down.
    pub async fn emit(&self, rec: SourceRecord) -> bool {
        let Some(slot) = self.slot().await else {
            return false;
        };
        match self.admit(&rec, &|| true).await {
            Some(admit) => self.emit_in(rec, slot, admit).await,
            None => false,
        }
    }

    /// Ask the crash guard about `rec` (see [`CrashGuard`]): after an unclean exit this may
    /// wait until nothing else of its partition is in flight. `None` when shutting down.
    /// `still_ours` tells whether the partition is still this worker's after the wait.
    pub async fn admit(
        &self,
        rec: &SourceRecord,
        still_ours: &(dyn Fn() -> bool + Sync),
    ) -> Option<Admit> {
        match &self.guard {
            None => Some(Admit::Run),
            Some(g) => {
                g.admit(
                    rec.partition,
                    rec.offset,
                    &self.tracker,
                    &self.cancel,
                    &self.stats,
                    still_ours,
                )
                .await
            }
        }
    }

    /// Wait for room for one more event; `None` when shutting down.
    pub async fn slot(&self) -> Option<Slot> {
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => None,
            p = self.permits.clone().acquire_owned() => p.ok().map(Slot),
        }
    }

    /// Room for one more event, if there is some now.
    pub fn try_slot(&self) -> Option<Slot> {
        self.permits.clone().try_acquire_owned().ok().map(Slot)
    }

    /// Hand one record to the pipeline in the room `slot` reserved, with the crash guard's
    /// decision on it ([`Emitter::admit`]); false when shutting down.
    pub async fn emit_in(&self, rec: SourceRecord, slot: Slot, admit: Admit) -> bool {
        let permit = slot.0;
        if let Err(e) = lock(&self.tracker).track(rec.partition, rec.offset) {
            tracing::error!(error = %e, "source positions out of order; stopping");
            self.cancel.cancel();
            return false;
        }
        self.stats
            .read
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let span = tracing::info_span!(
            "event",
            otel.name = "fusionstream.event",
            source.stream = %rec.stream,
            source.offset = rec.offset,
            event.id = tracing::field::Empty,
            event.outcome = tracing::field::Empty,
            event.queue_ms = tracing::field::Empty,
            event.model_ms = tracing::field::Empty,
        );
        crate::telemetry::traces::set_parent(&span, rec.traceparent.as_deref());
        let taken = Taken {
            rec,
            permit,
            received_at: SystemTime::now(),
            started: Instant::now(),
            span,
            refused: match admit {
                Admit::Refuse { attempts } => Some(attempts),
                Admit::Run | Admit::RunAlone(_) => None,
            },
        };
        // The permit bounds what is in flight, so this send waits only briefly.
        self.tx.send(taken).await.is_ok() && !self.cancel.is_cancelled()
    }
}

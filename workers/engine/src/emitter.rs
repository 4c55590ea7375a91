//! The source's handle into the pipeline: an [`Emitter`] reserves room for one more event
//! (the in-flight permit), asks the crash guard about the record, tracks its position and
//! hands it on as a [`Taken`] with its span.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use fusionstream_core::crash_guard::Admit;
use fusionstream_core::lock;
use fusionstream_io::ports::{SourceContext, SourceHandle};
use fusionstream_io::SourceRecord;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::report::{Report, Reporter};

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

/// The source's handle into the pipeline ([`SourceHandle`]).
#[derive(Debug, Clone)]
pub struct Emitter {
    pub(crate) cx: SourceContext,
    pub(crate) permits: Arc<Semaphore>,
    pub(crate) tx: mpsc::Sender<Taken>,
    pub(crate) reporter: Arc<dyn Reporter>,
}

/// Room for one more event in the pipeline.
#[derive(Debug)]
pub struct Slot(OwnedSemaphorePermit);

impl SourceHandle for Emitter {
    type Slot = Slot;

    fn context(&self) -> &SourceContext {
        &self.cx
    }

    async fn admit(
        &self,
        rec: &SourceRecord,
        still_ours: &(dyn Fn() -> bool + Sync),
    ) -> Option<Admit> {
        let cx = &self.cx;
        match &cx.guard {
            None => Some(Admit::Run),
            Some(g) => {
                g.admit(
                    rec.partition,
                    rec.offset,
                    &cx.positions,
                    &cx.shutdown,
                    &cx.metrics,
                    still_ours,
                )
                .await
            }
        }
    }

    async fn slot(&self) -> Option<Slot> {
        tokio::select! {
            biased;
            _ = self.cx.shutdown.cancelled() => None,
            p = self.permits.clone().acquire_owned() => p.ok().map(Slot),
        }
    }

    fn try_slot(&self) -> Option<Slot> {
        self.permits.clone().try_acquire_owned().ok().map(Slot)
    }

    async fn emit_in(&self, rec: SourceRecord, slot: Slot, admit: Admit) -> bool {
        let permit = slot.0;
        if let Err(e) = lock(&self.cx.positions).track(rec.partition, rec.offset) {
            tracing::error!(error = %e, "source positions out of order; stopping");
            self.cx.shutdown.cancel();
            return false;
        }
        self.reporter.report(Report::EventRead);
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
        super::trace_context::set_parent(&span, rec.traceparent.as_deref());
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
        self.tx.send(taken).await.is_ok() && !self.cx.shutdown.is_cancelled()
    }
}

//! The model on its own OS thread, behind a synchronous batch-in / batch-out trait.
//!
//! Forward passes never run on async runtime threads: callers submit a batch through a
//! bounded channel (back-pressure when the model is busy) and get the result through a
//! reply callback (a oneshot sender in async code, a plain channel in tests and CLIs).

use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::thread::JoinHandle;

use crate::error::{ModelError, Result};
use crate::runtime::{FusionModel, InferOutput, Prepared};

/// Anything that runs a batch of prepared items.
pub trait Backend: Send + 'static {
    /// Run one batch; one output per item, in order.
    fn infer_batch(&mut self, items: &[Prepared]) -> Result<Vec<InferOutput>>;
}

impl Backend for FusionModel {
    fn infer_batch(&mut self, items: &[Prepared]) -> Result<Vec<InferOutput>> {
        FusionModel::infer_batch(self, items)
    }
}

/// Where the result of a batch goes.
pub type Reply = Box<dyn FnOnce(Result<Vec<InferOutput>>) + Send>;

struct Job {
    items: Vec<Prepared>,
    reply: Reply,
}

/// Why a batch was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The queue is full (only from `try_submit`).
    #[error("model queue is full")]
    Full(Vec<Prepared>),
    /// The model thread has stopped.
    #[error("model thread has stopped")]
    Closed,
}

/// Handle to the model thread. Dropping it stops the thread after the queued batches.
#[derive(Debug)]
pub struct ModelThread {
    tx: Option<SyncSender<Job>>,
    handle: Option<JoinHandle<()>>,
}

impl ModelThread {
    /// Start `backend` on a new thread with room for `queue` waiting batches.
    pub fn spawn<B: Backend>(mut backend: B, queue: usize) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel::<Job>(queue);
        let handle = std::thread::Builder::new()
            .name("fusionstream-model".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    let result = backend.infer_batch(&job.items);
                    (job.reply)(result);
                }
            })?;
        Ok(Self {
            tx: Some(tx),
            handle: Some(handle),
        })
    }

    /// Queue a batch, waiting while the queue is full.
    pub fn submit(
        &self,
        items: Vec<Prepared>,
        reply: Reply,
    ) -> std::result::Result<(), SubmitError> {
        let tx = self.tx.as_ref().ok_or(SubmitError::Closed)?;
        tx.send(Job { items, reply })
            .map_err(|_| SubmitError::Closed)
    }

    /// Queue a batch if there is room now.
    pub fn try_submit(
        &self,
        items: Vec<Prepared>,
        reply: Reply,
    ) -> std::result::Result<(), SubmitError> {
        let tx = self.tx.as_ref().ok_or(SubmitError::Closed)?;
        tx.try_send(Job { items, reply }).map_err(|e| match e {
            TrySendError::Full(job) => SubmitError::Full(job.items),
            TrySendError::Disconnected(_) => SubmitError::Closed,
        })
    }

    /// Run a batch and wait for its result (for CLIs and tests).
    pub fn run(&self, items: Vec<Prepared>) -> Result<Vec<InferOutput>> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.submit(items, Box::new(move |r| drop(tx.send(r))))
            .map_err(|e| ModelError::Unsupported(e.to_string()))?;
        rx.recv()
            .map_err(|_| ModelError::Unsupported("model thread stopped".into()))?
    }
}

impl Drop for ModelThread {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

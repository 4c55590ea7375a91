//! The model as the worker's engine sees it: a synchronous batch-in / batch-out trait.
//!
//! The engine runs a [`Backend`] on its one model thread (`fusionstream::pipeline`'s
//! `model_thread.rs`, with the failure isolation around each call): forward passes never run
//! on async runtime threads. [`FusionModel`] is the production backend; tests drive the
//! pipeline with their own (one that fails, panics or runs out of memory on cue).

use std::sync::Arc;

use crate::error::Result;
use crate::runtime::{FusionModel, InferOutput, Prepared};

/// Anything that runs a batch of prepared items.
pub trait Backend: std::fmt::Debug + Send + Sync + 'static {
    /// Run one batch; one output per item, in order.
    fn infer_batch(&self, items: &[Prepared]) -> Result<Vec<InferOutput>>;
}

impl Backend for FusionModel {
    fn infer_batch(&self, items: &[Prepared]) -> Result<Vec<InferOutput>> {
        FusionModel::infer_batch(self, items)
    }
}

impl<B: Backend + ?Sized> Backend for Arc<B> {
    fn infer_batch(&self, items: &[Prepared]) -> Result<Vec<InferOutput>> {
        (**self).infer_batch(items)
    }
}

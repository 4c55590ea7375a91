//! CLIP on ONNX Runtime: the `vision` and `text` graphs of a part, embeddings L2-normalised
//! as on candle.

use std::path::Path;

use super::{
    f32_view, i64_tensor, read_manifest, rows_of, strings, take_f32, Graph, Inputs, OnnxOptions,
};
use crate::backend::{l2_normalize_rows, pad_ids, BackendKind, DualEncoderBackend, PixelBatch};
use crate::error::Result;

/// A CLIP part on ONNX Runtime (`vision` and `text` graphs).
#[derive(Debug)]
pub struct OnnxClip {
    vision: Graph,
    text: Graph,
    pad: u32,
}

impl OnnxClip {
    /// Open the graphs of a CLIP folder; `eos_token_id` decides the padding token.
    pub fn load(part: &Path, eos_token_id: u32, opts: &OnnxOptions) -> Result<Self> {
        let m = read_manifest(part)?;
        Ok(Self {
            vision: Graph::open(
                part,
                &m,
                "vision",
                opts,
                &strings(&["pixel_values"]),
                &strings(&["image_embeds"]),
            )?,
            text: Graph::open(
                part,
                &m,
                "text",
                opts,
                &strings(&["input_ids", "attention_mask"]),
                &strings(&["text_embeds"]),
            )?,
            // Padding is masked out; it only must not be the EOS that pooling looks for.
            pad: if eos_token_id == 0 { 1 } else { 0 },
        })
    }
}

impl DualEncoderBackend for OnnxClip {
    fn kind(&self) -> BackendKind {
        BackendKind::Onnx
    }

    fn image_embeddings(&self, px: &PixelBatch) -> Result<Vec<Vec<f32>>> {
        let x = f32_view(vec![px.n, 3, px.height, px.width], &px.data)?;
        let (shape, data) = self.vision.run(vec![("pixel_values".into(), x)], |o| {
            take_f32(o, "image_embeds")
        })?;
        let mut rows = rows_of(&shape, data);
        l2_normalize_rows(&mut rows);
        Ok(rows)
    }

    fn text_embeddings(&self, ids: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let (flat, mask, t) = pad_ids(ids, self.pad)?;
        let inputs: Inputs<'_> = vec![
            (
                "input_ids".into(),
                i64_tensor(vec![ids.len(), t], flat)?.into(),
            ),
            (
                "attention_mask".into(),
                i64_tensor(vec![ids.len(), t], mask)?.into(),
            ),
        ];
        let (shape, data) = self.text.run(inputs, |o| take_f32(o, "text_embeds"))?;
        let mut rows = rows_of(&shape, data);
        l2_normalize_rows(&mut rows);
        Ok(rows)
    }
}

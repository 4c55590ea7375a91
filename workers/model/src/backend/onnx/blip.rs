//! BLIP on ONNX Runtime: the vision graph, the question encoder (VQA) and the text
//! decoder, stepped by [`crate::generate`] with its key/value cache on the host.

use std::borrow::Cow;
use std::path::Path;

use ort::value::DynValue;

use super::{
    f32_tensor, f32_view, i64_tensor, ort_err, read_manifest, strings, take_f32, Graph, Inputs,
    OnnxOptions,
};
use crate::backend::{pad_ids, BackendKind, BlipBackend, EncoderStates, PixelBatch};
use crate::error::{ModelError, Result};
use crate::generate::{self, GenerationParams, HostLogits, StepDecoder};

/// Token ids and sizes of a BLIP text config the ONNX part needs.
#[derive(Debug, Clone, Copy)]
pub struct BlipTextDims {
    /// Decoder layers.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Hidden size.
    pub hidden: usize,
    /// Generation starts from it.
    pub bos: u32,
    /// Padding of questions.
    pub pad: u32,
}

impl From<&crate::models::blip::BlipTextConfig> for BlipTextDims {
    fn from(t: &crate::models::blip::BlipTextConfig) -> Self {
        Self {
            layers: t.num_hidden_layers,
            heads: t.num_attention_heads,
            hidden: t.hidden_size,
            bos: t.bos_token_id,
            pad: t.pad_token_id,
        }
    }
}

/// A BLIP captioning or VQA part on ONNX Runtime.
#[derive(Debug)]
pub struct OnnxBlip {
    vision: Graph,
    question_encoder: Option<Graph>,
    decoder: OnnxDecoder,
    dims: BlipTextDims,
}

impl OnnxBlip {
    /// Open the graphs of a BLIP folder (`vqa`: also the question encoder).
    pub fn load(part: &Path, vqa: bool, dims: BlipTextDims, opts: &OnnxOptions) -> Result<Self> {
        let m = read_manifest(part)?;
        let n = dims.layers;
        let kv = |prefix: &str| -> Vec<String> {
            (0..n)
                .flat_map(|i| [format!("{prefix}_key_{i}"), format!("{prefix}_value_{i}")])
                .collect()
        };
        let mut step_in = strings(&["input_ids", "encoder_mask"]);
        step_in.extend(kv("past"));
        step_in.extend(kv("cross"));
        let mut step_out = strings(&["logits"]);
        step_out.extend(kv("present"));
        Ok(Self {
            vision: Graph::open(
                part,
                &m,
                "vision",
                opts,
                &strings(&["pixel_values"]),
                &strings(&["image_states"]),
            )?,
            question_encoder: if vqa {
                Some(Graph::open(
                    part,
                    &m,
                    "question_encoder",
                    opts,
                    &strings(&["input_ids", "attention_mask", "image_states"]),
                    &strings(&["question_states"]),
                )?)
            } else {
                None
            },
            decoder: OnnxDecoder {
                cross: Graph::open(
                    part,
                    &m,
                    "decoder_cross",
                    opts,
                    &strings(&["encoder_states"]),
                    &kv("cross"),
                )?,
                step: Graph::open(part, &m, "decoder_step", opts, &step_in, &step_out)?,
                past_names: kv("past"),
                present_names: kv("present"),
                cross_names: kv("cross"),
                heads: dims.heads,
                head_dim: dims.hidden / dims.heads.max(1),
            },
            dims,
        })
    }
}

impl BlipBackend for OnnxBlip {
    fn kind(&self) -> BackendKind {
        BackendKind::Onnx
    }

    fn image_states(&self, px: &PixelBatch) -> Result<EncoderStates> {
        let x = f32_view(vec![px.n, 3, px.height, px.width], &px.data)?;
        let (shape, data) = self.vision.run(vec![("pixel_values".into(), x)], |o| {
            take_f32(o, "image_states")
        })?;
        let shape: [usize; 3] = shape
            .try_into()
            .map_err(|s| ModelError::OnnxRuntime(format!("image_states of shape {s:?}")))?;
        Ok(EncoderStates::Host { data, shape })
    }

    fn generate(
        &self,
        states: &EncoderStates,
        questions: Option<&[Vec<u32>]>,
        params: &GenerationParams,
    ) -> Result<Vec<Vec<u32>>> {
        let (data, shape) = states.to_host()?;
        let b = shape[0];
        let (enc, enc_shape, mask) = match (&self.question_encoder, questions) {
            (None, None) => (data, shape, vec![1f32; b * shape[1]]),
            (Some(qe), Some(qs)) => {
                if qs.len() != b {
                    return Err(ModelError::Input(format!(
                        "{} questions for {b} images",
                        qs.len()
                    )));
                }
                let (ids, mask, t) = pad_ids(qs, self.dims.pad)?;
                let fmask: Vec<f32> = mask.iter().map(|&m| m as f32).collect();
                let inputs: Inputs<'_> = vec![
                    ("input_ids".into(), i64_tensor(vec![b, t], ids)?.into()),
                    (
                        "attention_mask".into(),
                        i64_tensor(vec![b, t], mask)?.into(),
                    ),
                    ("image_states".into(), f32_view(shape.to_vec(), &data)?),
                ];
                let (qshape, q) = qe.run(inputs, |o| take_f32(o, "question_states"))?;
                let qshape: [usize; 3] = qshape.try_into().map_err(|s| {
                    ModelError::OnnxRuntime(format!("question_states of shape {s:?}"))
                })?;
                (Cow::Owned(q), qshape, fmask)
            }
            (None, Some(_)) => {
                return Err(ModelError::Input(
                    "a captioning model takes no questions".into(),
                ))
            }
            (Some(_), None) => return Err(ModelError::Input("VQA needs questions".into())),
        };
        let state = self.decoder.start(&enc, enc_shape, mask)?;
        generate::generate(&self.decoder, state, &[self.dims.bos], b, params)
    }
}

/// The decoder-step graph driven by [`generate`]: flat self-attention K/V fed back from
/// each step's `present_*` outputs (no copy), rows gathered on the host when they change.
#[derive(Debug)]
struct OnnxDecoder {
    cross: Graph,
    step: Graph,
    past_names: Vec<String>,
    present_names: Vec<String>,
    cross_names: Vec<String>,
    heads: usize,
    head_dim: usize,
}

/// Decoding state of a batch on ONNX Runtime.
struct OnnxDecoderState {
    past: Vec<DynValue>,
    cross: Vec<DynValue>,
    mask: DynValue,
}

impl OnnxDecoder {
    fn start(&self, enc: &[f32], shape: [usize; 3], mask: Vec<f32>) -> Result<OnnxDecoderState> {
        let [b, s, _] = shape;
        let x = f32_view(shape.to_vec(), enc)?;
        let cross = self.cross.run(vec![("encoder_states".into(), x)], |o| {
            self.cross_names
                .iter()
                .map(|n| {
                    o.remove(n.as_str())
                        .ok_or_else(|| ModelError::OnnxRuntime(format!("output {n} missing")))
                })
                .collect::<Result<Vec<_>>>()
        })?;
        let past = (0..self.past_names.len())
            .map(|_| f32_tensor(vec![b, self.heads, 0, self.head_dim], Vec::new()))
            .collect::<Result<Vec<_>>>()?;
        Ok(OnnxDecoderState {
            past,
            cross,
            mask: f32_tensor(vec![b, s], mask)?,
        })
    }
}

/// Gather rows (first axis) of an f32 value into a new one.
fn gather_rows(v: &DynValue, rows: &[u32]) -> Result<DynValue> {
    let (shape, data) = v.try_extract_tensor::<f32>().map_err(ort_err)?;
    let mut dims: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
    let n = dims.first().copied().unwrap_or(0);
    let per = dims.iter().skip(1).product::<usize>();
    let mut out = Vec::with_capacity(rows.len() * per);
    for &r in rows {
        let r = r as usize;
        if r >= n {
            return Err(ModelError::Input(format!("row {r} of {n}")));
        }
        out.extend_from_slice(&data[r * per..(r + 1) * per]);
    }
    if let Some(d) = dims.first_mut() {
        *d = rows.len();
    }
    f32_tensor(dims, out)
}

impl StepDecoder for OnnxDecoder {
    type State = OnnxDecoderState;
    type Logits = HostLogits;

    fn step(&self, ids: &[u32], t: usize, state: &mut OnnxDecoderState) -> Result<HostLogits> {
        let rows = ids.len() / t.max(1);
        let ids: Vec<i64> = ids.iter().map(|&x| i64::from(x)).collect();
        let mut inputs: Inputs<'_> = Vec::with_capacity(2 + 2 * self.past_names.len());
        inputs.push(("input_ids".into(), i64_tensor(vec![rows, t], ids)?.into()));
        inputs.push(("encoder_mask".into(), (&state.mask).into()));
        for (n, v) in self.past_names.iter().zip(&state.past) {
            inputs.push((Cow::Owned(n.clone()), v.into()));
        }
        for (n, v) in self.cross_names.iter().zip(&state.cross) {
            inputs.push((Cow::Owned(n.clone()), v.into()));
        }
        let (logits, present) = self.step.run(inputs, |o| {
            let (shape, data) = take_f32(o, "logits")?;
            let present = self
                .present_names
                .iter()
                .map(|n| {
                    o.remove(n.as_str())
                        .ok_or_else(|| ModelError::OnnxRuntime(format!("output {n} missing")))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok((
                HostLogits {
                    data,
                    vocab: shape.get(1).copied().unwrap_or(0),
                },
                present,
            ))
        })?;
        state.past = present;
        Ok(logits)
    }

    fn select_rows(&self, state: &mut OnnxDecoderState, rows: &[u32]) -> Result<()> {
        for v in state.past.iter_mut().chain(state.cross.iter_mut()) {
            *v = gather_rows(v, rows)?;
        }
        state.mask = gather_rows(&state.mask, rows)?;
        Ok(())
    }
}

//! The inference API: prepare inputs on any thread (decode, resize, tokenise), then run a
//! batch of prepared items through the bundle on the model thread.
//!
//! Items are routed to sub-batches by what they carry: images go to the vision towers,
//! texts to the text tower, questions to VQA, and a missing modality never pads or blocks
//! the others. Each item gets the outputs its modalities allow plus the list of requested
//! tasks that were skipped, with the reason.

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use serde::Serialize;

use crate::bundle::{BundleManifest, GenerationSpec, TagSpec};
use crate::error::{ImageError, ModelError, Result};
use crate::generate::{self, GenerationParams};
use crate::models::blip::{
    BlipCaptioner, BlipConfig, BlipTextConfig, BlipTextDecoder, BlipVqa, DecoderCache,
};
use crate::models::clip::{ClipConfig, ClipModel};
use crate::models::fusion::{FusionConfig, FusionHead};
use crate::models::siglip::{SiglipConfig, SiglipModel};
use crate::nn;
use crate::preprocess::{self, DecodeOptions, ImageProcessorConfig, Pixels, Preprocessor};
use crate::tokenize::TextTokenizer;
pub use fusionstream_core::task::{SkipReason, Skipped, Task, TaskSet};

/// Which modality a tag was scored from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TagSource {
    /// From the image embedding.
    Image,
    /// From the text embedding (text-only items).
    Text,
}

/// A zero-shot tag.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tag {
    /// Label from the bundle.
    pub label: String,
    /// Probability: softmax over the bundle's labels (CLIP) or a sigmoid per label (SigLIP).
    pub score: f32,
    /// Modality it was scored from.
    pub source: TagSource,
}

/// Outputs for one item; fields that do not apply are `None`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct InferOutput {
    /// L2-normalised CLIP image embedding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_embedding: Option<Vec<f32>>,
    /// L2-normalised CLIP text embedding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text_embedding: Option<Vec<f32>>,
    /// Gated fusion of the two (defined when either is present).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fused_embedding: Option<Vec<f32>>,
    /// Cosine similarity of image and text embeddings, in [-1, 1].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub match_score: Option<f32>,
    /// Generated caption.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
    /// Generated answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// Tags at or above the bundle's threshold, best first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<Tag>>,
    /// Requested tasks that produced nothing, with reasons.
    pub skipped: Vec<Skipped>,
}

/// An image decoded once and preprocessed for every vision model of the bundle.
#[derive(Debug, Clone)]
pub struct PreparedImage {
    /// One entry per distinct preprocessor of the bundle.
    pixels: Vec<Arc<Pixels>>,
}

impl PreparedImage {
    /// Pixels over every preprocessed copy (what the image costs a batch).
    pub fn pixel_count(&self) -> u64 {
        self.pixels
            .iter()
            .map(|p| (p.height * p.width) as u64)
            .sum()
    }
}

/// An item ready for the model thread: CPU work done.
#[derive(Debug, Clone, Default)]
pub struct Prepared {
    /// The image, if the item has a usable one.
    pub image: Option<PreparedImage>,
    /// CLIP token ids of the text.
    pub text: Option<Vec<u32>>,
    /// VQA token ids of the question.
    pub question: Option<Vec<u32>>,
    /// Requested tasks.
    pub tasks: TaskSet,
}

/// How to load a bundle.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Where the model runs.
    pub device: Device,
    /// Weight and activation dtype (f32 on CPU; f16/bf16 on GPU).
    pub dtype: DType,
    /// Image limits and JPEG DCT scaling.
    pub decode: DecodeOptions,
    /// Overrides the bundle's generation settings.
    pub generation: Option<GenerationSpec>,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            dtype: DType::F32,
            decode: DecodeOptions::default(),
            generation: None,
        }
    }
}

/// The dual encoder of a bundle: CLIP or SigLIP.
#[derive(Debug)]
enum DualEncoder {
    Clip(ClipModel),
    Siglip(SiglipModel),
}

impl DualEncoder {
    fn load(dir: &Path, dtype: DType, device: &Device) -> Result<(Self, usize, usize)> {
        #[derive(serde::Deserialize)]
        struct Head {
            #[serde(default)]
            model_type: String,
        }
        let cfg_path = dir.join("config.json");
        let head: Head = nn::read_json(&cfg_path)?;
        let vb = nn::load_weights(&dir.join("model.safetensors"), dtype, device)?;
        Ok(match head.model_type.as_str() {
            "siglip" => {
                let cfg = SiglipConfig::from_file(&cfg_path)?;
                let m = SiglipModel::new(vb, &cfg)?;
                (
                    Self::Siglip(m),
                    cfg.vision_config.image_size,
                    cfg.text_config.max_position_embeddings,
                )
            }
            "clip" => {
                let cfg = ClipConfig::from_file(&cfg_path)?;
                let m = ClipModel::new(vb, &cfg)?;
                (
                    Self::Clip(m),
                    cfg.vision_config.image_size,
                    cfg.text_config.max_position_embeddings,
                )
            }
            other => {
                return Err(ModelError::config(
                    cfg_path,
                    format!("model_type {other:?} is not a dual encoder (clip, siglip)"),
                ))
            }
        })
    }

    fn image_embeddings(&self, px: &Tensor) -> Result<Tensor> {
        match self {
            Self::Clip(m) => m.image_embeddings(px),
            Self::Siglip(m) => m.image_embeddings(px),
        }
    }

    fn text_embeddings(&self, ids: &[Vec<u32>], device: &Device) -> Result<Tensor> {
        match self {
            Self::Clip(m) => m.text_embeddings(ids, device),
            Self::Siglip(m) => m.text_embeddings(ids, device),
        }
    }

    fn projection_dim(&self) -> usize {
        match self {
            Self::Clip(m) => m.projection_dim(),
            Self::Siglip(m) => m.projection_dim(),
        }
    }

    /// Per-label probabilities: CLIP's softmax over labels, SigLIP's independent sigmoids.
    fn label_probs(&self, e: &[f32], labels: &[Vec<f32>]) -> Vec<f32> {
        match self {
            Self::Clip(m) => {
                let logits: Vec<f32> = labels.iter().map(|l| m.logit_scale * dot(e, l)).collect();
                let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let exps: Vec<f32> = logits.iter().map(|&x| (x - max).exp()).collect();
                let sum: f32 = exps.iter().sum();
                exps.into_iter().map(|x| x / sum).collect()
            }
            Self::Siglip(m) => labels
                .iter()
                .map(|l| 1.0 / (1.0 + (-(m.logit_scale * dot(e, l) + m.logit_bias)).exp()))
                .collect(),
        }
    }
}

#[derive(Debug)]
struct ClipPart {
    model: DualEncoder,
    tokenizer: TextTokenizer,
    slot: usize,
}

#[derive(Debug)]
struct CaptionPart {
    model: BlipCaptioner,
    tokenizer: TextTokenizer,
    slot: usize,
}

#[derive(Debug)]
struct VqaPart {
    model: BlipVqa,
    tokenizer: TextTokenizer,
    slot: usize,
}

#[derive(Debug)]
struct TagTable {
    labels: Vec<String>,
    /// (L, P) normalised label-prompt embeddings, computed once at load.
    embeddings: Vec<Vec<f32>>,
    threshold: f32,
}

/// A loaded bundle: the fusion model.
#[derive(Debug)]
pub struct FusionModel {
    manifest: BundleManifest,
    device: Device,
    dtype: DType,
    decode: DecodeOptions,
    preprocessors: Vec<Preprocessor>,
    clip: Option<ClipPart>,
    caption: Option<CaptionPart>,
    vqa: Option<VqaPart>,
    fusion: Option<FusionHead>,
    tags: Option<TagTable>,
    generation: GenerationParams,
}

fn slot_for(preprocessors: &mut Vec<Preprocessor>, cfg: ImageProcessorConfig) -> usize {
    if let Some(i) = preprocessors.iter().position(|p| *p.config() == cfg) {
        return i;
    }
    preprocessors.push(Preprocessor::new(cfg));
    preprocessors.len() - 1
}

impl FusionModel {
    /// Load a bundle directory (with `bundle.toml`) or a single HF model directory.
    pub fn load(dir: &Path, opts: &RuntimeOptions) -> Result<Self> {
        let manifest = BundleManifest::load(dir)?;
        let (device, dtype) = (opts.device.clone(), opts.dtype);
        if device.is_cpu() && dtype == DType::BF16 {
            return Err(ModelError::Unsupported(
                "bf16 on CPU (candle's CPU matmul has no bf16): use f32 or f16, or a GPU".into(),
            ));
        }
        let mut preprocessors = Vec::new();

        let clip = match &manifest.clip {
            Some(part) => {
                let (model, image_size, max_len) = DualEncoder::load(&part.path, dtype, &device)?;
                let tokenizer =
                    TextTokenizer::from_file(&part.path.join("tokenizer.json"), max_len)?;
                let pcfg =
                    ImageProcessorConfig::from_file(&part.path.join("preprocessor_config.json"))?;
                check_image_size(&pcfg, image_size, &part.path)?;
                Some(ClipPart {
                    model,
                    tokenizer,
                    slot: slot_for(&mut preprocessors, pcfg),
                })
            }
            None => None,
        };
        let load_blip = |path: &Path,
                         pre: &mut Vec<Preprocessor>|
         -> Result<(BlipConfig, _, TextTokenizer, usize)> {
            let cfg = BlipConfig::from_file(&path.join("config.json"))?;
            let vb = nn::load_weights(&path.join("model.safetensors"), dtype, &device)?;
            let tokenizer = TextTokenizer::from_file(
                &path.join("tokenizer.json"),
                cfg.text_config.max_position_embeddings,
            )?;
            let pcfg = ImageProcessorConfig::from_file(&path.join("preprocessor_config.json"))?;
            check_image_size(&pcfg, cfg.vision_config.image_size, path)?;
            let slot = slot_for(pre, pcfg);
            Ok((cfg, vb, tokenizer, slot))
        };
        let caption = match &manifest.caption {
            Some(part) => {
                let (cfg, vb, tokenizer, slot) = load_blip(&part.path, &mut preprocessors)?;
                Some(CaptionPart {
                    model: BlipCaptioner::new(vb, &cfg)?,
                    tokenizer,
                    slot,
                })
            }
            None => None,
        };
        let vqa = match &manifest.vqa {
            Some(part) => {
                let (cfg, vb, tokenizer, slot) = load_blip(&part.path, &mut preprocessors)?;
                Some(VqaPart {
                    model: BlipVqa::new(vb, &cfg)?,
                    tokenizer,
                    slot,
                })
            }
            None => None,
        };
        let fusion = match &manifest.fusion {
            Some(part) => {
                let cfg = FusionConfig::from_file(&part.path.join("config.json"))?;
                let vb = nn::load_weights(&part.path.join("model.safetensors"), dtype, &device)?;
                Some(FusionHead::new(vb, &cfg)?)
            }
            None => None,
        };
        let gen = opts
            .generation
            .clone()
            .unwrap_or_else(|| manifest.generation.clone());
        let eos = caption
            .as_ref()
            .map(|c| c.model.text_config.sep_token_id)
            .or(vqa.as_ref().map(|v| v.model.text_config.sep_token_id))
            .unwrap_or(0);
        let mut model = Self {
            generation: GenerationParams {
                max_new_tokens: gen.max_new_tokens,
                num_beams: gen.num_beams.max(1),
                length_penalty: 1.0,
                eos_token_id: eos,
            },
            manifest,
            device,
            dtype,
            decode: opts.decode,
            preprocessors,
            clip,
            caption,
            vqa,
            fusion,
            tags: None,
        };
        if let (Some(spec), Some(fusion)) = (&model.manifest.fusion, &model.fusion) {
            let want = model.clip.as_ref().map(|c| c.model.projection_dim());
            if want.is_some_and(|d| d != fusion.embed_dim()) {
                return Err(ModelError::config(
                    spec.path.join("config.json"),
                    "fusion embed_dim differs from the CLIP projection_dim",
                ));
            }
        }
        if let Some(spec) = model.manifest.tags.clone() {
            model.tags = Some(model.build_tags(&spec)?);
        }
        Ok(model)
    }

    /// The manifest the bundle was loaded from.
    pub fn manifest(&self) -> &BundleManifest {
        &self.manifest
    }

    /// Device the model runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Generation settings in force.
    pub fn generation(&self) -> &GenerationParams {
        &self.generation
    }

    /// Change generation settings (e.g. beam width from the CLI).
    pub fn set_generation(&mut self, max_new_tokens: usize, num_beams: usize) {
        self.generation.max_new_tokens = max_new_tokens;
        self.generation.num_beams = num_beams.max(1);
    }

    fn build_tags(&self, spec: &TagSpec) -> Result<TagTable> {
        let clip = self
            .clip
            .as_ref()
            .ok_or_else(|| ModelError::Unsupported("tags need CLIP".into()))?;
        if spec.labels.is_empty() {
            return Err(ModelError::Unsupported("tags.labels is empty".into()));
        }
        let ids = spec
            .labels
            .iter()
            .map(|l| clip.tokenizer.encode(&spec.template.replace("{}", l)))
            .collect::<Result<Vec<_>>>()?;
        let emb = clip
            .model
            .text_embeddings(&ids, &self.device)?
            .to_dtype(DType::F32)?
            .to_vec2()?;
        Ok(TagTable {
            labels: spec.labels.clone(),
            embeddings: emb,
            threshold: spec.threshold,
        })
    }

    /// Decode an image once and preprocess it for every vision model of the bundle.
    pub fn prepare_image(&self, bytes: &[u8]) -> Result<PreparedImage, ImageError> {
        // The largest size any vision model needs after its resize, per axis.
        let need = |h: u32, w: u32| {
            self.preprocessors
                .iter()
                .map(|p| p.config().resized_size(h, w))
                .fold((1, 1), |a, b| (a.0.max(b.0), a.1.max(b.1)))
        };
        let rgb = preprocess::decode_for(bytes, &self.decode, Some(&need))?;
        let pixels = self
            .preprocessors
            .iter()
            .map(|p| p.apply(&rgb).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PreparedImage { pixels })
    }

    /// CLIP token ids of a text (`None` when the bundle has no text encoder).
    pub fn prepare_text(&self, text: &str) -> Result<Option<Vec<u32>>> {
        self.clip
            .as_ref()
            .map(|c| c.tokenizer.encode(text))
            .transpose()
    }

    /// VQA token ids of a question (`None` when the bundle has no VQA model).
    pub fn prepare_question(&self, question: &str) -> Result<Option<Vec<u32>>> {
        self.vqa
            .as_ref()
            .map(|v| v.tokenizer.encode(question))
            .transpose()
    }

    /// Prepare a whole item; an unusable image is an error here (the pipeline degrades
    /// instead by preparing without it).
    pub fn prepare(
        &self,
        image: Option<&[u8]>,
        text: Option<&str>,
        question: Option<&str>,
        tasks: TaskSet,
    ) -> Result<Prepared> {
        Ok(Prepared {
            image: image.map(|b| self.prepare_image(b)).transpose()?,
            text: match text {
                Some(t) => self.prepare_text(t)?,
                None => None,
            },
            question: match question {
                Some(q) => self.prepare_question(q)?,
                None => None,
            },
            tasks,
        })
    }

    fn stack(&self, items: &[&Prepared], slot: usize) -> Result<Tensor> {
        let mut data = Vec::new();
        let (mut h, mut w) = (0, 0);
        for it in items {
            let img = it
                .image
                .as_ref()
                .ok_or_else(|| ModelError::Input("item has no image".into()))?;
            let px = &img.pixels[slot];
            h = px.height;
            w = px.width;
            data.extend_from_slice(&px.data);
        }
        Ok(Tensor::from_vec(data, (items.len(), 3, h, w), &self.device)?.to_dtype(self.dtype)?)
    }

    /// Generate from the BLIP decoder's BOS for `batch` rows and decode the new tokens.
    fn generate_texts(
        &self,
        decoder: &BlipTextDecoder,
        cfg: &BlipTextConfig,
        tokenizer: &TextTokenizer,
        cache: DecoderCache,
        batch: usize,
    ) -> Result<Vec<String>> {
        let prompt = [cfg.bos_token_id];
        let params = GenerationParams {
            eos_token_id: cfg.sep_token_id,
            ..self.generation.clone()
        };
        let seqs = generate::generate(decoder, cache, &prompt, batch, &params, &self.device)?;
        seqs.iter()
            .map(|s| tokenizer.decode(&s[prompt.len()..]))
            .collect()
    }

    fn rows(t: &Tensor) -> Result<Vec<Vec<f32>>> {
        Ok(t.to_dtype(DType::F32)?.to_vec2()?)
    }

    /// Run a batch. The output has one entry per item, in order.
    pub fn infer_batch(&self, items: &[Prepared]) -> Result<Vec<InferOutput>> {
        let n = items.len();
        let mut out = vec![InferOutput::default(); n];
        let wants = |it: &Prepared, ts: &[Task]| ts.iter().any(|t| it.tasks.contains(*t));
        let encoder_tasks = [Task::Embed, Task::Match, Task::Tag];

        // CLIP image and text embeddings: two independent sub-batches.
        let mut img_emb: Vec<Option<Vec<f32>>> = vec![None; n];
        let mut txt_emb: Vec<Option<Vec<f32>>> = vec![None; n];
        if let Some(clip) = &self.clip {
            let rows: Vec<usize> = (0..n)
                .filter(|&i| items[i].image.is_some() && wants(&items[i], &encoder_tasks))
                .collect();
            if !rows.is_empty() {
                let batch: Vec<&Prepared> = rows.iter().map(|&i| &items[i]).collect();
                let px = self.stack(&batch, clip.slot)?;
                for (i, e) in rows
                    .iter()
                    .zip(Self::rows(&clip.model.image_embeddings(&px)?)?)
                {
                    img_emb[*i] = Some(e);
                }
            }
            let rows: Vec<usize> = (0..n)
                .filter(|&i| items[i].text.is_some() && wants(&items[i], &encoder_tasks))
                .collect();
            if !rows.is_empty() {
                let ids: Vec<Vec<u32>> =
                    rows.iter().filter_map(|&i| items[i].text.clone()).collect();
                for (i, e) in rows.iter().zip(Self::rows(
                    &clip.model.text_embeddings(&ids, &self.device)?,
                )?) {
                    txt_emb[*i] = Some(e);
                }
            }
        }

        // Fusion: one sub-batch over every item that has either embedding.
        let mut fused: Vec<Option<Vec<f32>>> = vec![None; n];
        if let Some(head) = &self.fusion {
            let rows: Vec<usize> = (0..n)
                .filter(|&i| {
                    items[i].tasks.contains(Task::Embed)
                        && (img_emb[i].is_some() || txt_emb[i].is_some())
                })
                .collect();
            if !rows.is_empty() {
                let d = head.embed_dim();
                let (mut im, mut tx, mut imm, mut txm) =
                    (Vec::new(), Vec::new(), Vec::new(), Vec::new());
                for &i in &rows {
                    let zeros = vec![0f32; d];
                    im.extend_from_slice(img_emb[i].as_deref().unwrap_or(&zeros));
                    tx.extend_from_slice(txt_emb[i].as_deref().unwrap_or(&zeros));
                    imm.push(if img_emb[i].is_some() { 1f32 } else { 0.0 });
                    txm.push(if txt_emb[i].is_some() { 1f32 } else { 0.0 });
                }
                let r = rows.len();
                let t = |v: Vec<f32>, shape: &[usize]| -> Result<Tensor> {
                    Ok(Tensor::from_vec(v, shape, &self.device)?.to_dtype(self.dtype)?)
                };
                let f = head.forward(
                    &t(im, &[r, d])?,
                    &t(tx, &[r, d])?,
                    &t(imm, &[r])?,
                    &t(txm, &[r])?,
                )?;
                for (i, e) in rows.iter().zip(Self::rows(&f)?) {
                    fused[*i] = Some(e);
                }
            }
        }

        // Captions: one sub-batch of images.
        let mut captions: Vec<Option<String>> = vec![None; n];
        if let Some(cap) = &self.caption {
            let rows: Vec<usize> = (0..n)
                .filter(|&i| items[i].image.is_some() && items[i].tasks.contains(Task::Caption))
                .collect();
            if !rows.is_empty() {
                let batch: Vec<&Prepared> = rows.iter().map(|&i| &items[i]).collect();
                let states = cap.model.vision.forward(&self.stack(&batch, cap.slot)?)?;
                let cache = cap.model.decoder.start(&states, None)?;
                let texts = self.generate_texts(
                    &cap.model.decoder,
                    &cap.model.text_config,
                    &cap.tokenizer,
                    cache,
                    rows.len(),
                )?;
                for (i, t) in rows.iter().zip(texts) {
                    captions[*i] = Some(t);
                }
            }
        }

        // Answers: one sub-batch of (image, question) pairs.
        let mut answers: Vec<Option<String>> = vec![None; n];
        if let Some(vqa) = &self.vqa {
            let rows: Vec<usize> = (0..n)
                .filter(|&i| {
                    items[i].image.is_some()
                        && items[i].question.is_some()
                        && items[i].tasks.contains(Task::Answer)
                })
                .collect();
            if !rows.is_empty() {
                let batch: Vec<&Prepared> = rows.iter().map(|&i| &items[i]).collect();
                let states = vqa.model.vision.forward(&self.stack(&batch, vqa.slot)?)?;
                let qs: Vec<Vec<u32>> = rows
                    .iter()
                    .filter_map(|&i| items[i].question.clone())
                    .collect();
                let q_states = vqa.model.encode_questions(&states, &qs, &self.device)?;
                let lens: Vec<usize> = qs.iter().map(Vec::len).collect();
                let cache = vqa.model.decoder.start(&q_states, Some(&lens))?;
                let texts = self.generate_texts(
                    &vqa.model.decoder,
                    &vqa.model.text_config,
                    &vqa.tokenizer,
                    cache,
                    rows.len(),
                )?;
                for (i, t) in rows.iter().zip(texts) {
                    answers[*i] = Some(t);
                }
            }
        }

        for (i, (item, o)) in items.iter().zip(out.iter_mut()).enumerate() {
            let has_img = item.image.is_some();
            let has_txt = item.text.is_some();
            let mut skip = |task, reason| o.skipped.push(Skipped { task, reason });
            let has_q = item.question.is_some();
            for task in item.tasks.iter() {
                let model_present = match task {
                    Task::Embed | Task::Match => self.clip.is_some(),
                    Task::Caption => self.caption.is_some(),
                    Task::Answer => self.vqa.is_some(),
                    Task::Tag => self.tags.is_some(),
                };
                if !model_present {
                    skip(task, SkipReason::ModelAbsent);
                } else if let Some(reason) = task.missing_input(has_img, has_txt, has_q) {
                    skip(task, reason);
                }
            }
            if item.tasks.contains(Task::Match) {
                if let (Some(a), Some(b)) = (&img_emb[i], &txt_emb[i]) {
                    o.match_score = Some(dot(a, b));
                }
            }
            if item.tasks.contains(Task::Tag) {
                if let (Some(table), Some(clip)) = (&self.tags, &self.clip) {
                    let src = match (&img_emb[i], &txt_emb[i]) {
                        (Some(e), _) => Some((e, TagSource::Image)),
                        (None, Some(e)) => Some((e, TagSource::Text)),
                        _ => None,
                    };
                    if let Some((e, source)) = src {
                        o.tags = Some(
                            table.score(&clip.model.label_probs(e, &table.embeddings), source),
                        );
                    }
                }
            }
            if item.tasks.contains(Task::Embed) {
                o.image_embedding = img_emb[i].take();
                o.text_embedding = txt_emb[i].take();
                o.fused_embedding = fused[i].take();
                if self.fusion.is_none()
                    && (o.image_embedding.is_some() || o.text_embedding.is_some())
                {
                    o.skipped.push(Skipped {
                        task: Task::Embed,
                        reason: SkipReason::ModelAbsent,
                    });
                }
            }
            o.caption = captions[i].take();
            o.answer = answers[i].take();
        }
        Ok(out)
    }

    /// Run one synthetic item (a generated image, a text, a question, every task) through
    /// every part of the bundle and return its output. On a GPU the first use of each kernel
    /// compiles it (tens of seconds for candle's PTX): a worker calls this before it reports
    /// ready, so the first real batch does not pay for it.
    pub fn warm_up(&self) -> Result<InferOutput> {
        let img = image::RgbImage::from_fn(64, 64, |x, y| {
            image::Rgb([(x * 4) as u8, (y * 4) as u8, ((x + y) * 2) as u8])
        });
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .map_err(|e| ModelError::Input(format!("warm-up image: {e}")))?;
        let item = self.prepare(
            Some(&png),
            Some("warm up"),
            Some("what is this ?"),
            TaskSet::all(),
        )?;
        let mut out = self.infer_batch(std::slice::from_ref(&item))?;
        out.pop()
            .ok_or_else(|| ModelError::Input("warm-up batch returned nothing".into()))
    }
}

impl TagTable {
    fn score(&self, probs: &[f32], source: TagSource) -> Vec<Tag> {
        let mut tags: Vec<Tag> = self
            .labels
            .iter()
            .zip(probs)
            .map(|(label, &score)| Tag {
                label: label.clone(),
                score,
                source,
            })
            .filter(|t| t.score >= self.threshold)
            .collect();
        tags.sort_by(|a, b| b.score.total_cmp(&a.score));
        tags
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn check_image_size(p: &ImageProcessorConfig, size: usize, dir: &Path) -> Result<()> {
    let (h, w) = p.output_size(size as u32, size as u32);
    if (h as usize, w as usize) != (size, size) {
        return Err(ModelError::config(
            dir.join("preprocessor_config.json"),
            format!("produces {h}x{w} pixels but the model expects {size}x{size}"),
        ));
    }
    Ok(())
}

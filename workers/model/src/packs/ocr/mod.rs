//! `ocr` packs: PP-OCR text detection (DB), angle classification and recognition (CTC) on
//! ONNX Runtime — the graphs `rapidocr-onnxruntime` ships (`packs/ppocr/pack.toml`) — with
//! the reference pipeline of that package reproduced step for step, because its outputs
//! depend on each step: the image as BGR, its longest side cut to 2000 and shortest raised
//! to 30, a black letterbox for very flat images, the detector's input scaled so that its
//! shortest side is 736 (multiples of 32), the probability map thresholded and dilated, each
//! 8-connected region's minimum-area rectangle scored, grown (`unclip`) and scaled back, the
//! boxes put in reading order (top to bottom, left to right within 10 px), each cut out by a
//! perspective warp (turned upright when tall), turned by 180° when the classifier says so,
//! and read in batches of six sorted by aspect ratio; lines under the text score are
//! dropped.
//!
//! Long because the pipeline is one reference function in rapidocr, followed
//! step by step in one place (detection, crops, classification, recognition); the geometry
//! and raster operations it calls are in their own files.
//!
//! | file | owns |
//! |---|---|
//! | `mod.rs` | [`OcrReader`]: loading, the pipeline, CTC decoding |
//! | `geometry.rs` | hull, minimum-area rectangle, unclip, box scores, perspective |
//! | `raster.rs` | OpenCV's resize and warp, rotations, padding, dilation, regions |

pub mod geometry;
pub mod raster;

use std::path::Path;

use serde::{Deserialize, Serialize};

use self::geometry::{mini_box, Pt};
use self::raster::Img;
use super::Pack;
use crate::backend::onnx::{f32_view, take_f32, Graph, OnnxOptions};
use crate::error::{ModelError, Result};
use crate::preprocess::RgbImage;

#[derive(Debug, Deserialize)]
struct Sections {
    model: ModelSection,
    preprocessing: Settings,
}

#[derive(Debug, Deserialize)]
struct ModelSection {
    det: GraphSpec,
    cls: GraphSpec,
    rec: GraphSpec,
    /// Custom metadata key of the recognition graph that holds its dictionary.
    dictionary_metadata: String,
    cls_labels: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct GraphSpec {
    file: String,
    input: String,
    output: String,
}

/// The pipeline's parameters (the manifest's `[preprocessing]`, rapidocr's `config.yaml`).
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// Longest side before detection.
    pub max_side_len: usize,
    /// Shortest side before detection.
    pub min_side_len: usize,
    /// Images at most this tall get a letterbox.
    pub min_height: usize,
    /// Images flatter than this get a letterbox.
    pub width_height_ratio: f64,
    /// The detector's input: shortest side raised to this.
    pub det_limit_side_len: usize,
    /// Probability threshold of the text mask.
    pub det_thresh: f32,
    /// Lowest mean probability of a box.
    pub det_box_thresh: f64,
    /// Most regions considered.
    pub det_max_candidates: usize,
    /// How much a box grows.
    pub det_unclip_ratio: f64,
    /// Classifier input `[channels, height, width]`.
    pub cls_image_shape: [usize; 3],
    /// Crops per classifier batch.
    pub cls_batch: usize,
    /// Lowest score that turns a crop.
    pub cls_thresh: f32,
    /// Recogniser input `[channels, height, width]` (width: the least).
    pub rec_image_shape: [usize; 3],
    /// Crops per recogniser batch.
    pub rec_batch: usize,
    /// Lowest mean character probability of a line kept.
    pub text_score: f64,
    /// Most lines read per image (the worker's bound on the cost of one image).
    pub max_lines: usize,
}

/// A line of text read in an image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OcrLine {
    /// Its box: four corners (top-left, top-right, bottom-right, bottom-left) in pixels of
    /// the image.
    pub bbox: [[f32; 2]; 4],
    /// The text.
    pub text: String,
    /// Mean probability of its characters.
    pub score: f32,
}

/// An image prepared for [`OcrReader::run`].
#[derive(Debug, Clone)]
pub struct OcrInput {
    work: Img,
    ratio_h: f64,
    ratio_w: f64,
    raw_w: usize,
    raw_h: usize,
}

/// A loaded `ocr` pack.
pub struct OcrReader {
    det: Graph,
    cls: Graph,
    rec: Graph,
    spec: ModelSection,
    chars: Vec<String>,
    s: Settings,
    name: String,
}

impl std::fmt::Debug for OcrReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OcrReader")
            .field("pack", &self.name)
            .field("characters", &self.chars.len())
            .finish_non_exhaustive()
    }
}

/// Python's `round()` (ties to even) to a multiple of 32, as `int(round(v / 32) * 32)`.
fn round32(v: usize) -> usize {
    ((v as f64 / 32.0).round_ties_even() * 32.0) as usize
}

fn to_bgr(img: &RgbImage) -> Img {
    let mut data = img.data.clone();
    for px in data.chunks_exact_mut(3) {
        px.swap(0, 2);
    }
    Img {
        w: img.width as usize,
        h: img.height as usize,
        data,
    }
}

/// CHW floats `(v / 255 − 0.5) / 0.5` of `img`, written into `out` (rows `width` wide,
/// already zeroed past the image).
fn normalise_into(img: &Img, out: &mut [f32], width: usize) {
    let plane = img.h * width;
    for y in 0..img.h {
        for x in 0..img.w {
            let i = (y * img.w + x) * 3;
            for c in 0..3 {
                out[c * plane + y * width + x] = (f32::from(img.data[i + c]) / 255.0 - 0.5) / 0.5;
            }
        }
    }
}

impl OcrReader {
    /// Open the pack in `dir` (checked: manifest, files, checksums) and its three graphs on
    /// ONNX Runtime.
    pub fn load(dir: &Path, opts: &OnnxOptions) -> Result<Self> {
        let pack = Pack::open(dir, "ocr")?;
        let Sections {
            model: spec,
            preprocessing: s,
        } = pack.sections()?;
        let manifest = dir.join("pack.toml");
        if s.cls_batch == 0 || s.rec_batch == 0 || s.max_lines == 0 || spec.cls_labels.len() != 2 {
            return Err(ModelError::config(
                &manifest,
                "batches and max_lines must be at least 1, cls_labels two labels",
            ));
        }
        super::onnx_runtime("ocr", opts)?;
        let open = |g: &GraphSpec| {
            Graph::open_file(
                &format!("{}/{}", pack.manifest.name, g.file),
                &pack.file(&g.file)?,
                opts,
                std::slice::from_ref(&g.input),
                std::slice::from_ref(&g.output),
            )
        };
        let (det, cls, rec) = (open(&spec.det)?, open(&spec.cls)?, open(&spec.rec)?);
        let dict = rec
            .custom_metadata(&spec.dictionary_metadata)?
            .ok_or_else(|| {
                ModelError::config(
                    &manifest,
                    format!(
                        "the recognition graph has no {:?} metadata",
                        spec.dictionary_metadata
                    ),
                )
            })?;
        // PaddleOCR's CTC dictionary: the blank first, the graph's characters, a space last.
        let mut chars = vec![String::new()];
        chars.extend(dict.lines().map(str::to_owned));
        chars.push(" ".into());
        Ok(Self {
            det,
            cls,
            rec,
            spec,
            chars,
            s,
            name: pack.manifest.name,
        })
    }

    /// The pack's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The lines of text in `img`, in reading order.
    pub fn read(&self, img: &RgbImage) -> Result<Vec<OcrLine>> {
        self.run(&self.prepare(img)?)
    }

    /// The first steps, on any thread: BGR, the longest side cut to `max_side_len` (what a
    /// prepared image holds is bounded by it), the shortest raised to `min_side_len`.
    pub fn prepare(&self, img: &RgbImage) -> Result<OcrInput> {
        let raw = to_bgr(img);
        let (raw_w, raw_h) = (raw.w, raw.h);
        if raw_w == 0 || raw_h == 0 {
            return Ok(OcrInput {
                work: raw,
                ratio_h: 1.0,
                ratio_w: 1.0,
                raw_w,
                raw_h,
            });
        }
        let (mut work, mut ratio_h, mut ratio_w) = (raw, 1.0f64, 1.0f64);
        if work.h.max(work.w) > self.s.max_side_len {
            let r = self.s.max_side_len as f64 / work.h.max(work.w) as f64;
            (work, ratio_h, ratio_w) = Self::resize_by(&work, r)?;
        }
        // As the reference: the ratios of this step replace those of the one above.
        if work.h.min(work.w) < self.s.min_side_len {
            let r = self.s.min_side_len as f64 / work.h.min(work.w) as f64;
            (work, ratio_h, ratio_w) = Self::resize_by(&work, r)?;
        }
        Ok(OcrInput {
            work,
            ratio_h,
            ratio_w,
            raw_w,
            raw_h,
        })
    }

    /// The largest prepared image, in bytes (for the worker's memory bound).
    pub fn max_prepared_bytes(&self) -> u64 {
        (self.s.max_side_len as u64).pow(2) * 3
    }

    /// What ONNX Runtime allocates for the detector's largest input beyond its weights:
    /// measured 2026-12-01 (ONNX Runtime 1.31, CPU, peak RSS of one run) at ~170 bytes per
    /// input pixel (116 MiB at 736×736, 487 MiB at 736×3200, 678 MiB at 2016×2016); the
    /// largest input is `max_side_len` rounded up to 32, squared (the letterbox and the
    /// 736-px floor give smaller ones). With a margin: 200 bytes per pixel.
    pub fn max_activation_bytes(&self) -> u64 {
        let side = (self.s.max_side_len as u64).div_ceil(32) * 32;
        side * side * 200
    }

    /// Detection, classification and recognition of a prepared image (the model thread).
    pub fn run(&self, input: &OcrInput) -> Result<Vec<OcrLine>> {
        let OcrInput {
            work,
            ratio_h,
            ratio_w,
            raw_w,
            raw_h,
        } = input;
        let (ratio_h, ratio_w) = (*ratio_h, *ratio_w);
        let (raw_w, raw_h) = (*raw_w as f64, *raw_h as f64);
        if work.w == 0 || work.h == 0 {
            return Ok(Vec::new());
        }
        // Letterbox very low or very flat images.
        let mut top = 0usize;
        let padded;
        let mut work = work;
        if work.h <= self.s.min_height || work.w as f64 / work.h as f64 > self.s.width_height_ratio
        {
            let new_h =
                ((work.w as f64 / self.s.width_height_ratio) as usize).max(self.s.min_height) * 2;
            top = new_h.abs_diff(work.h) / 2;
            padded = raster::pad_vertical(work, top);
            work = &padded;
        }
        let boxes = self.detect(work)?;
        if boxes.is_empty() {
            return Ok(Vec::new());
        }
        let crops = boxes
            .iter()
            .map(|b| crop(work, b))
            .collect::<Result<Vec<_>>>()?;
        let crops = self.classify(crops)?;
        let texts = self.recognise(&crops)?;
        let mut lines = Vec::new();
        for (b, (text, score)) in boxes.iter().zip(texts) {
            if score < self.s.text_score {
                continue;
            }
            let map = |p: Pt| -> [f32; 2] {
                let x = ((p[0] as f32) * ratio_w as f32).clamp(0.0, raw_w as f32);
                let y = ((p[1] as f32 - top as f32) * ratio_h as f32).clamp(0.0, raw_h as f32);
                [x, y]
            };
            lines.push(OcrLine {
                bbox: [map(b[0]), map(b[1]), map(b[2]), map(b[3])],
                text,
                score: score as f32,
            });
        }
        Ok(lines)
    }

    /// `reduce_max_side` / `increase_min_side`: scale by `r`, sides rounded to multiples of 32;
    /// the ratios map back.
    fn resize_by(img: &Img, r: f64) -> Result<(Img, f64, f64)> {
        let h = round32((img.h as f64 * r) as usize);
        let w = round32((img.w as f64 * r) as usize);
        if h == 0 || w == 0 {
            return Err(ModelError::Input(format!(
                "image {}x{} cannot be scaled for OCR",
                img.w, img.h
            )));
        }
        Ok((
            raster::resize_linear(img, w, h),
            img.h as f64 / h as f64,
            img.w as f64 / w as f64,
        ))
    }

    /// Text boxes of `img` (integer corners, clockwise from top-left), in reading order.
    /// Long: the reference's detection post-processing step for step (threshold, boxes,
    /// unclip, filter, reading order), kept in its order to compare with it.
    fn detect(&self, img: &Img) -> Result<Vec<[Pt; 4]>> {
        let limit = self.s.det_limit_side_len as f64;
        let (h, w) = (img.h, img.w);
        let ratio = if (h.min(w) as f64) < limit {
            limit / h.min(w) as f64
        } else {
            1.0
        };
        let (rh, rw) = (
            round32((h as f64 * ratio) as usize),
            round32((w as f64 * ratio) as usize),
        );
        if rh == 0 || rw == 0 {
            return Ok(Vec::new());
        }
        let resized = raster::resize_linear(img, rw, rh);
        let mut input = vec![0f32; 3 * rh * rw];
        normalise_into(&resized, &mut input, rw);
        let (shape, map) = self.det.run(
            vec![(
                self.spec.det.input.clone().into(),
                f32_view(vec![1, 3, rh, rw], &input)?,
            )],
            |o| take_f32(o, &self.spec.det.output),
        )?;
        let (mh, mw) = (shape[2], shape[3]);
        if map.len() != mh * mw {
            return Err(ModelError::OnnxRun {
                graph: self.name.clone(),
                reason: format!("detection map of shape {shape:?}"),
            });
        }
        let mask: Vec<bool> = map.iter().map(|&p| p > self.s.det_thresh).collect();
        let mask = raster::dilate2x2(&mask, mw, mh);
        let mut boxes = Vec::new();
        for region in raster::regions(&mask, mw, mh, self.s.det_max_candidates) {
            let (pts, side) = mini_box(&region);
            if side < 3.0 {
                continue;
            }
            if geometry::mean_in_quad(&map, mw, mh, &pts) < self.s.det_box_thresh {
                continue;
            }
            let grown = geometry::unclip(&pts, self.s.det_unclip_ratio);
            let (b, side) = mini_box(&grown);
            if side < 5.0 {
                continue;
            }
            let scale = |v: f64, from: usize, to: usize| -> f64 {
                f64::from(((v as f32) / from as f32 * to as f32).round_ties_even())
                    .clamp(0.0, to as f64)
            };
            let b = b.map(|p| [scale(p[0], mw, w), scale(p[1], mh, h)]);
            // filter_tag_det_res: clockwise, clipped into the image, not tiny.
            let b = geometry::order_clockwise(b).map(|p| {
                [
                    p[0].clamp(0.0, (w - 1) as f64).trunc(),
                    p[1].clamp(0.0, (h - 1) as f64).trunc(),
                ]
            });
            let dist = |a: Pt, c: Pt| ((a[0] - c[0]).powi(2) + (a[1] - c[1]).powi(2)).sqrt();
            if dist(b[0], b[1]) as i64 <= 3 || dist(b[0], b[3]) as i64 <= 3 {
                continue;
            }
            boxes.push(b);
        }
        // Reading order: by top-left corner, then neighbours within 10 px swapped into
        // left-to-right order.
        boxes.sort_by(|a, b| {
            a[0][1]
                .total_cmp(&b[0][1])
                .then(a[0][0].total_cmp(&b[0][0]))
        });
        for i in 0..boxes.len().saturating_sub(1) {
            for j in (0..=i).rev() {
                if (boxes[j + 1][0][1] - boxes[j][0][1]).abs() < 10.0
                    && boxes[j + 1][0][0] < boxes[j][0][0]
                {
                    boxes.swap(j, j + 1);
                } else {
                    break;
                }
            }
        }
        boxes.truncate(self.s.max_lines);
        Ok(boxes)
    }

    /// Turn the crops the classifier reads upside down.
    fn classify(&self, mut crops: Vec<Img>) -> Result<Vec<Img>> {
        let [_, ch, cw] = self.s.cls_image_shape;
        let order = by_ratio(&crops);
        for batch in order.chunks(self.s.cls_batch) {
            let mut input = vec![0f32; batch.len() * 3 * ch * cw];
            for (k, &i) in batch.iter().enumerate() {
                let c = &crops[i];
                let rw = ((ch as f64 * c.w as f64 / c.h as f64).ceil() as usize).min(cw);
                let r = raster::resize_linear(c, rw.max(1), ch);
                normalise_into(&r, &mut input[k * 3 * ch * cw..(k + 1) * 3 * ch * cw], cw);
            }
            let (_, probs) = self.cls.run(
                vec![(
                    self.spec.cls.input.clone().into(),
                    f32_view(vec![batch.len(), 3, ch, cw], &input)?,
                )],
                |o| take_f32(o, &self.spec.cls.output),
            )?;
            for (k, &i) in batch.iter().enumerate() {
                let p = &probs[k * 2..k * 2 + 2];
                let (label, score) = if p[1] > p[0] { (1, p[1]) } else { (0, p[0]) };
                if self.spec.cls_labels[label].contains("180") && score > self.s.cls_thresh {
                    crops[i] = raster::rotate180(&crops[i]);
                }
            }
        }
        Ok(crops)
    }

    /// Text and score of each crop.
    fn recognise(&self, crops: &[Img]) -> Result<Vec<(String, f64)>> {
        let [_, ih, iw] = self.s.rec_image_shape;
        let order = by_ratio(crops);
        let mut out = vec![(String::new(), 0.0); crops.len()];
        for batch in order.chunks(self.s.rec_batch) {
            let max_ratio = batch
                .iter()
                .map(|&i| crops[i].w as f64 / crops[i].h as f64)
                .fold(iw as f64 / ih as f64, f64::max);
            let width = (ih as f64 * max_ratio) as usize;
            let mut input = vec![0f32; batch.len() * 3 * ih * width];
            for (k, &i) in batch.iter().enumerate() {
                let c = &crops[i];
                let rw = ((ih as f64 * c.w as f64 / c.h as f64).ceil() as usize).min(width);
                let r = raster::resize_linear(c, rw.max(1), ih);
                let n = 3 * ih * width;
                normalise_into(&r, &mut input[k * n..(k + 1) * n], width);
            }
            let (shape, probs) = self.rec.run(
                vec![(
                    self.spec.rec.input.clone().into(),
                    f32_view(vec![batch.len(), 3, ih, width], &input)?,
                )],
                |o| take_f32(o, &self.spec.rec.output),
            )?;
            let (t, classes) = (shape[1], shape[2]);
            if classes != self.chars.len() || probs.len() != batch.len() * t * classes {
                return Err(ModelError::OnnxRun {
                    graph: self.name.clone(),
                    reason: format!(
                        "recognition output {shape:?} for {} characters",
                        self.chars.len()
                    ),
                });
            }
            for (k, &i) in batch.iter().enumerate() {
                out[i] = self.ctc(&probs[k * t * classes..(k + 1) * t * classes], classes);
            }
        }
        Ok(out)
    }

    /// Greedy CTC decoding: best class per step, repeats merged, blanks dropped; the score
    /// is the mean probability of the characters kept.
    fn ctc(&self, probs: &[f32], classes: usize) -> (String, f64) {
        let mut text = String::new();
        let mut conf = Vec::new();
        let mut prev = usize::MAX;
        for step in probs.chunks_exact(classes) {
            let (best, p) =
                step.iter()
                    .enumerate()
                    .fold((0, f32::MIN), |a, (i, &v)| if v > a.1 { (i, v) } else { a });
            if best != prev && best != 0 {
                text.push_str(&self.chars[best]);
                conf.push(f64::from(p));
            }
            prev = best;
        }
        let score = if conf.is_empty() {
            0.0
        } else {
            conf.iter().sum::<f64>() / conf.len() as f64
        };
        (text, score)
    }
}

/// Indices of `crops` by width/height ratio (a stable sort, as numpy's for short lists).
fn by_ratio(crops: &[Img]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..crops.len()).collect();
    order.sort_by(|&a, &b| {
        let ra = crops[a].w as f64 / crops[a].h as f64;
        let rb = crops[b].w as f64 / crops[b].h as f64;
        ra.total_cmp(&rb)
    });
    order
}

/// The box cut out upright (`get_rotate_crop_image`).
fn crop(img: &Img, b: &[Pt; 4]) -> Result<Img> {
    let p: [Pt; 4] = b.map(|q| [f64::from(q[0] as f32), f64::from(q[1] as f32)]);
    let d = |a: Pt, c: Pt| ((a[0] - c[0]).powi(2) + (a[1] - c[1]).powi(2)).sqrt();
    let w = d(p[0], p[1]).max(d(p[2], p[3])) as usize;
    let h = d(p[0], p[3]).max(d(p[1], p[2])) as usize;
    let dst = [
        [0.0, 0.0],
        [w as f64, 0.0],
        [w as f64, h as f64],
        [0.0, h as f64],
    ];
    let m = geometry::perspective(&p, &dst)
        .and_then(|m| geometry::invert3(&m))
        .ok_or_else(|| ModelError::Input("degenerate text box".into()))?;
    let out = raster::warp_perspective_cubic(img, &m, w.max(1), h.max(1));
    Ok(if out.h as f64 / out.w as f64 >= 1.5 {
        raster::rot90_ccw(&out)
    } else {
        out
    })
}

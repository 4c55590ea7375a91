//! The trained "shapes" bundle (`models/shapes`) against transformers on 8 test scenes
//! (`models/tools/make_bundle_fixtures.py`): every part at the model level (same pixels), and
//! the whole runtime from the PNG files (our decoding and preprocessing included).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;

use candle_core::{DType, Device, IndexOp, Tensor};
use common::*;
use fusionstream_model::generate::{generate, GenerationParams};
use fusionstream_model::models::blip::{BlipCaptioner, BlipConfig, BlipVqa};
use fusionstream_model::models::clip::{ClipConfig, ClipModel};
use fusionstream_model::nn::load_weights;
use fusionstream_model::{FusionModel, RuntimeOptions, TaskSet};

fn root() -> PathBuf {
    common::manifest_dir().join("../..")
}

fn bundle(part: &str) -> PathBuf {
    root().join("models/shapes").join(part)
}

fn fixtures() -> PathBuf {
    root().join("models/fixtures/shapes")
}

fn reference() -> (std::collections::HashMap<String, Tensor>, serde_json::Value) {
    let t = candle_core::safetensors::load(fixtures().join("reference.safetensors"), &Device::Cpu)
        .unwrap();
    let j =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("reference.json")).unwrap())
            .unwrap();
    (t, j)
}

#[test]
fn clip_and_fusion_match_transformers() {
    let (r, j) = reference();
    let cfg = ClipConfig::from_file(&bundle("clip/config.json")).unwrap();
    let clip = ClipModel::new(
        load_weights(&bundle("clip/model.safetensors"), DType::F32, &Device::Cpu).unwrap(),
        &cfg,
    )
    .unwrap();
    let img = clip.image_embeddings(&r["pixel_values"]).unwrap();
    assert_close("image_embeds", &img, &r["image_embeds"], 1e-4);
    let txt = clip
        .text_embeddings(&ids(&j["text_ids"]), &Device::Cpu)
        .unwrap();
    assert_close("text_embeds (batched)", &txt, &r["text_embeds"], 1e-4);
}

#[test]
fn captions_and_answers_match_transformers_token_for_token() {
    let (r, j) = reference();
    let dev = Device::Cpu;
    let cfg = BlipConfig::from_file(&bundle("blip-caption/config.json")).unwrap();
    let cap = BlipCaptioner::new(
        load_weights(&bundle("blip-caption/model.safetensors"), DType::F32, &dev).unwrap(),
        &cfg,
    )
    .unwrap();
    let states = cap.vision.forward(&r["pixel_values"]).unwrap();
    let eos = cfg.text_config.sep_token_id;
    let bos = [cfg.text_config.bos_token_id];
    for (beams, key) in [(1, "caption_greedy_ids"), (3, "caption_beam3_ids")] {
        let p = GenerationParams {
            max_new_tokens: 32,
            num_beams: beams,
            length_penalty: 1.0,
            eos_token_id: eos,
        };
        let got = generate(
            &cap.decoder,
            cap.decoder.start(&states, None).unwrap(),
            &bos,
            8,
            &p,
        )
        .unwrap();
        assert_eq!(got, ids(&j[key]), "{key}");
    }
    let cfg = BlipConfig::from_file(&bundle("blip-vqa/config.json")).unwrap();
    let vqa = BlipVqa::new(
        load_weights(&bundle("blip-vqa/model.safetensors"), DType::F32, &dev).unwrap(),
        &cfg,
    )
    .unwrap();
    let states = vqa.vision.forward(&r["pixel_values"]).unwrap();
    let qs = ids(&j["question_ids"]);
    let q_states = vqa.encode_questions(&states, &qs, &dev).unwrap();
    let lens: Vec<usize> = qs.iter().map(Vec::len).collect();
    for (beams, key) in [(1, "answer_greedy_ids"), (3, "answer_beam3_ids")] {
        let p = GenerationParams {
            max_new_tokens: 8,
            num_beams: beams,
            length_penalty: 1.0,
            eos_token_id: eos,
        };
        let cache = vqa.decoder.start(&q_states, Some(&lens)).unwrap();
        let got = generate(&vqa.decoder, cache, &bos, 8, &p).unwrap();
        assert_eq!(got, ids(&j[key]), "{key}");
    }
}

#[test]
fn the_runtime_from_png_files_gives_the_reference_outputs() {
    let (r, j) = reference();
    let model = FusionModel::load(&bundle(""), &RuntimeOptions::default()).unwrap();
    let texts = strings(&j["texts"]);
    let questions = strings(&j["questions"]);
    let items: Vec<_> = strings(&j["images"])
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let bytes = std::fs::read(fixtures().join("images").join(name)).unwrap();
            model
                .prepare(
                    Some(&bytes),
                    Some(&texts[i]),
                    Some(&questions[i]),
                    TaskSet::unnamed(),
                )
                .unwrap()
        })
        .collect();
    let out = model.infer_batch(&items).unwrap();
    let captions = strings(&j["caption_greedy"]);
    let answers = strings(&j["answer_greedy"]);
    for (i, o) in out.iter().enumerate() {
        let cos = |a: &[f32], b: &Tensor| -> f32 {
            a.iter()
                .zip(b.to_vec1::<f32>().unwrap())
                .map(|(x, y)| x * y)
                .sum()
        };
        assert!(
            cos(
                o.image_embedding.as_ref().unwrap(),
                &r["image_embeds"].i(i).unwrap()
            ) > 0.999
        );
        assert!(
            cos(
                o.text_embedding.as_ref().unwrap(),
                &r["text_embeds"].i(i).unwrap()
            ) > 0.99999
        );
        assert!(
            cos(
                o.fused_embedding.as_ref().unwrap(),
                &r["fused_both"].i(i).unwrap()
            ) > 0.999
        );
        assert_eq!(
            o.caption.as_deref(),
            Some(captions[i].as_str()),
            "caption {i}"
        );
        assert_eq!(o.answer.as_deref(), Some(answers[i].as_str()), "answer {i}");
        assert!(o.skipped.is_empty());
    }
}

/// The exporter's manifest records the vision tower's weight hash as the runtime computes it,
/// and the captioning and VQA parts (the VQA vision tower is the captioner's, frozen) share it.
#[test]
fn manifest_weight_hashes_are_the_runtimes() {
    let hex = |h: [u8; 32]| h.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let mut seen = Vec::new();
    for part in ["clip", "blip-caption", "blip-vqa"] {
        let dir = bundle(part);
        let manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("onnx/manifest.json")).unwrap())
                .unwrap();
        let ours = hex(fusionstream_model::nn::weights_hash(
            &dir.join("model.safetensors"),
            "vision_model.",
        )
        .unwrap());
        assert_eq!(
            manifest["weights_sha256"]["vision"].as_str(),
            Some(ours.as_str()),
            "{part}"
        );
        seen.push(ours);
    }
    assert_ne!(seen[0], seen[1], "CLIP and BLIP towers differ");
    assert_eq!(seen[1], seen[2], "caption and VQA share the vision tower");
}

/// The bundle's tag heads from the PNG files and from the scene captions give the decisions
/// that transformers' features (the captioner's patch states, the caption's tokens) and the
/// Python heads give, and on these scenes its tags are true at the card's rates: the tags
/// emitted name shapes and colours the scene holds (the generator's truth), every colour is
/// found, and most of what the scene holds is tagged.
#[test]
fn tags_are_the_heads_decisions_and_true_to_the_scenes() {
    let (r, j) = reference();
    let model = FusionModel::load(&bundle(""), &RuntimeOptions::default()).unwrap();
    let manifest = fusionstream_model::bundle::BundleManifest::load(&bundle("")).unwrap();
    let head = manifest.tags.unwrap().head.unwrap();
    let labels = strings(&j["tag_labels"]);
    let truth: Vec<Vec<String>> = j["tag_truth"]
        .as_array()
        .unwrap()
        .iter()
        .map(strings)
        .collect();
    let texts = strings(&j["texts"]);
    let tags_only = TaskSet::parse_list("tag").unwrap();
    let (mut emitted, mut wrong) = (0, 0);
    // Per source: labels the scenes hold, and how many of them were tagged.
    let mut recall: Vec<(&str, usize, usize)> = Vec::new();
    for (source, thresholds, tol) in [
        ("image", &head.image.threshold, 0.02),
        ("text", &head.text.threshold, 1e-3),
    ] {
        let want = r[&format!("tag_scores_{source}")].to_vec2::<f32>().unwrap();
        let items: Vec<_> = strings(&j["images"])
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let bytes = std::fs::read(fixtures().join("images").join(name)).unwrap();
                match source {
                    "image" => model.prepare(Some(&bytes), None, None, tags_only),
                    _ => model.prepare(None, Some(&texts[i]), None, tags_only),
                }
                .unwrap()
            })
            .collect();
        let (mut held, mut found) = (0, 0);
        for (i, o) in model.infer_batch(&items).unwrap().iter().enumerate() {
            let got = o.tags.as_ref().unwrap();
            held += truth[i].len();
            found += truth[i]
                .iter()
                .filter(|l| got.iter().any(|t| &&t.label == l))
                .count();
            for (l, label) in labels.iter().enumerate() {
                let tag = got.iter().find(|t| &t.label == label);
                if let Some(t) = tag {
                    assert!(
                        (t.score - want[i][l]).abs() <= tol,
                        "{source} scene {i} {label}: {} vs {}",
                        t.score,
                        want[i][l]
                    );
                    assert_eq!(format!("{:?}", t.source).to_lowercase(), source);
                }
                // Decisions agree wherever the reference is not within the tolerance of
                // the threshold (the image path's pixels differ slightly: our decoder).
                if (want[i][l] - thresholds[l]).abs() > tol {
                    assert_eq!(
                        tag.is_some(),
                        want[i][l] >= thresholds[l],
                        "{source} scene {i} {label}: score {} threshold {}",
                        want[i][l],
                        thresholds[l]
                    );
                }
            }
            for t in got {
                emitted += 1;
                if !truth[i].contains(&t.label) {
                    eprintln!(
                        "{source} scene {i}: tag {} ({:.2}) not in the scene",
                        t.label, t.score
                    );
                    wrong += 1;
                }
            }
            if source == "image" {
                for colour in truth[i].iter().filter(|l| labels[6..].contains(l)) {
                    assert!(
                        got.iter().any(|t| &t.label == colour),
                        "scene {i} ({}): colour {colour} not tagged: {got:?}",
                        texts[i]
                    );
                }
            }
        }
        recall.push((source, held, found));
    }
    // The card's micro precision is 0.95 (images) and 1.00 (texts): at least 0.90 of
    // the tags emitted on these scenes name what the scene holds.
    eprintln!("{wrong} of {emitted} tags name what the scene lacks; found {recall:?}");
    assert!(emitted >= 16, "{emitted} tags");
    assert!(
        wrong as f64 <= 0.1 * emitted as f64,
        "{wrong} of {emitted} tags name what the scene lacks"
    );
    // The card's micro recall is 0.94 (images) and 0.98 (texts): at least that less two
    // standard deviations of a 30-label sample of what the scenes hold is tagged.
    for (source, held, found) in recall {
        let bound = if source == "image" { 0.85 } else { 0.94 };
        assert!(held >= 16, "{source}: {held} labels held");
        assert!(
            found as f64 >= bound * held as f64,
            "{source}: {found} of the {held} labels the scenes hold tagged"
        );
    }
}

/// Image tags read the captioner's patch states (`[tags.image] source = "caption_patches"`):
/// a batch that captions some images and only tags others runs the captioner's vision tower
/// once over all of them, and every item gets what it gets alone.
#[test]
fn image_tags_and_captions_share_the_captioners_pass_in_mixed_batches() {
    let (_, j) = reference();
    let model = FusionModel::load(&bundle(""), &RuntimeOptions::default()).unwrap();
    let names = strings(&j["images"]);
    let sets = ["caption,tag", "tag", "caption", "tag,embed", "embed"];
    let items: Vec<_> = names
        .iter()
        .zip(sets)
        .map(|(name, set)| {
            let bytes = std::fs::read(fixtures().join("images").join(name)).unwrap();
            let tasks = TaskSet::parse_list(set).unwrap();
            model.prepare(Some(&bytes), None, None, tasks).unwrap()
        })
        .collect();
    let together = model.infer_batch(&items).unwrap();
    for ((item, t), set) in items.iter().zip(&together).zip(sets) {
        let alone = model
            .infer_batch(std::slice::from_ref(item))
            .unwrap()
            .remove(0);
        assert_eq!(t.caption, alone.caption, "{set}");
        assert_eq!(t.caption.is_some(), set.contains("caption"), "{set}");
        assert_eq!(t.tags.is_some(), set.contains("tag"), "{set}");
        let (a, b) = (
            t.tags.clone().unwrap_or_default(),
            alone.tags.unwrap_or_default(),
        );
        assert_eq!(a.len(), b.len(), "{set}: {a:?} vs {b:?}");
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.label, y.label, "{set}");
            assert!((x.score - y.score).abs() < 1e-4, "{set}: {x:?} vs {y:?}");
        }
    }
    assert!(
        together
            .iter()
            .filter_map(|o| o.tags.as_ref())
            .any(|t| !t.is_empty()),
        "some image is tagged"
    );
}

/// The card's targets for caption attributes and answers (`models/shapes/README.md`; the
/// bundle measures 0.97 and 0.97 on 1,000-scene evaluation splits), and for the captioner's
/// shape alone its measured 0.90 less two standard deviations of a 16-object sample.
const CAPTION_ATTRIBUTES: f64 = 0.90;
const ANSWERS: f64 = 0.90;
const CAPTION_SHAPE: f64 = 0.75;

/// The objects a caption describes: (size, colour, shape, position) of each "small red circle
/// on the left" phrase, as `models.eval` reads them.
fn caption_objects(caption: &str) -> Vec<[String; 4]> {
    let words: Vec<&str> = caption
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let mut found = Vec::new();
    for k in 0..words.len().saturating_sub(2) {
        if words[k] != "small" && words[k] != "large" {
            continue;
        }
        let position = match words.get(k + 3..k + 6) {
            Some(["on", "the", p @ ("left" | "right")])
            | Some(["at", "the", p @ ("top" | "bottom")]) => p.to_string(),
            Some(["in", "the", "centre"]) => "centre".to_string(),
            _ => String::new(),
        };
        found.push([
            words[k].to_string(),
            words[k + 1].to_string(),
            words[k + 2].to_string(),
            position,
        ]);
    }
    found
}

/// The bundle's captions and answers, through the runtime from the PNG files, are true to the
/// scenes (the generator's objects and answers) at the card's rates: each true object matched
/// to the caption phrase that agrees with it most (as `models.eval` scores attributes), and
/// every question the generator asks of the 8 scenes.
#[test]
fn captions_and_answers_are_true_to_the_scenes() {
    let (_, j) = reference();
    let model = FusionModel::load(&bundle(""), &RuntimeOptions::default()).unwrap();
    let images: Vec<Vec<u8>> = strings(&j["images"])
        .iter()
        .map(|name| std::fs::read(fixtures().join("images").join(name)).unwrap())
        .collect();
    let caption = TaskSet::parse_list("caption").unwrap();
    let items: Vec<_> = images
        .iter()
        .map(|b| model.prepare(Some(b), None, None, caption).unwrap())
        .collect();
    const KINDS: [&str; 4] = ["size", "colour", "shape", "position"];
    let (mut right, mut total) = ([0usize; 4], 0usize);
    for (i, o) in model.infer_batch(&items).unwrap().iter().enumerate() {
        let said = o.caption.as_deref().unwrap();
        let mut found = caption_objects(said);
        for truth in j["objects"][i].as_array().unwrap() {
            total += 1;
            let truth: Vec<&str> = KINDS.iter().map(|k| truth[k].as_str().unwrap()).collect();
            let agree = |f: &[String; 4]| (0..4).filter(|&a| f[a] == truth[a]).count();
            let Some(best) = (0..found.len()).max_by_key(|&n| (agree(&found[n]), usize::MAX - n))
            else {
                continue;
            };
            if agree(&found[best]) == 0 {
                continue;
            }
            let f = found.remove(best);
            for a in 0..4 {
                right[a] += usize::from(f[a] == truth[a]);
            }
        }
    }
    let rate = |n: usize| n as f64 / total as f64;
    let overall = rate(right.iter().sum::<usize>()) / 4.0;
    let per_kind: Vec<String> = (0..4)
        .map(|a| format!("{} {:.2}", KINDS[a], rate(right[a])))
        .collect();
    eprintln!(
        "caption attributes {overall:.3} ({}) on {total} objects",
        per_kind.join(", ")
    );
    assert!(total >= 12, "{total} objects");
    assert!(
        overall >= CAPTION_ATTRIBUTES,
        "caption attributes {overall:.3}: {per_kind:?}"
    );
    assert!(
        rate(right[2]) >= CAPTION_SHAPE,
        "shape {:.3}",
        rate(right[2])
    );

    let questions = strings(&j["truth_questions"]);
    let answers = strings(&j["truth_answers"]);
    let scene: Vec<usize> = j["truth_scene"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let answer = TaskSet::parse_list("answer").unwrap();
    let items: Vec<_> = questions
        .iter()
        .zip(&scene)
        .map(|(q, &s)| {
            model
                .prepare(Some(&images[s]), None, Some(q), answer)
                .unwrap()
        })
        .collect();
    let mut wrong = Vec::new();
    for (n, o) in model.infer_batch(&items).unwrap().iter().enumerate() {
        if o.answer.as_deref() != Some(answers[n].as_str()) {
            wrong.push(format!(
                "{}: {:?} (true {})",
                questions[n], o.answer, answers[n]
            ));
        }
    }
    let accuracy = 1.0 - wrong.len() as f64 / questions.len() as f64;
    eprintln!("answers {accuracy:.3} on {} questions", questions.len());
    assert!(questions.len() >= 60, "{} questions", questions.len());
    assert!(
        accuracy >= ANSWERS,
        "answers {accuracy:.3}; wrong: {wrong:#?}"
    );
}

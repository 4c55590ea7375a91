//! The trained "shapes" bundle (`models/shapes`) against transformers on 8 test scenes
//! (`models/tools/make_bundle_fixtures.py`): every part at the model level (same pixels), and
//! the whole runtime from the PNG files (our decoding and preprocessing included). Its outputs
//! against the scenes' truth are `bundle_truth.rs`.
#![allow(clippy::unwrap_used)]

mod common;

use candle_core::{DType, Device, IndexOp, Tensor};
use common::*;
use fusionstream_model::generate::{generate, GenerationParams};
use fusionstream_model::models::blip::{BlipCaptioner, BlipConfig, BlipVqa};
use fusionstream_model::models::clip::{ClipConfig, ClipModel};
use fusionstream_model::nn::load_weights;
use fusionstream_model::{FusionModel, RuntimeOptions, TaskSet};

#[test]
fn clip_and_fusion_match_transformers() {
    let (r, j) = shapes_reference();
    let cfg = ClipConfig::from_file(&shapes_bundle("clip/config.json")).unwrap();
    let clip = ClipModel::new(
        load_weights(
            &shapes_bundle("clip/model.safetensors"),
            DType::F32,
            &Device::Cpu,
        )
        .unwrap(),
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
    let (r, j) = shapes_reference();
    let dev = Device::Cpu;
    let cfg = BlipConfig::from_file(&shapes_bundle("blip-caption/config.json")).unwrap();
    let cap = BlipCaptioner::new(
        load_weights(
            &shapes_bundle("blip-caption/model.safetensors"),
            DType::F32,
            &dev,
        )
        .unwrap(),
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
    let cfg = BlipConfig::from_file(&shapes_bundle("blip-vqa/config.json")).unwrap();
    let vqa = BlipVqa::new(
        load_weights(
            &shapes_bundle("blip-vqa/model.safetensors"),
            DType::F32,
            &dev,
        )
        .unwrap(),
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
    let (r, j) = shapes_reference();
    let model = FusionModel::load(&shapes_bundle(""), &RuntimeOptions::default()).unwrap();
    let texts = strings(&j["texts"]);
    let questions = strings(&j["questions"]);
    let items: Vec<_> = strings(&j["images"])
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let bytes = std::fs::read(shapes_fixtures().join("images").join(name)).unwrap();
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
        let dir = shapes_bundle(part);
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

//! Parity with transformers v5.17 on tiny random checkpoints (`models/tools/make_tiny.py`):
//! embeddings and logits within 1e-4 (f32), greedy and beam-3 token ids identical, and every
//! comparison made on a padded batch against references computed one item at a time, so the
//! same tests prove batch invariance.
#![allow(clippy::unwrap_used)]

mod common;

use candle_core::{DType, Device, IndexOp, Tensor};
use common::*;
use fusionstream_model::generate::{generate, GenerationParams};
use fusionstream_model::models::blip::{BlipCaptioner, BlipConfig, BlipVqa};
use fusionstream_model::models::clip::{ClipConfig, ClipModel};
use fusionstream_model::models::fusion::{FusionConfig, FusionHead};
use fusionstream_model::models::siglip::{SiglipConfig, SiglipModel};
use fusionstream_model::nn::load_weights;

const TOL: f32 = 1e-4;

fn clip(name: &str) -> ClipModel {
    let dir = tiny(name);
    let cfg = ClipConfig::from_file(&dir.join("config.json")).unwrap();
    ClipModel::new(
        load_weights(&dir.join("model.safetensors"), DType::F32, &Device::Cpu).unwrap(),
        &cfg,
    )
    .unwrap()
}

fn check_clip(name: &str) {
    let model = clip(name);
    let r = reference(name);
    let j = reference_json(name);
    let img = model.image_embeddings(&r["pixel_values"]).unwrap();
    assert_close(
        &format!("{name} image_embeds"),
        &img,
        &r["image_embeds"],
        TOL,
    );
    // All texts in one padded batch against references computed one by one.
    let texts = ids(&j["input_ids"]);
    assert!(
        texts.iter().map(Vec::len).min() != texts.iter().map(Vec::len).max(),
        "lengths must differ"
    );
    let txt = model.text_embeddings(&texts, &Device::Cpu).unwrap();
    assert_close(
        &format!("{name} text_embeds (batched)"),
        &txt,
        &r["text_embeds"],
        TOL,
    );
    let logits = (img.matmul(&txt.t().unwrap()).unwrap() * model.logit_scale as f64).unwrap();
    assert_close(
        &format!("{name} logits_per_image"),
        &logits,
        &r["logits_per_image"],
        1e-3,
    );
    // Single items agree with the batch.
    for (i, t) in texts.iter().enumerate() {
        let one = model
            .text_embeddings(std::slice::from_ref(t), &Device::Cpu)
            .unwrap();
        assert_close("single text", &one.i(0).unwrap(), &txt.i(i).unwrap(), 1e-5);
    }
    let one = model
        .image_embeddings(&r["pixel_values"].narrow(0, 1, 1).unwrap())
        .unwrap();
    assert_close("single image", &one.i(0).unwrap(), &img.i(1).unwrap(), 1e-5);
}

#[test]
fn clip_a_matches_transformers() {
    check_clip("clip-a");
}

#[test]
fn clip_b_matches_transformers() {
    check_clip("clip-b");
}

fn check_siglip(name: &str) {
    let dir = tiny(name);
    let cfg = SiglipConfig::from_file(&dir.join("config.json")).unwrap();
    let model = SiglipModel::new(
        load_weights(&dir.join("model.safetensors"), DType::F32, &Device::Cpu).unwrap(),
        &cfg,
    )
    .unwrap();
    let r = reference(name);
    let j = reference_json(name);
    let img = model.image_embeddings(&r["pixel_values"]).unwrap();
    assert_close(
        &format!("{name} image_embeds"),
        &img,
        &r["image_embeds"],
        TOL,
    );
    let texts = ids(&j["input_ids"]);
    let txt = model.text_embeddings(&texts, &Device::Cpu).unwrap();
    assert_close(&format!("{name} text_embeds"), &txt, &r["text_embeds"], TOL);
    let logits = ((img.matmul(&txt.t().unwrap()).unwrap() * model.logit_scale as f64).unwrap()
        + model.logit_bias as f64)
        .unwrap();
    assert_close(
        &format!("{name} logits_per_image"),
        &logits,
        &r["logits_per_image"],
        1e-3,
    );
    for (i, t) in texts.iter().enumerate() {
        let one = model
            .text_embeddings(std::slice::from_ref(t), &Device::Cpu)
            .unwrap();
        assert_close("single text", &one.i(0).unwrap(), &txt.i(i).unwrap(), 1e-5);
    }
}

#[test]
fn siglip_a_matches_transformers() {
    check_siglip("siglip-a");
}

#[test]
fn siglip_b_matches_transformers() {
    check_siglip("siglip-b");
}

fn blip_cfg(name: &str) -> (BlipConfig, candle_nn::VarBuilder<'static>) {
    let dir = tiny(name);
    let cfg = BlipConfig::from_file(&dir.join("config.json")).unwrap();
    let vb = load_weights(&dir.join("model.safetensors"), DType::F32, &Device::Cpu).unwrap();
    (cfg, vb)
}

fn params(j: &serde_json::Value, beams: usize, eos: u32) -> GenerationParams {
    GenerationParams {
        max_new_tokens: j["max_new_tokens"].as_u64().unwrap() as usize,
        num_beams: beams,
        length_penalty: 1.0,
        eos_token_id: eos,
    }
}

fn check_caption(name: &str) {
    let (cfg, vb) = blip_cfg(name);
    let model = BlipCaptioner::new(vb, &cfg).unwrap();
    let r = reference(name);
    let j = reference_json(name);
    let dev = Device::Cpu;
    let states = model.vision.forward(&r["pixel_values"]).unwrap();
    assert_close(
        &format!("{name} image_embeds"),
        &states,
        &r["image_embeds"],
        TOL,
    );

    let forced = ids(&j["forced_ids"]);
    let forced = Tensor::new(forced, &dev).unwrap();
    let mut cache = model.decoder.start(&states, None).unwrap();
    let logits = model.decoder.forward(&forced, &mut cache).unwrap();
    assert_close(
        &format!("{name} forced logits"),
        &logits,
        &r["forced_logits"],
        TOL,
    );

    let bos = [cfg.text_config.bos_token_id];
    let eos = cfg.text_config.sep_token_id;
    for (beams, key) in [(1, "greedy_ids"), (3, "beam3_ids")] {
        let cache = model.decoder.start(&states, None).unwrap();
        let got = generate(&model.decoder, cache, &bos, 2, &params(&j, beams, eos)).unwrap();
        assert_eq!(got, ids(&j[key]), "{name} {key}");
    }
}

#[test]
fn blip_caption_a_matches_transformers() {
    check_caption("blip-caption-a");
}

#[test]
fn blip_caption_b_matches_transformers() {
    check_caption("blip-caption-b");
}

fn check_vqa(name: &str) {
    let (cfg, vb) = blip_cfg(name);
    let model = BlipVqa::new(vb, &cfg).unwrap();
    let r = reference(name);
    let j = reference_json(name);
    let dev = Device::Cpu;
    let states = model.vision.forward(&r["pixel_values"]).unwrap();
    // Both questions (different lengths) in one padded batch.
    let qs = ids(&j["question_ids"]);
    assert_ne!(qs[0].len(), qs[1].len());
    let q_states = model.encode_questions(&states, &qs, &dev).unwrap();
    for (i, q) in qs.iter().enumerate() {
        let got = q_states.i(i).unwrap().narrow(0, 0, q.len()).unwrap();
        assert_close(
            &format!("{name} question_embeds_{i}"),
            &got,
            &r[&format!("question_embeds_{i}")],
            TOL,
        );
        let forced = Tensor::new(vec![ids(&j["forced_ids"])[i].clone()], &dev).unwrap();
        let qi = q_states
            .narrow(0, i, 1)
            .unwrap()
            .narrow(1, 0, q.len())
            .unwrap();
        let mut cache = model.decoder.start(&qi, None).unwrap();
        let logits = model
            .decoder
            .forward(&forced, &mut cache)
            .unwrap()
            .i(0)
            .unwrap();
        assert_close(
            &format!("{name} forced logits {i}"),
            &logits,
            &r[&format!("forced_logits_{i}")],
            TOL,
        );
    }
    let lens: Vec<usize> = qs.iter().map(Vec::len).collect();
    let bos = [cfg.text_config.bos_token_id];
    let eos = cfg.text_config.sep_token_id;
    for (beams, key) in [(1, "greedy_ids"), (3, "beam3_ids")] {
        let cache = model.decoder.start(&q_states, Some(&lens)).unwrap();
        let got = generate(&model.decoder, cache, &bos, 2, &params(&j, beams, eos)).unwrap();
        assert_eq!(got, ids(&j[key]), "{name} {key}");
    }
}

#[test]
fn blip_vqa_a_matches_transformers() {
    check_vqa("blip-vqa-a");
}

#[test]
fn blip_vqa_b_matches_transformers() {
    check_vqa("blip-vqa-b");
}

fn check_fusion(name: &str) {
    let dir = tiny(name);
    let cfg = FusionConfig::from_file(&dir.join("config.json")).unwrap();
    let head = FusionHead::new(
        load_weights(&dir.join("model.safetensors"), DType::F32, &Device::Cpu).unwrap(),
        &cfg,
    )
    .unwrap();
    let r = reference(name);
    let fused = head
        .forward(
            &r["image_embeds"],
            &r["text_embeds"],
            &r["image_mask"],
            &r["text_mask"],
        )
        .unwrap();
    assert_close(&format!("{name} fused"), &fused, &r["fused"], 1e-5);
    // Row 1 has only the image, row 2 only the text: the fused vector is that embedding.
    assert_close(
        "image only",
        &fused.i(1).unwrap(),
        &r["image_embeds"].i(1).unwrap(),
        1e-5,
    );
    assert_close(
        "text only",
        &fused.i(2).unwrap(),
        &r["text_embeds"].i(2).unwrap(),
        1e-5,
    );
}

#[test]
fn fusion_heads_match_reference() {
    check_fusion("fusion-vector");
    check_fusion("fusion-scalar");
}

#[test]
fn missing_weight_is_an_error() {
    let dir = tiny("clip-a");
    let cfg = ClipConfig::from_file(&dir.join("config.json")).unwrap();
    let mut tensors =
        candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    tensors.remove("text_model.encoder.layers.1.mlp.fc2.weight");
    let vb = candle_nn::VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    let err = ClipModel::new(vb, &cfg).unwrap_err().to_string();
    assert!(err.contains("fc2"), "{err}");
}

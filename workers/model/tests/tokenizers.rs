//! Real tokenizers through the runtime (`models/tools/make_tokenizer_fixtures.py`): OpenAI's
//! CLIP byte-level BPE (49,408 tokens, from `open_clip_torch` on PyPI) gives transformers'
//! ids on 238 varied strings, over-long ones cut to 77 tokens with the specials kept; and a
//! tiny random CLIP of that vocabulary with the legacy pooling of `openai/clip-*` configs
//! (`eos_token_id == 2`: the pooled position is the highest id, `<|endoftext|>`) matches
//! transformers' text embeddings, on texts that contain token id 2 (`#`) too.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;

use candle_core::{DType, Device, IndexOp};
use common::*;
use fusionstream_model::models::clip::{ClipConfig, ClipModel};
use fusionstream_model::nn::load_weights;
use fusionstream_model::tokenize::TextTokenizer;

const CONTEXT: usize = 77;
const START: u32 = 49406;
const END: u32 = 49407;

fn fixture(name: &str) -> PathBuf {
    manifest_dir()
        .join("../../models/fixtures/tokenizers")
        .join(name)
}

fn json(path: PathBuf) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn clip_tokenizer() -> TextTokenizer {
    TextTokenizer::from_file(&fixture("clip").join("tokenizer.json"), CONTEXT).unwrap()
}

#[test]
fn clip_bpe_gives_transformers_ids() {
    let tok = clip_tokenizer();
    let j = json(fixture("clip").join("strings.json"));
    let strings: Vec<&str> = j["strings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let want = ids(&j["input_ids"]);
    assert!(strings.len() >= 200, "{} strings", strings.len());
    let mut cut = 0;
    for (s, want) in strings.iter().zip(&want) {
        let got = tok.encode(s).unwrap();
        assert_eq!(&got, want, "{s:?}");
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
    let texts: Vec<Vec<u32>> = j["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| tok.encode(s.as_str().unwrap()).unwrap())
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

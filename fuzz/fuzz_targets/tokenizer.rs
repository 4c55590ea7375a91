//! The tokeniser input path on arbitrary text (the bundle's tokenizer, as the worker loads
//! it): never a panic, never more ids than the model's positions.
#![no_main]

use std::sync::OnceLock;

use fusionstream_model::tokenize::TextTokenizer;
use libfuzzer_sys::fuzz_target;

fn tokenizer() -> &'static TextTokenizer {
    static T: OnceLock<TextTokenizer> = OnceLock::new();
    T.get_or_init(|| {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../models/shapes/clip/tokenizer.json");
        TextTokenizer::from_file(&path, 48).expect("bundle tokenizer")
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let t = tokenizer();
    if let Ok(ids) = t.encode(&text) {
        assert!(ids.len() <= t.max_len());
    }
});

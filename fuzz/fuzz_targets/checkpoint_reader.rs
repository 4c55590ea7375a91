//! Checkpoint readers on arbitrary bytes: a model checkpoint (safetensors: the shared-tower
//! hash and the weight loader), a preprocessor config, and the worker's position
//! checkpoint. Never a panic: a bad file is an error.
#![no_main]

use std::io::Write as _;

use fusionstream_model::preprocess::ImageProcessorConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!(
        "fusionstream-fuzz-{}.safetensors",
        std::process::id()
    ));
    {
        let mut f = std::fs::File::create(&path).expect("temp file");
        f.write_all(data).expect("write");
    }
    let _ = fusionstream_model::nn::weights_hash(&path, "vision_model.");
    let _ = fusionstream_model::nn::load_weights(
        &path,
        candle_dtype(),
        &fusionstream_model::Device::Cpu,
    );
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ImageProcessorConfig::from_json(text);
    }
    let _ = serde_json::from_slice::<fusionstream_core::checkpoint::Checkpoint>(data);
});

fn candle_dtype() -> fusionstream_model::DType {
    fusionstream_model::DType::F32
}

//! Image decoding and preprocessing on arbitrary bytes, with the limits on, as the worker
//! runs them (JPEG DCT scaling, the bundle's CLIP preprocessor): never a panic, never an
//! allocation past the pixel limit, and accepted images come out at the model's size.
#![no_main]

use std::sync::OnceLock;

use fusionstream_model::preprocess::{
    decode_for, DecodeOptions, ImageLimits, ImageProcessorConfig, Preprocessor,
};
use libfuzzer_sys::fuzz_target;

fn processor() -> &'static Preprocessor {
    static P: OnceLock<Preprocessor> = OnceLock::new();
    P.get_or_init(|| {
        let cfg = ImageProcessorConfig::from_json(include_str!(
            "../../models/shapes/clip/preprocessor_config.json"
        ))
        .expect("bundle preprocessor config");
        Preprocessor::new(cfg)
    })
}

fuzz_target!(|data: &[u8]| {
    let opts = DecodeOptions {
        limits: ImageLimits {
            max_encoded_bytes: 1 << 20,
            max_pixels: 1 << 20,
        },
        jpeg_dct_scaling: true,
    };
    let p = processor();
    let need = |h: u32, w: u32| p.config().resized_size(h, w);
    if let Ok(img) = decode_for(data, &opts, Some(&need)) {
        assert!(u64::from(img.width) * u64::from(img.height) <= opts.limits.max_pixels);
        assert_eq!(img.data.len(), img.width as usize * img.height as usize * 3);
        if let Ok(px) = p.apply(&img) {
            assert_eq!(px.data.len(), 3 * px.height * px.width);
            assert!(px.data.iter().all(|v| v.is_finite()));
        }
    }
});

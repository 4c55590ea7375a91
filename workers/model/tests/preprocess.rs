//! Preprocessing parity with transformers' PIL-backend image processors on every accepted
//! format, and the typed refusal of every bad-image class.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use fusionstream_model::preprocess::{decode, ImageLimits, ImageProcessorConfig, Preprocessor};
use fusionstream_model::ImageError;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(tiny("preprocess").join(name)).unwrap()
}

fn processor(kind: &str) -> Preprocessor {
    let path = tiny("preprocess")
        .join(kind)
        .join("preprocessor_config.json");
    Preprocessor::new(ImageProcessorConfig::from_file(&path).unwrap())
}

/// (max, mean) absolute difference, in normalised units, against the transformers output.
fn diff(name: &str, kind: &str) -> (f32, f32) {
    let r = reference("preprocess");
    let want = &r[&format!("{kind}/{}", name.replace('.', "_"))];
    let img = decode(&fixture(name), &ImageLimits::default()).unwrap();
    let px = processor(kind).apply(&img).unwrap();
    assert_eq!(
        want.dims(),
        &[3, px.height, px.width],
        "{name} {kind} shape"
    );
    let want = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let max = max_abs_diff_vec(&px.data, &want);
    let mean = px
        .data
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .sum::<f32>()
        / want.len() as f32;
    (max, mean)
}

/// One 8-bit level after CLIP/BLIP normalisation is 1/255/0.26 ≈ 0.0151.
const LEVEL: f32 = 1.0 / 255.0 / 0.26;

fn check(name: &str, max_levels: f32, mean_levels: f32) {
    for kind in ["clip", "blip"] {
        let (max, mean) = diff(name, kind);
        eprintln!(
            "{name:>18} {kind}: max {:.2} levels, mean {:.3} levels",
            max / LEVEL,
            mean / LEVEL
        );
        assert!(
            max <= max_levels * LEVEL,
            "{name} {kind}: max diff {} levels",
            max / LEVEL
        );
        assert!(
            mean <= mean_levels * LEVEL,
            "{name} {kind}: mean diff {} levels",
            mean / LEVEL
        );
    }
}

#[test]
fn lossless_formats_match_pil_within_one_level() {
    for name in [
        "portrait.png",
        "landscape.png",
        "small.png",
        "rgba.png",
        "palette.png",
        "lossless.webp",
        "anim.gif",
        "image.bmp",
    ] {
        check(name, 1.0, 0.25);
    }
}

#[test]
fn sixteen_bit_png_matches_pil() {
    // PIL truncates 16-bit samples to their high byte; we round (x * 255 / 65535).
    check("rgb16.png", 2.0, 0.5);
}

#[test]
fn jpeg_variants_match_libjpeg() {
    for name in [
        "photo.jpg",
        "progressive.jpg",
        "gray.jpg",
        "exif_rotated.jpg",
    ] {
        check(name, 1.0, 0.05);
    }
    // 4:2:0 chroma: zune-jpeg and libjpeg-turbo upsample chroma differently.
    check("photo_420.jpg", 4.0, 0.5);
    check("cmyk.jpg", 1.0, 0.05);
}

#[test]
fn lossy_webp_matches_libwebp() {
    check("lossy.webp", 1.0, 0.05);
}

#[test]
fn exif_orientation_is_applied() {
    let img = decode(&fixture("exif_rotated.jpg"), &ImageLimits::default()).unwrap();
    // Stored 320x240 with orientation 6: displayed 240 wide, 320 high.
    assert_eq!((img.width, img.height), (240, 320));
}

#[test]
fn output_size_follows_transformers() {
    let cfg = ImageProcessorConfig::from_json(
        r#"{"image_processor_type":"CLIPImageProcessor","size":{"shortest_edge":224},"do_center_crop":true,"crop_size":{"height":224,"width":224}}"#,
    )
    .unwrap();
    assert_eq!(cfg.resized_size(480, 640), (224, 298));
    assert_eq!(cfg.resized_size(640, 480), (298, 224));
    assert_eq!(cfg.output_size(480, 640), (224, 224));
    // Legacy integer sizes: CLIP reads a shortest edge, others a square.
    let clip = ImageProcessorConfig::from_json(
        r#"{"image_processor_type":"CLIPImageProcessor","size":224}"#,
    )
    .unwrap();
    assert_eq!(clip.resized_size(100, 200), (224, 448));
    let blip = ImageProcessorConfig::from_json(
        r#"{"image_processor_type":"BlipImageProcessor","size":384}"#,
    )
    .unwrap();
    assert_eq!(blip.resized_size(100, 200), (384, 384));
}

fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
    let mut crc_input = kind.to_vec();
    crc_input.extend_from_slice(data);
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc_input);
    out.extend_from_slice(&crc32(&crc_input).to_be_bytes());
}

/// A PNG signature and IHDR chunk, then nothing.
fn png_header(width: u32, height: u32) -> Vec<u8> {
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut out, b"IHDR", &ihdr);
    out
}

/// A decompression bomb: 117 bytes that claim `width x height` RGB pixels, with an IDAT of
/// compressed zeros (zlib of 1,000 zero bytes; a real bomb would just be longer).
fn png_bomb(width: u32, height: u32) -> Vec<u8> {
    let mut out = png_header(width, height);
    chunk(
        &mut out,
        b"IDAT",
        &[
            120, 156, 99, 96, 24, 5, 163, 96, 20, 12, 119, 0, 0, 3, 232, 0, 1,
        ],
    );
    chunk(&mut out, b"IEND", b"");
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn bad_images_get_typed_errors() {
    let limits = ImageLimits {
        max_encoded_bytes: 100_000,
        max_pixels: 10_000_000,
    };
    let code = |bytes: &[u8]| match decode(bytes, &limits) {
        Ok(img) => format!("decoded {}x{}", img.width, img.height),
        Err(e) => e.reason_code().to_string(),
    };
    assert_eq!(code(b""), "image_empty");
    assert_eq!(code(&vec![0u8; 100_001]), "image_too_large");
    assert_eq!(
        code(b"this is not an image at all"),
        "image_unsupported_format"
    );
    // Decompression bomb: a 50,000 x 50,000 PNG is refused from its header.
    let bomb = png_bomb(50_000, 50_000);
    assert!(bomb.len() < 200);
    match decode(&bomb, &limits) {
        Err(ImageError::TooManyPixels {
            width: 50_000,
            height: 50_000,
            ..
        }) => {}
        Err(other) => panic!("expected too_many_pixels, got {other:?}"),
        Ok(_) => panic!("a 50,000 x 50,000 PNG was decoded"),
    }
    // Truncated files of real formats are corrupt.
    let jpg = fixture("photo.jpg");
    assert_eq!(code(&jpg[..jpg.len() / 3]), "image_corrupt");
    let png = fixture("portrait.png");
    assert_eq!(code(&png[..png.len() / 2]), "image_corrupt");
    assert_eq!(code(&png_header(64, 64)), "image_corrupt");
    // A format we do not accept (TIFF magic).
    assert_eq!(
        code(b"II*\x00\x08\x00\x00\x00rest"),
        "image_unsupported_format"
    );
}

/// JPEG decoded at a reduced DCT scale (what PIL's `draft()` does), then the normal resize:
/// faster, and still close to the full-resolution PIL path.
#[test]
fn dct_scaled_jpeg_decode_stays_close_to_pil() {
    use fusionstream_model::preprocess::{decode_for, DecodeOptions};
    let r = reference("preprocess");
    let opts = DecodeOptions::default();
    for (name, stored, expect_scaled) in [
        ("large.jpg", (640, 480), (160, 120)),
        ("large_rotated.jpg", (640, 480), (120, 160)),
    ] {
        let clip = processor("clip");
        let need = |h: u32, w: u32| clip.config().resized_size(h, w);
        let img = decode_for(&fixture(name), &opts, Some(&need)).unwrap();
        assert_eq!(
            (img.width, img.height),
            expect_scaled,
            "{name} (stored {stored:?})"
        );
        let px = clip.apply(&img).unwrap();
        let want = r[&format!("clip/{}", name.replace('.', "_"))]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let max = max_abs_diff_vec(&px.data, &want) / LEVEL;
        let mean = px
            .data
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .sum::<f32>()
            / want.len() as f32
            / LEVEL;
        eprintln!("{name:>18} dct-scaled clip: max {max:.2} levels, mean {mean:.3} levels");
        assert!(
            max <= 3.0 && mean <= 0.5,
            "{name}: max {max} mean {mean} levels"
        );
    }
    // No scaling when the source is less than 4x what the model needs (320x240 for 64x85).
    let clip = processor("clip");
    let need = |h: u32, w: u32| clip.config().resized_size(h, w);
    let img = decode_for(&fixture("photo.jpg"), &opts, Some(&need)).unwrap();
    assert_eq!((img.width, img.height), (320, 240));
}

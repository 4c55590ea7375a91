//! The photo packs against their packages' own PyTorch models
//! (`models/tools/make_photo_pack_fixtures.py`), on 29 images — generated ones of many sizes,
//! formats and modes, the example scenes and the example photos:
//! - `imagenet` (EfficientNet-Lite0): every one of the 1000 logits within 1e-4, the same
//!   top-5 classes in the same order, in batches of 8 and alone;
//! - `photo_embedding` (MobileNetV2): the 1280 features within 1e-4; the embeddings are them
//!   L2-normalised;
//! - what a user sees on the example photos: chelsea a cat, coffee an espresso, the rocket a
//!   missile or projectile.
//!
//! Needs the packs (`scripts/fetch-packs.sh`, `FUSIONSTREAM_PACKS`); the test command sets
//! `FUSIONSTREAM_REQUIRE_PACKS=1`, so that they fail, not skip, without them.
#![allow(clippy::unwrap_used)]

mod common;

use candle_core::Device;
use fusionstream_model::packs::classifier::ImageClassifier;
use fusionstream_model::packs::photo_embedding::PhotoEmbedder;
use fusionstream_model::preprocess::{decode_like_pillow, ImageLimits};

use common::{installed, pack_dir};

/// Each fixture image: its file and its top-5 classes.
type Images = Vec<(String, Vec<usize>)>;

/// The fixtures: (file, top-5 classes) per image, and a float32 array of `width` per image.
fn reference(array: &str, width: usize) -> (Images, Vec<Vec<f32>>) {
    let dir = common::manifest_dir().join("../../models/fixtures/photo_packs");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("reference.json")).unwrap()).unwrap();
    let images: Vec<(String, Vec<usize>)> = json["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let top5 = r["top5"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            (r["file"].as_str().unwrap().to_owned(), top5)
        })
        .collect();
    let bytes = std::fs::read(dir.join(array)).unwrap();
    let values: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(values.len(), images.len() * width, "{array}");
    let rows = values.chunks_exact(width).map(<[f32]>::to_vec).collect();
    (images, rows)
}

fn decode(file: &str) -> fusionstream_model::preprocess::RgbImage {
    let bytes = std::fs::read(common::manifest_dir().join("../..").join(file)).unwrap();
    decode_like_pillow(&bytes, &ImageLimits::default()).unwrap()
}

fn top5(row: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    idx.truncate(5);
    idx
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn imagenet_logits_match_the_reference_package() {
    let dir = pack_dir("imagenet");
    if !installed(&dir) {
        return;
    }
    let clf = ImageClassifier::load(&dir, &Device::Cpu).unwrap();
    assert_eq!(clf.labels().len(), 1000);
    let (images, want) = reference("imagenet_logits.f32", 1000);
    assert!(images.len() >= 20);
    let prepared: Vec<Vec<f32>> = images
        .iter()
        .map(|(f, _)| clf.prepare(&decode(f)))
        .collect();
    let mut got = Vec::new();
    for chunk in prepared.chunks(8) {
        got.extend(clf.logits(chunk).unwrap());
    }
    let mut worst = 0f32;
    for (((file, ref_top5), g), w) in images.iter().zip(&got).zip(&want) {
        let d = max_diff(g, w);
        worst = worst.max(d);
        assert!(d <= 1e-4, "{file}: logits differ by {d}");
        assert_eq!(&top5(g), ref_top5, "{file}: top-5");
    }
    // Alone, an image gets the logits it gets in a batch.
    let alone = clf.logits(&prepared[..1]).unwrap();
    assert!(max_diff(&alone[0], &got[0]) <= 1e-4);
    eprintln!(
        "imagenet: {} images, max |Δlogit| {worst:.2e}",
        images.len()
    );
}

#[test]
fn photo_embedding_features_match_the_reference_package() {
    let dir = pack_dir("photo_embedding");
    if !installed(&dir) {
        return;
    }
    let emb = PhotoEmbedder::load(&dir, &Device::Cpu).unwrap();
    assert_eq!(emb.dim(), 1280);
    let (images, want) = reference("photo_features.f32", 1280);
    let prepared: Vec<Vec<f32>> = images
        .iter()
        .map(|(f, _)| emb.prepare(&decode(f)))
        .collect();
    let mut worst = 0f32;
    for (chunk, (names, refs)) in prepared.chunks(8).zip(images.chunks(8).zip(want.chunks(8))) {
        let feats = emb.features(chunk).unwrap();
        let unit = emb.embed(chunk).unwrap();
        for (((f, u), w), (file, _)) in feats.iter().zip(&unit).zip(refs).zip(names) {
            let d = max_diff(f, w);
            worst = worst.max(d);
            assert!(d <= 1e-4, "{file}: features differ by {d}");
            let norm: f32 = f.iter().map(|v| v * v).sum::<f32>().sqrt();
            let scaled: Vec<f32> = f.iter().map(|v| v / norm).collect();
            assert!(
                max_diff(u, &scaled) <= 1e-6,
                "{file}: embedding is not the unit features"
            );
        }
    }
    eprintln!(
        "photo_embedding: {} images, max |Δ| {worst:.2e}",
        images.len()
    );
}

#[test]
fn example_photos_get_the_labels_a_person_would_give() {
    let dir = pack_dir("imagenet");
    if !installed(&dir) {
        return;
    }
    let clf = ImageClassifier::load(&dir, &Device::Cpu).unwrap();
    let cases = [
        (
            "examples/photos/chelsea.png",
            &["tabby", "tiger cat", "Egyptian cat"][..],
        ),
        ("examples/photos/coffee.png", &["espresso"][..]),
        (
            "examples/photos/rocket.jpg",
            &["missile", "projectile", "space shuttle"][..],
        ),
    ];
    for (file, expected) in cases {
        let x = clf.prepare(&decode(file));
        let top = clf.classify(&[x], 3, 0.0).unwrap().remove(0);
        assert!(
            expected.contains(&top[0].label.as_str()),
            "{file}: top label {:?} ({:.3}), expected one of {expected:?}",
            top[0].label,
            top[0].score
        );
        // Probabilities: ordered, in (0, 1].
        assert!(top.windows(2).all(|w| w[0].score >= w[1].score));
        assert!(top.iter().all(|l| l.score > 0.0 && l.score <= 1.0));
    }
}

//! The inference API on a bundle of tiny parts (`models/fixtures/tiny/bundle.toml`):
//! routing by modality, skipped tasks and their reasons, batch invariance, the model thread.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use fusionstream_model::runtime::TagSource;
use fusionstream_model::{
    Backend, FusionModel, InferOutput, Prepared, RuntimeOptions, SkipReason, Skipped, Task, TaskSet,
};

fn bundle() -> FusionModel {
    FusionModel::load(&tiny(""), &RuntimeOptions::default()).unwrap()
}

fn image(name: &str) -> Vec<u8> {
    std::fs::read(tiny("preprocess").join(name)).unwrap()
}

fn items(m: &FusionModel) -> Vec<Prepared> {
    let all = TaskSet::unnamed();
    let photo = image("photo.jpg");
    let png = image("portrait.png");
    vec![
        // image + text + question: everything
        m.prepare(
            Some(&photo),
            Some("a small red circle"),
            Some("what colour is the circle ?"),
            all,
        )
        .unwrap(),
        // image only
        m.prepare(Some(&png), None, None, all).unwrap(),
        // text only
        m.prepare(
            None,
            Some("two blue triangles to the left of a yellow star"),
            None,
            all,
        )
        .unwrap(),
        // image + question, answer only
        m.prepare(
            Some(&png),
            None,
            Some("how many shapes are there ?"),
            TaskSet::parse_list("answer").unwrap(),
        )
        .unwrap(),
    ]
}

fn skipped(o: &InferOutput) -> Vec<(Task, SkipReason)> {
    o.skipped
        .iter()
        .map(|Skipped { task, reason }| (*task, *reason))
        .collect()
}

#[test]
fn outputs_follow_the_modalities() {
    let m = bundle();
    let out = m.infer_batch(&items(&m)).unwrap();
    assert_eq!(out.len(), 4);

    let full = &out[0];
    assert_eq!(full.image_embedding.as_ref().unwrap().len(), 24);
    assert_eq!(full.text_embedding.as_ref().unwrap().len(), 24);
    assert_eq!(full.fused_embedding.as_ref().unwrap().len(), 24);
    let ms = full.match_score.unwrap();
    assert!((-1.0..=1.0).contains(&ms));
    assert!(full.caption.is_some() && full.answer.is_some());
    let tags = full.tags.as_ref().unwrap();
    assert_eq!(tags.len(), 4, "threshold 0 returns every label");
    assert!(tags.iter().all(|t| t.source == TagSource::Image));
    assert!(tags.windows(2).all(|w| w[0].score >= w[1].score));
    assert!((tags.iter().map(|t| t.score).sum::<f32>() - 1.0).abs() < 1e-4);
    assert!(full.skipped.is_empty(), "{:?}", full.skipped);

    let image_only = &out[1];
    assert!(image_only.image_embedding.is_some() && image_only.text_embedding.is_none());
    assert!(
        image_only.caption.is_some()
            && image_only.answer.is_none()
            && image_only.match_score.is_none()
    );
    // The fused embedding of an image alone is its image embedding.
    let d = max_abs_diff_vec(
        image_only.fused_embedding.as_ref().unwrap(),
        image_only.image_embedding.as_ref().unwrap(),
    );
    assert!(d < 1e-5, "fused != image embedding: {d}");
    assert_eq!(
        skipped(image_only),
        vec![
            (Task::Match, SkipReason::TextAbsent),
            (Task::Answer, SkipReason::QuestionAbsent)
        ]
    );

    let text_only = &out[2];
    assert!(text_only.image_embedding.is_none() && text_only.text_embedding.is_some());
    let d = max_abs_diff_vec(
        text_only.fused_embedding.as_ref().unwrap(),
        text_only.text_embedding.as_ref().unwrap(),
    );
    assert!(d < 1e-5, "fused != text embedding: {d}");
    assert!(text_only
        .tags
        .as_ref()
        .unwrap()
        .iter()
        .all(|t| t.source == TagSource::Text));
    assert_eq!(
        skipped(text_only),
        vec![
            (Task::Match, SkipReason::ImageAbsent),
            (Task::Caption, SkipReason::ImageAbsent),
            (Task::Answer, SkipReason::ImageAbsent)
        ]
    );

    let answer_only = &out[3];
    assert!(answer_only.answer.is_some());
    assert!(
        answer_only.image_embedding.is_none()
            && answer_only.caption.is_none()
            && answer_only.tags.is_none()
    );
    assert!(answer_only.skipped.is_empty());
}

fn assert_same(a: &InferOutput, b: &InferOutput) {
    let close = |x: &Option<Vec<f32>>, y: &Option<Vec<f32>>| match (x, y) {
        (Some(x), Some(y)) => max_abs_diff_vec(x, y) < 1e-5,
        (None, None) => true,
        _ => false,
    };
    assert!(close(&a.image_embedding, &b.image_embedding));
    assert!(close(&a.text_embedding, &b.text_embedding));
    assert!(close(&a.fused_embedding, &b.fused_embedding));
    assert_eq!(a.caption, b.caption);
    assert_eq!(a.answer, b.answer);
    assert_eq!(a.skipped, b.skipped);
    assert_eq!(a.tags.as_ref().map(Vec::len), b.tags.as_ref().map(Vec::len));
}

#[test]
fn a_mixed_batch_equals_items_one_by_one() {
    let m = bundle();
    let batch = items(&m);
    let together = m.infer_batch(&batch).unwrap();
    for (item, want) in batch.iter().zip(&together) {
        let alone = m.infer_batch(std::slice::from_ref(item)).unwrap();
        assert_same(&alone[0], want);
    }
}

#[test]
fn beam_search_through_the_api_is_batch_invariant() {
    let mut m = bundle();
    m.set_generation(6, 3);
    let batch = items(&m);
    let together = m.infer_batch(&batch).unwrap();
    for (item, want) in batch.iter().zip(&together) {
        assert_same(&m.infer_batch(std::slice::from_ref(item)).unwrap()[0], want);
    }
}

#[test]
fn the_model_is_a_backend_shared_or_not() {
    let m = bundle();
    let batch = items(&m);
    let direct = m.infer_batch(&batch).unwrap();
    let shared: std::sync::Arc<dyn Backend> = std::sync::Arc::new(m);
    assert_eq!(direct, Backend::infer_batch(&shared, &batch).unwrap());
}

#[test]
fn a_single_model_directory_is_a_bundle() {
    let m = FusionModel::load(&tiny("clip-a"), &RuntimeOptions::default()).unwrap();
    let item = m
        .prepare(
            Some(&image("photo.jpg")),
            Some("a red circle"),
            None,
            TaskSet::unnamed(),
        )
        .unwrap();
    let out = &m.infer_batch(&[item]).unwrap()[0];
    assert!(out.image_embedding.is_some() && out.match_score.is_some());
    assert_eq!(
        skipped(out),
        vec![
            (Task::Caption, SkipReason::ModelAbsent),
            (Task::Answer, SkipReason::ModelAbsent),
            (Task::Tag, SkipReason::ModelAbsent),
            (Task::Embed, SkipReason::ModelAbsent),
        ]
    );
    assert!(out.fused_embedding.is_none());
}

#[test]
fn a_siglip_directory_serves_as_the_dual_encoder() {
    let m = FusionModel::load(&tiny("siglip-a"), &RuntimeOptions::default()).unwrap();
    let item = m
        .prepare(
            Some(&image("photo.jpg")),
            Some("a red circle"),
            None,
            TaskSet::unnamed(),
        )
        .unwrap();
    let out = &m.infer_batch(&[item.clone(), item]).unwrap();
    assert_eq!(out[0].image_embedding.as_ref().unwrap().len(), 32);
    assert!(out[0].match_score.is_some());
    assert_eq!(out[0], out[1]);
}

#[test]
fn task_lists_parse_and_reject_unknown_names() {
    let t = TaskSet::parse_list("embed, caption").unwrap();
    assert!(t.contains(Task::Embed) && t.contains(Task::Caption) && !t.contains(Task::Tag));
    assert!(TaskSet::parse_list("embed,summarise")
        .unwrap_err()
        .contains("summarise"));
}

#[test]
fn bad_bundles_are_refused_with_the_reason() {
    let dir = std::env::temp_dir().join(format!("fs-bad-bundle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("bundle.toml"),
        "id = \"x\"\nversion = \"1\"\nunknown_key = 1\n",
    )
    .unwrap();
    let err = FusionModel::load(&dir, &RuntimeOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown_key"), "{err}");
    std::fs::write(
        dir.join("bundle.toml"),
        "id = \"x\"\nversion = \"1\"\n[clip]\npath = \"nowhere\"\n",
    )
    .unwrap();
    let err = FusionModel::load(&dir, &RuntimeOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("nowhere"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Reduced precision is selectable (the GPU path): the whole bundle runs in f16 on CPU, masks
/// included, and stays close to f32. (candle's CPU matmul has no bf16: refused with a reason.)
#[test]
fn half_precision_runs_and_stays_close_to_f32() {
    use fusionstream_model::DType;
    let f32_model = bundle();
    let want = f32_model.infer_batch(&items(&f32_model)).unwrap();
    let err = FusionModel::load(
        &tiny(""),
        &RuntimeOptions {
            dtype: DType::BF16,
            ..RuntimeOptions::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("bf16"), "{err}");
    for dtype in [DType::F16] {
        let opts = RuntimeOptions {
            dtype,
            ..RuntimeOptions::default()
        };
        let m = FusionModel::load(&tiny(""), &opts).unwrap();
        let got = m.infer_batch(&items(&m)).unwrap();
        for (g, w) in got.iter().zip(&want) {
            for (a, b) in [
                (&g.image_embedding, &w.image_embedding),
                (&g.text_embedding, &w.text_embedding),
            ] {
                if let (Some(a), Some(b)) = (a, b) {
                    let cos: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
                    assert!(cos > 0.99, "{dtype:?}: cosine to f32 {cos}");
                }
            }
            assert_eq!(g.caption.is_some(), w.caption.is_some());
            assert_eq!(g.skipped, w.skipped);
        }
    }
}

#[test]
fn warm_up_runs_every_part_of_the_bundle() {
    let m = bundle();
    let o = m.warm_up().unwrap();
    assert!(o.image_embedding.is_some() && o.text_embedding.is_some());
    assert!(o.fused_embedding.is_some() && o.match_score.is_some());
    assert!(o.caption.is_some() && o.answer.is_some() && o.tags.is_some());
    assert!(o.skipped.is_empty(), "{:?}", o.skipped);
}

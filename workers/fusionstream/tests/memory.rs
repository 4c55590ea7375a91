//! The memory bound (`fusionstream_engine::memory`): a worker flooded with events at its configured
//! limits — inline images filling `events.max_inline_image_bytes`, fetched images filling
//! `media.max_bytes`, images decoding to `image.max_pixels` — keeps its peak RSS under the
//! bound it derives from that configuration. The bound is a sum of worst cases, so this is a
//! generous ceiling; the figures are printed for the record.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::io::Cursor;
use std::process::Command;

use base64::Engine as _;
use image::{ImageFormat, Rgb, RgbImage};

const MAX_EVENT: usize = 1 << 20;
const MAX_INLINE: usize = 512 << 10;
const MAX_MEDIA: usize = 2 << 20;
const MAX_PIXELS: u32 = 4_000_000;

/// Noise compresses badly: an image of `w`×`h` noise is about as large as it gets.
fn noise(w: u32, h: u32, seed: u32) -> RgbImage {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    RgbImage::from_fn(w, h, |_, _| {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        Rgb([x as u8, (x >> 8) as u8, (x >> 16) as u8])
    })
}

fn encode(img: &RgbImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

#[test]
fn a_flood_at_the_limits_stays_under_the_memory_bound() {
    let tmp = tempfile::tempdir().unwrap();
    let media = tmp.path().join("media");
    std::fs::create_dir_all(&media).unwrap();
    // Fetched images at the size limit (noise PNG) and at the pixel limit (flat PNG: small
    // file, 4 MP decoded).
    let big = encode(&noise(800, 800, 1), ImageFormat::Png);
    assert!(
        big.len() <= MAX_MEDIA && big.len() > MAX_MEDIA * 8 / 10,
        "{}",
        big.len()
    );
    std::fs::write(media.join("big.png"), &big).unwrap();
    let flat = encode(
        &RgbImage::from_pixel(2000, 2000, Rgb([200, 30, 30])),
        ImageFormat::Png,
    );
    std::fs::write(media.join("flat.png"), &flat).unwrap();
    // Inline images at the inline limit.
    let inline = encode(&noise(400, 400, 2), ImageFormat::Png);
    assert!(
        inline.len() <= MAX_INLINE && inline.len() > MAX_INLINE * 8 / 10,
        "{}",
        inline.len()
    );
    let inline = base64::engine::general_purpose::STANDARD.encode(&inline);
    let n = 160;
    let mut body = String::new();
    for i in 0..n {
        let text = "a red circle ".repeat(1200);
        let mut e = serde_json::json!({
            "id": format!("ev-{i:04}"),
            "text": text,
            "tasks": if i % 8 == 0 { vec!["caption", "embed"] } else { vec!["embed", "tag"] },
        });
        match i % 3 {
            0 => e["image_base64"] = serde_json::json!(inline),
            1 => e["image"] = serde_json::json!("big.png"),
            _ => e["image"] = serde_json::json!("flat.png"),
        }
        let line = e.to_string();
        assert!(line.len() <= MAX_EVENT);
        body.push_str(&line);
        body.push('\n');
    }
    let events = tmp.path().join("events.jsonl");
    std::fs::write(&events, body).unwrap();
    let out = tmp.path().join("out");
    let run = Command::new(env!("CARGO_BIN_EXE_fusionstream"))
        .current_dir(common::root())
        .args(["run", "--json", "--events"])
        .arg(&events)
        .arg("--out")
        .arg(&out)
        .env("FUSIONSTREAM__TELEMETRY__PROGRESS", "never")
        .env("FUSIONSTREAM__MEDIA__ROOT", &media)
        .env(
            "FUSIONSTREAM__SOURCE__MAX_EVENT_BYTES",
            MAX_EVENT.to_string(),
        )
        .env(
            "FUSIONSTREAM__EVENTS__MAX_INLINE_IMAGE_BYTES",
            MAX_INLINE.to_string(),
        )
        .env("FUSIONSTREAM__MEDIA__MAX_BYTES", MAX_MEDIA.to_string())
        .env("FUSIONSTREAM__MEDIA__CONCURRENCY", "8")
        .env("FUSIONSTREAM__IMAGE__MAX_PIXELS", MAX_PIXELS.to_string())
        .env("FUSIONSTREAM__PIPELINE__MAX_IN_FLIGHT", "64")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let s: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(s["finished"], n, "{s}");
    assert_eq!(
        s["dead_lettered"], 0,
        "every event at the limits is served: {s}"
    );
    // Every text is far over the model's positions: used as cut, and flagged so.
    assert_eq!(s["degraded"], n, "{s}");
    assert_eq!(
        s["degraded_reasons"],
        serde_json::json!({ "text_truncated": n }),
        "{s}"
    );
    let peak = s["peak_rss_bytes"]
        .as_u64()
        .expect("Linux reports its peak RSS");
    let bound = s["memory_bound_bytes"].as_u64().unwrap();
    eprintln!(
        "{n} events at the limits: peak RSS {} MiB, bound {} MiB ({:.0}% of it)",
        peak >> 20,
        bound >> 20,
        100.0 * peak as f64 / bound as f64
    );
    assert!(
        peak <= bound,
        "peak RSS {peak} over the bound {bound}\n{stderr}"
    );
}

//! PDQ hashes per second, one thread, on decoded RGB pixels (decoding not included) of the
//! parity fixtures at three sizes; `benches/compare_pdq.sh` runs this beside the `pdqhash`
//! package (the reference C++) on the same pixels.
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fusionstream_model::pdq::{dihedral_rgb, hash_rgb};

/// The images `benches/pdq_python.py` times too.
pub const IMAGES: [&str; 3] = ["noise-64x64.png", "shapes-5.png", "shapes-7.png"];

fn bench(c: &mut Criterion) {
    // The running checkout's (cargo sets the variable), not the one the binary was built in.
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("../../models/fixtures/pdq/images");
    let mut group = c.benchmark_group("pdq");
    group.throughput(Throughput::Elements(1)).sample_size(20);
    for name in IMAGES {
        let img = image::open(dir.join(name)).unwrap().to_rgb8();
        let (w, h) = (img.width() as usize, img.height() as usize);
        group.bench_function(format!("hash/{w}x{h}"), |b| {
            b.iter(|| hash_rgb(img.as_raw(), w, h))
        });
        group.bench_function(format!("dihedral/{w}x{h}"), |b| {
            b.iter(|| dihedral_rgb(img.as_raw(), w, h))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! The configuration loader on arbitrary TOML (layered over the defaults, validated): never
//! a panic; a bad file is a list of errors.
#![no_main]

use std::io::Write as _;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("fusionstream-fuzz-{}.toml", std::process::id()));
    {
        let mut f = std::fs::File::create(&path).expect("temp file");
        f.write_all(data).expect("write");
    }
    let _ = fusionstream::config::Config::load(&[path], Vec::new());
});

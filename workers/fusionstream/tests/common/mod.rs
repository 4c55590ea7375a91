//! Shared helpers of the integration tests: repository paths and schema validators.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

pub mod in_process;
pub mod kafka;

use serde_json::Value;

/// Repository root, from this crate's folder as cargo gives it to the running test. Not
/// `env!`: a test binary that cargo reuses from a build of another checkout (a shared target
/// dir) would read that checkout's files, or fail where it is gone.
pub fn root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("../..")
}

/// The worker binary, run from the repository root without a progress line.
pub fn bin() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_fusionstream"));
    c.current_dir(root());
    c.env("FUSIONSTREAM__TELEMETRY__PROGRESS", "never");
    c
}

/// The shipped `shapes` bundle on candle, loaded once per test binary.
pub fn bundle_model() -> std::sync::Arc<fusionstream_model::FusionModel> {
    static MODEL: std::sync::OnceLock<std::sync::Arc<fusionstream_model::FusionModel>> =
        std::sync::OnceLock::new();
    MODEL
        .get_or_init(|| {
            std::sync::Arc::new(
                fusionstream_model::FusionModel::load(
                    &root().join("models/shapes"),
                    &fusionstream_model::RuntimeOptions::default(),
                )
                .expect("bundle loads"),
            )
        })
        .clone()
}

/// A schema of `schemas/v1` by file name, with `common.schema.json` registered.
pub fn validator(file: &str) -> jsonschema::Validator {
    let dir = root().join("schemas/v1");
    let read = |f: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join(f)).unwrap()).unwrap()
    };
    let common = read("common.schema.json");
    jsonschema::options()
        .should_validate_formats(true)
        .with_resource(
            "https://fusionstream.invalid/schemas/v1/common.schema.json",
            jsonschema::Resource::from_contents(common).unwrap(),
        )
        .build(&read(file))
        .unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// Schema file of an output stream.
pub fn schema_of_stream(stream: &str) -> &'static str {
    match stream {
        "captions" => "caption.schema.json",
        "answers" => "answer.schema.json",
        "embeddings" => "embedding.schema.json",
        "tags" => "tags.schema.json",
        "moderation" => "moderation.schema.json",
        "dead_letters" => "dead_letter.schema.json",
        other => panic!("unknown stream {other}"),
    }
}

/// Validation errors of `v`, as text.
pub fn errors(validator: &jsonschema::Validator, v: &Value) -> Vec<String> {
    validator.iter_errors(v).map(|e| e.to_string()).collect()
}

/// A port free right now on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on 127.0.0.1:port: (status, body), or None when nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http_request(port, "GET", path, None)
}

/// `POST path` with a JSON body on 127.0.0.1:port: (status, body).
pub fn http_post_json(port: u16, path: &str, body: &str) -> Option<(u16, String)> {
    http_request(port, "POST", path, Some(body))
}

fn http_request(port: u16, method: &str, path: &str, body: Option<&str>) -> Option<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .ok()?;
    let content = body.map_or(String::new(), |b| {
        format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        )
    });
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{content}Connection: close\r\n\r\n{}",
        body.unwrap_or_default()
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let status = raw.split_whitespace().nth(1)?.parse().ok()?;
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// The address of a dev service from the environment (`scripts/dev-services.sh env`), or
/// None (and the test skips) when the services are not up; with
/// `FUSIONSTREAM_REQUIRE_SERVICES=1` (the test command) a missing service fails instead.
pub fn service(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            assert!(
                std::env::var("FUSIONSTREAM_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "{var} is not set: run scripts/dev-services.sh up"
            );
            eprintln!("skipped: no {var} (run scripts/dev-services.sh up and export its env)");
            None
        }
    }
}

/// The dev MinIO's endpoint (see [`service`]).
pub fn s3_endpoint() -> Option<String> {
    service("FUSIONSTREAM_TEST_S3_ENDPOINT")
}

/// An S3 client for the dev MinIO (credentials from the standard AWS variables).
pub fn s3_client(endpoint: &str) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .http_client(fusionstream_io::s3::https_client())
        .endpoint_url(endpoint)
        .force_path_style(true)
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_default(),
            std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_default(),
            None,
            None,
            "test",
        ))
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// The records of one output stream of a local run (`out/<stream>.jsonl`; none if absent).
pub fn read_records(out: &Path, stream: &str) -> Vec<Value> {
    std::fs::read_to_string(out.join(format!("{stream}.jsonl")))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Whether the packs and ONNX Runtime are there (panics when required and missing).
pub fn packs_installed() -> bool {
    let dir = fusionstream_model::moderation::default_packs_dir();
    let ok = ["open_nsfw", "minilm", "ppocr"]
        .iter()
        .all(|p| dir.join(p).join("pack.toml").is_file())
        && std::env::var_os("ORT_DYLIB_PATH").is_some_and(|v| !v.is_empty());
    if !ok {
        assert!(
            std::env::var("FUSIONSTREAM_REQUIRE_PACKS").as_deref() != Ok("1"),
            "FUSIONSTREAM_REQUIRE_PACKS=1 but the packs under {} or ORT_DYLIB_PATH are \
             missing: run scripts/fetch-packs.sh",
            dir.display()
        );
        eprintln!("skipped: no packs (scripts/fetch-packs.sh) or no ORT_DYLIB_PATH");
    }
    ok
}

/// Records of one output file, validated against the stream's schema.
pub fn validated_records(out: &Path, stream: &str) -> Vec<Value> {
    let schema = validator(schema_of_stream(stream));
    let Ok(text) = std::fs::read_to_string(out.join(format!("{stream}.jsonl"))) else {
        return Vec::new();
    };
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let errs = errors(&schema, &v);
            assert!(errs.is_empty(), "{stream}: {errs:?} in {v}");
            v
        })
        .collect()
}

//! The configuration reference (`docs/configuration.md`), generated from the comments of
//! `config/default.toml`; a test keeps the two identical.

use super::DEFAULT_TOML;

/// The configuration reference: a table per section with every key, its default and its
/// meaning.
pub fn markdown_reference() -> String {
    let mut out = String::from(
        "# Configuration reference\n\n\
         Generated from `config/default.toml` by `fusionstream config --markdown` (a test keeps \
         the two identical). Layers, later wins: the embedded defaults, files given with \
         `--config`, then environment variables `FUSIONSTREAM__SECTION__KEY` (for example \
         `FUSIONSTREAM__ENCODE_LANE__MAX_WAIT=5ms`). Unknown keys are errors, every error is \
         reported at once, durations are written like `\"20ms\"`, secrets print as `***`.\n",
    );
    let mut comment: Vec<String> = Vec::new();
    let mut header_done = false;
    let mut section = String::new();
    for line in DEFAULT_TOML.lines() {
        let t = line.trim();
        if let Some(c) = t.strip_prefix('#') {
            comment.push(c.trim().to_owned());
        } else if t.is_empty() {
            if !header_done {
                // The file's own preamble is replaced by the text above.
                comment.clear();
                header_done = true;
            }
        } else if let Some(name) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            header_done = true;
            out.push_str(&format!("\n## `[{name}]`\n\n"));
            if !comment.is_empty() {
                out.push_str(&comment.join(" "));
                out.push_str("\n\n");
                comment.clear();
            }
            out.push_str("| key | default | meaning |\n|---|---|---|\n");
            section = name.to_owned();
        } else if let Some((key, value)) = t.split_once('=') {
            out.push_str(&format!(
                "| `{}.{}` | `{}` | {} |\n",
                section,
                key.trim(),
                value.trim().replace('|', "\\|"),
                comment.join(" ").replace('|', "\\|")
            ));
            comment.clear();
        }
    }
    out
}

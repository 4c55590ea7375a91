//! The event decoder on arbitrary payloads: never a panic, and an accepted event respects
//! the limits it was parsed with.
#![no_main]

use fusionstream_core::event::{parse_event, EventLimits, Input};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = EventLimits {
        max_event_bytes: 64 << 10,
        max_text_bytes: 1 << 10,
        max_question_bytes: 256,
        max_inline_image_bytes: 16 << 10,
    };
    if let Ok(e) = parse_event(data, &limits) {
        assert!(!e.id.is_empty());
        if let Input::Present(t) = &e.text {
            assert!(t.len() <= limits.max_text_bytes);
        }
        if let Input::Present(q) = &e.question {
            assert!(q.len() <= limits.max_question_bytes);
        }
    }
});

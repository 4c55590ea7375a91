//! The local adapters: events from JSONL files ([`LocalJsonl`], one partition per file)
//! resuming from the checkpoint file, the checkpoint file as committer
//! ([`LocalCheckpoint`], with the crash guard's marks beside the positions), and outputs to
//! one JSONL file per stream ([`JsonlSink`]).
//!
//! | file | owns |
//! |---|---|
//! | `source.rs` | reading a JSONL file or a folder of them, line by line, with positions |
//! | `checkpoint` | the checkpoint file format (atomic JSON), also the backfill's: re-exported from `fusionstream_core::checkpoint` |
//! | `sink.rs` | the JSONL output sink, durable on flush |
//! | `adapters.rs` | the source and committer ports over the above |
//! | `tail.rs` | [`FileFeed`]: a JSONL file another process appends to, tailed as a [`crate::ports::Feed`] |

mod adapters;
pub use fusionstream_core::checkpoint;
pub mod sink;
pub mod source;
mod tail;

pub use adapters::{LocalCheckpoint, LocalJsonl};
pub use checkpoint::{BackfillPosition, Checkpoint};
pub use sink::JsonlSink;
pub use tail::FileFeed;

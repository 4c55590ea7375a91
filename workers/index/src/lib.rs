//! fusionstream's live vector index: the image, text and fused embeddings of the stream in
//! HNSW graphs ([usearch](https://github.com/unum-cloud/USearch)), keyed by event id, saved
//! as atomic snapshots that carry the source positions they hold.
//!
//! No I/O but the snapshot folder; the indexer that feeds it (Kafka or a local embeddings
//! file), the `search` command and the HTTP endpoint live in the binary crate.
//!
//! | module | owns |
//! |---|---|
//! | [`vectors`] | the index: kinds, storage, HNSW parameters, upsert by event id, search |
//! | [`snapshot`] | snapshot folders: atomic save, load, the positions beside the vectors |
//! | [`exact`] | exact search and recall@k (the reference), seeded random unit vectors |

pub mod exact;
pub mod snapshot;
pub mod vectors;

pub use snapshot::{SnapshotDir, SnapshotMeta};
pub use vectors::{Added, Hit, Kind, Params, Storage, VectorIndex};

/// What can go wrong with an index.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// A vector of the wrong dimension for its kind.
    #[error("{kind} vectors have {expected} dimensions, this one has {got}")]
    Dimension {
        /// The kind.
        kind: &'static str,
        /// The kind's dimension.
        expected: usize,
        /// The vector's.
        got: usize,
    },
    /// A value or file that is not what it should be.
    #[error("{0}")]
    Invalid(String),
    /// The snapshot folder.
    #[error("{0}")]
    Io(String),
    /// usearch refused an operation (out of memory, a damaged graph file).
    #[error("usearch: {0}")]
    Usearch(String),
}

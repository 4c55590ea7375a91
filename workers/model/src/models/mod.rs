//! Architectures, one file each, named after the Hugging Face classes they load.

pub mod blip;
pub mod clip;
pub mod fusion;
pub mod siglip;

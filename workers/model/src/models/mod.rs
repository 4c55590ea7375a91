//! Architectures, one file each, named after the Hugging Face classes they load.

pub mod bert;
pub mod blip;
pub mod clip;
pub mod fusion;
pub mod siglip;

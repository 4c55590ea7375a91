//! Architectures, one file each, named after the Hugging Face classes they load (or, for the
//! packs' convnets, after the architecture), and `convnet.rs`, the convnets' shared blocks.

pub mod bert;
pub mod blip;
pub mod clip;
pub(crate) mod convnet;
pub mod efficientnet_lite;
pub mod fusion;
pub mod mobilenet_v2;
pub mod siglip;

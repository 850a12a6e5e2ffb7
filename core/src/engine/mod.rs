//! The GPU engine: a model's weights on a device ([`GpuModel`]) and the per-layer TransPoint
//! scheduler that runs sequences on it ([`GpuSession`]), built on the kernels of [`crate::gpu`].

mod attention_cache;
mod layer_recipes;
mod model;
mod session;

pub use model::{EngineOptions, GpuModel};
pub use session::{GpuSession, GpuState};

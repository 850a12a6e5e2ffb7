//! transmamba: inference for TransMamba (and Mamba2) language models.
//!
//! - [`config`] and [`model`] load a model per MODEL.md (three config dialects, safetensors);
//! - [`schedule`] names and resolves TransPoint schedules;
//! - [`cpu`] is the reference backend (the oracle for the GPU kernels);
//! - [`memory`] accounts for the caches a schedule needs.

pub mod config;
pub mod cpu;
pub mod engine;
pub mod engine_choice;
pub mod error;
pub mod gguf;
pub mod gpu;
mod huge_pages;
pub mod memory;
pub mod model;
pub mod npy;
pub mod perplexity;
pub mod quant;
pub mod sampling;
pub mod schedule;
pub mod session;
pub mod synthetic;
pub mod text;
pub mod tokens;
pub mod weight_format;

pub use config::{Dialect, ModelConfig};
pub use error::{Error, Result};
pub use model::Model;
pub use schedule::{Schedule, ScheduleSpec, TransPoint};
pub use weight_format::WeightFormat;

/// Which logits a forward call returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// One row per fed token: `[T, V]`.
    All,
    /// Only the last fed token's row: `[V]` (what generation needs).
    Last,
}

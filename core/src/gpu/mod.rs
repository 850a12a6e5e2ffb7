//! WebGPU kernel layer: device context, command recording, weights and one op per kernel.
//!
//! Usage: build a [`GpuContext`], upload weights ([`GpuMatrix`], [`GpuContext::upload_f32`]),
//! record ops into a [`Recorder`], [`Recorder::submit`] once, then read results back with
//! [`GpuContext::read_f32`].

pub mod context;
pub mod error;
pub mod ops;
pub mod plan;
pub mod recorder;
pub mod shaders;
pub mod weights;

pub use context::{GpuBuffer, GpuContext, GpuMemory, GpuOptions, ProfileClock};
pub use error::{GpuError, GpuResult};
pub use ops::*;
pub use plan::{DeviceCaps, KernelChoice, KernelPlan, PlanStep};
pub use recorder::Recorder;
pub use weights::{GpuMatrix, MatBlock, WeightFormat};

//! Errors of the GPU layer.

/// Everything that can go wrong in the GPU layer at run time.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("no GPU adapter found (backends tried: {backends}): {reason}")]
    NoAdapter { backends: String, reason: String },
    #[error("GPU device request failed: {0}")]
    RequestDevice(String),
    #[error("{op}: shape mismatch: {detail}")]
    Shape { op: &'static str, detail: String },
    #[error("{what}: {bytes} bytes exceeds the device limit of {limit} bytes")]
    TooLarge {
        what: String,
        bytes: u64,
        limit: u64,
    },
    #[error("{label}: the weight {value} (element {index}) is outside f16's range (±65504) and would become infinite: store the weights in f32 (--weights f32)")]
    F16Overflow {
        label: String,
        index: usize,
        value: f32,
    },
    #[error("GPU device lost: {0}")]
    DeviceLost(String),
    #[error("GPU buffer map failed: {0}")]
    Map(String),
    #[error("GPU out of memory: {0}")]
    OutOfMemory(String),
    #[error("GPU validation error: {0}")]
    Validation(String),
    #[error("not supported by this GPU layer: {0}")]
    Unsupported(String),
}

pub type GpuResult<T> = Result<T, GpuError>;

/// Shape check helper: `Err(Shape)` naming `op` unless `cond`.
pub(crate) fn ensure(
    op: &'static str,
    cond: bool,
    detail: impl FnOnce() -> String,
) -> GpuResult<()> {
    if cond {
        Ok(())
    } else {
        Err(GpuError::Shape {
            op,
            detail: detail(),
        })
    }
}

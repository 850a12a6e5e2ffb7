use crate::gpu::context::{GpuBuffer, Kernel};
use crate::gpu::recorder::{grid_groups, Recorder};
use crate::gpu::GpuResult;

use super::{kernel_params, words};
use super::{need_len, View};

kernel_params! {
    /// The params of rms_norm.wgsl, rms_norm_vec4.wgsl.
    pub(crate) struct RmsNormParams {
        rows: u32,
        width: u32,
        eps: f32,
        x_stride: u32,
        x_off: u32,
        out_stride: u32,
        out_off: u32,
    }
}

const K: Kernel = Kernel {
    shader: "rms_norm",
    entry: "main",
    access: "rrw",
    spec: "",
};
/// `K` with vec4 accesses (width, strides and offsets multiples of 4).
const K_VEC4: Kernel = Kernel {
    shader: "rms_norm_vec4",
    entry: "main",
    access: "rrw",
    spec: "",
};

/// `out[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * w` for `rows` rows of `width`.
/// `out` must be a different buffer from `x`.
pub fn rms_norm(
    rec: &mut Recorder,
    rows: u32,
    width: u32,
    x: View,
    w: &GpuBuffer,
    out: View,
    eps: f32,
) -> GpuResult<()> {
    const OP: &str = "rms_norm";
    x.check(OP, "x", rows, width)?;
    out.check(OP, "out", rows, width)?;
    need_len(OP, "weight", w, width as u64)?;
    let params = RmsNormParams {
        rows,
        width,
        eps,
        x_stride: x.stride,
        x_off: x.offset,
        out_stride: out.stride,
        out_off: out.offset,
    };
    let aligned = width.is_multiple_of(4) && x.vec4_aligned() && out.vec4_aligned();
    let k = if aligned { &K_VEC4 } else { &K };
    rec.dispatch(
        k,
        words(&params),
        &[x.buf, w, out.buf],
        grid_groups(rows as u64),
    )
}

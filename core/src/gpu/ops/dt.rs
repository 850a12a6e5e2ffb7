use crate::gpu::context::{GpuBuffer, Kernel};
use crate::gpu::recorder::{grid64, Recorder};
use crate::gpu::GpuResult;

use super::{kernel_params, words};
use super::{need_len, View};

kernel_params! {
    /// The params of dt.wgsl.
    pub(crate) struct DtParams {
        t: u32,
        h: u32,
        in_stride: u32,
        in_off: u32,
        out_stride: u32,
        out_off: u32,
        lo: f32,
        hi: f32,
    }
}

const K: Kernel = Kernel {
    shader: "dt",
    entry: "main",
    access: "rrw",
    spec: "",
};

/// The dt clamp limits as the kernels take them: `hi` = +inf (or NaN) as `f32::MAX`, `lo` = NaN
/// as 0.
pub(crate) fn finite_limits(lo: f32, hi: f32) -> (f32, f32) {
    let hi = if hi.is_nan() || hi > f32::MAX {
        f32::MAX
    } else {
        hi
    };
    let lo = if lo.is_nan() { 0.0 } else { lo.max(-f32::MAX) };
    (lo, hi)
}

/// `out[t, h] = clamp(softplus(raw[t, h] + bias[h]), lo, hi)`; `hi` may be `f32::INFINITY`.
pub fn dt_softplus(
    rec: &mut Recorder,
    rows: u32,
    heads: u32,
    raw: View,
    bias: &GpuBuffer,
    out: View,
    lo: f32,
    hi: f32,
) -> GpuResult<()> {
    const OP: &str = "dt_softplus";
    raw.check(OP, "raw", rows, heads)?;
    out.check(OP, "out", rows, heads)?;
    need_len(OP, "dt_bias", bias, heads as u64)?;
    let (lo, hi) = finite_limits(lo, hi);
    let params = DtParams {
        t: rows,
        h: heads,
        in_stride: raw.stride,
        in_off: raw.offset,
        out_stride: out.stride,
        out_off: out.offset,
        lo,
        hi,
    };
    rec.dispatch(
        &K,
        words(&params),
        &[raw.buf, bias, out.buf],
        grid64(rows as u64 * heads as u64),
    )
}

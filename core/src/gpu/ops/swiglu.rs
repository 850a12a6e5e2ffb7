use super::{kernel_params, words};
use crate::gpu::context::Kernel;
use crate::gpu::recorder::{grid64, Recorder};
use crate::gpu::GpuResult;

use super::View;

kernel_params! {
    /// The params of swiglu.wgsl.
    pub(crate) struct SwigluParams {
        t: u32,
        m: u32,
        in_stride: u32,
        in_off: u32,
        out_stride: u32,
        out_off: u32,
    }
}

const K: Kernel = Kernel {
    shader: "swiglu",
    entry: "main",
    access: "rw",
    spec: "",
};

/// `out[t, m] = v[t, m] * silu(g[t, m])` where an `input` row is `[v (M) | g (M)]`.
pub fn swiglu(rec: &mut Recorder, rows: u32, m: u32, input: View, out: View) -> GpuResult<()> {
    const OP: &str = "swiglu";
    input.check(OP, "input", rows, 2 * m)?;
    out.check(OP, "out", rows, m)?;
    let params = SwigluParams {
        t: rows,
        m,
        in_stride: input.stride,
        in_off: input.offset,
        out_stride: out.stride,
        out_off: out.offset,
    };
    rec.dispatch(
        &K,
        words(&params),
        &[input.buf, out.buf],
        grid64(rows as u64 * m as u64),
    )
}

use crate::gpu::context::Kernel;
use crate::gpu::recorder::{grid64, Recorder};
use crate::gpu::GpuResult;

use super::View;

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
    let params = [rows, m, input.stride, input.offset, out.stride, out.offset];
    rec.dispatch(
        &K,
        &params,
        &[input.buf, out.buf],
        grid64(rows as u64 * m as u64),
    )
}

use crate::gpu::context::{GpuBuffer, Kernel};
use crate::gpu::recorder::Recorder;
use crate::gpu::weights::GpuMatrix;
use crate::gpu::GpuResult;

use super::{need_len, View};

const TILED: Kernel = Kernel {
    shader: "matmul",
    entry: "main",
    access: "rrrw",
    spec: "",
};
const MATVEC: Kernel = Kernel {
    shader: "matvec",
    entry: "main",
    access: "rrrw",
    spec: "",
};

/// Below this many rows [`matmul`] uses the matvec kernel.
pub const MATVEC_MAX_ROWS: u32 = 4;

/// Which kernel [`matmul_using`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulKernel {
    /// MatVec below [`MATVEC_MAX_ROWS`] rows, else Tiled.
    Auto,
    /// 4 rows x 4 outputs per invocation (prefill).
    Tiled,
    /// 1 row x 4 outputs per invocation (decode).
    MatVec,
}

/// `y[t, o] (+)= sum_k x[t, k] * w[o, k] (+ bias[o])` for `rows` rows; `w` is [out, in].
/// With `accumulate` the product is added to `y` (fused residual add). `x` and `y` must be
/// different buffers.
pub fn matmul(
    rec: &mut Recorder,
    rows: u32,
    x: View,
    w: &GpuMatrix,
    bias: Option<&GpuBuffer>,
    y: View,
    accumulate: bool,
) -> GpuResult<()> {
    matmul_using(rec, rows, x, w, bias, y, accumulate, MatmulKernel::Auto)
}

/// [`matmul`] with an explicit kernel choice (benchmarks, tests).
pub fn matmul_using(
    rec: &mut Recorder,
    rows: u32,
    x: View,
    w: &GpuMatrix,
    bias: Option<&GpuBuffer>,
    y: View,
    accumulate: bool,
    kernel: MatmulKernel,
) -> GpuResult<()> {
    const OP: &str = "matmul";
    x.check(OP, "x", rows, w.cols as u32)?;
    y.check(OP, "y", rows, w.rows as u32)?;
    if let Some(b) = bias {
        need_len(OP, "bias", b, w.rows as u64)?;
    }
    if rows == 0 {
        return Ok(());
    }
    let dummy = rec.ctx().dummy().clone();
    let flags = bias.is_some() as u32 | (accumulate as u32) << 1;
    let matvec = match kernel {
        MatmulKernel::Auto => rows < MATVEC_MAX_ROWS,
        MatmulKernel::Tiled => false,
        MatmulKernel::MatVec => true,
    };
    for b in &w.blocks {
        let quads = (b.ldw / 4) as u32;
        let params = [
            rows,
            w.cols as u32,
            b.rows as u32,
            b.row_start as u32,
            x.stride,
            x.offset,
            y.stride,
            y.offset,
            flags,
            quads,
        ];
        let bufs = [x.buf, &b.buffer, bias.unwrap_or(&dummy), y.buf];
        if matvec {
            rec.dispatch(&MATVEC, &params, &bufs, [quads.div_ceil(64), rows, 1])?;
        } else {
            let g = [quads.div_ceil(8), rows.div_ceil(4).div_ceil(8), 1];
            rec.dispatch(&TILED, &params, &bufs, g)?;
        }
    }
    Ok(())
}

use crate::gpu::context::{GpuBuffer, Kernel};
use crate::gpu::recorder::{grid_groups, Recorder};
use crate::gpu::weights::GpuMatrix;
use crate::gpu::GpuResult;

use super::{need_len, View};

const TILED: Kernel = Kernel {
    shader: "matmul",
    entry: "main",
    access: "rrrw",
    spec: "",
};
const TILED4: Kernel = Kernel {
    shader: "matmul_vec4",
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
    Auto,
    /// 4x4 register-blocked tiles (prefill); vec4 loads when rows are 16-byte aligned.
    Tiled,
    /// `Tiled` with scalar loads always (benchmarks).
    TiledScalar,
    /// Workgroup-reduced dot products (decode).
    MatVec,
}

/// `y[t, o] (+)= sum_k x[t, k] * w[o, k] (+ bias[o])` for `rows` rows; `w` is [out, in].
/// With `accumulate` the product is added to `y` (fused residual add).
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
    let dummy = rec.ctx().dummy().clone();
    let flags = bias.is_some() as u32 | (accumulate as u32) << 1;
    let matvec = match kernel {
        MatmulKernel::Auto => rows < MATVEC_MAX_ROWS,
        MatmulKernel::Tiled | MatmulKernel::TiledScalar => false,
        MatmulKernel::MatVec => true,
    };
    // vec4 loads need 16-byte aligned rows of X and W.
    let aligned = kernel != MatmulKernel::TiledScalar
        && w.cols % 4 == 0
        && (x.stride % 4 == 0 || rows == 1)
        && x.offset % 4 == 0;
    for b in &w.blocks {
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
        ];
        let bufs = [x.buf, &b.buffer, bias.unwrap_or(&dummy), y.buf];
        if matvec {
            let mut g = grid_groups((b.rows as u64).div_ceil(4));
            g[2] = rows;
            rec.dispatch(&MATVEC, &params, &bufs, g)?;
        } else {
            let g = [
                (b.rows as u32).div_ceil(4).div_ceil(8),
                rows.div_ceil(4).div_ceil(8),
                1,
            ];
            if aligned {
                let p4 = [
                    rows,
                    w.cols as u32 / 4,
                    b.rows as u32,
                    b.row_start as u32,
                    x.stride / 4,
                    x.offset / 4,
                    y.stride,
                    y.offset,
                    flags,
                ];
                rec.dispatch(&TILED4, &p4, &bufs, g)?;
            } else {
                rec.dispatch(&TILED, &params, &bufs, g)?;
            }
        }
    }
    Ok(())
}

use crate::gpu::context::{GpuBuffer, Kernel};
use crate::gpu::recorder::Recorder;
use crate::gpu::weights::GpuMatrix;
use crate::gpu::GpuResult;

use super::{need_len, View};

const TILED: Kernel = Kernel {
    shader: "matmul",
    entry: "main",
    access: "rtrw",
    spec: "",
};
const MATVEC: Kernel = Kernel {
    shader: "matvec",
    entry: "main",
    access: "rtrw",
    spec: "",
};
const TILED_SG: Kernel = Kernel {
    shader: "matmul_sg",
    entry: "main",
    access: "rtrw",
    spec: "",
};
const MATVEC_SG: Kernel = Kernel {
    shader: "matvec_sg",
    entry: "main",
    access: "rtrw",
    spec: "",
};
/// Rows per subgroup tile of matmul_sg / matvec_sg (8 lanes x RTL rows).
const SG_ROWS: u32 = 32;
/// Outputs per subgroup tile (8 lanes x 4 loads).
const SG_OUTS: u32 = 32;

/// Below this many rows [`matmul`] uses the matvec kernel.
pub const MATVEC_MAX_ROWS: u32 = 8;

/// Which kernel [`matmul_using`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulKernel {
    /// MatVec below [`MATVEC_MAX_ROWS`] rows, else Tiled.
    Auto,
    /// Prefill: with 8-wide subgroups ([`crate::gpu::GpuContext::has_subgroup8`], lavapipe) a subgroup
    /// computes 32 rows x 32 outputs, lanes sharing W loads by subgroupBroadcast (matmul_sg);
    /// otherwise [`MatmulKernel::TiledPortable`].
    Tiled,
    /// Decode: 1 row x 32 outputs per subgroup, X shared by broadcast (matvec_sg), else
    /// [`MatmulKernel::MatVecPortable`].
    MatVec,
    /// 4 rows x 4 outputs per invocation, no subgroups (matmul.wgsl).
    TiledPortable,
    /// 1 row x 4 outputs per invocation, no subgroups (matvec.wgsl).
    MatVecPortable,
}

// Why this layout and these kernels (measured on lavapipe, Mesa 22.3, llvmpipe 8-wide, same
// run): a storage-buffer load inside a loop costs ~8-15x a texel fetch or uniform-buffer load
// (it is a per-lane loop, the same for lane-uniform addresses and for workgroup memory), while
// FMAs, private arrays and subgroupBroadcast are nearly free. So W lives in an rgba32float
// texture (weights.rs) and the kernels maximise MACs per storage load of X: matmul_sg lets each
// lane own 4 X rows and take W from the other lanes by broadcast (128 MACs per 16 X loads and
// 4 texel fetches); matvec_sg loads each X vec4 once per subgroup and broadcasts it, so its loop
// is nearly all texel fetches. Measured: 512x768x1536 prefill ~9.5 GFLOP/s (old kernel ~1),
// 768->3352 decode ~4.5-5 GB/s of weights (old ~0.7). See core/tests/gpu_kernels.rs design_*.

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
    let sg = rec.ctx().has_subgroup8();
    let kernel = match kernel {
        MatmulKernel::Auto if rows < MATVEC_MAX_ROWS => MatmulKernel::MatVec,
        MatmulKernel::Auto => MatmulKernel::Tiled,
        k => k,
    };
    let kernel = match kernel {
        MatmulKernel::Tiled if !sg => MatmulKernel::TiledPortable,
        MatmulKernel::MatVec if !sg => MatmulKernel::MatVecPortable,
        k => k,
    };
    for b in &w.blocks {
        let ldk4 = (b.ldk / 4) as u32;
        let quads = (b.rows as u32).div_ceil(4);
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
            ldk4,
        ];
        let bufs = [x.buf, &b.buffer, bias.unwrap_or(&dummy), y.buf];
        let outs = b.rows as u32;
        match kernel {
            MatmulKernel::Tiled => {
                let g = [outs.div_ceil(SG_OUTS), rows.div_ceil(SG_ROWS), 1];
                rec.dispatch(&TILED_SG, &params, &bufs, g)?;
            }
            MatmulKernel::MatVec => {
                let g = [outs.div_ceil(SG_OUTS), rows, 1];
                rec.dispatch(&MATVEC_SG, &params, &bufs, g)?;
            }
            MatmulKernel::MatVecPortable => {
                rec.dispatch(&MATVEC, &params, &bufs, [quads.div_ceil(64), rows, 1])?;
            }
            _ => {
                let g = [quads.div_ceil(64), rows.div_ceil(4), 1];
                rec.dispatch(&TILED, &params, &bufs, g)?;
            }
        }
    }
    Ok(())
}

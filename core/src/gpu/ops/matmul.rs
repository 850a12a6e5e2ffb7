use crate::gpu::context::{GpuBuffer, GpuContext, Kernel, UNIFORM_STAGING_BYTES};
use crate::gpu::error::ensure;
use crate::gpu::plan::KernelPlan;
use crate::gpu::recorder::Recorder;
use crate::gpu::weights::{GpuMatrix, MatBlock, QuantRows, WeightFormat};
use crate::gpu::{GpuError, GpuResult};
use bytemuck::{Pod, Zeroable};

use super::rows_to_texture::{gated_rows_to_texture, rows_to_texture, GateInputs};
use super::{kernel_params, need_len, words, View};

const TILED: Kernel = Kernel {
    shader: "matmul",
    entry: "main",
    access: "rtrw",
    spec: "",
};
const MATVEC: Kernel = Kernel {
    shader: "matvec",
    entry: "main",
    access: "xtrw",
    spec: "",
};
/// `MATVEC` multiplying by the RMS-normalised X (see [`matvec_normed`]).
const MATVEC_NORM: Kernel = Kernel {
    spec: "NORM=1",
    ..MATVEC
};
/// `MATVEC_NORM` for one in_proj row plus the decode conv step (see [`ConvStep`]).
const MATVEC_NORM_CONV: Kernel = Kernel {
    entry: "main_conv",
    access: "xtrwrrww",
    ..MATVEC_NORM
};
const MATVEC_F16: Kernel = Kernel {
    shader: "matvec_f16",
    entry: "main",
    access: "utrw",
    spec: "",
};
/// Decode over q4_0 blocks: whole code texels, X's block texels shared by a lane's 8 rows.
const MATVEC_Q4_0: Kernel = Kernel {
    shader: "matvec_quant",
    entry: "main",
    access: "xtrw",
    spec: "",
};
/// `MATVEC_Q4_0` for q8_0 blocks.
const MATVEC_Q8_0: Kernel = Kernel {
    spec: "Q8=1",
    ..MATVEC_Q4_0
};
const TILED_SG: Kernel = Kernel {
    shader: "matmul_sg",
    entry: "main",
    access: "rtrw",
    spec: "",
};
const TILED_SG_XTEX: Kernel = Kernel {
    shader: "matmul_xtex_sg",
    entry: "main",
    access: "xtrw",
    spec: "",
};
/// `TILED_SG_XTEX` multiplying by the RMS-normalised X (see [`matmul_normed`]).
const TILED_SG_XTEX_NORM: Kernel = Kernel {
    spec: "NORM=1",
    ..TILED_SG_XTEX
};
/// The `gpu` plan's decode product, workgroup-memory reductions (adapters without subgroups).
/// Bindings: X (storage, read in place), W, bias, Y, then 5-8 the conv step's (dummies
/// without it) and 9 the norm weight (NORM = 2; a dummy otherwise), all declared by every
/// entry point.
const SPLIT_K: Kernel = Kernel {
    shader: "matvec_split_k",
    entry: "main",
    access: SPLIT_K_ACCESS,
    spec: "",
};
const SPLIT_K_ACCESS: &str = "rtrwrrrrr";
const SPLIT_K_CONV_ACCESS: &str = "rtrwrrwwr";
/// `SPLIT_K` reduced by subgroups (any width).
const SPLIT_K_SG: Kernel = Kernel {
    shader: "matvec_split_k#SUBGROUPS",
    ..SPLIT_K
};
/// The split-K kernels with the norm (weight folded into W: `NORM=1`; weight bound beside X:
/// `NORM=2`) and the conv step, indexed `[subgroups][norm - 1][conv]`.
const SPLIT_K_NORMED: [[[Kernel; 2]; 2]; 2] = {
    const fn k(base: Kernel, spec: &'static str, conv: bool) -> Kernel {
        Kernel {
            spec,
            entry: if conv { "main_conv" } else { "main" },
            access: if conv {
                SPLIT_K_CONV_ACCESS
            } else {
                SPLIT_K_ACCESS
            },
            ..base
        }
    }
    [
        [
            [k(SPLIT_K, "NORM=1", false), k(SPLIT_K, "NORM=1", true)],
            [k(SPLIT_K, "NORM=2", false), k(SPLIT_K, "NORM=2", true)],
        ],
        [
            [
                k(SPLIT_K_SG, "NORM=1", false),
                k(SPLIT_K_SG, "NORM=1", true),
            ],
            [
                k(SPLIT_K_SG, "NORM=2", false),
                k(SPLIT_K_SG, "NORM=2", true),
            ],
        ],
    ]
};
/// Outputs per matvec_split_k workgroup, and the most norm groups it takes.
const SPLIT_K_OUTS: u32 = 8;
/// The `gpu` plan's prefill product: 64 x 64 tiles in workgroup memory.
const TILES: Kernel = Kernel {
    shader: "matmul_tiles",
    entry: "main",
    access: "rtrw",
    spec: "",
};
/// `TILES` multiplying by the RMS-normalised X (see [`matmul_normed`]).
const TILES_NORM: Kernel = Kernel {
    spec: "NORM=1",
    ..TILES
};
/// Rows and outputs per matmul_tiles workgroup.
const TILES_EDGE: u32 = 64;
/// Rows per subgroup tile of matmul_sg / matmul_xtex_sg (8 lanes x RTL rows).
const SG_ROWS: u32 = 32;
/// Outputs per subgroup tile (8 lanes x 4 loads).
const SG_OUTS: u32 = 32;
/// Outputs per matvec workgroup (8 lanes x 8).
const MATVEC_OUTS: u32 = 64;
/// Outputs per matvec_f16 workgroup (32 lanes x 4).
const MATVEC_F16_OUTS: u32 = 128;

/// Below this many rows [`matmul`] uses the matvec kernel.
pub const MATVEC_MAX_ROWS: u32 = 8;

/// Which kernel [`matmul_using`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulKernel {
    /// MatVec below [`MATVEC_MAX_ROWS`] rows, else Tiled.
    Auto,
    /// Prefill: with 8-wide subgroups (the `cpu-adapter` plan, lavapipe) a subgroup
    /// computes 32 rows x 32 outputs, lanes sharing W loads by subgroupBroadcast (matmul_sg);
    /// otherwise [`MatmulKernel::TiledPortable`].
    Tiled,
    /// Decode: X's rows staged as texels, 8 outputs per invocation (matvec.wgsl; packed-f16
    /// weights: X in the 64 KiB uniform buffer, matvec_f16.wgsl), no subgroups needed, when X
    /// fits the staging; else [`MatmulKernel::Tiled`].
    MatVec,
    /// 4 rows x 4 outputs per invocation, no subgroups (matmul.wgsl).
    TiledPortable,
    /// Decode through matvec.wgsl's `w4` for every format (its f16 / q8_0 / q4_0 variants),
    /// instead of the format's own decode kernel (tests and A/B timings).
    MatVecGeneric,
    /// The `gpu` plan's decode product (matvec_split_k), on any plan (tests): subgroup
    /// reductions where the device has subgroups and the plan takes them.
    SplitK,
    /// The `gpu` plan's prefill product (matmul_tiles), on any plan (tests).
    Tiles,
}

/// Whether matvec_split_k reduces with subgroups on this device.
fn split_k_subgroups(ctx: &GpuContext) -> bool {
    ctx.has_subgroups() && ctx.plan() != KernelPlan::Gpu { subgroups: false }
}

// Why this layout and these kernels (measured on lavapipe, Mesa 22.3, llvmpipe 8-wide, same
// run): a storage-buffer load inside a loop costs ~8-15x a texel fetch or uniform-buffer load
// (it is a per-lane loop, the same for lane-uniform addresses and for workgroup memory), while
// FMAs, private arrays and subgroupBroadcast are nearly free. So W lives in a read-only storage
// texture (weights.rs; an image load is ~2x cheaper than a sampled fetch there) and the kernels
// maximise MACs per storage load of X: matmul_sg lets each lane own 4 X rows and take W from
// the other lanes by broadcast (128 MACs per 16 X loads and 4 texel fetches); matvec reads X
// as texels too, one per 8 W fetches (a uniform load at a loop index is a 32-load gather
// there). Measured: 512x768x1536 prefill ~9.5 GFLOP/s (first kernel ~1); 768->3352 decode
// ~17 GB/s of weights from DRAM (first kernel ~0.7). See docs/performance-log.md.

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
    check_product(OP, rows, x, w, bias, y)?;
    if rows == 0 {
        return Ok(());
    }
    let gpu_plan = rec.ctx().plan().gpu_products();
    let kernel = match kernel {
        MatmulKernel::Auto if rows < MATVEC_MAX_ROWS && gpu_plan => MatmulKernel::SplitK,
        MatmulKernel::Auto if rows < MATVEC_MAX_ROWS => MatmulKernel::MatVec,
        MatmulKernel::Auto if gpu_plan => MatmulKernel::Tiles,
        MatmulKernel::Auto => MatmulKernel::Tiled,
        k => k,
    };
    // The matvec's X rows must fit its staging: a texture (f32 W) or the uniform buffer (f16).
    let ldk = w.blocks.first().map_or(4, |b| b.ldk as u64);
    let kernel = match kernel {
        MatmulKernel::MatVec | MatmulKernel::MatVecGeneric
            if !matvec_x_fits(rec.ctx(), rows, w) =>
        {
            MatmulKernel::Tiled
        }
        MatmulKernel::Tiled if !rec.ctx().plan().subgroup8_kernels() => MatmulKernel::TiledPortable,
        k => k,
    };
    let (flags, bias) = product_flags(rec, bias, accumulate);
    match kernel {
        MatmulKernel::MatVec => matvec(rec, rows, x, w, &bias, y, flags, ldk, false),
        MatmulKernel::MatVecGeneric => matvec(rec, rows, x, w, &bias, y, flags, ldk, true),
        MatmulKernel::TiledPortable => tiled_portable(rec, rows, x, w, &bias, y, flags),
        MatmulKernel::SplitK => split_k(rec, rows, x, w, &bias, y, flags),
        MatmulKernel::Tiles => tiles(rec, rows, x, w, &bias, y, flags, None),
        _ => tiled_xtex(rec, rows, x, w, &bias, y, flags, None, None),
    }
}

/// The product kernels' flags (bit 0 = add bias, bit 1 = accumulate into Y) and the bias
/// buffer to bind (the context's dummy without one).
fn product_flags(rec: &Recorder, bias: Option<&GpuBuffer>, accumulate: bool) -> (u32, GpuBuffer) {
    let flags = bias.is_some() as u32 | (accumulate as u32) << 1;
    (flags, bias.unwrap_or(rec.ctx().dummy()).clone())
}

/// `rows` rows of x [.., in] and y [.., out] for `w` [out, in], and the bias [out].
fn check_product(
    op: &'static str,
    rows: u32,
    x: View,
    w: &GpuMatrix,
    bias: Option<&GpuBuffer>,
    y: View,
) -> GpuResult<()> {
    x.check(op, "x", rows, w.cols as u32)?;
    y.check(op, "y", rows, w.rows as u32)?;
    match bias {
        Some(b) => need_len(op, "bias", b, w.rows as u64),
        None => Ok(()),
    }
}

/// Whether `rows` rows of X for `w` fit the matvec's staging: the activation texture for f32
/// blocks, the uniform buffer for packed-f16 ones.
fn matvec_x_fits(ctx: &GpuContext, rows: u32, w: &GpuMatrix) -> bool {
    let ldk = w.blocks.first().map_or(4, |b| b.ldk as u64);
    let maxd = ctx.limits.max_texture_dimension_2d as u64;
    if w.has_f16() {
        rows as u64 * ldk * 4 <= UNIFORM_STAGING_BYTES
    } else {
        ldk / 4 <= maxd && rows as u64 <= maxd
    }
}

/// Whether [`matvec_normed`] runs for a `cols`-wide f32 `w`, `groups` norm groups and `rows`
/// rows: K / groups a multiple of 4, every block f32, fewer than [`MATVEC_MAX_ROWS`] rows that
/// fit the staging texture.
pub fn matvec_normed_supported(ctx: &GpuContext, rows: u32, w: &GpuMatrix, groups: u32) -> bool {
    let fits = if ctx.plan().gpu_products() {
        // matvec_split_k reads X in place: no staging to fit.
        groups <= SPLIT_K_OUTS
    } else {
        matvec_x_fits(ctx, rows, w)
    };
    groups > 0
        && (w.cols as u32).is_multiple_of(4 * groups)
        && w.format() == WeightFormat::F32
        && rows < MATVEC_MAX_ROWS
        && fits
}

/// Whether [`matmul_normed`] runs: below [`MATVEC_MAX_ROWS`] rows as [`matvec_normed`]; from
/// there the subgroup tiled product (8-wide subgroups, one norm group, f32 blocks, a row of X
/// within a texture).
pub fn matmul_normed_supported(ctx: &GpuContext, rows: u32, w: &GpuMatrix, groups: u32) -> bool {
    if rows < MATVEC_MAX_ROWS {
        return matvec_normed_supported(ctx, rows, w, groups);
    }
    let plan = ctx.plan();
    let fits_texture = (w.cols as u32).div_ceil(4) <= ctx.limits.max_texture_dimension_2d;
    groups == 1
        && w.format() == WeightFormat::F32
        && (plan.gpu_products() || plan.subgroup8_kernels() && fits_texture)
}

/// [`matvec_normed`] for any number of rows: `y[t, o] (+)= sum_k n(x)[t, k] * w[o, k]
/// (+ bias[o])` with n the RMSNorm without its weight (folded into `w`'s columns). Prefill
/// (rows >= [`MATVEC_MAX_ROWS`]) runs matmul_xtex_sg's NORM variant (the `gpu` plan:
/// matmul_tiles'), which sums each row's squares in its own loop: no norm dispatch, no
/// normalised copy of X. Errors unless
/// [`matmul_normed_supported`].
#[allow(clippy::too_many_arguments)]
pub fn matmul_normed(
    rec: &mut Recorder,
    rows: u32,
    x: View,
    groups: u32,
    eps: f32,
    w: &GpuMatrix,
    bias: Option<&GpuBuffer>,
    y: View,
    accumulate: bool,
    conv: Option<ConvStep>,
) -> GpuResult<()> {
    const OP: &str = "matmul_normed";
    if rows < MATVEC_MAX_ROWS {
        return matvec_normed(rec, rows, x, groups, eps, w, bias, y, accumulate, conv);
    }
    check_product(OP, rows, x, w, bias, y)?;
    ensure(OP, conv.is_none(), || {
        format!("the conv step takes one row, not {rows}")
    })?;
    if !matmul_normed_supported(rec.ctx(), rows, w, groups) {
        return Err(GpuError::Shape {
            op: OP,
            detail: format!(
                "{rows} rows of K = {} in {groups} groups: needs one group, f32 weights, \
                 8-wide subgroups and a row of X within a texture",
                w.cols
            ),
        });
    }
    let (flags, bias) = product_flags(rec, bias, accumulate);
    if rec.ctx().plan().gpu_products() {
        return tiles(rec, rows, x, w, &bias, y, flags, Some(eps));
    }
    tiled_xtex(rec, rows, x, w, &bias, y, flags, Some(eps), None)
}

/// Whether [`matmul_gated_normed`] runs: the `cpu-adapter` plan, [`matmul_normed_supported`]
/// for prefill rows (one norm group) and inputs `gated_rows_to_texture.wgsl` takes.
pub fn matmul_gated_normed_supported(
    ctx: &GpuContext,
    rows: u32,
    x: View,
    gate: &GateInputs,
    w: &GpuMatrix,
    groups: u32,
) -> bool {
    rows >= MATVEC_MAX_ROWS
        && ctx.plan().subgroup8_kernels()
        && matmul_normed_supported(ctx, rows, w, groups)
        && gate.packs(w.cols as u32, x)
}

/// Prefill's MODEL.md steps 5-7 in two dispatches: `y[t, o] (+)= sum_k n(g(x))[t, k] * w[o, k]
/// (+ bias[o])`, g the D skip and gate of [`GateInputs`] applied while X is packed into the
/// product's texture, n the RMSNorm without its weight (folded into `w`'s columns) inside the
/// product, as [`matmul_normed`]. Replaces gated_rms_norm + matmul. Errors unless
/// [`matmul_gated_normed_supported`] (with one norm group).
#[allow(clippy::too_many_arguments)]
pub fn matmul_gated_normed(
    rec: &mut Recorder,
    rows: u32,
    x: View,
    gate: &GateInputs,
    eps: f32,
    w: &GpuMatrix,
    bias: Option<&GpuBuffer>,
    y: View,
    accumulate: bool,
) -> GpuResult<()> {
    const OP: &str = "matmul_gated_normed";
    check_product(OP, rows, x, w, bias, y)?;
    let k = w.cols as u32;
    gate.x.check(OP, "gate x", rows, k)?;
    gate.z.check(OP, "gate z", rows, k)?;
    if let Some(ds) = gate.d_skip {
        need_len(OP, "D", ds, (k / gate.head_dim.max(1)) as u64)?;
    }
    if !matmul_gated_normed_supported(rec.ctx(), rows, x, gate, w, 1) {
        return Err(GpuError::Shape {
            op: OP,
            detail: format!(
                "{rows} rows of K = {k}, heads of {}: needs at least {MATVEC_MAX_ROWS} rows, \
                 K and P multiples of 4, vec4-aligned views, f32 weights and 8-wide subgroups",
                gate.head_dim
            ),
        });
    }
    let (flags, bias) = product_flags(rec, bias, accumulate);
    tiled_xtex(rec, rows, x, w, &bias, y, flags, Some(eps), Some(gate))
}

/// X's `rows` rows of `k` values in the activation texture (texel (i, t) = x[t, 4i..4i+4], zero
/// past k): copied when they are whole aligned texels, else packed by rows_to_texture.
fn stage_x_texture(rec: &mut Recorder, rows: u32, k: u32, x: View) -> GpuResult<GpuBuffer> {
    let tex = rec.ctx().x_texture(k.div_ceil(4), rows)?;
    stage_x_rows(rec, rows, k, x, &tex)?;
    Ok(tex)
}

/// X's `rows` rows into rows 0.. of the activation texture `tex` (zero past k).
fn stage_x_rows(rec: &mut Recorder, rows: u32, k: u32, x: View, tex: &GpuBuffer) -> GpuResult<()> {
    let ldk4 = k.div_ceil(4);
    if k.is_multiple_of(4) && x.vec4_aligned() {
        for t in 0..rows {
            let src = x.offset as usize + (t * x.stride) as usize;
            rec.copy_to_texture_row(x.buf, src, tex, t, ldk4)?;
        }
        Ok(())
    } else {
        rows_to_texture(rec, rows, k, x, tex, 0, 0)
    }
}

/// MODEL.md step 2 for one decode row, fused into in_proj's [`matvec_normed`]: outputs
/// `first_row .. first_row + channels` (the xBC rows) go through the causal depthwise conv
/// (`weight` [channels, k], `bias`) over the carried `state` [k-1, channels] (shifted by this
/// row), then SiLU, into row 0 of `out`; as `ops::conv1d` for one row.
pub struct ConvStep<'a> {
    pub weight: &'a GpuBuffer,
    pub bias: Option<&'a GpuBuffer>,
    pub state: &'a GpuBuffer,
    pub k: u32,
    pub first_row: u32,
    pub channels: u32,
    pub out: View<'a>,
}

/// Decode with the RMSNorm fused: `y[t, o] (+)= sum_k n(x)[t, k] * w[o, k] (+ bias[o])`, where
/// n normalises each of `groups` groups of K / groups columns of a row, x / sqrt(mean(x^2) +
/// eps), without a weight: the model folds the norm's weight into `w`'s columns
/// (W diag(g) n(x) = W (n(x) * g)). One dispatch per block instead of a norm and a product;
/// the sum of squares is accumulated in the product's own loop. With `conv` (one row, no
/// accumulation) the product's epilogue also runs the conv step. Errors unless
/// [`matvec_normed_supported`].
#[allow(clippy::too_many_arguments)]
pub fn matvec_normed(
    rec: &mut Recorder,
    rows: u32,
    x: View,
    groups: u32,
    eps: f32,
    w: &GpuMatrix,
    bias: Option<&GpuBuffer>,
    y: View,
    accumulate: bool,
    conv: Option<ConvStep>,
) -> GpuResult<()> {
    const OP: &str = "matvec_normed";
    check_product(OP, rows, x, w, bias, y)?;
    if let Some(cv) = &conv {
        check_conv(OP, rows, accumulate, w, cv)?;
    }
    if !matvec_normed_supported(rec.ctx(), rows, w, groups) {
        return Err(GpuError::Shape {
            op: OP,
            detail: format!(
                "{rows} rows of K = {} in {groups} groups with {} weights: needs K / groups a \
                 multiple of 4, f32 weights and fewer than {MATVEC_MAX_ROWS} rows that fit \
                 the staging texture",
                w.cols,
                w.format().name()
            ),
        });
    }
    if rows == 0 {
        return Ok(());
    }
    let (flags, bias) = product_flags(rec, bias, accumulate);
    let input = NormedInput::for_plan(rec, rows, x, w.cols as u32, None)?;
    let product = NormedProduct {
        rows,
        x,
        y,
        flags,
        bias: &bias,
        groups,
        eps,
        conv: conv.as_ref(),
    };
    product.dispatch(rec, input, w, |_, conv| {
        Ok(if conv {
            (&MATVEC_NORM_CONV, MATVEC_OUTS)
        } else {
            (&MATVEC_NORM, MATVEC_OUTS)
        })
    })
}

/// Where a normed decode product reads X, and the norm weight when it is not folded into W.
enum NormedInput<'a> {
    /// Staged in the activation texture `st` (matvec, matvec_quant: the `cpu-adapter` and
    /// `portable` plans), the weight in its row `g_row`.
    Staged { st: GpuBuffer, g_row: Option<u32> },
    /// In place, the weight `g` bound beside it (matvec_split_k: the `gpu` plan).
    InPlace { g: Option<&'a GpuBuffer> },
}

impl<'a> NormedInput<'a> {
    /// X as the plan's normed product reads it: in place on the `gpu` plan; otherwise X's
    /// `rows` rows of `k` values staged in the activation texture, and the norm weight `g` (if
    /// not folded into W) in the row after them.
    fn for_plan(
        rec: &mut Recorder,
        rows: u32,
        x: View,
        k: u32,
        g: Option<&'a GpuBuffer>,
    ) -> GpuResult<Self> {
        if rec.ctx().plan().gpu_products() {
            return Ok(NormedInput::InPlace { g });
        }
        let st = rec
            .ctx()
            .x_texture(k.div_ceil(4), rows + g.is_some() as u32)?;
        stage_x_rows(rec, rows, k, x, &st)?;
        if let Some(g) = g {
            rec.copy_to_texture_row(g, 0, &st, rows, k.div_ceil(4))?;
        }
        Ok(NormedInput::Staged {
            st,
            g_row: g.map(|_| rows),
        })
    }
}

/// One normed decode product's dispatches (matvec.wgsl's or matvec_quant.wgsl's NORM entry
/// points, which share their params and bindings; matvec_split_k's on the `gpu` plan).
struct NormedProduct<'a> {
    rows: u32,
    x: View<'a>,
    y: View<'a>,
    flags: u32,
    bias: &'a GpuBuffer,
    groups: u32,
    eps: f32,
    conv: Option<&'a ConvStep<'a>>,
}

impl NormedProduct<'_> {
    /// One dispatch per block of `w`: X in place runs matvec_split_k's NORM entry (1: weight
    /// folded into `w`; 2: weight `g` bound), X staged `kernel(block format, with conv)`, which
    /// also says how many outputs a workgroup computes; params are [`DecodeParams`] with the
    /// norm's, the conv step's (zero without one) and `g_row`.
    fn dispatch(
        &self,
        rec: &mut Recorder,
        input: NormedInput,
        w: &GpuMatrix,
        kernel: impl Fn(WeightFormat, bool) -> GpuResult<(&'static Kernel, u32)>,
    ) -> GpuResult<()> {
        let dummy = rec.ctx().dummy().clone();
        let sg = split_k_subgroups(rec.ctx()) as usize;
        let g_row = match input {
            NormedInput::Staged { g_row, .. } => g_row,
            NormedInput::InPlace { .. } => None,
        };
        for b in &w.blocks {
            let product = ProductParams::new(self.rows, w.cols, b, self.x, self.y, self.flags);
            let mut params = DecodeParams {
                groups: self.groups,
                eps: self.eps,
                g_row: g_row.unwrap_or(0),
                ..DecodeParams::plain(product)
            };
            if let Some(cv) = self.conv {
                params.conv_lo = cv.first_row;
                params.conv_dc = cv.channels;
                params.conv_k = cv.k;
                params.conv_flags = cv.bias.is_some() as u32;
                params.xbc_off = cv.out.offset;
            }
            let params = words(&params);
            let conv = self.conv.is_some();
            let (bias, y) = (self.bias, self.y.buf);
            match &input {
                NormedInput::InPlace { g } => {
                    let k = &SPLIT_K_NORMED[sg][g.is_some() as usize][conv as usize];
                    let grid = [(b.rows as u32).div_ceil(SPLIT_K_OUTS), self.rows, 1];
                    let g = g.unwrap_or(&dummy);
                    let x = self.x.buf;
                    match self.conv {
                        None => {
                            let d = &dummy;
                            let bufs = [x, &b.buffer, bias, y, d, d, d, d, g];
                            rec.dispatch(k, params, &bufs, grid)?;
                        }
                        Some(cv) => {
                            let cb = cv.bias.unwrap_or(&dummy);
                            let bufs = [
                                x, &b.buffer, bias, y, cv.weight, cb, cv.state, cv.out.buf, g,
                            ];
                            rec.dispatch(k, params, &bufs, grid)?;
                        }
                    }
                }
                NormedInput::Staged { st, .. } => {
                    let (k, outs) = kernel(b.format(), conv)?;
                    let grid = [(b.rows as u32).div_ceil(outs), self.rows, 1];
                    match self.conv {
                        None => rec.dispatch(k, params, &[st, &b.buffer, bias, y], grid)?,
                        Some(cv) => {
                            let cb = cv.bias.unwrap_or(&dummy);
                            let bufs =
                                [st, &b.buffer, bias, y, cv.weight, cb, cv.state, cv.out.buf];
                            rec.dispatch(k, params, &bufs, grid)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// A [`ConvStep`] for a product over `w` (one row, no accumulation, in range, sized buffers).
fn check_conv(
    op: &'static str,
    rows: u32,
    accumulate: bool,
    w: &GpuMatrix,
    cv: &ConvStep,
) -> GpuResult<()> {
    let ch = cv.channels as u64;
    ensure(op, rows == 1 && !accumulate, || {
        format!("the conv step takes one row without accumulation, not {rows} rows")
    })?;
    ensure(
        op,
        cv.k >= 1 && cv.first_row as u64 + ch <= w.rows as u64,
        || {
            format!(
                "conv of kernel {} over rows {}..{} of {} outputs",
                cv.k,
                cv.first_row,
                cv.first_row as u64 + ch,
                w.rows
            )
        },
    )?;
    need_len(op, "conv weight", cv.weight, ch * cv.k as u64)?;
    if let Some(b) = cv.bias {
        need_len(op, "conv bias", b, ch)?;
    }
    need_len(op, "conv state", cv.state, ch * (cv.k as u64 - 1))?;
    cv.out.check(op, "conv out", 1, cv.channels)
}

/// Whether [`matvec_quant_normed`] runs: q8_0 / q4_0 blocks, fewer than [`MATVEC_MAX_ROWS`]
/// rows that fit the staging texture with one more row (for the norm weight), each of `groups`
/// groups whole blocks of 32.
pub fn matvec_quant_normed_supported(
    ctx: &GpuContext,
    rows: u32,
    w: &GpuMatrix,
    groups: u32,
) -> bool {
    let maxd = ctx.limits.max_texture_dimension_2d;
    let groups_fit = !ctx.plan().gpu_products() || groups <= SPLIT_K_OUTS;
    w.format().quant().is_some()
        && groups_fit
        && groups > 0
        && (w.cols as u32).is_multiple_of(32 * groups)
        && rows < MATVEC_MAX_ROWS
        && (w.cols as u32) / 4 <= maxd
        && rows < maxd
}

/// Decode over q8_0 / q4_0 blocks with the RMSNorm fused, weight and all: `y[t, o] (+)=
/// sum_k (n(x) ⊙ g)[t, k] * w[o, k] (+ bias[o])`, n normalising each of `groups` groups of a
/// row (as [`matvec_normed`]), `g` the norm's weight [K] — applied to X inside the product
/// (matvec_quant.wgsl, NORM), since folding it into W's columns would change the stored
/// blocks. With `conv` the epilogue runs the conv step (as [`matvec_normed`]). Errors unless
/// [`matvec_quant_normed_supported`].
#[allow(clippy::too_many_arguments)]
pub fn matvec_quant_normed(
    rec: &mut Recorder,
    rows: u32,
    x: View,
    groups: u32,
    eps: f32,
    g: &GpuBuffer,
    w: &GpuMatrix,
    bias: Option<&GpuBuffer>,
    y: View,
    accumulate: bool,
    conv: Option<ConvStep>,
) -> GpuResult<()> {
    const OP: &str = "matvec_quant_normed";
    check_product(OP, rows, x, w, bias, y)?;
    need_len(OP, "norm weight", g, w.cols as u64)?;
    if let Some(cv) = &conv {
        check_conv(OP, rows, accumulate, w, cv)?;
    }
    if !matvec_quant_normed_supported(rec.ctx(), rows, w, groups) {
        return Err(GpuError::Shape {
            op: OP,
            detail: format!(
                "{rows} rows of K = {} in {groups} groups with {} weights: needs q8_0 or q4_0 \
                 blocks, groups of whole blocks of 32 and fewer than {MATVEC_MAX_ROWS} rows",
                w.cols,
                w.format().name()
            ),
        });
    }
    if rows == 0 {
        return Ok(());
    }
    let (flags, bias) = product_flags(rec, bias, accumulate);
    let input = NormedInput::for_plan(rec, rows, x, w.cols as u32, Some(g))?;
    let product = NormedProduct {
        rows,
        x,
        y,
        flags,
        bias: &bias,
        groups,
        eps,
        conv: conv.as_ref(),
    };
    product.dispatch(rec, input, w, quant_norm_kernel)
}

const MATVEC_Q4_0_NORM: Kernel = Kernel {
    spec: "NORM=1",
    ..MATVEC_Q4_0
};
const MATVEC_Q8_0_NORM: Kernel = Kernel {
    spec: "Q8=1;NORM=1",
    ..MATVEC_Q4_0
};
const MATVEC_Q4_0_NORM_CONV: Kernel = Kernel {
    entry: "main_conv",
    access: "xtrwrrww",
    ..MATVEC_Q4_0_NORM
};
const MATVEC_Q8_0_NORM_CONV: Kernel = Kernel {
    entry: "main_conv",
    access: "xtrwrrww",
    ..MATVEC_Q8_0_NORM
};

/// matvec_quant's NORM entry point for blocks in `format`, with or without the conv step.
fn quant_norm_kernel(format: WeightFormat, conv: bool) -> GpuResult<(&'static Kernel, u32)> {
    let k = match (format, conv) {
        (WeightFormat::Q4_0, false) => &MATVEC_Q4_0_NORM,
        (WeightFormat::Q8_0, false) => &MATVEC_Q8_0_NORM,
        (WeightFormat::Q4_0, true) => &MATVEC_Q4_0_NORM_CONV,
        (WeightFormat::Q8_0, true) => &MATVEC_Q8_0_NORM_CONV,
        (other, _) => {
            return Err(GpuError::Unsupported(format!(
                "matvec_quant_normed: {} blocks",
                other.name()
            )))
        }
    };
    Ok((k, MATVEC_OUTS))
}

kernel_params! {
/// The params every product kernel's `Params` begins with (matmul.wgsl, matmul_sg.wgsl,
/// matmul_xtex_sg.wgsl, matmul_tiles.wgsl, matvec_f16.wgsl, shaders/lib/decode_product.wgsl);
/// field for field as the WGSL. flags: bit 0 = add bias, bit 1 = accumulate into Y.
pub(crate) struct ProductParams {
    t: u32,
    k: u32,
    rows: u32,
    col0: u32,
    x_stride: u32,
    x_off: u32,
    y_stride: u32,
    y_off: u32,
    flags: u32,
    ldk4: u32,
}
}

impl ProductParams {
    /// For rows `rows` of `x` / `y`, block `b` of a `k`-wide matrix.
    fn new(rows: u32, k: usize, b: &MatBlock, x: View, y: View, flags: u32) -> Self {
        Self {
            t: rows,
            k: k as u32,
            rows: b.rows as u32,
            col0: b.row_start as u32,
            x_stride: x.stride,
            x_off: x.offset,
            y_stride: y.stride,
            y_off: y.offset,
            flags,
            ldk4: (b.ldk / 4) as u32,
        }
    }
}

/// matmul_xtex_sg.wgsl's and matmul_tiles.wgsl's params: the product's and the NORM
/// variant's eps.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct TiledParams {
    product: ProductParams,
    eps: f32,
}

/// shaders/lib/decode_product.wgsl's `Params` (matvec, matvec_quant, matvec_split_k): the
/// product's, the RMSNorm's (NORM variants), the conv step's (main_conv) and the X texture's
/// row holding the norm weight (NORM reading it there).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct DecodeParams {
    product: ProductParams,
    groups: u32,
    eps: f32,
    conv_lo: u32,
    conv_dc: u32,
    conv_k: u32,
    conv_flags: u32,
    xbc_off: u32,
    g_row: u32,
}

impl DecodeParams {
    /// Without norm and conv step.
    fn plain(product: ProductParams) -> Self {
        Self {
            product,
            ..Zeroable::zeroed()
        }
    }
}

/// Decode: X's rows staged (f32 and quantized blocks: the activation texture; packed-f16
/// blocks: the uniform buffer, dense with stride `ldk`), then per block matvec, matvec_f16 or
/// matvec_quant; `generic`: matvec (its `w4` variant) for every format.
#[allow(clippy::too_many_arguments)]
fn matvec(
    rec: &mut Recorder,
    rows: u32,
    x: View,
    w: &GpuMatrix,
    bias: &GpuBuffer,
    y: View,
    flags: u32,
    ldk: u64,
    generic: bool,
) -> GpuResult<()> {
    let mut tex = None;
    let mut ubo = None;
    // matvec_quant reads the interleaved rows only (the plans that run it lay them so).
    let quant_own = !generic && rec.ctx().plan().quant_rows() == QuantRows::Interleaved8;
    for b in &w.blocks {
        let product = ProductParams::new(rows, w.cols, b, x, y, flags);
        let decode = DecodeParams::plain(product);
        let params = words(&decode);
        let own = match b.format() {
            _ if !quant_own => None,
            WeightFormat::Q8_0 => Some(&MATVEC_Q8_0),
            WeightFormat::Q4_0 => Some(&MATVEC_Q4_0),
            _ => None,
        };
        if let Some(kernel) = own {
            let st = match &tex {
                Some(st) => st,
                None => tex.insert(stage_x_texture(rec, rows, w.cols as u32, x)?),
            };
            let g = [(b.rows as u32).div_ceil(MATVEC_OUTS), rows, 1];
            rec.dispatch(kernel, params, &[st, &b.buffer, bias, y.buf], g)?;
        } else if b.is_f16() && !generic {
            let st = match &ubo {
                Some(st) => st,
                None => {
                    let st = rec.ctx().uniform_staging();
                    for t in 0..rows {
                        let src = x.offset as usize + (t * x.stride) as usize;
                        rec.copy(x.buf, src, &st, (t as u64 * ldk) as usize, w.cols)?;
                    }
                    ubo.insert(st)
                }
            };
            let g = [(b.rows as u32).div_ceil(MATVEC_F16_OUTS), rows, 1];
            rec.dispatch(
                &MATVEC_F16,
                words(&product),
                &[st, &b.buffer, bias, y.buf],
                g,
            )?;
        } else {
            let st = match &tex {
                Some(st) => st,
                None => tex.insert(stage_x_texture(rec, rows, w.cols as u32, x)?),
            };
            let g = [(b.rows as u32).div_ceil(MATVEC_OUTS), rows, 1];
            rec.dispatch(&MATVEC, params, &[st, &b.buffer, bias, y.buf], g)?;
        }
    }
    Ok(())
}

/// The `gpu` plan's decode: per block matvec_split_k (every weight format through its `w4`),
/// X read in place.
fn split_k(
    rec: &mut Recorder,
    rows: u32,
    x: View,
    w: &GpuMatrix,
    bias: &GpuBuffer,
    y: View,
    flags: u32,
) -> GpuResult<()> {
    let kernel = if split_k_subgroups(rec.ctx()) {
        &SPLIT_K_SG
    } else {
        &SPLIT_K
    };
    let d = &rec.ctx().dummy().clone();
    for b in &w.blocks {
        let params = DecodeParams::plain(ProductParams::new(rows, w.cols, b, x, y, flags));
        let g = [(b.rows as u32).div_ceil(SPLIT_K_OUTS), rows, 1];
        let bufs = [x.buf, &b.buffer, bias, y.buf, d, d, d, d, d];
        rec.dispatch(kernel, words(&params), &bufs, g)?;
    }
    Ok(())
}

/// The `gpu` plan's prefill: matmul_tiles, X read in place; `norm`: the eps of the RMSNorm
/// (one group, weight folded into `w`) applied to X's rows inside the product.
#[allow(clippy::too_many_arguments)]
fn tiles(
    rec: &mut Recorder,
    rows: u32,
    x: View,
    w: &GpuMatrix,
    bias: &GpuBuffer,
    y: View,
    flags: u32,
    norm: Option<f32>,
) -> GpuResult<()> {
    let kernel = if norm.is_some() { &TILES_NORM } else { &TILES };
    for b in &w.blocks {
        let params = TiledParams {
            product: ProductParams::new(rows, w.cols, b, x, y, flags),
            eps: norm.unwrap_or(0.0),
        };
        let g = [
            (b.rows as u32).div_ceil(TILES_EDGE),
            rows.div_ceil(TILES_EDGE),
            1,
        ];
        rec.dispatch(kernel, words(&params), &[x.buf, &b.buffer, bias, y.buf], g)?;
    }
    Ok(())
}

/// No subgroups: matmul.wgsl, 4 rows x 4 outputs per invocation.
fn tiled_portable(
    rec: &mut Recorder,
    rows: u32,
    x: View,
    w: &GpuMatrix,
    bias: &GpuBuffer,
    y: View,
    flags: u32,
) -> GpuResult<()> {
    for b in &w.blocks {
        let params = ProductParams::new(rows, w.cols, b, x, y, flags);
        let g = [
            (b.rows as u32).div_ceil(4).div_ceil(64),
            rows.div_ceil(4),
            1,
        ];
        rec.dispatch(&TILED, words(&params), &[x.buf, &b.buffer, bias, y.buf], g)?;
    }
    Ok(())
}

/// The subgroup tiled product with X packed into a texture first (rows_to_texture, then
/// matmul_xtex_sg), in chunks of rows that fit a texture; matmul_sg (X from storage) when a
/// row of X is wider than a texture. `norm`: the eps of the RMSNorm applied to X's rows inside
/// the product (needs the texture); `gate`: X is gated as it is packed (see [`GateInputs`]).
#[allow(clippy::too_many_arguments)]
fn tiled_xtex(
    rec: &mut Recorder,
    rows: u32,
    x: View,
    w: &GpuMatrix,
    bias: &GpuBuffer,
    y: View,
    flags: u32,
    norm: Option<f32>,
    gate: Option<&GateInputs>,
) -> GpuResult<()> {
    let k = w.cols as u32;
    let ldk4 = k.div_ceil(4);
    let maxd = rec.ctx().limits.max_texture_dimension_2d;
    let chunk = maxd.min(rows);
    let xtex = if ldk4 <= maxd {
        Some(rec.ctx().x_texture(ldk4, chunk)?)
    } else {
        ensure("matmul_normed", norm.is_none() && gate.is_none(), || {
            format!("a row of {k} values is wider than a texture")
        })?;
        None
    };
    let (kernel, eps) = match norm {
        Some(eps) => (&TILED_SG_XTEX_NORM, eps),
        None => (&TILED_SG_XTEX, 0.0),
    };
    let mut t0 = 0;
    while t0 < rows {
        let n = if xtex.is_some() {
            chunk.min(rows - t0)
        } else {
            rows
        };
        let (xc, yc) = (x.rows_from(t0), y.rows_from(t0));
        match (&xtex, gate) {
            (Some(xt), Some(g)) => gated_rows_to_texture(rec, n, k, xc, &g.rows_from(t0), xt)?,
            (Some(xt), None) => rows_to_texture(rec, n, k, xc, xt, 0, 0)?,
            (None, _) => {}
        }
        for b in &w.blocks {
            let params = TiledParams {
                product: ProductParams::new(n, w.cols, b, xc, yc, flags),
                eps,
            };
            let params = words(&params);
            let (tiles_o, tiles_t) = ((b.rows as u32).div_ceil(SG_OUTS), n.div_ceil(SG_ROWS));
            match &xtex {
                Some(xt) => {
                    let g = [tiles_t, tiles_o, 1];
                    rec.dispatch(kernel, params, &[xt, &b.buffer, bias, yc.buf], g)?
                }
                None => {
                    let g = [tiles_o, tiles_t, 1];
                    rec.dispatch(&TILED_SG, params, &[xc.buf, &b.buffer, bias, yc.buf], g)?
                }
            }
        }
        t0 += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::wgsl_params;
    use super::*;

    #[test]
    fn params_structs_mirror_the_wgsl() {
        let product = ProductParams::FIELDS;
        let decode_tail = [
            "groups",
            "eps",
            "conv_lo",
            "conv_dc",
            "conv_k",
            "conv_flags",
            "xbc_off",
            "g_row",
        ];
        let tiled: Vec<&str> = product.iter().copied().chain(["eps"]).collect();
        let decode: Vec<&str> = product.iter().copied().chain(decode_tail).collect();
        let cases: [(&str, usize, &[&str]); 8] = [
            ("matmul", size_of::<ProductParams>(), product),
            ("matmul_sg", size_of::<ProductParams>(), product),
            ("matmul_tiles", size_of::<TiledParams>(), &tiled),
            ("matvec_f16", size_of::<ProductParams>(), product),
            ("matmul_xtex_sg", size_of::<TiledParams>(), &tiled),
            ("matvec", size_of::<DecodeParams>(), &decode),
            ("matvec_quant", size_of::<DecodeParams>(), &decode),
            ("matvec_split_k", size_of::<DecodeParams>(), &decode),
        ];
        for (name, size, fields) in cases {
            let (span, members) = wgsl_params(name);
            assert_eq!(span, size, "{name}: WGSL Params size vs the Rust struct");
            assert_eq!(members, fields, "{name}: field order");
        }
    }
}

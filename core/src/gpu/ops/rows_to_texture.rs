use super::{kernel_params, words};
use crate::gpu::context::{GpuBuffer, Kernel};
use crate::gpu::recorder::{grid64, Recorder};
use crate::gpu::GpuResult;

use super::View;

kernel_params! {
    /// The params of rows_to_texture.wgsl, rows_to_texture_vec4.wgsl.
    pub(crate) struct RowsToTextureParams {
        t: u32,
        k: u32,
        ldk4: u32,
        x_stride: u32,
        x_off: u32,
        row0: u32,
        col0: u32,
    }
}

kernel_params! {
    /// The params of gated_rows_to_texture.wgsl.
    pub(crate) struct GatedRowsParams {
        t: u32,
        ldk4: u32,
        p: u32,
        gate_from_row: u32,
        y_stride: u32,
        y_off: u32,
        x_stride: u32,
        x_off: u32,
        z_stride: u32,
        z_off: u32,
        flags: u32,
    }
}

const K: Kernel = Kernel {
    shader: "rows_to_texture",
    entry: "main",
    access: "ro",
    spec: "",
};
/// `K` with one vec4 load per texel (K, stride and offset multiples of 4).
const K_VEC4: Kernel = Kernel {
    shader: "rows_to_texture_vec4",
    entry: "main",
    access: "ro",
    spec: "",
};

/// Packs `rows` rows of `k` values of `x` into the rgba32float texture `tex`: texel
/// `(col0 + i, row0 + t)` = `x[t, 4i..4i+4]`, zero past `k`. Feeds every kernel that reads
/// activations as texels (the prefill matmul, the SSD `_xtex` kernels, the attention cache,
/// the decode SSM state); the texture must hold the rows and texel columns written.
pub(crate) fn rows_to_texture(
    rec: &mut Recorder,
    rows: u32,
    k: u32,
    x: View,
    tex: &GpuBuffer,
    row0: u32,
    col0: u32,
) -> GpuResult<()> {
    let ldk4 = k.div_ceil(4);
    let params = RowsToTextureParams {
        t: rows,
        k,
        ldk4,
        x_stride: x.stride,
        x_off: x.offset,
        row0,
        col0,
    };
    let aligned = k.is_multiple_of(4) && x.vec4_aligned();
    rec.dispatch(
        if aligned { &K_VEC4 } else { &K },
        words(&params),
        &[x.buf, tex],
        grid64(rows as u64 * ldk4 as u64),
    )
}

const GATED: Kernel = Kernel {
    shader: "gated_rows_to_texture",
    entry: "main",
    access: "rrrro",
    spec: "",
};

/// MODEL.md steps 5-6 short of the norm for a prefill product: `y + D[h] x` (with `d_skip`),
/// times `silu(z)` for rows `t >= gate_from_row`, over `head_dim`-wide heads.
#[derive(Clone, Copy)]
pub struct GateInputs<'a> {
    pub x: View<'a>,
    pub z: View<'a>,
    pub d_skip: Option<&'a GpuBuffer>,
    pub head_dim: u32,
    pub gate_from_row: Option<u32>,
}

impl GateInputs<'_> {
    /// Whether [`gated_rows_to_texture`] takes `k`-wide rows of `y` with these inputs: every
    /// width, stride and offset in whole vec4s.
    pub(crate) fn packs(&self, k: u32, y: View) -> bool {
        k.is_multiple_of(4)
            && self.head_dim > 0
            && self.head_dim.is_multiple_of(4)
            && [y, self.x, self.z].iter().all(View::vec4_aligned)
    }

    /// The same inputs from row `t0` on.
    pub(crate) fn rows_from(&self, t0: u32) -> Self {
        Self {
            x: self.x.rows_from(t0),
            z: self.z.rows_from(t0),
            gate_from_row: self.gate_from_row.map(|g| g.saturating_sub(t0)),
            ..*self
        }
    }
}

/// Packs `rows` rows of `k` values of the gated `y` (see [`GateInputs`]) into `tex` as
/// [`rows_to_texture`] does (texel `(i, t)`); the caller checks [`GateInputs::packs`].
pub(crate) fn gated_rows_to_texture(
    rec: &mut Recorder,
    rows: u32,
    k: u32,
    y: View,
    g: &GateInputs,
    tex: &GpuBuffer,
) -> GpuResult<()> {
    let ldk4 = k / 4;
    let params = GatedRowsParams {
        t: rows,
        ldk4,
        p: g.head_dim,
        gate_from_row: g.gate_from_row.unwrap_or(u32::MAX),
        y_stride: y.stride,
        y_off: y.offset,
        x_stride: g.x.stride,
        x_off: g.x.offset,
        z_stride: g.z.stride,
        z_off: g.z.offset,
        flags: g.d_skip.is_some() as u32,
    };
    let dummy = rec.ctx().dummy().clone();
    let bufs = [y.buf, g.x.buf, g.z.buf, g.d_skip.unwrap_or(&dummy), tex];
    rec.dispatch(
        &GATED,
        words(&params),
        &bufs,
        grid64(rows as u64 * ldk4 as u64),
    )
}

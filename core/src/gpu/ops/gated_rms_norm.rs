use crate::gpu::context::{GpuBuffer, Kernel};
use crate::gpu::recorder::{grid_groups, Recorder};
use crate::gpu::GpuResult;

use super::{kernel_params, words};
use super::{need_len, SsmDims, View};

kernel_params! {
    /// The params of gated_rms_norm.wgsl, gated_rms_norm_vec4.wgsl.
    pub(crate) struct GatedNormParams {
        t: u32,
        di: u32,
        p: u32,
        g: u32,
        eps: f32,
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
    shader: "gated_rms_norm",
    entry: "main",
    access: "rrrrw",
    spec: "",
};
/// `K` with vec4 accesses (Di/G, P, strides and offsets multiples of 4).
const K_VEC4: Kernel = Kernel {
    shader: "gated_rms_norm_vec4",
    entry: "main",
    access: "rrrrw",
    spec: "",
};

/// MODEL.md steps 5-6 in place on `y` [rows, Di]: `y += D[h] * x` (when `d_skip` is given),
/// then `y *= silu(z)` for rows `t >= gate_from_row` (`None`: no gate), then RMS-normalise each
/// of the G groups of Di/G channels (`eps`) and multiply by `weight` (`[Di]`).
pub fn gated_rms_norm(
    rec: &mut Recorder,
    d: SsmDims,
    rows: u32,
    y: View,
    x: View,
    z: View,
    d_skip: Option<&GpuBuffer>,
    weight: &GpuBuffer,
    gate_from_row: Option<u32>,
    eps: f32,
) -> GpuResult<()> {
    const OP: &str = "gated_rms_norm";
    d.check(OP)?;
    let di = d.inner();
    y.check(OP, "y", rows, di)?;
    x.check(OP, "x", rows, di)?;
    z.check(OP, "z", rows, di)?;
    need_len(OP, "norm weight", weight, di as u64)?;
    if let Some(ds) = d_skip {
        need_len(OP, "D", ds, d.heads as u64)?;
    }
    let dummy = rec.ctx().dummy().clone();
    let params = GatedNormParams {
        t: rows,
        di,
        p: d.head_dim,
        g: d.groups,
        eps,
        gate_from_row: gate_from_row.unwrap_or(u32::MAX),
        y_stride: y.stride,
        y_off: y.offset,
        x_stride: x.stride,
        x_off: x.offset,
        z_stride: z.stride,
        z_off: z.offset,
        flags: d_skip.is_some() as u32,
    };
    let bufs = [x.buf, z.buf, d_skip.unwrap_or(&dummy), weight, y.buf];
    let aligned = (di / d.groups).is_multiple_of(4)
        && d.head_dim.is_multiple_of(4)
        && [y, x, z].iter().all(View::vec4_aligned);
    rec.dispatch(
        if aligned { &K_VEC4 } else { &K },
        words(&params),
        &bufs,
        grid_groups(rows as u64 * d.groups as u64),
    )
}

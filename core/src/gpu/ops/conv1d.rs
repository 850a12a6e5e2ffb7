use crate::gpu::context::{GpuBuffer, Kernel};
use crate::gpu::recorder::{grid64, Recorder};
use crate::gpu::GpuResult;

use super::{kernel_params, words};
use super::{need_len, View};

kernel_params! {
    /// The params of conv1d.wgsl, conv1d_vec4.wgsl.
    pub(crate) struct ConvParams {
        t: u32,
        dc: u32,
        k: u32,
        in_stride: u32,
        in_off: u32,
        out_stride: u32,
        out_off: u32,
        flags: u32,
    }
}

const CONV: Kernel = Kernel {
    shader: "conv1d",
    entry: "conv",
    access: "rrrww",
    spec: "",
};
/// `CONV` for 4 channels x 16 rows per invocation (vec4 accesses, each input row loaded once).
const CONV_VEC4: Kernel = Kernel {
    shader: "conv1d_vec4",
    entry: "conv",
    access: "rrrww",
    spec: "",
};
/// One decode row: the vec4 conv and the conv-state update in one dispatch.
const STEP_VEC4: Kernel = Kernel {
    shader: "conv1d_vec4",
    entry: "step",
    access: "rrrww",
    spec: "",
};
/// Rows per invocation of conv1d_vec4, and the largest kernel size it holds.
const VEC4_ROWS: u64 = 16;
const VEC4_MAX_K: u32 = 4;
const UPDATE: Kernel = Kernel {
    shader: "conv1d",
    entry: "update_state",
    access: "rrrww",
    spec: "",
};

/// Causal depthwise conv + SiLU over `rows` new rows of `channels` (= Dc) channels:
/// `out[t, c] = silu(bias[c] + sum_k weight[c, k] * xbc[t - K + 1 + k, c])`, rows before the
/// first new one coming from `state` [K-1, Dc] (the previous pre-conv rows; zeros for a fresh
/// sequence). `weight` is [Dc, K]. With `update_state`, `state` then becomes the last K-1
/// pre-conv rows of (old state ++ new rows), so consecutive calls equal one call over all rows.
pub fn conv1d(
    rec: &mut Recorder,
    rows: u32,
    channels: u32,
    kernel: u32,
    input: View,
    weight: &GpuBuffer,
    bias: Option<&GpuBuffer>,
    state: &GpuBuffer,
    out: View,
    update_state: bool,
) -> GpuResult<()> {
    const OP: &str = "conv1d";
    crate::gpu::error::ensure(OP, kernel >= 1, || "kernel size 0".into())?;
    input.check(OP, "input", rows, channels)?;
    out.check(OP, "out", rows, channels)?;
    need_len(
        OP,
        "weight [Dc, K]",
        weight,
        channels as u64 * kernel as u64,
    )?;
    need_len(
        OP,
        "state [K-1, Dc]",
        state,
        (kernel as u64 - 1) * channels as u64,
    )?;
    if let Some(b) = bias {
        need_len(OP, "bias", b, channels as u64)?;
    }
    let dummy = rec.ctx().dummy().clone();
    let params = ConvParams {
        t: rows,
        dc: channels,
        k: kernel,
        in_stride: input.stride,
        in_off: input.offset,
        out_stride: out.stride,
        out_off: out.offset,
        flags: bias.is_some() as u32,
    };
    let params = words(&params);
    let bufs = [input.buf, weight, bias.unwrap_or(&dummy), state, out.buf];
    let aligned = channels.is_multiple_of(4) && input.vec4_aligned() && out.vec4_aligned();
    if aligned && rows == 1 && update_state {
        return rec.dispatch(&STEP_VEC4, params, &bufs, grid64(channels as u64 / 4));
    }
    if aligned && kernel <= VEC4_MAX_K {
        let n = (rows as u64).div_ceil(VEC4_ROWS) * (channels / 4) as u64;
        rec.dispatch(&CONV_VEC4, params, &bufs, grid64(n))?;
    } else {
        rec.dispatch(&CONV, params, &bufs, grid64(rows as u64 * channels as u64))?;
    }
    if update_state && kernel > 1 && rows > 0 {
        rec.dispatch(&UPDATE, params, &bufs, grid64(channels as u64))?;
    }
    Ok(())
}

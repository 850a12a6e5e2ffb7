use crate::gpu::context::{GpuBuffer, Kernel};
use crate::gpu::recorder::{grid64, Recorder};
use crate::gpu::GpuResult;

use super::View;

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
    let params = [rows, k, ldk4, x.stride, x.offset, row0, col0];
    let aligned = k.is_multiple_of(4) && x.vec4_aligned();
    rec.dispatch(
        if aligned { &K_VEC4 } else { &K },
        &params,
        &[x.buf, tex],
        grid64(rows as u64 * ldk4 as u64),
    )
}

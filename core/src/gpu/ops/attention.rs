use crate::gpu::context::Kernel;
use crate::gpu::error::ensure;
use crate::gpu::recorder::{grid64, grid_groups, Recorder};
use crate::gpu::GpuResult;

use super::{kernel_params, words};
use super::{SsmDims, View};

kernel_params! {
    /// The params of attention.wgsl, attention_sg.wgsl, attention_vec4_sg.wgsl.
    pub(crate) struct AttentionParams {
        nq: u32,
        p0: u32,
        h: u32,
        p: u32,
        n: u32,
        g: u32,
        scale: f32,
        log2_theta: f32,
        q_stride: u32,
        q_off: u32,
        k_stride: u32,
        k_off: u32,
        v_stride: u32,
        v_off: u32,
        y_stride: u32,
        y_off: u32,
        flags: u32,
    }
}

const K: Kernel = Kernel {
    shader: "attention",
    entry: "main",
    access: "rrrw",
    spec: "",
};
/// The `gpu` plan's prefill attention: 8 queries x 32 channels a workgroup, keys in blocks of
/// 16 through workgroup memory (attention_tiles.wgsl).
const K_TILES: Kernel = Kernel {
    shader: "attention_tiles",
    ..K
};

/// Whether the `gpu` plan runs [`attention`] as attention_tiles: several queries (a tile of 8
/// serves one query poorly; decode takes the products' split-K route) and N <= 128 (a query
/// and 16 keys in workgroup memory).
pub fn attention_tiles_supported(d: SsmDims, nq: u32) -> bool {
    nq >= 2 && d.state <= 128
}
/// `K_SG` reading Q, K, V and Y as vec4 (N and P multiples of 32, offsets and strides of 4).
const K_VEC4_SG: Kernel = Kernel {
    shader: "attention_vec4_sg",
    entry: "main",
    access: "rrrw",
    spec: "",
};
/// `K_VEC4_SG` specialised for the common state sizes (constant trip counts).
const K_VEC4_SG_N: [(u32, Kernel); 3] = K_VEC4_SG.by_state_size();
/// 8 queries per 8-wide subgroup sharing each key and value by broadcast (no RoPE, N and P
/// multiples of 8); see `shaders/gen_attention_sg.py`.
const K_SG: Kernel = Kernel {
    shader: "attention_sg",
    entry: "main",
    access: "rrrw",
    spec: "",
};

/// Causal attention for `nq` queries at absolute positions `p0..p0+nq`.
/// `q`: rows of C [nq, G*N] (e.g. the C columns of xBC' rows); `k`: the key cache of B
/// [>= p0+nq, G*N]; `v`: the value cache of x [>= p0+nq, H*P]; query t attends to cache rows
/// 0..=p0+t (append the new rows first). `y`: [nq, H*P].
/// `rope_theta`: rotate-half RoPE on Q and K (cache holds unrotated B); `None` or 0: none.
pub fn attention(
    rec: &mut Recorder,
    d: SsmDims,
    nq: u32,
    p0: u32,
    q: View,
    k: View,
    v: View,
    y: View,
    scale: f32,
    rope_theta: Option<f32>,
) -> GpuResult<()> {
    const OP: &str = "attention";
    d.check(OP)?;
    let rope = rope_theta.filter(|&t| t > 0.0);
    ensure(OP, d.state <= 256, || {
        format!("state size {} > 256", d.state)
    })?;
    ensure(OP, rope.is_none() || d.state.is_multiple_of(2), || {
        "RoPE needs an even state size".into()
    })?;
    q.check(OP, "q", nq, d.bc_width())?;
    // Positions are u32 in the kernel: p0 + nq must not wrap.
    let positions = p0.checked_add(nq);
    ensure(OP, positions.is_some(), || {
        format!("{nq} queries at position {p0} exceed u32 positions")
    })?;
    let positions = positions.unwrap_or(u32::MAX);
    k.check(OP, "k cache", positions, d.bc_width())?;
    v.check(OP, "v cache", positions, d.inner())?;
    y.check(OP, "y", nq, d.inner())?;
    let params = AttentionParams {
        nq,
        p0,
        h: d.heads,
        p: d.head_dim,
        n: d.state,
        g: d.groups,
        scale,
        log2_theta: rope.map_or(0.0, f32::log2),
        q_stride: q.stride,
        q_off: q.offset,
        k_stride: k.stride,
        k_off: k.offset,
        v_stride: v.stride,
        v_off: v.offset,
        y_stride: y.stride,
        y_off: y.offset,
        flags: rope.is_some() as u32,
    };
    let params = words(&params);
    let chunks = d.head_dim.div_ceil(32) as u64;
    if rec.ctx().plan().gpu_products() && attention_tiles_supported(d, nq) {
        let grid = [nq.div_ceil(8), d.heads, d.head_dim.div_ceil(32)];
        return rec.dispatch(&K_TILES, params, &[q.buf, k.buf, v.buf, y.buf], grid);
    }
    let sg = rope.is_none()
        && rec.ctx().plan().subgroup8_kernels()
        && d.state.is_multiple_of(8)
        && d.head_dim.is_multiple_of(8);
    if sg {
        let groups = nq.div_ceil(8) as u64 * d.heads as u64 * chunks;
        let aligned = [q.stride, q.offset, k.stride, k.offset]
            .into_iter()
            .chain([v.stride, v.offset, y.stride, y.offset])
            .all(|x| x % 4 == 0);
        let vec4 = aligned && d.state.is_multiple_of(32) && d.head_dim.is_multiple_of(32);
        let kernel = if vec4 {
            K_VEC4_SG.for_key(&K_VEC4_SG_N, d.state)
        } else {
            &K_SG
        };
        return rec.dispatch(
            kernel,
            params,
            &[q.buf, k.buf, v.buf, y.buf],
            grid_groups(groups),
        );
    }
    rec.dispatch(
        &K,
        params,
        &[q.buf, k.buf, v.buf, y.buf],
        grid64(nq as u64 * d.heads as u64 * chunks),
    )
}

//! Attention as two products over the attention cache held in textures (no RoPE):
//! `S = Q K^T` per group (the matmul / matvec kernels, K the matrix), a causal softmax in place
//! (attention_softmax), then `Y = P V` per group (V^T the matrix).
//!
//! Why: Q = C and K = B are shared by the H/G heads of a group, so the scores are computed once
//! per group instead of once per head as in the fused kernel (attention_*.wgsl), and both
//! products run on the kernels that read their matrix from textures and X from the uniform
//! staging buffer or a texture (the cheap loads on CPU Vulkan). Costs a [G, nq, T] score
//! buffer (queries in chunks that fit one binding) and the cache again as textures.

use crate::gpu::context::{GpuBuffer, GpuContext, Kernel};
use crate::gpu::error::ensure;
use crate::gpu::recorder::{grid64, grid_groups, Recorder};
use crate::gpu::weights::{GpuMatrix, MatBlock, WeightFormat};
use crate::gpu::GpuResult;

use super::rows_to_texture::rows_to_texture;
use super::{kernel_params, words};
use super::{matmul, SsmDims, View};

kernel_params! {
    /// The params of columns_to_texture.wgsl.
    pub(crate) struct ColumnsParams {
        len: u32,
        r_count: u32,
        c0: u32,
        nc: u32,
        x_stride: u32,
        x_off: u32,
    }
}

kernel_params! {
    /// The params of attention_softmax.wgsl.
    pub(crate) struct SoftmaxParams {
        rows: u32,
        nq: u32,
        p0: u32,
        t_len: u32,
        scale: f32,
    }
}

const COLUMNS_TO_TEXTURE: Kernel = Kernel {
    shader: "columns_to_texture",
    entry: "main",
    access: "ro",
    spec: "",
};
const SOFTMAX: Kernel = Kernel {
    shader: "attention_softmax",
    entry: "main",
    access: "w",
    spec: "",
};

/// The attention cache's keys and values as textures, per group g: `keys[g]` texel `(j, s)` =
/// `K_s[gN + 4j ..]` (capacity rows), `values_t[g]` texel `(c, r)` = `V[4c .. 4c+4, gHP/G + r]`
/// (V^T: (H/G)*P rows, capacity/4 texel columns).
#[derive(Clone)]
pub struct AttentionTextures {
    dims: SsmDims,
    capacity: u32,
    keys: Vec<GpuBuffer>,
    values_t: Vec<GpuBuffer>,
}

impl AttentionTextures {
    /// Textures for `capacity` positions, or `None` where they do not fit the adapter's
    /// texture size (the caller then runs the fused attention kernel on the buffers).
    pub fn new(ctx: &GpuContext, d: SsmDims, capacity: u32) -> GpuResult<Option<Self>> {
        d.check("attention cache")?;
        let maxd = ctx.limits.max_texture_dimension_2d;
        let hpg = d.inner() / d.groups;
        let fits = capacity <= maxd && d.state.div_ceil(4) <= maxd && hpg <= maxd;
        if !fits || capacity == 0 {
            return Ok(None);
        }
        let usage = wgpu::TextureUsages::STORAGE_BINDING;
        let f32 = WeightFormat::F32;
        let mut keys = Vec::new();
        let mut values_t = Vec::new();
        for _ in 0..d.groups {
            let (_, k) = ctx.new_texture(
                "attention_cache.K",
                d.state.div_ceil(4),
                capacity,
                f32,
                usage,
            )?;
            let (_, v) =
                ctx.new_texture("attention_cache.V^T", capacity.div_ceil(4), hpg, f32, usage)?;
            keys.push(k);
            values_t.push(v);
        }
        Ok(Some(Self {
            dims: d,
            capacity,
            keys,
            values_t,
        }))
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Copies cache rows `from..to` of `k` (B rows, [>= to, G*N]) and `v` (x rows,
    /// [>= to, H*P]) into the textures. Rows of V^T are rewritten by whole texels, so every
    /// row of `v` below `to` in those texels must already be final.
    pub fn append(
        &self,
        rec: &mut Recorder,
        k: View,
        v: View,
        from: u32,
        to: u32,
    ) -> GpuResult<()> {
        const OP: &str = "attention cache textures";
        let d = self.dims;
        ensure(OP, from <= to && to <= self.capacity, || {
            format!("rows {from}..{to} of a capacity of {}", self.capacity)
        })?;
        k.check(OP, "K", to, d.bc_width())?;
        v.check(OP, "V", to, d.inner())?;
        if from == to {
            return Ok(());
        }
        let hpg = d.inner() / d.groups;
        let (c0, c1) = (from / 4, to.div_ceil(4));
        for g in 0..d.groups {
            let kr = k.rows_from(from).cols_from(g * d.state);
            rows_to_texture(rec, to - from, d.state, kr, &self.keys[g as usize], from, 0)?;
            let vg = v.cols_from(g * hpg);
            let params = ColumnsParams {
                len: to,
                r_count: hpg,
                c0,
                nc: c1 - c0,
                x_stride: vg.stride,
                x_off: vg.offset,
            };
            let bufs = [vg.buf, &self.values_t[g as usize]];
            rec.dispatch(
                &COLUMNS_TO_TEXTURE,
                words(&params),
                &bufs,
                grid64((c1 - c0) as u64 * hpg as u64),
            )?;
        }
        Ok(())
    }
}

/// Causal attention without RoPE for `nq` queries at positions `p0..p0+nq` over the cache in
/// `cache` (rows `0..p0+nq` appended): `y[t, h, :] = sum_{s <= p0+t} softmax_s(scale <Q_t, K_s>)
/// V_s[h, :]`, `q` rows of C [nq, G*N], `y` [nq, H*P]. The same results as [`super::attention`].
pub fn attention_products(
    rec: &mut Recorder,
    d: SsmDims,
    nq: u32,
    p0: u32,
    q: View,
    cache: &AttentionTextures,
    y: View,
    scale: f32,
) -> GpuResult<()> {
    const OP: &str = "attention_products";
    d.check(OP)?;
    ensure(OP, cache.dims == d, || {
        format!("cache of {:?} for {d:?}", cache.dims)
    })?;
    let t_len = p0.saturating_add(nq);
    ensure(OP, t_len <= cache.capacity, || {
        format!("{t_len} positions in a cache of {}", cache.capacity)
    })?;
    q.check(OP, "q", nq, d.bc_width())?;
    y.check(OP, "y", nq, d.inner())?;
    if nq == 0 {
        return Ok(());
    }
    let hpg = d.inner() / d.groups;
    // Queries per pass so that the [G, rows, T] scores fit one binding.
    let maxe = rec.ctx().max_binding_size() / 4;
    let per_query = d.groups as u64 * t_len as u64;
    let chunk = (maxe / per_query).min(nq as u64) as u32;
    ensure(OP, chunk > 0, || {
        format!("{t_len} positions: one query's scores exceed a binding")
    })?;
    let matrix = |rows: u32, cols: u32, tex: &GpuBuffer| GpuMatrix {
        rows: rows as usize,
        cols: cols as usize,
        blocks: vec![MatBlock {
            row_start: 0,
            rows: rows as usize,
            ldk: cols.next_multiple_of(4) as usize,
            buffer: tex.clone(),
        }],
    };
    let mut t0 = 0;
    while t0 < nq {
        let n = chunk.min(nq - t0);
        let scores = rec
            .ctx()
            .scratch("attention.scores", (d.groups * n * t_len) as usize)?;
        for g in 0..d.groups {
            let keys = matrix(t_len, d.state, &cache.keys[g as usize]);
            let s = View::new(&scores, t_len, g * n * t_len);
            matmul(
                rec,
                n,
                q.rows_from(t0).cols_from(g * d.state),
                &keys,
                None,
                s,
                false,
            )?;
        }
        let params = SoftmaxParams {
            rows: d.groups * n,
            nq: n,
            p0: p0 + t0,
            t_len,
            scale,
        };
        rec.dispatch(
            &SOFTMAX,
            words(&params),
            &[&scores],
            grid_groups((d.groups * n) as u64),
        )?;
        for g in 0..d.groups {
            let values = matrix(hpg, t_len, &cache.values_t[g as usize]);
            let pr = View::new(&scores, t_len, g * n * t_len);
            matmul(
                rec,
                n,
                pr,
                &values,
                None,
                y.rows_from(t0).cols_from(g * hpg),
                false,
            )?;
        }
        t0 += n;
    }
    Ok(())
}

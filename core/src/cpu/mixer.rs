//! The TransMamba mixer of MODEL.md, steps 1–7, on the CPU, for `T` new tokens at absolute
//! positions `p0..p0+T` of a sequence whose earlier tokens live in a [`LayerState`].
//!
//! Prefill is the call with `p0 = 0`; a decode step is the call with `T = 1`. The attention
//! region, the memory converter and the SSM region are written exactly as the spec states them
//! (a direct softmax, the closed-form converter, the token-by-token recurrence), so this file is
//! the oracle the GPU kernels are tested against.

use rayon::prelude::*;

use super::elementwise::{conv_silu, skip_gate_norm};
use super::ops::{dot, matmul, rope_in_place, softplus};
use super::weights::LayerMatrices;
use crate::config::ModelConfig;
use crate::model::LayerWeights;
use crate::schedule::TransPoint;

/// What one layer remembers of the tokens it has seen.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LayerState {
    /// The last K-1 pre-conv xBC rows, oldest first, `[(K-1), Dc]` (zeros before position 0).
    pub conv_state: Vec<f32>,
    /// Keys (B), values (x) and dt of every position before the TransPoint seen so far.
    pub attention_cache: AttentionCache,
    /// `[H, P, N]`, present from the TransPoint on.
    pub ssm_state: Option<Vec<f32>>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct AttentionCache {
    /// `[len, G·N]`, unrotated.
    pub b: Vec<f32>,
    /// `[len, H·P]`.
    pub x: Vec<f32>,
    /// `[len, H]`.
    pub dt: Vec<f32>,
    pub len: usize,
}

impl LayerState {
    pub fn new(cfg: &ModelConfig) -> Self {
        Self {
            conv_state: vec![0.0; (cfg.conv_kernel - 1) * cfg.d_conv()],
            ..Default::default()
        }
    }

    /// Bytes this state holds now (f32 everywhere).
    pub fn bytes(&self) -> usize {
        let c = &self.attention_cache;
        4 * (self.conv_state.len()
            + c.b.len()
            + c.x.len()
            + c.dt.len()
            + self.ssm_state.as_ref().map_or(0, Vec::len))
    }
}

/// Runs the mixer on `u` (`[T, D]`, already RMS-normalised) and returns `[T, D]`.
pub(crate) fn mixer(
    cfg: &ModelConfig,
    w: &LayerWeights,
    mats: &LayerMatrices,
    transpoint: TransPoint,
    state: &mut LayerState,
    p0: usize,
    u: &[f32],
) -> Vec<f32> {
    let (h_n, n_n, g_n) = (cfg.num_heads, cfg.state_size, cfg.n_groups);
    let (di, dc) = (cfg.d_inner(), cfg.d_conv());
    let t_n = u.len() / cfg.hidden_size;
    let width = cfg.d_in_proj();

    // The layer's small tensors (conv weights and state, the norm's weight, D, dt bias, A),
    // which the rest of the last token's weight stream evicted, are fetched while in_proj's
    // product streams: decode's conv, dt and norm steps (serial) waited on them. In-process
    // A/B, q4_0 decode on 2 threads: ~70 µs of a ~3.5 ms token.
    for t in [&w.conv_weight, &w.gated_norm, &w.d, &w.dt_bias, &w.a_log]
        .into_iter()
        .chain(&w.conv_bias)
    {
        super::simd::prefetch(&t.data);
    }
    super::simd::prefetch(&state.conv_state);

    // 1. in_proj: rows [z | xBC | dt_raw].
    let zxbcdt = matmul(u, t_n, mats.in_proj, w.in_proj_bias.as_ref());

    // 2. causal depthwise conv over [conv_state ; new rows], then SiLU.
    let k_n = cfg.conv_kernel;
    let mut history = state.conv_state.clone();
    for t in 0..t_n {
        history.extend_from_slice(&zxbcdt[t * width + di..t * width + di + dc]);
    }
    let mut xbc = vec![0f32; t_n * dc];
    let bias = w.conv_bias.as_ref().map(|b| &b.data[..]);
    xbc.par_chunks_mut(dc).enumerate().for_each(|(t, out)| {
        conv_silu(
            out,
            bias,
            &w.conv_weight.data,
            &history[t * dc..(t + k_n) * dc],
        );
    });
    state.conv_state = history[t_n * dc..].to_vec();
    let x_of = |t: usize| &xbc[t * dc..t * dc + di];
    let b_of = |t: usize| &xbc[t * dc + di..t * dc + di + g_n * n_n];
    let c_of = |t: usize| &xbc[t * dc + di + g_n * n_n..(t + 1) * dc];

    // 3. dt and A.
    let (lo, hi) = cfg.time_step_limit;
    let dt: Vec<f32> = (0..t_n * h_n)
        .map(|i| {
            let raw = zxbcdt[(i / h_n) * width + di + dc + i % h_n];
            softplus(raw + w.dt_bias.data[i % h_n]).clamp(lo, hi)
        })
        .collect();
    let a: Vec<f32> = w.a_log.data.iter().map(|v| -v.exp()).collect();

    // 4. attention region, memory converter, SSM region.
    let n_att = (0..t_n)
        .filter(|&i| transpoint.is_attention(p0 + i))
        .count();
    let mut y = vec![0f32; t_n * di];
    if n_att > 0 {
        let cache = &mut state.attention_cache;
        debug_assert_eq!(
            cache.len, p0,
            "attention cache must hold every earlier position"
        );
        for t in 0..n_att {
            cache.b.extend_from_slice(b_of(t));
            cache.x.extend_from_slice(x_of(t));
            cache.dt.extend_from_slice(&dt[t * h_n..(t + 1) * h_n]);
        }
        cache.len += n_att;
        let queries: Vec<&[f32]> = (0..n_att).map(c_of).collect();
        attention(cfg, cache, p0, &queries, &mut y[..n_att * di]);
    }
    if n_att < t_n {
        let s = state.ssm_state.get_or_insert_with(|| {
            let cache = std::mem::take(&mut state.attention_cache);
            memory_converter(cfg, &cache, &a)
        });
        let xs: Vec<&[f32]> = (n_att..t_n).map(x_of).collect();
        let bs: Vec<&[f32]> = (n_att..t_n).map(b_of).collect();
        let cs: Vec<&[f32]> = (n_att..t_n).map(c_of).collect();
        ssm_scan(
            cfg,
            s,
            &a,
            &dt[n_att * h_n..],
            &xs,
            &bs,
            &cs,
            &mut y[n_att * di..],
        );
    }

    // 5–6. D skip, gate, grouped RMSNorm.
    // Per token and independent: rows in parallel (sequential, this was a fifth of prefill).
    let group = di / g_n;
    y.par_chunks_mut(di).enumerate().for_each(|(t, row)| {
        let gated = !transpoint.is_attention(p0 + t) || cfg.attention_gate;
        skip_gate_norm(
            row,
            x_of(t),
            &w.d.data,
            gated.then(|| &zxbcdt[t * width..t * width + di]),
            &w.gated_norm.data,
            group,
            cfg.layer_norm_epsilon,
        );
    });

    // 7. out_proj.
    matmul(&y, t_n, mats.out_proj, w.out_proj_bias.as_ref())
}

/// Causal softmax attention for queries at positions `p0..p0+len(queries)` over every cached
/// position up to each query's own; writes `y[q, h, :]`.
fn attention(
    cfg: &ModelConfig,
    cache: &AttentionCache,
    p0: usize,
    queries: &[&[f32]],
    y: &mut [f32],
) {
    let (h_n, p_n, n_n, g_n) = (cfg.num_heads, cfg.head_dim, cfg.state_size, cfg.n_groups);
    let hpg = cfg.heads_per_group();
    let gn = g_n * n_n;
    let last = p0 + queries.len();
    // Keys and queries per group, rotated once if the model uses RoPE.
    let mut keys = cache.b[..last * gn].to_vec();
    let mut qs: Vec<f32> = queries
        .iter()
        .flat_map(|q| q[..gn].iter().copied())
        .collect();
    if let Some(theta) = cfg.rope_theta {
        for s in 0..last {
            for g in 0..g_n {
                rope_in_place(
                    &mut keys[s * gn + g * n_n..s * gn + (g + 1) * n_n],
                    s,
                    theta,
                );
            }
        }
        for (q, row) in qs.chunks_exact_mut(gn).enumerate() {
            for g in 0..g_n {
                rope_in_place(&mut row[g * n_n..(g + 1) * n_n], p0 + q, theta);
            }
        }
    }
    let per_head: Vec<Vec<f32>> = (0..h_n)
        .into_par_iter()
        .map(|h| {
            let g = h / hpg;
            let mut out = vec![0f32; queries.len() * p_n];
            let mut scores = vec![0f64; last];
            for q in 0..queries.len() {
                let t = p0 + q;
                let qv = &qs[q * gn + g * n_n..q * gn + (g + 1) * n_n];
                let mut max = f64::NEG_INFINITY;
                for s in 0..=t {
                    let k = &keys[s * gn + g * n_n..s * gn + (g + 1) * n_n];
                    scores[s] = cfg.attention_scale as f64 * dot(qv, k) as f64;
                    max = max.max(scores[s]);
                }
                let mut total = 0f64;
                for sc in &mut scores[..=t] {
                    *sc = (*sc - max).exp();
                    total += *sc;
                }
                let o = &mut out[q * p_n..(q + 1) * p_n];
                let mut acc = vec![0f64; p_n];
                for (s, &w) in scores[..=t].iter().enumerate() {
                    let v = &cache.x[s * h_n * p_n + h * p_n..s * h_n * p_n + (h + 1) * p_n];
                    for p in 0..p_n {
                        acc[p] += w * v[p] as f64;
                    }
                }
                for p in 0..p_n {
                    o[p] = (acc[p] / total) as f32;
                }
            }
            out
        })
        .collect();
    let di = h_n * p_n;
    for (h, out) in per_head.iter().enumerate() {
        for q in 0..queries.len() {
            y[q * di + h * p_n..q * di + (h + 1) * p_n]
                .copy_from_slice(&out[q * p_n..(q + 1) * p_n]);
        }
    }
}

/// The memory converter: the SSM state after the cached τ tokens, by MODEL.md's closed form
/// `S[h] = Σ_s exp(A[h]·Σ_{r=s+1}^{τ-1} dt[r,h]) · dt[s,h] · x[s,h] ⊗ B[s,g]`.
pub fn memory_converter(cfg: &ModelConfig, cache: &AttentionCache, a: &[f32]) -> Vec<f32> {
    let (h_n, p_n, n_n) = (cfg.num_heads, cfg.head_dim, cfg.state_size);
    let hpg = cfg.heads_per_group();
    let gn = cfg.n_groups * n_n;
    let per_head: Vec<Vec<f64>> = (0..h_n)
        .into_par_iter()
        .map(|h| {
            let g = h / hpg;
            let mut s = vec![0f64; p_n * n_n];
            // Σ_{r=s+1}^{τ-1} dt[r]: a suffix sum, built walking s downwards.
            let mut suffix = 0f64;
            for pos in (0..cache.len).rev() {
                let dt = cache.dt[pos * h_n + h] as f64;
                let weight = (a[h] as f64 * suffix).exp() * dt;
                let x = &cache.x[pos * h_n * p_n + h * p_n..pos * h_n * p_n + (h + 1) * p_n];
                let b = &cache.b[pos * gn + g * n_n..pos * gn + (g + 1) * n_n];
                for p in 0..p_n {
                    let wx = weight * x[p] as f64;
                    for n in 0..n_n {
                        s[p * n_n + n] += wx * b[n] as f64;
                    }
                }
                suffix += dt;
            }
            s
        })
        .collect();
    per_head.into_iter().flatten().map(|v| v as f32).collect()
}

/// The SSM recurrence from state `s` (`[H, P, N]`, updated in place):
/// `S ← exp(dt·A)·S + dt·x ⊗ B`, `y = S · C`.
#[allow(clippy::too_many_arguments)]
fn ssm_scan(
    cfg: &ModelConfig,
    s: &mut [f32],
    a: &[f32],
    dt: &[f32],
    xs: &[&[f32]],
    bs: &[&[f32]],
    cs: &[&[f32]],
    y: &mut [f32],
) {
    let (h_n, p_n, n_n) = (cfg.num_heads, cfg.head_dim, cfg.state_size);
    let hpg = cfg.heads_per_group();
    let di = h_n * p_n;
    let per_head: Vec<Vec<f32>> = s
        .par_chunks_mut(p_n * n_n)
        .enumerate()
        .map(|(h, sh)| {
            let g = h / hpg;
            let mut out = vec![0f32; xs.len() * p_n];
            let head = ScanHead {
                a: a[h],
                dt: dt.iter().skip(h).step_by(h_n).copied().collect(),
                xs: xs.iter().map(|x| &x[h * p_n..(h + 1) * p_n]).collect(),
                bs: bs.iter().map(|b| &b[g * n_n..(g + 1) * n_n]).collect(),
                cs: cs.iter().map(|c| &c[g * n_n..(g + 1) * n_n]).collect(),
            };
            super::simd::scan_head(&head, sh, &mut out);
            out
        })
        .collect();
    for (h, out) in per_head.iter().enumerate() {
        for t in 0..xs.len() {
            y[t * di + h * p_n..t * di + (h + 1) * p_n]
                .copy_from_slice(&out[t * p_n..(t + 1) * p_n]);
        }
    }
}

/// One head's slice of a scan: `dt[t]`, `x[t]` (`[P]`), `B[t]`, `C[t]` (`[N]`).
pub(crate) struct ScanHead<'a> {
    pub a: f32,
    pub dt: Vec<f32>,
    pub xs: Vec<&'a [f32]>,
    pub bs: Vec<&'a [f32]>,
    pub cs: Vec<&'a [f32]>,
}

//! An independent float64 evaluation of MODEL.md, written plainly for the tests.
//!
//! It shares no code with the runtime. The SSM region is computed by running the recurrence
//! from the first token (the state the memory converter must reproduce), and the attention
//! region by a direct softmax, so agreement checks the converter, the scan and attention at once.

use transmamba::{Model, Schedule};

fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

fn rms_norm(x: &[f64], w: &[f32], eps: f64) -> Vec<f64> {
    let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let inv = 1.0 / (ms + eps).sqrt();
    x.iter().zip(w).map(|(v, w)| v * inv * *w as f64).collect()
}

fn linear(x: &[f64], w: &[f32], n_out: usize, bias: Option<&[f32]>) -> Vec<f64> {
    let k = x.len();
    (0..n_out)
        .map(|o| {
            let s: f64 = (0..k).map(|i| x[i] * w[o * k + i] as f64).sum();
            s + bias.map_or(0.0, |b| b[o] as f64)
        })
        .collect()
}

/// Rotary embedding, rotate-half convention, at absolute `pos` (f64).
pub fn rope(v: &[f64], pos: usize, theta: f64) -> Vec<f64> {
    let n = v.len();
    let half = n / 2;
    let mut out = v.to_vec();
    for i in 0..half {
        let angle = pos as f64 * theta.powf(-2.0 * i as f64 / n as f64);
        out[i] = v[i] * angle.cos() - v[i + half] * angle.sin();
        out[i + half] = v[i + half] * angle.cos() + v[i] * angle.sin();
    }
    out
}

/// Logits `[T, V]` of the whole prompt under `schedule`, in f64.
// Indexed loops on purpose: they mirror MODEL.md's formulas term by term.
#[allow(clippy::needless_range_loop)]
pub fn forward_f64(model: &Model, schedule: &Schedule, tokens: &[u32]) -> Vec<f64> {
    let c = &model.config;
    let (d, h_n, p_n, n_n, g_n) = (
        c.hidden_size,
        c.num_heads,
        c.head_dim,
        c.state_size,
        c.n_groups,
    );
    let (di, dc, k_n) = (h_n * p_n, c.d_conv(), c.conv_kernel);
    let eps = c.layer_norm_epsilon as f64;
    let t_n = tokens.len();
    let mut hs: Vec<Vec<f64>> = tokens
        .iter()
        .map(|&t| {
            model.embedding.data[t as usize * d..(t as usize + 1) * d]
                .iter()
                .map(|&v| v as f64)
                .collect()
        })
        .collect();
    for (li, w) in model.layers.iter().enumerate() {
        let tau = schedule.layer(li).attention_len(t_n);
        let proj: Vec<Vec<f64>> = hs
            .iter()
            .map(|h| {
                let u = rms_norm(h, &w.norm.data, eps);
                linear(
                    &u,
                    &w.in_proj.data,
                    c.d_in_proj(),
                    w.in_proj_bias.as_ref().map(|b| &b.data[..]),
                )
            })
            .collect();
        // conv + silu
        let xbc: Vec<Vec<f64>> = (0..t_n)
            .map(|t| {
                (0..dc)
                    .map(|ch| {
                        let mut acc = w.conv_bias.as_ref().map_or(0.0, |b| b.data[ch] as f64);
                        for k in 0..k_n {
                            let src = t as isize - (k_n as isize - 1) + k as isize;
                            if src >= 0 {
                                acc += w.conv_weight.data[ch * k_n + k] as f64
                                    * proj[src as usize][di + ch];
                            }
                        }
                        silu(acc)
                    })
                    .collect()
            })
            .collect();
        let x = |t: usize, h: usize, p: usize| xbc[t][h * p_n + p];
        let b = |t: usize, g: usize| &xbc[t][di + g * n_n..di + (g + 1) * n_n];
        let cc =
            |t: usize, g: usize| &xbc[t][di + g_n * n_n + g * n_n..di + g_n * n_n + (g + 1) * n_n];
        let (lo, hi) = (c.time_step_limit.0 as f64, c.time_step_limit.1 as f64);
        let dt = |t: usize, h: usize| {
            let v = proj[t][di + dc + h] + w.dt_bias.data[h] as f64;
            let sp = if v > 20.0 { v } else { v.exp().ln_1p() };
            sp.clamp(lo, hi)
        };
        let mut y = vec![vec![0f64; di]; t_n];
        for h in 0..h_n {
            let g = h / (h_n / g_n);
            let a = -(w.a_log.data[h] as f64).exp();
            // attention region
            for t in 0..tau {
                let q = match c.rope_theta {
                    Some(th) => rope(cc(t, g), t, th as f64),
                    None => cc(t, g).to_vec(),
                };
                let scores: Vec<f64> = (0..=t)
                    .map(|s| {
                        let k = match c.rope_theta {
                            Some(th) => rope(b(s, g), s, th as f64),
                            None => b(s, g).to_vec(),
                        };
                        c.attention_scale as f64 * q.iter().zip(&k).map(|(a, b)| a * b).sum::<f64>()
                    })
                    .collect();
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for p in 0..p_n {
                    y[t][h * p_n + p] = (0..=t).map(|s| e[s] * x(s, h, p)).sum::<f64>() / z;
                }
            }
            // SSM region: the recurrence from token 0 (what the converter must give at tau).
            let mut st = vec![0f64; p_n * n_n];
            for t in 0..t_n {
                let dtv = dt(t, h);
                let decay = (dtv * a).exp();
                for p in 0..p_n {
                    for n in 0..n_n {
                        st[p * n_n + n] = decay * st[p * n_n + n] + dtv * x(t, h, p) * b(t, g)[n];
                    }
                }
                if t >= tau {
                    for p in 0..p_n {
                        y[t][h * p_n + p] = (0..n_n).map(|n| st[p * n_n + n] * cc(t, g)[n]).sum();
                    }
                }
            }
        }
        for t in 0..t_n {
            for i in 0..di {
                y[t][i] += w.d.data[i / p_n] as f64 * x(t, i / p_n, i % p_n);
                if t >= tau || c.attention_gate {
                    y[t][i] *= silu(proj[t][i]);
                }
            }
            let gs = di / g_n;
            let mut normed = Vec::with_capacity(di);
            for gi in 0..g_n {
                normed.extend(rms_norm(
                    &y[t][gi * gs..(gi + 1) * gs],
                    &w.gated_norm.data[gi * gs..(gi + 1) * gs],
                    eps,
                ));
            }
            let out = linear(
                &normed,
                &w.out_proj.data,
                d,
                w.out_proj_bias.as_ref().map(|b| &b.data[..]),
            );
            for i in 0..d {
                hs[t][i] += out[i];
            }
            if let Some(mlp) = &w.mlp {
                let m = c.mlp_intermediate_size;
                let u = rms_norm(&hs[t], &mlp.norm2.data, eps);
                let vg = linear(&u, &mlp.fc1.data, 2 * m, None);
                let act: Vec<f64> = (0..m).map(|j| vg[j] * silu(vg[m + j])).collect();
                let out = linear(&act, &mlp.fc2.data, d, None);
                for i in 0..d {
                    hs[t][i] += out[i];
                }
            }
        }
    }
    let head = model.output_matrix();
    hs.iter()
        .flat_map(|h| {
            linear(
                &rms_norm(h, &model.norm_f.data, eps),
                &head.data,
                model.vocab,
                None,
            )
        })
        .collect()
}

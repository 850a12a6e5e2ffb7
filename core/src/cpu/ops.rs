//! Dense building blocks of the CPU reference: projections, norms, activations.

use rayon::prelude::*;

use crate::model::Tensor;

/// Dot product with eight independent f32 lanes (vectorises, and bounds the rounding error of
/// a long sum better than one running total), summed in f64.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut total: f64 = acc.iter().map(|&v| v as f64).sum();
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        total += (*x as f64) * (*y as f64);
    }
    total as f32
}

/// `Y[rows, out] = X[rows, in] · Wᵀ (+ bias)` with W stored `[out, in]` as in the checkpoints.
pub fn matmul(x: &[f32], rows: usize, w: &Tensor, bias: Option<&Tensor>) -> Vec<f32> {
    let (n_out, k) = (w.shape[0], w.shape[1]);
    debug_assert_eq!(x.len(), rows * k);
    // Work per output row of W, so each weight row is read once and stays in cache while it
    // meets every input row; the result is built transposed, then put back in row order.
    let mut yt = vec![0f32; n_out * rows];
    yt.par_chunks_mut(rows.max(1))
        .enumerate()
        .for_each(|(o, col)| {
            let w_o = &w.data[o * k..(o + 1) * k];
            let b = bias.map_or(0.0, |b| b.data[o]);
            for (r, y) in col.iter_mut().enumerate() {
                *y = dot(&x[r * k..(r + 1) * k], w_o) + b;
            }
        });
    if rows == 1 {
        return yt;
    }
    let mut y = vec![0f32; rows * n_out];
    for o in 0..n_out {
        for r in 0..rows {
            y[r * n_out + o] = yt[o * rows + r];
        }
    }
    y
}

/// RMSNorm over rows of width `w.len()`: `x / sqrt(mean(x²) + eps) ⊙ w`.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let d = w.len();
    let mut out = vec![0f32; x.len()];
    for (row, o) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let inv = inv_rms(row, eps);
        for i in 0..d {
            o[i] = row[i] * inv * w[i];
        }
    }
    out
}

/// `1 / sqrt(mean(x²) + eps)`, accumulated in f64.
pub fn inv_rms(x: &[f32], eps: f32) -> f32 {
    let ms = x.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / x.len() as f64;
    (1.0 / (ms + eps as f64).sqrt()) as f32
}

pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// softplus without overflow for large inputs (torch switches to the identity above 20 too).
pub fn softplus(x: f32) -> f32 {
    if x > 20.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

/// Rotary embedding, rotate-half convention over all `v.len()` dims, at absolute `pos`.
pub fn rope_in_place(v: &mut [f32], pos: usize, theta: f32) {
    let n = v.len();
    let half = n / 2;
    for i in 0..half {
        let inv_freq = (theta as f64).powf(-2.0 * i as f64 / n as f64);
        let angle = pos as f64 * inv_freq;
        let (sin, cos) = angle.sin_cos();
        let (a, b) = (v[i] as f64, v[i + half] as f64);
        v[i] = (a * cos - b * sin) as f32;
        v[i + half] = (b * cos + a * sin) as f32;
    }
}

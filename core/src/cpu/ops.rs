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

/// Below this many rows a product is a matrix-vector pass (each weight row read once, straight
/// from memory: decode is bandwidth-bound); from it on, a packed GEMM (prefill is compute-bound).
pub const GEMM_MIN_ROWS: usize = 8;

/// `Y[rows, out] = X[rows, in] · Wᵀ (+ bias)` with W stored `[out, in]` as in the checkpoints.
pub fn matmul(x: &[f32], rows: usize, w: &Tensor, bias: Option<&Tensor>) -> Vec<f32> {
    let (n_out, k) = (w.shape[0], w.shape[1]);
    assert_eq!(x.len(), rows * k, "matmul: input is not [rows, in]");
    let mut y = if rows >= GEMM_MIN_ROWS {
        gemm_xwt(x, rows, &w.data, n_out, k)
    } else {
        gemv_rows(x, rows, &w.data, n_out, k)
    };
    if let Some(b) = bias {
        for row in y.chunks_exact_mut(n_out) {
            for (v, b) in row.iter_mut().zip(&b.data) {
                *v += b;
            }
        }
    }
    y
}

/// A few input rows against every weight row: one rayon task per block of weight rows, so each
/// weight row is read from memory once and meets every input row while it is in cache.
fn gemv_rows(x: &[f32], rows: usize, w: &[f32], n_out: usize, k: usize) -> Vec<f32> {
    let mut yt = vec![0f32; n_out * rows];
    yt.par_chunks_mut(rows.max(1))
        .with_min_len(16)
        .enumerate()
        .for_each(|(o, col)| {
            let w_o = &w[o * k..(o + 1) * k];
            for (r, y) in col.iter_mut().enumerate() {
                *y = dot(&x[r * k..(r + 1) * k], w_o);
            }
        });
    if rows <= 1 {
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

/// `X[rows, k] · W[n, k]ᵀ` through `matrixmultiply`'s packed f32 GEMM (its AVX2/FMA kernel is
/// picked at run time; ~4-5x our dot-product loop at prefill sizes). W needs no transposed copy:
/// it is read as a `[k, n]` matrix with strides (1, k). The threads split the output columns,
/// each writing its own block (no shared mutable memory), then the blocks are put in place.
fn gemm_xwt(x: &[f32], rows: usize, w: &[f32], n: usize, k: usize) -> Vec<f32> {
    assert!(
        x.len() >= rows * k && w.len() >= n * k,
        "gemm: operand sizes"
    );
    let threads = rayon::current_num_threads().max(1);
    // One column block per thread, at least 64 wide: every block packs all of X again, so
    // more blocks than threads cost packing time (measured: 2 per thread spent 20% in packing).
    let width = n.div_ceil(threads).max(64).min(n.max(1));
    let blocks: Vec<(usize, Vec<f32>)> = (0..n)
        .step_by(width)
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|j0| {
            let cols = width.min(n - j0);
            let mut c = vec![0f32; rows * cols];
            // SAFETY: A is `rows × k` row-major inside `x`; B is W's rows j0..j0+cols read as
            // `k × cols` (element (p, j) at w[(j0 + j)·k + p]), inside `w` by the assert above;
            // C is the `rows × cols` row-major `c`. No operand aliases another.
            unsafe {
                matrixmultiply::sgemm(
                    rows,
                    k,
                    cols,
                    1.0,
                    x.as_ptr(),
                    k as isize,
                    1,
                    w.as_ptr().add(j0 * k),
                    1,
                    k as isize,
                    0.0,
                    c.as_mut_ptr(),
                    cols as isize,
                    1,
                );
            }
            (j0, c)
        })
        .collect();
    if blocks.len() == 1 {
        return blocks
            .into_iter()
            .next()
            .map(|(_, c)| c)
            .unwrap_or_default();
    }
    let mut y = vec![0f32; rows * n];
    for (j0, c) in &blocks {
        let cols = c.len() / rows.max(1);
        for r in 0..rows {
            y[r * n + j0..r * n + j0 + cols].copy_from_slice(&c[r * cols..(r + 1) * cols]);
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

//! Dense building blocks of the CPU reference: projections, norms, activations.

use rayon::prelude::*;

use crate::model::Tensor;

pub use super::fixed_dot::{
    dot_q4_0_group, dot_quant_fixed, dot_quant_fixed_rows, dot_quant_fixed_run, FixedRow,
};
pub use super::simd::{dot, dot_f16, dot_quant, widen_f16};
use super::weights::Matrix;
use crate::quant::Layout;

/// Below this many rows a product is a matrix-vector pass (each weight row read once, straight
/// from memory: decode is bandwidth-bound); from it on, a packed GEMM (prefill is compute-bound).
pub const GEMM_MIN_ROWS: usize = 8;

impl<'a> From<&'a Tensor> for Matrix<'a> {
    /// The tensor's f32 values, or its blocks / f16 values for a matrix held as those only.
    fn from(t: &'a Tensor) -> Self {
        match (t.blocks_only(), t.half_only(), &t.shape[..]) {
            (Some(q), ..) => Matrix::Quant(q),
            (None, Some(data), &[rows, cols]) => Matrix::F16 { data, rows, cols },
            _ => Matrix::F32(t),
        }
    }
}

/// `Y[rows, out] = X[rows, in] · Wᵀ (+ bias)` with W stored `[out, in]` as in the checkpoints,
/// in f32, f16, q8_0 or q4_0 ([`Matrix`]).
pub fn matmul<'a>(
    x: &[f32],
    rows: usize,
    w: impl Into<Matrix<'a>>,
    bias: Option<&Tensor>,
) -> Vec<f32> {
    let w = w.into();
    let (n_out, k) = (w.rows(), w.cols());
    assert_eq!(x.len(), rows * k, "matmul: input is not [rows, in]");
    let mut y = match w {
        Matrix::F32(t) if rows >= GEMM_MIN_ROWS => gemm_xwt(x, rows, &t.data, n_out, k),
        Matrix::F32(t) => gemv_rows(rows, &t.data, n_out, k, |r, w| {
            dot(&x[r * k..(r + 1) * k], w)
        }),
        // Prefill: widen once (a small cost beside the GEMM's 2·rows FLOPs per weight).
        Matrix::F16 { data, .. } if rows >= GEMM_MIN_ROWS => {
            let wide = par_rows(n_out, k, 1, |r, o| {
                for (o, &h) in o.iter_mut().zip(&data[r * k..(r + 1) * k]) {
                    *o = widen_f16(h);
                }
            });
            gemm_xwt(x, rows, &wide, n_out, k)
        }
        Matrix::F16 { data, .. } => gemv_rows(rows, data, n_out, k, |r, w| {
            dot_f16(&x[r * k..(r + 1) * k], w)
        }),
        // Prefill: dequantize once, as f16 is widened.
        Matrix::Quant(q) if rows >= GEMM_MIN_ROWS => {
            // Eight rows a task: a grouped q4_0 layout holds them together.
            let wide = par_rows(n_out, k, 8, |r0, o| {
                for (r, o) in o.chunks_exact_mut(k.max(1)).enumerate() {
                    q.dequantize_row(r0 + r, o);
                }
            });
            gemm_xwt(x, rows, &wide, n_out, k)
        }
        // Decode: x once in fixed point, then integer multiply-adds against the codes
        // (cpu/fixed_dot.rs); a non-finite x takes the f32 dots, which carry it through.
        Matrix::Quant(q) => {
            let fixed: Option<Vec<FixedRow>> = x
                .chunks_exact(k.max(1))
                .map(|x| FixedRow::new(x, q.format))
                .collect();
            match fixed {
                // Runs of 8 weight rows a call (pairs inside on SIMD128: the browser's kernel
                // reads x once for both).
                Some(f) if q.layout() == Layout::Groups8 => {
                    // A group is 8 rows' bytes: each task's slice starts at its group.
                    const G: usize = crate::quant::groups8::ROWS;
                    gemv_row_groups::<u8, G>(rows, &q.bytes, n_out, q.row_bytes(), |r, w, out| {
                        dot_q4_0_group(&f[r], w, out)
                    })
                }
                Some(f) => {
                    gemv_row_groups::<u8, 8>(rows, &q.bytes, n_out, q.row_bytes(), |r, w, out| {
                        dot_quant_fixed_run(&f[r], w, out)
                    })
                }
                None => gemv_rows(rows, &q.bytes, n_out, q.row_bytes(), |r, w| {
                    dot_quant(q.format, &x[r * k..(r + 1) * k], w)
                }),
            }
        }
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

/// `X[rows, k] · W[n, k]ᵀ` through the `gemm` crates' packed f32 GEMM (`gemm-f32`: only the f32
/// kernels are compiled) (its AVX2/FMA, AVX-512 or
/// NEON kernel picked at run time; SIMD128 in the browser build), threads through rayon. W needs
/// no transposed copy: it is read as a `[k, n]` matrix with strides (1, k). Measured at the
/// mamba2-130m prefill sizes (512 rows, `core/examples/cpu_gemm.rs`, 2 cores, alternating):
/// 106-137 GFLOP/s against 65-122 for `matrixmultiply` split over the threads by column blocks,
/// and 2-4x our dot-product loop. Its AVX-512 kernels (gemm 0.19's `x86-v4` feature, stable
/// Rust) against its AVX2 ones on this machine (AMD Zen 5): in_proj 169-173 against 138-145
/// GFLOP/s, out_proj 139-142 against 146-189: ~10% off a layer's products, so they are on.
fn gemm_xwt(x: &[f32], rows: usize, w: &[f32], n: usize, k: usize) -> Vec<f32> {
    assert!(
        x.len() >= rows * k && w.len() >= n * k,
        "gemm: operand sizes"
    );
    // Not zeroed first (a serial memset of the whole output, ~2% of a prefill): the GEMM
    // writes every value and reads none (`read_dst` false).
    let mut y: Vec<f32> = Vec::with_capacity(rows * n);
    // gemm cannot detect wasm features at run time and leaves its SIMD128 kernels off unless
    // told (its scalar 2x4 kernel ran our browser prefill); this module is built with SIMD128,
    // so every engine that loads it has them. Set before the first call, which fixes the kernel.
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    gemm_common::set_wasm_simd128(true);
    let threads = rayon::current_num_threads().max(1);
    // SAFETY: dst is the `rows × n` row-major `y` (column stride 1, row stride n); lhs is X,
    // `rows × k` row-major inside `x`; rhs is Wᵀ, `k × n` with column stride k and row stride 1,
    // inside `w` (both by the assert above). `read_dst` false: y is only written.
    unsafe {
        gemm_f32::gemm::f32::get_gemm_fn()(
            rows,
            n,
            k,
            y.as_mut_ptr(),
            1,
            n as isize,
            false,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            if threads > 1 {
                gemm_common::Parallelism::Rayon(threads)
            } else {
                gemm_common::Parallelism::None
            },
        );
        // SAFETY: the call above wrote all rows · n values (dst is written, never read).
        y.set_len(rows * n);
    }
    y
}

/// `rows × k` values, `per` rows at a time (fewer at the end) written by `fill(r0, rows)` on
/// rayon's threads, without the zeroing pass `vec![0.0; n]` makes (a serial memset of a whole
/// widened matrix before a prefill product): each task fills scratch rows of its own and moves
/// them in.
fn par_rows(
    rows: usize,
    k: usize,
    per: usize,
    fill: impl Fn(usize, &mut [f32]) + Sync,
) -> Vec<f32> {
    let (n, chunk) = (rows * k, (per * k).max(1));
    let mut out: Vec<f32> = Vec::with_capacity(n);
    out.spare_capacity_mut()[..n]
        .par_chunks_mut(chunk)
        .enumerate()
        .for_each_init(
            || vec![0f32; chunk],
            |scratch, (c, dst)| {
                let scratch = &mut scratch[..dst.len()];
                fill(c * per, scratch);
                for (d, &v) in dst.iter_mut().zip(scratch.iter()) {
                    d.write(v);
                }
            },
        );
    // SAFETY: the chunks cover 0..n and each was written in full (its scratch is as long).
    unsafe { out.set_len(n) };
    out
}

/// A few input rows against every weight row: one rayon task per block of weight rows, so each
/// weight row is read from memory once and meets every input row while it is in cache. A
/// weight row is `row_len` elements of `w` (k values, or a quantized row's bytes); `dot(r, w_o)`
/// is input row r's product with weight row `w_o`.
fn gemv_rows<W: Sync>(
    rows: usize,
    w: &[W],
    n_out: usize,
    row_len: usize,
    dot: impl Fn(usize, &[W]) -> f32 + Sync,
) -> Vec<f32> {
    gemv_row_groups::<W, 1>(rows, w, n_out, row_len, |r, w_g, out| out[0] = dot(r, w_g))
}

/// [`gemv_rows`], G weight rows a step: `dot(r, w_g, out)` writes input row r's products with
/// the (up to G; fewer at the end) consecutive weight rows of `w_g` into `out`.
fn gemv_row_groups<W: Sync, const G: usize>(
    rows: usize,
    w: &[W],
    n_out: usize,
    row_len: usize,
    dot: impl Fn(usize, &[W], &mut [f32]) + Sync,
) -> Vec<f32> {
    let mut yt = vec![0f32; n_out * rows];
    let per_row = rows.max(1);
    yt.par_chunks_mut(G * per_row)
        // One contiguous run of rows per task, a few per thread: long sequential streams for the
        // prefetchers (decode is bandwidth-bound), enough tasks to balance.
        .with_min_len(
            n_out
                .div_ceil(4 * G * rayon::current_num_threads().max(1))
                .max(16usize.div_ceil(G)),
        )
        .enumerate()
        .for_each(|(g, col)| {
            let (o, n) = (g * G, col.len() / per_row);
            // G rows' elements, fewer at the end of a row layout; a grouped layout's last
            // group is whole (padded), and its task reads all of it.
            let w_g = &w[o * row_len..((o + G) * row_len).min(w.len())];
            let mut out = [0f32; G];
            for r in 0..rows {
                dot(r, w_g, &mut out[..n]);
                for (i, &v) in out[..n].iter().enumerate() {
                    col[i * rows + r] = v;
                }
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

/// RMSNorm over rows of width `w.len()`: `x / sqrt(mean(x²) + eps) ⊙ w`.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let d = w.len();
    let mut out = vec![0f32; x.len()];
    out.par_chunks_mut(d.max(1))
        .zip(x.par_chunks(d.max(1)))
        .for_each(|(o, row)| {
            let inv = inv_rms(row, eps);
            for i in 0..d {
                o[i] = row[i] * inv * w[i];
            }
        });
    out
}

/// `1 / sqrt(mean(x²) + eps)`, accumulated in f64 in 8 independent lanes (one running sum was
/// a chain of dependent f64 adds, ~4% of a prefill through the gated norm); inlined so the
/// AVX2 builds of its callers (`elementwise.rs`) vectorise it.
#[inline]
pub fn inv_rms(x: &[f32], eps: f32) -> f32 {
    let mut lanes = [0f64; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l += v as f64 * v as f64;
        }
    }
    let tail: f64 = chunks
        .remainder()
        .iter()
        .map(|&v| v as f64 * v as f64)
        .sum();
    let ms = (lanes.iter().sum::<f64>() + tail) / x.len() as f64;
    (1.0 / (ms + eps as f64).sqrt()) as f32
}

pub use super::elementwise::silu;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{QuantFormat, QuantMatrix};

    /// Decode products over quantized weights (two weight rows a step, `gemv_row_groups`) for
    /// 1..8 input rows and odd and even output counts, against the f64 product with the
    /// dequantized weights: every output lands in its place, the odd last row included.
    #[test]
    fn quantized_decode_products_put_every_output_in_place() {
        let mut seed = 11u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        for (rows, k, n_out) in [
            (1usize, 96usize, 1usize),
            (1, 160, 33),
            (2, 64, 5),
            (3, 128, 64),
            (7, 32, 17),
        ] {
            let x: Vec<f32> = (0..rows * k).map(|_| next()).collect();
            let w: Vec<f32> = (0..n_out * k).map(|_| next() * 0.1).collect();
            for format in [QuantFormat::Q8_0, QuantFormat::Q4_0] {
                let q = QuantMatrix::quantize("w", format, &w, n_out, k).unwrap();
                let y = matmul(&x, rows, Matrix::Quant(&q), None);
                let wd = q.dequantize();
                for r in 0..rows {
                    for o in 0..n_out {
                        let terms = (0..k).map(|j| x[r * k + j] as f64 * wd[o * k + j] as f64);
                        let want: f64 = terms.clone().sum();
                        let scale: f64 = terms.map(f64::abs).sum();
                        let got = y[r * n_out + o] as f64;
                        assert!(
                            (got - want).abs() <= 2e-6 * scale + 1e-30,
                            "{format:?} rows {rows} k {k} n {n_out}: y[{r}, {o}] {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}

//! Greedy and top-k decoding's output product from a quarter of the bytes, with the same
//! tokens.
//!
//! The output matrix (`[V, D]`) is the largest a decode step streams: 30% of an f32
//! mamba2-130m's bytes. Greedy decoding needs only the argmax of its product, not every logit.
//! A q8_0 copy of the matrix (the *screen*, 34 bytes per 32 weights against 128) gives every
//! logit within a bound known in advance: each weight of row r is within `E_r` of its copy
//! (measured when the screen is made), so `|y_r − ŷ_r| ≤ E_r · ‖x‖₁` plus both products'
//! rounding. A row whose upper bound falls below the largest lower bound cannot be the argmax;
//! the few rows left (the *candidates*) are computed exactly from the stored matrix with the
//! row dot the full product uses, so the token is the full product's argmax, ties going to the
//! first index as [`crate::sampling::argmax`] does. Top-k sampling keeps the rows whose upper
//! bound reaches the k-th largest lower bound ([`OutputScreen::top`]). When the bound cannot
//! decide cheaply (a non-finite value, an input that could overflow, too many candidates) the
//! caller computes every logit instead.

use rayon::prelude::*;

use super::ops::{self, dot, dot_f16};
use super::weights::Matrix;
use crate::quant::{QuantFormat, QuantMatrix};

/// Rows of the output matrix quantized per rayon task while the screen is made.
const ROWS_PER_TASK: usize = 256;

/// More candidates than one in this many rows (or than the k asked for): computing them one by
/// one would cost more than the full product saves, so the caller takes the full product.
const MOST_CANDIDATES_PER: usize = 16;

/// A q8_0 copy of an f32 or f16 output matrix and, per row, the bound on its error.
pub struct OutputScreen {
    codes: QuantMatrix,
    /// Per row r, `c_r` with `|y_r − ŷ_r| ≤ c_r · ‖x‖₁` for both the screen's product and the
    /// stored matrix's (rounded up).
    slack: Vec<f32>,
    /// The largest |weight|: with ‖x‖₁ it bounds every partial sum, so no product overflows.
    max_weight: f32,
}

/// What [`OutputScreen::argmax`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Screened {
    pub token: u32,
    /// Rows computed exactly (those the bound could not rule out).
    pub candidates: usize,
}

impl OutputScreen {
    /// The screen of `output`, or `None` where it would not pay or cannot be made: a quantized
    /// output (no bigger than its screen), rows that are not whole q8_0 blocks, or weights whose
    /// q8_0 scale overflows f16.
    pub fn new(output: Matrix<'_>) -> Option<Self> {
        let (rows, cols) = (output.rows(), output.cols());
        if matches!(output, Matrix::Quant(_)) || rows == 0 || cols == 0 || cols % 32 != 0 {
            return None;
        }
        let row_bytes = QuantFormat::Q8_0.row_bytes(cols);
        // Fallible: a screen is optional, and a heap that cannot hold it (a large model in
        // wasm) leaves the engine without one rather than aborting.
        let mut bytes = crate::huge_pages::try_vec_with_capacity(rows.checked_mul(row_bytes)?)?;
        bytes.resize(rows * row_bytes, 0u8);
        let mut slack = Vec::new();
        slack.try_reserve_exact(rows).ok()?;
        slack.resize(rows, 0f32);
        // Each task quantizes its rows into their place and measures their error against the
        // values the products read (an f16 matrix widened).
        let max_weight = bytes
            .par_chunks_mut(ROWS_PER_TASK * row_bytes)
            .zip(slack.par_chunks_mut(ROWS_PER_TASK))
            .enumerate()
            .map(|(t, (codes, slack))| {
                let (r0, n) = (t * ROWS_PER_TASK, slack.len());
                let mut values = Vec::with_capacity(n * cols);
                for r in r0..r0 + n {
                    output.read_row(r, &mut values);
                }
                let q = QuantMatrix::quantize("output screen", QuantFormat::Q8_0, &values, n, cols)
                    .ok()?;
                codes.copy_from_slice(&q.bytes);
                let mut back = vec![0f32; cols];
                let mut max_weight = 0f32;
                for (i, w) in values.chunks_exact(cols).enumerate() {
                    q.dequantize_row(i, &mut back);
                    // In f32: a difference rounds by at most 2^-24 of itself, which
                    // `slack_of`'s factor (1 + 1e-6) covers. (An f64 fold of this pair crashed
                    // rustc 1.95's code generator.)
                    let mut err = 0f32;
                    let mut max = 0f32;
                    for (&a, &b) in w.iter().zip(&back) {
                        err = err.max((a - b).abs());
                        max = max.max(a.abs());
                    }
                    slack[i] = slack_of(err as f64, max as f64, cols);
                    max_weight = max_weight.max(max);
                }
                Some(max_weight)
            })
            .try_reduce(|| 0f32, |a, b| Some(a.max(b)))?;
        let codes = QuantMatrix::from_bytes(
            "output screen",
            "output",
            QuantFormat::Q8_0,
            rows,
            cols,
            bytes,
        )
        .ok()?;
        Some(Self {
            codes,
            slack,
            max_weight,
        })
    }

    /// Bytes the screen holds.
    pub fn bytes(&self) -> usize {
        self.codes.bytes.len() + 4 * self.slack.len()
    }

    /// The argmax of `output · x` (`output` the matrix this screen was made from, as the
    /// products read it; `x` one final-normed row), or `None` where the caller must compute
    /// every logit (see the module's comment).
    pub fn argmax(&self, output: Matrix<'_>, x: &[f32]) -> Option<Screened> {
        let rows = self.top(output, x, 1)?;
        // First index on ties, as the full product's argmax (`rows` ascend by index).
        let (&first, rest) = rows.split_first()?;
        let mut best = first;
        for &(r, y) in rest {
            if y > best.1 {
                best = (r, y);
            }
        }
        Some(Screened {
            token: best.0,
            candidates: rows.len(),
        })
    }

    /// Rows of `output · x` that hold its `k` largest logits, each with its exact logit (the
    /// full product's), in ascending row order: every row left out has a logit below the k-th
    /// largest of these, so the top k of all rows, ties and their order included, are the top
    /// k of these. `None` where the caller must compute every logit.
    pub fn top(&self, output: Matrix<'_>, x: &[f32], k: usize) -> Option<Vec<(u32, f32)>> {
        let (rows, cols) = (self.codes.rows, self.codes.cols);
        if output.rows() != rows || output.cols() != cols || x.len() != cols || k == 0 || k > rows {
            return None;
        }
        let l1: f64 = x.iter().map(|&v| (v as f64).abs()).sum();
        // Every partial sum of either product is within max|w| · ‖x‖₁ (+ the bound): far below
        // f32's range here, so no logit is infinite and none rounds through an overflow.
        if !(l1.is_finite() && self.max_weight as f64 * l1 < 1e30) {
            return None;
        }
        let approx = ops::matmul(x, 1, Matrix::Quant(&self.codes), None);
        if !approx.iter().all(|a| a.is_finite()) {
            return None;
        }
        let bound = |r: usize| self.slack[r] as f64 * l1;
        // The k-th largest lower bound: at least k rows' logits reach it, so a row whose upper
        // bound falls below it is not among the top k.
        let lower = |r: usize| approx[r] as f64 - bound(r);
        let floor = if k == 1 {
            (0..rows).map(lower).fold(f64::NEG_INFINITY, f64::max)
        } else {
            let mut lows: Vec<f64> = (0..rows).map(lower).collect();
            *lows.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a)).1
        };
        let most = rows.div_ceil(MOST_CANDIDATES_PER).max(k);
        let mut kept = Vec::new();
        for (r, &a) in approx.iter().enumerate() {
            if a as f64 + bound(r) < floor {
                continue;
            }
            if kept.len() == most {
                return None;
            }
            let y = exact_logit(output, x, r).filter(|y| y.is_finite())?;
            kept.push((r as u32, y));
        }
        Some(kept)
    }
}

/// Row r's logit as the full product computes it (`ops::matmul`'s decode row dot); `None` for
/// a quantized matrix, which has no screen (a caller passing one gets the full product).
fn exact_logit(output: Matrix<'_>, x: &[f32], r: usize) -> Option<f32> {
    let k = x.len();
    match output {
        Matrix::F32(t) => Some(dot(x, &t.data[r * k..(r + 1) * k])),
        Matrix::F16 { data, .. } => Some(dot_f16(x, &data[r * k..(r + 1) * k])),
        Matrix::Quant(_) => None,
    }
}

/// `c_r` for a row whose weights are within `err` of their copy and at most `max` in size,
/// `k` long: `|y − ŷ| ≤ err · ‖x‖₁` from the weights, plus the rounding of each product,
/// each at most `k · 2^-24 · Σ|w_j x_j|` for any order of f32 sums (the screen's fixed-point x
/// rounds 2^-29 of its largest value, below that), `Σ|w_j x_j| ≤ (max + err) · ‖x‖₁`. Four
/// times that rounding, and the sum rounded up to f32.
fn slack_of(err: f64, max: f64, k: usize) -> f32 {
    let rounding = 4.0 * 2.0 * (k as f64 + 32.0) * 2f64.powi(-24) * (max + err);
    let c = (err + rounding) * (1.0 + 1e-6);
    c as f32 * (1.0 + f32::EPSILON)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Tensor;
    use crate::sampling::argmax;

    fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect()
    }

    /// The screened argmax is the full product's, over random matrices (f32 and f16, real and
    /// odd widths), inputs from small to large and planted near-ties; and the bound it relies
    /// on holds for every row.
    #[test]
    fn screened_argmax_is_the_full_products() {
        for (rows, cols, seed) in [
            (1usize, 32usize, 1u64),
            (50, 64, 2),
            (1000, 768, 3),
            (333, 96, 4),
        ] {
            let mut w = values(rows * cols, seed, 0.1);
            if rows > 2 {
                // Rows 1 and 2 equal: a tie the full argmax breaks to row 1.
                let (a, b) = w.split_at_mut(2 * cols);
                b[..cols].copy_from_slice(&a[cols..2 * cols]);
            }
            let t = Tensor::new(vec![rows, cols], w.clone());
            let half: Vec<half::f16> = w.iter().map(|&v| half::f16::from_f32(v)).collect();
            for output in [
                Matrix::F32(&t),
                Matrix::F16 {
                    data: &half,
                    rows,
                    cols,
                },
            ] {
                let screen = OutputScreen::new(output).expect("a screen");
                for (i, scale) in [1e-3f32, 1.0, 30.0].into_iter().enumerate() {
                    let mut x = values(cols, seed * 10 + i as u64, scale);
                    if rows > 2 && i == 1 {
                        // x along row 1 (= row 2): they lead, tied.
                        let mut row1 = Vec::new();
                        output.read_row(1, &mut row1);
                        x = row1.iter().map(|v| v * 50.0).collect();
                    }
                    let full = ops::matmul(&x, 1, output, None);
                    let want = argmax(&full);
                    let got = screen.argmax(output, &x).expect("decided");
                    assert_eq!(got.token, want, "rows {rows} cols {cols} scale {scale}");
                    if rows > 2 && i == 1 {
                        assert_eq!(want, 1, "the planted tie");
                        assert!(got.candidates >= 2);
                    }
                    // The bound: every row's exact logit within slack · ‖x‖₁ of the screen's.
                    let approx = ops::matmul(&x, 1, Matrix::Quant(&screen.codes), None);
                    let l1: f64 = x.iter().map(|&v| (v as f64).abs()).sum();
                    for r in 0..rows {
                        let gap = (full[r] as f64 - approx[r] as f64).abs();
                        assert!(gap <= screen.slack[r] as f64 * l1, "row {r}: {gap}");
                    }
                }
            }
        }
    }

    /// `top(k)` holds the full product's k largest logits (their exact values), and every row
    /// it leaves out ranks below them, for k from 1 to 40 over random matrices and a planted
    /// tie at the k-th place.
    #[test]
    fn top_rows_hold_the_full_products_top_k() {
        // Enough rows that the rows near the 40th largest stay under the cap (1/16 of them).
        let (rows, cols) = (8000, 64);
        let mut w = values(rows * cols, 21, 0.1);
        // Rows 10 and 11 equal.
        let (a, b) = w.split_at_mut(11 * cols);
        b[..cols].copy_from_slice(&a[10 * cols..]);
        let t = Tensor::new(vec![rows, cols], w);
        let output = Matrix::F32(&t);
        let screen = OutputScreen::new(output).unwrap();
        for (i, k) in [1usize, 2, 5, 17, 40].into_iter().enumerate() {
            let x = values(cols, 30 + i as u64, 2.0);
            let full = ops::matmul(&x, 1, output, None);
            let mut order: Vec<usize> = (0..rows).collect();
            order.sort_by(|&a, &b| full[b].total_cmp(&full[a]));
            let got = screen
                .top(output, &x, k)
                .unwrap_or_else(|| panic!("k {k}: undecided"));
            assert!(got.windows(2).all(|p| p[0].0 < p[1].0), "ascending");
            for &(r, y) in &got {
                assert_eq!(y.to_bits(), full[r as usize].to_bits(), "row {r}: exact");
            }
            let kept: Vec<usize> = got.iter().map(|&(r, _)| r as usize).collect();
            for &r in &order[..k] {
                assert!(kept.contains(&r), "k {k}: top row {r} left out");
            }
            let kth = full[order[k - 1]];
            for r in (0..rows).filter(|r| !kept.contains(r)) {
                assert!(full[r] < kth, "k {k}: row {r} left out at {}", full[r]);
            }
        }
        // x along row 10: rows 10 and 11 lead, tied; top(1) keeps both.
        let x: Vec<f32> = t.data[10 * cols..11 * cols]
            .iter()
            .map(|v| v * 40.0)
            .collect();
        let got = screen.top(output, &x, 1).unwrap();
        assert!(got.iter().any(|r| r.0 == 10) && got.iter().any(|r| r.0 == 11));
        assert_eq!(screen.argmax(output, &x).unwrap().token, 10);
        assert!(screen.top(output, &x, 0).is_none());
        assert!(screen.top(output, &x, rows + 1).is_none());
    }

    /// Rows the screen ranks in the wrong order (its copy's rounding reverses them): row 0's
    /// weights round down on a grid of 1, row 1's up on a finer grid, so the screen puts row 1
    /// well ahead while row 0's exact logit is larger. Row 0 must stay a candidate and win;
    /// a bound any tighter than the one the screen states would drop it.
    #[test]
    fn a_row_the_screen_ranks_second_still_wins() {
        let cols = 64;
        let mut w = Vec::new();
        for (top, rest) in [(127.0f32, 50.45f32), (126.0, 50.40)] {
            for _ in 0..cols / 32 {
                w.push(top / 128.0);
                w.extend(std::iter::repeat_n(rest / 128.0, 31));
            }
        }
        w.extend(std::iter::repeat_n(0.0, 38 * cols)); // rows far behind
        let t = Tensor::new(vec![40, cols], w);
        let x = vec![1.0f32; cols];
        let screen = OutputScreen::new(Matrix::F32(&t)).unwrap();
        let approx = ops::matmul(&x, 1, Matrix::Quant(&screen.codes), None);
        let full = ops::matmul(&x, 1, Matrix::F32(&t), None);
        assert!(
            approx[1] > approx[0] && full[0] > full[1],
            "{approx:?} {full:?}"
        );
        let got = screen.argmax(Matrix::F32(&t), &x).unwrap();
        assert_eq!((got.token, got.candidates), (0, 2));
    }

    /// Where the bound cannot decide, the caller is told to compute every logit: an input that
    /// is not finite, one large enough to overflow, a matrix of equal rows (every row a
    /// candidate), a mismatched shape; and no screen is made for a quantized or ragged matrix.
    #[test]
    fn undecided_cases_fall_back() {
        let (rows, cols) = (64, 64);
        let t = Tensor::new(vec![rows, cols], values(rows * cols, 9, 0.5));
        let screen = OutputScreen::new(Matrix::F32(&t)).unwrap();
        let mut x = values(cols, 5, 1.0);
        assert!(screen.argmax(Matrix::F32(&t), &x).is_some());
        x[3] = f32::NAN;
        assert!(screen.argmax(Matrix::F32(&t), &x).is_none());
        x[3] = 1e35;
        assert!(screen.argmax(Matrix::F32(&t), &x).is_none());
        assert!(screen.argmax(Matrix::F32(&t), &x[..32]).is_none());
        let same = Tensor::new(vec![rows, cols], [0.25f32; 64].repeat(rows));
        let s = OutputScreen::new(Matrix::F32(&same)).unwrap();
        assert!(s
            .argmax(Matrix::F32(&same), &values(cols, 6, 1.0))
            .is_none());
        let q = QuantMatrix::quantize("w", QuantFormat::Q8_0, &t.data, rows, cols).unwrap();
        assert!(OutputScreen::new(Matrix::Quant(&q)).is_none());
        let ragged = Tensor::new(vec![2, 33], vec![0.5; 66]);
        assert!(OutputScreen::new(Matrix::F32(&ragged)).is_none());
    }
}

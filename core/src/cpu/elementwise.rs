//! The mixer's per-value steps (conv taps, SiLU, D skip, gate, grouped norm) as loops the
//! compiler vectorises: no libm call inside them (SiLU's exponential is [`exp_clamped`]), and on
//! x86-64 CPUs with AVX2 and FMA they are compiled a second time for those features
//! (`vectorized!`), since the build's baseline (SSE2) runs them 4 lanes wide at best. These
//! were a tenth of prefill as scalar loops around a libm `expf` per value.

/// `e^x` with `x` clamped to [-87, 88] (so SiLU, its one user, moves by under 1e-37 there):
/// `2^n · p(r)`, `n = round(x·log2 e)`, `r = x − n·ln 2` in two parts (Cody–Waite, the first
/// exact), `|r| ≤ ln2/2`, `p` the degree-7 Taylor polynomial (truncation below 6e-9 relative,
/// so f32 rounding dominates). Branch-free, so its loops vectorise.
#[inline(always)]
pub fn exp_clamped(x: f32) -> f32 {
    // 1.5·2^23: a value below 2^22 added to it lands, rounded to an integer, in the low bits.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let t = x * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let r = (x - n * 0.693_359_4) + n * 2.121_944_4e-4;
    let mut p = 1.0 / 5040.0;
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = p * r + c;
    }
    // 2^n from n's bits: t's integer part minus ROUND's, biased into the exponent field.
    let n_bits = t.to_bits() as i32 - ROUND.to_bits() as i32;
    p * f32::from_bits(((n_bits + 127) << 23) as u32)
}

/// `x · sigmoid(x)`.
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp_clamped(-x))
}

/// Defines `pub fn $name` running `$body` (an inlined fn) compiled a second time for AVX2 and
/// FMA when the CPU has them, so its loops vectorise 8 wide (a closure passed to a
/// `#[target_feature]` function is not inlined into it, and stays at the baseline).
macro_rules! vectorized {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$doc])*
        pub fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            if super::simd::use_avx2() {
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) {
                    body($($arg),*)
                }
                // SAFETY: use_avx2 checked that the CPU has AVX2 and FMA.
                return unsafe { avx2($($arg),*) };
            }
            body($($arg),*)
        }
    };
}

vectorized! {
    /// One token's causal depthwise conv and SiLU: `out[c] = silu(bias[c] + Σ_k w[c, k] ·
    /// rows[k][c])`, `weight` `[C, K]` as the model stores it (read in place: transposing it
    /// every layer and token cost a decode step more than the conv itself), `rows` the K input
    /// rows ending at this token, each `[C]`. The taps are added in k order either way.
    fn conv_silu(out: &mut [f32], bias: Option<&[f32]>, weight: &[f32], rows: &[f32]) {
        let c = out.len();
        match bias {
            Some(b) => out.copy_from_slice(&b[..c]),
            None => out.fill(0.0),
        }
        let k_n = rows.len() / c.max(1);
        if k_n == 4 {
            // Every Mamba2 checkpoint's kernel size: the four taps of a channel in one pass.
            let (r0, r) = rows.split_at(c);
            let (r1, r) = r.split_at(c);
            let (r2, r3) = r.split_at(c);
            for (i, (o, w)) in out.iter_mut().zip(weight.chunks_exact(4)).enumerate() {
                *o = *o + w[0] * r0[i] + w[1] * r1[i] + w[2] * r2[i] + w[3] * r3[i];
            }
        } else {
            for (k, row) in rows.chunks_exact(c.max(1)).enumerate() {
                for ((o, w), &v) in out.iter_mut().zip(weight.chunks_exact(k_n)).zip(row) {
                    *o += w[k] * v;
                }
            }
        }
        for v in out.iter_mut() {
            *v = silu(*v);
        }
    }
}

vectorized! {
    /// One token's steps 5–6 of MODEL.md on the scan output `y` (`[H·P]`): `y += D ⊙ x` (`d`
    /// one value per head), then `y ⊙= silu(z)` when `z` is given, then RMSNorm within each
    /// group of `group` values, times `norm`.
    fn skip_gate_norm(
        y: &mut [f32],
        x: &[f32],
        d: &[f32],
        z: Option<&[f32]>,
        norm: &[f32],
        group: usize,
        eps: f32,
    ) {
        let p_n = y.len() / d.len().max(1);
        for ((yh, xh), &dh) in y.chunks_exact_mut(p_n).zip(x.chunks_exact(p_n)).zip(d) {
            for (v, &xv) in yh.iter_mut().zip(xh) {
                *v += dh * xv;
            }
        }
        if let Some(z) = z {
            for (v, &zv) in y.iter_mut().zip(z) {
                *v *= silu(zv);
            }
        }
        for (chunk, w) in y.chunks_exact_mut(group).zip(norm.chunks_exact(group)) {
            let inv = super::ops::inv_rms(chunk, eps);
            for (v, &wv) in chunk.iter_mut().zip(w) {
                *v *= inv * wv;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_clamped_is_exp_within_f32_rounding() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x <= 88.0 {
            let want = (x as f64).exp();
            worst = worst.max(((exp_clamped(x) as f64 - want) / want).abs());
            x += 0.001_7;
        }
        assert!(worst < 4e-7, "relative error {worst}");
        assert!(exp_clamped(f32::NAN).is_nan());
        // Clamped: finite at both ends, SiLU's limits hold.
        assert!(exp_clamped(1e4).is_finite() && exp_clamped(-1e4) > 0.0);
        assert_eq!(silu(0.0), 0.0);
        assert!(silu(-1e4).abs() < 1e-30 && silu(1e4) == 1e4);
        assert!(silu(f32::NAN).is_nan());
    }

    #[test]
    fn conv_silu_reads_the_stored_layout_for_every_kernel_size() {
        use rand::{rngs::StdRng, Rng, SeedableRng};
        let mut rng = StdRng::seed_from_u64(7);
        // K = 4 takes the four-tap pass; the others the general loop. Odd channel counts leave
        // vector tails.
        for k_n in 1..=6 {
            for c in [1, 7, 8, 33, 1792] {
                let weight: Vec<f32> = (0..c * k_n).map(|_| rng.random_range(-1.0..1.0)).collect();
                let rows: Vec<f32> = (0..c * k_n).map(|_| rng.random_range(-3.0..3.0)).collect();
                let bias: Vec<f32> = (0..c).map(|_| rng.random_range(-0.5..0.5)).collect();
                for bias in [None, Some(&bias[..])] {
                    let mut out = vec![0f32; c];
                    conv_silu(&mut out, bias, &weight, &rows);
                    for (ch, &got) in out.iter().enumerate() {
                        // The taps in k order, as the spec writes the sum.
                        let mut acc = bias.map_or(0.0, |b| b[ch]);
                        for k in 0..k_n {
                            acc += weight[ch * k_n + k] * rows[k * c + ch];
                        }
                        assert_eq!(got, silu(acc), "K {k_n}, C {c}, channel {ch}");
                    }
                }
            }
        }
    }
}

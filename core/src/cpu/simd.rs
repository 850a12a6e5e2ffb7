//! The CPU engine's vector kernels: the dot product under every decode product and the SSM
//! scan's inner loops. Each has a portable form (which the compiler vectorises for the build's
//! target: SSE2 on x86-64, SIMD128 in the browser build, NEON on arm64) and, on x86-64 CPUs with
//! AVX2 and FMA (checked at run time, cached by std), an intrinsics form: 8 lanes, fused
//! multiply-adds, four accumulators so a sum is not bound by the FMA latency; the scan also has
//! an AVX-512 form (16 lanes: it is bound by its multiplies, not by its loads).
//! [`crate::cpu::limit_kernels`] makes the portable forms (or no wider than AVX2) run everywhere
//! (tests, A/B).

use super::mixer::ScanHead;

#[cfg(target_arch = "x86_64")]
pub(super) fn use_avx2() -> bool {
    crate::cpu::kernel_limit() >= crate::cpu::KernelTier::Avx2 && has_avx2()
}

/// Whether the CPU has AVX2 and FMA (whatever [`crate::cpu::limit_kernels`] says).
#[cfg(target_arch = "x86_64")]
pub(super) fn has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// Whether the CPU has AVX-512 F and BW, with AVX2, FMA and F16C (every AVX-512 CPU has them).
#[cfg(target_arch = "x86_64")]
pub(super) fn has_avx512() -> bool {
    has_avx2()
        && std::arch::is_x86_feature_detected!("f16c")
        && std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
}

/// Asks for `v`'s cache lines ahead of use (a hint: no effect on results; none off x86-64).
pub(crate) fn prefetch(v: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in v.chunks(16) {
        // SAFETY: a prefetch of an address inside `v` (no access, no fault).
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                line.as_ptr() as *const i8
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

/// `a · b` over the shorter length: f32 lanes, their total summed in f64.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    #[cfg(target_arch = "x86_64")]
    if use_avx2() {
        // SAFETY: AVX2 and FMA are present (use_avx2); the slices have equal length n.
        return unsafe { avx2::dot(a, b) };
    }
    dot_portable(a, b)
}

/// `x · w` with `w` in f16, widened as it is read (decode products over f16 weights).
pub fn dot_f16(x: &[f32], w: &[half::f16]) -> f32 {
    let n = x.len().min(w.len());
    let (x, w) = (&x[..n], &w[..n]);
    #[cfg(target_arch = "x86_64")]
    if use_avx2() && std::arch::is_x86_feature_detected!("f16c") {
        // SAFETY: AVX2, FMA and F16C are present; the slices have equal length n.
        return unsafe { avx2::dot_f16(x, w) };
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    return simd128::dot_f16(x, w);
    #[allow(unreachable_code)]
    let mut acc = [0f32; 16];
    let mut cx = x.chunks_exact(16);
    let mut cw = w.chunks_exact(16);
    for (a, b) in (&mut cx).zip(&mut cw) {
        for i in 0..16 {
            acc[i] += a[i] * widen_f16(b[i]);
        }
    }
    let mut total: f64 = acc.iter().map(|&v| v as f64).sum();
    for (a, b) in cx.remainder().iter().zip(cw.remainder()) {
        total += *a as f64 * b.to_f64();
    }
    total as f32
}

/// `x · w` for one row `w` of q8_0 / q4_0 blocks ([`crate::quant`]), dequantized as it is read:
/// per block, the scale times the dot of its codes with x. `x` has 32 values per block. Decode
/// takes [`crate::cpu::fixed_dot`]'s integer products; this f32 form serves an x holding a NaN
/// or an infinity (which fixed point cannot hold and this carries through), so it keeps only
/// the portable loops.
pub fn dot_quant(format: crate::quant::QuantFormat, x: &[f32], w: &[u8]) -> f32 {
    use crate::quant::QuantFormat;
    let blocks = (x.len() / 32).min(w.len() / format.block_bytes());
    match format {
        QuantFormat::Q8_0 => dot_q8_0_portable(x, w, blocks),
        QuantFormat::Q4_0 => dot_q4_0_portable(x, w, blocks),
    }
}

/// A block's scale through [`widen_f16`] (vectorisable; `half`'s portable conversion is a
/// branchy routine, slow in wasm).
#[inline(always)]
pub(super) fn block_scale(b: &[u8]) -> f32 {
    widen_f16(half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])))
}

/// 16 lanes accumulate `d · code · x` across the whole row and are summed once at the end
/// (a horizontal sum per block of 32 cost more than the block's products): the loops
/// vectorise for SSE2, SIMD128 and NEON.
fn dot_q8_0_portable(x: &[f32], w: &[u8], blocks: usize) -> f32 {
    let mut acc = [0f32; 16];
    for (xb, b) in x.chunks_exact(32).zip(w.chunks_exact(34)).take(blocks) {
        let d = block_scale(b);
        let (q, lo, hi) = (&b[2..34], &xb[..16], &xb[16..32]);
        // (q ^ 0x80) − 128 is q as i8, through a zero extension: i8 → f32 does not vectorise
        // for SIMD128, u8 → i32 does.
        let code = |v: u8| ((v ^ 0x80) as i32 - 128) as f32;
        for i in 0..16 {
            acc[i] += d * (code(q[i]) * lo[i] + code(q[i + 16]) * hi[i]);
        }
    }
    acc.iter().map(|&v| v as f64).sum::<f64>() as f32
}

/// As [`dot_q8_0_portable`]; byte j's low nibble is weight j, its high nibble weight j + 16.
fn dot_q4_0_portable(x: &[f32], w: &[u8], blocks: usize) -> f32 {
    let mut acc = [0f32; 16];
    for (xb, b) in x.chunks_exact(32).zip(w.chunks_exact(18)).take(blocks) {
        let d = block_scale(b);
        let (q, lo, hi) = (&b[2..18], &xb[..16], &xb[16..32]);
        for i in 0..16 {
            let (l, h) = ((q[i] & 15) as i32 - 8, (q[i] >> 4) as i32 - 8);
            acc[i] += d * (l as f32 * lo[i] + h as f32 * hi[i]);
        }
    }
    acc.iter().map(|&v| v as f64).sum::<f64>() as f32
}

/// f16 → f32 for finite values, in integer and float lane operations that vectorise (SIMD128 has
/// no f16 conversion, and `half`'s portable one is a branchy scalar routine): the bits
/// sign-extended and shifted left by 13 put the sign at bit 31 (with three copies below it,
/// which the mask clears) and exponent and mantissa in f32 position; an exact multiply by
/// 2^112 then rebases the exponent (and turns f16 subnormals into the right normal f32). Three
/// lane operations and a multiply (the sign handled apart took five; in wasm the f16 decode
/// product is bound by them). Weights are finite by construction (checked at load and by
/// [`crate::cpu::F16Weights::new`]).
#[inline(always)]
pub fn widen_f16(h: half::f16) -> f32 {
    const REBIAS: f32 = 5.192_297e33; // 2^112 = 2^(127 - 15)
    let bits = ((h.to_bits() as i16 as i32) << 13) as u32 & 0x8fff_ffff;
    f32::from_bits(bits) * REBIAS
}

/// Sixteen independent lanes (two 8-wide or four 4-wide vectors): vectorises without
/// reassociating, and bounds the rounding of a long sum better than one running total.
fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let mut ca = a.chunks_exact(16);
    let mut cb = b.chunks_exact(16);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut total: f64 = acc.iter().map(|&v| v as f64).sum();
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        total += (*x as f64) * (*y as f64);
    }
    total as f32
}

/// `S ← exp(dt·A)·S + dt·x ⊗ B`, `y[t] = S · C[t]` for every t of `head`; `s` is the head's
/// `[P, N]` state, `out` its `[T, P]` outputs.
pub(crate) fn scan_head(head: &ScanHead, s: &mut [f32], out: &mut [f32]) {
    let n_n = head.bs.first().map_or(1, |b| b.len()).max(1);
    let p_n = s.len() / n_n;
    let t_n = head.dt.len();
    assert!(
        head.xs.len() == t_n
            && head.cs.len() == t_n
            && out.len() >= t_n * p_n
            && head.xs.iter().all(|x| x.len() >= p_n)
            && head.bs.iter().chain(&head.cs).all(|v| v.len() == n_n),
        "ssm scan: operand sizes"
    );
    #[cfg(target_arch = "x86_64")]
    {
        if crate::cpu::kernel_limit() >= crate::cpu::KernelTier::Avx512 && has_avx512() {
            // SAFETY: AVX-512 F, AVX2 and FMA are present (has_avx512); sizes asserted above.
            return unsafe { avx512::scan_head(head, s, out, p_n, n_n) };
        }
        if use_avx2() {
            // SAFETY: AVX2 and FMA are present (use_avx2); sizes asserted above.
            return unsafe { avx2::scan_head(head, s, out, p_n, n_n) };
        }
    }
    for t in 0..t_n {
        let d = head.dt[t];
        let decay = (d * head.a).exp();
        let (x, b, c) = (head.xs[t], head.bs[t], head.cs[t]);
        for (p, row) in s.chunks_exact_mut(n_n).enumerate() {
            let dx = d * x[p];
            for (r, &bn) in row.iter_mut().zip(b) {
                *r = decay * *r + dx * bn;
            }
            out[t * p_n + p] = dot_portable(row, c);
        }
    }
}

/// One token of the scan: `dt`, `exp(dt·A)`, its x (`[P]`), B and C (`[N]`).
#[cfg(target_arch = "x86_64")]
struct Step<'a> {
    d: f32,
    decay: f32,
    x: &'a [f32],
    b: &'a [f32],
    c: &'a [f32],
    n_n: usize,
}

/// The scan's order of work, shared by its vector forms: token after token, the state rows
/// four a pass (each B and C load shared by them), then the rest one at a time;
/// `pass(step, state, y, p, four)` runs rows `p..p + 4` or row p. Inlined into each form, so
/// its passes compile for that form's features.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn each_row_pass(
    head: &ScanHead,
    s: &mut [f32],
    out: &mut [f32],
    (p_n, n_n): (usize, usize),
    mut pass: impl FnMut(&Step, &mut [f32], &mut [f32], usize, bool),
) {
    for t in 0..head.dt.len() {
        let d = head.dt[t];
        let step = Step {
            d,
            decay: (d * head.a).exp(),
            x: head.xs[t],
            b: head.bs[t],
            c: head.cs[t],
            n_n,
        };
        let y = &mut out[t * p_n..(t + 1) * p_n];
        let mut p = 0;
        while p + 4 <= p_n {
            pass(&step, s, y, p, true);
            p += 4;
        }
        while p < p_n {
            pass(&step, s, y, p, false);
            p += 1;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{ScanHead, Step};
    use std::arch::x86_64::*;

    /// The f64 total of a vector's 8 lanes (widened in two halves and added pairwise in
    /// registers: a store and eight scalar adds per total were a fifth of a scan row).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn total(v: __m256) -> f64 {
        let lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
        let hi = _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(v));
        let four = _mm256_add_pd(lo, hi);
        let two = _mm_add_pd(
            _mm256_castpd256_pd128(four),
            _mm256_extractf128_pd::<1>(four),
        );
        _mm_cvtsd_f64(_mm_add_sd(two, _mm_unpackhi_pd(two, two)))
    }

    /// SAFETY: the caller checked AVX2+FMA; `a` and `b` have the same length.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= n {
            for (j, s) in acc.iter_mut().enumerate() {
                let at = i + 8 * j;
                *s = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(at)), _mm256_loadu_ps(pb.add(at)), *s);
            }
            i += 32;
        }
        while i + 8 <= n {
            acc[0] = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i)),
                _mm256_loadu_ps(pb.add(i)),
                acc[0],
            );
            i += 8;
        }
        let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut t = total(sum);
        while i < n {
            t += a[i] as f64 * b[i] as f64;
            i += 1;
        }
        t as f32
    }

    /// SAFETY: the caller checked AVX2+FMA+F16C; `x` and `w` have the same length.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_f16(x: &[f32], w: &[half::f16]) -> f32 {
        let n = x.len().min(w.len());
        let (px, pw) = (x.as_ptr(), w.as_ptr() as *const __m128i);
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= n {
            for (j, s) in acc.iter_mut().enumerate() {
                let at = i + 8 * j;
                let wv = _mm256_cvtph_ps(_mm_loadu_si128(pw.add(at / 8)));
                *s = _mm256_fmadd_ps(_mm256_loadu_ps(px.add(at)), wv, *s);
            }
            i += 32;
        }
        while i + 8 <= n {
            let wv = _mm256_cvtph_ps(_mm_loadu_si128(pw.add(i / 8)));
            acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(px.add(i)), wv, acc[0]);
            i += 8;
        }
        let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut t = total(sum);
        while i < n {
            t += x[i] as f64 * w[i].to_f64();
            i += 1;
        }
        t as f32
    }

    /// SAFETY: the caller checked AVX2+FMA and that every operand holds what `p_n`, `n_n`
    /// and `head.dt.len()` promise.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn scan_head(
        head: &ScanHead,
        s: &mut [f32],
        out: &mut [f32],
        p_n: usize,
        n_n: usize,
    ) {
        super::each_row_pass(head, s, out, (p_n, n_n), |st, s, y, p, four| {
            if four {
                rows::<4>(st, s, y, p)
            } else {
                rows::<1>(st, s, y, p)
            }
        });
    }

    /// State rows `p..p + R`: `S[p] ← decay·S[p] + dt·x[p]·B`, `y[p] = S[p] · C`.
    /// SAFETY: AVX2+FMA; `s` holds rows `p..p + R` of `n_n` values, `y` and `x` index `p + R - 1`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn rows<const R: usize>(st: &Step, s: &mut [f32], y: &mut [f32], p: usize) {
        let n_n = st.n_n;
        let vec_n = n_n - n_n % 8;
        let vdecay = _mm256_set1_ps(st.decay);
        let dx: [f32; R] = std::array::from_fn(|i| st.d * st.x[p + i]);
        let vdx = dx.map(|v| _mm256_set1_ps(v));
        let base = s.as_mut_ptr();
        let row = |i: usize| base.add((p + i) * n_n);
        let mut acc = [_mm256_setzero_ps(); R];
        let mut n = 0;
        while n < vec_n {
            let vb = _mm256_loadu_ps(st.b.as_ptr().add(n));
            let vc = _mm256_loadu_ps(st.c.as_ptr().add(n));
            for i in 0..R {
                let r = row(i).add(n);
                let v = _mm256_fmadd_ps(vdx[i], vb, _mm256_mul_ps(vdecay, _mm256_loadu_ps(r)));
                _mm256_storeu_ps(r, v);
                acc[i] = _mm256_fmadd_ps(v, vc, acc[i]);
            }
            n += 8;
        }
        for i in 0..R {
            let mut t = total(acc[i]);
            for n in vec_n..n_n {
                let r = row(i).add(n);
                *r = st.decay * *r + dx[i] * st.b[n];
                t += *r as f64 * st.c[n] as f64;
            }
            y[p + i] = t as f32;
        }
    }
}

/// The scan on 16 lanes: four state rows a pass, each B and C vector loaded once for the four,
/// a row's ragged end under a lane mask. The AVX2 form is bound by its multiplies (three a state
/// value: decay, update, read-out, on two FMA pipes); Zen 5's full-width units do them 16 wide.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{ScanHead, Step};
    use std::arch::x86_64::*;

    /// SAFETY: the caller checked AVX-512 F, AVX2 and FMA, and that every operand holds what
    /// `p_n`, `n_n` and `head.dt.len()` promise.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn scan_head(
        head: &ScanHead,
        s: &mut [f32],
        out: &mut [f32],
        p_n: usize,
        n_n: usize,
    ) {
        super::each_row_pass(head, s, out, (p_n, n_n), |st, s, y, p, four| {
            if four {
                rows::<4>(st, s, y, p)
            } else {
                rows::<1>(st, s, y, p)
            }
        });
    }

    /// As the AVX2 `rows`, 16 lanes.
    /// SAFETY: AVX-512 F; `s` holds rows `p..p + R` of `n_n` values, `y` and `x` index `p + R - 1`.
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn rows<const R: usize>(st: &Step, s: &mut [f32], y: &mut [f32], p: usize) {
        let n_n = st.n_n;
        let vdecay = _mm512_set1_ps(st.decay);
        let vdx: [__m512; R] = std::array::from_fn(|i| _mm512_set1_ps(st.d * st.x[p + i]));
        let base = s.as_mut_ptr();
        let row = |i: usize| base.add((p + i) * n_n);
        let mut acc = [_mm512_setzero_ps(); R];
        let mut n = 0;
        while n + 16 <= n_n {
            let vb = _mm512_loadu_ps(st.b.as_ptr().add(n));
            let vc = _mm512_loadu_ps(st.c.as_ptr().add(n));
            for i in 0..R {
                let r = row(i).add(n);
                let v = _mm512_fmadd_ps(vdx[i], vb, _mm512_mul_ps(vdecay, _mm512_loadu_ps(r)));
                _mm512_storeu_ps(r, v);
                acc[i] = _mm512_fmadd_ps(v, vc, acc[i]);
            }
            n += 16;
        }
        if n < n_n {
            // A row's ragged end under a lane mask (masked lanes are neither read nor written).
            // Only there: masked stores are slow on AMD's cores, and decode reads the state
            // from memory.
            let mask: __mmask16 = (1u16 << (n_n - n)) - 1;
            let vb = _mm512_maskz_loadu_ps(mask, st.b.as_ptr().add(n));
            let vc = _mm512_maskz_loadu_ps(mask, st.c.as_ptr().add(n));
            for i in 0..R {
                let r = row(i).add(n);
                let old = _mm512_maskz_loadu_ps(mask, r);
                let v = _mm512_fmadd_ps(vdx[i], vb, _mm512_mul_ps(vdecay, old));
                _mm512_mask_storeu_ps(r, mask, v);
                acc[i] = _mm512_fmadd_ps(v, vc, acc[i]);
            }
        }
        for i in 0..R {
            // The f64 total of the 16 lanes.
            let lo = _mm512_cvtps_pd(_mm512_castps512_ps256(acc[i]));
            let hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(
                _mm512_castps_pd(acc[i]),
            )));
            y[p + i] = _mm512_reduce_add_pd(_mm512_add_pd(lo, hi)) as f32;
        }
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd128 {
    use core::arch::wasm32::*;

    /// [`super::widen_f16`] on eight f16 at once, into two f32x4: each value moved into the
    /// high half of a 32-bit lane by one unpack with zeros (an `i32x4.extend_high` is two x86
    /// instructions in V8), shifted right arithmetically by 3 (the sign-extended shift left by
    /// 13 of `widen_f16`), masked, rebased.
    #[inline(always)]
    fn widen8(h: v128) -> (v128, v128) {
        let zero = i16x8_splat(0);
        let (mask, rebias) = (u32x4_splat(0x8fff_ffff), f32x4_splat(5.192_297e33));
        let widen = |v: v128| f32x4_mul(v128_and(i32x4_shr(v, 3), mask), rebias);
        (
            widen(i16x8_shuffle::<0, 8, 1, 9, 2, 10, 3, 11>(zero, h)),
            widen(i16x8_shuffle::<4, 12, 5, 13, 6, 14, 7, 15>(zero, h)),
        )
    }

    /// `x · w` with `w` in f16: 16 values an iteration into four accumulators, the tail in f64.
    pub(super) fn dot_f16(x: &[f32], w: &[half::f16]) -> f32 {
        let n = x.len().min(w.len());
        let zero = f32x4_splat(0.0);
        let mut acc = [zero; 4];
        let (xs, ws) = (x[..n].chunks_exact(16), w[..n].chunks_exact(16));
        let tail: f64 = xs
            .remainder()
            .iter()
            .zip(ws.remainder())
            .map(|(&a, &b)| a as f64 * super::widen_f16(b) as f64)
            .sum();
        for (a, b) in xs.zip(ws) {
            // SAFETY: `a` holds 16 f32 and `b` 16 f16 (64 and 32 bytes); v128_load takes
            // unaligned addresses.
            let (a, b) = unsafe {
                let a = a.as_ptr() as *const v128;
                let b = b.as_ptr() as *const v128;
                (
                    [
                        v128_load(a),
                        v128_load(a.add(1)),
                        v128_load(a.add(2)),
                        v128_load(a.add(3)),
                    ],
                    [v128_load(b), v128_load(b.add(1))],
                )
            };
            let (w0, w1) = widen8(b[0]);
            let (w2, w3) = widen8(b[1]);
            for (s, (a, w)) in acc.iter_mut().zip(a.into_iter().zip([w0, w1, w2, w3])) {
                *s = f32x4_add(*s, f32x4_mul(a, w));
            }
        }
        let lanes = |v: v128| {
            f32x4_extract_lane::<0>(v) as f64
                + f32x4_extract_lane::<1>(v) as f64
                + f32x4_extract_lane::<2>(v) as f64
                + f32x4_extract_lane::<3>(v) as f64
        };
        (acc.iter().map(|&v| lanes(v)).sum::<f64>() + tail) as f32
    }
}

#[cfg(test)]
mod tests {
    /// Every finite f16 (normals, subnormals, zeros of both signs) widens exactly as `half` does.
    #[test]
    fn widen_f16_is_exact_for_every_finite_value() {
        for bits in 0..=u16::MAX {
            let h = half::f16::from_bits(bits);
            if h.is_finite() {
                let (got, want) = (super::widen_f16(h), h.to_f32());
                assert_eq!(got.to_bits(), want.to_bits(), "{bits:#06x}");
            }
        }
    }
}

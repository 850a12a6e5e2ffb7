//! Decode products over q8_0 / q4_0 weights in integer arithmetic, as exact as f32's.
//!
//! A decode step multiplies one input row x by every weight row. Dequantizing each code to f32
//! (convert, scale, multiply, add) costs several vector operations a weight, and that, not the
//! bytes, bound our quantized decode. llama.cpp rounds x to 8 bits and multiplies integers;
//! that moves logits by ~1e-2, past our 1e-4 bound. Here x is written once per product as a
//! 30-bit fixed-point number in two 16-bit limbs, `x_j · 2^e = hi_j · 2^15 + lo_j` (e chosen
//! from max |x|, `hi, lo` in [-2^14, 2^14]), and each block's sums `Σ c_j·hi_j`, `Σ c_j·lo_j`
//! over its codes c_j are exact i32 multiply-adds (`vpmaddwd`, `i32x4.dot_i16x8_s`) shared by
//! no conversion of the codes beyond a widening to i16. The only rounding of x is to 2^-30 of
//! its largest value, below f32's own 2^-24; a block's total is then scaled in f32 as before.

use crate::quant::QuantFormat;

/// Fixed point's fractional bits in the low limb.
const LIMB: i32 = 15;
/// Largest |x · 2^e|: 2^29, so both limbs stay within ±2^14.
const TOP_BITS: i32 = 29;

/// One input row in fixed point: `x_j ≈ (hi_j · 2^15 + lo_j) · unit`, padded with zeros to a
/// multiple of 32 values.
pub struct FixedRow {
    hi: Vec<i16>,
    lo: Vec<i16>,
    /// 2^-e.
    unit: f64,
}

impl FixedRow {
    /// `None` when x holds a NaN or an infinity (the f32 product then says so).
    pub fn new(x: &[f32]) -> Option<Self> {
        // (f32::max would skip a NaN.)
        let mut max = 0f32;
        for v in x {
            if !v.is_finite() {
                return None;
            }
            max = max.max(v.abs());
        }
        // 2^e with max · 2^e < 2^29: e from max's binary exponent (max < 2^(exp+1)).
        let exp = if max == 0.0 {
            0
        } else {
            (max as f64).log2().floor() as i32 + 1
        };
        let e = TOP_BITS - exp;
        let scale = 2f64.powi(e);
        let n = x.len().div_ceil(32) * 32;
        let (mut hi, mut lo) = (vec![0i16; n], vec![0i16; n]);
        // 1.5·2^52: adding it rounds an f64 below 2^51 to an integer (ties to even) without a
        // libm call, so this loop vectorises (`round` per value was 3% of a q4_0 decode step).
        const ROUND: f64 = 6_755_399_441_055_744.0;
        for ((h, l), &v) in hi.iter_mut().zip(&mut lo).zip(x) {
            // |v·2^e| < 2^29 and exact (a power-of-two scale), so `fixed` fits an i32.
            let fixed = ((v as f64 * scale + ROUND) - ROUND) as i32;
            // The nearest multiple of 2^15 (ties up) and the remainder, both within ±2^14.
            let top = (fixed + (1 << (LIMB - 1))) >> LIMB;
            *h = top as i16;
            *l = (fixed - (top << LIMB)) as i16;
        }
        Some(Self {
            hi,
            lo,
            unit: 2f64.powi(-e),
        })
    }

    /// How many values (a multiple of 32).
    pub fn len(&self) -> usize {
        self.hi.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hi.is_empty()
    }
}

/// `x · w` for one row `w` of q8_0 / q4_0 blocks, x given as a [`FixedRow`].
pub fn dot_quant_fixed(format: QuantFormat, x: &FixedRow, w: &[u8]) -> f32 {
    let blocks = (x.len() / 32).min(w.len() / format.block_bytes());
    let (hi, lo) = (&x.hi[..32 * blocks], &x.lo[..32 * blocks]);
    #[cfg(target_arch = "x86_64")]
    if super::simd::use_avx2() && std::arch::is_x86_feature_detected!("f16c") {
        // SAFETY: AVX2, FMA and F16C are present; `hi` and `lo` hold 32·blocks values and `w`
        // `blocks` whole blocks.
        let total = unsafe {
            match format {
                QuantFormat::Q8_0 => avx2::dot_q8_0(hi, lo, w, blocks),
                QuantFormat::Q4_0 => avx2::dot_q4_0(hi, lo, w, blocks),
            }
        };
        return (total * x.unit) as f32;
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        let total = match format {
            QuantFormat::Q8_0 => simd128::dot_q8_0(hi, lo, w, blocks),
            QuantFormat::Q4_0 => simd128::dot_q4_0(hi, lo, w, blocks),
        };
        return (total * x.unit) as f32;
    }
    #[allow(unreachable_code)]
    {
        (dot_portable(format, hi, lo, w, blocks) * x.unit) as f32
    }
}

/// A block's code j as i32 (q8_0: byte j as i8; q4_0: byte j's low nibble for j < 16, byte
/// j − 16's high nibble after, minus 8).
#[inline(always)]
fn code(format: QuantFormat, q: &[u8], j: usize) -> i32 {
    match format {
        QuantFormat::Q8_0 => q[j] as i8 as i32,
        QuantFormat::Q4_0 if j < 16 => (q[j] & 15) as i32 - 8,
        QuantFormat::Q4_0 => (q[j - 16] >> 4) as i32 - 8,
    }
}

/// The definition, in plain integers: per block, `d · (Σ c·hi · 2^15 + Σ c·lo)`.
fn dot_portable(format: QuantFormat, hi: &[i16], lo: &[i16], w: &[u8], blocks: usize) -> f64 {
    let bb = format.block_bytes();
    let mut total = 0f64;
    for b in 0..blocks {
        let blk = &w[b * bb..(b + 1) * bb];
        let (mut sh, mut sl) = (0i32, 0i32);
        for j in 0..32 {
            let c = code(format, &blk[2..], j);
            sh += c * hi[32 * b + j] as i32;
            sl += c * lo[32 * b + j] as i32;
        }
        let block = (sh as f32).mul_add((1 << LIMB) as f32, sl as f32);
        total += (super::simd::block_scale(blk) * block) as f64;
    }
    total
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// A block's f16 scale at `blk`, in all 8 lanes (F16C: 3 instructions; the portable
    /// widening was a third of the block's).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn scale(blk: *const u8) -> __m256 {
        let bits = u16::from_le_bytes([*blk, *blk.add(1)]);
        _mm256_broadcastss_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
    }

    /// One block's 32 codes as two vectors of 16 i16, against the limbs at `at`: accumulates
    /// `d · (Σ c·hi · 2^15 + Σ c·lo)` into `acc` (8 lanes).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn block(
        codes: [__m256i; 2],
        hi: *const i16,
        lo: *const i16,
        d: __m256,
        acc: __m256,
    ) -> __m256 {
        let h = [hi, hi.add(16)].map(|p| _mm256_loadu_si256(p as *const __m256i));
        let l = [lo, lo.add(16)].map(|p| _mm256_loadu_si256(p as *const __m256i));
        let sh = _mm256_add_epi32(
            _mm256_madd_epi16(codes[0], h[0]),
            _mm256_madd_epi16(codes[1], h[1]),
        );
        let sl = _mm256_add_epi32(
            _mm256_madd_epi16(codes[0], l[0]),
            _mm256_madd_epi16(codes[1], l[1]),
        );
        let v = _mm256_fmadd_ps(
            _mm256_cvtepi32_ps(sh),
            _mm256_set1_ps((1 << super::LIMB) as f32),
            _mm256_cvtepi32_ps(sl),
        );
        _mm256_fmadd_ps(v, d, acc)
    }

    /// `Σ_b d_b · (Σ c·hi · 2^15 + Σ c·lo)` over `blocks` blocks of `block_bytes` bytes (f16
    /// scale, then codes), `codes` giving a block's 32 codes as i16 from its code bytes. Blocks
    /// go two at a time into two accumulators (in registers: an array indexed by the block's
    /// parity was kept on the stack), so one block's FMA chain overlaps the next.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn blocks_dot(
        (hi, lo): (&[i16], &[i16]),
        w: &[u8],
        (blocks, block_bytes): (usize, usize),
        codes: impl Fn(*const u8) -> [__m256i; 2],
    ) -> f64 {
        let one = |b: usize, acc: __m256| {
            let blk = w.as_ptr().add(block_bytes * b);
            let (h, l) = (hi.as_ptr().add(32 * b), lo.as_ptr().add(32 * b));
            block(codes(blk.add(2)), h, l, scale(blk), acc)
        };
        let (mut a, mut b) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        while i + 2 <= blocks {
            a = one(i, a);
            b = one(i + 1, b);
            i += 2;
        }
        if i < blocks {
            a = one(i, a);
        }
        total(a, b)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn total(a: __m256, b: __m256) -> f64 {
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), _mm256_add_ps(a, b));
        lanes.iter().map(|&l| l as f64).sum()
    }

    /// SAFETY: AVX2, FMA and F16C present; `hi`, `lo` hold 32·`blocks` values, `w` `blocks`
    /// q8_0 blocks.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_q8_0(hi: &[i16], lo: &[i16], w: &[u8], blocks: usize) -> f64 {
        blocks_dot((hi, lo), w, (blocks, 34), |q| {
            let q = q as *const __m128i;
            [
                _mm256_cvtepi8_epi16(_mm_loadu_si128(q)),
                _mm256_cvtepi8_epi16(_mm_loadu_si128(q.add(1))),
            ]
        })
    }

    /// SAFETY: AVX2, FMA and F16C present; `hi`, `lo` hold 32·`blocks` values, `w` `blocks`
    /// q4_0 blocks.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_q4_0(hi: &[i16], lo: &[i16], w: &[u8], blocks: usize) -> f64 {
        let (low, eight) = (_mm_set1_epi8(15), _mm_set1_epi8(8));
        blocks_dot((hi, lo), w, (blocks, 18), |q| {
            let q = _mm_loadu_si128(q as *const __m128i);
            // Low nibbles are weights 0..16, high nibbles 16..32; codes are offset by 8.
            let first = _mm_sub_epi8(_mm_and_si128(q, low), eight);
            let second = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(q, 4), low), eight);
            [_mm256_cvtepi8_epi16(first), _mm256_cvtepi8_epi16(second)]
        })
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd128 {
    use core::arch::wasm32::*;

    /// 8 i16 of `v` from `at` (indexed first: out of range panics, never reads past).
    #[inline(always)]
    fn load8(v: &[i16], at: usize) -> v128 {
        let s = &v[at..at + 8];
        // SAFETY: `s` is 8 i16 = 16 bytes; v128_load takes unaligned addresses.
        unsafe { v128_load(s.as_ptr() as *const v128) }
    }

    #[inline(always)]
    fn load16(b: &[u8], at: usize) -> v128 {
        let s = &b[at..at + 16];
        // SAFETY: `s` is 16 bytes; v128_load takes unaligned addresses.
        unsafe { v128_load(s.as_ptr() as *const v128) }
    }

    /// 16 codes (i8x16, weights `at..at + 16` of a block) against that block's 32 limbs (`hi`,
    /// `lo`: exactly 32 each, so the compiler drops the loads' bounds checks, which were a
    /// sixth of the loop's wasm instructions): the two i32x4 partial sums `(Σ c·hi, Σ c·lo)`
    /// added into `s`.
    #[inline(always)]
    fn codes16(
        c: v128,
        hi: &[i16; 32],
        lo: &[i16; 32],
        at: usize,
        s: (v128, v128),
    ) -> (v128, v128) {
        let (c0, c1) = (i16x8_extend_low_i8x16(c), i16x8_extend_high_i8x16(c));
        let sh = i32x4_add(
            i32x4_dot_i16x8(c0, load8(hi, at)),
            i32x4_dot_i16x8(c1, load8(hi, at + 8)),
        );
        let sl = i32x4_add(
            i32x4_dot_i16x8(c0, load8(lo, at)),
            i32x4_dot_i16x8(c1, load8(lo, at + 8)),
        );
        (i32x4_add(s.0, sh), i32x4_add(s.1, sl))
    }

    /// `acc + d · (Σ c·hi · 2^15 + Σ c·lo)`.
    #[inline(always)]
    fn finish(s: (v128, v128), d: f32, acc: v128) -> v128 {
        let v = f32x4_add(
            f32x4_mul(
                f32x4_convert_i32x4(s.0),
                f32x4_splat((1 << super::LIMB) as f32),
            ),
            f32x4_convert_i32x4(s.1),
        );
        f32x4_add(acc, f32x4_mul(v, f32x4_splat(d)))
    }

    /// A row's limbs a block (32) at a time, for `blocks` blocks.
    #[inline(always)]
    fn limbs(v: &[i16], blocks: usize) -> impl Iterator<Item = &[i16; 32]> {
        v.as_chunks::<32>().0.iter().take(blocks)
    }

    fn total(v: v128) -> f64 {
        f32x4_extract_lane::<0>(v) as f64
            + f32x4_extract_lane::<1>(v) as f64
            + f32x4_extract_lane::<2>(v) as f64
            + f32x4_extract_lane::<3>(v) as f64
    }

    pub(super) fn dot_q8_0(hi: &[i16], lo: &[i16], w: &[u8], blocks: usize) -> f64 {
        let mut acc = f32x4_splat(0.0);
        let zero = (i32x4_splat(0), i32x4_splat(0));
        for ((blk, h), l) in w
            .chunks_exact(34)
            .zip(limbs(hi, blocks))
            .zip(limbs(lo, blocks))
        {
            let s = codes16(load16(blk, 2), h, l, 0, zero);
            let s = codes16(load16(blk, 18), h, l, 16, s);
            acc = finish(s, crate::cpu::simd::block_scale(blk), acc);
        }
        total(acc)
    }

    pub(super) fn dot_q4_0(hi: &[i16], lo: &[i16], w: &[u8], blocks: usize) -> f64 {
        let mut acc = f32x4_splat(0.0);
        let zero = (i32x4_splat(0), i32x4_splat(0));
        let (low, eight) = (u8x16_splat(15), i8x16_splat(8));
        for ((blk, h), l) in w
            .chunks_exact(18)
            .zip(limbs(hi, blocks))
            .zip(limbs(lo, blocks))
        {
            let q = load16(blk, 2);
            // Low nibbles are weights 0..16, high nibbles 16..32; codes are offset by 8.
            let first = i8x16_sub(v128_and(q, low), eight);
            // A 16-bit shift and a mask: wasm's byte shift has no x86 instruction (V8 emits
            // the same shift plus a mask it builds each time).
            let second = i8x16_sub(v128_and(u16x8_shr(q, 4), low), eight);
            let s = codes16(first, h, l, 0, zero);
            let s = codes16(second, h, l, 16, s);
            acc = finish(s, crate::cpu::simd::block_scale(blk), acc);
        }
        total(acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::QuantMatrix;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// Against the f64 dot of x with the dequantized row, for both formats, on the kernels this
    /// CPU picks and on the portable ones; x with an outlier 1000x the rest (the limbs keep 30
    /// bits of the largest value, so small values lose relative bits but not the sum's).
    #[test]
    fn fixed_point_dots_equal_the_dequantized_product() {
        let mut seed = 7u64;
        for k in [32usize, 96, 768, 1536] {
            for outlier in [1.0f32, 1000.0] {
                let mut x: Vec<f32> = (0..k).map(|_| lcg(&mut seed)).collect();
                x[k / 3] *= outlier;
                let w: Vec<f32> = (0..3 * k).map(|_| lcg(&mut seed) * 0.1).collect();
                for format in [QuantFormat::Q8_0, QuantFormat::Q4_0] {
                    let q = QuantMatrix::quantize("w", format, &w, 3, k).unwrap();
                    let fixed = FixedRow::new(&x).unwrap();
                    for r in 0..3 {
                        let mut row = vec![0f32; k];
                        q.dequantize_row(r, &mut row);
                        let want: f64 =
                            row.iter().zip(&x).map(|(&a, &b)| a as f64 * b as f64).sum();
                        let scale: f64 = row
                            .iter()
                            .zip(&x)
                            .map(|(&a, &b)| (a as f64 * b as f64).abs())
                            .sum();
                        let bytes = &q.bytes[r * q.row_bytes()..(r + 1) * q.row_bytes()];
                        for portable in [false, true] {
                            crate::cpu::force_portable_kernels(portable);
                            let got = dot_quant_fixed(format, &fixed, bytes) as f64;
                            crate::cpu::force_portable_kernels(false);
                            assert!(
                                (got - want).abs() <= 2e-6 * scale + 1e-30,
                                "{format:?} k {k} outlier {outlier} portable {portable}: {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn non_finite_and_zero_rows() {
        assert!(FixedRow::new(&[1.0, f32::NAN]).is_none());
        assert!(FixedRow::new(&[f32::INFINITY]).is_none());
        let zero = FixedRow::new(&[0.0; 40]).unwrap();
        assert_eq!(zero.len(), 64);
        let q = QuantMatrix::quantize("w", QuantFormat::Q8_0, &[0.5; 64], 1, 64).unwrap();
        assert_eq!(dot_quant_fixed(QuantFormat::Q8_0, &zero, &q.bytes), 0.0);
        // Tiny and huge magnitudes keep their relative precision (the exponent moves).
        for m in [1e-30f32, 1e30] {
            let x: Vec<f32> = (0..64).map(|i| m * (i as f32 - 31.5)).collect();
            let f = FixedRow::new(&x).unwrap();
            let got = dot_quant_fixed(QuantFormat::Q8_0, &f, &q.bytes) as f64;
            let mut row = vec![0f32; 64];
            q.dequantize_row(0, &mut row);
            let want: f64 = row.iter().zip(&x).map(|(&a, &b)| a as f64 * b as f64).sum();
            let scale: f64 = row
                .iter()
                .zip(&x)
                .map(|(&a, &b)| (a as f64 * b as f64).abs())
                .sum();
            assert!(
                (got - want).abs() <= 2e-6 * scale,
                "magnitude {m}: {got} vs {want}"
            );
        }
    }
}

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
//!
//! The limbs of a block are stored in the order its codes come out of the block's bytes
//! cheapest ([`weight_at`]): q4_0's nibbles need only a shift and a mask per eight codes then.

use crate::cpu::KernelTier;
use crate::quant::{groups8, QuantFormat};

/// Fixed point's fractional bits in the low limb.
const LIMB: i32 = 15;
/// Largest |x · 2^e|: 2^29, so both limbs stay within ±2^14.
const TOP_BITS: i32 = 29;

/// Which weight of a block (0..32) the block's limb `p` holds. q8_0: weight p. q4_0: the block's
/// 16 code bytes read as eight little-endian u16 `w_k` (bytes 2k, 2k + 1; low nibbles are weights
/// 0..16, high nibbles 16..32) give four vectors of eight codes each by one shift and one mask,
/// `w & 15` (weight 2k), `w >> 8 & 15` (2k + 1), `w >> 4 & 15` (16 + 2k) and `w >> 12`
/// (17 + 2k): limbs 8v..8v + 8 are vector v's weights, so no byte is widened.
pub fn weight_at(format: QuantFormat, p: usize) -> usize {
    match format {
        QuantFormat::Q8_0 => p,
        QuantFormat::Q4_0 => Q4_0_ORDER[p],
    }
}

/// 1.5·2^52: an f64 `v` with |v| < 2^51 plus this has `v` rounded to an integer in its low
/// mantissa bits (two's complement; the constant's own low 32 bits are zero).
const ROUND: f64 = 6_755_399_441_055_744.0;

/// [`weight_at`] for q4_0 (vector `v = p / 8`, code `k = p % 8`), a table known at compile
/// time so the limb permutation in [`FixedRow::new`] is constant moves.
const Q4_0_ORDER: [usize; 32] = {
    let mut order = [0; 32];
    let mut p = 0;
    while p < 32 {
        let (v, k) = (p / 8, p % 8);
        order[p] = 16 * (v / 2) + 2 * k + v % 2;
        p += 1;
    }
    order
};

/// One input row in fixed point for products with one format's blocks: block b's 64 limbs are
/// its 32 `hi` then its 32 `lo`, limb p of each holding weight `j = weight_at(format, p)`:
/// `x_{32b+j} ≈ (hi_p · 2^15 + lo_p) · unit`. Zero-padded to a multiple of 32 values.
pub struct FixedRow {
    format: QuantFormat,
    limbs: Vec<i16>,
    /// q4_0 on the portable kernel (and SIMD128, whose builds pick it), per block: `−8 · Σ hi`
    /// and `−8 · Σ lo` (the codes' offset of 8, which those kernels apply once per block
    /// instead of once per code: they read the nibbles unsigned); empty otherwise.
    offset_hi: Vec<i32>,
    offset_lo: Vec<i32>,
    /// 2^-e.
    unit: f64,
    /// The kernel its products run, chosen once here rather than per weight row.
    kernel: Kernel,
}

/// The native kernels (the wasm build has its SIMD128 one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kernel {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Kernel {
    /// The widest kernel the CPU has and `cap` allows for `format`. q4_0 only on AVX-512: q8_0's
    /// AVX-512 form was as fast on one thread and 0.7-0.9x on two here (its 32-byte code loads
    /// at a 34-byte stride), so q8_0 stays on AVX2.
    fn pick(format: QuantFormat, cap: KernelTier) -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            use super::simd::{has_avx2, has_avx512};
            if format == QuantFormat::Q4_0 && cap >= KernelTier::Avx512 && has_avx512() {
                return Kernel::Avx512;
            }
            if cap >= KernelTier::Avx2 && has_avx2() && std::arch::is_x86_feature_detected!("f16c")
            {
                return Kernel::Avx2;
            }
        }
        let _ = (format, cap);
        Kernel::Portable
    }
}

impl FixedRow {
    /// `None` when x holds a NaN or an infinity (the f32 product then says so). Its products
    /// run the widest kernel [`crate::cpu::limit_kernels`] allows.
    pub fn new(x: &[f32], format: QuantFormat) -> Option<Self> {
        Self::with_kernels(x, format, crate::cpu::kernel_limit())
    }

    /// As [`FixedRow::new`], its products on kernels no wider than `cap` (tests pick a tier
    /// without the process-wide limit, which tests running in parallel share).
    pub fn with_kernels(x: &[f32], format: QuantFormat, cap: KernelTier) -> Option<Self> {
        // The largest |x| by its bits (for finite values their order is the values' order, and
        // a NaN or an infinity has the exponent's bits all set): one vectorised pass, where
        // `is_finite` with an early return per value kept this loop scalar.
        let max_bits = x.iter().fold(0u32, |m, v| m.max(v.to_bits() & 0x7fff_ffff));
        if max_bits >= f32::INFINITY.to_bits() {
            return None;
        }
        let max = f32::from_bits(max_bits);
        // 2^e with max · 2^e < 2^29: e from max's binary exponent (max < 2^(exp+1)).
        let exp = if max == 0.0 {
            0
        } else {
            (max as f64).log2().floor() as i32 + 1
        };
        let e = TOP_BITS - exp;
        let scale = 2f64.powi(e);
        let blocks = x.len().div_ceil(32);
        let kernel = Kernel::pick(format, cap);
        // Only the portable and SIMD128 kernels read q4_0's offsets (the x86 ones subtract 8
        // from each code).
        let offsets = format == QuantFormat::Q4_0 && kernel == Kernel::Portable;
        let mut limbs = vec![0i16; 64 * blocks];
        let (mut offset_hi, mut offset_lo) = (Vec::new(), Vec::new());
        for (b, block) in limbs.chunks_exact_mut(64).enumerate() {
            // The block's values in their own order first (fixed-size loops the compiler
            // vectorises), then placed in limb order by a permutation known at compile time.
            let mut hi_j = [0i16; 32];
            let mut lo_j = [0i16; 32];
            let xb = &x[32 * b..x.len().min(32 * b + 32)];
            for ((h, l), &v) in hi_j.iter_mut().zip(&mut lo_j).zip(xb) {
                // |v·2^e| < 2^29 and exact (a power-of-two scale). Adding 1.5·2^52 rounds it to
                // an integer (ties to even) held in the sum's low mantissa bits, two's
                // complement: no libm `round` (3% of a q4_0 decode step once) and no saturating
                // `as i32` (scalar compares per value), so this loop vectorises.
                let f = (v as f64 * scale + ROUND).to_bits() as i32;
                // The nearest multiple of 2^15 (ties up) and the remainder, both within ±2^14.
                let top = (f + (1 << (LIMB - 1))) >> LIMB;
                *h = top as i16;
                *l = (f - (top << LIMB)) as i16;
            }
            let (hi, lo) = block.split_at_mut(32);
            match format {
                QuantFormat::Q8_0 => {
                    hi.copy_from_slice(&hi_j);
                    lo.copy_from_slice(&lo_j);
                }
                QuantFormat::Q4_0 => {
                    for p in 0..32 {
                        hi[p] = hi_j[Q4_0_ORDER[p]];
                        lo[p] = lo_j[Q4_0_ORDER[p]];
                    }
                }
            }
            if offsets {
                // |Σ| ≤ 32 · 2^14, so −8 · Σ fits an i32 with room to spare.
                offset_hi.push(-8 * hi.iter().map(|&v| v as i32).sum::<i32>());
                offset_lo.push(-8 * lo.iter().map(|&v| v as i32).sum::<i32>());
            }
        }
        Some(Self {
            format,
            limbs,
            offset_hi,
            offset_lo,
            unit: 2f64.powi(-e),
            kernel,
        })
    }

    /// How many values (a multiple of 32).
    pub fn len(&self) -> usize {
        self.limbs.len() / 2
    }

    pub fn is_empty(&self) -> bool {
        self.limbs.is_empty()
    }
}

/// `x · w` for one row `w` of blocks in the format `x` was written for.
pub fn dot_quant_fixed(x: &FixedRow, w: &[u8]) -> f32 {
    let [y] = dot_quant_fixed_rows(x, [w]);
    y
}

/// `x · w_r` for R rows of blocks at once (R = 2: the SIMD128 kernel reads each limb once for
/// both rows; elsewhere one row after the other).
pub fn dot_quant_fixed_rows<const R: usize>(x: &FixedRow, ws: [&[u8]; R]) -> [f32; R] {
    let bb = x.format.block_bytes();
    let blocks = ws.iter().fold(x.len() / 32, |n, w| n.min(w.len() / bb));
    let ws = ws.map(|w| &w[..blocks * bb]);
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        let limbs = &x.limbs[..64 * blocks];
        let totals = match x.format {
            QuantFormat::Q8_0 => simd128::dot_q8_0(limbs, ws),
            QuantFormat::Q4_0 => {
                simd128::dot_q4_0(limbs, (&x.offset_hi[..blocks], &x.offset_lo[..blocks]), ws)
            }
        };
        return totals.map(|t| (t * x.unit) as f32);
    }
    #[allow(unreachable_code)]
    ws.map(|w| {
        let mut y = [0f32];
        run_native(x, (w, w.len().max(1), blocks), &mut y);
        y[0]
    })
}

/// `x · w_r` into `out[r]` for the `out.len()` consecutive rows of blocks in `w` (equal
/// lengths): a run of a decode product's rows in one kernel call natively (the call and its
/// constants paid once per run), in pairs on SIMD128.
pub fn dot_quant_fixed_run(x: &FixedRow, w: &[u8], out: &mut [f32]) {
    let n = out.len();
    if n == 0 {
        return;
    }
    let stride = (w.len() / n).max(1);
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        let mut rows = w.chunks_exact(stride);
        let mut outs = out.chunks_exact_mut(2);
        for pair in &mut outs {
            if let (Some(w0), Some(w1)) = (rows.next(), rows.next()) {
                [pair[0], pair[1]] = dot_quant_fixed_rows(x, [w0, w1]);
            }
        }
        if let ([y], Some(w)) = (outs.into_remainder(), rows.next()) {
            *y = dot_quant_fixed(x, w);
        }
        return;
    }
    #[allow(unreachable_code)]
    run_native(
        x,
        (
            w,
            stride,
            (x.len() / 32).min(stride / x.format.block_bytes()),
        ),
        out,
    );
}

/// Whether `format`'s matrices should be held in [`crate::quant::Layout::Groups8`] for this
/// CPU: q4_0 where an x86 kernel (AVX-512 or AVX2) runs, the ones with a grouped form (the
/// portable kernel would gather each row back from its group).
pub(crate) fn groups_pay_off(format: QuantFormat) -> bool {
    #[cfg(target_arch = "x86_64")]
    return format == QuantFormat::Q4_0
        && Kernel::pick(format, crate::cpu::kernel_limit()) >= Kernel::Avx2;
    #[allow(unreachable_code)]
    {
        let _ = format;
        false
    }
}

/// `x · w_r` into `out[r]` for a group of 8 q4_0 rows in [`crate::quant::Layout::Groups8`]
/// (`group` its 8 · row_bytes bytes; `out.len()` ≤ 8 of them are real rows). The AVX-512 and
/// AVX2 kernels read the group as one stream and x's block once for its 8 rows; the portable
/// one (a tier capped by `limit_kernels`) gathers each row back into GGUF's layout first.
pub fn dot_q4_0_group(x: &FixedRow, group: &[u8], out: &mut [f32]) {
    let n = out.len().min(groups8::ROWS);
    let blocks = (x.len() / 32).min(group.len() / groups8::BLOCK_BYTES);
    let group = &group[..groups8::BLOCK_BYTES * blocks];
    #[cfg(target_arch = "x86_64")]
    if x.format == QuantFormat::Q4_0 {
        let (limbs, out) = (&x.limbs[..64 * blocks], &mut out[..n]);
        // SAFETY (each arm): `Kernel::pick` chose the kernel only where the CPU has its
        // features (AVX-512 F/BW, AVX2, FMA, F16C); `limbs` holds 64·blocks values, `group`
        // blocks group blocks.
        match x.kernel {
            Kernel::Avx512 => return unsafe { avx512::dot_q4_0_group(limbs, group, x.unit, out) },
            Kernel::Avx2 => return unsafe { avx2::dot_q4_0_group(limbs, group, x.unit, out) },
            Kernel::Portable => {}
        }
    }
    let mut row = Vec::with_capacity(groups8::Q4_0_BLOCK_BYTES * blocks);
    for (i, y) in out[..n].iter_mut().enumerate() {
        row.clear();
        crate::quant::group_row(group, i, &mut row);
        *y = dot_quant_fixed(x, &row);
    }
}

/// `unit · x · w_r` into `out[r]` for the rows of `stride` bytes in `w`, `blocks` blocks of
/// each, on the kernel x picked: the one place the native kernels are chosen.
fn run_native(x: &FixedRow, (w, stride, blocks): (&[u8], usize, usize), out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    let (limbs, rows) = (&x.limbs[..64 * blocks], (w, stride, blocks));
    // SAFETY (each x86 arm): `Kernel::pick` chose the kernel only where the CPU has its
    // features (AVX-512 F/BW, AVX2, FMA, F16C); `limbs` holds 64·blocks values and each row of
    // `w` `stride` bytes, at least `blocks` whole blocks of x's format.
    match (x.kernel, x.format) {
        #[cfg(target_arch = "x86_64")]
        (Kernel::Avx512, QuantFormat::Q4_0) => unsafe {
            avx512::dot_q4_0_run(limbs, rows, x.unit, out)
        },
        #[cfg(target_arch = "x86_64")]
        (Kernel::Avx2 | Kernel::Avx512, format) => unsafe {
            avx2::dot_run(format, limbs, rows, x.unit, out)
        },
        _ => {
            for (y, row) in out.iter_mut().zip(w.chunks_exact(stride)) {
                *y = (dot_portable(x, row, blocks) * x.unit) as f32;
            }
        }
    }
}

/// A block's code j as i32, unsigned for q4_0 (q8_0: byte j as i8; q4_0: byte j's low nibble
/// for j < 16, byte j − 16's high nibble after).
#[inline(always)]
fn code(format: QuantFormat, q: &[u8], j: usize) -> i32 {
    match format {
        QuantFormat::Q8_0 => q[j] as i8 as i32,
        QuantFormat::Q4_0 if j < 16 => (q[j] & 15) as i32,
        QuantFormat::Q4_0 => (q[j - 16] >> 4) as i32,
    }
}

/// In plain integers, as the SIMD128 kernel computes it: per block, `d · (Σ c·hi · 2^15 +
/// Σ c·lo)`, q4_0's codes unsigned and their offset of 8 the row's per-block sums.
fn dot_portable(x: &FixedRow, w: &[u8], blocks: usize) -> f64 {
    let format = x.format;
    let bb = format.block_bytes();
    let mut total = 0f64;
    for b in 0..blocks {
        let blk = &w[b * bb..(b + 1) * bb];
        let (hi, lo) = x.limbs[64 * b..64 * (b + 1)].split_at(32);
        let (mut sh, mut sl) = match format {
            QuantFormat::Q8_0 => (0, 0),
            QuantFormat::Q4_0 => (x.offset_hi[b], x.offset_lo[b]),
        };
        for p in 0..32 {
            let c = code(format, &blk[2..], weight_at(format, p));
            sh += c * hi[p] as i32;
            sl += c * lo[p] as i32;
        }
        let block = (sh as f32).mul_add((1 << LIMB) as f32, sl as f32);
        total += (super::simd::block_scale(blk) * block) as f64;
    }
    total
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use crate::quant::groups8::{codes_at, BLOCK_BYTES};
    use crate::quant::QuantFormat;

    /// A block's f16 scale at `blk`, in all 8 lanes (F16C: 3 instructions; the portable
    /// widening was a third of the block's).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn scale(blk: *const u8) -> __m256 {
        let bits = u16::from_le_bytes([*blk, *blk.add(1)]);
        _mm256_broadcastss_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
    }

    /// One block's 32 codes as two vectors of 16 i16, against its 64 limbs at `limbs`:
    /// accumulates `d · (Σ c·hi · 2^15 + Σ c·lo)` into `acc` (8 lanes).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn block(codes: [__m256i; 2], limbs: *const i16, d: __m256, acc: __m256) -> __m256 {
        let v = |i: usize| _mm256_loadu_si256(limbs.add(16 * i) as *const __m256i);
        let sh = _mm256_add_epi32(
            _mm256_madd_epi16(codes[0], v(0)),
            _mm256_madd_epi16(codes[1], v(1)),
        );
        let sl = _mm256_add_epi32(
            _mm256_madd_epi16(codes[0], v(2)),
            _mm256_madd_epi16(codes[1], v(3)),
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
        limbs: &[i16],
        w: &[u8],
        (blocks, block_bytes): (usize, usize),
        codes: impl Fn(*const u8) -> [__m256i; 2],
    ) -> f64 {
        let one = |b: usize, acc: __m256| {
            let blk = w.as_ptr().add(block_bytes * b);
            block(
                codes(blk.add(2)),
                limbs.as_ptr().add(64 * b),
                scale(blk),
                acc,
            )
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

    /// As the AVX-512 `dot_q4_0_group`, 8 lanes: x's four limb vectors and the 8 scales loaded
    /// once a block for the group's 8 rows, the group one stream.
    ///
    /// SAFETY: AVX2, FMA and F16C present; `limbs` holds 64·b values and `group` b group
    /// blocks (`groups8::BLOCK_BYTES` each) for the same b; `out.len()` ≤ 8.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_q4_0_group(limbs: &[i16], group: &[u8], unit: f64, out: &mut [f32]) {
        let limb = _mm256_set1_ps((1 << super::LIMB) as f32);
        let mut acc = [_mm256_setzero_ps(); 8];
        for (b, blk) in group.chunks_exact(BLOCK_BYTES).enumerate() {
            let blk = blk.as_ptr();
            // A hint only: past the group's end it reads nothing (wrapping: no pointer UB).
            for line in [0, 64, 128] {
                _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(4 * BLOCK_BYTES + line) as *const i8);
            }
            let l = limbs.as_ptr().add(64 * b);
            let v: [__m256i; 4] =
                std::array::from_fn(|i| _mm256_loadu_si256(l.add(16 * i) as *const __m256i));
            let scales = _mm256_cvtph_ps(_mm_loadu_si128(blk as *const __m128i));
            for (i, a) in acc.iter_mut().enumerate() {
                let [c0, c1] = q4_0_codes(blk.add(codes_at(i)));
                let sh = _mm256_add_epi32(_mm256_madd_epi16(c0, v[0]), _mm256_madd_epi16(c1, v[1]));
                let sl = _mm256_add_epi32(_mm256_madd_epi16(c0, v[2]), _mm256_madd_epi16(c1, v[3]));
                let t = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sh), limb, _mm256_cvtepi32_ps(sl));
                let d = _mm256_permutevar8x32_ps(scales, _mm256_set1_epi32(i as i32));
                *a = _mm256_fmadd_ps(t, d, *a);
            }
        }
        for (y, a) in out.iter_mut().zip(acc) {
            *y = (total(a, _mm256_setzero_ps()) * unit) as f32;
        }
    }

    /// `unit · x · w_r` into `out[r]` for consecutive rows of `stride` bytes in `w`, in one call
    /// (as the AVX-512 kernel's run).
    ///
    /// SAFETY: AVX2, FMA and F16C present; `limbs` holds 64·`blocks` values in `format`'s limb
    /// order, `w` `out.len()` rows of `stride` bytes, each at least `blocks` blocks.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_run(
        format: QuantFormat,
        limbs: &[i16],
        (w, stride, blocks): (&[u8], usize, usize),
        unit: f64,
        out: &mut [f32],
    ) {
        let rows = out.iter_mut().zip(w.chunks_exact(stride));
        match format {
            QuantFormat::Q8_0 => {
                for (y, row) in rows {
                    *y = (dot_q8_0(limbs, row, blocks) * unit) as f32;
                }
            }
            QuantFormat::Q4_0 => {
                for (y, row) in rows {
                    *y = (dot_q4_0(limbs, row, blocks) * unit) as f32;
                }
            }
        }
    }

    /// SAFETY: AVX2, FMA and F16C present; `limbs` holds 64·`blocks` values, `w` `blocks`
    /// q8_0 blocks.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn dot_q8_0(limbs: &[i16], w: &[u8], blocks: usize) -> f64 {
        blocks_dot(limbs, w, (blocks, 34), |q| {
            let q = q as *const __m128i;
            [
                _mm256_cvtepi8_epi16(_mm_loadu_si128(q)),
                _mm256_cvtepi8_epi16(_mm_loadu_si128(q.add(1))),
            ]
        })
    }

    /// SAFETY: AVX2, FMA and F16C present; `limbs` holds 64·`blocks` values in q4_0's limb
    /// order, `w` `blocks` q4_0 blocks.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn dot_q4_0(limbs: &[i16], w: &[u8], blocks: usize) -> f64 {
        blocks_dot(limbs, w, (blocks, 18), |q| q4_0_codes(q))
    }

    /// A q4_0 block's 16 code bytes at `q` as its 32 codes in limb order, two vectors of 16 i16
    /// offset by 8: the bytes in both halves; shifting each u32 lane (two u16 `w`) right by
    /// 0 / 8 in the low / high half, then by 4 / 12, and masking each u16 to 4 bits gives the
    /// codes of limbs 0..16 and 16..32 (`weight_at`).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn q4_0_codes(q: *const u8) -> [__m256i; 2] {
        let (mask, eight) = (_mm256_set1_epi32(0x000f_000f), _mm256_set1_epi16(8));
        let both = _mm256_broadcastsi128_si256(_mm_loadu_si128(q as *const __m128i));
        [
            _mm256_setr_epi32(0, 0, 0, 0, 8, 8, 8, 8),
            _mm256_setr_epi32(4, 4, 4, 4, 12, 12, 12, 12),
        ]
        .map(|shift| {
            _mm256_sub_epi16(
                _mm256_and_si256(_mm256_srlv_epi32(both, shift), mask),
                eight,
            )
        })
    }
}

/// The AVX2 q4_0 kernel's arithmetic on 512-bit vectors, one vector a block (32 codes as i16),
/// and a software prefetch ahead of the row. On this project's Zen 5 (full-width AVX-512) a
/// q4_0 row streamed from memory takes 1.2-1.4x less time than with the AVX2 kernel
/// (docs/PERFORMANCE.md). Rows go one at a time: two rows interleaved (the SIMD128 kernel's
/// sharing of limb loads) halved the streaming rate of a q8_0 form tried here.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use crate::quant::groups8::{codes_at, BLOCK_BYTES};

    /// How far ahead of the block being read the row is prefetched, in bytes.
    const PREFETCH: usize = 512;

    /// One block: `acc + d · (Σ c·hi · 2^15 + Σ c·lo)` (16 lanes), the block's f16 scale d at
    /// `blk`, its 32 codes as i16 in `codes`, its 64 limbs at `limbs`.
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
    #[inline]
    unsafe fn block(codes: __m512i, limbs: *const i16, blk: *const u8, acc: __m512) -> __m512 {
        let hi = _mm512_loadu_si512(limbs as *const _);
        let lo = _mm512_loadu_si512(limbs.add(32) as *const _);
        let sh = _mm512_cvtepi32_ps(_mm512_madd_epi16(codes, hi));
        let sl = _mm512_cvtepi32_ps(_mm512_madd_epi16(codes, lo));
        let v = _mm512_fmadd_ps(sh, _mm512_set1_ps((1 << super::LIMB) as f32), sl);
        let bits = u16::from_le_bytes([*blk, *blk.add(1)]);
        let d = _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32));
        _mm512_fmadd_ps(v, _mm512_broadcastss_ps(d), acc)
    }

    /// A q4_0 block's 16 code bytes at `q` as its 32 codes in limb order, i16, offset by 8:
    /// the bytes in each 128-bit lane, shifted right by 0, 8, 4, 12 per lane (two u16 `w` a
    /// u32) and masked to 4 bits a u16: limbs 0..8, 8..16, 16..24, 24..32 (`weight_at`), as the
    /// AVX2 kernel's two vectors.
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
    #[inline]
    unsafe fn q4_0_codes(q: *const u8) -> __m512i {
        let shift = _mm512_setr_epi32(0, 0, 0, 0, 8, 8, 8, 8, 4, 4, 4, 4, 12, 12, 12, 12);
        let bytes = _mm512_broadcast_i32x4(_mm_loadu_si128(q as *const __m128i));
        _mm512_sub_epi16(
            _mm512_and_si512(
                _mm512_srlv_epi32(bytes, shift),
                _mm512_set1_epi32(0x000f_000f),
            ),
            _mm512_set1_epi16(8),
        )
    }

    /// `unit · x · w_i` into `out[i]` for the rows of a q4_0 group (`Layout::Groups8`: per
    /// block, 8 scales then 8 rows' 16 code bytes), one accumulator a row: x's two limb vectors
    /// and the 8 scales are loaded once a block for the 8 rows, the group is one stream.
    ///
    /// SAFETY: AVX-512 F/BW, AVX2, FMA and F16C present; `limbs` holds 64·b values and `group`
    /// b group blocks (`groups8::BLOCK_BYTES` each) for the same b; `out.len()` ≤ 8.
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
    pub(super) unsafe fn dot_q4_0_group(limbs: &[i16], group: &[u8], unit: f64, out: &mut [f32]) {
        let limb = _mm512_set1_ps((1 << super::LIMB) as f32);
        let lane: [__m512i; 8] = std::array::from_fn(|i| _mm512_set1_epi32(i as i32));
        let mut acc = [_mm512_setzero_ps(); 8];
        for (b, blk) in group.chunks_exact(BLOCK_BYTES).enumerate() {
            let blk = blk.as_ptr();
            // A hint only: past the group's end it reads nothing (wrapping: no pointer UB).
            for line in [0, 64, 128] {
                _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(4 * BLOCK_BYTES + line) as *const i8);
            }
            let hi = _mm512_loadu_si512(limbs.as_ptr().add(64 * b) as *const _);
            let lo = _mm512_loadu_si512(limbs.as_ptr().add(64 * b + 32) as *const _);
            let scales = _mm512_castps256_ps512(_mm256_cvtph_ps(_mm_loadu_si128(blk as *const _)));
            for (i, a) in acc.iter_mut().enumerate() {
                let codes = q4_0_codes(blk.add(codes_at(i)));
                let sh = _mm512_cvtepi32_ps(_mm512_madd_epi16(codes, hi));
                let sl = _mm512_cvtepi32_ps(_mm512_madd_epi16(codes, lo));
                let v = _mm512_fmadd_ps(sh, limb, sl);
                *a = _mm512_fmadd_ps(v, _mm512_permutexvar_ps(lane[i], scales), *a);
            }
        }
        for (y, a) in out.iter_mut().zip(acc) {
            *y = (_mm512_reduce_add_ps(a) as f64 * unit) as f32;
        }
    }

    /// `unit · x · w_r` into `out[r]` for consecutive rows of `stride` bytes in `w`, in one call
    /// (the constants and the call are paid once per run, not per row).
    ///
    /// SAFETY: AVX-512 F/BW, AVX2, FMA and F16C present; `limbs` holds 64·`blocks` values in
    /// q4_0's limb order, `w` `out.len()` rows of `stride` ≥ 18·`blocks` bytes.
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
    pub(super) unsafe fn dot_q4_0_run(
        limbs: &[i16],
        (w, stride, blocks): (&[u8], usize, usize),
        unit: f64,
        out: &mut [f32],
    ) {
        for (y, row) in out.iter_mut().zip(w.chunks_exact(stride)) {
            *y = (dot_q4_0(limbs, row, blocks) * unit) as f32;
        }
    }

    /// `Σ_b d_b · (Σ c·hi · 2^15 + Σ c·lo)` over a row's `blocks` q4_0 blocks. Even and odd
    /// blocks go to separate accumulators, so the FMA chain is not the bound.
    ///
    /// SAFETY: AVX-512 F/BW, AVX2, FMA and F16C present; `limbs` holds 64·`blocks` values in
    /// q4_0's limb order, `w` `blocks` q4_0 blocks.
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
    #[inline]
    unsafe fn dot_q4_0(limbs: &[i16], w: &[u8], blocks: usize) -> f64 {
        let one = |b: usize, acc: __m512| {
            let blk = w.as_ptr().add(18 * b);
            block(q4_0_codes(blk.add(2)), limbs.as_ptr().add(64 * b), blk, acc)
        };
        let (mut even, mut odd) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let mut b = 0;
        while b + 2 <= blocks {
            // A hint only: past the row's end it reads nothing (wrapping: no pointer UB).
            let ahead = w.as_ptr().wrapping_add(18 * b + PREFETCH);
            _mm_prefetch::<_MM_HINT_T0>(ahead as *const i8);
            even = one(b, even);
            odd = one(b + 1, odd);
            b += 2;
        }
        if b < blocks {
            even = one(b, even);
        }
        _mm512_reduce_add_ps(_mm512_add_ps(even, odd)) as f64
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd128 {
    //! Shaped for V8's TurboFan, which reloads vector constants and checks the stack in every
    //! iteration, hoists a loop body's loads to its top (so unrolling blocks spilled), and
    //! keeps few loop variables in registers: the blocks' f16 scales are widened first, four at
    //! a time (the scalar widening was a sixth of a block's instructions), with q4_0's
    //! per-block offsets; then one block an iteration, whose limbs sit in one run of 64, for
    //! R weight rows at once (R = 2 loads each limb once for two rows: decode here is bound by
    //! instructions, not bytes).
    use core::arch::wasm32::*;

    /// The f16 scales of the four blocks at `w`, `w + bb`, ... as f32x4. Block scales are
    /// finite (checked when blocks are made or loaded), so this is `widen_f16`'s exact
    /// widening, four at once.
    ///
    /// SAFETY: `w + i·bb` valid for 2 bytes, i < 4.
    #[inline(always)]
    unsafe fn scales4(w: *const u8, bb: usize) -> v128 {
        let v = i32x4_splat(0);
        let v = v128_load16_lane::<0>(v, w as *const u16);
        let v = v128_load16_lane::<2>(v, w.add(bb) as *const u16);
        let v = v128_load16_lane::<4>(v, w.add(2 * bb) as *const u16);
        let v = v128_load16_lane::<6>(v, w.add(3 * bb) as *const u16);
        const REBIAS: f32 = 5.192_297e33; // 2^112 = 2^(127 - 15)
        let magnitude = f32x4_mul(
            i32x4_shl(v128_and(v, i32x4_splat(0x7fff)), 13),
            f32x4_splat(REBIAS),
        );
        v128_or(magnitude, i32x4_shl(v128_and(v, i32x4_splat(0x8000)), 16))
    }

    /// Rows' accumulators: per row, f32x4 partial totals of `Σ d·Σ c·hi` and `Σ d·Σ c·lo`.
    type Totals<const R: usize> = [(v128, v128); R];

    /// `Σ_b d_b · (Σ c·hi · 2^15 + Σ c·lo)` of x (`limbs`) with each of R weight rows `ws`
    /// (blocks of `bb` bytes: f16 scale, then codes; as many as `limbs` has blocks), `codes`
    /// giving a block's four vectors of eight i16 codes from its code bytes; `offset` (q4_0),
    /// per block, sums to add to `(Σ c·hi, Σ c·lo)`.
    // Limb vector i meets code vector i of every row: indices read plainer than zips here.
    #[allow(clippy::needless_range_loop)]
    #[inline(always)]
    fn rows_dot<const R: usize>(
        limbs: &[i16],
        ws: [&[u8]; R],
        bb: usize,
        offset: Option<(&[i32], &[i32])>,
        codes: impl Fn(*const u8) -> [v128; 4],
    ) -> [f64; R] {
        const GROUP: usize = 64;
        let blocks = limbs.len() / 64;
        for w in ws {
            assert!(w.len() >= bb * blocks, "fixed dot: operand sizes");
        }
        if let Some((h, l)) = offset {
            assert!(h.len() >= blocks && l.len() >= blocks, "fixed dot: offsets");
        }
        let (ws, limbs) = (ws.map(|w| w.as_ptr()), limbs.as_ptr());
        let zero = f32x4_splat(0.0);
        // The offsets' terms go into the same totals, in the scales' pass.
        let mut acc: Totals<R> = [(zero, zero); R];
        let mut scales = [[0f32; GROUP]; R];
        let mut start = 0;
        while start < blocks {
            let n = GROUP.min(blocks - start);
            // SAFETY: every block read is < `blocks`, for which the asserts above hold;
            // `scales` holds GROUP ≥ n values a row.
            unsafe {
                for r in 0..R {
                    let (w, scales, acc) = (ws[r], &mut scales[r], &mut acc[r]);
                    let mut j = 0;
                    while j + 4 <= n {
                        let b = start + j;
                        let d = scales4(w.add(bb * b), bb);
                        v128_store(scales.as_mut_ptr().add(j) as *mut v128, d);
                        if let Some((h, l)) = offset {
                            let o = |v: &[i32]| {
                                f32x4_convert_i32x4(v128_load(v.as_ptr().add(b) as *const v128))
                            };
                            acc.0 = f32x4_add(acc.0, f32x4_mul(o(h), d));
                            acc.1 = f32x4_add(acc.1, f32x4_mul(o(l), d));
                        }
                        j += 4;
                    }
                    while j < n {
                        let b = start + j;
                        let at = w.add(bb * b);
                        let bits = u16::from_le_bytes([*at, *at.add(1)]);
                        let d = crate::cpu::simd::widen_f16(half::f16::from_bits(bits));
                        scales[j] = d;
                        if let Some((h, l)) = offset {
                            let o = |v: &[i32]| {
                                f32x4_replace_lane::<0>(zero, *v.as_ptr().add(b) as f32 * d)
                            };
                            acc.0 = f32x4_add(acc.0, o(h));
                            acc.1 = f32x4_add(acc.1, o(l));
                        }
                        j += 1;
                    }
                }
                for j in 0..n {
                    let b = start + j;
                    let x = limbs.add(64 * b);
                    let c: [[v128; 4]; R] = std::array::from_fn(|r| codes(ws[r].add(bb * b + 2)));
                    let (mut sh, mut sl) = ([i32x4_splat(0); R], [i32x4_splat(0); R]);
                    for i in 0..4 {
                        let h = v128_load(x.add(8 * i) as *const v128);
                        let l = v128_load(x.add(32 + 8 * i) as *const v128);
                        for r in 0..R {
                            sh[r] = i32x4_add(sh[r], i32x4_dot_i16x8(c[r][i], h));
                            sl[r] = i32x4_add(sl[r], i32x4_dot_i16x8(c[r][i], l));
                        }
                    }
                    for r in 0..R {
                        let d = v128_load32_splat(scales[r].as_ptr().add(j) as *const u32);
                        let scaled = |s: v128| f32x4_mul(f32x4_convert_i32x4(s), d);
                        acc[r].0 = f32x4_add(acc[r].0, scaled(sh[r]));
                        acc[r].1 = f32x4_add(acc[r].1, scaled(sl[r]));
                    }
                }
            }
            start += n;
        }
        let lanes = |v: v128| {
            f32x4_extract_lane::<0>(v) as f64
                + f32x4_extract_lane::<1>(v) as f64
                + f32x4_extract_lane::<2>(v) as f64
                + f32x4_extract_lane::<3>(v) as f64
        };
        std::array::from_fn(|r| lanes(acc[r].0) * (1 << super::LIMB) as f64 + lanes(acc[r].1))
    }

    /// q8_0: the codes are the bytes, widened.
    pub(super) fn dot_q8_0<const R: usize>(limbs: &[i16], ws: [&[u8]; R]) -> [f64; R] {
        // SAFETY: `rows_dot` passes a block's code bytes, 32 of them.
        rows_dot(limbs, ws, 34, None, |q| unsafe {
            let (a, b) = (
                v128_load(q as *const v128),
                v128_load(q.add(16) as *const v128),
            );
            [
                i16x8_extend_low_i8x16(a),
                i16x8_extend_high_i8x16(a),
                i16x8_extend_low_i8x16(b),
                i16x8_extend_high_i8x16(b),
            ]
        })
    }

    /// q4_0: the codes unsigned (0..16) in `weight_at`'s order; their offset of 8 is the row's
    /// per-block `offset` sums.
    pub(super) fn dot_q4_0<const R: usize>(
        limbs: &[i16],
        offset: (&[i32], &[i32]),
        ws: [&[u8]; R],
    ) -> [f64; R] {
        // SAFETY: `rows_dot` passes a block's code bytes, 16 of them.
        rows_dot(limbs, ws, 18, Some(offset), |q| unsafe {
            let w = v128_load(q as *const v128);
            let mask = u16x8_splat(15);
            [
                v128_and(w, mask),
                v128_and(u16x8_shr(w, 8), mask),
                v128_and(u16x8_shr(w, 4), mask),
                u16x8_shr(w, 12),
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::QuantMatrix;

    impl Kernel {
        /// The widest kernel a tier allows (what `pick` gives on a CPU with every feature).
        fn widest(tier: KernelTier) -> Kernel {
            match tier {
                KernelTier::Portable => Kernel::Portable,
                #[cfg(target_arch = "x86_64")]
                KernelTier::Avx2 => Kernel::Avx2,
                #[cfg(target_arch = "x86_64")]
                KernelTier::Avx512 => Kernel::Avx512,
                #[cfg(not(target_arch = "x86_64"))]
                _ => Kernel::Portable,
            }
        }
    }

    /// On a CPU with AVX-512 F/BW (this project's CI machine), each tier runs its own kernel.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn each_tier_runs_its_kernel() {
        let x = vec![0.5f32; 64];
        let pick = |tier, format| FixedRow::with_kernels(&x, format, tier).unwrap().kernel;
        assert_eq!(
            pick(KernelTier::Portable, QuantFormat::Q4_0),
            Kernel::Portable
        );
        let avx512 = std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw");
        if std::arch::is_x86_feature_detected!("avx2") {
            assert_eq!(pick(KernelTier::Avx2, QuantFormat::Q4_0), Kernel::Avx2);
            assert_eq!(pick(KernelTier::Avx512, QuantFormat::Q8_0), Kernel::Avx2);
        }
        if avx512 {
            assert_eq!(pick(KernelTier::Avx512, QuantFormat::Q4_0), Kernel::Avx512);
        }
    }

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// The f64 dot of x with row r of q dequantized, and the sum of its terms' magnitudes (the
    /// scale of f32's bound on it).
    fn dequantized_dot(q: &QuantMatrix, r: usize, x: &[f32]) -> (f64, f64) {
        let mut row = vec![0f32; q.cols];
        q.dequantize_row(r, &mut row);
        let terms = || row.iter().zip(x).map(|(&a, &b)| a as f64 * b as f64);
        (terms().sum(), terms().map(f64::abs).sum())
    }

    /// Against the f64 dot of x with the dequantized row, for both formats, on each kernel tier
    /// this CPU has (AVX-512, AVX2, portable); x with an outlier 1000x the rest (the limbs keep 30
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
                    for r in 0..3 {
                        let (want, scale) = dequantized_dot(&q, r, &x);
                        let bytes = &q.bytes[r * q.row_bytes()..(r + 1) * q.row_bytes()];
                        for tier in KernelTier::ALL {
                            // The row picks its kernel when it is written.
                            let fixed = FixedRow::with_kernels(&x, format, tier).unwrap();
                            assert!(fixed.kernel <= Kernel::widest(tier), "{tier:?}");
                            let got = dot_quant_fixed(&fixed, bytes) as f64;
                            // Two rows a pass, and a run of three rows (the decode products'
                            // groupings), row r each time.
                            let [a, b] = dot_quant_fixed_rows(&fixed, [bytes, bytes]);
                            let mut run = [0f32; 3];
                            dot_quant_fixed_run(&fixed, &bytes.repeat(3), &mut run);
                            for got in [got, a as f64, b as f64]
                                .into_iter()
                                .chain(run.map(f64::from))
                            {
                                assert!(
                                    (got - want).abs() <= 2e-6 * scale + 1e-30,
                                    "{format:?} k {k} outlier {outlier} {tier:?}: {got} vs {want}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// q4_0 in groups of 8 rows (`Layout::Groups8`): every row of a group, the last group
    /// padded (1..=17 rows), against the f64 dot with the dequantized row, on each tier (the
    /// AVX-512 grouped kernel, and the others' gather back to GGUF's layout).
    #[test]
    fn grouped_q4_0_products_equal_the_dequantized_product() {
        let mut seed = 11u64;
        for (rows, k) in [(1usize, 32usize), (7, 96), (8, 768), (17, 1536)] {
            let x: Vec<f32> = (0..k).map(|_| lcg(&mut seed)).collect();
            let w: Vec<f32> = (0..rows * k).map(|_| lcg(&mut seed) * 0.1).collect();
            let q = QuantMatrix::quantize("w", QuantFormat::Q4_0, &w, rows, k).unwrap();
            let g = q.grouped().unwrap();
            assert_eq!(g.bytes.len(), rows.div_ceil(8) * 8 * q.row_bytes());
            for tier in KernelTier::ALL {
                let fixed = FixedRow::with_kernels(&x, QuantFormat::Q4_0, tier).unwrap();
                for (gi, group) in g.bytes.chunks_exact(8 * q.row_bytes()).enumerate() {
                    let n = (rows - 8 * gi).min(8);
                    let mut out = vec![f32::NAN; n];
                    dot_q4_0_group(&fixed, group, &mut out);
                    for (i, &got) in out.iter().enumerate() {
                        let (want, scale) = dequantized_dot(&q, 8 * gi + i, &x);
                        assert!(
                            (got as f64 - want).abs() <= 2e-6 * scale + 1e-30,
                            "rows {rows} k {k} row {} {tier:?}: {got} vs {want}",
                            8 * gi + i
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn non_finite_and_zero_rows() {
        for format in [QuantFormat::Q8_0, QuantFormat::Q4_0] {
            assert!(FixedRow::new(&[1.0, f32::NAN], format).is_none());
            assert!(FixedRow::new(&[f32::INFINITY], format).is_none());
            let zero = FixedRow::new(&[0.0; 40], format).unwrap();
            assert_eq!(zero.len(), 64);
            let q = QuantMatrix::quantize("w", format, &[0.5; 64], 1, 64).unwrap();
            assert_eq!(dot_quant_fixed(&zero, &q.bytes), 0.0);
            // Tiny and huge magnitudes keep their relative precision (the exponent moves).
            for m in [1e-30f32, 1e30] {
                let x: Vec<f32> = (0..64).map(|i| m * (i as f32 - 31.5)).collect();
                let f = FixedRow::new(&x, format).unwrap();
                let got = dot_quant_fixed(&f, &q.bytes) as f64;
                let (want, scale) = dequantized_dot(&q, 0, &x);
                assert!(
                    (got - want).abs() <= 2e-6 * scale,
                    "{format:?} magnitude {m}: {got} vs {want}"
                );
            }
        }
    }

    /// Each limb position holds one weight of its block, every weight once.
    #[test]
    fn limb_orders_are_permutations() {
        for format in [QuantFormat::Q8_0, QuantFormat::Q4_0] {
            let mut seen = [false; 32];
            for p in 0..32 {
                seen[weight_at(format, p)] = true;
            }
            assert!(seen.iter().all(|&s| s), "{format:?}");
        }
        assert_eq!(
            (0..8)
                .map(|p| weight_at(QuantFormat::Q4_0, p))
                .collect::<Vec<_>>(),
            [0, 2, 4, 6, 8, 10, 12, 14]
        );
        assert_eq!(weight_at(QuantFormat::Q4_0, 31), 31);
        assert_eq!(weight_at(QuantFormat::Q4_0, 24), 17);
    }
}

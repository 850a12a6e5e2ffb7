//! Block-quantized weight matrices: `q8_0` and `q4_0`, bit-compatible with GGUF's Q8_0 and
//! Q4_0 so llama.cpp's files load without requantising (docs/QUANTIZATION.md).
//!
//! A row of K weights (K a multiple of 32) is K / 32 blocks, each one f16 scale `d` (little
//! endian) and 32 codes:
//! - q8_0, 34 bytes: `d`, then 32 `i8` codes q; weight i = d · q[i];
//! - q4_0, 18 bytes: `d`, then 16 bytes; byte j holds code j in its low nibble and code j + 16
//!   in its high nibble; weight i = d · (code[i] − 8).
//!
//! Quantization rounds to nearest as ggml's reference quantizers do (q8_0: d = max|w| / 127,
//! q = round(w / d); q4_0: d = w_m / −8 for the w_m of largest magnitude, code = min(15,
//! ⌊w / d + 8.5⌋)), so a matrix quantized here equals llama.cpp's byte for byte. Every
//! dequantized weight d · q is exact in f32 (an 11-bit by 8-bit product), so the CPU engine's
//! dequantized products are the reference the GPU kernels are tested against.

use half::f16;

use crate::error::{Error, Result};

/// Weights per block.
pub const BLOCK: usize = 32;

/// The geometry of q4_0 in [`Layout::Groups8`], which the CPU kernels (`cpu/fixed_dot.rs`)
/// read too: per group of [`groups8::ROWS`] rows and block index b, [`groups8::BLOCK_BYTES`]
/// bytes, the rows' f16 scales first, then their code bytes, row after row.
pub mod groups8 {
    /// Rows a group.
    pub const ROWS: usize = 8;
    /// One q4_0 block: an f16 scale and 16 code bytes.
    pub const Q4_0_BLOCK_BYTES: usize = super::QuantFormat::Q4_0.block_bytes();
    /// Code bytes of a q4_0 block.
    pub const CODE_BYTES: usize = super::BLOCK / 2;
    /// A group's block: every row's block (144 bytes).
    pub const BLOCK_BYTES: usize = ROWS * Q4_0_BLOCK_BYTES;

    /// Where row `i`'s scale starts in a group's block.
    pub const fn scale_at(i: usize) -> usize {
        2 * i
    }

    /// Where row `i`'s code bytes start in a group's block (after the 8 scales).
    pub const fn codes_at(i: usize) -> usize {
        2 * ROWS + CODE_BYTES * i
    }
}

/// A block format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantFormat {
    Q8_0,
    Q4_0,
}

impl QuantFormat {
    pub fn name(self) -> &'static str {
        match self {
            QuantFormat::Q8_0 => "q8_0",
            QuantFormat::Q4_0 => "q4_0",
        }
    }

    /// `q8_0` / `q4_0` (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "q8_0" => Some(QuantFormat::Q8_0),
            "q4_0" => Some(QuantFormat::Q4_0),
            _ => None,
        }
    }

    /// Bytes per block of 32 weights.
    pub const fn block_bytes(self) -> usize {
        match self {
            QuantFormat::Q8_0 => 2 + BLOCK,
            QuantFormat::Q4_0 => 2 + BLOCK / 2,
        }
    }

    /// Bytes of a row of `cols` weights (`cols` a multiple of [`BLOCK`]).
    pub fn row_bytes(self, cols: usize) -> usize {
        cols / BLOCK * self.block_bytes()
    }
}

/// A `[rows, cols]` matrix (checkpoint layout `[out, in]`) in blocks along each row, stored as
/// GGUF stores it (row r is bytes `r · row_bytes ..`, its blocks in order) or, for the x86 CPU
/// engine's q4_0 decode, in groups of eight rows ([`Layout::Groups8`]).
#[derive(Clone, Debug, PartialEq)]
pub struct QuantMatrix {
    pub format: QuantFormat,
    pub rows: usize,
    pub cols: usize,
    pub bytes: Vec<u8>,
    layout: Layout,
}

/// How a [`QuantMatrix`] orders its blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Row after row, each row's blocks in order (GGUF's layout; what files and the GPU hold).
    Rows,
    /// q4_0 only: rows in groups of 8 (the last padded with zero blocks); per group and block
    /// index b, 144 bytes: the 8 rows' f16 scales (16 bytes), then their 16 code bytes each in
    /// row order (128). A decode product then streams one sequence of bytes for 8 rows and
    /// reads x's block once for all 8 (cpu/fixed_dot.rs), where 8 separate row streams and 8
    /// reads of x ran ~1.3x slower on two threads. A group is 8 · row_bytes long.
    Groups8,
}

impl QuantMatrix {
    /// Quantizes a row-major `[rows, cols]` `data`; `name` names the tensor in errors. K must
    /// be a multiple of 32 (as in GGUF: a ragged tail is refused, not padded) and every value
    /// finite.
    pub fn quantize(
        name: &str,
        format: QuantFormat,
        data: &[f32],
        rows: usize,
        cols: usize,
    ) -> Result<Self> {
        let refuse = |reason: String| Error::Quantize {
            name: name.to_string(),
            format: format.name(),
            reason,
        };
        if cols == 0 || !cols.is_multiple_of(BLOCK) {
            return Err(refuse(format!(
                "rows of {cols} values: quantized rows must be a non-zero multiple of {BLOCK}"
            )));
        }
        if rows.checked_mul(cols) != Some(data.len()) {
            return Err(refuse(format!(
                "{} values for [{rows}, {cols}]",
                data.len()
            )));
        }
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(refuse(format!(
                "value {} at element {i} is not finite",
                data[i]
            )));
        }
        let mut bytes = crate::huge_pages::vec_with_capacity(rows * format.row_bytes(cols));
        // `chunks_exact` hands the quantizers whole blocks of BLOCK values.
        for block in data.chunks_exact(BLOCK) {
            match format {
                QuantFormat::Q8_0 => quantize_q8_0(block, &mut bytes),
                QuantFormat::Q4_0 => quantize_q4_0(block, &mut bytes),
            }
        }
        // A block whose values are finite can still scale to an infinite f16 (|w| > 65504·127).
        let m = Self {
            format,
            rows,
            cols,
            bytes,
            layout: Layout::Rows,
        };
        m.check_scales().map_err(|(row, block)| {
            refuse(format!(
                "row {row}, block {block}: its scale overflows f16 (weights beyond ±8e6)"
            ))
        })?;
        Ok(m)
    }

    /// Wraps stored blocks, checking their length and that every scale is finite; `name` and
    /// `file` name the tensor in errors.
    pub fn from_bytes(
        file: &str,
        name: &str,
        format: QuantFormat,
        rows: usize,
        cols: usize,
        bytes: Vec<u8>,
    ) -> Result<Self> {
        let bad = |reason: String| Error::QuantizedTensor {
            file: file.to_string(),
            name: name.to_string(),
            reason,
        };
        if cols == 0 || !cols.is_multiple_of(BLOCK) {
            return Err(bad(format!(
                "{} rows of {cols} values: a multiple of {BLOCK} is needed",
                format.name()
            )));
        }
        let want = rows
            .checked_mul(format.row_bytes(cols))
            .ok_or_else(|| bad(format!("[{rows}, {cols}] overflows")))?;
        if bytes.len() != want {
            return Err(bad(format!(
                "{} bytes, but [{rows}, {cols}] in {} takes {want} ({} blocks of {})",
                bytes.len(),
                format.name(),
                rows * cols / BLOCK,
                format.block_bytes()
            )));
        }
        let m = Self {
            format,
            rows,
            cols,
            bytes,
            layout: Layout::Rows,
        };
        m.check_scales().map_err(|(row, block)| {
            bad(format!("row {row}, block {block}: the scale is not finite"))
        })?;
        Ok(m)
    }

    /// The first (row, block) whose scale is not finite.
    fn check_scales(&self) -> std::result::Result<(), (usize, usize)> {
        let bb = self.format.block_bytes();
        let per_row = self.cols / BLOCK;
        match self
            .bytes
            .chunks_exact(bb)
            .position(|b| !scale(b).is_finite())
        {
            Some(i) => Err((i / per_row.max(1), i % per_row.max(1))),
            None => Ok(()),
        }
    }

    pub fn row_bytes(&self) -> usize {
        self.format.row_bytes(self.cols)
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Row `r`'s blocks, GGUF's bytes: borrowed in the row layout, gathered from its group in
    /// [`Layout::Groups8`].
    pub fn row(&self, r: usize) -> std::borrow::Cow<'_, [u8]> {
        let n = self.row_bytes();
        match self.layout {
            Layout::Rows => std::borrow::Cow::Borrowed(&self.bytes[r * n..(r + 1) * n]),
            Layout::Groups8 => {
                let mut row = Vec::with_capacity(n);
                group_row(self.group_of(r), r % groups8::ROWS, &mut row);
                std::borrow::Cow::Owned(row)
            }
        }
    }

    /// The bytes of row `r`'s group in [`Layout::Groups8`].
    fn group_of(&self, r: usize) -> &[u8] {
        let (g, len) = (r / groups8::ROWS, groups8::ROWS * self.row_bytes());
        &self.bytes[g * len..(g + 1) * len]
    }

    /// This matrix in [`Layout::Groups8`] (q4_0 in rows only; `None` otherwise).
    pub fn grouped(&self) -> Option<QuantMatrix> {
        if self.format != QuantFormat::Q4_0 || self.layout != Layout::Rows {
            return None;
        }
        use groups8::{CODE_BYTES, Q4_0_BLOCK_BYTES, ROWS};
        let n = self.row_bytes();
        let groups = self.rows.div_ceil(ROWS);
        let mut bytes = crate::huge_pages::vec_with_capacity(groups * ROWS * n);
        for g in 0..groups {
            for b in 0..self.cols / BLOCK {
                let block = |i: usize| {
                    let (r, at) = (ROWS * g + i, Q4_0_BLOCK_BYTES * b);
                    (r < self.rows).then(|| &self.bytes[r * n + at..r * n + at + Q4_0_BLOCK_BYTES])
                };
                // Scales, then codes (a padding row: scale 0, codes 8 = weight 0).
                for i in 0..ROWS {
                    bytes.extend_from_slice(block(i).map_or(&[0, 0][..], |blk| &blk[..2]));
                }
                for i in 0..ROWS {
                    let pad = &[0x88; CODE_BYTES][..];
                    bytes.extend_from_slice(block(i).map_or(pad, |blk| &blk[2..]));
                }
            }
        }
        Some(QuantMatrix {
            bytes,
            layout: Layout::Groups8,
            ..*self
        })
    }

    /// This matrix in GGUF's row layout (borrowed when it is).
    pub fn in_rows(&self) -> std::borrow::Cow<'_, QuantMatrix> {
        match self.layout {
            Layout::Rows => std::borrow::Cow::Borrowed(self),
            Layout::Groups8 => std::borrow::Cow::Owned(QuantMatrix {
                bytes: (0..self.rows)
                    .flat_map(|r| self.row(r).into_owned())
                    .collect(),
                layout: Layout::Rows,
                ..*self
            }),
        }
    }

    /// Writes row `r` dequantized into `out` (`cols` values).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        match self.layout {
            Layout::Rows => dequantize_row(self.format, &self.row(r), out),
            Layout::Groups8 => {
                use groups8::{codes_at, scale_at, BLOCK_BYTES, CODE_BYTES};
                let i = r % groups8::ROWS;
                let group = self.group_of(r);
                for (blk, o) in group
                    .chunks_exact(BLOCK_BYTES)
                    .zip(out.chunks_exact_mut(BLOCK))
                {
                    let (d, codes) = (scale(&blk[scale_at(i)..]), codes_at(i));
                    dequantize_block(self.format, d, &blk[codes..codes + CODE_BYTES], o);
                }
            }
        }
    }

    /// The whole matrix dequantized, row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        for (r, o) in out.chunks_exact_mut(self.cols.max(1)).enumerate() {
            self.dequantize_row(r, o);
        }
        out
    }
}

/// Row `i` (< 8) of a q4_0 group in [`Layout::Groups8`] (`group` its bytes) appended to `row`
/// in GGUF's layout.
pub fn group_row(group: &[u8], i: usize, row: &mut Vec<u8>) {
    use groups8::{codes_at, scale_at, BLOCK_BYTES, CODE_BYTES};
    for blk in group.chunks_exact(BLOCK_BYTES) {
        row.extend_from_slice(&blk[scale_at(i)..scale_at(i) + 2]);
        row.extend_from_slice(&blk[codes_at(i)..codes_at(i) + CODE_BYTES]);
    }
}

/// A block's scale.
#[inline(always)]
pub fn scale(block: &[u8]) -> f32 {
    f16::from_le_bytes([block[0], block[1]]).to_f32()
}

/// One row's blocks (`row`, in `format`) dequantized into `out`.
pub fn dequantize_row(format: QuantFormat, row: &[u8], out: &mut [f32]) {
    for (b, o) in row
        .chunks_exact(format.block_bytes())
        .zip(out.chunks_exact_mut(BLOCK))
    {
        dequantize_block(format, scale(b), &b[2..], o);
    }
}

/// One block's codes (`q`) times its scale `d` into `out` ([`BLOCK`] values).
fn dequantize_block(format: QuantFormat, d: f32, q: &[u8], out: &mut [f32]) {
    match format {
        QuantFormat::Q8_0 => {
            for (o, &q) in out.iter_mut().zip(q) {
                *o = d * (q as i8) as f32;
            }
        }
        QuantFormat::Q4_0 => {
            for (j, &q) in q.iter().take(16).enumerate() {
                out[j] = d * ((q & 15) as i32 - 8) as f32;
                out[j + 16] = d * ((q >> 4) as i32 - 8) as f32;
            }
        }
    }
}

/// One block of [`BLOCK`] values.
fn quantize_q8_0(x: &[f32], out: &mut Vec<u8>) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out.extend(f16::from_f32(d).to_le_bytes());
    // `round` rounds half away from zero, as C's roundf in ggml.
    out.extend(x.iter().map(|v| (v * id).round() as i8 as u8));
}

/// One block of [`BLOCK`] values.
fn quantize_q4_0(x: &[f32], out: &mut Vec<u8>) {
    // The value of largest magnitude, sign kept (the first one on ties, as ggml).
    let mut max = 0f32;
    for &v in x {
        if v.abs() > max.abs() {
            max = v;
        }
    }
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out.extend(f16::from_f32(d).to_le_bytes());
    // ggml: (int8_t)(x·id + 8.5) truncates toward zero, then min 15; x·id + 8.5 >= 0.5 here.
    let code = |v: f32| ((v * id + 8.5) as i8).clamp(0, 15) as u8;
    let (lo, hi) = x.split_at(x.len() / 2);
    out.extend(lo.iter().zip(hi).map(|(&a, &b)| code(a) | code(b) << 4));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32 - 0.5) * 3.0
            })
            .collect()
    }

    /// `Layout::Groups8` holds the same rows: each row read back, dequantized and the whole
    /// matrix in rows again equal the row layout's, the last group padded; q8_0 and an
    /// already grouped matrix are not regrouped.
    #[test]
    fn groups_of_eight_hold_the_rows() {
        for rows in [1usize, 7, 8, 9, 17] {
            let cols = 64;
            let data: Vec<f32> = (0..rows * cols)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
                .collect();
            let q = QuantMatrix::quantize("w", QuantFormat::Q4_0, &data, rows, cols).unwrap();
            let g = q.grouped().unwrap();
            assert_eq!(g.layout(), Layout::Groups8);
            assert!(g.grouped().is_none());
            assert_eq!(g.bytes.len(), rows.div_ceil(8) * 8 * q.row_bytes());
            for r in 0..rows {
                assert_eq!(g.row(r), q.row(r), "rows {rows}, row {r}");
                let (mut a, mut b) = (vec![0f32; cols], vec![0f32; cols]);
                q.dequantize_row(r, &mut a);
                g.dequantize_row(r, &mut b);
                assert_eq!(a, b, "rows {rows}, row {r}");
            }
            assert_eq!(*g.in_rows(), q);
            assert_eq!(g.dequantize(), q.dequantize());
        }
        let q8 = QuantMatrix::quantize("w", QuantFormat::Q8_0, &[0.5; 64], 2, 32).unwrap();
        assert!(q8.grouped().is_none());
    }

    #[test]
    fn q8_0_layout_and_round_trip_bound() {
        let x = values(64, 1);
        let m = QuantMatrix::quantize("w", QuantFormat::Q8_0, &x, 2, 32).unwrap();
        assert_eq!(m.bytes.len(), 2 * 34);
        let y = m.dequantize();
        for (r, (xr, yr)) in x.chunks(32).zip(y.chunks(32)).enumerate() {
            let amax = xr.iter().fold(0f32, |a, v| a.max(v.abs()));
            let d = scale(&m.bytes[r * 34..]);
            assert!((d - amax / 127.0).abs() <= amax / 127.0 * 1e-3);
            // The largest value is exactly ±127·d; every value within half a step.
            assert!(m.bytes[r * 34 + 2..(r + 1) * 34]
                .iter()
                .any(|&q| q as i8 == 127 || q as i8 == -127));
            for (a, b) in xr.iter().zip(yr) {
                assert!((a - b).abs() <= 0.5 * d * 1.002 + 1e-7, "{a} vs {b}");
            }
        }
    }

    #[test]
    fn q4_0_layout_and_round_trip_bound() {
        let x = values(96, 2);
        let m = QuantMatrix::quantize("w", QuantFormat::Q4_0, &x, 1, 96).unwrap();
        assert_eq!(m.bytes.len(), 3 * 18);
        let y = m.dequantize();
        for (b, (xb, yb)) in x.chunks(32).zip(y.chunks(32)).enumerate() {
            let blk = &m.bytes[b * 18..(b + 1) * 18];
            let d = scale(blk);
            // Code 0 is the value of largest magnitude (d = w_m / -8).
            let (i, &wm) = xb
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
                .unwrap();
            let code = if i < 16 {
                blk[2 + i] & 15
            } else {
                blk[2 + i - 16] >> 4
            };
            assert_eq!(code, 0, "block {b}: w_m {wm} at {i}");
            // Within half a step, except the far end (+8 steps clamps to code 15: one step).
            for (a, v) in xb.iter().zip(yb) {
                let step = if (a * wm.signum()) < -7.5 * d.abs() {
                    1.0
                } else {
                    0.5
                };
                assert!((a - v).abs() <= step * d.abs() * 1.002 + 1e-7, "{a} vs {v}");
            }
        }
    }

    #[test]
    fn hand_computed_blocks() {
        // q8_0: [1, -2, 0, ...]: d = 2/127, codes 64 (63.5 rounds away from zero), -127, 0.
        let mut x = [0f32; 32];
        x[0] = 1.0;
        x[1] = -2.0;
        let m = QuantMatrix::quantize("w", QuantFormat::Q8_0, &x, 1, 32).unwrap();
        assert_eq!(m.bytes[..2], f16::from_f32(2.0 / 127.0).to_le_bytes());
        assert_eq!(m.bytes[2] as i8, 64);
        assert_eq!(m.bytes[3] as i8, -127);
        assert_eq!(m.bytes[4], 0);
        // q4_0: w_m = -2 → d = 0.25, codes: 1 → 4 + 8 = 12; -2 → 0; 0 → 8; x[16] = 0.5 → 10.
        x[16] = 0.5;
        let m = QuantMatrix::quantize("w", QuantFormat::Q4_0, &x, 1, 32).unwrap();
        assert_eq!(m.bytes[..2], f16::from_f32(0.25).to_le_bytes());
        assert_eq!(m.bytes[2], 12 | 10 << 4);
        assert_eq!(m.bytes[3], 8 << 4);
        assert_eq!(m.bytes[4], 8 | 8 << 4);
        let y = m.dequantize();
        assert_eq!((y[0], y[1], y[2], y[16]), (1.0, -2.0, 0.0, 0.5));
    }

    #[test]
    fn zero_blocks_and_requantisation_are_exact() {
        let x = vec![0f32; 64];
        for f in [QuantFormat::Q8_0, QuantFormat::Q4_0] {
            let m = QuantMatrix::quantize("w", f, &x, 1, 64).unwrap();
            assert!(m.dequantize().iter().all(|&v| v == 0.0));
            // Quantizing the dequantized values gives the same blocks back.
            let y = QuantMatrix::quantize("w", f, &values(64, 9), 2, 32).unwrap();
            let again = QuantMatrix::quantize("w", f, &y.dequantize(), 2, 32).unwrap();
            assert_eq!(again, y, "{f:?}");
        }
    }

    #[test]
    fn refusals_are_errors() {
        let x = values(48, 3);
        let e = QuantMatrix::quantize("m.w", QuantFormat::Q4_0, &x, 1, 48).unwrap_err();
        assert!(e.to_string().contains("multiple of 32"), "{e}");
        let mut y = values(32, 4);
        y[5] = f32::NAN;
        let e = QuantMatrix::quantize("m.w", QuantFormat::Q8_0, &y, 1, 32).unwrap_err();
        assert!(e.to_string().contains("not finite"), "{e}");
        let mut big = vec![0f32; 32];
        big[0] = 1e9;
        assert!(QuantMatrix::quantize("m.w", QuantFormat::Q8_0, &big, 1, 32).is_err());
        let e = QuantMatrix::from_bytes("f", "t", QuantFormat::Q8_0, 2, 32, vec![0; 67]);
        assert!(e.unwrap_err().to_string().contains("67 bytes"));
        let mut nan = vec![0u8; 34];
        nan[..2].copy_from_slice(&f16::NAN.to_le_bytes());
        let e = QuantMatrix::from_bytes("f", "t", QuantFormat::Q8_0, 1, 32, nan);
        assert!(e.unwrap_err().to_string().contains("not finite"));
    }
}

//! Weight matrices split into row blocks that each fit one storage binding.

use std::ops::Range;

use super::context::{GpuBuffer, GpuContext};
use super::error::{GpuError, GpuResult};
use crate::quant::{QuantFormat, QuantMatrix, BLOCK};

/// One row block of a [`GpuMatrix`]: rows `row_start..row_start + rows`, stored row-major as
/// [rows, ldk] (`W[row_start + r, k]` at element `r * ldk + k`), `ldk` = cols rounded up to 4
/// (f32) or 8 (f16), zero padded, in a read-only storage texture of `rows` x `ldk / v` texels,
/// v = 4 values per rgba32float texel or 8 halves per rgba32uint one: texel (i, r) holds
/// `W[row_start + r, v*i..v*i + v]`. Kernels read W as vec4 along k (dot products). A texture
/// because a texel fetch is a vector gather on CPU Vulkan (lavapipe), ~7x cheaper than a
/// storage-buffer load there; on GPUs it is as good as a buffer.
#[derive(Clone, Debug)]
pub struct MatBlock {
    pub row_start: usize,
    pub rows: usize,
    pub ldk: usize,
    pub buffer: GpuBuffer,
}

impl MatBlock {
    /// Whether the block holds packed f16 (see [`WeightFormat::F16`]).
    pub fn is_f16(&self) -> bool {
        self.format() == WeightFormat::F16
    }

    /// How the block stores its values.
    pub fn format(&self) -> WeightFormat {
        self.buffer
            .texture
            .as_ref()
            .map_or(WeightFormat::F32, |(_, f)| *f)
    }
}

pub use crate::weight_format::WeightFormat;

/// The texture format holding a format's values: 4 f32 per rgba32float texel, or u32 words
/// (8 packed halves, or quantized superblocks, see [`GpuMatrix::from_quant`]) per rgba32uint.
pub fn texture_format(f: WeightFormat) -> wgpu::TextureFormat {
    match f {
        WeightFormat::F32 => wgpu::TextureFormat::Rgba32Float,
        _ => wgpu::TextureFormat::Rgba32Uint,
    }
}

/// Weights per 16-byte texel for the f32 and f16 layouts (4 and 8); quantized superblocks:
/// 128 weights in 9 (q8_0) or 5 (q4_0) texels.
pub fn values_per_texel(f: WeightFormat) -> usize {
    match f {
        WeightFormat::F16 => 8,
        _ => 4,
    }
}

/// Texels of one superblock of 128 quantized weights: one of 4 f32 scales, then the codes.
pub fn superblock_texels(q: QuantFormat) -> usize {
    match q {
        QuantFormat::Q8_0 => 9,
        QuantFormat::Q4_0 => 5,
    }
}

/// Where a quantized matrix's texels lie (f32 and f16 matrices are always plain rows), chosen by
/// the kernel plan ([`super::KernelPlan::quant_rows`]). Every kernel reads them through
/// `shaders::quant_texel` (or, matvec_quant, knows the interleaved layout).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantRows {
    /// Texel t of row r at (t, r).
    Plain,
    /// Rows in groups of 8, each group one texture row: texel t of row r at (8t + r % 8, r / 8).
    /// A row block's texture is padded with zero rows to whole groups of 64 rows
    /// (matvec_quant's workgroup), so its loads need no clamp.
    Interleaved8,
}

impl QuantRows {
    /// Rows per texture row.
    pub const fn group(self) -> usize {
        match self {
            QuantRows::Plain => 1,
            QuantRows::Interleaved8 => 8,
        }
    }

    /// A row block's rows are padded to a multiple of this.
    const fn pad(self) -> usize {
        match self {
            QuantRows::Plain => 1,
            QuantRows::Interleaved8 => 64,
        }
    }
}

/// A [rows, cols] f32 matrix (PyTorch [out, in] layout) stored as row blocks, each at most
/// `ctx.max_binding_size()` bytes and `max_texture_dimension_2d` rows (see [`MatBlock`] for the
/// layout). Ops that read it dispatch once per block.
#[derive(Clone, Debug)]
pub struct GpuMatrix {
    pub rows: usize,
    pub cols: usize,
    pub blocks: Vec<MatBlock>,
}

impl GpuMatrix {
    /// Whether any block holds packed f16 (kernels that read X differently for those, or do
    /// not take them, ask).
    pub fn has_f16(&self) -> bool {
        self.blocks.iter().any(MatBlock::is_f16)
    }

    /// How the matrix stores its values (every block alike).
    pub fn format(&self) -> WeightFormat {
        self.blocks
            .first()
            .map_or(WeightFormat::F32, MatBlock::format)
    }

    /// Rows per block for a matrix whose rows take `row_bytes` of texture.
    pub fn rows_per_block(ctx: &GpuContext, label: &str, row_bytes: u64) -> GpuResult<usize> {
        let row_bytes = row_bytes.max(16);
        let limit = ctx.max_binding_size();
        let r = (limit / row_bytes) as usize;
        if r == 0 {
            return Err(GpuError::TooLarge {
                what: format!("{label}: one row"),
                bytes: row_bytes,
                limit,
            });
        }
        let r = r.min(ctx.limits.max_texture_dimension_2d as usize);
        Ok(if r >= 4 { r & !3 } else { r })
    }

    /// Uploads a row-major `data` of `rows * cols` values, stored as f32.
    pub fn from_f32(
        ctx: &GpuContext,
        label: &str,
        data: &[f32],
        rows: usize,
        cols: usize,
    ) -> GpuResult<Self> {
        Self::from_f32_as(ctx, label, data, rows, cols, WeightFormat::F32)
    }

    /// Uploads a row-major `data` of `rows * cols` values, stored as `format`.
    pub fn from_f32_as(
        ctx: &GpuContext,
        label: &str,
        data: &[f32],
        rows: usize,
        cols: usize,
        format: WeightFormat,
    ) -> GpuResult<Self> {
        if data.len() != rows * cols {
            return Err(GpuError::Shape {
                op: "GpuMatrix::from_f32",
                detail: format!("{label}: {} values for [{rows}, {cols}]", data.len()),
            });
        }
        Self::from_fn(ctx, label, rows, cols, format, |r, out| {
            out.copy_from_slice(&data[r.start * cols..r.end * cols])
        })
    }

    /// Builds the matrix block by block: `fill(rows, out)` writes rows `rows` (row-major, f32)
    /// into `out`, so a caller converting from f16/bf16 never holds the whole f32 matrix.
    pub fn from_fn(
        ctx: &GpuContext,
        label: &str,
        rows: usize,
        cols: usize,
        format: WeightFormat,
        mut fill: impl FnMut(Range<usize>, &mut [f32]),
    ) -> GpuResult<Self> {
        if format.quant().is_some() {
            return Err(GpuError::Unsupported(format!(
                "{label}: {} matrices are uploaded from their blocks (GpuMatrix::from_quant)",
                format.name()
            )));
        }
        let per = Self::rows_per_block(ctx, label, cols.div_ceil(4) as u64 * 16)?;
        let v = values_per_texel(format);
        let ldk = cols.div_ceil(v).max(1) * v;
        let mut blocks = Vec::new();
        let mut tmp = Vec::new();
        let mut padded = Vec::new();
        let mut r0 = 0;
        while r0 < rows {
            let n = per.min(rows - r0);
            tmp.clear();
            tmp.resize(n * cols, 0.0f32);
            fill(r0..r0 + n, &mut tmp);
            let data = if ldk == cols {
                &tmp
            } else {
                padded.clear();
                padded.resize(n * ldk, 0.0f32);
                for (dst, src) in padded
                    .chunks_exact_mut(ldk)
                    .zip(tmp.chunks_exact(cols.max(1)))
                {
                    dst[..cols].copy_from_slice(src);
                }
                &padded
            };
            let buffer = ctx.upload_texture(label, data, (ldk / v) as u32, n as u32, format)?;
            blocks.push(MatBlock {
                row_start: r0,
                rows: n,
                ldk,
                buffer,
            });
            r0 += n;
        }
        Ok(Self { rows, cols, blocks })
    }

    /// Uploads a quantized matrix, re-laid for the kernels in superblocks of 128 weights
    /// (4 blocks) per `superblock_texels` rgba32uint texels: first the 4 blocks' scales as f32
    /// bits, then the codes: q8_0 as 8 texels of 16 i8 (4 per u32, weight order); q4_0 as one
    /// texel per block, 8 4-bit codes per u32 (nibble n of word m = weight 8m + n, offset 8).
    /// A row's last superblock is padded with zero blocks (zero scale). `ldk` = K (a multiple
    /// of 32): the kernels read W up to K only. Scales as f32 so a kernel reads them without
    /// unpacking; 16 bytes per 128 weights. Rows lie as the context's plan wants them
    /// ([`QuantRows`]).
    pub fn from_quant(ctx: &GpuContext, label: &str, q: &QuantMatrix) -> GpuResult<Self> {
        let (rows, cols) = (q.rows, q.cols);
        let sbt = superblock_texels(q.format);
        let supers = cols.div_ceil(4 * BLOCK);
        let width = supers * sbt;
        let layout = ctx.plan().quant_rows();
        let (group, pad) = (layout.group(), layout.pad());
        let maxd = ctx.limits.max_texture_dimension_2d as usize;
        if width * group > maxd {
            return Err(GpuError::TooLarge {
                what: format!("{label}: a quantized texture row of {group} x {width} texels"),
                bytes: (width * group) as u64,
                limit: maxd as u64,
            });
        }
        // Each row block has its own texture, padded as `layout` needs: at most pad - 1 more
        // rows, and (rows_per_block keeping to the texture dimension) no more texture rows.
        let per = Self::rows_per_block(ctx, label, width as u64 * 16)?;
        let format = WeightFormat::from(q.format);
        let mut blocks = Vec::new();
        let mut r0 = 0;
        while r0 < rows {
            let n = per.min(rows - r0);
            let tex_rows = n.div_ceil(pad) * pad / group;
            let mut words = vec![0u32; tex_rows * group * width * 4];
            let mut line = vec![0u32; width * 4];
            for r in 0..n {
                let row = q.row(r0 + r);
                line.fill(0);
                for (b, blk) in row.chunks_exact(q.format.block_bytes()).enumerate() {
                    let sb = &mut line[(b / 4) * sbt * 4..(b / 4 + 1) * sbt * 4];
                    sb[b % 4] = crate::quant::scale(blk).to_bits();
                    let codes = &blk[2..];
                    match q.format {
                        QuantFormat::Q8_0 => {
                            let at = 4 + (b % 4) * 8;
                            for (m, c) in codes.chunks_exact(4).enumerate() {
                                sb[at + m] = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                            }
                        }
                        QuantFormat::Q4_0 => {
                            // GGUF: byte j = codes j (low) and j + 16 (high); here weight order.
                            let code = |i: usize| {
                                let v = if i < 16 {
                                    codes[i] & 15
                                } else {
                                    codes[i - 16] >> 4
                                };
                                v as u32
                            };
                            let at = 4 + (b % 4) * 4;
                            for m in 0..4 {
                                sb[at + m] = (0..8).fold(0, |w, k| w | code(8 * m + k) << (4 * k));
                            }
                        }
                    }
                }
                for (t, texel) in line.chunks_exact(4).enumerate() {
                    let at = ((r / group) * width * group + t * group + r % group) * 4;
                    words[at..at + 4].copy_from_slice(texel);
                }
            }
            let buffer = ctx.upload_texture_words(
                label,
                &words,
                (width * group) as u32,
                tex_rows as u32,
                format,
            )?;
            blocks.push(MatBlock {
                row_start: r0,
                rows: n,
                ldk: cols,
                buffer,
            });
            r0 += n;
        }
        Ok(Self { rows, cols, blocks })
    }
}

//! Weight matrices split into row blocks that each fit one storage binding.

use std::ops::Range;

use super::context::{GpuBuffer, GpuContext};
use super::error::{GpuError, GpuResult};

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
        matches!(self.buffer.texture, Some((_, WeightFormat::F16)))
    }
}

/// How a [`GpuMatrix`] stores its values. `F16` packs 8 halves per rgba32uint texel: half the
/// bytes and, in the decode matvec (matvec_f16.wgsl), half the fetches; other kernels unpack
/// the 4 values they ask for (their f16 variant, see `shaders::shader_variant`). No
/// shader-f16 needed (`unpack2x16float` is core WGSL).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WeightFormat {
    #[default]
    F32,
    F16,
}

impl WeightFormat {
    /// What `auto` means: f16 for a model stored in f16 (lossless), else f32.
    pub fn auto_for(model: &crate::Model) -> Self {
        if model.stored_dtype == "F16" {
            WeightFormat::F16
        } else {
            WeightFormat::F32
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            WeightFormat::F32 => "f32",
            WeightFormat::F16 => "f16",
        }
    }

    /// The texture format holding it: 4 f32, or 8 halves packed two per u32.
    pub fn texture_format(self) -> wgpu::TextureFormat {
        match self {
            WeightFormat::F32 => wgpu::TextureFormat::Rgba32Float,
            WeightFormat::F16 => wgpu::TextureFormat::Rgba32Uint,
        }
    }

    /// Weights per texel (16 bytes either way).
    pub fn values_per_texel(self) -> usize {
        match self {
            WeightFormat::F32 => 4,
            WeightFormat::F16 => 8,
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

    /// Rows per block for a matrix with `cols` columns (a multiple of 4).
    pub fn rows_per_block(ctx: &GpuContext, label: &str, cols: usize) -> GpuResult<usize> {
        let row_bytes = (cols.div_ceil(4) as u64 * 16).max(16);
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
        let per = Self::rows_per_block(ctx, label, cols)?;
        let v = format.values_per_texel();
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
}

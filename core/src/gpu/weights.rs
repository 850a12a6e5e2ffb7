//! Weight matrices split into row blocks that each fit one storage binding.

use std::ops::Range;

use super::context::{GpuBuffer, GpuContext};
use super::error::{GpuError, GpuResult};

/// One row block of a [`GpuMatrix`]: rows `row_start..row_start + rows`, stored transposed as
/// [cols, ldw] (`buffer[k * ldw + r] = W[row_start + r, k]`), `ldw` = rows rounded up to 4,
/// zero padded. Kernels then read 4 consecutive output rows as one vec4 and neighbouring
/// invocations read neighbouring memory.
#[derive(Clone, Debug)]
pub struct MatBlock {
    pub row_start: usize,
    pub rows: usize,
    pub ldw: usize,
    pub buffer: GpuBuffer,
}

/// A [rows, cols] f32 matrix (PyTorch [out, in] layout) stored as row blocks, each at most
/// `ctx.max_binding_size()` bytes (see [`MatBlock`] for the layout). Ops that read it
/// dispatch once per block.
#[derive(Clone, Debug)]
pub struct GpuMatrix {
    pub rows: usize,
    pub cols: usize,
    pub blocks: Vec<MatBlock>,
}

impl GpuMatrix {
    /// Rows per block for a matrix with `cols` columns (a multiple of 4).
    pub fn rows_per_block(ctx: &GpuContext, label: &str, cols: usize) -> GpuResult<usize> {
        let row_bytes = (cols as u64 * 4).max(4);
        let limit = ctx.max_binding_size();
        let r = (limit / row_bytes) as usize;
        if r == 0 {
            return Err(GpuError::TooLarge {
                what: format!("{label}: one row"),
                bytes: row_bytes,
                limit,
            });
        }
        Ok(if r >= 4 { r & !3 } else { r })
    }

    /// Uploads a row-major `data` of `rows * cols` values.
    pub fn from_f32(
        ctx: &GpuContext,
        label: &str,
        data: &[f32],
        rows: usize,
        cols: usize,
    ) -> GpuResult<Self> {
        if data.len() != rows * cols {
            return Err(GpuError::Shape {
                op: "GpuMatrix::from_f32",
                detail: format!("{label}: {} values for [{rows}, {cols}]", data.len()),
            });
        }
        Self::from_fn(ctx, label, rows, cols, |r, out| {
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
        mut fill: impl FnMut(Range<usize>, &mut [f32]),
    ) -> GpuResult<Self> {
        let per = Self::rows_per_block(ctx, label, cols)?;
        let mut blocks = Vec::new();
        let mut tmp = Vec::new();
        let mut tr = Vec::new();
        let mut r0 = 0;
        while r0 < rows {
            let n = per.min(rows - r0);
            let ldw = n.div_ceil(4) * 4;
            tmp.clear();
            tmp.resize(n * cols, 0.0f32);
            fill(r0..r0 + n, &mut tmp);
            tr.clear();
            tr.resize(cols * ldw, 0.0f32);
            for (r, row) in tmp.chunks_exact(cols.max(1)).enumerate() {
                for (k, &v) in row.iter().enumerate() {
                    tr[k * ldw + r] = v;
                }
            }
            let buffer = ctx.upload_f32(label, &tr)?;
            blocks.push(MatBlock {
                row_start: r0,
                rows: n,
                ldw,
                buffer,
            });
            r0 += n;
        }
        Ok(Self { rows, cols, blocks })
    }
}

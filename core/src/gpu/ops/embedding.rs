use crate::gpu::context::{GpuBuffer, Kernel};
use crate::gpu::recorder::{grid64, Recorder};
use crate::gpu::weights::{GpuMatrix, MatBlock};
use crate::gpu::GpuResult;

use super::{kernel_params, words};
use super::{need_len, View};

kernel_params! {
    /// The params of embedding.wgsl.
    pub(crate) struct EmbeddingParams {
        n_tok: u32,
        dim: u32,
        row_start: u32,
        rows: u32,
        out_stride: u32,
        out_off: u32,
        ldk: u32,
    }
}

const K: Kernel = Kernel {
    shader: "embedding",
    entry: "main",
    access: "rtw",
    spec: "",
};

/// `out[t, :] = table[tokens[t], :]` for `n` tokens (u32 buffer). One dispatch per table block;
/// a token outside the table leaves its output row untouched (the caller validates ids).
pub fn embedding(
    rec: &mut Recorder,
    tokens: &GpuBuffer,
    n: u32,
    table: &GpuMatrix,
    out: View,
) -> GpuResult<()> {
    gather(rec, tokens, n, table, out, |_| true)
}

/// [`embedding`] for tokens the caller also has on the CPU (`ids`, the contents of `tokens`):
/// only the table blocks holding one of them are dispatched (a decode token reads one block of
/// a split table, not all of them).
pub fn embedding_of(
    rec: &mut Recorder,
    tokens: &GpuBuffer,
    ids: &[u32],
    table: &GpuMatrix,
    out: View,
) -> GpuResult<()> {
    gather(rec, tokens, ids.len() as u32, table, out, |b| {
        ids.iter()
            .any(|&i| (b.row_start..b.row_start + b.rows).contains(&(i as usize)))
    })
}

fn gather(
    rec: &mut Recorder,
    tokens: &GpuBuffer,
    n: u32,
    table: &GpuMatrix,
    out: View,
    holds: impl Fn(&MatBlock) -> bool,
) -> GpuResult<()> {
    const OP: &str = "embedding";
    need_len(OP, "tokens", tokens, n as u64)?;
    out.check(OP, "out", n, table.cols as u32)?;
    for b in table.blocks.iter().filter(|b| holds(b)) {
        let params = EmbeddingParams {
            n_tok: n,
            dim: table.cols as u32,
            row_start: b.row_start as u32,
            rows: b.rows as u32,
            out_stride: out.stride,
            out_off: out.offset,
            ldk: b.ldk as u32,
        };
        rec.dispatch(
            &K,
            words(&params),
            &[tokens, &b.buffer, out.buf],
            grid64(n as u64 * table.cols as u64),
        )?;
    }
    Ok(())
}

use crate::gpu::context::GpuBuffer;
use crate::gpu::error::ensure;
use crate::gpu::recorder::Recorder;
use crate::gpu::GpuResult;

use super::ssd::{pack_xbc, params, segment_rows, segment_states};
use super::{need_len, SsmDims, View};

/// The memory converter (MODEL.md step 4): the SSM state after the first `tokens` tokens,
/// `S[h] = sum_{s<tokens} exp(A[h] sum_{r=s+1}^{tokens-1} dt[r,h]) dt[s,h] x[s,h] (x) B[s,g]`,
/// from the attention cache's B (`b` [tokens, G*N]), x (`x` [tokens, H*P]) and `dt` [tokens, H].
/// Runs the chunked scan's cumsum, chunk-state and state-passing kernels from a zero state;
/// `state` [H, P, N] is overwritten (the whole buffer is zeroed first).
pub fn memory_converter(
    rec: &mut Recorder,
    d: SsmDims,
    tokens: u32,
    x: View,
    b: View,
    dt: View,
    a_log: &GpuBuffer,
    state: &GpuBuffer,
    chunk: u32,
) -> GpuResult<()> {
    const OP: &str = "memory_converter";
    d.check(OP)?;
    ensure(OP, chunk >= 1, || "chunk size 0".into())?;
    x.check(OP, "x", tokens, d.inner())?;
    b.check(OP, "B", tokens, d.bc_width())?;
    dt.check(OP, "dt", tokens, d.heads)?;
    need_len(OP, "A_log", a_log, d.heads as u64)?;
    need_len(OP, "state", state, d.state_len() as u64)?;
    rec.clear(state);
    if tokens == 0 {
        return Ok(());
    }
    let q = chunk.min(tokens);
    let seg = segment_rows(rec.ctx(), OP, &d, tokens, q, false)?;
    let ctx = rec.ctx();
    let acs = ctx.scratch("ssd_acs", seg as usize * d.heads as usize)?;
    let states = ctx.scratch(
        "ssd_states",
        seg.div_ceil(q) as usize * d.state_len() as usize,
    )?;
    let mut r0 = 0;
    while r0 < tokens {
        let len = seg.min(tokens - r0);
        let nc = len.div_ceil(q);
        let (xs, bs, dts) = (x.rows_from(r0), b.rows_from(r0), dt.rows_from(r0));
        let p = params(&d, len, q, nc, xs, bs, bs, dts, xs, 0);
        let xt = pack_xbc(rec, &d, len, xs, bs, None)?;
        let inputs = (xs, bs, dts, a_log);
        segment_states(rec, &d, &p, nc, inputs, xt.as_ref(), state, &acs, &states)?;
        r0 += len;
    }
    Ok(())
}

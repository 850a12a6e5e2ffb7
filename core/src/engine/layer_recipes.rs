//! Recording one layer of MODEL.md's block into a submission, in two recipes: **decode** (one
//! token: the norm inside in_proj, the conv step in its epilogue, and in the SSM region a step
//! that applies dt and the gate itself, with out_proj normalising: three dispatches a layer
//! where the device allows) and **prefill** (several tokens: products over all rows, the
//! attention region, then the chunked SSD scan). Both share the attention region, the memory
//! converter, the output projection and the MLP.

use super::attention_cache::AttentionCache;
use super::model::GpuModel;
use super::session::{Activations, GpuState};
use crate::error::Result;
use crate::gpu::ops::{self, SsmInputs, SsmState, View};
use crate::gpu::Recorder;
use crate::schedule::TransPoint;

/// The activation views one layer reads and writes, for `rows` new tokens of which the first
/// `n_att` run as attention.
struct LayerViews<'a> {
    rows: u32,
    n_att: u32,
    h: View<'a>,
    u: View<'a>,
    /// in_proj's output rows `[z | xBC | dt_raw]`.
    zx: View<'a>,
    /// Post-conv `[x | B | C]` and its parts.
    xbc: View<'a>,
    x: View<'a>,
    b: View<'a>,
    c: View<'a>,
    dt: View<'a>,
    dt_raw: View<'a>,
    y: View<'a>,
}

impl<'a> LayerViews<'a> {
    fn new(m: &GpuModel, act: &'a Activations, rows: usize, n_att: usize) -> Self {
        let c = &m.config;
        let (d, di, dc) = (c.hidden_size as u32, c.d_inner() as u32, c.d_conv() as u32);
        let gn = m.dims().bc_width();
        let zx = View::dense(&act.zxbcdt, c.d_in_proj() as u32);
        let xbc = View::dense(&act.xbc, dc);
        Self {
            rows: rows as u32,
            n_att: n_att as u32,
            h: View::dense(&act.h, d),
            u: View::dense(&act.u, d),
            zx,
            xbc,
            x: xbc,
            b: xbc.cols_from(di),
            c: xbc.cols_from(di + gn),
            dt: View::dense(&act.dt, c.num_heads as u32),
            dt_raw: zx.cols_from(di + dc),
            y: View::dense(&act.y, di),
        }
    }
}

impl GpuState {
    /// Records layer `i` for `n` new rows; returns whether its cache was converted (the caller
    /// frees it after the submission).
    pub(super) fn record_layer(
        &mut self,
        m: &GpuModel,
        rec: &mut Recorder,
        act: &Activations,
        i: usize,
        n: usize,
    ) -> Result<bool> {
        let n_att = match self.schedule.layer(i) {
            TransPoint::At(tau) => tau.saturating_sub(self.position).min(n),
            TransPoint::Never => n,
        };
        let v = LayerViews::new(m, act, n, n_att);
        let converted = if n == 1 {
            self.decode_recipe(m, rec, i, &v)?
        } else {
            self.prefill_recipe(m, rec, i, &v)?
        };
        record_mlp(m, rec, act, i, &v)?;
        Ok(converted)
    }

    /// One token. Steps 1-3 in one product (norm folded in, conv step in its epilogue); an
    /// attention token then appends and attends; an SSM token runs the step with dt and, where
    /// the state lives in textures, the gate applied inside it, and out_proj normalises.
    fn decode_recipe(
        &mut self,
        m: &GpuModel,
        rec: &mut Recorder,
        i: usize,
        v: &LayerViews,
    ) -> Result<bool> {
        let (c, w) = (&m.config, &m.layers[i]);
        let (di, dc) = (c.d_inner() as u32, c.d_conv() as u32);
        let eps = c.layer_norm_epsilon;
        let (cw, cb, k) = (&w.conv_weight, w.conv_bias.as_ref(), c.conv_kernel as u32);
        let conv_state = &self.layers[i].conv_state;
        let in_bias = w.in_proj_bias.as_ref();
        let conv = ops::ConvStep {
            weight: cw,
            bias: cb,
            state: conv_state,
            k,
            first_row: di,
            channels: dc,
            out: v.xbc,
        };
        if m.quant_norms && ops::matvec_quant_normed_supported(&m.ctx, 1, &w.in_proj, 1) {
            ops::matvec_quant_normed(
                rec,
                1,
                v.h,
                1,
                eps,
                &w.norm,
                &w.in_proj,
                in_bias,
                v.zx,
                false,
                Some(conv),
            )?;
        } else if m.folded_norms && ops::matmul_normed_supported(&m.ctx, 1, &w.in_proj, 1) {
            ops::matmul_normed(
                rec,
                1,
                v.h,
                1,
                eps,
                &w.in_proj,
                in_bias,
                v.zx,
                false,
                Some(conv),
            )?;
        } else {
            record_unfused_projection(m, rec, i, v, conv_state)?;
        }
        let (lo, hi) = c.time_step_limit;
        if v.n_att == 1 {
            ops::dt_softplus(
                rec,
                1,
                c.num_heads as u32,
                v.dt_raw,
                &w.dt_bias,
                v.dt,
                lo,
                hi,
            )?;
            self.record_attention_region(m, rec, i, v)?;
            record_output(m, rec, i, v)?;
            return Ok(false);
        }
        let dims = m.dims();
        let (state, converted) = self.ssm_state(m, rec, i)?;
        let inputs = SsmInputs {
            x: v.x,
            b: v.b,
            c: v.c,
            dt: v.dt_raw,
            a_log: &w.a_log,
        };
        let raw_dt = ops::RawDt {
            bias: &w.dt_bias,
            lo,
            hi,
        };
        let quant_fuse = m.quant_norms
            && ops::ssm_step_fuses_gate(&m.ctx, state)
            && ops::matvec_quant_normed_supported(&m.ctx, 1, &w.out_proj, dims.groups);
        let fuse = !quant_fuse
            && m.folded_norms
            && ops::ssm_step_fuses_gate(&m.ctx, state)
            && ops::matvec_normed_supported(&m.ctx, 1, &w.out_proj, dims.groups);
        let gate = (fuse || quant_fuse).then_some(ops::StepGate { d: &w.d, z: v.zx });
        ops::ssm_step(rec, dims, &inputs, state, v.y, Some(raw_dt), gate)?;
        if quant_fuse {
            // Gated by the step; the grouped norm, its weight and the residual ride in the product.
            ops::matvec_quant_normed(
                rec,
                1,
                v.y,
                dims.groups,
                eps,
                &w.gated_norm,
                &w.out_proj,
                w.out_proj_bias.as_ref(),
                v.h,
                true,
                None,
            )?;
        } else if fuse {
            // Already gated by the step: the grouped norm rides in the product.
            let (out, out_bias) = (&w.out_proj, w.out_proj_bias.as_ref());
            ops::matvec_normed(
                rec,
                1,
                v.y,
                dims.groups,
                eps,
                out,
                out_bias,
                v.h,
                true,
                None,
            )?;
        } else {
            record_output(m, rec, i, v)?;
        }
        Ok(converted)
    }

    /// Several tokens: products over all rows (the norm folded into in_proj where supported),
    /// the conv over the rows, dt, the attention region, then the SSM region through the
    /// chunked scan (one SSM row: the step).
    fn prefill_recipe(
        &mut self,
        m: &GpuModel,
        rec: &mut Recorder,
        i: usize,
        v: &LayerViews,
    ) -> Result<bool> {
        let (c, w) = (&m.config, &m.layers[i]);
        let (di, dc) = (c.d_inner() as u32, c.d_conv() as u32);
        let eps = c.layer_norm_epsilon;
        let conv_state = &self.layers[i].conv_state;
        if m.folded_norms && ops::matmul_normed_supported(&m.ctx, v.rows, &w.in_proj, 1) {
            let in_bias = w.in_proj_bias.as_ref();
            ops::matmul_normed(
                rec, v.rows, v.h, 1, eps, &w.in_proj, in_bias, v.zx, false, None,
            )?;
            let (cw, cb, k) = (&w.conv_weight, w.conv_bias.as_ref(), c.conv_kernel as u32);
            let conv_in = v.zx.cols_from(di);
            ops::conv1d(rec, v.rows, dc, k, conv_in, cw, cb, conv_state, v.xbc, true)?;
        } else {
            record_unfused_projection(m, rec, i, v, conv_state)?;
        }
        let (lo, hi) = c.time_step_limit;
        let h_n = c.num_heads as u32;
        ops::dt_softplus(rec, v.rows, h_n, v.dt_raw, &w.dt_bias, v.dt, lo, hi)?;
        if v.n_att > 0 {
            self.record_attention_region(m, rec, i, v)?;
        }
        let mut converted = false;
        if v.n_att < v.rows {
            let (dims, chunk) = (m.dims(), m.options.chunk_size);
            let (state, conv) = self.ssm_state(m, rec, i)?;
            converted = conv;
            let from = v.n_att;
            let inputs = SsmInputs {
                x: v.x.rows_from(from),
                b: v.b.rows_from(from),
                c: v.c.rows_from(from),
                dt: v.dt.rows_from(from),
                a_log: &w.a_log,
            };
            let (rows, ys) = (v.rows - from, v.y.rows_from(from));
            if rows == 1 {
                ops::ssm_step(rec, dims, &inputs, state, ys, None, None)?;
            } else {
                let sb = state.buffer(rec)?.clone();
                ops::ssd_scan(rec, dims, rows, &inputs, &sb, ys, chunk)?;
            }
        }
        record_output(m, rec, i, v)?;
        Ok(converted)
    }

    /// Step 4a: the attention rows appended to layer `i`'s cache (grown as needed), then
    /// attention over it.
    fn record_attention_region(
        &mut self,
        m: &GpuModel,
        rec: &mut Recorder,
        i: usize,
        v: &LayerViews,
    ) -> Result<()> {
        let tp = self.schedule.layer(i);
        let needed = self.position + v.n_att as usize;
        let cache = AttentionCache::reserve(&mut self.layers[i].cache, m, rec, tp, needed)?;
        cache.append(m, rec, v.n_att, v.b, v.x, v.dt)?;
        cache.attend(m, rec, v.n_att, v.c, v.y)
    }

    /// Step 4b: layer `i`'s SSM state — made at the first SSM row by the memory converter from
    /// the attention cache (zero without one); returns it and whether a cache was converted.
    fn ssm_state(
        &mut self,
        m: &GpuModel,
        rec: &mut Recorder,
        i: usize,
    ) -> Result<(&mut SsmState, bool)> {
        let st = &mut self.layers[i];
        if let Some(s) = st.ssm_state.take() {
            return Ok((st.ssm_state.insert(s), false));
        }
        let mut state = SsmState::zeros(&m.ctx, m.dims())?;
        let mut converted = false;
        if let Some(cache) = st.cache.as_ref().filter(|a| a.len() > 0) {
            cache.convert(m, rec, &m.layers[i].a_log, &mut state)?;
            converted = true;
        }
        Ok((st.ssm_state.insert(state), converted))
    }
}

/// Steps 1-3 as separate dispatches: RMSNorm, in_proj, conv + SiLU (when the norm cannot be
/// folded into the product on this device or model).
fn record_unfused_projection(
    m: &GpuModel,
    rec: &mut Recorder,
    i: usize,
    v: &LayerViews,
    conv_state: &crate::gpu::GpuBuffer,
) -> Result<()> {
    let (c, w) = (&m.config, &m.layers[i]);
    let (d, di, dc) = (c.hidden_size as u32, c.d_inner() as u32, c.d_conv() as u32);
    let eps = c.layer_norm_epsilon;
    ops::rms_norm(rec, v.rows, d, v.h, &w.norm, v.u, eps)?;
    ops::matmul(
        rec,
        v.rows,
        v.u,
        &w.in_proj,
        w.in_proj_bias.as_ref(),
        v.zx,
        false,
    )?;
    let (cw, cb, k) = (&w.conv_weight, w.conv_bias.as_ref(), c.conv_kernel as u32);
    ops::conv1d(
        rec,
        v.rows,
        dc,
        k,
        v.zx.cols_from(di),
        cw,
        cb,
        conv_state,
        v.xbc,
        true,
    )?;
    Ok(())
}

/// Steps 5-7: D skip, gate (SSM rows, or every row with `attention_gate`), grouped RMSNorm,
/// out_proj added into the residual stream.
fn record_output(m: &GpuModel, rec: &mut Recorder, i: usize, v: &LayerViews) -> Result<()> {
    let (c, w, dims) = (&m.config, &m.layers[i], m.dims());
    let eps = c.layer_norm_epsilon;
    let (out, out_bias, g) = (&w.out_proj, w.out_proj_bias.as_ref(), dims.groups);
    let gate_from = if c.attention_gate { 0 } else { v.n_att };
    let gate = ops::GateInputs {
        x: v.x,
        z: v.zx,
        d_skip: Some(&w.d),
        head_dim: dims.head_dim,
        gate_from_row: Some(gate_from),
    };
    if m.folded_norms && ops::matmul_gated_normed_supported(&m.ctx, v.rows, v.y, &gate, out, g) {
        // The gate applied as y is packed for the product, the norm inside it.
        ops::matmul_gated_normed(rec, v.rows, v.y, &gate, eps, out, out_bias, v.h, true)?;
    } else {
        let (x, zx, nw) = (v.x, v.zx, &w.gated_norm);
        let d = Some(&w.d);
        ops::gated_rms_norm(rec, dims, v.rows, v.y, x, zx, d, nw, Some(gate_from), eps)?;
        ops::matmul(rec, v.rows, v.y, out, out_bias, v.h, true)?;
    }
    Ok(())
}

/// The MLP of models that have one: RMSNorm, fc1, SwiGLU, fc2 added into the residual stream.
fn record_mlp(
    m: &GpuModel,
    rec: &mut Recorder,
    act: &Activations,
    i: usize,
    v: &LayerViews,
) -> Result<()> {
    let (c, w) = (&m.config, &m.layers[i]);
    let (Some(mlp), Some((vg, a))) = (&w.mlp, &act.mlp) else {
        return Ok(());
    };
    let (d, mm) = (c.hidden_size as u32, c.mlp_intermediate_size as u32);
    ops::rms_norm(rec, v.rows, d, v.h, &mlp.norm2, v.u, c.layer_norm_epsilon)?;
    let vg = View::dense(vg, 2 * mm);
    ops::matmul(rec, v.rows, v.u, &mlp.fc1, None, vg, false)?;
    let a = View::dense(a, mm);
    ops::swiglu(rec, v.rows, mm, vg, a)?;
    ops::matmul(rec, v.rows, a, &mlp.fc2, None, v.h, true)?;
    Ok(())
}

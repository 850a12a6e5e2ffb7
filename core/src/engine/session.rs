//! One sequence on the GPU: the per-layer TransPoint scheduler for prefill and streaming decode.
//!
//! Per layer and per call the scheduler splits the new rows at the TransPoint: rows before it
//! are appended to the attention cache and run through the attention kernel; at the first row
//! at or after it the memory converter turns the cache into the SSM state (the cache is freed
//! after that submission); the remaining rows run through the chunked SSD scan (or the
//! one-token SSM step in decode). A whole call is recorded into one command submission.

use super::model::GpuModel;
use crate::cpu::mixer::{AttentionCache as HostCache, LayerState as HostLayer};
use crate::error::{Error, Result};
use crate::gpu::ops::{self, AttentionTextures, SsmInputs, SsmState, View};
use crate::gpu::{GpuBuffer, Recorder};
use crate::schedule::{Schedule, TransPoint};
use crate::Logits;

/// The attention cache of one layer: B (keys), x (values) and dt of every position before the
/// TransPoint, grown by doubling up to the TransPoint; without RoPE also keys and values as
/// textures, for attention as two products (`ops::attention_products`).
struct AttentionCache {
    b: GpuBuffer,
    x: GpuBuffer,
    dt: GpuBuffer,
    tex: Option<AttentionTextures>,
    capacity: usize,
    len: usize,
}

struct LayerState {
    conv_state: GpuBuffer,
    cache: Option<AttentionCache>,
    ssm_state: Option<SsmState>,
}

/// Activation buffers for up to `rows` tokens per submission, reused across calls.
struct Activations {
    rows: usize,
    tokens: GpuBuffer,
    h: GpuBuffer,
    u: GpuBuffer,
    zxbcdt: GpuBuffer,
    xbc: GpuBuffer,
    dt: GpuBuffer,
    y: GpuBuffer,
    mlp: Option<(GpuBuffer, GpuBuffer)>,
    logits: GpuBuffer,
    logit_rows: usize,
}

/// What a sequence holds on the GPU, owned (no borrow of the model): the schedule, per-layer
/// conv states, attention caches and SSM states, the position, reusable activations. Every call
/// takes the [`GpuModel`] it was made for; [`GpuSession`] pairs the two.
pub struct GpuState {
    schedule: Schedule,
    /// f32 elements one attention-cache row holds (B, x and dt of a position).
    per_token: usize,
    layers: Vec<LayerState>,
    position: usize,
    act: Option<Activations>,
}

impl GpuState {
    pub fn new(model: &GpuModel, schedule: Schedule) -> Result<Self> {
        let c = &model.config;
        if schedule.len() != c.num_layers {
            return Err(Error::ScheduleLength {
                got: schedule.len(),
                layers: c.num_layers,
            });
        }
        let layers = (0..c.num_layers)
            .map(|_| {
                Ok(LayerState {
                    conv_state: model
                        .ctx
                        .zeros("conv_state", (c.conv_kernel - 1) * c.d_conv())?,
                    cache: None,
                    ssm_state: None,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            per_token: c.n_groups * c.state_size + c.d_inner() + c.num_heads,
            schedule,
            layers,
            position: 0,
            act: None,
        })
    }

    pub fn position(&self) -> usize {
        self.position
    }

    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// Bytes of cache in use (conv states, attention caches' filled rows, SSM states), counted
    /// as the CPU backend and [`crate::memory`] count them.
    pub fn cache_bytes(&self) -> usize {
        let per_token = self.per_token;
        self.layers
            .iter()
            .map(|l| {
                4 * (l.conv_state.len()
                    + l.cache.as_ref().map_or(0, |a| a.len * per_token)
                    + l.ssm_state.as_ref().map_or(0, SsmState::len))
            })
            .sum()
    }

    /// Per layer: `(attention cache entries, whether the SSM state exists)`.
    pub fn layer_states(&self) -> Vec<(usize, bool)> {
        self.layers
            .iter()
            .map(|l| (l.cache.as_ref().map_or(0, |a| a.len), l.ssm_state.is_some()))
            .collect()
    }

    /// The per-layer state as host data (the CPU engine's form), read back from the GPU: what
    /// a saved session holds. The SSM states decode left in textures are copied out first.
    pub async fn export(&mut self, m: &GpuModel) -> Result<Vec<HostLayer>> {
        let c = &m.config;
        let (gn, di, h) = (c.n_groups * c.state_size, c.d_inner(), c.num_heads);
        let mut rec = Recorder::new(&m.ctx);
        let mut ssm = Vec::with_capacity(self.layers.len());
        for l in &mut self.layers {
            ssm.push(match &mut l.ssm_state {
                Some(s) => Some(s.buffer(&mut rec)?.clone()),
                None => None,
            });
        }
        rec.submit()?;
        let ctx = &m.ctx;
        let mut out = Vec::with_capacity(self.layers.len());
        for (l, ssm) in self.layers.iter().zip(ssm) {
            let attention_cache = match &l.cache {
                Some(a) if a.len > 0 => HostCache {
                    b: ctx.read_f32(&a.b, 0, a.len * gn).await?,
                    x: ctx.read_f32(&a.x, 0, a.len * di).await?,
                    dt: ctx.read_f32(&a.dt, 0, a.len * h).await?,
                    len: a.len,
                },
                _ => HostCache::default(),
            };
            out.push(HostLayer {
                conv_state: ctx.read_f32(&l.conv_state, 0, l.conv_state.len()).await?,
                attention_cache,
                ssm_state: match ssm {
                    Some(b) => Some(ctx.read_f32(&b, 0, b.len()).await?),
                    None => None,
                },
            });
        }
        Ok(out)
    }

    /// A state at `position` under `schedule` made from host data (see [`Self::export`]); the
    /// shapes must have been checked against the model
    /// ([`crate::session::SessionState::from_bytes`] does).
    pub fn import(
        m: &GpuModel,
        position: usize,
        schedule: Schedule,
        layers: &[HostLayer],
    ) -> Result<Self> {
        let mut s = Self::new(m, schedule)?;
        if layers.len() != s.layers.len() {
            return Err(Error::ScheduleLength {
                got: layers.len(),
                layers: s.layers.len(),
            });
        }
        let c = &m.config;
        let (gn, di) = (c.n_groups * c.state_size, c.d_inner());
        let mut rec = Recorder::new(&m.ctx);
        for (i, l) in layers.iter().enumerate() {
            m.ctx.write_f32(&s.layers[i].conv_state, 0, &l.conv_state)?;
            let a = &l.attention_cache;
            if a.len > 0 {
                let cache = s.grow_cache(m, &mut rec, i, a.len)?;
                m.ctx.write_f32(&cache.b, 0, &a.b)?;
                m.ctx.write_f32(&cache.x, 0, &a.x)?;
                m.ctx.write_f32(&cache.dt, 0, &a.dt)?;
                cache.len = a.len;
                if let Some(tex) = &cache.tex {
                    // Queue writes land before the submission that reads them.
                    let (kc, vc) = (
                        View::dense(&cache.b, gn as u32),
                        View::dense(&cache.x, di as u32),
                    );
                    tex.append(&mut rec, kc, vc, 0, a.len as u32)?;
                }
            }
            if let Some(values) = &l.ssm_state {
                let mut state = SsmState::zeros(&m.ctx, m.dims())?;
                m.ctx.write_f32(state.buffer(&mut rec)?, 0, values)?;
                s.layers[i].ssm_state = Some(state);
            }
        }
        rec.submit()?;
        s.position = position;
        Ok(s)
    }

    /// Feeds `tokens` from the current position and returns their logits (`[T, V]` or `[V]`).
    pub async fn forward(
        &mut self,
        m: &GpuModel,
        tokens: &[u32],
        which: Logits,
    ) -> Result<Vec<f32>> {
        if tokens.is_empty() {
            return Err(Error::EmptyTokens);
        }
        crate::model::check_token_range(tokens, self.position, m.vocab)?;
        // Pieces bound every activation buffer (and, for all logits, the [rows, V] output).
        let logit_cap = (m.ctx.max_binding_size() as usize / (4 * m.vocab)).max(1);
        let mut piece = m.options.max_rows as usize;
        if which == Logits::All {
            piece = piece.min(logit_cap);
        }
        let mut out = Vec::new();
        let pieces: Vec<&[u32]> = tokens.chunks(piece).collect();
        for (i, p) in pieces.iter().enumerate() {
            let rows = match which {
                Logits::All => p.len(),
                Logits::Last if i + 1 == pieces.len() => 1,
                Logits::Last => 0,
            };
            out.extend(self.run(m, p, rows).await?);
        }
        Ok(out)
    }

    /// Blocking [`Self::forward`] (native).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn forward_blocking(
        &mut self,
        m: &GpuModel,
        tokens: &[u32],
        which: Logits,
    ) -> Result<Vec<f32>> {
        pollster::block_on(self.forward(m, tokens, which))
    }

    /// One submission: `tokens` through every layer; logits of the last `logit_rows` rows.
    async fn run(&mut self, m: &GpuModel, tokens: &[u32], logit_rows: usize) -> Result<Vec<f32>> {
        // Taken out of `self` while recording (layers borrow `self` mutably); put back after.
        let act = self.take_activations(m, tokens.len(), logit_rows.max(1))?;
        let result = self.run_with(m, &act, tokens, logit_rows).await;
        self.act = Some(act);
        result
    }

    async fn run_with(
        &mut self,
        m: &GpuModel,
        act: &Activations,
        tokens: &[u32],
        logit_rows: usize,
    ) -> Result<Vec<f32>> {
        let c = &m.config;
        let n = tokens.len();
        m.ctx.write_u32(&act.tokens, 0, tokens)?;
        let d = c.hidden_size as u32;
        let mut rec = Recorder::new(&m.ctx);
        let h = View::dense(&act.h, d);
        ops::embedding_of(&mut rec, &act.tokens, tokens, &m.embedding, h)?;
        let mut converted = Vec::new();
        for i in 0..self.layers.len() {
            if self.record_layer(m, &mut rec, act, i, n)? {
                converted.push(i);
            }
        }
        if logit_rows > 0 {
            let rows = logit_rows as u32;
            let h = h.rows_from((n - logit_rows) as u32);
            let u = View::dense(&act.u, d);
            let eps = c.layer_norm_epsilon;
            ops::rms_norm(&mut rec, rows, d, h, &m.norm_f, u, eps)?;
            let logits = View::dense(&act.logits, m.vocab as u32);
            ops::matmul(&mut rec, rows, u, m.output_matrix(), None, logits, false)?;
        }
        rec.submit()?;
        // The converter has consumed these caches: free them, memory stops growing here.
        if !converted.is_empty() {
            for i in converted {
                self.layers[i].cache = None;
            }
            // Cached bind groups hold references to the freed buffers.
            m.ctx.clear_caches();
        }
        self.position += n;
        if logit_rows == 0 {
            return Ok(Vec::new());
        }
        Ok(m.ctx.read_f32(&act.logits, 0, logit_rows * m.vocab).await?)
    }

    /// Records one layer for `n` new rows; returns whether its cache was converted.
    fn record_layer(
        &mut self,
        m: &GpuModel,
        rec: &mut Recorder,
        act: &Activations,
        i: usize,
        n: usize,
    ) -> Result<bool> {
        let c = &m.config;
        let dims = m.dims();
        let (d, di, dc) = (c.hidden_size as u32, c.d_inner() as u32, c.d_conv() as u32);
        let (h_n, gn) = (c.num_heads as u32, dims.bc_width());
        let width = c.d_in_proj() as u32;
        let eps = c.layer_norm_epsilon;
        let p0 = self.position;
        let w = &m.layers[i];
        let n_att = match self.schedule.layer(i) {
            TransPoint::At(tau) => tau.saturating_sub(p0).min(n),
            TransPoint::Never => n,
        };
        let nr = n as u32;
        let (h, u) = (View::dense(&act.h, d), View::dense(&act.u, d));
        let zx = View::dense(&act.zxbcdt, width);
        let dt = View::dense(&act.dt, h_n);
        let y = View::dense(&act.y, di);
        let xbc = View::dense(&act.xbc, dc);
        let (x, b, cq) = (xbc, xbc.cols_from(di), xbc.cols_from(di + gn));

        // Steps 1-3: norm, in_proj, conv + SiLU, dt. With the norm weights folded into the
        // matrices (GpuModel::folded_norms) the product normalises X's rows itself (decode and
        // prefill), and a single row's conv step runs in the product's epilogue.
        let in_bias = w.in_proj_bias.as_ref();
        let conv_in = zx.cols_from(di);
        let (cw, cb) = (&w.conv_weight, w.conv_bias.as_ref());
        let k = c.conv_kernel as u32;
        let conv_state = &self.layers[i].conv_state;
        if m.folded_norms && ops::matmul_normed_supported(&m.ctx, nr, &w.in_proj, 1) {
            let conv = (nr == 1).then_some(ops::ConvStep {
                weight: cw,
                bias: cb,
                state: conv_state,
                k,
                first_row: di,
                channels: dc,
                out: xbc,
            });
            ops::matmul_normed(rec, nr, h, 1, eps, &w.in_proj, in_bias, zx, false, conv)?;
            if nr != 1 {
                ops::conv1d(rec, nr, dc, k, conv_in, cw, cb, conv_state, xbc, true)?;
            }
        } else {
            ops::rms_norm(rec, nr, d, h, &w.norm, u, eps)?;
            ops::matmul(rec, nr, u, &w.in_proj, in_bias, zx, false)?;
            ops::conv1d(rec, nr, dc, k, conv_in, cw, cb, conv_state, xbc, true)?;
        }
        let (lo, hi) = c.time_step_limit;
        let dt_raw = zx.cols_from(di + dc);
        // A decode token in the SSM region: the step applies step 3 itself (one dispatch less).
        let step_dt = (n == 1 && n_att == 0).then_some(ops::RawDt {
            bias: &w.dt_bias,
            lo,
            hi,
        });
        if step_dt.is_none() {
            ops::dt_softplus(rec, nr, h_n, dt_raw, &w.dt_bias, dt, lo, hi)?;
        }

        // Step 4a: attention region (append to the cache, then attend over it).
        if n_att > 0 {
            let cache = self.grow_cache(m, rec, i, p0 + n_att)?;
            let (na, at) = (n_att as u32, p0 as u32);
            ops::copy_rows(rec, na, gn, b, View::dense(&cache.b, gn).rows_from(at))?;
            ops::copy_rows(rec, na, di, x, View::dense(&cache.x, di).rows_from(at))?;
            ops::copy_rows(rec, na, h_n, dt, View::dense(&cache.dt, h_n).rows_from(at))?;
            cache.len = p0 + n_att;
            let (kc, vc) = (View::dense(&cache.b, gn), View::dense(&cache.x, di));
            let scale = c.attention_scale;
            match &cache.tex {
                Some(tex) => {
                    tex.append(rec, kc, vc, at, at + na)?;
                    ops::attention_products(rec, dims, na, at, cq, tex, y, scale)?;
                }
                None => ops::attention(rec, dims, na, at, cq, kc, vc, y, scale, c.rope_theta)?,
            }
        }
        // Step 4b-c: memory converter at the TransPoint, then the SSM region.
        let mut converted = false;
        // Whether the decode step applied steps 5-6 short of the norm (then out_proj norms).
        let mut gated = false;
        if n_att < n {
            let st = &mut self.layers[i];
            let chunk = m.options.chunk_size;
            let state = match st.ssm_state.take() {
                Some(s) => st.ssm_state.insert(s),
                None => {
                    let mut s = SsmState::zeros(&m.ctx, dims)?;
                    if let Some(cache) = st.cache.as_ref().filter(|a| a.len > 0) {
                        let (cx, cb, cdt) = (
                            View::dense(&cache.x, di),
                            View::dense(&cache.b, gn),
                            View::dense(&cache.dt, h_n),
                        );
                        let len = cache.len as u32;
                        let sb = s.buffer(rec)?.clone();
                        ops::memory_converter(rec, dims, len, cx, cb, cdt, &w.a_log, &sb, chunk)?;
                        converted = true;
                    }
                    st.ssm_state.insert(s)
                }
            };
            let from = n_att as u32;
            let inputs = SsmInputs {
                x: x.rows_from(from),
                b: b.rows_from(from),
                c: cq.rows_from(from),
                dt: if step_dt.is_some() {
                    dt_raw
                } else {
                    dt.rows_from(from)
                },
                a_log: &w.a_log,
            };
            let (rows, ys) = (nr - from, y.rows_from(from));
            if rows == 1 {
                let fuse = nr == 1
                    && m.folded_norms
                    && ops::ssm_step_fuses_gate(&m.ctx, state)
                    && ops::matvec_normed_supported(&m.ctx, 1, &w.out_proj, dims.groups);
                let gate = fuse.then_some(ops::StepGate {
                    d: &w.d,
                    z: zx.rows_from(from),
                });
                ops::ssm_step(rec, dims, &inputs, state, ys, step_dt, gate)?;
                gated = fuse;
            } else {
                let sb = state.buffer(rec)?.clone();
                ops::ssd_scan(rec, dims, rows, &inputs, &sb, ys, chunk)?;
            }
        }
        // Steps 5-7: D skip, gate (SSM rows, or all with attention_gate), grouped norm, out_proj
        // added into the residual stream.
        let (out, out_bias, g) = (&w.out_proj, w.out_proj_bias.as_ref(), dims.groups);
        if gated {
            // One SSM row, already gated by the step: the grouped norm rides in the product.
            ops::matvec_normed(rec, nr, y, g, eps, out, out_bias, h, true, None)?;
        } else {
            let gate_from = if c.attention_gate { 0 } else { n_att as u32 };
            let gate = ops::GateInputs {
                x,
                z: zx,
                d_skip: Some(&w.d),
                head_dim: dims.head_dim,
                gate_from_row: Some(gate_from),
            };
            if m.folded_norms && ops::matmul_gated_normed_supported(&m.ctx, nr, y, &gate, out, g) {
                // Prefill: the gate applied as y is packed for the product, the norm inside it.
                ops::matmul_gated_normed(rec, nr, y, &gate, eps, out, out_bias, h, true)?;
            } else {
                let gn_w = &w.gated_norm;
                ops::gated_rms_norm(
                    rec,
                    dims,
                    nr,
                    y,
                    x,
                    zx,
                    Some(&w.d),
                    gn_w,
                    Some(gate_from),
                    eps,
                )?;
                ops::matmul(rec, nr, y, out, out_bias, h, true)?;
            }
        }

        if let (Some(mlp), Some((vg, a))) = (&w.mlp, &act.mlp) {
            let mm = c.mlp_intermediate_size as u32;
            ops::rms_norm(rec, nr, d, h, &mlp.norm2, u, eps)?;
            let vg = View::dense(vg, 2 * mm);
            ops::matmul(rec, nr, u, &mlp.fc1, None, vg, false)?;
            let a = View::dense(a, mm);
            ops::swiglu(rec, nr, mm, vg, a)?;
            ops::matmul(rec, nr, a, &mlp.fc2, None, h, true)?;
        }
        Ok(converted)
    }

    /// Layer `i`'s attention cache, grown to hold at least `needed` rows (doubling, capped at
    /// the TransPoint so a layer never holds more than τ entries).
    fn grow_cache(
        &mut self,
        m: &GpuModel,
        rec: &mut Recorder,
        i: usize,
        needed: usize,
    ) -> Result<&mut AttentionCache> {
        let c = &m.config;
        let tp = self.schedule.layer(i);
        let st = &mut self.layers[i];
        let old = match st.cache.take() {
            Some(a) if a.capacity >= needed => return Ok(st.cache.insert(a)),
            old => old,
        };
        let mut capacity = needed.next_power_of_two().max(64);
        if let TransPoint::At(tau) = tp {
            capacity = capacity.min(tau).max(needed);
        }
        let (gn, di, h) = (c.n_groups * c.state_size, c.d_inner(), c.num_heads);
        let tex = match c.rope_theta.filter(|&t| t > 0.0) {
            None if m.options.attention_products => {
                AttentionTextures::new(&m.ctx, m.dims(), capacity as u32)?
            }
            _ => None,
        };
        let new = AttentionCache {
            b: m.ctx.zeros("attention_cache.B", capacity * gn)?,
            x: m.ctx.zeros("attention_cache.x", capacity * di)?,
            dt: m.ctx.zeros("attention_cache.dt", capacity * h)?,
            tex,
            capacity,
            len: old.as_ref().map_or(0, |a| a.len),
        };
        // The old buffers live on in the recorder until the copies are submitted.
        if let Some(old) = old {
            rec.copy(&old.b, 0, &new.b, 0, old.len * gn)?;
            rec.copy(&old.x, 0, &new.x, 0, old.len * di)?;
            rec.copy(&old.dt, 0, &new.dt, 0, old.len * h)?;
            if let Some(tex) = &new.tex {
                let (kc, vc) = (
                    View::dense(&new.b, gn as u32),
                    View::dense(&new.x, di as u32),
                );
                tex.append(rec, kc, vc, 0, old.len as u32)?;
            }
        }
        Ok(st.cache.insert(new))
    }

    /// The activation buffers, reallocated (larger) only when `rows` or `logit_rows` outgrow them.
    fn take_activations(
        &mut self,
        m: &GpuModel,
        rows: usize,
        logit_rows: usize,
    ) -> Result<Activations> {
        let (rows, logit_rows) = match self.act.take() {
            Some(a) if a.rows >= rows && a.logit_rows >= logit_rows => return Ok(a),
            // Grow to cover the old and the new request; cached bind groups hold the old buffers.
            Some(a) => {
                m.ctx.clear_caches();
                (rows.max(a.rows), logit_rows.max(a.logit_rows))
            }
            None => (rows, logit_rows),
        };
        let (c, ctx) = (&m.config, &m.ctx);
        let mm = c.mlp_intermediate_size;
        Ok(Activations {
            rows,
            tokens: ctx.zeros("tokens", rows)?,
            h: ctx.zeros("h", rows * c.hidden_size)?,
            u: ctx.zeros("u", rows * c.hidden_size)?,
            zxbcdt: ctx.zeros("zxbcdt", rows * c.d_in_proj())?,
            xbc: ctx.zeros("xbc", rows * c.d_conv())?,
            dt: ctx.zeros("dt", rows * c.num_heads)?,
            y: ctx.zeros("y", rows * c.d_inner())?,
            mlp: if mm > 0 {
                Some((
                    ctx.zeros("mlp.fc1_out", rows * 2 * mm)?,
                    ctx.zeros("mlp.act", rows * mm)?,
                ))
            } else {
                None
            },
            logits: ctx.zeros("logits", logit_rows * m.vocab)?,
            logit_rows,
        })
    }
}

/// One sequence on a GPU model: [`GpuState`] with the model it runs on.
pub struct GpuSession<'m> {
    model: &'m GpuModel,
    state: GpuState,
}

impl<'m> GpuSession<'m> {
    pub fn new(model: &'m GpuModel, schedule: Schedule) -> Result<Self> {
        Ok(Self {
            model,
            state: GpuState::new(model, schedule)?,
        })
    }

    pub fn position(&self) -> usize {
        self.state.position()
    }

    pub fn schedule(&self) -> &Schedule {
        self.state.schedule()
    }

    /// See [`GpuState::cache_bytes`].
    pub fn cache_bytes(&self) -> usize {
        self.state.cache_bytes()
    }

    /// Per layer: `(attention cache entries, whether the SSM state exists)`.
    pub fn layer_states(&self) -> Vec<(usize, bool)> {
        self.state.layer_states()
    }

    /// Feeds `tokens` from the current position and returns their logits (`[T, V]` or `[V]`).
    pub async fn forward(&mut self, tokens: &[u32], which: Logits) -> Result<Vec<f32>> {
        self.state.forward(self.model, tokens, which).await
    }

    /// Blocking [`Self::forward`] (native).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn forward_blocking(&mut self, tokens: &[u32], which: Logits) -> Result<Vec<f32>> {
        self.state.forward_blocking(self.model, tokens, which)
    }
}

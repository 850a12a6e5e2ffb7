//! One sequence on the GPU: the per-layer TransPoint scheduler for prefill and streaming decode.
//!
//! Per layer and per call the scheduler (recipes in `layer_recipes.rs`) splits the new rows at the TransPoint: rows before it
//! are appended to the attention cache and run through the attention kernel; at the first row
//! at or after it the memory converter turns the cache into the SSM state (the cache is freed
//! after that submission); the remaining rows run through the chunked SSD scan (or the
//! one-token SSM step in decode). A whole call is recorded into one command submission.

use super::attention_cache::AttentionCache;
use super::model::GpuModel;
use crate::cpu::mixer::{AttentionCache as HostCache, LayerState as HostLayer};
use crate::error::{Error, Result};
use crate::gpu::ops::{self, SsmState, View};
use crate::gpu::{GpuBuffer, Recorder};
use crate::schedule::Schedule;
use crate::Logits;

pub(super) struct LayerState {
    pub(super) conv_state: GpuBuffer,
    pub(super) cache: Option<AttentionCache>,
    pub(super) ssm_state: Option<SsmState>,
}

/// Activation buffers for up to `rows` tokens per submission, reused across calls.
pub(super) struct Activations {
    rows: usize,
    tokens: GpuBuffer,
    pub(super) h: GpuBuffer,
    pub(super) u: GpuBuffer,
    pub(super) zxbcdt: GpuBuffer,
    pub(super) xbc: GpuBuffer,
    pub(super) dt: GpuBuffer,
    pub(super) y: GpuBuffer,
    pub(super) mlp: Option<(GpuBuffer, GpuBuffer)>,
    logits: GpuBuffer,
    logit_rows: usize,
}

/// What a sequence holds on the GPU, owned (no borrow of the model): the schedule, per-layer
/// conv states, attention caches and SSM states, the position, reusable activations. Every call
/// takes the [`GpuModel`] it was made for; [`GpuSession`] pairs the two.
pub struct GpuState {
    pub(super) schedule: Schedule,
    /// f32 elements one attention-cache row holds (B, x and dt of a position).
    per_token: usize,
    pub(super) layers: Vec<LayerState>,
    pub(super) position: usize,
    act: Option<Activations>,
    /// Set when a step failed after the device ran part of it: the state is unknown.
    poisoned: Option<String>,
}

/// How a step failed: before anything was submitted (the state was restored) or after.
enum Step {
    RolledBack(Error),
    Failed(Error),
}

type StepResult = std::result::Result<Vec<f32>, Step>;

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
            poisoned: None,
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
                    + l.cache.as_ref().map_or(0, |a| a.len() * per_token)
                    + l.ssm_state.as_ref().map_or(0, SsmState::len))
            })
            .sum()
    }

    /// Per layer: `(attention cache entries, whether the SSM state exists)`.
    pub fn layer_states(&self) -> Vec<(usize, bool)> {
        self.layers
            .iter()
            .map(|l| {
                (
                    l.cache.as_ref().map_or(0, AttentionCache::len),
                    l.ssm_state.is_some(),
                )
            })
            .collect()
    }

    /// The per-layer state as host data (the CPU engine's form), read back from the GPU: what
    /// a saved session holds. The SSM states decode left in textures are copied out first.
    pub async fn export(&mut self, m: &GpuModel) -> Result<Vec<HostLayer>> {
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
                Some(a) if a.len() > 0 => a.read(m).await?,
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
        let mut rec = Recorder::new(&m.ctx);
        for (i, l) in layers.iter().enumerate() {
            m.ctx.write_f32(&s.layers[i].conv_state, 0, &l.conv_state)?;
            if l.attention_cache.len > 0 {
                let tp = s.schedule.layer(i);
                AttentionCache::upload(
                    &mut s.layers[i].cache,
                    m,
                    &mut rec,
                    tp,
                    &l.attention_cache,
                )?;
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
        if let Some(why) = &self.poisoned {
            return Err(Error::SessionPoisoned(why.clone()));
        }
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
            match self.run(m, p, rows).await {
                Ok(logits) => out.extend(logits),
                // Nothing of this call reached the device: the state is as it was.
                Err(Step::RolledBack(e)) if i == 0 => return Err(e),
                // Earlier pieces advanced the state, or the device ran part of this one.
                Err(Step::RolledBack(e) | Step::Failed(e)) => {
                    self.poisoned = Some(format!("a forward pass failed part-way ({e})"));
                    return Err(e);
                }
            }
        }
        Ok(out)
    }

    /// Why this state refuses further use (a step failed after the device ran part of it).
    pub fn poisoned(&self) -> Option<&str> {
        self.poisoned.as_deref()
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
    /// The step runs inside an error scope, so an allocation or validation failure anywhere in
    /// it — on the web reported asynchronously — is an error, never stale logits. A failure
    /// before the submission restores the layers' caches and states as they were (recording
    /// replaces them: a grown attention cache, a new SSM state) and leaves the position.
    async fn run(&mut self, m: &GpuModel, tokens: &[u32], logit_rows: usize) -> StepResult {
        let scope = m.ctx.error_scope();
        let before: Vec<(Option<AttentionCache>, Option<SsmState>)> = self
            .layers
            .iter()
            .map(|l| (l.cache.clone(), l.ssm_state.clone()))
            .collect();
        let result = match self.take_activations(m, tokens.len(), logit_rows.max(1)) {
            // Taken out of `self` while recording (layers borrow `self` mutably); put back.
            Ok(act) => {
                let r = self.run_with(m, &act, tokens, logit_rows).await;
                self.act = Some(act);
                r
            }
            Err(e) => Err(Step::RolledBack(e)),
        };
        let scoped = scope.close(&m.ctx).await.map_err(Error::from);
        match (result, scoped) {
            (Ok(logits), Ok(())) => Ok(logits),
            (Err(Step::RolledBack(e)), _) => {
                for (l, (cache, ssm)) in self.layers.iter_mut().zip(before) {
                    l.cache = cache;
                    l.ssm_state = ssm;
                }
                Err(Step::RolledBack(e))
            }
            (Err(Step::Failed(e)), _) | (Ok(_), Err(e)) => Err(Step::Failed(e)),
        }
    }

    async fn run_with(
        &mut self,
        m: &GpuModel,
        act: &Activations,
        tokens: &[u32],
        logit_rows: usize,
    ) -> StepResult {
        let n = tokens.len();
        let (rec, converted) = self
            .record(m, act, tokens, logit_rows)
            .map_err(Step::RolledBack)?;
        // Errors that arrived while recording: nothing was submitted yet.
        m.ctx.check().map_err(|e| Step::RolledBack(e.into()))?;
        // From here the device runs the step: a failure leaves the state unknown.
        let failed = |e: crate::gpu::GpuError| Step::Failed(e.into());
        rec.submit().map_err(failed)?;
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
        m.ctx
            .read_f32(&act.logits, 0, logit_rows * m.vocab)
            .await
            .map_err(failed)
    }

    /// Records the step; returns the recorder and the layers whose caches it converts.
    fn record<'a>(
        &mut self,
        m: &'a GpuModel,
        act: &Activations,
        tokens: &[u32],
        logit_rows: usize,
    ) -> Result<(Recorder<'a>, Vec<usize>)> {
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
        Ok((rec, converted))
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

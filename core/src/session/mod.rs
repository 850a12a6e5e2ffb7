//! Sequences on either engine, for as long as a user keeps them: a model on its engine
//! ([`Engine`]), a sequence that continues across calls ([`Session`]), its state saved to bytes
//! and restored on either engine ([`SessionState`]), and text generation over it
//! ([`Generator`]). The CLI and the wasm module both drive models through this module.

mod generator;
mod state;

use std::sync::Arc;

pub use generator::{GenerateOptions, Generator, Step};
pub use state::{fingerprint, SessionState, STATE_FORMAT, STATE_VERSION};

use crate::config::ModelConfig;
use crate::cpu::{CpuState, OutputScreen, Screened, WeightCopies};
use crate::engine::{EngineOptions, GpuModel, GpuState};
use crate::engine_choice::{EngineChoice, EngineKind};
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, WeightFormat};
use crate::model::Model;
use crate::schedule::Schedule;
use crate::Logits;

/// A model on the engine that runs it: cheap to clone (shared), so sessions own a handle.
/// (In wasm the wgpu types are neither Send nor Sync; the module is single-threaded.)
#[derive(Clone)]
pub struct Engine(Arc<EngineInner>);

struct EngineInner {
    imp: Imp,
    choice: EngineChoice,
    /// The model's [`fingerprint`]: on the CPU engine hashed when first needed (saving or
    /// restoring a state; it reads every weight, dequantizing a quantized file's), on the GPU
    /// engine at upload, since the model is not kept.
    fingerprint: std::sync::OnceLock<u64>,
    /// The weight matrices' weight count and the bytes all weights take in this engine's format.
    matrix_weights: usize,
    weight_bytes: u64,
}

enum Imp {
    /// The model, copies of its large matrices unless the weights are f32, and the output
    /// matrix's screen for greedy decoding where it pays (an f32 or f16 output matrix), made
    /// with the engine as the copies are (~0.1 s and 41 MB for mamba2-130m's): made at the
    /// first greedy step instead, it cost a short browser generation a third of its decode time.
    Cpu(Model, Option<WeightCopies>, Option<OutputScreen>),
    Gpu(GpuModel),
}

impl Engine {
    /// `model` on the CPU engine, its large matrices stored as `weights`.
    pub fn cpu(mut model: Model, weights: WeightFormat, choice: EngineChoice) -> Result<Self> {
        let (matrix_weights, weight_bytes) =
            (model.matrix_parameter_count(), model.stored_bytes(weights));
        let hash = std::sync::OnceLock::new();
        let copies = match weights {
            WeightFormat::F32 => None,
            // The fingerprint names the model as loaded: hashed before its matrices become
            // the copies (when that changes their values).
            other => Some(WeightCopies::sharing(&mut model, other, |m| {
                let _ = hash.set(fingerprint(m));
            })?),
        };
        crate::huge_pages::back_weights(&model);
        let screen = OutputScreen::new(crate::cpu::weights::output_matrix(&model, copies.as_ref()));
        #[allow(clippy::arc_with_non_send_sync)]
        Ok(Self(Arc::new(EngineInner {
            imp: Imp::Cpu(model, copies, screen),
            choice,
            fingerprint: hash,
            matrix_weights,
            weight_bytes,
        })))
    }

    /// `model` uploaded to the GPU of `ctx`.
    pub fn on_gpu(
        ctx: Arc<GpuContext>,
        model: &Model,
        options: EngineOptions,
        choice: EngineChoice,
    ) -> Result<Self> {
        let weight_bytes = model.stored_bytes(options.weights);
        let gpu = GpuModel::new(ctx, model, options)?;
        #[allow(clippy::arc_with_non_send_sync)]
        Ok(Self(Arc::new(EngineInner {
            imp: Imp::Gpu(gpu),
            choice,
            fingerprint: std::sync::OnceLock::from(fingerprint(model)),
            matrix_weights: model.matrix_parameter_count(),
            weight_bytes,
        })))
    }

    pub fn kind(&self) -> EngineKind {
        match self.0.imp {
            Imp::Cpu(..) => EngineKind::Cpu,
            Imp::Gpu(_) => EngineKind::Gpu,
        }
    }

    /// Which engine runs and why (`auto`'s reasoning, or the user's request).
    pub fn choice(&self) -> &EngineChoice {
        &self.0.choice
    }

    /// Weights in the large matrices ([`Model::matrix_parameter_count`]).
    pub fn matrix_weights(&self) -> usize {
        self.0.matrix_weights
    }

    /// Bytes the weights take in [`Engine::weights`]'s format ([`Model::stored_bytes`]).
    pub fn weight_bytes(&self) -> u64 {
        self.0.weight_bytes
    }

    /// How the large matrices are stored.
    pub fn weights(&self) -> WeightFormat {
        match &self.0.imp {
            Imp::Cpu(_, Some(c), _) => c.format(),
            Imp::Cpu(_, None, _) => WeightFormat::F32,
            Imp::Gpu(g) => g.options.weights,
        }
    }

    pub fn config(&self) -> &ModelConfig {
        match &self.0.imp {
            Imp::Cpu(m, ..) => &m.config,
            Imp::Gpu(g) => &g.config,
        }
    }

    pub fn vocab(&self) -> usize {
        match &self.0.imp {
            Imp::Cpu(m, ..) => m.vocab,
            Imp::Gpu(g) => g.vocab,
        }
    }

    /// The model's [`fingerprint`]: state files carry it, and restoring checks it.
    pub fn fingerprint(&self) -> u64 {
        *self.0.fingerprint.get_or_init(|| match &self.0.imp {
            Imp::Cpu(m, ..) => fingerprint(m),
            // Set at upload (`on_gpu`): the GPU engine keeps no model to hash.
            Imp::Gpu(_) => 0,
        })
    }

    /// Bytes of the output screen greedy decoding reads on the CPU engine (0 without one).
    pub fn screen_bytes(&self) -> usize {
        match &self.0.imp {
            Imp::Cpu(_, _, Some(s)) => s.bytes(),
            _ => 0,
        }
    }

    pub fn gpu(&self) -> Option<&GpuModel> {
        match &self.0.imp {
            Imp::Gpu(g) => Some(g),
            Imp::Cpu(..) => None,
        }
    }

    /// The engine, its device and why it was chosen, for status lines and JSON.
    pub fn name(&self) -> String {
        match &self.0.imp {
            Imp::Cpu(_, _, screen) => format!(
                "cpu ({} threads, {} weights{}; {})",
                rayon::current_num_threads(),
                self.weights().name(),
                match screen {
                    Some(s) =>
                        format!(", output screen {}", crate::memory::format_bytes(s.bytes())),
                    None => String::new(),
                },
                self.0.choice.reason
            ),
            Imp::Gpu(g) => format!(
                "gpu ({}, {:?}, {} weights, {} kernels; {})",
                g.ctx.info.name,
                g.ctx.info.backend,
                g.options.weights.name(),
                g.ctx.kernels(),
                self.0.choice.reason
            ),
        }
    }

    /// A fresh sequence under `schedule` (resolved for this model).
    pub fn session(&self, schedule: Schedule) -> Result<Session> {
        let state = match &self.0.imp {
            Imp::Cpu(m, ..) => EngineState::Cpu(CpuState::new(m, schedule)?),
            Imp::Gpu(g) => EngineState::Gpu(Box::new(GpuState::new(g, schedule)?)),
        };
        Ok(Session {
            engine: self.clone(),
            state,
            pending: Vec::new(),
            last: None,
            poisoned: None,
        })
    }

    /// A session continuing from a state file's bytes (`file` names it in errors), on this
    /// engine whichever engine saved it.
    pub fn restore(&self, bytes: &[u8], file: &str) -> Result<Session> {
        let state =
            SessionState::from_bytes(bytes, file, self.config(), self.vocab(), self.fingerprint())?;
        self.session_from(state)
    }

    /// A session continuing from `state` (checked against the model by
    /// [`SessionState::from_bytes`], or exported from a session of this model).
    pub fn session_from(&self, state: SessionState) -> Result<Session> {
        let engine_state = match &self.0.imp {
            Imp::Cpu(m, ..) => {
                let mut s = CpuState::new(m, state.schedule)?;
                s.layers = state.layers;
                s.position = state.position;
                EngineState::Cpu(s)
            }
            Imp::Gpu(g) => EngineState::Gpu(Box::new(GpuState::import(
                g,
                state.position,
                state.schedule,
                &state.layers,
            )?)),
        };
        Ok(Session {
            engine: self.clone(),
            state: engine_state,
            pending: Vec::new(),
            last: state.logits.map(LastOutput::Logits),
            poisoned: None,
        })
    }
}

/// What the last fed position left: its logits, or (greedy decoding through the CPU engine's
/// output screen) its final-normed hidden row, whose logits are computed if they are asked for.
enum LastOutput {
    Logits(Vec<f32>),
    Hidden(Vec<f32>),
}

enum EngineState {
    Cpu(CpuState),
    // Boxed: a GPU state (per-layer buffers, caches) is much larger than a CPU one.
    Gpu(Box<GpuState>),
}

/// One sequence that lasts: it keeps its state between calls, so new tokens extend it without
/// re-running what came before; it saves to bytes, restores and forks.
///
/// Tokens sampled by a [`Generator`] are held as *pending* and fed with the next call that
/// needs their logits (the next step, a continuation, [`Session::save`]), so a generation does
/// no forward pass whose logits nobody reads.
///
/// A failed call leaves the session as it was when nothing reached the device (bad token ids,
/// an allocation that fails while the step is recorded: the GPU engine restores the caches it
/// replaced). If the device ran part of the step (a fault reported after submission, a lost
/// device), the session is poisoned: every later call is [`Error::SessionPoisoned`] instead of
/// a result from a half-updated state; [`Session::reset`] or a restore recovers.
pub struct Session {
    engine: Engine,
    state: EngineState,
    /// Tokens appended but not yet fed.
    pending: Vec<u32>,
    /// What the last fed position left.
    last: Option<LastOutput>,
    poisoned: Option<String>,
}

impl Session {
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Tokens in the sequence (fed and pending).
    pub fn position(&self) -> usize {
        self.fed() + self.pending.len()
    }

    /// Tokens fed through the model so far (the caches' position; pending tokens excluded).
    pub fn fed(&self) -> usize {
        match &self.state {
            EngineState::Cpu(s) => s.position(),
            EngineState::Gpu(s) => s.position(),
        }
    }

    pub fn schedule(&self) -> &Schedule {
        match &self.state {
            EngineState::Cpu(s) => s.schedule(),
            EngineState::Gpu(s) => s.schedule(),
        }
    }

    /// Bytes the per-layer caches hold now.
    pub fn cache_bytes(&self) -> usize {
        match &self.state {
            EngineState::Cpu(s) => s.cache_bytes(),
            EngineState::Gpu(s) => s.cache_bytes(),
        }
    }

    /// Per layer: `(attention cache entries, whether the SSM state exists)`.
    pub fn layer_states(&self) -> Vec<(usize, bool)> {
        match &self.state {
            EngineState::Cpu(s) => s.layer_states(),
            EngineState::Gpu(s) => s.layer_states(),
        }
    }

    fn check_usable(&self) -> Result<()> {
        match &self.poisoned {
            Some(why) => Err(Error::SessionPoisoned(why.clone())),
            None => Ok(()),
        }
    }

    /// Appends `tokens` and feeds them (after any pending ones); returns the logits of the
    /// appended tokens (`[T, V]`) or of the last one (`[V]`).
    pub async fn forward(&mut self, tokens: &[u32], which: Logits) -> Result<Vec<f32>> {
        self.check_usable()?;
        if tokens.is_empty() {
            return Err(Error::EmptyTokens);
        }
        crate::model::check_token_range(tokens, self.position(), self.engine.vocab())?;
        let mut fed = std::mem::take(&mut self.pending);
        let skip = fed.len();
        fed.extend_from_slice(tokens);
        let logits = match self.run(&fed, which).await {
            Ok(l) => l,
            Err(e) => {
                // Rolled back (or poisoned): the pending tokens are still to be fed.
                fed.truncate(skip);
                self.pending = fed;
                return Err(e);
            }
        };
        let v = self.engine.vocab();
        let logits = match which {
            Logits::All if skip > 0 => logits[skip * v..].to_vec(),
            _ => logits,
        };
        self.last = Some(LastOutput::Logits(logits[logits.len() - v..].to_vec()));
        Ok(logits)
    }

    /// Blocking [`Self::forward`] (native).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn forward_blocking(&mut self, tokens: &[u32], which: Logits) -> Result<Vec<f32>> {
        pollster::block_on(self.forward(tokens, which))
    }

    /// Runs the engine. A failure the engine rolled back leaves the session as it was; one
    /// after the device ran part of the step poisons it (its state is unknown).
    async fn run(&mut self, tokens: &[u32], which: Logits) -> Result<Vec<f32>> {
        match (&mut self.state, &self.engine.0.imp) {
            // The CPU engine checks everything before it changes anything.
            (EngineState::Cpu(s), Imp::Cpu(m, c, _)) => s.forward(m, c.as_ref(), tokens, which),
            (EngineState::Gpu(s), Imp::Gpu(g)) => {
                let r = s.forward(g, tokens, which).await;
                if let (Err(_), Some(why)) = (&r, s.poisoned()) {
                    self.poisoned = Some(why.to_string());
                }
                r
            }
            _ => unreachable!("a session's state is made by its own engine"),
        }
    }

    /// Appends `token` without feeding it yet: it is fed with the next call that needs logits.
    pub fn push(&mut self, token: u32) -> Result<()> {
        self.check_usable()?;
        crate::model::check_token_range(&[token], self.position(), self.engine.vocab())?;
        self.pending.push(token);
        Ok(())
    }

    /// Feeds the pending tokens, if any.
    pub async fn flush(&mut self) -> Result<()> {
        self.check_usable()?;
        self.feed_pending(false).await
    }

    /// Feeds the pending tokens, if any, leaving the last one's logits, or with `hidden` on the
    /// CPU engine its final-normed row (no output product). A failure leaves them pending.
    async fn feed_pending(&mut self, hidden: bool) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let fed = std::mem::take(&mut self.pending);
        let cpu_hidden = match (&mut self.state, &self.engine.0.imp) {
            (EngineState::Cpu(s), Imp::Cpu(m, c, _)) if hidden => Some(s.feed(m, c.as_ref(), &fed)),
            _ => None,
        };
        let last = match cpu_hidden {
            Some(r) => r.map(LastOutput::Hidden),
            None => self.run(&fed, Logits::Last).await.map(LastOutput::Logits),
        };
        match last {
            Ok(last) => self.last = Some(last),
            Err(e) => {
                // Rolled back (or poisoned): the tokens are still to be fed.
                self.pending = fed;
                return Err(e);
            }
        }
        Ok(())
    }

    /// The logits of the last token in the sequence (feeding pending tokens first): what the
    /// next token is sampled from. An error on a session that has seen no token.
    pub async fn next_logits(&mut self) -> Result<&[f32]> {
        self.flush().await?;
        self.logits_from_hidden();
        match &self.last {
            Some(LastOutput::Logits(l)) => Ok(l),
            Some(LastOutput::Hidden(_)) => unreachable!("only the CPU engine leaves a hidden row"),
            None => Err(Error::EmptyTokens),
        }
    }

    /// Replaces a hidden row left by [`Self::screened_greedy`] with its logits.
    fn logits_from_hidden(&mut self) {
        if let (Some(LastOutput::Hidden(x)), Imp::Cpu(m, c, _)) = (&self.last, &self.engine.0.imp) {
            let logits = crate::cpu::output_logits(m, c.as_ref(), x);
            self.last = Some(LastOutput::Logits(logits));
        }
    }

    /// The greedy next token (the argmax of [`Self::next_logits`], the first on ties) where the
    /// engine can take it without every logit: on the CPU engine with an output screen
    /// ([`OutputScreen`]), which computes only the rows its bound cannot rule out. `None`:
    /// take the argmax of [`Self::next_logits`] (another engine, or a case the screen leaves to
    /// the full product, such as non-finite values).
    pub async fn screened_greedy(&mut self) -> Result<Option<Screened>> {
        self.through_screen(|screen, output, x| screen.argmax(output, x))
            .await
    }

    /// The rows holding the `k` largest next logits, each with its exact logit, ascending by
    /// token, where the engine can tell them without every logit (the CPU engine's output
    /// screen, [`OutputScreen::top`]): what top-k sampling draws from
    /// ([`crate::sampling::Sampler::sample_top`]). `None` as for [`Self::screened_greedy`].
    pub async fn screened_top(&mut self, k: usize) -> Result<Option<Vec<(u32, f32)>>> {
        self.through_screen(|screen, output, x| screen.top(output, x, k))
            .await
    }

    /// Blocking [`Self::screened_top`] (native).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn screened_top_blocking(&mut self, k: usize) -> Result<Option<Vec<(u32, f32)>>> {
        pollster::block_on(self.screened_top(k))
    }

    /// Feeds the pending tokens without the output product and asks the output screen `ask`
    /// about the last hidden row; `None` without a screen or a hidden row (logits already
    /// computed), or where the screen cannot decide.
    async fn through_screen<R>(
        &mut self,
        ask: impl FnOnce(&OutputScreen, crate::cpu::weights::Matrix<'_>, &[f32]) -> Option<R>,
    ) -> Result<Option<R>> {
        self.check_usable()?;
        let engine = self.engine.clone();
        let Imp::Cpu(m, c, Some(screen)) = &engine.0.imp else {
            return Ok(None);
        };
        self.feed_pending(true).await?;
        Ok(match &self.last {
            Some(LastOutput::Hidden(x)) => {
                ask(screen, crate::cpu::weights::output_matrix(m, c.as_ref()), x)
            }
            _ => None,
        })
    }

    /// Blocking [`Self::screened_greedy`] (native).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn screened_greedy_blocking(&mut self) -> Result<Option<Screened>> {
        pollster::block_on(self.screened_greedy())
    }

    /// The state as host data (pending tokens fed first).
    pub async fn state(&mut self) -> Result<SessionState> {
        self.flush().await?;
        self.logits_from_hidden();
        let layers = match (&mut self.state, &self.engine.0.imp) {
            (EngineState::Cpu(s), _) => s.layers.clone(),
            (EngineState::Gpu(s), Imp::Gpu(g)) => s.export(g).await?,
            _ => unreachable!("a session's state is made by its own engine"),
        };
        Ok(SessionState {
            position: self.fed(),
            schedule: self.schedule().clone(),
            layers,
            logits: match &self.last {
                Some(LastOutput::Logits(l)) => Some(l.clone()),
                _ => None,
            },
        })
    }

    /// The state file's bytes (see [`SessionState`]); the session goes on unchanged.
    pub async fn save(&mut self) -> Result<Vec<u8>> {
        let engine = self.engine.kind().name();
        let state = self.state().await?;
        state.to_bytes(self.engine.fingerprint(), engine)
    }

    /// An independent copy of this session (a branch of the conversation).
    pub async fn fork(&mut self) -> Result<Session> {
        let state = self.state().await?;
        self.engine.session_from(state)
    }

    /// Starts the sequence over (same schedule); clears a poisoned session too.
    pub fn reset(&mut self) -> Result<()> {
        *self = self.engine.session(self.schedule().clone())?;
        Ok(())
    }

    /// Blocking [`Self::save`] (native).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn save_blocking(&mut self) -> Result<Vec<u8>> {
        pollster::block_on(self.save())
    }

    /// Blocking [`Self::state`] (native).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn state_blocking(&mut self) -> Result<SessionState> {
        pollster::block_on(self.state())
    }

    /// Blocking [`Self::next_logits`] (native).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn next_logits_blocking(&mut self) -> Result<Vec<f32>> {
        pollster::block_on(self.next_logits()).map(<[f32]>::to_vec)
    }

    /// Blocking [`Self::fork`] (native).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn fork_blocking(&mut self) -> Result<Session> {
        pollster::block_on(self.fork())
    }
}

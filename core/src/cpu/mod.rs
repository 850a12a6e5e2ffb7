//! The CPU engine: the whole forward pass of MODEL.md and its streaming decode.
//!
//! It runs where there is no GPU or only a software one (see [`crate::engine_choice`]),
//! natively and in the browser's wasm module, and the GPU tests compare against it; it is itself
//! tested against the formula-by-formula f64 oracle (`tests/src/reference64.rs`). Speed:
//! prefill products through a packed GEMM (`ops::matmul`), decode products as bandwidth-bound
//! row dots, the SSM scan with AVX2/FMA where the CPU has them, rayon across heads and output
//! blocks; f32 storage, f64 where long sums accumulate.

pub mod elementwise;
pub mod fixed_dot;
pub mod mixer;
pub mod ops;
pub mod output_screen;
mod simd;
pub mod weights;

use std::sync::atomic::{AtomicU8, Ordering};

/// The widest kernel tier the CPU engine may pick ([`limit_kernels`]), as a `KernelTier`.
static KERNEL_LIMIT: AtomicU8 = AtomicU8::new(KernelTier::Avx512 as u8);

/// How many empty polls a kept-awake worker makes before it gives up and sleeps (~1 ms).
#[cfg(any(not(target_arch = "wasm32"), target_feature = "atomics"))]
const AWAKE_IDLE_POLLS: u32 = 20_000;

/// Runs `op` on a worker of rayon's pool while the other workers poll for its jobs instead of
/// sleeping. A decode step is ~150 parallel regions of ~100 µs; a sleeping worker woken for
/// each (a futex natively, Atomics.wait in the browser, where a wake costs tens of µs) often
/// arrives after the region ended. A poller gives up after [`AWAKE_IDLE_POLLS`] empty polls, so
/// one that a busy thread ran on top of other work (a second forward, a test running in
/// parallel) hands that thread back soon: it never waits on a job of its own. (Natively and in
/// the browser's threaded module, wasm `+atomics`; the single-threaded module has no pool.)
#[cfg(any(not(target_arch = "wasm32"), target_feature = "atomics"))]
fn on_awake_pool<R: Send>(op: impl FnOnce() -> R + Send) -> R {
    let done = std::sync::atomic::AtomicBool::new(false);
    rayon::scope(|s| {
        let owner = rayon::current_thread_index();
        for _ in 1..rayon::current_num_threads() {
            let done = &done;
            s.spawn(move |_| {
                if rayon::current_thread_index() == owner {
                    return; // the thread running `op`: it would wait on itself
                }
                let mut idle = 0;
                while !done.load(Ordering::Acquire) && idle < AWAKE_IDLE_POLLS {
                    match rayon::yield_now() {
                        Some(rayon::Yield::Executed) => idle = 0,
                        _ => {
                            idle += 1;
                            std::hint::spin_loop();
                        }
                    }
                }
            });
        }
        let r = op();
        done.store(true, Ordering::Release);
        r
    })
}

/// The vector kernels the CPU engine runs, narrowest first. Each tier is used only where the CPU
/// has it (checked at run time); all give the same results within f32 rounding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum KernelTier {
    /// The portable loops: what the wasm build and CPUs without AVX2 run.
    Portable = 0,
    /// x86-64 AVX2 / FMA / F16C intrinsics.
    Avx2 = 1,
    /// AVX-512 (F, BW) where it pays: the quantized decode products.
    Avx512 = 2,
}

impl KernelTier {
    pub const ALL: [KernelTier; 3] = [KernelTier::Avx512, KernelTier::Avx2, KernelTier::Portable];
}

/// Runs no kernel wider than `tier` from now on (process-wide), so tests cover every tier on
/// one machine, and for A/B timings.
pub fn limit_kernels(tier: KernelTier) {
    KERNEL_LIMIT.store(tier as u8, Ordering::Relaxed);
}

/// The tier [`limit_kernels`] set (by default the widest).
pub fn kernel_limit() -> KernelTier {
    match KERNEL_LIMIT.load(Ordering::Relaxed) {
        0 => KernelTier::Portable,
        1 => KernelTier::Avx2,
        _ => KernelTier::Avx512,
    }
}

use crate::error::Result;
use crate::model::Model;
use crate::schedule::Schedule;
use crate::Logits;
use mixer::LayerState;
pub use output_screen::{OutputScreen, Screened};
pub(crate) use simd::widen_f16;
pub use weights::WeightCopies;

/// What a sequence remembers on the CPU engine, owned (no borrow of the model): the schedule,
/// the per-layer caches and the position of the next token. [`CpuSession`] pairs it with a
/// model; [`crate::session::Session`] keeps it between calls.
#[derive(Clone, Debug)]
pub struct CpuState {
    pub(crate) schedule: Schedule,
    pub(crate) layers: Vec<LayerState>,
    pub(crate) position: usize,
}

impl CpuState {
    /// A fresh sequence for `model` under `schedule` (resolved for this model).
    pub fn new(model: &Model, schedule: Schedule) -> Result<Self> {
        if schedule.len() != model.config.num_layers {
            return Err(crate::Error::ScheduleLength {
                got: schedule.len(),
                layers: model.config.num_layers,
            });
        }
        let layers = (0..model.config.num_layers)
            .map(|_| LayerState::new(&model.config))
            .collect();
        Ok(Self {
            schedule,
            layers,
            position: 0,
        })
    }

    /// Number of tokens seen so far.
    pub fn position(&self) -> usize {
        self.position
    }

    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// Bytes held by the per-layer caches now.
    pub fn cache_bytes(&self) -> usize {
        self.layers.iter().map(LayerState::bytes).sum()
    }

    /// Per layer: `(attention cache entries, whether the SSM state exists)`.
    pub fn layer_states(&self) -> Vec<(usize, bool)> {
        self.layers
            .iter()
            .map(|l| (l.attention_cache.len, l.ssm_state.is_some()))
            .collect()
    }

    /// Feeds `tokens` (a prefill, a decode step, or a continuation) through `model` (reading
    /// `copies` of its large matrices when given: f16, q8_0 or q4_0) and returns the logits of
    /// every fed token (`[T, V]`) or of the last one (`[V]`).
    pub fn forward(
        &mut self,
        model: &Model,
        copies: Option<&WeightCopies>,
        tokens: &[u32],
        which: Logits,
    ) -> Result<Vec<f32>> {
        on_pool(|| {
            let normed = self.normed_on_pool(model, copies, tokens, which)?;
            Ok(output_logits(model, copies, &normed))
        })
    }

    /// Feeds `tokens` as [`CpuState::forward`] does, but returns the last token's final-normed
    /// hidden row (`[D]`) instead of its logits: greedy decoding takes the token from it
    /// through an [`OutputScreen`], and [`output_logits`] gives the logits when they are asked.
    pub fn feed(
        &mut self,
        model: &Model,
        copies: Option<&WeightCopies>,
        tokens: &[u32],
    ) -> Result<Vec<f32>> {
        on_pool(|| self.normed_on_pool(model, copies, tokens, Logits::Last))
    }

    /// The layers, then the final norm of the rows `which` names.
    fn normed_on_pool(
        &mut self,
        model: &Model,
        copies: Option<&WeightCopies>,
        tokens: &[u32],
        which: Logits,
    ) -> Result<Vec<f32>> {
        let cfg = &model.config;
        if tokens.is_empty() {
            return Err(crate::Error::EmptyTokens);
        }
        if let Some(c) = copies {
            c.check(model)?;
        }
        model.check_token_range(tokens, self.position)?;
        let d = cfg.hidden_size;
        let t_n = tokens.len();
        let mut h = Vec::with_capacity(t_n * d);
        // The embedding is a stored matrix too (the output matrix when tied): read as the
        // copies hold it, as the GPU engine's storage does.
        let embedding = weights::embedding_matrix(model, copies);
        for &tok in tokens {
            embedding.read_row(tok as usize, &mut h);
        }
        for (i, (w, state)) in model.layers.iter().zip(&mut self.layers).enumerate() {
            let mats = weights::layer_matrices(model, copies, i);
            let u = ops::rms_norm(&h, &w.norm.data, cfg.layer_norm_epsilon);
            let out = mixer::mixer(
                cfg,
                w,
                &mats,
                self.schedule.layer(i),
                state,
                self.position,
                &u,
            );
            add_in_place(&mut h, &out);
            if let (Some(mlp), Some(fc1), Some(fc2)) = (&w.mlp, mats.fc1, mats.fc2) {
                let m = cfg.mlp_intermediate_size;
                let u = ops::rms_norm(&h, &mlp.norm2.data, cfg.layer_norm_epsilon);
                let vg = ops::matmul(&u, t_n, fc1, None);
                let act: Vec<f32> = (0..t_n * m)
                    .map(|i| {
                        let (t, j) = (i / m, i % m);
                        vg[t * 2 * m + j] * ops::silu(vg[t * 2 * m + m + j])
                    })
                    .collect();
                add_in_place(&mut h, &ops::matmul(&act, t_n, fc2, None));
            }
        }
        self.position += t_n;
        let rows = match which {
            Logits::All => &h[..],
            Logits::Last => &h[(t_n - 1) * d..],
        };
        Ok(ops::rms_norm(
            rows,
            &model.norm_f.data,
            cfg.layer_norm_epsilon,
        ))
    }
}

/// The logits of final-normed hidden rows (`[T, D]` -> `[T, V]`).
pub fn output_logits(model: &Model, copies: Option<&WeightCopies>, normed: &[f32]) -> Vec<f32> {
    let d = model.config.hidden_size;
    ops::matmul(
        normed,
        normed.len() / d.max(1),
        weights::output_matrix(model, copies),
        None,
    )
}

/// Runs `op` on a worker of rayon's pool: each of a token's ~150 parallel regions is then a
/// fork on that worker rather than a job injected from outside with the caller asleep on a
/// latch until it ends (a futex wake and two context switches each: ~20% of a decode step's
/// samples). In the browser only the threaded module (`+atomics`) has a pool; the other runs
/// rayon on the caller's thread alone.
fn on_pool<R: Send>(op: impl FnOnce() -> R + Send) -> R {
    #[cfg(any(not(target_arch = "wasm32"), target_feature = "atomics"))]
    if rayon::current_thread_index().is_none() {
        return on_awake_pool(op);
    }
    op()
}

/// One sequence being processed on a model: [`CpuState`] with the weights it runs on.
pub struct CpuSession<'m> {
    model: &'m Model,
    /// Copies of the large matrices (f16, q8_0, q4_0), read instead of the model's f32 ones.
    copies: Option<&'m WeightCopies>,
    state: CpuState,
}

impl<'m> CpuSession<'m> {
    /// A fresh sequence over the model's f32 weights under `schedule` (resolved for this model).
    pub fn new(model: &'m Model, schedule: Schedule) -> Result<Self> {
        Ok(Self {
            model,
            copies: None,
            state: CpuState::new(model, schedule)?,
        })
    }

    /// A fresh sequence whose products read `copies` (made from this model by
    /// [`WeightCopies::new`]): fewer bytes per decode step.
    pub fn with_weights(
        model: &'m Model,
        copies: &'m WeightCopies,
        schedule: Schedule,
    ) -> Result<Self> {
        copies.check(model)?;
        Ok(Self {
            model,
            copies: Some(copies),
            state: CpuState::new(model, schedule)?,
        })
    }

    /// Number of tokens seen so far.
    pub fn position(&self) -> usize {
        self.state.position
    }

    pub fn schedule(&self) -> &Schedule {
        &self.state.schedule
    }

    /// Bytes held by the per-layer caches now.
    pub fn cache_bytes(&self) -> usize {
        self.state.cache_bytes()
    }

    /// Per layer: `(attention cache entries, whether the SSM state exists)`.
    pub fn layer_states(&self) -> Vec<(usize, bool)> {
        self.state.layer_states()
    }

    /// Feeds `tokens` (a prefill, a decode step, or a continuation) and returns the logits of
    /// every fed token (`[T, V]`) or of the last one (`[V]`).
    pub fn forward(&mut self, tokens: &[u32], which: Logits) -> Result<Vec<f32>> {
        self.state.forward(self.model, self.copies, tokens, which)
    }
}

fn add_in_place(h: &mut [f32], delta: &[f32]) {
    for (a, b) in h.iter_mut().zip(delta) {
        *a += b;
    }
}

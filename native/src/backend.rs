//! Choosing and driving a backend: the GPU engine on a real GPU, the CPU engine when there is
//! no adapter or only a software one (or on request).

use std::sync::Arc;

use clap::ValueEnum;
use transmamba::cpu::{CpuSession, F16Weights};
use transmamba::engine::{EngineOptions, GpuModel, GpuSession};
use transmamba::engine_choice::{choose, AdapterFacts, EngineChoice, EngineKind, EnginePreference};
use transmamba::gpu::context::probe_adapter;
use transmamba::gpu::{GpuContext, GpuOptions, WeightFormat};
use transmamba::{Logits, Model, Result, Schedule};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// The fastest engine for the device: the GPU on a real GPU; the CPU engine when there is
    /// no adapter or only a software one (lavapipe, llvmpipe, SwiftShader, WARP).
    Auto,
    Cpu,
    /// The GPU engine, on whatever adapter exists (CI forces lavapipe this way).
    Gpu,
}

impl Backend {
    fn preference(self) -> EnginePreference {
        match self {
            Backend::Auto => EnginePreference::Auto,
            Backend::Cpu => EnginePreference::Cpu,
            Backend::Gpu => EnginePreference::Gpu,
        }
    }
}

/// How weight matrices are stored (GPU and CPU engines alike).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Weights {
    /// f16 for a model stored in f16 (lossless), f32 otherwise.
    Auto,
    F32,
    /// Rounds f32/bf16 weights to f16: half the bytes, results within the f16 bound.
    F16,
}

impl Weights {
    pub fn options(self, model: &Model, options: EngineOptions) -> EngineOptions {
        let weights = match self {
            Weights::F32 => WeightFormat::F32,
            Weights::F16 => WeightFormat::F16,
            Weights::Auto => WeightFormat::auto_for(model),
        };
        EngineOptions { weights, ..options }
    }
}

/// The engine `--backend auto` runs on this machine, and why.
pub fn auto_choice() -> EngineChoice {
    let probe = pollster::block_on(probe_adapter(GpuOptions::default().power_preference))
        .map(|info| AdapterFacts::from_wgpu(&info))
        .map_err(|e| e.to_string());
    choose(
        EnginePreference::Auto,
        probe.as_ref().map_err(String::as_str),
    )
}

/// A loaded model on its engine, and why that engine.
pub struct Engine {
    imp: Imp,
    pub choice: EngineChoice,
}

enum Imp {
    /// The model, and f16 copies of its large matrices when the weights are f16.
    Cpu(Box<Model>, Option<Box<F16Weights>>),
    Gpu(Box<GpuModel>),
}

impl Engine {
    /// Puts `model` on the engine `backend` resolves to for this machine's adapter
    /// ([`transmamba::engine_choice::choose`]).
    pub fn new(
        model: Model,
        backend: Backend,
        options: EngineOptions,
        profile: bool,
    ) -> Result<Self> {
        let gpu_opts = GpuOptions {
            profiling: profile,
            ..GpuOptions::default()
        };
        let choice = match backend {
            Backend::Auto => auto_choice(),
            _ => choose(backend.preference(), Err("not looked for")),
        };
        let imp = match choice.kind {
            EngineKind::Cpu => {
                let f16 = match options.weights {
                    WeightFormat::F16 => Some(Box::new(F16Weights::new(&model)?)),
                    WeightFormat::F32 => None,
                };
                Imp::Cpu(Box::new(model), f16)
            }
            EngineKind::Gpu => {
                let ctx = GpuContext::new_blocking(gpu_opts)?;
                Imp::Gpu(Box::new(GpuModel::new(Arc::new(ctx), &model, options)?))
            }
        };
        Ok(Self { imp, choice })
    }

    /// The engine, its device and why it was chosen, for status lines and JSON.
    pub fn name(&self) -> String {
        match &self.imp {
            Imp::Cpu(_, f16) => format!(
                "cpu ({} threads, {} weights; {})",
                rayon::current_num_threads(),
                if f16.is_some() { "f16" } else { "f32" },
                self.choice.reason
            ),
            Imp::Gpu(g) => format!(
                "gpu ({}, {:?}, {} weights; {})",
                g.ctx.info.name,
                g.ctx.info.backend,
                g.options.weights.name(),
                self.choice.reason
            ),
        }
    }

    pub fn vocab(&self) -> usize {
        match &self.imp {
            Imp::Cpu(m, _) => m.vocab,
            Imp::Gpu(g) => g.vocab,
        }
    }

    pub fn config(&self) -> &transmamba::ModelConfig {
        match &self.imp {
            Imp::Cpu(m, _) => &m.config,
            Imp::Gpu(g) => &g.config,
        }
    }

    pub fn session(&self, schedule: Schedule) -> Result<Session<'_>> {
        Ok(match &self.imp {
            Imp::Cpu(m, None) => Session::Cpu(CpuSession::new(m, schedule)?),
            Imp::Cpu(m, Some(f16)) => Session::Cpu(CpuSession::with_f16(m, f16, schedule)?),
            Imp::Gpu(g) => Session::Gpu(Box::new(GpuSession::new(g, schedule)?)),
        })
    }

    pub fn gpu(&self) -> Option<&GpuModel> {
        match &self.imp {
            Imp::Gpu(g) => Some(g),
            Imp::Cpu(..) => None,
        }
    }
}

/// One sequence on either backend.
pub enum Session<'a> {
    Cpu(CpuSession<'a>),
    // Boxed: a GPU session (per-layer buffers, caches) is much larger than a CPU one.
    Gpu(Box<GpuSession<'a>>),
}

impl Session<'_> {
    pub fn forward(&mut self, tokens: &[u32], which: Logits) -> Result<Vec<f32>> {
        match self {
            Session::Cpu(s) => s.forward(tokens, which),
            Session::Gpu(s) => s.forward_blocking(tokens, which),
        }
    }

    pub fn cache_bytes(&self) -> usize {
        match self {
            Session::Cpu(s) => s.cache_bytes(),
            Session::Gpu(s) => s.cache_bytes(),
        }
    }
}

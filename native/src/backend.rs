//! Choosing and driving a backend: the GPU engine when an adapter exists, the CPU reference
//! otherwise (or on request).

use std::sync::Arc;

use clap::ValueEnum;
use transmamba::cpu::CpuSession;
use transmamba::engine::{EngineOptions, GpuModel, GpuSession};
use transmamba::gpu::{GpuContext, GpuOptions, WeightFormat};
use transmamba::{Logits, Model, Result, Schedule};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// The GPU when an adapter exists, else the CPU (with a note on stderr).
    Auto,
    Cpu,
    Gpu,
}

/// How weight matrices are stored on the GPU.
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

/// A loaded model on its backend.
pub enum Engine {
    Cpu(Box<Model>),
    Gpu(Box<GpuModel>),
}

impl Engine {
    /// Puts `model` on the requested backend. `Auto` falls back to the CPU with a note.
    pub fn new(
        model: Model,
        backend: Backend,
        options: EngineOptions,
        profile: bool,
    ) -> Result<Self> {
        if backend == Backend::Cpu {
            return Ok(Engine::Cpu(Box::new(model)));
        }
        let gpu_opts = GpuOptions {
            profiling: profile,
            ..GpuOptions::default()
        };
        match GpuContext::new_blocking(gpu_opts) {
            Ok(ctx) => Ok(Engine::Gpu(Box::new(GpuModel::new(
                Arc::new(ctx),
                &model,
                options,
            )?))),
            Err(e) if backend == Backend::Auto => {
                eprintln!("note: {e}; using the CPU backend");
                Ok(Engine::Cpu(Box::new(model)))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub fn name(&self) -> String {
        match self {
            Engine::Cpu(_) => "cpu".into(),
            Engine::Gpu(g) => format!(
                "gpu ({}, {:?}, {} weights)",
                g.ctx.info.name,
                g.ctx.info.backend,
                g.options.weights.name()
            ),
        }
    }

    pub fn vocab(&self) -> usize {
        match self {
            Engine::Cpu(m) => m.vocab,
            Engine::Gpu(g) => g.vocab,
        }
    }

    pub fn config(&self) -> &transmamba::ModelConfig {
        match self {
            Engine::Cpu(m) => &m.config,
            Engine::Gpu(g) => &g.config,
        }
    }

    pub fn session(&self, schedule: Schedule) -> Result<Session<'_>> {
        Ok(match self {
            Engine::Cpu(m) => Session::Cpu(CpuSession::new(m, schedule)?),
            Engine::Gpu(g) => Session::Gpu(Box::new(GpuSession::new(g, schedule)?)),
        })
    }

    pub fn gpu(&self) -> Option<&GpuModel> {
        match self {
            Engine::Gpu(g) => Some(g),
            Engine::Cpu(_) => None,
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

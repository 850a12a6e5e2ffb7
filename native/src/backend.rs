//! Choosing and driving a backend: the GPU engine on a real GPU, the CPU engine when there is
//! no adapter or only a software one (or on request).

use std::sync::Arc;

use clap::ValueEnum;
use transmamba::engine::EngineOptions;
use transmamba::engine_choice::{choose, AdapterFacts, EngineChoice, EngineKind, EnginePreference};
use transmamba::gpu::context::probe_adapter;
use transmamba::gpu::{DeviceCaps, GpuContext, GpuOptions, KernelChoice, KernelPlan, WeightFormat};
use transmamba::session::Engine;
use transmamba::{Model, Result};

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

/// Which GPU kernels run (see [`KernelChoice`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kernels {
    Auto,
    Portable,
    Gpu,
    CpuAdapter,
}

impl Kernels {
    fn choice(self) -> KernelChoice {
        match self {
            Kernels::Auto => KernelChoice::Auto,
            Kernels::Portable => KernelChoice::Portable,
            Kernels::Gpu => KernelChoice::Gpu,
            Kernels::CpuAdapter => KernelChoice::CpuAdapter,
        }
    }
}

/// The GPU device `kernels` would run on and its kernel plan (`tm-run inspect`).
pub fn kernel_plan(kernels: Kernels) -> Result<(String, DeviceCaps, KernelPlan)> {
    let ctx = GpuContext::new_blocking(GpuOptions {
        kernels: kernels.choice(),
        ..GpuOptions::default()
    })?;
    Ok((ctx.info.name.clone(), ctx.caps().clone(), ctx.plan()))
}

/// How weight matrices are stored (GPU and CPU engines alike).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Weights {
    /// As the file stores them (lossless): q4_0 / q8_0 for a quantized file, f16 for an f16
    /// one, f32 otherwise.
    Auto,
    F32,
    /// Rounds f32/bf16 weights to f16: half the bytes, results within the f16 bound.
    F16,
    /// GGUF's Q8_0 blocks (34 bytes per 32 weights), quantized at load unless stored so.
    #[value(name = "q8_0")]
    Q8_0,
    /// GGUF's Q4_0 blocks (18 bytes per 32 weights), quantized at load unless stored so.
    #[value(name = "q4_0")]
    Q4_0,
}

impl Weights {
    pub fn options(self, model: &Model, options: EngineOptions) -> EngineOptions {
        let weights = match self {
            Weights::F32 => WeightFormat::F32,
            Weights::F16 => WeightFormat::F16,
            Weights::Q8_0 => WeightFormat::Q8_0,
            Weights::Q4_0 => WeightFormat::Q4_0,
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

/// Puts `model` on the engine `backend` resolves to for this machine's adapter
/// ([`transmamba::engine_choice::choose`]).
pub fn load_engine(
    model: Model,
    backend: Backend,
    options: EngineOptions,
    profile: bool,
    kernels: Kernels,
) -> Result<Engine> {
    let gpu_opts = GpuOptions {
        profiling: profile,
        kernels: kernels.choice(),
        ..GpuOptions::default()
    };
    let choice = match backend {
        Backend::Auto => auto_choice(),
        _ => choose(backend.preference(), Err("not looked for")),
    };
    match choice.kind {
        EngineKind::Cpu => Engine::cpu(model, options.weights, choice),
        EngineKind::Gpu => {
            let ctx = GpuContext::new_blocking(gpu_opts)?;
            let engine = Engine::on_gpu(Arc::new(ctx), &model, options, choice)?;
            // Test hook: lose the device once the model is on it (the lost-device path, end to end).
            if std::env::var_os("TM_TEST_LOSE_DEVICE").is_some() {
                if let Some(g) = engine.gpu() {
                    g.ctx.destroy_device();
                }
            }
            Ok(engine)
        }
    }
}

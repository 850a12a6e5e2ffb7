//! Which engine runs a model: the GPU engine on a real GPU, the CPU engine where the only
//! adapter is a software one. One place decides, for `tm-run` and the browser module alike.
//!
//! Why: a software adapter (Mesa's lavapipe/llvmpipe, Chrome's SwiftShader, Windows' WARP)
//! emulates a GPU on the same CPU cores the CPU engine uses directly, and loses to it: on a
//! 2-core machine lavapipe prefilled the mamba2-130m shape at 0.7x and decoded at 0.3-0.5x the
//! CPU engine (docs/PERFORMANCE.md, "No GPU").

use std::fmt;

/// What the user asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EnginePreference {
    /// The fastest engine for the device (the default).
    #[default]
    Auto,
    Cpu,
    Gpu,
}

/// The engine that runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineKind {
    Cpu,
    Gpu,
}

impl EngineKind {
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Cpu => "cpu",
            EngineKind::Gpu => "gpu",
        }
    }
}

/// What is known of the adapter a GPU engine would get.
#[derive(Clone, Debug, Default)]
pub struct AdapterFacts {
    /// The adapter's name (native) or architecture/description (WebGPU).
    pub name: String,
    /// `wgpu::DeviceType::Cpu` natively; WebGPU does not say, so `false` there.
    pub cpu_device_type: bool,
    /// WebGPU's `isFallbackAdapter` (a software implementation by definition).
    pub fallback: bool,
}

impl AdapterFacts {
    /// From a native adapter's wgpu info.
    pub fn from_wgpu(info: &wgpu::AdapterInfo) -> Self {
        Self {
            name: info.name.clone(),
            cpu_device_type: info.device_type == wgpu::DeviceType::Cpu,
            fallback: false,
        }
    }

    /// Whether the adapter emulates a GPU on the CPU. Besides the device type and the fallback
    /// flag, the names of the known software rasterizers count, because WebGPU reports no device
    /// type (SwiftShader calls itself architecture "swiftshader").
    pub fn is_software(&self) -> bool {
        const SOFTWARE: [&str; 5] = [
            "swiftshader",
            "llvmpipe",
            "lavapipe",
            "microsoft basic render",
            "warp",
        ];
        let name = self.name.to_ascii_lowercase();
        self.cpu_device_type || self.fallback || SOFTWARE.iter().any(|s| name.contains(s))
    }
}

/// The decision and its reason, for status lines and `info()`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineChoice {
    pub kind: EngineKind,
    pub reason: String,
}

impl fmt::Display for EngineChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.kind.name(), self.reason)
    }
}

/// Decides the engine. `adapter` is the adapter found, or why none was. A forced `Gpu` with no
/// adapter is the caller's error to report (it has the typed one); here it is still `Gpu`.
pub fn choose(pref: EnginePreference, adapter: Result<&AdapterFacts, &str>) -> EngineChoice {
    let (kind, reason) = match (pref, adapter) {
        (EnginePreference::Cpu, _) => (EngineKind::Cpu, "requested".to_string()),
        (EnginePreference::Gpu, Ok(a)) if a.is_software() => (
            EngineKind::Gpu,
            format!("requested; adapter {} is a software one", a.name),
        ),
        (EnginePreference::Gpu, _) => (EngineKind::Gpu, "requested".to_string()),
        (EnginePreference::Auto, Err(why)) => {
            (EngineKind::Cpu, format!("auto: no GPU adapter ({why})"))
        }
        (EnginePreference::Auto, Ok(a)) if a.is_software() => (
            EngineKind::Cpu,
            format!(
                "auto: the only adapter, {}, is a software one, slower than the CPU engine on the same cores",
                a.name
            ),
        ),
        (EnginePreference::Auto, Ok(a)) => (EngineKind::Gpu, format!("auto: adapter {}", a.name)),
    };
    EngineChoice { kind, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adapter(name: &str, cpu: bool, fallback: bool) -> AdapterFacts {
        AdapterFacts {
            name: name.into(),
            cpu_device_type: cpu,
            fallback,
        }
    }

    #[test]
    fn software_adapters_get_the_cpu_engine_real_gpus_the_gpu() {
        let auto = EnginePreference::Auto;
        for soft in [
            adapter("llvmpipe (LLVM 15.0.6, 256 bits)", true, false),
            adapter("swiftshader", false, false),
            adapter("SwiftShader Device (Subzero)", false, false),
            adapter("Microsoft Basic Render Driver", false, false),
            adapter("whatever", false, true),
        ] {
            assert_eq!(choose(auto, Ok(&soft)).kind, EngineKind::Cpu, "{soft:?}");
            assert_eq!(
                choose(EnginePreference::Gpu, Ok(&soft)).kind,
                EngineKind::Gpu
            );
        }
        for real in [
            adapter("NVIDIA H200", false, false),
            adapter("Apple M2", false, false),
            adapter("ampere", false, false),
        ] {
            assert_eq!(choose(auto, Ok(&real)).kind, EngineKind::Gpu, "{real:?}");
            assert_eq!(
                choose(EnginePreference::Cpu, Ok(&real)).kind,
                EngineKind::Cpu
            );
        }
        let none = choose(auto, Err("no Vulkan"));
        assert_eq!(none.kind, EngineKind::Cpu);
        assert!(none.reason.contains("no Vulkan"), "{}", none.reason);
    }
}

//! Which kernels run on a device: the device's capabilities read once ([`DeviceCaps`]) and the
//! [`KernelPlan`] resolved from them and the user's [`KernelChoice`]. Every op asks the plan;
//! nothing else in the GPU layer looks at the adapter to pick a kernel.

use super::error::{GpuError, GpuResult};
use super::weights::QuantRows;

/// What a user asks for (`--kernels`, the JS `kernels` option).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KernelChoice {
    /// `cpu-adapter` on a software adapter with 8-wide subgroups (lavapipe), `portable` on
    /// other software adapters (SwiftShader), `gpu` on real GPUs.
    #[default]
    Auto,
    /// The floor: the device is created without subgroups and shader-f16, as on an adapter
    /// that has neither (so the tests cover that path on lavapipe too).
    Portable,
    /// Kernels for real GPUs and browsers: lanes along K with subgroup reductions of any
    /// width (workgroup-memory reductions where the adapter has no subgroups), workgroup-memory
    /// tiles for prefill.
    Gpu,
    /// The kernels tuned for CPU Vulkan's 8-wide subgroups; an error on any other device.
    CpuAdapter,
}

impl KernelChoice {
    /// Every choice, as named on the command line.
    pub const NAMES: [&'static str; 4] = ["auto", "portable", "gpu", "cpu-adapter"];

    /// Parses one of [`KernelChoice::NAMES`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(Self::Auto),
            "portable" => Some(Self::Portable),
            "gpu" => Some(Self::Gpu),
            "cpu-adapter" => Some(Self::CpuAdapter),
            _ => None,
        }
    }
}

/// The device as the kernels see it, read once when it is created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceCaps {
    pub name: String,
    /// wgpu's adapter type; CPU adapters (lavapipe, llvmpipe, WARP) are `Cpu` natively.
    pub device_type: wgpu::DeviceType,
    /// A GPU emulated on the CPU: a `Cpu` device type, a known software rasterizer's name, or
    /// the caller's word (the browser's `isFallbackAdapter` / SwiftShader, which wgpu's web
    /// backend does not report as a device type).
    pub software: bool,
    pub vendor: u32,
    /// Subgroup operations enabled on the device (offered and not switched off).
    pub subgroups: bool,
    /// The subgroup sizes the adapter reports (0 when unknown).
    pub subgroup_min: u32,
    pub subgroup_max: u32,
    pub shader_f16: bool,
    pub max_workgroup_invocations: u32,
    pub max_workgroup_storage: u32,
    /// Storage buffers a shader stage may bind (the `gpu` plan's decode product binds 8).
    pub max_storage_buffers: u32,
}

impl DeviceCaps {
    /// Reads `info` and what the device was created with; `software`: the caller knows the
    /// adapter is a software one.
    pub fn new(
        info: &wgpu::AdapterInfo,
        features: wgpu::Features,
        limits: &wgpu::Limits,
        software: bool,
    ) -> Self {
        Self {
            name: info.name.clone(),
            device_type: info.device_type,
            software: software || crate::engine_choice::AdapterFacts::from_wgpu(info).is_software(),
            vendor: info.vendor,
            subgroups: features.contains(wgpu::Features::SUBGROUP),
            subgroup_min: info.subgroup_min_size,
            subgroup_max: info.subgroup_max_size,
            shader_f16: features.contains(wgpu::Features::SHADER_F16),
            max_workgroup_invocations: limits.max_compute_invocations_per_workgroup,
            max_workgroup_storage: limits.max_compute_workgroup_storage_size,
            max_storage_buffers: limits.max_storage_buffers_per_shader_stage,
        }
    }

    /// A software adapter with subgroups of 8 (lavapipe on AVX2, CI's device): `auto` runs the
    /// `cpu-adapter` plan there, and the tests check that it does.
    pub fn lavapipe_like(&self) -> bool {
        self.software && self.subgroups_of_8()
    }

    /// Subgroups of exactly 8 lanes: what the `cpu-adapter` kernels are written for.
    pub fn subgroups_of_8(&self) -> bool {
        self.subgroups && self.subgroup_min == 8 && self.subgroup_max == 8
    }

    /// Subgroups the `gpu` plan's reductions take: any power of two from 4 to 128 (or sizes
    /// the adapter does not report: the kernels read `subgroup_size` and never assume one).
    fn subgroups_for_gpu_plan(&self) -> bool {
        let ok = |s: u32| s == 0 || (s.is_power_of_two() && (4..=128).contains(&s));
        self.subgroups && ok(self.subgroup_min) && ok(self.subgroup_max)
    }

    fn describe_subgroups(&self) -> String {
        if self.subgroups {
            format!("subgroups of {}-{}", self.subgroup_min, self.subgroup_max)
        } else {
            "no subgroups".to_string()
        }
    }
}

/// The kernels a device runs; see [`KernelPlan::steps`] for the kernel of each step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelPlan {
    /// lavapipe's: weights and activations as texels, 8-wide subgroup broadcasts, the norm
    /// and gate fusions in prefill too.
    CpuAdapter,
    /// Real GPUs and browsers: decode products with lanes along K (coalesced texel reads)
    /// reduced by subgroups, or by workgroup memory without them; prefill products in 64 x 64
    /// and the SSD chunk states and outputs in 32 x 32 workgroup-memory tiles; the decode step
    /// with 8 lanes a state row; the other steps run the portable kernels.
    Gpu { subgroups: bool },
    /// No subgroups, no f16: every step's portable kernel.
    Portable,
}

/// One row of [`KernelPlan::steps`]: a step of MODEL.md and the kernel(s) running it.
#[derive(Clone, Copy, Debug)]
pub struct PlanStep {
    pub step: &'static str,
    pub kernels: &'static str,
}

/// Storage buffers the `gpu` plan's decode product binds (matvec_split_k: X, bias, Y, the conv
/// step's four, the norm weight); WebGPU guarantees 8, Vulkan only 4.
const GPU_PLAN_STORAGE_BUFFERS: u32 = 8;

impl KernelPlan {
    /// The plan for `choice` on a device with `caps`. `portable` must have been created
    /// without subgroups (see [`crate::gpu::GpuContext::new`]).
    pub fn resolve(choice: KernelChoice, caps: &DeviceCaps) -> GpuResult<Self> {
        let gpu = || {
            if caps.max_workgroup_invocations < 256
                || caps.max_workgroup_storage < 8192
                || caps.max_storage_buffers < GPU_PLAN_STORAGE_BUFFERS
            {
                return Err(GpuError::Unsupported(format!(
                    "kernel plan gpu needs workgroups of 256 invocations, 8 KiB of workgroup \
                     memory and {GPU_PLAN_STORAGE_BUFFERS} storage buffers a shader; {} has {}, \
                     {} bytes and {}: use --kernels portable",
                    caps.name,
                    caps.max_workgroup_invocations,
                    caps.max_workgroup_storage,
                    caps.max_storage_buffers
                )));
            }
            Ok(KernelPlan::Gpu {
                subgroups: caps.subgroups_for_gpu_plan(),
            })
        };
        match choice {
            KernelChoice::Portable => Ok(KernelPlan::Portable),
            KernelChoice::CpuAdapter if caps.subgroups_of_8() => Ok(KernelPlan::CpuAdapter),
            KernelChoice::CpuAdapter => Err(GpuError::Unsupported(format!(
                "kernel plan cpu-adapter needs 8-wide subgroups; {} has {}: use --kernels \
                 auto, gpu or portable",
                caps.name,
                caps.describe_subgroups()
            ))),
            KernelChoice::Gpu => gpu(),
            KernelChoice::Auto if caps.software && caps.subgroups_of_8() => {
                Ok(KernelPlan::CpuAdapter)
            }
            // A CPU emulation runs a workgroup barrier and workgroup memory as loops over the
            // lanes: the gpu plan's reductions and tiles are ~9x slower there than the portable
            // kernels (SwiftShader in Chromium, demo model decode: 1.9 against 17.3 tokens/s).
            KernelChoice::Auto if caps.software => Ok(KernelPlan::Portable),
            KernelChoice::Auto => gpu().or(Ok(KernelPlan::Portable)),
        }
    }

    /// Its name in status lines, `bench --json` (`kernels`) and the JS `info()`.
    pub fn name(self) -> &'static str {
        match self {
            KernelPlan::CpuAdapter => "cpu-adapter",
            KernelPlan::Gpu { subgroups: true } => "gpu",
            KernelPlan::Gpu { subgroups: false } => "gpu-no-subgroups",
            KernelPlan::Portable => "portable",
        }
    }

    /// Whether the 8-wide subgroup kernels (`*_sg`) and the prefill fusions built on them run.
    pub fn subgroup8_kernels(self) -> bool {
        self == KernelPlan::CpuAdapter
    }

    /// Whether the `gpu` plan's product kernels run.
    pub fn gpu_products(self) -> bool {
        matches!(self, KernelPlan::Gpu { .. })
    }

    /// How quantized matrices lie in their textures: as the plan's decode product reads them
    /// best. matvec_split_k's lanes read along one row (plain rows: consecutive lanes,
    /// consecutive texels); matvec_quant's 8 lanes own 8 consecutive rows, so their texels
    /// are interleaved to lie side by side (128 contiguous bytes a fetch, one stream per 8 rows).
    pub fn quant_rows(self) -> QuantRows {
        if self.gpu_products() {
            QuantRows::Plain
        } else {
            QuantRows::Interleaved8
        }
    }

    /// The kernel of each step of MODEL.md in this plan: what `tm-run inspect` prints, and
    /// (through [`KernelPlan::markdown_table`]) ARCHITECTURE.md's table, which a test holds to
    /// this one source. Every plan lists the same steps in the same order.
    pub fn steps(self) -> Vec<PlanStep> {
        let s = |step, kernels| PlanStep { step, kernels };
        match self {
            KernelPlan::CpuAdapter => vec![
                s(
                    "decode products",
                    "matvec (8 outputs a lane), matvec_f16, matvec_quant",
                ),
                s(
                    "decode norm + conv fusion",
                    "matvec / matvec_quant NORM, main_conv",
                ),
                s(
                    "prefill products",
                    "rows_to_texture + matmul_xtex_sg (NORM, gated)",
                ),
                s(
                    "SSD chunk state / scan / passing",
                    "ssd_chunk_state_xtex_sg, ssd_chunk_scan_xtex_sg, ssd_state_passing_sg",
                ),
                s(
                    "attention, no RoPE",
                    "products on the texture cache (matvec / matmul_xtex_sg; attention_sg where \
                     the cache exceeds a texture)",
                ),
                s("attention, RoPE", "attention (fused, online softmax)"),
                s("SSM decode step", "ssm_step_tex"),
            ],
            KernelPlan::Gpu { subgroups } => vec![
                s(
                    "decode products",
                    if subgroups {
                        "matvec_split_k (lanes along K, subgroupAdd)"
                    } else {
                        "matvec_split_k (lanes along K, workgroup-memory tree)"
                    },
                ),
                s(
                    "decode norm + conv fusion",
                    "matvec_split_k NORM (1: weight folded, 2: weight bound beside X), main_conv",
                ),
                s(
                    "prefill products",
                    "matmul_tiles (64 x 64 workgroup-memory tiles; NORM for in_proj)",
                ),
                s(
                    "SSD chunk state / scan / passing",
                    "ssd_chunk_state_tiles, ssd_chunk_scan_tiles (32 x 32 workgroup-memory tiles, \
                     after the portable cb / lmat), ssd_state_passing (portable)",
                ),
                s(
                    "attention, no RoPE",
                    "prefill: attention_tiles (flash-style); decode: products (split-K)",
                ),
                s(
                    "attention, RoPE",
                    "prefill: attention_tiles; decode: attention",
                ),
                s(
                    "SSM decode step",
                    "ssm_step_wide (8 lanes a state row, in place)",
                ),
            ],
            KernelPlan::Portable => vec![
                s("decode products", "matvec (8 outputs a lane), matvec_quant"),
                s(
                    "decode norm + conv fusion",
                    "matvec / matvec_quant NORM, main_conv",
                ),
                s("prefill products", "matmul (4 x 4 a lane)"),
                s(
                    "SSD chunk state / scan / passing",
                    "ssd_chunk_state, ssd_chunk_scan, ssd_state_passing",
                ),
                s("attention, no RoPE", "products (matvec / matmul)"),
                s("attention, RoPE", "attention"),
                s("SSM decode step", "ssm_step_tex"),
            ],
        }
    }

    /// The plans' [`KernelPlan::steps`] side by side as a Markdown table (ARCHITECTURE.md);
    /// `gpu` in its subgroup form (without subgroups only its decode reduction differs).
    pub fn markdown_table() -> String {
        let plans = [
            (KernelPlan::CpuAdapter, "`cpu-adapter` (lavapipe)"),
            (KernelPlan::Gpu { subgroups: true }, "`gpu` (real GPUs)"),
            (KernelPlan::Portable, "`portable` (the floor)"),
        ];
        let mut t = String::from("| step |");
        for (_, head) in &plans {
            t += &format!(" {head} |");
        }
        t += "\n|---|---|---|---|\n";
        let columns: Vec<Vec<PlanStep>> = plans.iter().map(|(p, _)| p.steps()).collect();
        for (i, step) in columns[0].iter().enumerate() {
            t += &format!("| {} |", step.step);
            for c in &columns {
                t += &format!(" {} |", c[i].kernels);
            }
            t += "\n";
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(device_type: wgpu::DeviceType, subgroups: bool, min: u32, max: u32) -> DeviceCaps {
        DeviceCaps {
            name: "test".into(),
            device_type,
            software: device_type == wgpu::DeviceType::Cpu,
            vendor: 0,
            subgroups,
            subgroup_min: min,
            subgroup_max: max,
            shader_f16: false,
            max_workgroup_invocations: 256,
            max_workgroup_storage: 16384,
            max_storage_buffers: 8,
        }
    }

    /// Every plan names the same steps in the same order, and ARCHITECTURE.md's table is the
    /// one these give (regenerate it from the message when a kernel changes).
    #[test]
    fn the_plan_table_is_written_once() {
        let steps = |p: KernelPlan| p.steps().iter().map(|s| s.step).collect::<Vec<_>>();
        let all = [
            KernelPlan::CpuAdapter,
            KernelPlan::Gpu { subgroups: true },
            KernelPlan::Gpu { subgroups: false },
            KernelPlan::Portable,
        ];
        for p in all {
            assert_eq!(steps(p), steps(KernelPlan::Portable), "{}", p.name());
        }
        let doc = include_str!("../../../ARCHITECTURE.md");
        let table = KernelPlan::markdown_table();
        assert!(
            doc.contains(&table),
            "ARCHITECTURE.md's kernel plan table differs from KernelPlan::steps; it should read:\n{table}"
        );
    }

    #[test]
    fn auto_picks_by_device() {
        use wgpu::DeviceType::*;
        let r = |c: &DeviceCaps| KernelPlan::resolve(KernelChoice::Auto, c).unwrap();
        assert_eq!(r(&caps(Cpu, true, 8, 8)), KernelPlan::CpuAdapter);
        // Other software adapters (SwiftShader: 4 lanes; lavapipe on AVX-512: 16).
        assert_eq!(r(&caps(Cpu, true, 4, 4)), KernelPlan::Portable);
        assert_eq!(r(&caps(Cpu, true, 16, 16)), KernelPlan::Portable);
        let mut web_swiftshader = caps(Other, false, 0, 0);
        web_swiftshader.software = true;
        assert_eq!(r(&web_swiftshader), KernelPlan::Portable);
        assert_eq!(
            r(&caps(Other, false, 0, 0)),
            KernelPlan::Gpu { subgroups: false }
        );
        assert_eq!(
            r(&caps(DiscreteGpu, true, 32, 32)),
            KernelPlan::Gpu { subgroups: true }
        );
        assert_eq!(
            r(&caps(DiscreteGpu, true, 8, 8)),
            KernelPlan::Gpu { subgroups: true }
        );
        assert_eq!(
            r(&caps(IntegratedGpu, true, 32, 64)),
            KernelPlan::Gpu { subgroups: true }
        );
        assert_eq!(
            r(&caps(IntegratedGpu, false, 0, 0)),
            KernelPlan::Gpu { subgroups: false }
        );
        // A subgroup size the reductions were not written for: workgroup memory instead.
        assert_eq!(
            r(&caps(DiscreteGpu, true, 2, 2)),
            KernelPlan::Gpu { subgroups: false }
        );
        let mut small = caps(DiscreteGpu, true, 32, 32);
        small.max_workgroup_invocations = 128;
        assert_eq!(r(&small), KernelPlan::Portable);
        // Vulkan's minimum of 4 storage buffers a stage: the split-K product binds 8.
        let mut few = caps(DiscreteGpu, true, 32, 32);
        few.max_storage_buffers = 4;
        assert_eq!(r(&few), KernelPlan::Portable);
    }

    #[test]
    fn forced_plans_the_device_cannot_run_are_errors() {
        use wgpu::DeviceType::*;
        let e = KernelPlan::resolve(KernelChoice::CpuAdapter, &caps(DiscreteGpu, true, 32, 32))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cpu-adapter") && e.contains("subgroups of 32-32"),
            "{e}"
        );
        let mut small = caps(DiscreteGpu, true, 32, 32);
        small.max_workgroup_storage = 4096;
        let e = KernelPlan::resolve(KernelChoice::Gpu, &small)
            .unwrap_err()
            .to_string();
        assert!(e.contains("plan gpu") && e.contains("4096"), "{e}");
        let mut few = caps(DiscreteGpu, true, 32, 32);
        few.max_storage_buffers = 6;
        let e = KernelPlan::resolve(KernelChoice::Gpu, &few)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("8 storage buffers") && e.contains("and 6"),
            "{e}"
        );
        assert_eq!(
            KernelPlan::resolve(KernelChoice::Portable, &caps(Cpu, true, 8, 8)).unwrap(),
            KernelPlan::Portable
        );
        for n in KernelChoice::NAMES {
            assert!(KernelChoice::parse(n).is_some(), "{n}");
        }
        assert_eq!(KernelChoice::parse("fast"), None);
    }
}

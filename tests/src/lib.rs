//! Shared helpers for the end-to-end tests: the golden cases, random models, file writers.

pub mod gguf_writer;
pub mod reference64;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use transmamba::gpu::{GpuContext, GpuOptions, KernelChoice, KernelPlan};

pub use transmamba::synthetic::*;

/// The one GPU context the tests of a binary share. No adapter is a failure, never a skip.
pub fn gpu_context() -> Arc<GpuContext> {
    static CTX: OnceLock<Arc<GpuContext>> = OnceLock::new();
    CTX.get_or_init(|| {
        Arc::new(
            GpuContext::new_blocking(GpuOptions::default()).unwrap_or_else(|e| {
                panic!(
                    "a GPU adapter is required for these tests (install mesa-vulkan-drivers): {e}"
                )
            }),
        )
    })
    .clone()
}

/// One context per kernel plan, forced on whatever adapter the tests run on: the adapter's
/// default (`auto`: `cpu-adapter` on lavapipe, checked there; `gpu` on a real GPU), `gpu`
/// (its subgroup reductions run with the adapter's subgroups: lavapipe's 8), `gpu-no-subgroups`
/// (a device created without subgroups: the workgroup-memory reductions), `portable`. Shared
/// by the tests of a binary.
pub fn plan_contexts() -> Vec<(&'static str, Arc<GpuContext>)> {
    static CTXS: OnceLock<Vec<(&'static str, Arc<GpuContext>)>> = OnceLock::new();
    CTXS.get_or_init(|| {
        let make = |kernels, without_subgroups| {
            let opts = GpuOptions {
                kernels,
                without_subgroups,
                ..GpuOptions::default()
            };
            Arc::new(
                GpuContext::new_blocking(opts)
                    .unwrap_or_else(|e| panic!("kernel plan {kernels:?} on this adapter: {e}")),
            )
        };
        let all = vec![
            gpu_context(),
            make(KernelChoice::Gpu, false),
            make(KernelChoice::Gpu, true),
            make(KernelChoice::Portable, false),
        ];
        // Each context runs the plan its name says (on lavapipe: every plan there is).
        let lavapipe = all[0].caps().lavapipe_like();
        if lavapipe {
            assert_eq!(all[0].plan(), KernelPlan::CpuAdapter, "lavapipe's default");
        }
        assert!(all[1].plan().gpu_products(), "{}", all[1].kernels());
        if lavapipe {
            assert_eq!(all[1].plan(), KernelPlan::Gpu { subgroups: true });
        }
        assert_eq!(all[2].plan(), KernelPlan::Gpu { subgroups: false });
        assert_eq!(all[3].plan(), KernelPlan::Portable);
        all.into_iter().map(|c| (c.kernels(), c)).collect()
    })
    .clone()
}

/// [`plan_contexts`] without the adapter's default (which every other test runs).
pub fn forced_plan_contexts() -> Vec<(&'static str, Arc<GpuContext>)> {
    plan_contexts().into_iter().skip(1).collect()
}

/// The shipped demo model and the reference logits its training script saved.
pub fn demo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../demo")
}

/// The golden cases: `TM_GOLDEN_DIR` when set (test binaries built here and run on another
/// machine, such as the device kit's), else `../shared/golden` beside the checkout (as CI lays
/// it out).
pub fn golden_dir() -> PathBuf {
    match std::env::var_os("TM_GOLDEN_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/golden"),
    }
}

/// One golden case: a checkpoint and the logits transformers computed for it.
pub struct GoldenCase {
    pub name: String,
    pub dir: PathBuf,
    pub tokens: Vec<u32>,
    pub prefill_len: usize,
    /// `[T, V]` from one forward over all tokens.
    pub logits: Vec<f32>,
    /// `[T, V]`: rows `< prefill_len` from a prefill, the rest one decode step each.
    pub decode_logits: Vec<f32>,
    pub vocab: usize,
}

/// Every case under `golden_dir()`; panics (failing the test) if there are none.
pub fn golden_cases() -> Vec<GoldenCase> {
    let dir = golden_dir();
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("golden cases must be at {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("case.json").is_file())
        .map(|e| e.path())
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no golden cases in {}", dir.display());
    names.into_iter().map(|p| load_case(&p)).collect()
}

fn load_case(dir: &Path) -> GoldenCase {
    let case: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
    let tokens: Vec<u32> = case["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let read = |f: &str| {
        let bytes = std::fs::read(dir.join(f)).unwrap();
        transmamba::npy::from_npy_f32(&bytes, f).unwrap()
    };
    let (shape, logits) = read("logits.npy");
    let (dshape, decode_logits) = read("decode_logits.npy");
    assert_eq!(shape, dshape);
    assert_eq!(shape[0], tokens.len());
    GoldenCase {
        name: dir.file_name().unwrap().to_string_lossy().into_owned(),
        dir: dir.to_path_buf(),
        prefill_len: case["prefill_len"].as_u64().unwrap() as usize,
        tokens,
        logits,
        decode_logits,
        vocab: shape[1],
    }
}

/// Largest absolute difference; panics on a length mismatch or a NaN.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            assert!(
                x.is_finite() && y.is_finite(),
                "non-finite value {x} vs {y}"
            );
            (x - y).abs()
        })
        .fold(0.0, f32::max)
}

/// The random-model variants every backend is checked on: groups 1, 2 and 4, MLP, RoPE with
/// the attention gate and biases, tied embeddings with 3 layers.
pub fn model_variants() -> Vec<(&'static str, RandomSpec)> {
    let base = RandomSpec::default();
    vec![
        ("groups2", base.clone()),
        (
            "groups1-mlp",
            RandomSpec {
                groups: 1,
                mlp: 48,
                ..base.clone()
            },
        ),
        (
            "rope-gate-bias",
            RandomSpec {
                rope_theta: Some(100.0),
                attention_gate: true,
                bias: true,
                ..base.clone()
            },
        ),
        (
            "tied-3layers-g4",
            RandomSpec {
                tied: true,
                layers: 3,
                groups: 4,
                ..base
            },
        ),
    ]
}

/// A fresh, empty temporary directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("transmamba-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A small random model with an MLP and a mixed schedule (one layer converts at 3, one stays
/// attention): the loading tests' subject.
pub fn mlp_model(seed: u64) -> transmamba::Model {
    random_model(
        &RandomSpec {
            mlp: 16,
            transpoints: vec![transmamba::TransPoint::At(3), transmamba::TransPoint::Never],
            ..RandomSpec::default()
        },
        seed,
    )
}

/// Writes `model`'s tensors (f32) into `dir` as two shards named `files`, split at the middle of
/// the sorted tensor names, and returns the index's `weight_map` (tensor name -> file).
pub fn write_two_shards(
    model: &transmamba::Model,
    dir: &Path,
    files: [&str; 2],
) -> serde_json::Map<String, serde_json::Value> {
    let bytes = safetensors_bytes(model, StoreAs::F32, None).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    let (a, b) = names.split_at(names.len() / 2);
    let mut weight_map = serde_json::Map::new();
    for (file, part) in [(files[0], a), (files[1], b)] {
        let views: Vec<_> = part
            .iter()
            .map(|n| (n.clone(), st.tensor(n).unwrap()))
            .collect();
        std::fs::write(dir.join(file), safetensors::serialize(views, None).unwrap()).unwrap();
        for n in part {
            weight_map.insert(n.clone(), file.into());
        }
    }
    weight_map
}

/// Prefill of `prompt` tokens in a fresh GPU session, then one decode step per remaining token:
/// the logits of every token (`[T, V]`).
pub fn gpu_prefill_then_decode(
    gm: &transmamba::engine::GpuModel,
    sched: &transmamba::Schedule,
    tokens: &[u32],
    prompt: usize,
) -> Vec<f32> {
    use transmamba::Logits;
    let mut s = transmamba::engine::GpuSession::new(gm, sched.clone()).unwrap();
    let mut out = s.forward_blocking(&tokens[..prompt], Logits::All).unwrap();
    for &t in &tokens[prompt..] {
        out.extend(s.forward_blocking(&[t], Logits::Last).unwrap());
    }
    out
}

/// `model` with the matrices f16 weight storage rounds (embedding, output, in/out projections,
/// MLP) rounded to f16 and kept in f32: what an engine storing them in f16 computes.
pub fn with_f16_matrices(model: &transmamba::Model) -> transmamba::Model {
    with_stored_matrices(model, transmamba::WeightFormat::F16)
}

/// `model` with its large matrices (embedding, output, in/out projections, MLP) as `format`
/// stores them, kept in f32: rounded to f16, or quantized and dequantized (q8_0 / q4_0, exact
/// in f32). What an engine storing them in `format` computes.
pub fn with_stored_matrices(
    model: &transmamba::Model,
    format: transmamba::WeightFormat,
) -> transmamba::Model {
    let store = |t: &mut transmamba::model::Tensor| match format.quant() {
        Some(q) => {
            // The f32 values beside the blocks: the oracle reads `data`.
            let blocks =
                transmamba::model::Tensor::from_blocks((*t.quantized("m", q).unwrap()).clone());
            *t = transmamba::model::Tensor {
                data: blocks.values().into_owned(),
                ..blocks
            }
        }
        None if format == transmamba::WeightFormat::F16 => {
            for v in &mut t.data {
                *v = half::f16::from_f32(*v).to_f32();
            }
        }
        None => {}
    };
    map_matrices(model, store)
}

/// `model` with `f` applied to each large matrix (embedding, output, in/out projections, MLP).
pub fn map_matrices(
    model: &transmamba::Model,
    f: impl Fn(&mut transmamba::model::Tensor),
) -> transmamba::Model {
    let mut m = model.clone();
    f(&mut m.embedding);
    if let Some(h) = &mut m.lm_head {
        f(h);
    }
    for l in &mut m.layers {
        f(&mut l.in_proj);
        f(&mut l.out_proj);
        if let Some(mlp) = &mut l.mlp {
            f(&mut mlp.fc1);
            f(&mut mlp.fc2);
        }
    }
    m
}

/// [`model_variants`] whose every product has K a multiple of 32 (what q8_0 / q4_0 take).
pub fn quantizable_variants() -> Vec<(&'static str, RandomSpec)> {
    model_variants()
        .into_iter()
        .map(|(name, mut spec)| {
            if spec.mlp > 0 {
                spec.mlp = spec.mlp.div_ceil(32) * 32;
            }
            (name, spec)
        })
        .collect()
}

//! Quantized weights (q8_0, q4_0) on the GPU engine, for every kernel set lavapipe can run
//! (its default subgroup kernels and the portable ones), against the CPU engine on the same
//! blocks: prefill (tiled products), decode (matvec), the embedding lookup, split matrices,
//! real head sizes; and the files that hold them.

use std::sync::Arc;

use transmamba::cpu::{CpuSession, WeightCopies};
use transmamba::engine::{EngineOptions, GpuModel, GpuSession};
use transmamba::gpu::{GpuContext, GpuOptions, KernelChoice};
use transmamba::schedule::TransPoint::At;
use transmamba::{Logits, Model, Schedule, WeightFormat};
use transmamba_tests::*;

const TOL: f32 = 1e-4;
const QUANT: [WeightFormat; 2] = [WeightFormat::Q8_0, WeightFormat::Q4_0];

fn contexts() -> Vec<(&'static str, Arc<GpuContext>)> {
    let portable = GpuContext::new_blocking(GpuOptions {
        kernels: KernelChoice::Portable,
        ..GpuOptions::default()
    })
    .unwrap();
    vec![("default", gpu_context()), ("portable", Arc::new(portable))]
}

fn cpu_logits(model: &Model, format: WeightFormat, sched: &Schedule, tokens: &[u32]) -> Vec<f32> {
    let copies = WeightCopies::new(model, format).unwrap();
    CpuSession::with_weights(model, &copies, sched.clone())
        .unwrap()
        .forward(tokens, Logits::All)
        .unwrap()
}

/// Prefill of `prompt` tokens, then one decode step per remaining token: all logits.
fn gpu_prefill_then_decode(
    gm: &GpuModel,
    sched: &Schedule,
    tokens: &[u32],
    prompt: usize,
) -> Vec<f32> {
    let mut s = GpuSession::new(gm, sched.clone()).unwrap();
    let mut out = s.forward_blocking(&tokens[..prompt], Logits::All).unwrap();
    for &t in &tokens[prompt..] {
        out.extend(s.forward_blocking(&[t], Logits::Last).unwrap());
    }
    out
}

#[test]
fn quantized_gpu_engine_equals_the_cpu_engine_on_the_same_blocks() {
    let mut variants = quantizable_variants();
    variants.push((
        "wide-p64-n128",
        RandomSpec {
            d: 64,
            heads: 2,
            head_dim: 64,
            state: 128,
            groups: 1,
            mlp: 96,
            ..RandomSpec::default()
        },
    ));
    for (kernels, ctx) in contexts() {
        for format in QUANT {
            for (name, spec) in &variants {
                let model = random_model(spec, 31);
                let tokens = random_tokens(spec.vocab, 30, 5);
                let sched = Schedule(vec![At(9); spec.layers]);
                let want = cpu_logits(&model, format, &sched, &tokens);
                let scale = want.iter().fold(1f32, |m, x| m.max(x.abs()));
                let tol = TOL.max(2e-6 * scale);
                let opts = EngineOptions {
                    chunk_size: 8,
                    weights: format,
                    ..EngineOptions::default()
                };
                let gm = GpuModel::new(ctx.clone(), &model, opts).unwrap();
                assert_eq!(gm.options.weights, format);
                // 30 rows of prefill (tiled products), then 12 → 30 decode steps (matvec).
                let got = GpuSession::new(&gm, sched.clone())
                    .unwrap()
                    .forward_blocking(&tokens, Logits::All)
                    .unwrap();
                let err = max_abs_diff(&got, &want);
                assert!(
                    err < tol,
                    "{kernels} {format:?} {name}: prefill |Δ| = {err}"
                );
                let got = gpu_prefill_then_decode(&gm, &sched, &tokens, 12);
                let err = max_abs_diff(&got, &want);
                assert!(err < tol, "{kernels} {format:?} {name}: decode |Δ| = {err}");
            }
        }
    }
}

#[test]
fn quantized_matrices_larger_than_the_binding_limit_are_split() {
    let small = Arc::new(
        GpuContext::new_blocking(GpuOptions {
            max_binding_size: Some(1024),
            ..GpuOptions::default()
        })
        .unwrap(),
    );
    // vocab 200 × d 32: one q8_0 row is one superblock of 9 texels (144 B): 7 rows a block.
    let spec = RandomSpec {
        vocab: 200,
        tied: true,
        ..RandomSpec::default()
    };
    let model = random_model(&spec, 9);
    let tokens = random_tokens(spec.vocab, 12, 2);
    let sched = Schedule(vec![At(5), At(0)]);
    for format in QUANT {
        let opts = EngineOptions {
            weights: format,
            ..EngineOptions::default()
        };
        let gm = GpuModel::new(small.clone(), &model, opts).unwrap();
        let want = cpu_logits(&model, format, &sched, &tokens);
        let got = gpu_prefill_then_decode(&gm, &sched, &tokens, 6);
        let err = max_abs_diff(&got, &want);
        assert!(err < TOL, "{format:?}: |Δ| = {err}");
    }
}

#[test]
fn ragged_rows_are_refused_with_a_clear_error() {
    let model = random_model(
        &RandomSpec {
            mlp: 48,
            ..RandomSpec::default()
        },
        3,
    );
    let opts = EngineOptions {
        weights: WeightFormat::Q8_0,
        ..EngineOptions::default()
    };
    let e = GpuModel::new(gpu_context(), &model, opts)
        .err()
        .expect("K = 48 is refused")
        .to_string();
    assert!(e.contains("fc") && e.contains("multiple of 32"), "{e}");
}

//! The GPU engine (on lavapipe in CI) against the CPU reference: random models and TransPoint
//! schedules, chunk sizes, decode vs prefill, split weights, the golden cases, bad input.
//! No adapter is a failure, never a skip.

use std::sync::Arc;

use transmamba::cpu::CpuSession;
use transmamba::engine::{EngineOptions, GpuModel, GpuSession};
use transmamba::gpu::{GpuContext, GpuOptions, KernelChoice};
use transmamba::schedule::TransPoint::{self, At, Never};
use transmamba::{Error, Logits, Model, Schedule, ScheduleSpec};
use transmamba_tests::*;

const TOL: f32 = 1e-4;

fn ctx() -> Arc<GpuContext> {
    gpu_context()
}

fn gpu_model(model: &Model, chunk: u32) -> GpuModel {
    let opts = EngineOptions {
        chunk_size: chunk,
        ..EngineOptions::default()
    };
    GpuModel::new(ctx(), model, opts).unwrap()
}

fn cpu_logits(model: &Model, sched: &Schedule, tokens: &[u32]) -> Vec<f32> {
    CpuSession::new(model, sched.clone())
        .unwrap()
        .forward(tokens, Logits::All)
        .unwrap()
}

/// One forward over `tokens` in a fresh session.
fn gpu_forward(gm: &GpuModel, sched: &Schedule, tokens: &[u32], which: Logits) -> Vec<f32> {
    GpuSession::new(gm, sched.clone())
        .unwrap()
        .forward_blocking(tokens, which)
        .unwrap()
}

fn schedules(layers: usize, prompt: usize) -> Vec<Vec<TransPoint>> {
    vec![
        vec![At(0); layers],
        vec![Never; layers],
        vec![At(prompt / 2); layers],
        vec![At(prompt + 5); layers],
        (0..layers)
            .map(|i| [At(3), Never, At(prompt + 2), At(0)][i % 4])
            .collect(),
    ]
}

#[test]
fn gpu_matches_cpu_over_models_schedules_and_chunk_sizes() {
    for (name, spec) in model_variants() {
        let model = random_model(&spec, 21);
        let tokens = random_tokens(spec.vocab, 37, 4);
        for chunk in [1, 8, 64] {
            let gm = gpu_model(&model, chunk);
            for tps in schedules(spec.layers, tokens.len()) {
                let sched = Schedule(tps.clone());
                let want = cpu_logits(&model, &sched, &tokens);
                let got = gpu_forward(&gm, &sched, &tokens, Logits::All);
                let err = max_abs_diff(&got, &want);
                assert!(err < TOL, "{name} chunk {chunk} {tps:?}: |Δ| = {err}");
            }
        }
    }
}

/// Every kernel plan forced on lavapipe (`gpu` with subgroups of 8 and without subgroups,
/// `portable`: no subgroups, no shader-f16, the browsers' floor): prefill over models,
/// schedules and chunk sizes, and prefill then decode (the fused decode products included),
/// against the CPU; real head sizes (P 64, N 128) included, with f32's relative bound for their
/// larger logits.
#[test]
fn every_kernel_plan_matches_cpu() {
    let (_, pctx) = &forced_plan_contexts()[2];
    assert!(!pctx.has_subgroups() && !pctx.has_f16());
    assert_eq!(pctx.kernels(), "portable");
    if ctx().caps().lavapipe_like() {
        assert_eq!(ctx().kernels(), "cpu-adapter", "lavapipe's default");
    }
    let mut variants = model_variants();
    variants.push((
        "wide-p64-n128",
        RandomSpec {
            d: 64,
            heads: 2,
            head_dim: 64,
            state: 128,
            groups: 1,
            ..RandomSpec::default()
        },
    ));
    for (plan, pctx) in forced_plan_contexts() {
        for (name, spec) in &variants {
            let model = random_model(spec, 23);
            let tokens = random_tokens(spec.vocab, 30, 5);
            for chunk in [1, 8] {
                let opts = EngineOptions {
                    chunk_size: chunk,
                    ..EngineOptions::default()
                };
                let gm = GpuModel::new(pctx.clone(), &model, opts).unwrap();
                for tps in schedules(spec.layers, 12) {
                    let sched = Schedule(tps.clone());
                    let want = cpu_logits(&model, &sched, &tokens);
                    let scale = want.iter().fold(1f32, |m, x| m.max(x.abs()));
                    let tol = TOL.max(2e-6 * scale);
                    let got = gpu_forward(&gm, &sched, &tokens, Logits::All);
                    let err = max_abs_diff(&got, &want);
                    assert!(
                        err < tol,
                        "{plan} {name} chunk {chunk} {tps:?}: prefill |Δ| = {err}"
                    );
                    let got = gpu_prefill_then_decode(&gm, &sched, &tokens, 12);
                    let err = max_abs_diff(&got, &want);
                    assert!(
                        err < tol,
                        "{plan} {name} chunk {chunk} {tps:?}: decode |Δ| = {err}"
                    );
                }
            }
        }
    }
}

#[test]
fn gpu_decode_equals_cpu_prefill() {
    for (name, spec) in model_variants() {
        let model = random_model(&spec, 33);
        let tokens = random_tokens(spec.vocab, 26, 8);
        let prompt = 10;
        let gm = gpu_model(&model, 8);
        for tps in schedules(spec.layers, prompt) {
            let sched = Schedule(tps.clone());
            let want = cpu_logits(&model, &sched, &tokens);
            let got = gpu_prefill_then_decode(&gm, &sched, &tokens, prompt);
            let err = max_abs_diff(&got, &want);
            assert!(err < TOL, "{name} {tps:?}: decode |Δ| = {err}");
        }
    }
}

/// Decode with the norms, conv step and gate as dispatches of their own (`fused_decode: false`,
/// no folded weights) equals the CPU too: the A/B switch of `tm-run bench --unfused-decode`.
#[test]
fn unfused_decode_equals_cpu_prefill() {
    for (name, spec) in model_variants() {
        let model = random_model(&spec, 34);
        let tokens = random_tokens(spec.vocab, 20, 9);
        let opts = EngineOptions {
            chunk_size: 8,
            fused_decode: false,
            ..EngineOptions::default()
        };
        let gm = GpuModel::new(ctx(), &model, opts).unwrap();
        let sched = Schedule(vec![At(4); spec.layers]);
        let want = cpu_logits(&model, &sched, &tokens);
        let got = gpu_prefill_then_decode(&gm, &sched, &tokens, 8);
        let err = max_abs_diff(&got, &want);
        assert!(err < TOL, "{name}: unfused decode |Δ| = {err}");
    }
}

#[test]
fn prefill_after_decode_continues_the_sequence() {
    // Prompt, decode tokens (the SSM state moves into its texture pair), a multi-token piece
    // (back into its buffer for the chunked scan), decode again: the logits of one CPU pass.
    let cuts = [0, 6, 7, 8, 15, 16, 17, 24];
    for (name, spec) in model_variants() {
        let model = random_model(&spec, 35);
        let tokens = random_tokens(spec.vocab, 24, 9);
        let gm = gpu_model(&model, 4);
        for tps in schedules(spec.layers, 6) {
            let sched = Schedule(tps.clone());
            let want = cpu_logits(&model, &sched, &tokens);
            let mut s = GpuSession::new(&gm, sched).unwrap();
            let mut got = Vec::new();
            for w in cuts.windows(2) {
                let piece = &tokens[w[0]..w[1]];
                got.extend(s.forward_blocking(piece, Logits::All).unwrap());
            }
            let err = max_abs_diff(&got, &want);
            assert!(err < TOL, "{name} {tps:?}: |Δ| = {err}");
        }
    }
}

#[test]
fn long_prompt_runs_in_pieces() {
    // max_rows 16 forces 100 tokens through 7 submissions, crossing TransPoints mid-piece.
    let spec = RandomSpec {
        rope_theta: Some(1000.0),
        ..RandomSpec::default()
    };
    let model = random_model(&spec, 5);
    let tokens = random_tokens(spec.vocab, 100, 1);
    let sched = Schedule(vec![At(41), Never]);
    let opts = EngineOptions {
        chunk_size: 8,
        max_rows: 16,
        ..EngineOptions::default()
    };
    let gm = GpuModel::new(ctx(), &model, opts).unwrap();
    let got = gpu_forward(&gm, &sched, &tokens, Logits::All);
    let err = max_abs_diff(&got, &cpu_logits(&model, &sched, &tokens));
    assert!(err < TOL, "|Δ| = {err}");
    let last = gpu_forward(&gm, &sched, &tokens, Logits::Last);
    assert_eq!(last.len(), spec.vocab);
    assert!(max_abs_diff(&last, &got[99 * spec.vocab..]) < 1e-5);
}

/// The model with every matrix the GPU stores as a texture rounded to f16.
/// f16 weight storage (rgba16float textures, f32 compute) computes the model whose matrices are
/// rounded to f16: the same bound as f32 against the CPU on those weights; and against the
/// unrounded model it stays within the looser bound the f16 path is held to.
#[test]
fn f16_weights_compute_the_f16_rounded_model() {
    for (name, spec) in model_variants() {
        let model = random_model(&spec, 21);
        let rounded = with_f16_matrices(&model);
        let tokens = random_tokens(spec.vocab, 29, 4);
        let sched = Schedule(vec![At(11); spec.layers]);
        let want = cpu_logits(&rounded, &sched, &tokens);
        let unrounded = cpu_logits(&model, &sched, &tokens);
        for (plan, c) in plan_contexts() {
            let opts = EngineOptions {
                chunk_size: 8,
                weights: transmamba::gpu::WeightFormat::F16,
                ..EngineOptions::default()
            };
            let gm = GpuModel::new(c, &model, opts).unwrap();
            let got = gpu_forward(&gm, &sched, &tokens, Logits::All);
            let err = max_abs_diff(&got, &want);
            assert!(err < TOL, "{plan} {name}: |Δ| vs f16-rounded CPU = {err}");
            let loose = max_abs_diff(&got, &unrounded);
            assert!(loose < 2e-2, "{plan} {name}: |Δ| vs f32 CPU = {loose}");
            let decoded = gpu_prefill_then_decode(&gm, &sched, &tokens, 9);
            let err = max_abs_diff(&decoded, &want);
            assert!(err < TOL, "{plan} {name}: decode |Δ| = {err}");
        }
    }
}

#[test]
fn weights_larger_than_the_binding_limit_are_split() {
    for (kernels, without_subgroups) in [
        (KernelChoice::Auto, false),
        (KernelChoice::Gpu, false),
        (KernelChoice::Gpu, true),
        (KernelChoice::Portable, false),
    ] {
        let small = Arc::new(
            GpuContext::new_blocking(GpuOptions {
                max_binding_size: Some(4096),
                kernels,
                without_subgroups,
                ..GpuOptions::default()
            })
            .expect("adapter"),
        );
        let plan = small.kernels();
        // vocab 200 × d 32 × 4 B = 25 KiB per output matrix: split into 7 blocks of 4 KiB.
        let spec = RandomSpec {
            vocab: 200,
            tied: true,
            ..RandomSpec::default()
        };
        let model = random_model(&spec, 9);
        let tokens = random_tokens(spec.vocab, 12, 2);
        let sched = Schedule(vec![At(5), At(0)]);
        let gm = GpuModel::new(
            small,
            &model,
            EngineOptions {
                chunk_size: 4,
                max_rows: 64,
                ..EngineOptions::default()
            },
        )
        .unwrap();
        let got = gpu_forward(&gm, &sched, &tokens, Logits::All);
        let want = cpu_logits(&model, &sched, &tokens);
        let err = max_abs_diff(&got, &want);
        assert!(err < TOL, "{plan}: |Δ| = {err}");
        let got = gpu_prefill_then_decode(&gm, &sched, &tokens, 5);
        let err = max_abs_diff(&got, &want);
        assert!(err < TOL, "{plan}: decode |Δ| = {err}");
    }
}

#[test]
fn golden_cases_on_the_gpu() {
    for case in golden_cases() {
        let model = Model::load(&case.dir).unwrap();
        let sched = ScheduleSpec::Config
            .resolve(&model.config.transpoints)
            .unwrap();
        for (plan, c) in plan_contexts() {
            let opts = EngineOptions {
                chunk_size: model.config.chunk_size as u32,
                ..EngineOptions::default()
            };
            let gm = GpuModel::new(c, &model, opts).unwrap();
            let got = gpu_forward(&gm, &sched, &case.tokens, Logits::All);
            let err = max_abs_diff(&got, &case.logits);
            assert!(err < TOL, "{plan} {}: forward |Δ| = {err}", case.name);
            let got = gpu_prefill_then_decode(&gm, &sched, &case.tokens, case.prefill_len);
            let err = max_abs_diff(&got, &case.decode_logits);
            assert!(err < TOL, "{plan} {}: decode |Δ| = {err}", case.name);
        }
    }
}

#[test]
fn cache_is_freed_on_the_gpu_too() {
    let spec = RandomSpec::default();
    let model = random_model(&spec, 3);
    let gm = gpu_model(&model, 8);
    let sched = Schedule(vec![At(6), Never]);
    let mut g = GpuSession::new(&gm, sched.clone()).unwrap();
    let mut c = CpuSession::new(&model, sched).unwrap();
    let tokens = random_tokens(spec.vocab, 14, 3);
    g.forward_blocking(&tokens[..4], Logits::Last).unwrap();
    c.forward(&tokens[..4], Logits::Last).unwrap();
    for &t in &tokens[4..] {
        g.forward_blocking(&[t], Logits::Last).unwrap();
        c.forward(&[t], Logits::Last).unwrap();
        assert_eq!(g.layer_states(), c.layer_states());
        assert_eq!(g.cache_bytes(), c.cache_bytes());
    }
    assert_eq!(g.layer_states(), vec![(0, true), (14, false)]);
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let spec = RandomSpec::default();
    let model = random_model(&spec, 3);
    let gm = gpu_model(&model, 8);
    let mut s = GpuSession::new(&gm, Schedule(vec![At(0), Never])).unwrap();
    assert!(matches!(
        s.forward_blocking(&[1, 2, 64], Logits::All),
        Err(Error::TokenOutOfRange {
            token: 64,
            position: 2,
            ..
        })
    ));
    assert!(matches!(
        s.forward_blocking(&[], Logits::All),
        Err(Error::EmptyTokens)
    ));
    assert!(matches!(
        GpuSession::new(&gm, Schedule(vec![At(0)])),
        Err(Error::ScheduleLength { got: 1, layers: 2 })
    ));
    // The session is still usable afterwards.
    assert_eq!(
        s.forward_blocking(&[1, 2], Logits::Last).unwrap().len(),
        spec.vocab
    );
}

//! The CPU backend against an independent f64 evaluation of MODEL.md, over random models and
//! TransPoint schedules, and decode against prefill.

use transmamba::cpu::{CpuSession, KernelTier, WeightCopies};
use transmamba::schedule::TransPoint::{self, At, Never};
use transmamba::{Logits, Schedule, WeightFormat};
use transmamba_tests::reference64::forward_f64;
use transmamba_tests::{
    max_abs_diff, model_variants, quantizable_variants, random_model, random_tokens,
    with_stored_matrices, RandomSpec,
};

const TOL: f32 = 1e-4;

fn schedules(layers: usize, prompt: usize) -> Vec<Vec<TransPoint>> {
    let mut out = vec![
        vec![At(0); layers],          // pure SSM
        vec![Never; layers],          // pure attention
        vec![At(prompt / 2); layers], // inside the prompt
        vec![At(prompt); layers],     // exactly at its end
        vec![At(prompt + 3); layers], // crossed during decode
    ];
    out.push(
        (0..layers)
            .map(|i| [At(1), Never, At(5), At(0)][i % 4])
            .collect(),
    );
    out
}

#[test]
fn cpu_matches_f64_spec_for_every_schedule() {
    for (name, spec) in model_variants() {
        let model = random_model(&spec, 7);
        let tokens = random_tokens(spec.vocab, 19, 3);
        for tps in schedules(spec.layers, tokens.len()) {
            let schedule = Schedule(tps.clone());
            let want = forward_f64(&model, &schedule, &tokens);
            let want: Vec<f32> = want.iter().map(|&v| v as f32).collect();
            let mut s = CpuSession::new(&model, schedule).unwrap();
            let got = s.forward(&tokens, Logits::All).unwrap();
            let err = max_abs_diff(&got, &want);
            assert!(err < TOL, "{name} {tps:?}: |Δ| = {err}");
        }
    }
}

#[test]
fn decode_equals_prefill_token_for_token() {
    for (name, spec) in model_variants() {
        let model = random_model(&spec, 11);
        let tokens = random_tokens(spec.vocab, 24, 5);
        let prompt = 9;
        for tps in schedules(spec.layers, prompt) {
            let schedule = Schedule(tps.clone());
            let mut full = CpuSession::new(&model, schedule.clone()).unwrap();
            let want = full.forward(&tokens, Logits::All).unwrap();
            let mut s = CpuSession::new(&model, schedule).unwrap();
            let mut got = s.forward(&tokens[..prompt], Logits::All).unwrap();
            for &t in &tokens[prompt..] {
                got.extend(s.forward(&[t], Logits::Last).unwrap());
            }
            let err = max_abs_diff(&got, &want);
            assert!(err < TOL, "{name} {tps:?}: decode vs prefill |Δ| = {err}");
        }
    }
}

#[test]
fn chunked_prefill_equals_one_prefill() {
    let spec = RandomSpec {
        rope_theta: Some(50.0),
        ..RandomSpec::default()
    };
    let model = random_model(&spec, 2);
    let tokens = random_tokens(spec.vocab, 30, 9);
    let schedule = Schedule(vec![At(12), At(20)]);
    let want = CpuSession::new(&model, schedule.clone())
        .unwrap()
        .forward(&tokens, Logits::All)
        .unwrap();
    let mut s = CpuSession::new(&model, schedule).unwrap();
    let mut got = Vec::new();
    for piece in [&tokens[..5], &tokens[5..16], &tokens[16..]] {
        got.extend(s.forward(piece, Logits::All).unwrap());
    }
    assert!(max_abs_diff(&got, &want) < TOL);
}

#[test]
fn cache_is_freed_at_the_transpoint_and_stays_flat() {
    let spec = RandomSpec::default();
    let model = random_model(&spec, 1);
    let tau = 6;
    let mut s = CpuSession::new(&model, Schedule(vec![At(tau), Never])).unwrap();
    s.forward(&random_tokens(spec.vocab, 4, 1), Logits::Last)
        .unwrap();
    assert_eq!(s.layer_states(), vec![(4, false), (4, false)]);
    let mut sizes = Vec::new();
    for t in random_tokens(spec.vocab, 10, 2) {
        s.forward(&[t], Logits::Last).unwrap();
        sizes.push(s.cache_bytes());
    }
    // Layer 0 crossed its TransPoint: cache freed, SSM state present; layer 1 never switches.
    assert_eq!(s.layer_states(), vec![(0, true), (14, false)]);
    let per_token = 4 * (spec.groups * spec.state + spec.heads * spec.head_dim + spec.heads);
    // After the switch the only growth is layer 1's attention cache.
    for w in sizes[tau - 3..].windows(2) {
        assert_eq!(w[1] - w[0], per_token);
    }
    assert_eq!(
        s.cache_bytes(),
        transmamba::memory::cache_bytes(&model.config, &Schedule(vec![At(tau), Never]), 14)
    );
}

/// The f64 oracle's logits as f32, and the bound they are held to: 1e-4, or f32's relative
/// bound (2e-6 of the largest logit) for wide random models whose logits reach the hundreds.
fn oracle(model: &transmamba::Model, schedule: &Schedule, tokens: &[u32]) -> (Vec<f32>, f32) {
    let want: Vec<f32> = forward_f64(model, schedule, tokens)
        .iter()
        .map(|&v| v as f32)
        .collect();
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    (want, TOL.max(2e-6 * scale))
}

/// Prefill `tokens[..prompt]` in one call (the GEMM path), then decode the rest one token at a
/// time (the matrix-vector path); every row's logits.
fn prefill_then_decode(mut s: CpuSession<'_>, tokens: &[u32], prompt: usize) -> Vec<f32> {
    let mut got = s.forward(&tokens[..prompt], Logits::All).unwrap();
    for &t in &tokens[prompt..] {
        got.extend(s.forward(&[t], Logits::Last).unwrap());
    }
    got
}

/// The engine moves each forward pass onto a worker of rayon's pool (one hand-over a call, not
/// one per parallel region) and runs in place when called from a worker already: both compute
/// the model (against the f64 oracle; not bit for bit, since other tests here switch the
/// process-wide kernel choice while this one runs).
#[test]
fn forward_on_and_off_the_thread_pool_computes_the_model() {
    let spec = RandomSpec {
        vocab: 96,
        d: 128,
        heads: 4,
        head_dim: 64,
        state: 64,
        groups: 1,
        ..RandomSpec::default()
    };
    let model = random_model(&spec, 31);
    let tokens = random_tokens(spec.vocab, 24, 2);
    let schedule = Schedule(vec![At(10); spec.layers]);
    let (want, tol) = oracle(&model, &schedule, &tokens);
    let run = || {
        let s = CpuSession::new(&model, schedule.clone()).unwrap();
        prefill_then_decode(s, &tokens, 16)
    };
    let on_pool = rayon::scope(|_| {
        assert!(rayon::current_thread_index().is_some());
        run()
    });
    for (place, got) in [("off the pool", run()), ("on the pool", on_pool)] {
        assert_eq!(got.len(), want.len());
        let err = max_abs_diff(&got, &want);
        assert!(err < tol, "{place}: |Δ| = {err} (bound {tol})");
    }
}

/// While a forward pass runs, the pool's other workers poll for its jobs rather than sleep; a
/// poller that lands on a thread busy with another forward gives that thread back once idle
/// (two forwards whose pollers each sat on the other's thread would otherwise wait forever).
/// Eight forwards at once from threads outside the pool (more than its workers here) all finish
/// and all compute the model; a watchdog turns a hang into a failure. (That interleaving is
/// rare: with the pollers unbounded this test still passed in the runs tried, so it guards
/// the common paths, not that one.)
#[test]
fn concurrent_forwards_off_the_pool_all_finish_and_compute_the_model() {
    let spec = RandomSpec {
        // Products wide enough to split across the pool (the LM head's 4096 rows).
        vocab: 4096,
        d: 256,
        heads: 8,
        head_dim: 64,
        state: 64,
        groups: 1,
        ..RandomSpec::default()
    };
    let model = std::sync::Arc::new(random_model(&spec, 37));
    let tokens = random_tokens(spec.vocab, 24, 3);
    let schedule = Schedule(vec![At(10); spec.layers]);
    let (want, tol) = oracle(&model, &schedule, &tokens);
    let (tx, rx) = std::sync::mpsc::channel();
    for i in 0..8 {
        let (model, tokens, schedule, tx) =
            (model.clone(), tokens.clone(), schedule.clone(), tx.clone());
        std::thread::spawn(move || {
            let mut got = Vec::new();
            for _ in 0..3 {
                let s = CpuSession::new(&model, schedule.clone()).unwrap();
                got = prefill_then_decode(s, &tokens, 16);
            }
            tx.send((i, got)).unwrap();
        });
    }
    for _ in 0..8 {
        let (i, got) = rx
            .recv_timeout(std::time::Duration::from_secs(120))
            .expect("a forward pass did not finish within 120 s: the pool deadlocked");
        assert_eq!(got.len(), want.len());
        let err = max_abs_diff(&got, &want);
        assert!(err < tol, "thread {i}: |Δ| = {err} (bound {tol})");
    }
}

/// Held by the tests that set the process-wide kernel tier (`limit_kernels`), so one's
/// portable pass is not run on another's AVX-512 setting.
static TIER: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Real-model head sizes (P 64, N 128, and a ragged N of 40 = 32 + 8; then P 6, N 20: the scan's
/// four-row passes plus two single rows, a masked or scalar row end) over a prompt long enough
/// for the packed GEMM (rows >= 8) with output blocks on several threads, then decode steps
/// (the matrix-vector path) across the TransPoint, on every kernel tier (`limit_kernels`: the
/// scan's AVX-512, AVX2/FMA and portable forms) against the f64 oracle. Wide random models give logits
/// in the hundreds: the bound is f32's relative one (2e-6 of the largest logit), at least 1e-4.
#[test]
fn cpu_engine_at_real_head_sizes_matches_f64() {
    for (head_dim, state, groups) in [(64, 128, 1), (64, 40, 2), (6, 20, 2)] {
        let spec = RandomSpec {
            vocab: 96,
            d: 128,
            heads: 4,
            head_dim,
            state,
            groups,
            ..RandomSpec::default()
        };
        let model = random_model(&spec, 21);
        let tokens = random_tokens(spec.vocab, 75, 4);
        let prompt = 70;
        for tps in [vec![At(0), At(0)], vec![At(33), At(72)], vec![Never, At(0)]] {
            let schedule = Schedule(tps.clone());
            let (want, tol) = oracle(&model, &schedule, &tokens);
            let _tier = TIER.lock().unwrap_or_else(|e| e.into_inner());
            for tier in KernelTier::ALL {
                transmamba::cpu::limit_kernels(tier);
                let s = CpuSession::new(&model, schedule.clone()).unwrap();
                let got = prefill_then_decode(s, &tokens, prompt);
                transmamba::cpu::limit_kernels(KernelTier::Avx512);
                let err = max_abs_diff(&got, &want);
                assert!(
                    err < tol,
                    "P {head_dim} N {state} G {groups} {tps:?} {tier:?}: |Δ| = {err} (bound {tol})"
                );
            }
        }
    }
}

/// f16 weight storage (products widen f16 as they read) computes the model whose matrices are
/// rounded to f16, within the f32 bound of the f64 oracle on those weights: every model variant
/// (MLP, tied output, biases, RoPE) and real head sizes, prefill (the GEMM path) then decode (the
/// matrix-vector path) across the TransPoint, on every kernel tier (AVX-512, AVX2/F16C,
/// portable). Values beyond f16's range are refused, naming the matrix.
#[test]
fn stored_weights_compute_the_model_as_stored() {
    let wide = RandomSpec {
        vocab: 96,
        d: 128,
        heads: 4,
        head_dim: 64,
        state: 128,
        groups: 1,
        mlp: 64,
        ..RandomSpec::default()
    };
    for format in [WeightFormat::F16, WeightFormat::Q8_0, WeightFormat::Q4_0] {
        let mut cases = quantizable_variants();
        cases.push(("wide-mlp", wide.clone()));
        for (name, spec) in cases {
            let model = random_model(&spec, 23);
            let stored = with_stored_matrices(&model, format);
            let tokens = random_tokens(spec.vocab, 40, 6);
            let schedule = Schedule(vec![At(30); spec.layers]);
            let (want, tol) = oracle(&stored, &schedule, &tokens);
            let _tier = TIER.lock().unwrap_or_else(|e| e.into_inner());
            for tier in KernelTier::ALL {
                transmamba::cpu::limit_kernels(tier);
                // Copies made under the tier, as an engine on such a CPU makes them (q4_0 in
                // groups of 8 rows for the x86 kernels, in rows for the portable one).
                let copies = WeightCopies::new(&model, format).unwrap();
                let s = CpuSession::with_weights(&model, &copies, schedule.clone()).unwrap();
                let got = prefill_then_decode(s, &tokens, 36);
                transmamba::cpu::limit_kernels(KernelTier::Avx512);
                let err = max_abs_diff(&got, &want);
                assert!(
                    err < tol,
                    "{format:?} {name} {tier:?}: |Δ| = {err} (bound {tol})"
                );
            }
            // The storage is not a no-op: the f32 model differs by more than the bound.
            let (plain, _) = oracle(&model, &schedule, &tokens);
            assert!(max_abs_diff(&plain, &want) > tol, "{format:?} {name}");
        }
    }
    let mut big = random_model(&RandomSpec::default(), 1);
    big.layers[1].out_proj.data[5] = 1e6;
    let e = WeightCopies::new(&big, WeightFormat::F16)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("layer 1 out_proj") && e.contains("element 5"),
        "{e}"
    );
    // Quantized rows must be a multiple of 32 long: the MLP's fc2 has K = 48 here.
    let ragged = random_model(
        &RandomSpec {
            mlp: 48,
            ..RandomSpec::default()
        },
        1,
    );
    let e = WeightCopies::new(&ragged, WeightFormat::Q4_0)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("mlp.fc2") && e.contains("q4_0") && e.contains("multiple of 32"),
        "{e}"
    );
    // Copies made for another model are refused.
    let other = random_model(
        &RandomSpec {
            layers: 3,
            ..RandomSpec::default()
        },
        1,
    );
    for format in [WeightFormat::F16, WeightFormat::Q8_0] {
        let copies = WeightCopies::new(&other, format).unwrap();
        assert!(CpuSession::with_weights(&big, &copies, Schedule(vec![At(0); 2])).is_err());
    }
}

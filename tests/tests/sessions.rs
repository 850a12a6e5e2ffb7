//! Sessions that last (core `session`): continuing, saving, restoring and forking a sequence on
//! the CPU engine and the GPU engine (lavapipe in CI), across engines, with the save point
//! before, at and after TransPoints; and state files that do not fit, refused by name.

use transmamba::cpu::{CpuSession, WeightCopies};
use transmamba::engine::EngineOptions;
use transmamba::engine_choice::{choose, EnginePreference};
use transmamba::gpu::WeightFormat;
use transmamba::model::Tensor;
use transmamba::quant::QuantFormat;
use transmamba::sampling::SamplingOptions;
use transmamba::schedule::TransPoint::{At, Never};
use transmamba::session::{fingerprint, Engine, GenerateOptions, Generator, Session};
use transmamba::synthetic::{random_model, RandomSpec};
use transmamba::text::TextCodec;
use transmamba::{Error, Logits, Model, Schedule};
use transmamba_tests::*;

const TOL: f32 = 1e-4;

fn cpu(model: &Model) -> Engine {
    let choice = choose(EnginePreference::Cpu, Err("test"));
    Engine::cpu(model.clone(), WeightFormat::F32, choice).unwrap()
}

fn gpu(model: &Model) -> Engine {
    let choice = choose(EnginePreference::Gpu, Err("test"));
    let opts = EngineOptions {
        // Chunks of 4: prefills here span several chunks and ragged tails.
        chunk_size: 4,
        ..EngineOptions::default()
    };
    Engine::on_gpu(gpu_context(), model, opts, choice).unwrap()
}

/// Two models the sessions run on: attention layers converting at 4 and 7 (and one that never
/// converts), with and without RoPE / gate / MLP.
fn models() -> Vec<(&'static str, Model)> {
    let plain = RandomSpec {
        layers: 3,
        transpoints: vec![At(4), At(7), Never],
        ..RandomSpec::default()
    };
    let rope = RandomSpec {
        rope_theta: Some(100.0),
        attention_gate: true,
        bias: true,
        mlp: 24,
        transpoints: vec![At(0), At(5)],
        ..RandomSpec::default()
    };
    vec![
        ("plain", random_model(&plain, 41)),
        ("rope-gate-mlp", random_model(&rope, 42)),
    ]
}

fn schedule(model: &Model) -> Schedule {
    Schedule(model.config.transpoints.clone())
}

fn generate(session: &mut Session, prompt: &[u32], opts: &GenerateOptions) -> Vec<u32> {
    let codec = TextCodec::Bytes;
    let mut g = Generator::new(&codec, opts).unwrap();
    g.start_blocking(session, prompt).unwrap();
    while g.next_blocking(session).unwrap().is_some() {}
    g.tokens().to_vec()
}

fn options(max_tokens: usize, seeded: bool) -> GenerateOptions {
    GenerateOptions {
        max_tokens,
        sampling: SamplingOptions {
            temperature: if seeded { 1.0 } else { 0.0 },
            seed: 5,
            ..SamplingOptions::default()
        },
        stop_tokens: Vec::new(),
    }
}

/// Generating N tokens, saving, restoring and generating M more gives the tokens of one run of
/// N + M, greedy and seeded, on each engine, with the save point before, at and after the
/// TransPoints (prompt 2: positions 2..=10 cover 4, 5 and 7).
#[test]
fn save_restore_continue_equals_one_run() {
    let prompt = [3u32, 17];
    for (name, model) in models() {
        for (engine_name, engine) in [("cpu", cpu(&model)), ("gpu", gpu(&model))] {
            for seeded in [false, true] {
                let mut whole = engine.session(schedule(&model)).unwrap();
                let want = generate(&mut whole, &prompt, &options(14, seeded));
                for n in [0usize, 1, 2, 3, 5, 8] {
                    let mut s = engine.session(schedule(&model)).unwrap();
                    let mut got = generate(&mut s, &prompt, &options(n, seeded));
                    let bytes = s.save_blocking().unwrap();
                    let mut r = engine.restore(&bytes, "state").unwrap();
                    assert_eq!(r.position(), prompt.len() + n);
                    got.extend(generate(&mut r, &[], &options(14 - n, seeded)));
                    assert_eq!(
                        got, want,
                        "{name} on {engine_name}, seeded {seeded}: saved after {n} tokens"
                    );
                }
            }
        }
    }
}

/// A generator on a session with no tokens, or started with no prompt on one, is an error.
#[test]
fn generating_from_nothing_is_an_error() {
    let (_, model) = models().remove(0);
    let codec = TextCodec::Bytes;
    for engine in [cpu(&model), gpu(&model)] {
        let mut s = engine.session(schedule(&model)).unwrap();
        let mut g = Generator::new(&codec, &options(3, false)).unwrap();
        assert!(matches!(g.next_blocking(&mut s), Err(Error::EmptyTokens)));
        assert!(matches!(
            g.start_blocking(&mut s, &[]),
            Err(Error::EmptyTokens)
        ));
        // And the session is still fine.
        g.start_blocking(&mut s, &[1, 2]).unwrap();
        assert!(g.next_blocking(&mut s).unwrap().is_some());
    }
}

/// A state saved on one engine and continued on the other (and on the same one): the logits
/// of the continuation equal those of one run on the continuing engine, for every split point.
#[test]
fn states_move_between_engines() {
    let tokens: Vec<u32> = (0..12).map(|i| (i * 7 + 3) % 64).collect();
    for (name, model) in models() {
        let engines = [("cpu", cpu(&model)), ("gpu", gpu(&model))];
        let v = model.vocab;
        for (to_name, to) in &engines {
            let full = to
                .session(schedule(&model))
                .unwrap()
                .forward_blocking(&tokens, Logits::All)
                .unwrap();
            let scale = full.iter().fold(1f32, |m, x| m.max(x.abs()));
            for (from_name, from) in &engines {
                for k in [1usize, 4, 5, 6, 7, 8, 11] {
                    let mut s = from.session(schedule(&model)).unwrap();
                    s.forward_blocking(&tokens[..k], Logits::Last).unwrap();
                    let bytes = s.save_blocking().unwrap();
                    let mut r = to.restore(&bytes, "state").unwrap();
                    let got = r.forward_blocking(&tokens[k..], Logits::All).unwrap();
                    let diff = max_abs_diff(&got, &full[k * v..]);
                    assert!(
                        diff <= TOL * scale,
                        "{name}: saved on {from_name} after {k}, continued on {to_name}: {diff}"
                    );
                    // The saved logits are the last fed position's.
                    let mut r = to.restore(&bytes, "state").unwrap();
                    let last = r.next_logits_blocking().unwrap();
                    let diff = max_abs_diff(&last, &full[(k - 1) * v..k * v]);
                    assert!(
                        diff <= TOL * scale,
                        "{name}: saved logits after {k}: {diff}"
                    );
                }
            }
        }
    }
}

/// An f16 / q8_0 / q4_0 CPU engine made from an f32 model keeps its copies only (its f32
/// matrices become the copies, shared): its logits are those of the same copies beside the
/// untouched model, and its fingerprint is the loaded model's, so states move between it and
/// the f32 engine; over every model variant (tied or not, MLP or not), from f32 matrices and
/// from q8_0 blocks (a quantized file: kept as they are for q8_0, replaced for the others).
#[test]
fn cpu_engines_on_copies_keep_the_models_fingerprint_and_logits() {
    let tokens: Vec<u32> = (0..9).map(|i| (i * 5 + 1) % 64).collect();
    for (variant, spec) in quantizable_variants() {
        let f32_model = random_model(&spec, 43);
        let q8_model = blocks_only(&f32_model, QuantFormat::Q8_0);
        for (source, model) in [("f32", f32_model), ("q8_0 blocks", q8_model)] {
            let name = format!("{variant} from {source}");
            let sched = schedule(&model);
            let f32_engine = cpu(&model);
            for format in [WeightFormat::F16, WeightFormat::Q8_0, WeightFormat::Q4_0] {
                let choice = choose(EnginePreference::Cpu, Err("test"));
                let engine = Engine::cpu(model.clone(), format, choice).unwrap();
                assert_eq!(
                    engine.fingerprint(),
                    fingerprint(&model),
                    "{name} {format:?}"
                );
                let copies = WeightCopies::new(&model, format).unwrap();
                let want = CpuSession::with_weights(&model, &copies, sched.clone())
                    .unwrap()
                    .forward(&tokens, Logits::All)
                    .unwrap();
                let mut s = engine.session(sched.clone()).unwrap();
                let got = s.forward_blocking(&tokens, Logits::All).unwrap();
                assert_eq!(got, want, "{name} {format:?}: logits");
                let bytes = s.save_blocking().unwrap();
                f32_engine.restore(&bytes, "state").unwrap();
                let mut f = f32_engine.session(sched.clone()).unwrap();
                f.forward_blocking(&tokens[..3], Logits::Last).unwrap();
                engine
                    .restore(&f.save_blocking().unwrap(), "state")
                    .unwrap();
            }
        }
    }
}

/// `model` with its large matrices held as `format` blocks only (as a quantized file loads).
fn blocks_only(model: &Model, format: QuantFormat) -> Model {
    map_matrices(model, |t: &mut Tensor| {
        *t = Tensor::from_shared_blocks(t.quantized("m", format).unwrap())
    })
}

/// A session continues across calls (what a chat's next turn does) exactly as one call, and a
/// fork continues independently of its parent.
#[test]
fn continue_and_fork() {
    let tokens: Vec<u32> = (0..11).map(|i| (i * 5 + 1) % 64).collect();
    let other: Vec<u32> = (0..5).map(|i| (i * 11 + 2) % 64).collect();
    for (name, model) in models() {
        for (engine_name, engine) in [("cpu", cpu(&model)), ("gpu", gpu(&model))] {
            let v = model.vocab;
            let fresh = |t: &[u32]| {
                engine
                    .session(schedule(&model))
                    .unwrap()
                    .forward_blocking(t, Logits::All)
                    .unwrap()
            };
            let full = fresh(&tokens);
            let scale = full.iter().fold(1f32, |m, x| m.max(x.abs()));
            let mut s = engine.session(schedule(&model)).unwrap();
            let mut got = s.forward_blocking(&tokens[..3], Logits::All).unwrap();
            got.extend(s.forward_blocking(&tokens[3..6], Logits::All).unwrap());
            // Pending tokens (as a generator leaves them) are fed with the next call.
            s.push(tokens[6]).unwrap();
            s.push(tokens[7]).unwrap();
            assert_eq!(s.position(), 8);
            let tail = s.forward_blocking(&tokens[8..], Logits::All).unwrap();
            assert!(
                max_abs_diff(&got, &full[..6 * v]) <= TOL * scale,
                "{name} {engine_name}"
            );
            assert!(
                max_abs_diff(&tail, &full[8 * v..]) <= TOL * scale,
                "{name} {engine_name}"
            );

            // Fork after 6 tokens: parent and child take different continuations.
            let mut parent = engine.session(schedule(&model)).unwrap();
            parent.forward_blocking(&tokens[..6], Logits::Last).unwrap();
            let mut child = parent.fork_blocking().unwrap();
            let a = parent.forward_blocking(&tokens[6..], Logits::All).unwrap();
            let b = child.forward_blocking(&other, Logits::All).unwrap();
            let mut branch = tokens[..6].to_vec();
            branch.extend(&other);
            let want_b = fresh(&branch);
            assert!(
                max_abs_diff(&a, &full[6 * v..]) <= TOL * scale,
                "{name} {engine_name} parent"
            );
            assert!(
                max_abs_diff(&b, &want_b[6 * v..]) <= TOL * scale,
                "{name} {engine_name} fork"
            );
        }
    }
}

/// The state's size stops growing once every layer has passed its TransPoint (Never layers
/// aside): the file after 40 tokens is the file after 9 for a schedule converting by 7.
#[test]
fn state_stops_growing_after_the_transpoints() {
    let spec = RandomSpec {
        transpoints: vec![At(4), At(7)],
        ..RandomSpec::default()
    };
    let model = random_model(&spec, 3);
    let engine = cpu(&model);
    let size_at = |n: usize| {
        let mut s = engine.session(schedule(&model)).unwrap();
        let t: Vec<u32> = (0..n as u32).map(|i| i % 64).collect();
        s.forward_blocking(&t, Logits::Last).unwrap();
        s.save_blocking().unwrap().len()
    };
    assert!(
        size_at(7) > size_at(3),
        "the attention cache grows before the TransPoints"
    );
    assert_eq!(size_at(9), size_at(40));
}

fn saved(model: &Model, n: usize) -> Vec<u8> {
    let mut s = cpu(model).session(schedule(model)).unwrap();
    let t: Vec<u32> = (0..n as u32).map(|i| (i * 3) % 64).collect();
    s.forward_blocking(&t, Logits::Last).unwrap();
    s.save_blocking().unwrap()
}

/// Replaces `from` by `to` (same length) in the file's header.
fn edit(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let at = bytes
        .windows(from.len())
        .position(|w| w == from.as_bytes())
        .unwrap_or_else(|| panic!("{from} not in the header"));
    let mut out = bytes.to_vec();
    out[at..at + to.len()].copy_from_slice(to.as_bytes());
    out
}

fn restore_err(engine: &Engine, bytes: &[u8]) -> Error {
    match engine.restore(bytes, "bad.state") {
        Ok(_) => panic!("a bad state was restored"),
        Err(e) => e,
    }
}

/// State files that do not fit the model: typed errors naming what differs, on both engines.
#[test]
fn bad_state_files_are_refused_by_name() {
    let (_, model) = models().remove(0);
    let good = saved(&model, 6);
    let mut other_weights = model.clone();
    other_weights.layers[1].d.data[0] += 1.0;
    for engine in [cpu(&model), gpu(&model)] {
        assert!(engine.restore(&good, "good").is_ok());
        // Another model: the fingerprint differs.
        let e = restore_err(&cpu(&other_weights), &good);
        assert!(
            matches!(&e, Error::StateMismatch { reason, .. } if reason.contains("another model")),
            "{e}"
        );
        // Truncated, empty, or not a state at all (a model file).
        for cut in [0, 7, 100, good.len() / 2, good.len() - 1] {
            let e = restore_err(&engine, &good[..cut]);
            assert!(matches!(e, Error::StateFile { .. }), "cut at {cut}: {e}");
        }
        // Another format version, another format name.
        let e = restore_err(
            &engine,
            &edit(&good, "\"version\":\"1\"", "\"version\":\"9\""),
        );
        assert!(e.to_string().contains("version 9"), "{e}");
        let e = restore_err(
            &engine,
            &edit(&good, "transmamba-session", "transmamba-sessioX"),
        );
        assert!(e.to_string().contains("format"), "{e}");
        // A position the tensors do not match: the caches' shapes disagree.
        let e = restore_err(
            &engine,
            &edit(&good, "\"position\":\"6\"", "\"position\":\"5\""),
        );
        assert!(matches!(e, Error::StateMismatch { .. }), "{e}");
        // Past the TransPoint at 7, where the file has the attention cache and no SSM state.
        let e = restore_err(
            &engine,
            &edit(&good, "\"position\":\"6\"", "\"position\":\"9\""),
        );
        assert!(bad_state(&e) && e.to_string().contains("layers.1"), "{e}");
        // A schedule inconsistent with the position (layer 0 would still be in attention).
        let e = restore_err(
            &engine,
            &edit(&good, "\"transpoints\":\"4,", "\"transpoints\":\"8,"),
        );
        assert!(bad_state(&e) && e.to_string().contains("layers.0"), "{e}");
        // A schedule for another number of layers.
        let e = restore_err(&engine, &edit(&good, "4,7,inf", "4,inf  "));
        assert!(!e.to_string().is_empty());
    }
    // A huge position (the never-converting layer would hold that many rows): refused from the
    // file's size before anything is allocated.
    let engine = cpu(&model);
    let mut s = engine.session(schedule(&model)).unwrap();
    s.forward_blocking(&[1, 2, 3], Logits::Last).unwrap();
    let state = s.state_blocking().unwrap();
    for position in [1usize << 40, usize::MAX] {
        let mut huge = state.clone();
        huge.position = position;
        let e = restore_err(
            &engine,
            &huge.to_bytes(engine.fingerprint(), "cpu").unwrap(),
        );
        assert!(e.to_string().contains("more than the file holds"), "{e}");
    }
    // A non-finite value in a tensor.
    let mut nan = state.clone();
    nan.layers[0].conv_state[3] = f32::NAN;
    let e = restore_err(&engine, &nan.to_bytes(engine.fingerprint(), "cpu").unwrap());
    assert!(e.to_string().contains("NaN"), "{e}");
    // The state round-trips exactly.
    let back = engine
        .restore(&state.to_bytes(engine.fingerprint(), "cpu").unwrap(), "s")
        .unwrap();
    let mut back = back;
    assert_eq!(back.state_blocking().unwrap(), state);
}

fn bad_state(e: &Error) -> bool {
    matches!(e, Error::StateFile { .. } | Error::StateMismatch { .. })
}

/// Greedy generation on the CPU engine takes its tokens through the output screen (a q8_0 copy
/// of the output matrix and a bound, `cpu/output_screen.rs`): the tokens equal the argmax of
/// every logit, step by step, for f32 and f16 output matrices (tied and untied, a wide model
/// too), the screen decides every step here, and a state saved after screened steps holds the
/// very logits of the full product.
#[test]
fn greedy_tokens_through_the_output_screen_equal_the_full_argmax() {
    let wide = RandomSpec {
        vocab: 2000,
        d: 96,
        heads: 4,
        head_dim: 24,
        state: 16,
        tied: true,
        transpoints: vec![At(3), Never],
        ..RandomSpec::default()
    };
    let mut cases: Vec<(&str, Model)> = models();
    cases.push(("wide-tied", random_model(&wide, 43)));
    for (name, model) in cases {
        for format in [WeightFormat::F32, WeightFormat::F16] {
            let choice = choose(EnginePreference::Cpu, Err("test"));
            let engine = Engine::cpu(model.clone(), format, choice).unwrap();
            assert!(engine.screen_bytes() > 0, "{name} {format:?}: a screen");
            let prompt = [5u32, 9, 2];
            let (mut screened, mut full) = (
                engine.session(schedule(&model)).unwrap(),
                engine.session(schedule(&model)).unwrap(),
            );
            screened.forward_blocking(&prompt, Logits::Last).unwrap();
            full.forward_blocking(&prompt, Logits::Last).unwrap();
            for step in 0..12 {
                let want = transmamba::sampling::argmax(&full.next_logits_blocking().unwrap());
                let got = screened.screened_greedy_blocking().unwrap();
                // The first step follows a forward (every logit already there): no screen.
                let token = match (step, got) {
                    (0, None) => want,
                    (0, Some(_)) => panic!("{name} {format:?}: screened after a forward"),
                    (_, Some(s)) => s.token,
                    (_, None) => panic!("{name} {format:?} step {step}: not decided"),
                };
                assert_eq!(token, want, "{name} {format:?} step {step}");
                screened.push(token).unwrap();
                full.push(want).unwrap();
            }
            // Fed the last token and asked: the same logits, bit for bit, and the same state.
            screened.screened_greedy_blocking().unwrap().unwrap();
            assert_eq!(
                screened.next_logits_blocking().unwrap(),
                full.next_logits_blocking().unwrap(),
                "{name} {format:?}"
            );
            assert!(
                screened.state_blocking().unwrap() == full.state_blocking().unwrap(),
                "{name} {format:?}: states differ"
            );
            // A generator on a fresh session gives these tokens too.
            let mut s = engine.session(schedule(&model)).unwrap();
            let tokens = generate(&mut s, &prompt, &options(12, false));
            let mut f = engine.session(schedule(&model)).unwrap();
            f.forward_blocking(&prompt, Logits::Last).unwrap();
            for &t in &tokens {
                assert_eq!(
                    t,
                    transmamba::sampling::argmax(&f.next_logits_blocking().unwrap()),
                    "{name} {format:?}: generator"
                );
                f.push(t).unwrap();
            }
        }
    }
}

/// Top-k sampling on the CPU engine draws from the rows the output screen keeps: the tokens a
/// seeded generator gives equal those drawn from every logit, for several k (with top-p too),
/// and the screen decides the steps.
#[test]
fn top_k_samples_through_the_output_screen_equal_the_full_draw() {
    let wide = RandomSpec {
        vocab: 3000,
        d: 64,
        heads: 4,
        head_dim: 16,
        state: 16,
        transpoints: vec![At(2), Never],
        ..RandomSpec::default()
    };
    let model = random_model(&wide, 44);
    let engine = cpu(&model);
    let prompt = [7u32, 1, 99];
    for (top_k, top_p) in [(1usize, 1.0f32), (5, 1.0), (40, 0.9)] {
        let sampling = SamplingOptions {
            temperature: 0.8,
            top_k,
            top_p,
            seed: 9,
        };
        let mut s = engine.session(schedule(&model)).unwrap();
        let opts = GenerateOptions {
            max_tokens: 16,
            sampling: sampling.clone(),
            stop_tokens: Vec::new(),
        };
        let tokens = generate(&mut s, &prompt, &opts);
        let mut f = engine.session(schedule(&model)).unwrap();
        f.forward_blocking(&prompt, Logits::Last).unwrap();
        let mut sampler = transmamba::sampling::Sampler::new(sampling).unwrap();
        for (i, &t) in tokens.iter().enumerate() {
            let position = f.position() - 1;
            let want = sampler
                .sample(&f.next_logits_blocking().unwrap(), position)
                .unwrap();
            assert_eq!(t, want, "top-k {top_k}: token {i}");
            f.push(t).unwrap();
        }
        // The screen decides here: a step through it gives rows, not `None`.
        let mut probe = engine.session(schedule(&model)).unwrap();
        probe.forward_blocking(&prompt, Logits::Last).unwrap();
        probe.push(tokens[0]).unwrap();
        let rows = probe
            .screened_top_blocking(top_k)
            .unwrap()
            .expect("decided");
        assert!(
            rows.len() >= top_k && rows.len() < 3000 / 8,
            "{} rows",
            rows.len()
        );
    }
}

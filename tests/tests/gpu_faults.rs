//! GPU faults (on lavapipe, forced): an allocation that fails in the middle of a step leaves the
//! session as it was; a fault reported after the step was submitted is an error (never stale
//! logits) and the session refuses further use; a lost device fails every later call with a
//! message saying so. Each test has a device of its own (the fault hooks act on a device).

use std::sync::Arc;

use transmamba::engine::EngineOptions;
use transmamba::engine_choice::{choose, EnginePreference};
use transmamba::gpu::{GpuContext, GpuError, GpuOptions, WeightFormat};
use transmamba::schedule::TransPoint::At;
use transmamba::session::Engine;
use transmamba::synthetic::{random_model, RandomSpec};
use transmamba::{Error, Logits, Model, Schedule};
use transmamba_tests::max_abs_diff;

const TOL: f32 = 1e-4;

fn device(opts: GpuOptions) -> Arc<GpuContext> {
    Arc::new(GpuContext::new_blocking(opts).expect("a GPU adapter (lavapipe in CI)"))
}

fn engines(model: &Model, ctx: Arc<GpuContext>) -> (Engine, Engine) {
    let gpu = Engine::on_gpu(
        ctx,
        model,
        EngineOptions::default(),
        choose(EnginePreference::Gpu, Err("test")),
    )
    .unwrap();
    let cpu = Engine::cpu(
        model.clone(),
        WeightFormat::F32,
        choose(EnginePreference::Cpu, Err("test")),
    )
    .unwrap();
    (gpu, cpu)
}

/// Attention until 200 in both layers: the attention cache grows by doubling during decode.
fn attention_model() -> Model {
    random_model(
        &RandomSpec {
            transpoints: vec![At(200), At(200)],
            ..RandomSpec::default()
        },
        5,
    )
}

fn tokens(n: usize) -> Vec<u32> {
    (0..n as u32).map(|i| (i * 7 + 2) % 64).collect()
}

/// The 65th token needs the attention cache grown from 64 to 128 rows; a device that cannot
/// allocate the larger cache fails that step — after layer 0's cache was replaced in the
/// recording — and the session is restored: same position, same state, saved and continued
/// on a device that can.
#[test]
fn an_allocation_failure_mid_step_leaves_the_session_as_it_was() {
    let model = attention_model();
    let schedule = Schedule(model.config.transpoints.clone());
    // x of a 64-row cache: 64 * 32 * 4 = 8 KiB fits; of 128 rows, 16 KiB does not.
    let small = device(GpuOptions {
        max_buffer_size: Some(15_000),
        ..GpuOptions::default()
    });
    let (gpu, cpu) = engines(&model, small);
    let t = tokens(80);
    let mut s = gpu.session(schedule.clone()).unwrap();
    s.forward_blocking(&t[..10], Logits::Last).unwrap();
    for &tok in &t[10..64] {
        s.forward_blocking(&[tok], Logits::Last).unwrap();
    }
    let before = s.state_blocking().unwrap();
    for _ in 0..2 {
        match s.forward_blocking(&[t[64]], Logits::Last) {
            Err(Error::Gpu(GpuError::TooLarge { what, .. })) => {
                assert!(what.contains("attention_cache"), "{what}")
            }
            other => panic!("expected the cache allocation to fail, got {other:?}"),
        }
        assert_eq!(s.position(), 64);
        assert_eq!(
            s.state_blocking().unwrap(),
            before,
            "the state is unchanged"
        );
    }
    // Still usable: its state moves to a device that can grow the cache and continues there
    // exactly as one uninterrupted run.
    let (roomy, _) = engines(&model, device(GpuOptions::default()));
    let mut moved = roomy.restore(&s.save_blocking().unwrap(), "state").unwrap();
    let got = moved.forward_blocking(&t[64..], Logits::All).unwrap();
    let want = cpu
        .session(schedule)
        .unwrap()
        .forward_blocking(&t, Logits::All)
        .unwrap();
    let v = model.vocab;
    assert!(max_abs_diff(&got, &want[64 * v..]) < TOL);
}

/// A fault the device reports after the step was submitted (forced: a rejected submission
/// right after the step's) makes that call an error — not logits read from a failed step —
/// and the session refuses further use until reset.
#[test]
fn a_fault_after_submission_is_an_error_and_poisons_the_session() {
    let model = attention_model();
    let schedule = Schedule(model.config.transpoints.clone());
    let ctx = device(GpuOptions::default());
    let (gpu, cpu) = engines(&model, ctx.clone());
    let t = tokens(12);
    for split in [1usize, 5] {
        let mut s = gpu.session(schedule.clone()).unwrap();
        s.forward_blocking(&t[..split], Logits::Last).unwrap();
        ctx.fail_next_submission();
        match s.forward_blocking(&t[split..split + 3], Logits::Last) {
            Err(Error::Gpu(GpuError::Validation(_))) => {}
            other => panic!("expected the step to fail, got {other:?}"),
        }
        match s.forward_blocking(&t[split + 3..], Logits::Last) {
            Err(Error::SessionPoisoned(why)) => assert!(why.contains("part-way"), "{why}"),
            other => panic!("expected a poisoned session, got {other:?}"),
        }
        assert!(matches!(s.save_blocking(), Err(Error::SessionPoisoned(_))));
        // reset() recovers: a fresh sequence, computed right.
        s.reset().unwrap();
        let got = s.forward_blocking(&t, Logits::All).unwrap();
        let want = cpu
            .session(schedule.clone())
            .unwrap()
            .forward_blocking(&t, Logits::All)
            .unwrap();
        assert!(max_abs_diff(&got, &want) < TOL);
    }
}

/// A lost device: every later call fails with a message saying so, and the lost future (the
/// browser's `lost` promise) resolves with the reason.
#[test]
fn a_lost_device_fails_every_later_call() {
    let model = attention_model();
    let schedule = Schedule(model.config.transpoints.clone());
    let ctx = device(GpuOptions::default());
    let (gpu, _) = engines(&model, ctx.clone());
    let mut s = gpu.session(schedule.clone()).unwrap();
    s.forward_blocking(&tokens(4), Logits::Last).unwrap();
    ctx.destroy_device();
    let reason = pollster::block_on(ctx.lost());
    assert!(reason.contains("Destroyed"), "{reason}");
    for _ in 0..2 {
        let e = s.forward_blocking(&[1], Logits::Last).unwrap_err();
        assert!(e.to_string().contains("GPU device lost"), "{e}");
    }
    let e = match gpu
        .session(schedule)
        .map(|mut s| s.forward_blocking(&[1], Logits::Last))
    {
        Err(e) | Ok(Err(e)) => e,
        Ok(Ok(_)) => panic!("a lost device computed logits"),
    };
    assert!(e.to_string().contains("GPU device lost"), "{e}");
}

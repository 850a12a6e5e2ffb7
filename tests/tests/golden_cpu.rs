//! The golden cases (transformers' own logits for real Mamba2 checkpoints) on the CPU backend.

use transmamba::cpu::CpuSession;
use transmamba::{Logits, Model, ScheduleSpec};
use transmamba_tests::{golden_cases, max_abs_diff};

const TOL: f32 = 1e-4;

#[test]
fn golden_forward_logits() {
    for case in golden_cases() {
        let model = Model::load(&case.dir).unwrap();
        let schedule = ScheduleSpec::Config
            .resolve(&model.config.transpoints)
            .unwrap();
        let mut s = CpuSession::new(&model, schedule).unwrap();
        let logits = s.forward(&case.tokens, Logits::All).unwrap();
        let err = max_abs_diff(&logits, &case.logits);
        println!("{}: forward max |Δ| = {err:.2e}", case.name);
        assert!(err < TOL, "{}: forward logits differ by {err}", case.name);
    }
}

#[test]
fn golden_decode_logits() {
    for case in golden_cases() {
        let model = Model::load(&case.dir).unwrap();
        let schedule = ScheduleSpec::Config
            .resolve(&model.config.transpoints)
            .unwrap();
        let mut s = CpuSession::new(&model, schedule).unwrap();
        let v = case.vocab;
        let mut got = s
            .forward(&case.tokens[..case.prefill_len], Logits::All)
            .unwrap();
        for &tok in &case.tokens[case.prefill_len..] {
            got.extend(s.forward(&[tok], Logits::Last).unwrap());
        }
        assert_eq!(got.len(), case.tokens.len() * v);
        let err = max_abs_diff(&got, &case.decode_logits);
        println!("{}: decode max |Δ| = {err:.2e}", case.name);
        assert!(err < TOL, "{}: decode logits differ by {err}", case.name);
    }
}

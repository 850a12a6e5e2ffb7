//! The shipped demo model (demo/transmamba-demo.safetensors): the runtime's logits equal the
//! training script's own forward (demo/train/model.py, float64 over the shipped f16 weights,
//! saved by demo/train/export.py) within 1e-3 on a held-out passage, on the CPU and the GPU,
//! under a schedule crossing inside the passage, pure SSM and pure attention.

use transmamba::cpu::CpuSession;
use transmamba::engine::{EngineOptions, GpuModel, GpuSession};
use transmamba::npy::from_npy_f32;
use transmamba::text::TextCodec;
use transmamba::tokens::parse_token_list;
use transmamba::{Logits, Model, Schedule, ScheduleSpec};
use transmamba_tests::*;

const TOL: f32 = 1e-3;
const SCHEDULES: [&str; 3] = ["config", "0", "inf"];

fn demo() -> Model {
    Model::load(&demo_dir().join("transmamba-demo.safetensors")).unwrap()
}

fn reference(name: &str) -> (Vec<u32>, Vec<f32>) {
    let dir = demo_dir().join("reference");
    let tokens =
        parse_token_list(&std::fs::read_to_string(dir.join("tokens.txt")).unwrap()).unwrap();
    let bytes = std::fs::read(dir.join(format!("logits_{name}.npy"))).unwrap();
    let (shape, logits) = from_npy_f32(&bytes, name).unwrap();
    assert_eq!(shape, vec![tokens.len(), logits.len() / tokens.len()]);
    (tokens, logits)
}

#[test]
fn demo_model_is_a_small_f16_file_with_its_tokenizer() {
    let path = demo_dir().join("transmamba-demo.safetensors");
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size <= 16_000_000, "{size} bytes");
    let m = demo();
    assert_eq!(m.stored_dtype, "F16");
    let codec = TextCodec::for_model(&m, None).unwrap();
    assert_eq!(codec.name(), "tokenizer.json");
    let text = "Call me Ishmael. Some years ago";
    let ids = codec.encode(text).unwrap();
    assert!(ids.len() < text.len() / 2, "BPE merges: {ids:?}");
    assert_eq!(codec.decode(&ids).unwrap(), text);
}

/// `forward(schedule, tokens)` gives all logits; each schedule must match the script's.
fn check_against_reference(
    backend: &str,
    m: &Model,
    forward: impl Fn(Schedule, &[u32]) -> Vec<f32>,
) {
    for name in SCHEDULES {
        let (tokens, expected) = reference(name);
        let sched = name
            .parse::<ScheduleSpec>()
            .unwrap()
            .resolve(&m.config.transpoints)
            .unwrap();
        let d = max_abs_diff(&forward(sched, &tokens), &expected);
        eprintln!("{backend}, schedule {name}: max |Δ| {d:.2e}");
        assert!(d <= TOL, "{backend}, schedule {name}: max |Δ| {d}");
    }
}

#[test]
fn cpu_logits_equal_the_training_scripts_forward() {
    let m = demo();
    check_against_reference("cpu", &m, |sched, tokens| {
        CpuSession::new(&m, sched)
            .unwrap()
            .forward(tokens, Logits::All)
            .unwrap()
    });
}

#[test]
fn gpu_logits_equal_the_training_scripts_forward() {
    let m = demo();
    let gm = GpuModel::new(gpu_context(), &m, EngineOptions::default()).unwrap();
    check_against_reference("gpu", &m, |sched, tokens| {
        GpuSession::new(&gm, sched)
            .unwrap()
            .forward_blocking(tokens, Logits::All)
            .unwrap()
    });
}

/// The streaming decoder prints, piece by piece, exactly the text of the whole sequence, with
/// the demo model's byte-level BPE: on the held-out text's tokens and on random ids (which
/// split UTF-8 sequences across tokens); and a step's cost does not grow with the output.
#[test]
fn streamed_text_equals_the_whole_decode() {
    use transmamba::text::TextStream;
    let m = demo();
    let codec = TextCodec::for_model(&m, None).unwrap();
    let heldout = std::fs::read_to_string(demo_dir().join("reference/heldout.txt")).unwrap();
    let text_ids = codec.encode(&heldout[..20_000.min(heldout.len())]).unwrap();
    let random_ids = transmamba::synthetic::random_tokens(m.vocab, 3000, 9);
    for ids in [&text_ids, &random_ids] {
        let mut stream = TextStream::new(&codec);
        let streamed: String = ids.iter().map(|&t| stream.push(t).unwrap()).collect();
        assert_eq!(streamed, codec.decode(ids).unwrap());
    }
    // O(1) a token: the window it decodes stays short over 20,000 tokens.
    let mut stream = TextStream::new(&codec);
    let mut widest = 0;
    for &id in text_ids.iter().cycle().take(20_000) {
        stream.push(id).unwrap();
        widest = widest.max(stream.window_len());
    }
    assert!(
        widest <= 2 * 16,
        "the decode window grew to {widest} tokens"
    );
}

/// Quantized storage keeps the trained model's quality: held-out perplexity (the first 4,096
/// tokens of demo/reference/heldout.txt, 16 windows of 256) with q8_0 within 1% of f16's and
/// q4_0 within 10% (README's table has the whole text: +0.0% and +1.1%).
#[test]
fn quantized_demo_model_keeps_its_perplexity() {
    use transmamba::cpu::WeightCopies;
    use transmamba::perplexity::NllSum;
    use transmamba::WeightFormat;
    let m = demo();
    let codec = TextCodec::for_model(&m, None).unwrap();
    let text = std::fs::read_to_string(demo_dir().join("reference/heldout.txt")).unwrap();
    let tokens = codec.encode(&text).unwrap();
    let schedule = ScheduleSpec::Config.resolve(&m.config.transpoints).unwrap();
    let ppl = |format: WeightFormat| {
        let copies = WeightCopies::new(&m, format).unwrap();
        let mut nll = NllSum::default();
        for w in tokens[..4096].chunks(256) {
            let mut s = CpuSession::with_weights(&m, &copies, schedule.clone()).unwrap();
            let rows = s.forward(w, Logits::All).unwrap();
            nll.push_rows(&rows, m.vocab, &w[1..]);
        }
        nll.perplexity()
    };
    let f16 = ppl(WeightFormat::F16);
    let q8 = ppl(WeightFormat::Q8_0);
    let q4 = ppl(WeightFormat::Q4_0);
    println!("perplexity over 4,096 held-out tokens: f16 {f16:.3}, q8_0 {q8:.3}, q4_0 {q4:.3}");
    assert!(f16 > 20.0 && f16 < 200.0, "{f16}");
    assert!((q8 / f16 - 1.0).abs() < 0.01, "q8_0 {q8} vs f16 {f16}");
    assert!((q4 / f16 - 1.0).abs() < 0.10, "q4_0 {q4} vs f16 {f16}");
    assert!(q4 != f16 && q8 != f16, "the formats are not no-ops");
}

//! GGUF files: the golden tiny checkpoint as llama.cpp's own converter and quantizer wrote it
//! (tests/fixtures/gguf/make.sh) reproduces transformers' logits, its quantized blocks are the
//! ones our quantizer makes, and malformed files are clear errors.

use std::sync::Arc;

use transmamba::cpu::{CpuSession, WeightCopies};
use transmamba::engine::{EngineOptions, GpuModel};
use transmamba::quant::QuantFormat;
use transmamba::text::TextCodec;
use transmamba::{Logits, Model, Schedule, ScheduleSpec, WeightFormat};
use transmamba_tests::gguf_writer::{
    gguf_bytes, model_gguf, model_gguf_as, GgufMatrices, GgufTensor, Kv,
};
use transmamba_tests::*;

const TOL: f32 = 1e-4;
/// The stored bounds against transformers' f32 logits (|logit| up to 4.4) for this checkpoint:
/// measured q8_0 0.091, q4_0 1.96. Its weights are random (no structure for 4 bits to keep):
/// a worst case; the demo model's perplexity (README) is the measure for trained weights.
const Q8_BOUND: f32 = 0.15;
const Q4_BOUND: f32 = 3.0;

static F32: &[u8] = include_bytes!("../fixtures/gguf/hf-mamba2-tiny-f32.gguf");
static Q8_0: &[u8] = include_bytes!("../fixtures/gguf/hf-mamba2-tiny-q8_0.gguf");
static Q4_0: &[u8] = include_bytes!("../fixtures/gguf/hf-mamba2-tiny-q4_0.gguf");

fn tiny_case() -> GoldenCase {
    golden_cases()
        .into_iter()
        .find(|c| c.name == "hf-mamba2-tiny")
        .expect("the hf-mamba2-tiny golden case")
}

/// Logits of `tokens` on the CPU engine with `format` storage, all positions.
fn cpu(model: &Model, format: WeightFormat, tokens: &[u32]) -> Vec<f32> {
    let sched = ScheduleSpec::Config
        .resolve(&model.config.transpoints)
        .unwrap();
    let copies = (format != WeightFormat::F32).then(|| WeightCopies::new(model, format).unwrap());
    let mut s = match &copies {
        Some(c) => CpuSession::with_weights(model, c, sched).unwrap(),
        None => CpuSession::new(model, sched).unwrap(),
    };
    s.forward(tokens, Logits::All).unwrap()
}

/// Prefill then decode on the GPU engine (default kernels), all positions.
fn gpu(model: &Model, format: WeightFormat, tokens: &[u32], prefill: usize) -> Vec<f32> {
    let opts = EngineOptions {
        weights: format,
        chunk_size: 4,
        ..EngineOptions::default()
    };
    let gm = GpuModel::new(gpu_context(), model, opts).unwrap();
    let sched = Schedule(vec![transmamba::TransPoint::At(0); model.config.num_layers]);
    gpu_prefill_then_decode(&gm, &sched, tokens, prefill)
}

#[test]
fn llama_cpp_f32_gguf_reproduces_the_golden_logits() {
    let case = tiny_case();
    let model = Model::from_file_bytes(F32, "tiny-f32.gguf").unwrap();
    let st = Model::load(&case.dir).unwrap();
    let (c, s) = (&model.config, &st.config);
    assert_eq!(
        (
            c.hidden_size,
            c.num_layers,
            c.num_heads,
            c.head_dim,
            c.state_size,
            c.n_groups
        ),
        (
            s.hidden_size,
            s.num_layers,
            s.num_heads,
            s.head_dim,
            s.state_size,
            s.n_groups
        )
    );
    assert_eq!(
        (c.conv_kernel, c.use_conv_bias, c.tie_word_embeddings),
        (4, true, false)
    );
    assert_eq!(model.vocab, case.vocab);
    assert_eq!(WeightFormat::auto_for(&model), WeightFormat::F32);
    // Same weights as the checkpoint: exact, but A_log = ln(-(-exp(A_log))) to an ulp or two.
    assert_eq!(model.layers[1].in_proj.data, st.layers[1].in_proj.data);
    assert_eq!(
        model.layers[0].gated_norm.data,
        st.layers[0].gated_norm.data
    );
    assert_eq!(
        model.layers[0].conv_weight.data,
        st.layers[0].conv_weight.data
    );
    assert!(max_abs_diff(&model.layers[0].a_log.data, &st.layers[0].a_log.data) < 1e-6);
    let err = max_abs_diff(&cpu(&model, WeightFormat::F32, &case.tokens), &case.logits);
    assert!(err < TOL, "CPU |Δ| = {err}");
    let got = gpu(&model, WeightFormat::F32, &case.tokens, case.prefill_len);
    let err = max_abs_diff(&got, &case.decode_logits);
    assert!(err < TOL, "GPU |Δ| = {err}");
    // The converter's tokenizer (gpt-neox, cut to the 256 ids) comes along and round-trips.
    let codec = TextCodec::from_metadata(&model)
        .unwrap()
        .expect("a tokenizer");
    let ids = codec.encode("hello world").unwrap();
    assert!(ids.iter().all(|&i| (i as usize) < model.vocab));
    assert_eq!(codec.decode(&ids).unwrap(), "hello world");
}

#[test]
fn llama_cpp_quantized_ggufs_hold_our_blocks_and_stay_near_the_golden_logits() {
    let case = tiny_case();
    let st = Model::load(&case.dir).unwrap();
    for (bytes, q, bound) in [
        (Q8_0, QuantFormat::Q8_0, Q8_BOUND),
        (Q4_0, QuantFormat::Q4_0, Q4_BOUND),
    ] {
        let model = Model::from_file_bytes(bytes, "tiny.gguf").unwrap();
        let format = WeightFormat::from(q);
        assert_eq!(
            WeightFormat::auto_for(&model),
            format,
            "{}",
            model.stored_dtype
        );
        // llama.cpp's blocks (gguf-py's q8_0, ggml's q4_0) = ours from the f32 weights, byte
        // for byte: the formats are the same and so is the rounding.
        for (name, ours, theirs) in [
            ("embedding", &st.embedding, &model.embedding),
            ("in_proj", &st.layers[0].in_proj, &model.layers[0].in_proj),
            (
                "out_proj",
                &st.layers[1].out_proj,
                &model.layers[1].out_proj,
            ),
            (
                "lm_head",
                st.lm_head.as_ref().unwrap(),
                model.lm_head.as_ref().unwrap(),
            ),
        ] {
            let mine = ours.quantized(name, q).unwrap();
            let stored = theirs.blocks.as_ref().expect("blocks kept");
            assert!(mine.bytes == stored.bytes, "{q:?} {name}: blocks differ");
        }
        // Both engines compute the stored model (CPU = GPU within 1e-4), and it stays within
        // the format's bound of transformers' f32 logits.
        let c = cpu(&model, format, &case.tokens);
        let g = gpu(&model, format, &case.tokens, case.prefill_len);
        let err = max_abs_diff(&c, &g);
        assert!(err < TOL, "{q:?}: CPU vs GPU |Δ| = {err}");
        let off = max_abs_diff(&c, &case.logits);
        let top = case.logits.iter().fold(0f32, |m, x| m.max(x.abs()));
        println!("{q:?}: vs transformers' f32 logits max |Δ| = {off:.4} (max |logit| {top:.2})");
        assert!(
            off < bound && off > 1e-5,
            "{q:?}: |Δ| = {off} (bound {bound})"
        );
    }
}

#[test]
fn written_ggufs_load_like_the_model() {
    // Our writer (converter layout) over random plain-Mamba2 models, tied or not.
    for tied in [false, true] {
        let spec = RandomSpec {
            tied,
            ..RandomSpec::default()
        };
        let model = random_model(&spec, 4);
        let tokens = random_tokens(spec.vocab, 10, 2);
        let loaded = Model::from_file_bytes(&model_gguf(&model, None), "w.gguf").unwrap();
        assert_eq!(loaded.lm_head.is_none(), tied);
        let err = max_abs_diff(
            &cpu(&loaded, WeightFormat::F32, &tokens),
            &cpu(&model, WeightFormat::F32, &tokens),
        );
        assert!(err < 1e-5, "tied {tied}: |Δ| = {err}");
        let q =
            Model::from_file_bytes(&model_gguf(&model, Some(QuantFormat::Q4_0)), "q.gguf").unwrap();
        assert_eq!(
            cpu(&q, WeightFormat::Q4_0, &tokens),
            cpu(&model, WeightFormat::Q4_0, &tokens)
        );
    }
}

/// An f16 GGUF (`--outtype f16`): its large matrices load as f16 values only (no f32 copy),
/// compute as the model's own f16 weights do, and a NaN among them is refused by name; the
/// browser's size check counts them at 2 bytes.
#[test]
fn f16_ggufs_keep_their_matrices_in_f16() {
    let spec = RandomSpec::default();
    let model = random_model(&spec, 5);
    let tokens = random_tokens(spec.vocab, 10, 3);
    let bytes = model_gguf_as(&model, GgufMatrices::F16);
    let loaded = Model::from_file_bytes(&bytes, "h.gguf").unwrap();
    for t in loaded.matrices() {
        assert!(
            t.half_only().is_some() && t.data.is_empty(),
            "{:?}",
            t.shape
        );
    }
    assert!(loaded.layers[0].a_log.half_only().is_none());
    assert_eq!(
        cpu(&loaded, WeightFormat::F16, &tokens),
        cpu(&model, WeightFormat::F16, &tokens)
    );
    let f32_file = model_gguf(&model, None);
    let (need16, need32) = (
        Model::f32_bytes_needed(&bytes).unwrap(),
        Model::f32_bytes_needed(&f32_file).unwrap(),
    );
    let matrix_bytes: u64 = model.matrices().iter().map(|t| 2 * t.len() as u64).sum();
    assert_eq!(need32 - need16, matrix_bytes);
    let mut bad = model.clone();
    bad.layers[1].in_proj.data[7] = f32::NAN;
    let e = refused(&model_gguf_as(&bad, GgufMatrices::F16));
    assert!(
        e.contains("blk.1.ssm_in.weight") && e.contains("non-finite"),
        "{e}"
    );
}

/// The error text of loading `bytes` as a model file (it must fail).
fn refused(bytes: &[u8]) -> String {
    match Model::from_file_bytes(bytes, "bad.gguf") {
        Ok(_) => panic!("a malformed GGUF loaded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn malformed_ggufs_are_clear_errors() {
    let model = random_model(&RandomSpec::default(), 6);
    let good = model_gguf(&model, Some(QuantFormat::Q8_0));
    assert!(Model::from_file_bytes(&good, "good.gguf").is_ok());
    // Every truncation is an error, never a panic (the header and into the data).
    for n in (0..good.len()).step_by(7).chain([good.len() - 1]) {
        let e = match Model::from_file_bytes(&good[..n], "cut.gguf") {
            Ok(_) => panic!("truncated at {n} loaded"),
            Err(e) => e.to_string(),
        };
        assert!(!e.is_empty());
    }
    // Bad magic is not GGUF (read as safetensors, refused); versions.
    let mut b = good.clone();
    b[..4].copy_from_slice(b"GGUG");
    assert!(refused(&b).contains("safetensors"));
    for v in [1u32, 4] {
        let mut b = good.clone();
        b[4..8].copy_from_slice(&v.to_le_bytes());
        assert!(refused(&b).contains(&format!("version {v}")));
    }
    // Counts that overflow or cannot fit.
    let mut b = good.clone();
    b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(refused(&b).contains("cannot fit"), "{}", refused(&b));
    let mut b = good.clone();
    b[16..24].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert!(refused(&b).contains("cannot fit"));
    // Tensor headers: edit one tensor at a time through the writer.
    let base = || -> Vec<GgufTensor> {
        vec![GgufTensor {
            name: "token_embd.weight".into(),
            dims: vec![32, 64],
            ggml_type: 0,
            data: vec![0; 32 * 64 * 4],
        }]
    };
    let kvs = || vec![("general.architecture".to_string(), Kv::Str("mamba2".into()))];
    let with = |edit: &dyn Fn(&mut GgufTensor)| {
        let mut t = base();
        edit(&mut t[0]);
        refused(&gguf_bytes(&kvs(), &t))
    };
    let e = with(&|t| t.dims = vec![1 << 32, 1 << 32]);
    assert!(
        e.contains("token_embd.weight") && e.contains("overflow"),
        "{e}"
    );
    let e = with(&|t| t.ggml_type = 14);
    assert!(e.contains("Q6_K") && e.contains("not supported"), "{e}");
    let e = with(&|t| t.ggml_type = 99);
    assert!(e.contains("type 99"), "{e}");
    let e = with(&|t| t.data.truncate(100));
    assert!(e.contains("past the end"), "{e}");
    let e = with(&|t| {
        t.ggml_type = 8;
        t.dims = vec![40, 64];
    });
    assert!(e.contains("whole blocks"), "{e}");
    // A misaligned offset: patch the written offset (the last 8 bytes of the header entry).
    let mut b = gguf_bytes(&kvs(), &base());
    let at = b
        .windows(17)
        .position(|w| w == b"token_embd.weight")
        .unwrap()
        + 17
        + 4
        + 16
        + 4;
    b[at..at + 8].copy_from_slice(&3u64.to_le_bytes());
    assert!(refused(&b).contains("not aligned"), "{}", refused(&b));
    // Metadata: another architecture, a missing key, shapes that disagree with it.
    let mut arch = kvs();
    arch[0].1 = Kv::Str("llama".into());
    assert!(refused(&gguf_bytes(&arch, &base())).contains("`llama` is not supported"));
    assert!(refused(&gguf_bytes(&kvs(), &base())).contains("mamba2.embedding_length"));
    let cut = |name: &str| {
        let mut b = good.clone();
        let at = b
            .windows(name.len())
            .position(|w| w == name.as_bytes())
            .unwrap();
        b[at] = b'X';
        refused(&b)
    };
    let e = cut("blk.1.ssm_out.weight");
    assert!(e.contains("out_proj"), "{e}");
    let e = cut("mamba2.embedding_length");
    assert!(e.contains("embedding_length"), "{e}");
    // embedding_length says 64, the tensors are 32 wide.
    let mut b = good.clone();
    let key = b"mamba2.embedding_length";
    let at = b.windows(key.len()).position(|w| w == key).unwrap() + key.len() + 4;
    b[at..at + 4].copy_from_slice(&64u32.to_le_bytes());
    let e = refused(&b);
    assert!(e.contains("shape"), "{e}");
    // A positive A (A_log undefined) and a NaN weight.
    let mut m = model.clone();
    m.layers[0].a_log.data[1] = f32::NAN;
    let e = refused(&model_gguf(&m, None));
    assert!(e.contains("ssm_a"), "{e}");
    let mut m = model.clone();
    m.layers[1].d.data[0] = f32::INFINITY;
    let e = refused(&model_gguf(&m, None));
    assert!(e.contains("ssm_d") && e.contains("non-finite"), "{e}");
    // The browser's size check reads the header too: q8_0 matrices count as their blocks (the
    // model keeps no f32 copy of them), f32 ones as f32.
    let need = Model::f32_bytes_needed(&good).unwrap();
    assert!(
        need > 0 && need <= good.len() as u64,
        "{need} for {} B",
        good.len()
    );
    let f32_file = model_gguf(&model, None);
    assert!(Model::f32_bytes_needed(&f32_file).unwrap() > 3 * need);
    let _ = Arc::new(());
}

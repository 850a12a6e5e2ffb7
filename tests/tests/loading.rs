//! Model loading in every layout and dtype, and a typed error for every malformed input.

use std::collections::HashMap;

use transmamba::cpu::CpuSession;
use transmamba::model::SafetensorsFile;
use transmamba::{Error, Logits, Model, ModelConfig, ScheduleSpec};
use transmamba_tests::*;

fn model() -> Model {
    mlp_model(5)
}

fn logits(m: &Model) -> Vec<f32> {
    let sched = ScheduleSpec::Config.resolve(&m.config.transpoints).unwrap();
    CpuSession::new(m, sched)
        .unwrap()
        .forward(&[1, 2, 3, 4, 5, 6], Logits::All)
        .unwrap()
}

fn write_dir(m: &Model, name: &str, store: StoreAs) -> std::path::PathBuf {
    let dir = temp_dir(name);
    std::fs::write(dir.join("config.json"), config_json(m)).unwrap();
    std::fs::write(
        dir.join("model.safetensors"),
        safetensors_bytes(m, store, None).unwrap(),
    )
    .unwrap();
    dir
}

#[test]
fn directory_round_trip_is_exact() {
    let m = model();
    let loaded = Model::load(&write_dir(&m, "dir", StoreAs::F32)).unwrap();
    assert_eq!(loaded.config, m.config);
    assert_eq!(logits(&loaded), logits(&m));
}

#[test]
fn f16_and_bf16_models_load() {
    let m = model();
    let reference = logits(&m);
    for (store, tol) in [(StoreAs::F16, 2e-2), (StoreAs::Bf16, 1e-1)] {
        let loaded = Model::load(&write_dir(&m, &format!("{store:?}"), store)).unwrap();
        assert_eq!(loaded.stored_dtype, format!("{store:?}").to_uppercase());
        // Weights equal the original rounded to the stored type, so logits are close but not equal.
        let err = max_abs_diff(&logits(&loaded), &reference);
        assert!(err > 0.0 && err < tol, "{store:?}: |Δ| = {err}");
    }
}

/// An f16 file's large matrices are held as f16 values only (half the memory of f32 tensors),
/// the rest as f32; the CPU engine computes from them what it computes from the same values in
/// f32 tensors. A bf16 file's are f32 (a bf16 value is not an f16 one).
#[test]
fn f16_files_hold_their_large_matrices_in_f16() {
    let m = model();
    let loaded = Model::load(&write_dir(&m, "f16-half", StoreAs::F16)).unwrap();
    let dense = map_matrices(&loaded, |t| {
        assert!(t.half_only().is_some(), "{:?} is not f16-only", t.shape);
        *t = transmamba::model::Tensor::new(t.shape.clone(), t.values().into_owned());
    });
    for l in &loaded.layers {
        assert!(l.mlp.is_some(), "an MLP model");
        assert!(l.norm.half_only().is_none() && !l.norm.data.is_empty());
    }
    assert_eq!(loaded.parameter_count(), m.parameter_count());
    let (a, b) = (logits(&loaded), logits(&dense));
    let scale = b.iter().fold(1f32, |s, v| s.max(v.abs()));
    assert!(max_abs_diff(&a, &b) <= 1e-5 * scale);
    let bf16 = Model::load(&write_dir(&m, "bf16-f32", StoreAs::Bf16)).unwrap();
    assert!(bf16.layers[0].in_proj.half_only().is_none());
}

#[test]
fn single_file_with_config_in_metadata() {
    let m = model();
    let meta = HashMap::from([("config".to_string(), config_json(&m))]);
    let dir = temp_dir("single");
    let path = dir.join("model.safetensors");
    std::fs::write(
        &path,
        safetensors_bytes(&m, StoreAs::F32, Some(meta)).unwrap(),
    )
    .unwrap();
    assert_eq!(logits(&Model::load(&path).unwrap()), logits(&m));
    // Without the metadata the error says what is missing.
    std::fs::write(&path, safetensors_bytes(&m, StoreAs::F32, None).unwrap()).unwrap();
    assert!(matches!(Model::load(&path), Err(Error::ConfigJson { .. })));
}

#[test]
fn sharded_directory_with_index() {
    let m = model();
    let dir = temp_dir("sharded");
    std::fs::write(dir.join("config.json"), config_json(&m)).unwrap();
    // Split the tensors over two files and describe them in the index, as transformers does.
    let weight_map = write_two_shards(
        &m,
        &dir,
        [
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
        ],
    );
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    assert_eq!(logits(&Model::load(&dir).unwrap()), logits(&m));
}

// ---- malformed inputs: each a typed error naming the problem ----

fn st_file(bytes: &[u8]) -> Result<Model, Error> {
    let m = model();
    Model::from_parts(
        m.config.clone(),
        &[SafetensorsFile {
            name: "x.safetensors".into(),
            bytes,
        }],
    )
}

fn expect_safetensors_error(bytes: &[u8], needle: &str) {
    match st_file(bytes) {
        Err(Error::Safetensors { reason, .. }) => {
            assert!(
                reason.contains(needle),
                "reason `{reason}` should mention `{needle}`"
            )
        }
        other => panic!("expected a safetensors error about {needle}, got {other:?}"),
    }
}

/// Rewrites a safetensors file's JSON header.
fn with_header(bytes: &[u8], edit: impl Fn(&mut serde_json::Value)) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut header);
    let text = header.to_string();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&bytes[8 + n..]);
    out
}

#[test]
fn truncated_file() {
    let bytes = safetensors_bytes(&model(), StoreAs::F32, None).unwrap();
    expect_safetensors_error(&bytes[..bytes.len() - 10], "truncated");
    expect_safetensors_error(&bytes[..5], "shorter");
}

#[test]
fn header_length_past_the_end() {
    let mut bytes = safetensors_bytes(&model(), StoreAs::F32, None).unwrap();
    let len = bytes.len() as u64 + 100;
    bytes[..8].copy_from_slice(&len.to_le_bytes());
    expect_safetensors_error(&bytes, "past the end");
}

#[test]
fn overlapping_and_out_of_range_offsets() {
    let bytes = safetensors_bytes(&model(), StoreAs::F32, None).unwrap();
    let overlap = with_header(&bytes, |h| {
        h["backbone.norm_f.weight"]["data_offsets"][0] = serde_json::json!(0);
    });
    expect_safetensors_error(&overlap, "offsets");
    let out_of_range = with_header(&bytes, |h| {
        let end = h["lm_head.weight"]["data_offsets"][1].as_u64().unwrap();
        h["lm_head.weight"]["data_offsets"][1] = serde_json::json!(end + 4000);
    });
    assert!(matches!(
        st_file(&out_of_range),
        Err(Error::Safetensors { .. })
    ));
}

#[test]
fn unknown_and_unsupported_dtypes() {
    let bytes = safetensors_bytes(&model(), StoreAs::F32, None).unwrap();
    let unknown = with_header(&bytes, |h| h["lm_head.weight"]["dtype"] = "F99".into());
    expect_safetensors_error(&unknown, "dtype");
    let int = with_header(&bytes, |h| h["lm_head.weight"]["dtype"] = "I32".into());
    match st_file(&int) {
        Err(Error::UnsupportedDtype { name, dtype, .. }) => {
            assert_eq!(name, "lm_head.weight");
            assert_eq!(dtype, "I32");
        }
        other => panic!("expected UnsupportedDtype, got {other:?}"),
    }
}

#[test]
fn missing_tensor_and_wrong_shape() {
    let m = model();
    let mut no_norm = m.clone();
    no_norm.layers[1].mlp = None; // drops layers.1.norm2 / mlp.* from the file
    let bytes = safetensors_bytes(&no_norm, StoreAs::F32, None).unwrap();
    match st_file(&bytes) {
        Err(Error::MissingTensor(n)) => assert_eq!(n, "backbone.layers.1.norm2.weight"),
        other => panic!("expected MissingTensor, got {other:?}"),
    }
    let mut cfg = m.config.clone();
    cfg.state_size += 1;
    let bytes = safetensors_bytes(&m, StoreAs::F32, None).unwrap();
    let r = Model::from_parts(
        cfg,
        &[SafetensorsFile {
            name: "x".into(),
            bytes: &bytes,
        }],
    );
    match r {
        Err(Error::TensorShape {
            name,
            expected,
            actual,
        }) => {
            assert_eq!(name, "backbone.layers.0.mixer.conv1d.weight");
            assert_ne!(expected, actual);
        }
        other => panic!("expected TensorShape, got {other:?}"),
    }
}

#[test]
fn bad_config_json_and_missing_key() {
    let m = model();
    let dir = write_dir(&m, "badjson", StoreAs::F32);
    std::fs::write(dir.join("config.json"), "{\"model_type\": \"transmamba\",").unwrap();
    assert!(matches!(Model::load(&dir), Err(Error::ConfigJson { .. })));
    let text = config_json(&m).replace("\"hidden_size\"", "\"hidden_sz\"");
    match ModelConfig::from_json_str(&text, "config.json") {
        Err(Error::MissingConfigKey(k)) => assert_eq!(k, "hidden_size"),
        other => panic!("expected MissingConfigKey, got {other:?}"),
    }
    let nowhere = dir.join("does-not-exist");
    assert!(matches!(
        Model::load(&nowhere),
        Err(Error::ModelNotFound(_))
    ));
}

#[test]
fn bad_tokens_and_schedules() {
    let m = model();
    let sched = ScheduleSpec::Config.resolve(&m.config.transpoints).unwrap();
    let mut s = CpuSession::new(&m, sched).unwrap();
    match s.forward(&[1, 64], Logits::All) {
        Err(Error::TokenOutOfRange {
            token: 64,
            position: 1,
            vocab: 64,
        }) => {}
        other => panic!("expected TokenOutOfRange, got {other:?}"),
    }
    assert!(matches!(
        s.forward(&[], Logits::All),
        Err(Error::EmptyTokens)
    ));
    assert!(matches!(
        "1,x".parse::<ScheduleSpec>(),
        Err(Error::Schedule { .. })
    ));
    assert!(matches!(
        "1,2,3"
            .parse::<ScheduleSpec>()
            .unwrap()
            .resolve(&m.config.transpoints),
        Err(Error::ScheduleLength { got: 3, layers: 2 })
    ));
    // Error messages name the problem.
    let msg = Error::TokenOutOfRange {
        token: 64,
        position: 1,
        vocab: 64,
    }
    .to_string();
    assert!(msg.contains("64") && msg.contains("vocabulary"));
}

/// What the browser reserves before loading, from the header alone: an f32 file's tensors as
/// f32, an f16 file's matrices as f16 and the rest as f32, a quantized file's matrices as their
/// blocks (f16 and quantized matrices are kept without an f32 copy: what the model then holds);
/// nothing for bytes that are not a safetensors image.
#[test]
fn f32_bytes_needed_counts_what_the_model_holds() {
    let m = model();
    let want = 4 * m.parameter_count() as u64;
    let bytes = safetensors_bytes(&m, StoreAs::F32, None).unwrap();
    assert_eq!(Model::f32_bytes_needed(&bytes), Some(want));
    let bytes = safetensors_bytes(&m, StoreAs::F16, None).unwrap();
    let halved = 2 * m.matrix_parameter_count() as u64;
    assert_eq!(Model::f32_bytes_needed(&bytes), Some(want - halved));
    let (_, spec) = &quantizable_variants()[0];
    let mq = transmamba::synthetic::random_model(spec, 3);
    let q4 = StoreAs::Quant(transmamba::quant::QuantFormat::Q4_0);
    let q4 = safetensors_bytes(&mq, q4, None).unwrap();
    let need = Model::f32_bytes_needed(&q4).unwrap();
    let all_f32 = 4 * mq.parameter_count() as u64;
    assert!(
        need <= q4.len() as u64 && need < all_f32 / 2,
        "{need} for a {} B file",
        q4.len()
    );
    assert_eq!(Model::f32_bytes_needed(b"not a model"), None);
}

//! Hostile inputs (issue 15, part 2): each class gets a typed error naming the problem, before
//! anything is allocated from it — never a panic, an abort or a silent garbage result.

use std::collections::HashMap;
use std::time::Instant;

use transmamba::engine::{EngineOptions, GpuModel};
use transmamba::gpu::{GpuError, WeightFormat};
use transmamba::model::SafetensorsFile;
use transmamba::{Error, Model, ModelConfig, TransPoint};
use transmamba_tests::*;

fn model() -> Model {
    mlp_model(11)
}

fn from_bytes(config: ModelConfig, bytes: &[u8]) -> Result<Model, Error> {
    Model::from_parts(
        config,
        &[SafetensorsFile {
            name: "x.safetensors".into(),
            bytes,
        }],
    )
}

/// The model's config JSON with `edit` applied to it.
fn config_with(m: &Model, edit: impl Fn(&mut serde_json::Value)) -> String {
    let mut v: serde_json::Value = serde_json::from_str(&config_json(m)).unwrap();
    edit(&mut v);
    v.to_string()
}

fn config_error(text: &str) -> (String, String) {
    match ModelConfig::from_json_str(text, "config.json") {
        Err(Error::ConfigValue { key, reason }) => (key, reason),
        other => panic!("expected a ConfigValue error, got {other:?}"),
    }
}

#[test]
fn non_finite_weights_are_refused_naming_the_tensor() {
    for (bad, store) in [
        (f32::NAN, StoreAs::F32),
        (f32::INFINITY, StoreAs::F32),
        (f32::NEG_INFINITY, StoreAs::F16),
        (f32::NAN, StoreAs::F16),
        (f32::NAN, StoreAs::Bf16),
        // finite in f32, but beyond f16's range: the file stores +Inf.
        (1e6, StoreAs::F16),
    ] {
        let mut m = model();
        m.layers[1].out_proj.data[5] = bad;
        let bytes = safetensors_bytes(&m, store, None).unwrap();
        match from_bytes(m.config.clone(), &bytes) {
            Err(Error::NonFiniteWeight { name, index, .. }) => {
                assert_eq!(name, "backbone.layers.1.mixer.out_proj.weight");
                assert_eq!(index, 5);
            }
            other => panic!("{bad} as {store:?}: expected NonFiniteWeight, got {other:?}"),
        }
    }
}

#[test]
fn huge_sizes_are_refused_before_allocating() {
    let m = model();
    let started = Instant::now();
    // A layer count that once allocated 16 TB for the schedule before any tensor was read.
    let (key, _) = config_error(&config_with(&m, |c| {
        c["num_hidden_layers"] = serde_json::json!(1_000_000_000_000_000u64);
        c.as_object_mut().unwrap().remove("transpoints");
    }));
    assert_eq!(key, "num_hidden_layers");
    // Widths each in range whose product overflows a tensor's element count.
    let (key, reason) = config_error(&config_with(&m, |c| {
        c["num_heads"] = serde_json::json!(1 << 20);
        c["head_dim"] = serde_json::json!(1 << 20);
        c["n_groups"] = serde_json::json!(1);
    }));
    assert_eq!(key, "num_heads·head_dim", "{reason}");
    // A width beyond any model.
    let (key, _) = config_error(&config_with(&m, |c| {
        c["hidden_size"] = serde_json::json!(u64::MAX);
    }));
    assert_eq!(key, "hidden_size");
    // expand·hidden_size overflowing usize in the num_heads default.
    let (key, _) = config_error(&config_with(&m, |c| {
        c.as_object_mut().unwrap().remove("num_heads");
        c["expand"] = serde_json::json!(u64::MAX / 2);
    }));
    assert_eq!(key, "expand·hidden_size");
    // mamba_ssm's dialect too.
    let ssm = r#"{"d_model": 64, "n_layer": 99999999999, "vocab_size": 64,
                  "ssm_cfg": {"layer": "Mamba2"}}"#;
    assert_eq!(config_error(ssm).0, "n_layer");
    // A config valid on its own but far larger than the file behind it.
    let mut big = m.config.clone();
    big.num_layers = 4000;
    big.transpoints = vec![TransPoint::At(0); 4000];
    let bytes = safetensors_bytes(&m, StoreAs::F32, None).unwrap();
    match from_bytes(big, &bytes) {
        Err(Error::ConfigExceedsFiles {
            params, file_bytes, ..
        }) => {
            assert!(params * 2 > file_bytes);
            assert_eq!(file_bytes, bytes.len() as u64);
        }
        other => panic!("expected ConfigExceedsFiles, got {other:?}"),
    }
    assert!(
        started.elapsed().as_secs() < 5,
        "refusals must not allocate or loop"
    );
}

#[test]
fn invalid_numeric_settings_are_refused() {
    let m = model();
    let cases: Vec<(&str, serde_json::Value)> = vec![
        ("layer_norm_epsilon", serde_json::json!(-1e-5)),
        (
            "layer_norm_epsilon",
            serde_json::json!({"__float__": "NaN"}),
        ),
        (
            "layer_norm_epsilon",
            serde_json::json!({"__float__": "Infinity"}),
        ),
        ("attention_scale", serde_json::json!(0.0)),
        ("attention_scale", serde_json::json!(-0.5)),
        ("attention_scale", serde_json::json!({"__float__": "NaN"})),
        ("rope_theta", serde_json::json!(0)),
        ("rope_theta", serde_json::json!(-10000.0)),
        ("rope_theta", serde_json::json!({"__float__": "Infinity"})),
        ("chunk_size", serde_json::json!(0)),
        ("conv_kernel", serde_json::json!(100_000)),
    ];
    for (key, value) in cases {
        let text = config_with(&m, |c| c[key] = value.clone());
        let (got, reason) = config_error(&text);
        assert_eq!(got, key, "{key} = {value}: {reason}");
    }
    // The time_step_limit's lower end must be a number.
    let text = config_with(&m, |c| {
        c["time_step_limit"] = serde_json::json!([{"__float__": "-Infinity"}, 1.0])
    });
    assert_eq!(config_error(&text).0, "time_step_limit");
    // A valid config still loads.
    assert!(ModelConfig::from_json_str(&config_json(&m), "config.json").is_ok());
}

/// A directory with a two-shard index whose `weight_map` the test rewrites.
fn sharded_dir(
    name: &str,
    m: &Model,
) -> (
    std::path::PathBuf,
    serde_json::Map<String, serde_json::Value>,
) {
    let dir = temp_dir(name);
    std::fs::write(dir.join("config.json"), config_json(m)).unwrap();
    let weight_map = write_two_shards(m, &dir, ["a.safetensors", "b.safetensors"]);
    (dir, weight_map)
}

fn write_index(dir: &std::path::Path, map: &serde_json::Map<String, serde_json::Value>) {
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
}

#[test]
fn a_sharded_index_cannot_reach_outside_the_model() {
    let m = model();
    let (dir, map) = sharded_dir("hostile-index", &m);
    write_index(&dir, &map);
    assert!(Model::load(&dir).is_ok(), "the well-formed index loads");
    // A copy of a shard outside the directory, reachable by `..`, an absolute path and a link.
    let outside = dir
        .parent()
        .unwrap()
        .join("hostile-index-outside.safetensors");
    std::fs::copy(dir.join("b.safetensors"), &outside).unwrap();
    let _ = std::fs::remove_file(dir.join("link.safetensors"));
    std::os::unix::fs::symlink(&outside, dir.join("link.safetensors")).unwrap();
    std::fs::create_dir_all(dir.join("sub.safetensors")).unwrap();
    for target in [
        "../hostile-index-outside.safetensors".to_string(),
        outside.display().to_string(),
        "link.safetensors".to_string(),
        "sub.safetensors".to_string(), // a directory, not a regular file
        "./b.safetensors/..".to_string(),
        String::new(),
    ] {
        let mut bad = map.clone();
        let first = bad
            .iter()
            .find(|(_, f)| *f == "b.safetensors")
            .unwrap()
            .0
            .clone();
        bad.insert(first, target.clone().into());
        write_index(&dir, &bad);
        match Model::load(&dir) {
            Err(Error::ShardOutsideModel { file, .. }) => assert_eq!(file, target),
            other => panic!("index naming `{target}`: expected ShardOutsideModel, got {other:?}"),
        }
    }
}

#[test]
fn a_tensor_in_two_shards_is_refused() {
    let m = model();
    let (dir, map) = sharded_dir("hostile-duplicate", &m);
    // Shard b also carries one of a's tensors (with other values).
    let bytes = safetensors_bytes(&m, StoreAs::F32, None).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let stolen = map
        .iter()
        .find(|(_, f)| *f == "a.safetensors")
        .unwrap()
        .0
        .clone();
    let mut names: Vec<String> = map
        .iter()
        .filter(|(_, f)| *f == "b.safetensors")
        .map(|(n, _)| n.clone())
        .collect();
    names.push(stolen.clone());
    let views: Vec<_> = names
        .iter()
        .map(|n| (n.clone(), st.tensor(n).unwrap()))
        .collect();
    std::fs::write(
        dir.join("b.safetensors"),
        safetensors::serialize(views, None).unwrap(),
    )
    .unwrap();
    write_index(&dir, &map);
    match Model::load(&dir) {
        Err(Error::DuplicateTensor { name, .. }) => assert_eq!(name, stolen),
        other => panic!("expected DuplicateTensor, got {other:?}"),
    }
}

#[test]
fn f16_storage_refuses_weights_beyond_its_range() {
    let mut m = model();
    m.layers[0].in_proj.data[3] = 70_000.0; // finite in f32, +Inf in f16
    let opts = EngineOptions {
        weights: WeightFormat::F16,
        ..EngineOptions::default()
    };
    match GpuModel::new(gpu_context(), &m, opts) {
        Err(Error::Gpu(GpuError::F16Overflow { value, .. })) => assert_eq!(value, 70_000.0),
        Err(other) => panic!("expected F16Overflow, got {other}"),
        Ok(_) => panic!("expected F16Overflow, the model was built"),
    }
    // In range, the same model builds.
    m.layers[0].in_proj.data[3] = 60_000.0;
    let opts = EngineOptions {
        weights: WeightFormat::F16,
        ..EngineOptions::default()
    };
    assert!(GpuModel::new(gpu_context(), &m, opts).is_ok());
}

#[test]
fn metadata_config_is_checked_too() {
    // One file whose metadata config declares far more than the file holds.
    let m = model();
    let text = config_with(&m, |c| {
        c["num_hidden_layers"] = serde_json::json!(60000);
        c.as_object_mut().unwrap().remove("transpoints");
    });
    let meta = HashMap::from([("config".to_string(), text)]);
    let bytes = safetensors_bytes(&m, StoreAs::F32, Some(meta)).unwrap();
    assert!(matches!(
        Model::from_safetensors_bytes(&bytes, "m.safetensors"),
        Err(Error::ConfigExceedsFiles { .. })
    ));
}

/// Issue 15, part 3: a buffer whose last handle is dropped leaves the bind-group cache at the
/// next bind, and its device memory is freed then (a grown attention cache's old buffers were
/// kept alive until the cache filled).
#[test]
fn a_freed_buffer_leaves_the_bind_group_cache_at_once() {
    use transmamba::gpu::{ops, ops::View, Recorder};
    let ctx = gpu_context();
    let (rows, m) = (4u32, 64u32);
    let out = ctx.zeros("out", (rows * m) as usize).unwrap();
    let run = |input: &transmamba::gpu::GpuBuffer| {
        let mut rec = Recorder::new(&ctx);
        ops::swiglu(
            &mut rec,
            rows,
            m,
            View::dense(input, 2 * m),
            View::dense(&out, m),
        )
        .unwrap();
        rec.submit().unwrap();
    };
    let keep = ctx.zeros("kept input", (rows * 2 * m) as usize).unwrap();
    run(&keep);
    let before = ctx.memory().unwrap();
    let cached = ctx.bind_group_cache_len();
    let big = ctx.zeros("freed input", 1 << 20).unwrap(); // 4 MiB
    run(&big);
    let with_big = ctx.memory().unwrap();
    // (within 1 MiB: small staging buffers come and go around it)
    let big_bytes = 4u64 << 20;
    assert!(
        with_big.buffer_bytes + (1 << 20) >= before.buffer_bytes + big_bytes,
        "{before:?} -> {with_big:?}"
    );
    assert_eq!(ctx.bind_group_cache_len(), cached + 1);
    drop(big);
    run(&keep);
    // wgpu releases a dropped buffer's memory once the device is done with the submissions
    // that used it, at a poll: wait for that before reading the counters (it raced otherwise).
    ctx.wait_idle().unwrap();
    let after = ctx.memory().unwrap();
    assert_eq!(
        ctx.bind_group_cache_len(),
        cached,
        "the freed buffer's bind group left the cache"
    );
    assert!(
        after.buffer_bytes + big_bytes <= with_big.buffer_bytes + (1 << 20),
        "its memory was freed: {} -> {} bytes",
        with_big.buffer_bytes,
        after.buffer_bytes
    );
}

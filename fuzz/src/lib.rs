//! What each fuzz target does with its input, shared by the libFuzzer targets
//! (`fuzz_targets/`) and the regression test that replays `fuzz/regressions/` in `cargo test`
//! (`tests/tests/fuzz_regressions.rs`). Each takes any bytes and must return, never panic.

use std::sync::OnceLock;

use transmamba::engine_choice::{choose, EnginePreference};
use transmamba::gpu::WeightFormat;
use transmamba::model::{check_token_range, shard_names, SafetensorsFile};
use transmamba::session::Engine;
use transmamba::synthetic::{random_model, RandomSpec};
use transmamba::text::{TextCodec, TextStream};
use transmamba::tokens::parse_token_list;
use transmamba::Logits;
use transmamba::{Model, ModelConfig, ScheduleSpec, TransPoint};

/// One `.safetensors` with the config (and a tokenizer) in its `__metadata__`: what a browser
/// fetches and `tm-run --model FILE` maps.
pub fn safetensors_file(data: &[u8]) {
    if let Ok(model) = Model::from_safetensors_bytes(data, "fuzz.safetensors") {
        let _ = model.check_tokens(&[0, 1, u32::MAX]);
        if let Ok(Some(codec)) = TextCodec::from_metadata(&model) {
            let _ = codec.encode("Call me Ishmael.");
        }
    }
}

/// A GGUF file (llama.cpp's format): what `tm-run --model FILE.gguf` maps and the browser's
/// `loadModel` takes; the header size check the browser runs first, too.
pub fn gguf_file(data: &[u8]) {
    let _ = Model::f32_bytes_needed(data);
    if let Ok(model) = Model::from_gguf_bytes(data, "fuzz.gguf") {
        let _ = model.check_tokens(&[0, 1, u32::MAX]);
        if let Ok(Some(codec)) = TextCodec::from_metadata(&model) {
            let _ = codec.encode("Call me Ishmael.");
        }
    }
}

/// A model directory without the file system: config.json, model.safetensors.index.json and
/// up to three shards, cut from the input at `SEPARATOR`s.
pub fn model_dir(data: &[u8]) {
    let parts = split(data);
    let config_text = String::from_utf8_lossy(parts[0]);
    let Ok(config) = ModelConfig::from_json_str(&config_text, "config.json") else {
        return;
    };
    if let Some(index) = parts.get(1) {
        let _ = shard_names(&String::from_utf8_lossy(index), "index.json");
    }
    let files: Vec<SafetensorsFile> = parts
        .iter()
        .skip(2)
        .take(3)
        .enumerate()
        .map(|(i, bytes)| SafetensorsFile {
            name: format!("model-{i}.safetensors"),
            bytes,
        })
        .collect();
    let _ = Model::from_parts(config, &files);
}

/// model_dir's part separator.
pub const SEPARATOR: [u8; 3] = [0xFF, 0x00, 0xFF];

fn split(data: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut rest = data;
    while let Some(i) = rest.windows(3).position(|w| w == SEPARATOR) {
        parts.push(&rest[..i]);
        rest = &rest[i + 3..];
    }
    parts.push(rest);
    parts
}

/// A `tokenizer.json` as a model's metadata carries it: parsed, then used to encode a prompt
/// and to decode (whole and streamed) ids taken from the input, in and out of its vocabulary.
pub fn tokenizer_json(data: &[u8]) {
    let Ok(codec) = TextCodec::from_tokenizer_json(data, "tokenizer.json") else {
        return;
    };
    let _ = codec.encode("Call me Ishmael. Some years ago — never mind how long");
    let ids: Vec<u32> = data
        .chunks_exact(4)
        .take(64)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) % 4096)
        .collect();
    let _ = codec.decode(&ids);
    let mut stream = TextStream::new(&codec);
    for &id in &ids {
        let _ = stream.push(id);
    }
}

/// The user-typed strings: a TransPoint schedule (resolved against a 6-layer default) and a
/// token list (`--tokens 1,2,3`).
pub fn schedule_and_tokens(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(spec) = text.parse::<ScheduleSpec>() {
        let default = [
            TransPoint::At(0),
            TransPoint::At(16),
            TransPoint::Never,
            TransPoint::At(3),
            TransPoint::At(1 << 30),
            TransPoint::At(7),
        ];
        if let Ok(schedule) = spec.resolve(&default) {
            let _ = schedule.to_string();
        }
    }
    if let Ok(tokens) = parse_token_list(&text) {
        let _ = check_token_range(&tokens, 0, 4096);
    }
}

/// The model the session-state target restores onto: three layers converting at 4 and 7 and
/// never, on the CPU engine.
pub fn session_engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let spec = RandomSpec {
            layers: 3,
            transpoints: vec![TransPoint::At(4), TransPoint::At(7), TransPoint::Never],
            ..RandomSpec::default()
        };
        let choice = choose(EnginePreference::Cpu, Err("fuzzing"));
        Engine::cpu(random_model(&spec, 41), WeightFormat::F32, choice).expect("a valid model")
    })
}

/// A saved session state (`tm-run generate --state`, JS `model.restore`): restored, then
/// continued by a token and saved again.
pub fn session_state(data: &[u8]) {
    if let Ok(mut session) = session_engine().restore(data, "fuzz.state") {
        let _ = session.forward_blocking(&[1], Logits::Last);
        let _ = session.save_blocking();
    }
}

type Target = (&'static str, fn(&[u8]));

/// The targets by name, for the regression replay.
pub const TARGETS: [Target; 6] = [
    ("session_state", session_state),
    ("gguf_file", gguf_file),
    ("safetensors_file", safetensors_file),
    ("model_dir", model_dir),
    ("tokenizer_json", tokenizer_json),
    ("schedule_and_tokens", schedule_and_tokens),
];

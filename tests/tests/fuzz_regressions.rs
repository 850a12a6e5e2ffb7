//! Every input the fuzzers ever crashed on (`fuzz/regressions/<target>/`), and the seed corpus
//! (`fuzz/seeds/<target>/`), replayed through the fuzz targets' own code in `cargo test`: each
//! must return (a model or a typed error), never panic. The targets are in fuzz/src/lib.rs.

#[path = "../../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod fuzz_entries;

use std::path::Path;

fn replay(kind: &str) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz")
        .join(kind);
    let mut count = 0;
    for (target, run) in fuzz_entries::TARGETS {
        let dir = root.join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{target} panics on {}", path.display());
            count += 1;
        }
    }
    count
}

#[test]
fn crashes_found_by_fuzzing_stay_fixed() {
    assert!(
        replay("regressions") >= 2,
        "the regression corpus is missing"
    );
}

#[test]
fn seed_corpus_runs() {
    assert!(replay("seeds") >= 10, "the seed corpus is missing");
}

/// The seeds are valid inputs, so the fuzzers start from deep inside the loaders.
#[test]
fn seeds_are_valid_models() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
    for f in ["tiny-f16", "tiny-f32"] {
        let bytes = std::fs::read(root.join("safetensors_file").join(f)).unwrap();
        transmamba::Model::from_safetensors_bytes(&bytes, f).unwrap();
    }
    for f in ["bytelevel-bpe", "wordlevel"] {
        let bytes = std::fs::read(root.join("tokenizer_json").join(f)).unwrap();
        transmamba::text::TextCodec::from_tokenizer_json(&bytes, f).unwrap();
    }
}

/// The session-state seeds are states of the fuzz target's model at positions before, at and
/// after its TransPoints. `TM_WRITE_SEEDS=1 cargo test -p transmamba-tests --test
/// fuzz_regressions` rewrites them (after a change of the state format).
#[test]
fn session_state_seeds_restore() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/session_state");
    let engine = fuzz_entries::session_engine();
    let positions = [0usize, 3, 4, 5, 7, 8, 12];
    if std::env::var_os("TM_WRITE_SEEDS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for n in positions {
            let mut s = engine
                .session(transmamba::Schedule(engine.config().transpoints.clone()))
                .unwrap();
            if n > 0 {
                let t: Vec<u32> = (0..n as u32).map(|i| (i * 5 + 1) % 64).collect();
                s.forward_blocking(&t, transmamba::Logits::Last).unwrap();
            }
            std::fs::write(dir.join(format!("at-{n}")), s.save_blocking().unwrap()).unwrap();
        }
    }
    for n in positions {
        let bytes = std::fs::read(dir.join(format!("at-{n}"))).unwrap();
        let s = engine.restore(&bytes, "seed").unwrap();
        assert_eq!(s.position(), n);
    }
}

/// The GGUF seeds: small Mamba2 models in llama.cpp's layout (F32, and Q8_0 / Q4_0 matrices),
/// written by the tests' GGUF writer. `TM_WRITE_SEEDS=1` rewrites them.
#[test]
fn gguf_seeds_load() {
    use transmamba::quant::QuantFormat;
    use transmamba::synthetic::{random_model, RandomSpec};
    use transmamba_tests::gguf_writer::model_gguf;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/gguf_file");
    let tiny = RandomSpec {
        vocab: 16,
        d: 8,
        heads: 2,
        head_dim: 4,
        state: 4,
        groups: 1,
        layers: 1,
        ..RandomSpec::default()
    };
    let quantizable = RandomSpec {
        vocab: 16,
        d: 32,
        heads: 4,
        head_dim: 8,
        state: 4,
        groups: 1,
        layers: 1,
        tied: true,
        ..RandomSpec::default()
    };
    let seeds = [
        ("tiny-f32", model_gguf(&random_model(&tiny, 1), None)),
        (
            "q8_0",
            model_gguf(&random_model(&quantizable, 2), Some(QuantFormat::Q8_0)),
        ),
        (
            "q4_0",
            model_gguf(&random_model(&quantizable, 3), Some(QuantFormat::Q4_0)),
        ),
    ];
    if std::env::var_os("TM_WRITE_SEEDS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in &seeds {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
    for (name, _) in &seeds {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        assert!(
            bytes.len() <= 8192,
            "{name}: {} bytes (fuzz/run.sh's max_len)",
            bytes.len()
        );
        transmamba::Model::from_gguf_bytes(&bytes, name).unwrap();
    }
}

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

//! Quantized weights (q8_0, q4_0) on the GPU engine, for every kernel plan forced on lavapipe
//! (cpu-adapter, gpu with and without subgroups, portable), against the CPU engine on the same
//! blocks: prefill (tiled products), decode (matvec), the embedding lookup, split matrices,
//! real head sizes; and the files that hold them.

use std::sync::Arc;

use transmamba::cpu::{CpuSession, WeightCopies};
use transmamba::engine::{EngineOptions, GpuModel, GpuSession};
use transmamba::gpu::{GpuContext, GpuOptions, KernelChoice};
use transmamba::schedule::TransPoint::At;
use transmamba::{Logits, Model, Schedule, WeightFormat};
use transmamba_tests::*;

const TOL: f32 = 1e-4;
const QUANT: [WeightFormat; 2] = [WeightFormat::Q8_0, WeightFormat::Q4_0];

fn contexts() -> Vec<(&'static str, Arc<GpuContext>)> {
    plan_contexts()
}

fn cpu_logits(model: &Model, format: WeightFormat, sched: &Schedule, tokens: &[u32]) -> Vec<f32> {
    let copies = WeightCopies::new(model, format).unwrap();
    CpuSession::with_weights(model, &copies, sched.clone())
        .unwrap()
        .forward(tokens, Logits::All)
        .unwrap()
}

#[test]
fn quantized_gpu_engine_equals_the_cpu_engine_on_the_same_blocks() {
    let mut variants = quantizable_variants();
    // Groups of whole blocks: decode's fused grouped norm over quantized out_proj
    // (ops::matvec_quant_normed with 2 groups of 64).
    variants.push((
        "groups2-fused",
        RandomSpec {
            d: 64,
            heads: 4,
            head_dim: 32,
            state: 16,
            groups: 2,
            ..RandomSpec::default()
        },
    ));
    variants.push((
        "wide-p64-n128",
        RandomSpec {
            d: 64,
            heads: 2,
            head_dim: 64,
            state: 128,
            groups: 1,
            mlp: 96,
            ..RandomSpec::default()
        },
    ));
    for (kernels, ctx) in contexts() {
        for format in QUANT {
            for (name, spec) in &variants {
                let model = random_model(spec, 31);
                let tokens = random_tokens(spec.vocab, 30, 5);
                let sched = Schedule(vec![At(9); spec.layers]);
                let want = cpu_logits(&model, format, &sched, &tokens);
                let scale = want.iter().fold(1f32, |m, x| m.max(x.abs()));
                let tol = TOL.max(2e-6 * scale);
                let opts = EngineOptions {
                    chunk_size: 8,
                    weights: format,
                    ..EngineOptions::default()
                };
                let gm = GpuModel::new(ctx.clone(), &model, opts).unwrap();
                assert_eq!(gm.options.weights, format);
                // 30 rows of prefill (tiled products), then 12 → 30 decode steps (matvec).
                let got = GpuSession::new(&gm, sched.clone())
                    .unwrap()
                    .forward_blocking(&tokens, Logits::All)
                    .unwrap();
                let err = max_abs_diff(&got, &want);
                assert!(
                    err < tol,
                    "{kernels} {format:?} {name}: prefill |Δ| = {err}"
                );
                let got = gpu_prefill_then_decode(&gm, &sched, &tokens, 12);
                let err = max_abs_diff(&got, &want);
                assert!(err < tol, "{kernels} {format:?} {name}: decode |Δ| = {err}");
            }
        }
    }
}

#[test]
fn quantized_matrices_larger_than_the_binding_limit_are_split() {
    let small = Arc::new(
        GpuContext::new_blocking(GpuOptions {
            max_binding_size: Some(1024),
            ..GpuOptions::default()
        })
        .unwrap(),
    );
    let small_gpu = Arc::new(
        GpuContext::new_blocking(GpuOptions {
            max_binding_size: Some(1024),
            kernels: KernelChoice::Gpu,
            ..GpuOptions::default()
        })
        .unwrap(),
    );
    // vocab 200 × d 32: one q8_0 row is one superblock of 9 texels (144 B): 7 rows a block.
    let spec = RandomSpec {
        vocab: 200,
        tied: true,
        ..RandomSpec::default()
    };
    let model = random_model(&spec, 9);
    let tokens = random_tokens(spec.vocab, 12, 2);
    let sched = Schedule(vec![At(5), At(0)]);
    for format in QUANT {
        for c in [&small, &small_gpu] {
            let opts = EngineOptions {
                weights: format,
                ..EngineOptions::default()
            };
            let gm = GpuModel::new(c.clone(), &model, opts).unwrap();
            let want = cpu_logits(&model, format, &sched, &tokens);
            let got = gpu_prefill_then_decode(&gm, &sched, &tokens, 6);
            let err = max_abs_diff(&got, &want);
            assert!(err < TOL, "{} {format:?}: |Δ| = {err}", c.kernels());
        }
    }
}

#[test]
fn ragged_rows_are_refused_with_a_clear_error() {
    let model = random_model(
        &RandomSpec {
            mlp: 48,
            ..RandomSpec::default()
        },
        3,
    );
    let opts = EngineOptions {
        weights: WeightFormat::Q8_0,
        ..EngineOptions::default()
    };
    let e = match GpuModel::new(gpu_context(), &model, opts) {
        Ok(_) => panic!("K = 48 is refused"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("fc") && e.contains("multiple of 32"), "{e}");
}

/// A single-file model (config in the metadata) with its matrices stored as `format`.
fn quantized_file(model: &Model, format: transmamba::quant::QuantFormat) -> Vec<u8> {
    use transmamba::synthetic::{config_json, safetensors_bytes, StoreAs};
    let meta = std::collections::HashMap::from([("config".to_string(), config_json(model))]);
    safetensors_bytes(model, StoreAs::Quant(format), Some(meta)).unwrap()
}

#[test]
fn quantized_files_load_their_blocks_losslessly() {
    use transmamba::quant::QuantFormat;
    for (name, mut spec) in quantizable_variants() {
        spec.transpoints = vec![At(0); spec.layers];
        let model = random_model(&spec, 5);
        for q in [QuantFormat::Q8_0, QuantFormat::Q4_0] {
            let bytes = quantized_file(&model, q);
            let loaded = Model::from_safetensors_bytes(&bytes, "q.safetensors").unwrap();
            let format = WeightFormat::from(q);
            assert_eq!(WeightFormat::auto_for(&loaded), format, "{name}");
            assert!(loaded.stored_dtype.contains(&q.name().to_uppercase()));
            // The matrices are held as their blocks only (no f32 copy beside them: 7x the
            // memory for q4_0), their values are the stored model's, and the blocks are kept
            // as stored.
            assert!(loaded.embedding.data.is_empty(), "{name} {q:?}");
            assert!(loaded.layers[0].in_proj.blocks_only().is_some());
            assert_eq!(
                loaded.layers[0].in_proj.len(),
                model.layers[0].in_proj.len()
            );
            let want = with_stored_matrices(&model, format);
            assert_eq!(
                *loaded.embedding.values(),
                *want.embedding.data,
                "{name} {q:?}"
            );
            assert_eq!(
                *loaded.layers[0].in_proj.values(),
                *want.layers[0].in_proj.data
            );
            let blocks = loaded.layers[0]
                .out_proj
                .blocks
                .as_ref()
                .expect("blocks kept");
            assert_eq!(
                **blocks,
                *model.layers[0].out_proj.quantized("o", q).unwrap(),
                "{name} {q:?}"
            );
            // Norms, conv, A_log, D stay f32, unchanged.
            assert_eq!(loaded.layers[1].a_log.data, model.layers[1].a_log.data);
            assert_eq!(loaded.norm_f.data, model.norm_f.data);
            // Both engines compute the stored model from the file as from quantize-at-load.
            let tokens = random_tokens(spec.vocab, 14, 1);
            let sched = Schedule(vec![At(4); spec.layers]);
            assert_eq!(
                cpu_logits(&loaded, format, &sched, &tokens),
                cpu_logits(&model, format, &sched, &tokens)
            );
            // Its size: a quarter (q8_0) / an eighth (q4_0) of f32 for the matrices, about.
            let f32_bytes = transmamba::synthetic::safetensors_bytes(
                &model,
                transmamba::synthetic::StoreAs::F32,
                None,
            )
            .unwrap()
            .len();
            assert!(
                bytes.len() < f32_bytes / 2,
                "{} vs {f32_bytes}",
                bytes.len()
            );
        }
    }
}

#[test]
fn malformed_quantized_files_are_clear_errors() {
    use safetensors::tensor::{Dtype, TensorView};
    use transmamba::quant::QuantFormat;
    let model = random_model(&RandomSpec::default(), 2);
    let good = quantized_file(&model, QuantFormat::Q4_0);
    let (_, meta) = safetensors::SafeTensors::read_metadata(&good).unwrap();
    let st = safetensors::SafeTensors::deserialize(&good).unwrap();
    let target = "backbone.layers.0.mixer.out_proj.weight";
    // Rebuilds the file with `edit` applied to the metadata and to the target tensor.
    let rebuild = |edit_meta: &dyn Fn(&mut serde_json::Value),
                   tensor: Option<(Dtype, Vec<usize>, Vec<u8>)>| {
        let mut md = meta.metadata().clone().unwrap();
        let mut q: serde_json::Value = serde_json::from_str(&md["quantization"]).unwrap();
        edit_meta(&mut q);
        md.insert("quantization".into(), q.to_string());
        let owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = st
            .tensors()
            .into_iter()
            .map(|(n, v)| match (&tensor, n == target) {
                (Some((d, s, b)), true) => (n, *d, s.clone(), b.clone()),
                _ => (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()),
            })
            .collect();
        let views: Vec<(String, TensorView)> = owned
            .iter()
            .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        safetensors::serialize(views, Some(md)).unwrap()
    };
    let err = |bytes: Vec<u8>| match Model::from_safetensors_bytes(&bytes, "bad.safetensors") {
        Ok(_) => panic!("refused"),
        Err(e) => e.to_string(),
    };
    let untouched = |_: &mut serde_json::Value| {};
    // Wrong block count: one block short.
    let (rows, rb) = (32usize, 18usize);
    let e = err(rebuild(
        &untouched,
        Some((Dtype::U8, vec![rows, rb - 18 + 9], vec![0; rows * 9])),
    ));
    assert!(e.contains(target) && e.contains("q4_0"), "{e}");
    // Listed as quantized but stored as F32.
    let e = err(rebuild(
        &untouched,
        Some((Dtype::F32, vec![32, 32], vec![0; 32 * 32 * 4])),
    ));
    assert!(e.contains("not U8"), "{e}");
    // Blocks without an entry saying what they are.
    let e = err(rebuild(
        &|q| {
            q.as_object_mut().unwrap().remove(target);
        },
        None,
    ));
    assert!(e.contains(target) && e.contains("U8"), "{e}");
    // Unknown format, bad shape entry.
    let e = err(rebuild(&|q| q[target]["format"] = "q5_1".into(), None));
    assert!(e.contains("q5_1"), "{e}");
    let e = err(rebuild(
        &|q| q[target]["shape"] = serde_json::json!([32]),
        None,
    ));
    assert!(e.contains("[rows, cols]"), "{e}");
    // The shape entry disagrees with the bytes (and with the config).
    let e = err(rebuild(
        &|q| q[target]["shape"] = serde_json::json!([32, 64]),
        None,
    ));
    assert!(e.contains(target), "{e}");
    // A NaN scale.
    let mut nan = st.tensor(target).unwrap().data().to_vec();
    nan[18..20].copy_from_slice(&half::f16::NAN.to_le_bytes());
    let e = err(rebuild(&untouched, Some((Dtype::U8, vec![32, rb], nan))));
    assert!(e.contains("not finite"), "{e}");
}

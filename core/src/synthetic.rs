//! Synthetic models: random weights of realistic scale in any shape, and writers for the
//! spec's on-disk format. Used by the tests, and by `tm-run make-model` for benchmarks.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};
use crate::model::{LayerWeights, MlpWeights, Tensor, QUANTIZATION_KEY};
use crate::quant::QuantFormat;
use crate::{Dialect, Model, ModelConfig, TransPoint};

/// Shape and options of a random model.
#[derive(Clone, Debug)]
pub struct RandomSpec {
    pub vocab: usize,
    pub d: usize,
    pub layers: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub state: usize,
    pub groups: usize,
    pub mlp: usize,
    pub rope_theta: Option<f32>,
    pub attention_gate: bool,
    pub bias: bool,
    pub tied: bool,
    pub transpoints: Vec<TransPoint>,
}

impl Default for RandomSpec {
    fn default() -> Self {
        Self {
            vocab: 64,
            d: 32,
            layers: 2,
            heads: 4,
            head_dim: 8,
            state: 8,
            groups: 2,
            mlp: 0,
            rope_theta: None,
            attention_gate: false,
            bias: false,
            tied: false,
            transpoints: vec![TransPoint::At(0); 2],
        }
    }
}

/// A model with random weights of realistic scale (so logits are O(1) and the SSM decays).
pub fn random_model(spec: &RandomSpec, seed: u64) -> Model {
    let mut rng = StdRng::seed_from_u64(seed);
    let config = ModelConfig {
        dialect: Dialect::TransMamba,
        vocab_size: spec.vocab,
        hidden_size: spec.d,
        num_layers: spec.layers,
        num_heads: spec.heads,
        head_dim: spec.head_dim,
        state_size: spec.state,
        n_groups: spec.groups,
        conv_kernel: 4,
        use_bias: spec.bias,
        use_conv_bias: true,
        layer_norm_epsilon: 1e-5,
        time_step_limit: (0.0, f32::INFINITY),
        tie_word_embeddings: spec.tied,
        mlp_intermediate_size: spec.mlp,
        attention_scale: 1.0 / (spec.state as f32).sqrt(),
        attention_gate: spec.attention_gate,
        rope_theta: spec.rope_theta,
        // One per layer, as a parsed config has: the spec's list, cycled (or At(0)).
        transpoints: match spec.transpoints.len() {
            0 => vec![TransPoint::At(0); spec.layers],
            _ => spec
                .transpoints
                .iter()
                .copied()
                .cycle()
                .take(spec.layers)
                .collect(),
        },
        chunk_size: 8,
    };
    let c = &config;
    let mut t = |shape: &[usize], scale: f32, offset: f32| {
        let n = shape.iter().product();
        Tensor::new(
            shape.to_vec(),
            (0..n)
                .map(|_| offset + scale * (rng.random::<f32>() * 2.0 - 1.0))
                .collect(),
        )
    };
    let (d, di, dc, h) = (c.hidden_size, c.d_inner(), c.d_conv(), c.num_heads);
    let embedding = t(&[spec.vocab, d], 1.0, 0.0);
    let layers = (0..spec.layers)
        .map(|_| LayerWeights {
            norm: t(&[d], 0.2, 1.0),
            in_proj: t(&[c.d_in_proj(), d], 1.0 / (d as f32).sqrt(), 0.0),
            in_proj_bias: spec.bias.then(|| t(&[c.d_in_proj()], 0.1, 0.0)),
            conv_weight: t(&[dc, 4], 0.5, 0.0),
            conv_bias: Some(t(&[dc], 0.1, 0.0)),
            dt_bias: t(&[h], 1.0, -2.0),
            a_log: t(&[h], 1.0, 0.5),
            d: t(&[h], 0.5, 1.0),
            gated_norm: t(&[di], 0.2, 1.0),
            out_proj: t(&[d, di], 1.0 / (di as f32).sqrt(), 0.0),
            out_proj_bias: spec.bias.then(|| t(&[d], 0.1, 0.0)),
            mlp: (spec.mlp > 0).then(|| MlpWeights {
                norm2: t(&[d], 0.2, 1.0),
                fc1: t(&[2 * spec.mlp, d], 1.0 / (d as f32).sqrt(), 0.0),
                fc2: t(&[d, spec.mlp], 1.0 / (spec.mlp as f32).sqrt(), 0.0),
            }),
        })
        .collect();
    let norm_f = t(&[d], 0.2, 1.0);
    let lm_head = (!spec.tied).then(|| t(&[spec.vocab, d], 1.0 / (d as f32).sqrt(), 0.0));
    Model {
        config,
        vocab: spec.vocab,
        embedding,
        layers,
        norm_f,
        lm_head,
        stored_dtype: "F32".into(),
        tokenizer_json: None,
    }
}

/// A random prompt.
pub fn random_tokens(vocab: usize, len: usize, seed: u64) -> Vec<u32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..len)
        .map(|_| rng.random_range(0..vocab as u32))
        .collect()
}

/// The model's tensors under MODEL.md's names (the conv weight as the files hold it,
/// `[Dc, 1, K]`).
pub fn named_tensors(model: &Model) -> Vec<(String, Tensor)> {
    let mut out = vec![(
        "backbone.embeddings.weight".to_string(),
        model.embedding.clone(),
    )];
    let mut push = |name: String, t: &Tensor| out.push((name, t.clone()));
    for (i, l) in model.layers.iter().enumerate() {
        let p = format!("backbone.layers.{i}.");
        push(format!("{p}norm.weight"), &l.norm);
        push(format!("{p}mixer.in_proj.weight"), &l.in_proj);
        if let Some(b) = &l.in_proj_bias {
            push(format!("{p}mixer.in_proj.bias"), b);
        }
        let conv = Tensor::new(
            vec![l.conv_weight.shape[0], 1, l.conv_weight.shape[1]],
            l.conv_weight.data.clone(),
        );
        push(format!("{p}mixer.conv1d.weight"), &conv);
        if let Some(b) = &l.conv_bias {
            push(format!("{p}mixer.conv1d.bias"), b);
        }
        push(format!("{p}mixer.dt_bias"), &l.dt_bias);
        push(format!("{p}mixer.A_log"), &l.a_log);
        push(format!("{p}mixer.D"), &l.d);
        push(format!("{p}mixer.norm.weight"), &l.gated_norm);
        push(format!("{p}mixer.out_proj.weight"), &l.out_proj);
        if let Some(b) = &l.out_proj_bias {
            push(format!("{p}mixer.out_proj.bias"), b);
        }
        if let Some(m) = &l.mlp {
            push(format!("{p}norm2.weight"), &m.norm2);
            push(format!("{p}mlp.fc1.weight"), &m.fc1);
            push(format!("{p}mlp.fc2.weight"), &m.fc2);
        }
    }
    push("backbone.norm_f.weight".into(), &model.norm_f);
    if let Some(h) = &model.lm_head {
        push("lm_head.weight".into(), h);
    }
    out
}

/// Whether MODEL.md's tensor `name` is one of the large matrices weight formats store (and
/// quantize): the embedding, in_proj, out_proj, the MLP and the LM head.
pub fn is_stored_matrix(name: &str) -> bool {
    name == "backbone.embeddings.weight"
        || name == "lm_head.weight"
        || [
            "mixer.in_proj.weight",
            "mixer.out_proj.weight",
            "mlp.fc1.weight",
            "mlp.fc2.weight",
        ]
        .iter()
        .any(|s| name.ends_with(s))
}

/// Stored element type for [`safetensors_bytes`].
#[derive(Clone, Copy, Debug)]
pub enum StoreAs {
    F32,
    F16,
    Bf16,
    /// The large matrices ([`is_stored_matrix`]) in q8_0 / q4_0 blocks (U8 tensors described
    /// by the `quantization` metadata entry, docs/QUANTIZATION.md), the rest in f32.
    Quant(QuantFormat),
}

/// Serialises the model's tensors; `metadata` goes into `__metadata__` (for [`StoreAs::Quant`]
/// with the `quantization` entry added).
pub fn safetensors_bytes(
    model: &Model,
    store: StoreAs,
    metadata: Option<HashMap<String, String>>,
) -> Result<Vec<u8>> {
    use safetensors::tensor::{Dtype, TensorView};
    let mut quantized = serde_json::Map::new();
    let mut encoded: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (n, t) in named_tensors(model) {
        // `values`: a matrix held as blocks or f16 only has no `data`.
        let d = &t.values();
        let f32_bytes = || d.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>();
        let (dtype, shape, bytes) = match store {
            StoreAs::F32 => (Dtype::F32, t.shape.clone(), f32_bytes()),
            StoreAs::F16 => (
                Dtype::F16,
                t.shape.clone(),
                d.iter()
                    .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                    .collect(),
            ),
            StoreAs::Bf16 => (
                Dtype::BF16,
                t.shape.clone(),
                d.iter()
                    .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
                    .collect(),
            ),
            StoreAs::Quant(q) if is_stored_matrix(&n) => {
                let m = t.quantized(&n, q)?;
                quantized.insert(
                    n.clone(),
                    serde_json::json!({"format": q.name(), "shape": [m.rows, m.cols]}),
                );
                (Dtype::U8, vec![m.rows, m.row_bytes()], m.bytes.clone())
            }
            StoreAs::Quant(_) => (Dtype::F32, t.shape.clone(), f32_bytes()),
        };
        encoded.push((n, dtype, shape, bytes));
    }
    let mut metadata = metadata;
    if !quantized.is_empty() {
        metadata.get_or_insert_with(HashMap::new).insert(
            QUANTIZATION_KEY.into(),
            serde_json::Value::Object(quantized).to_string(),
        );
    }
    let views: Vec<(String, TensorView)> = encoded
        .iter()
        .map(|(n, dt, s, b)| Ok((n.clone(), TensorView::new(*dt, s.clone(), b).map_err(st)?)))
        .collect::<Result<_>>()?;
    safetensors::serialize(views, metadata).map_err(st)
}

/// config.json text (transmamba dialect) for a model built by [`random_model`].
pub fn config_json(model: &Model) -> String {
    let c = &model.config;
    let tps: Vec<serde_json::Value> = c
        .transpoints
        .iter()
        .map(|t| match t {
            TransPoint::At(n) => serde_json::json!(n),
            TransPoint::Never => serde_json::Value::Null,
        })
        .collect();
    serde_json::json!({
        "model_type": "transmamba",
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size,
        "num_hidden_layers": c.num_layers,
        "num_heads": c.num_heads,
        "head_dim": c.head_dim,
        "state_size": c.state_size,
        "n_groups": c.n_groups,
        "conv_kernel": c.conv_kernel,
        "use_bias": c.use_bias,
        "use_conv_bias": c.use_conv_bias,
        "layer_norm_epsilon": c.layer_norm_epsilon,
        "time_step_limit": [0.0, {"__float__": "Infinity"}],
        "tie_word_embeddings": c.tie_word_embeddings,
        "mlp_intermediate_size": c.mlp_intermediate_size,
        "attention_gate": c.attention_gate,
        "rope_theta": c.rope_theta,
        "transpoints": tps,
        "chunk_size": c.chunk_size,
    })
    .to_string()
}

fn st(e: safetensors::SafeTensorError) -> Error {
    Error::Safetensors {
        file: "(writing)".into(),
        reason: format!("{e:?}"),
    }
}

/// Writes `model` as one `.safetensors` whose `__metadata__` holds the config and the model's
/// tokenizer if it has one (one fetch in a browser).
pub fn write_single_file(model: &Model, path: &std::path::Path, store: StoreAs) -> Result<()> {
    let mut meta = HashMap::from([("config".to_string(), config_json(model))]);
    if let Some(t) = &model.tokenizer_json {
        meta.insert("tokenizer".into(), t.clone());
    }
    let bytes = safetensors_bytes(model, store, Some(meta))?;
    std::fs::write(path, bytes).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `model` as a model directory (config.json + model.safetensors).
pub fn write_model_dir(model: &Model, dir: &std::path::Path, store: StoreAs) -> Result<()> {
    let io = |path: std::path::PathBuf| move |source| Error::Io { path, source };
    std::fs::create_dir_all(dir).map_err(io(dir.to_path_buf()))?;
    let cfg = dir.join("config.json");
    std::fs::write(&cfg, config_json(model)).map_err(io(cfg.clone()))?;
    let file = dir.join("model.safetensors");
    std::fs::write(&file, safetensors_bytes(model, store, None)?).map_err(io(file.clone()))
}

impl RandomSpec {
    /// The shape of state-spaces/mamba2-130m: d_model 768, 24 layers, 24 heads × 64, state 128,
    /// 1 group, vocab 50288, tied embeddings (129 M parameters).
    pub fn mamba2_130m() -> Self {
        Self {
            vocab: 50288,
            d: 768,
            layers: 24,
            heads: 24,
            head_dim: 64,
            state: 128,
            groups: 1,
            mlp: 0,
            rope_theta: None,
            attention_gate: false,
            bias: false,
            tied: true,
            transpoints: vec![TransPoint::At(0); 24],
        }
    }
}

//! Loading a model: safetensors files (memory-mapped on native) into f32 tensors checked
//! against the config, per MODEL.md's tensor table.

use std::borrow::Cow;
use std::collections::HashMap;
#[cfg(not(target_arch = "wasm32"))]
use std::path::{Path, PathBuf};
use std::sync::Arc;

use safetensors::tensor::{Dtype, SafeTensorError, SafeTensors, TensorView};

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::quant::{QuantFormat, QuantMatrix};

/// A dense f32 tensor, row-major — or a matrix a file stored as q8_0 / q4_0 blocks, kept as
/// those blocks only (`data` empty): its f32 values would take 7x (q4_0) the memory, and the
/// engines read the blocks ([`Tensor::values`] dequantizes for code that needs f32) — or a
/// matrix held as f16 values only (`data` empty), shared with the CPU engine's f16 copy.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    /// The values, row-major; empty for a matrix held as `blocks` or `half` only.
    pub data: Vec<f32>,
    /// The q8_0 / q4_0 blocks a file stored: an engine storing this matrix in that format uses
    /// them as they are (lossless), and the CPU engine's f32 path reads them dequantized.
    pub blocks: Option<Arc<QuantMatrix>>,
    /// The values as f16, when the CPU engine's f16 copy stands in for `data`
    /// ([`crate::cpu::WeightCopies`]).
    pub half: Option<Arc<Vec<half::f16>>>,
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Self {
            shape,
            data,
            blocks: None,
            half: None,
        }
    }

    /// A matrix of `shape` held as the f16 values `half` only, shared with their other holder.
    pub fn from_shared_half(shape: Vec<usize>, half: Arc<Vec<half::f16>>) -> Self {
        Self {
            shape,
            data: Vec::new(),
            blocks: None,
            half: Some(half),
        }
    }

    /// A `[rows, cols]` matrix held as the blocks `q` only.
    pub fn from_blocks(q: QuantMatrix) -> Self {
        Self {
            shape: vec![q.rows, q.cols],
            data: Vec::new(),
            blocks: Some(Arc::new(q)),
            half: None,
        }
    }

    /// As [`Tensor::from_blocks`], sharing `q` with whoever else holds it.
    pub fn from_shared_blocks(q: Arc<QuantMatrix>) -> Self {
        Self {
            shape: vec![q.rows, q.cols],
            data: Vec::new(),
            blocks: Some(q),
            half: None,
        }
    }

    /// The blocks when this matrix is held as blocks only.
    pub fn blocks_only(&self) -> Option<&QuantMatrix> {
        self.blocks.as_deref().filter(|_| self.data.is_empty())
    }

    /// The f16 values when this matrix is held as those only.
    pub fn half_only(&self) -> Option<&[half::f16]> {
        self.half
            .as_deref()
            .map(Vec::as_slice)
            .filter(|_| self.data.is_empty())
    }

    /// The values: `data`, or a blocks-only matrix dequantized, or an f16-only one widened (a
    /// copy, made on each call).
    pub fn values(&self) -> Cow<'_, [f32]> {
        if let Some(q) = self.blocks_only() {
            return Cow::Owned(q.dequantize());
        }
        match self.half_only() {
            Some(h) => Cow::Owned(h.iter().map(|v| v.to_f32()).collect()),
            None => Cow::Borrowed(&self.data),
        }
    }

    /// This `[rows, cols]` matrix in `format`, in GGUF's row layout: its stored blocks when
    /// they are in `format`, else quantized from `data`; `name` names it in errors.
    pub fn quantized(&self, name: &str, format: QuantFormat) -> Result<Arc<QuantMatrix>> {
        if let Some(b) = self.blocks.as_ref().filter(|b| b.format == format) {
            return Ok(match b.in_rows() {
                Cow::Borrowed(_) => b.clone(),
                Cow::Owned(rows) => Arc::new(rows),
            });
        }
        let (rows, cols) = match self.shape[..] {
            [r, c] => (r, c),
            _ => (1, self.data.len()),
        };
        QuantMatrix::quantize(name, format, &self.values(), rows, cols).map(Arc::new)
    }
    pub fn len(&self) -> usize {
        match (self.blocks_only(), self.half_only()) {
            (Some(q), _) => q.rows * q.cols,
            (None, Some(h)) => h.len(),
            (None, None) => self.data.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The weights of one layer (mixer, norms and optional MLP).
#[derive(Clone, Debug)]
pub struct LayerWeights {
    pub norm: Tensor,
    /// [Di + Dc + H, D]: rows z | xBC | dt.
    pub in_proj: Tensor,
    pub in_proj_bias: Option<Tensor>,
    /// [Dc, K] (the file's [Dc, 1, K] with the unit axis dropped).
    pub conv_weight: Tensor,
    pub conv_bias: Option<Tensor>,
    pub dt_bias: Tensor,
    pub a_log: Tensor,
    pub d: Tensor,
    /// Weight of the gated, grouped RMSNorm, `[Di]`.
    pub gated_norm: Tensor,
    pub out_proj: Tensor,
    pub out_proj_bias: Option<Tensor>,
    pub mlp: Option<MlpWeights>,
}

#[derive(Clone, Debug)]
pub struct MlpWeights {
    pub norm2: Tensor,
    /// [2M, D]: rows value | gate.
    pub fc1: Tensor,
    /// [D, M].
    pub fc2: Tensor,
}

/// A loaded model: config plus f32 weights.
#[derive(Clone, Debug)]
pub struct Model {
    pub config: ModelConfig,
    /// V as the tensors have it (mamba_ssm may pad it beyond `config.vocab_size`).
    pub vocab: usize,
    pub embedding: Tensor,
    pub layers: Vec<LayerWeights>,
    pub norm_f: Tensor,
    /// `None` when the output matrix is tied to the embedding.
    pub lm_head: Option<Tensor>,
    /// The dtype the weights were stored in (F32, F16, BF16).
    pub stored_dtype: String,
    /// A `tokenizer.json` carried in a single file's `__metadata__` under `tokenizer`, so one
    /// file (one fetch in a browser, one embedded blob in `tm-run`) holds everything.
    pub tokenizer_json: Option<String>,
}

/// The `__metadata__` entry describing a file's quantized tensors: a JSON object from tensor
/// name to `{"format": "q8_0" | "q4_0", "shape": [rows, cols]}`; each such tensor is stored as
/// U8 `[rows, row bytes]` holding GGUF's blocks (docs/QUANTIZATION.md).
pub const QUANTIZATION_KEY: &str = "quantization";

/// One safetensors file's bytes, named for error messages.
pub struct SafetensorsFile<'a> {
    pub name: String,
    pub bytes: &'a [u8],
}

/// The first value f16 cannot hold (non-finite, or beyond ±65504, which would round to ±Inf):
/// what f16 weight storage refuses, on the GPU and the CPU alike.
pub fn first_beyond_f16(data: &[f32]) -> Option<usize> {
    let max = half::f16::MAX.to_f32();
    data.iter().position(|v| !v.is_finite() || v.abs() > max)
}

impl Model {
    /// Loads a model directory (config.json plus safetensors, sharded or not) or a single
    /// `.safetensors` file whose metadata holds the config.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load(path: &Path) -> Result<Model> {
        if path.is_file() {
            let map = mmap(path)?;
            return Self::from_file_bytes(&map, &path.display().to_string());
        }
        if !path.is_dir() {
            return Err(Error::ModelNotFound(path.to_path_buf()));
        }
        let config_path = path.join("config.json");
        let config_text = match std::fs::read_to_string(&config_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::ModelNotFound(path.to_path_buf()))
            }
            Err(source) => {
                return Err(Error::Io {
                    path: config_path,
                    source,
                })
            }
        };
        let config = ModelConfig::from_json_str(&config_text, &config_path.display().to_string())?;
        let files = safetensors_files(path)?;
        let maps = files.iter().map(|f| mmap(f)).collect::<Result<Vec<_>>>()?;
        let named: Vec<SafetensorsFile> = files
            .iter()
            .zip(&maps)
            .map(|(p, m)| SafetensorsFile {
                name: p.display().to_string(),
                bytes: &m[..],
            })
            .collect();
        Self::from_parts(config, &named)
    }

    /// Bytes the tensors of a `.safetensors` image take once loaded (every element as f32,
    /// q8_0 / q4_0 matrices as their blocks, f16 matrices as f16), from its header alone;
    /// `None` if the header does not parse or the sum overflows (the loader then reports why).
    /// The browser checks it against what its wasm heap can still grow to before loading, so
    /// a model too big is a clear error, not an abort.
    pub fn f32_bytes_needed(bytes: &[u8]) -> Option<u64> {
        if crate::gguf::is_gguf(bytes) {
            return crate::gguf::GgufFile::parse(bytes, "")
                .ok()
                .map(|f| f.f32_bytes_needed());
        }
        let (_, meta) = SafeTensors::read_metadata(bytes).ok()?;
        meta.tensors().values().try_fold(0u64, |total, info| {
            let elements = info
                .shape
                .iter()
                .try_fold(1u64, |n, &d| n.checked_mul(d as u64))?;
            // Quantized blocks (U8) are kept as they are, f16 matrices (every 2-D tensor is
            // one) as f16: no f32 copy of either.
            let bytes = match info.dtype {
                Dtype::U8 => elements,
                Dtype::F16 if info.shape.len() == 2 => elements.checked_mul(2)?,
                _ => elements.checked_mul(4)?,
            };
            total.checked_add(bytes)
        })
    }

    /// One model file, by its first bytes: a GGUF file ([`crate::gguf`]), else a
    /// `.safetensors` with the config in its metadata.
    pub fn from_file_bytes(bytes: &[u8], name: &str) -> Result<Model> {
        if crate::gguf::is_gguf(bytes) {
            Self::from_gguf_bytes(bytes, name)
        } else {
            Self::from_safetensors_bytes(bytes, name)
        }
    }

    /// One `.safetensors` whose `__metadata__` holds the config JSON under the key `config`.
    pub fn from_safetensors_bytes(bytes: &[u8], name: &str) -> Result<Model> {
        let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| st_error(name, e))?;
        let text = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get("config"))
            .ok_or_else(|| Error::ConfigJson {
                source_name: name.to_string(),
                reason: "the file's __metadata__ has no `config` entry; \
                         pass the model directory with its config.json instead"
                    .into(),
            })?;
        let config = ModelConfig::from_json_str(text, &format!("{name} (__metadata__.config)"))?;
        let tokenizer_json = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get("tokenizer"))
            .cloned();
        let mut model = Self::from_parts(
            config,
            &[SafetensorsFile {
                name: name.to_string(),
                bytes,
            }],
        )?;
        model.tokenizer_json = tokenizer_json;
        Ok(model)
    }

    /// Builds the model from a config and the bytes of its safetensors files.
    pub fn from_parts(config: ModelConfig, files: &[SafetensorsFile]) -> Result<Model> {
        let parsed = files
            .iter()
            .map(|f| SafeTensors::deserialize(f.bytes).map_err(|e| st_error(&f.name, e)))
            .collect::<Result<Vec<_>>>()?;
        // The config's sizes must be backed by the files before anything is sized by them:
        // every weight takes at least 9/16 of a byte (q4_0: 18 bytes per 32).
        let file_bytes: u64 = files.iter().map(|f| f.bytes.len() as u64).sum();
        let params = config.min_parameter_count();
        let min_bytes = |p: u64| p.saturating_mul(9) / 16;
        if params.is_none_or(|p| min_bytes(p) > file_bytes) {
            let params = params.unwrap_or(u64::MAX);
            return Err(Error::ConfigExceedsFiles {
                params,
                min_bytes: min_bytes(params),
                file_bytes,
            });
        }
        let mut quantized = HashMap::new();
        for f in files {
            let (_, meta) =
                SafeTensors::read_metadata(f.bytes).map_err(|e| st_error(&f.name, e))?;
            if let Some(text) = meta
                .metadata()
                .as_ref()
                .and_then(|m| m.get(QUANTIZATION_KEY))
            {
                quantized.extend(quantization_entries(&f.name, text)?);
            }
        }
        let mut views: HashMap<String, (&str, TensorView)> = HashMap::new();
        for (file, st) in files.iter().zip(&parsed) {
            for (name, view) in st.tensors() {
                if let Some((first, _)) = views.get(&name) {
                    return Err(Error::DuplicateTensor {
                        name,
                        first: first.to_string(),
                        second: file.name.clone(),
                    });
                }
                views.insert(name, (file.name.as_str(), view));
            }
        }
        let source = SafetensorsSource {
            views: &views,
            quantized: &quantized,
        };
        Self::assemble(config, &source)
    }

    /// Builds the model from a config and a source of MODEL.md's tensors (safetensors files, or
    /// a GGUF file's tensors under their MODEL.md names), checking every shape.
    pub(crate) fn assemble(config: ModelConfig, source: &dyn TensorSource) -> Result<Model> {
        let mut dtypes = std::collections::BTreeSet::new();
        let mut loader = Loader {
            source,
            dtypes: &mut dtypes,
        };

        let c = &config;
        let (d, di, dc, h, k) = (
            c.hidden_size,
            c.d_inner(),
            c.d_conv(),
            c.num_heads,
            c.conv_kernel,
        );
        let emb_name = if source.contains("backbone.embeddings.weight") {
            "backbone.embeddings.weight"
        } else if source.contains("backbone.embedding.weight") {
            "backbone.embedding.weight"
        } else {
            return Err(Error::MissingTensor("backbone.embeddings.weight".into()));
        };
        let embedding = loader.matrix(emb_name, None, d)?;
        let vocab = embedding.shape[0];
        if vocab < c.vocab_size {
            return Err(Error::TensorShape {
                name: emb_name.into(),
                expected: vec![c.vocab_size, d],
                actual: embedding.shape.clone(),
            });
        }
        let mut layers = Vec::with_capacity(c.num_layers);
        for i in 0..c.num_layers {
            let p = format!("backbone.layers.{i}.");
            let opt = |l: &mut Loader, name: &str, shape: &[usize], present: bool| {
                if present {
                    l.get(&format!("{p}{name}"), shape).map(Some)
                } else {
                    Ok(None)
                }
            };
            let mut conv_weight = loader.get(&format!("{p}mixer.conv1d.weight"), &[dc, 1, k])?;
            conv_weight.shape = vec![dc, k];
            let mlp = if c.mlp_intermediate_size > 0 {
                let m = c.mlp_intermediate_size;
                Some(MlpWeights {
                    norm2: loader.get(&format!("{p}norm2.weight"), &[d])?,
                    fc1: loader.matrix(&format!("{p}mlp.fc1.weight"), Some(2 * m), d)?,
                    fc2: loader.matrix(&format!("{p}mlp.fc2.weight"), Some(d), m)?,
                })
            } else {
                None
            };
            layers.push(LayerWeights {
                norm: loader.get(&format!("{p}norm.weight"), &[d])?,
                in_proj: loader.matrix(
                    &format!("{p}mixer.in_proj.weight"),
                    Some(c.d_in_proj()),
                    d,
                )?,
                in_proj_bias: opt(
                    &mut loader,
                    "mixer.in_proj.bias",
                    &[c.d_in_proj()],
                    c.use_bias,
                )?,
                conv_weight,
                conv_bias: opt(&mut loader, "mixer.conv1d.bias", &[dc], c.use_conv_bias)?,
                dt_bias: loader.get(&format!("{p}mixer.dt_bias"), &[h])?,
                a_log: loader.get(&format!("{p}mixer.A_log"), &[h])?,
                d: loader.get(&format!("{p}mixer.D"), &[h])?,
                gated_norm: loader.get(&format!("{p}mixer.norm.weight"), &[di])?,
                out_proj: loader.matrix(&format!("{p}mixer.out_proj.weight"), Some(d), di)?,
                out_proj_bias: opt(&mut loader, "mixer.out_proj.bias", &[d], c.use_bias)?,
                mlp,
            });
        }
        let norm_f = loader.get("backbone.norm_f.weight", &[d])?;
        let lm_head = if c.tie_word_embeddings && !source.contains("lm_head.weight") {
            None
        } else {
            Some(loader.matrix("lm_head.weight", Some(vocab), d)?)
        };
        let stored_dtype = dtypes.into_iter().collect::<Vec<_>>().join("+");
        Ok(Model {
            config,
            vocab,
            embedding,
            layers,
            norm_f,
            lm_head,
            stored_dtype,
            tokenizer_json: None,
        })
    }

    /// The output matrix [V, D]: lm_head, or the embedding when tied.
    pub fn output_matrix(&self) -> &Tensor {
        self.lm_head.as_ref().unwrap_or(&self.embedding)
    }

    pub fn parameter_count(&self) -> usize {
        let layer: usize = self
            .layers
            .iter()
            .map(|l| {
                let mut n = l.norm.len()
                    + l.in_proj.len()
                    + l.conv_weight.len()
                    + l.dt_bias.len()
                    + l.a_log.len()
                    + l.d.len()
                    + l.gated_norm.len()
                    + l.out_proj.len();
                for b in [&l.in_proj_bias, &l.conv_bias, &l.out_proj_bias]
                    .into_iter()
                    .flatten()
                {
                    n += b.len();
                }
                if let Some(m) = &l.mlp {
                    n += m.norm2.len() + m.fc1.len() + m.fc2.len();
                }
                n
            })
            .sum();
        self.embedding.len()
            + layer
            + self.norm_f.len()
            + self.lm_head.as_ref().map_or(0, Tensor::len)
    }

    /// Weights in the large matrices a [`crate::WeightFormat`] stores (embedding, LM head,
    /// in_proj, out_proj, the MLP).
    pub fn matrix_parameter_count(&self) -> usize {
        self.matrices().into_iter().map(Tensor::len).sum()
    }

    /// The large matrices a [`crate::WeightFormat`] stores: the embedding, the LM head when
    /// untied, and per layer in_proj, out_proj and the MLP's.
    pub fn matrices(&self) -> Vec<&Tensor> {
        let mut m = vec![&self.embedding];
        m.extend(&self.lm_head);
        for l in &self.layers {
            m.extend([&l.in_proj, &l.out_proj]);
            if let Some(mlp) = &l.mlp {
                m.extend([&mlp.fc1, &mlp.fc2]);
            }
        }
        m
    }

    /// Bytes the weights take stored as `format`: the large matrices at its bytes a weight
    /// (block scales included), everything else f32 — about the size of a file `tm-run
    /// quantize` writes, and of the weights on the device.
    pub fn stored_bytes(&self, format: crate::WeightFormat) -> u64 {
        let matrices = self.matrix_parameter_count();
        let rest = self.parameter_count().saturating_sub(matrices);
        (matrices as f64 * format.bytes_per_weight()) as u64 + rest as u64 * 4
    }

    /// Checks a prompt: non-empty, every id inside the vocabulary.
    pub fn check_tokens(&self, tokens: &[u32]) -> Result<()> {
        if tokens.is_empty() {
            return Err(Error::EmptyTokens);
        }
        self.check_token_range(tokens, 0)
    }

    /// Checks that every id is inside the vocabulary; `first_position` names positions in errors.
    pub fn check_token_range(&self, tokens: &[u32], first_position: usize) -> Result<()> {
        check_token_range(tokens, first_position, self.vocab)
    }
}

/// Checks that every id is below `vocab`; `first_position` names positions in errors.
pub fn check_token_range(tokens: &[u32], first_position: usize, vocab: usize) -> Result<()> {
    match tokens.iter().position(|&t| t as usize >= vocab) {
        Some(i) => Err(Error::TokenOutOfRange {
            token: tokens[i],
            position: first_position + i,
            vocab,
        }),
        None => Ok(()),
    }
}

/// Where [`Model::assemble`] gets MODEL.md's tensors from.
pub(crate) trait TensorSource {
    fn contains(&self, name: &str) -> bool;
    /// The tensor under MODEL.md's name and shape (as a safetensors checkpoint holds it), with
    /// the name of its stored type (F32, F16, BF16, Q8_0, Q4_0); non-finite values refused.
    /// With `keep_half`, a large matrix stored in f16 comes as those f16 values only
    /// ([`Tensor::half`]), never widened to f32.
    fn load(&self, name: &str, keep_half: bool) -> Result<(Tensor, String)>;
}

struct Loader<'v> {
    source: &'v dyn TensorSource,
    dtypes: &'v mut std::collections::BTreeSet<String>,
}

/// Safetensors files' tensors.
struct SafetensorsSource<'v, 'd> {
    views: &'v HashMap<String, (&'d str, TensorView<'d>)>,
    /// Quantized tensors: name → (format, [rows, cols]), from the files' metadata.
    quantized: &'v HashMap<String, QuantEntry>,
}

/// A quantized tensor's format and logical `[rows, cols]`.
type QuantEntry = (QuantFormat, [usize; 2]);

/// The entries of a file's [`QUANTIZATION_KEY`] metadata; `file` names it in errors.
fn quantization_entries(file: &str, text: &str) -> Result<Vec<(String, QuantEntry)>> {
    let bad = |name: &str, reason: String| Error::QuantizedTensor {
        file: file.to_string(),
        name: name.to_string(),
        reason,
    };
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        bad(
            "(metadata)",
            format!("`{QUANTIZATION_KEY}` is not JSON: {e}"),
        )
    })?;
    let obj = v.as_object().ok_or_else(|| {
        bad(
            "(metadata)",
            format!("`{QUANTIZATION_KEY}` is not an object"),
        )
    })?;
    obj.iter()
        .map(|(name, e)| {
            let format = e
                .get("format")
                .and_then(|f| f.as_str())
                .and_then(QuantFormat::parse)
                .ok_or_else(|| {
                    bad(
                        name,
                        format!("format {:?} is not q8_0 or q4_0", e.get("format")),
                    )
                })?;
            let dims: Vec<usize> = e
                .get("shape")
                .and_then(|s| s.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|d| d.as_u64().map(|d| d as usize))
                        .collect()
                })
                .unwrap_or_default();
            match dims[..] {
                [rows, cols] => Ok((name.clone(), (format, [rows, cols]))),
                _ => Err(bad(
                    name,
                    format!("shape {:?} is not [rows, cols]", e.get("shape")),
                )),
            }
        })
        .collect()
}

impl Loader<'_> {
    /// The named tensor, its stored type recorded for `stored_dtype`.
    fn load(&mut self, name: &str, keep_half: bool) -> Result<Tensor> {
        let (t, dtype) = self.source.load(name, keep_half)?;
        self.dtypes.insert(dtype);
        Ok(t)
    }

    /// The named tensor, which must have exactly `shape`.
    fn get(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.load(name, false)?;
        if t.shape != shape {
            return Err(Error::TensorShape {
                name: name.into(),
                expected: shape.to_vec(),
                actual: t.shape,
            });
        }
        Ok(t)
    }

    /// A large matrix (in_proj, out_proj, the MLP's, the embedding, lm_head): `[rows, cols]`,
    /// any number of rows (the vocabulary, which the tensors decide) without `rows`; one the
    /// file stores in f16 is held as those f16 values only ([`Tensor::half`]): half the memory
    /// of f32, and what the CPU engine's f16 weights (the default for such a file) share
    /// without a copy.
    fn matrix(&mut self, name: &str, rows: Option<usize>, cols: usize) -> Result<Tensor> {
        let t = self.load(name, true)?;
        let fits = t.shape.len() == 2
            && t.shape[1] == cols
            && rows.map_or(t.shape[0] > 0, |r| t.shape[0] == r);
        if fits {
            return Ok(t);
        }
        let expected = match rows {
            Some(r) => vec![r, cols],
            None => vec![t.shape.first().copied().unwrap_or(1).max(1), cols],
        };
        Err(Error::TensorShape {
            name: name.into(),
            expected,
            actual: t.shape,
        })
    }
}

impl TensorSource for SafetensorsSource<'_, '_> {
    fn contains(&self, name: &str) -> bool {
        self.views.contains_key(name)
    }

    fn load(&self, name: &str, keep_half: bool) -> Result<(Tensor, String)> {
        let (file, view) = self
            .views
            .get(name)
            .ok_or_else(|| Error::MissingTensor(name.into()))?;
        let bytes = view.data();
        match (self.quantized.get(name), view.dtype()) {
            (Some(&(format, [rows, cols])), Dtype::U8) => {
                if view.shape() != [rows, format.row_bytes(cols)] || !cols.is_multiple_of(32) {
                    return Err(Error::QuantizedTensor {
                        file: file.to_string(),
                        name: name.into(),
                        reason: format!(
                            "stored as U8 {:?}, but [{rows}, {cols}] in {} is [{rows}, {}] bytes \
                             (rows a multiple of 32 weights)",
                            view.shape(),
                            format.name(),
                            format.row_bytes(cols)
                        ),
                    });
                }
                let q = QuantMatrix::from_bytes(file, name, format, rows, cols, bytes.to_vec())?;
                return Ok((Tensor::from_blocks(q), format.name().to_uppercase()));
            }
            (Some(_), other) => {
                return Err(Error::QuantizedTensor {
                    file: file.to_string(),
                    name: name.into(),
                    reason: format!("listed as quantized, but stored as {other:?}, not U8"),
                })
            }
            _ => {}
        }
        let non_finite = |(index, value)| Error::NonFiniteWeight {
            file: file.to_string(),
            name: name.into(),
            index,
            value,
        };
        if keep_half && view.dtype() == Dtype::F16 && view.shape().len() == 2 {
            let half = half_from_le(bytes).map_err(non_finite)?;
            let t = Tensor::from_shared_half(view.shape().to_vec(), Arc::new(half));
            return Ok((t, "F16".into()));
        }
        let kind = match view.dtype() {
            Dtype::F32 => StoredFloat::F32,
            Dtype::F16 => StoredFloat::F16,
            Dtype::BF16 => StoredFloat::BF16,
            other => {
                return Err(Error::UnsupportedDtype {
                    file: file.to_string(),
                    name: name.into(),
                    dtype: format!("{other:?}"),
                })
            }
        };
        let data = finite_values_from_le(bytes, kind).map_err(non_finite)?;
        Ok((
            Tensor::new(view.shape().to_vec(), data),
            format!("{:?}", view.dtype()),
        ))
    }
}

/// How a file stores a float tensor's values (little-endian).
#[derive(Clone, Copy, Debug)]
pub(crate) enum StoredFloat {
    F32,
    F16,
    BF16,
}

/// Little-endian f16 values kept as f16 (one copy of the bytes, in memory asked to be huge
/// pages), or the index and value of the first NaN or infinity among them.
pub(crate) fn half_from_le(bytes: &[u8]) -> std::result::Result<Vec<half::f16>, (usize, f32)> {
    let n = bytes.len() / 2;
    let mut half: Vec<half::f16> = crate::huge_pages::vec_with_capacity(n);
    half.extend(
        bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]])),
    );
    // All exponent bits set: an infinity or a NaN (a bit test that vectorises).
    match half.iter().position(|h| h.to_bits() & 0x7c00 == 0x7c00) {
        Some(i) => Err((i, half[i].to_f32())),
        None => Ok(half),
    }
}

/// A tensor's values as f32 ([`values_from_le`]), or the index and value of the first NaN or
/// infinity among them (as [`half_from_le`] reports one): a NaN or ±Inf in a weight poisons
/// every logit downstream, so the sources refuse the file, naming it.
pub(crate) fn finite_values_from_le(
    bytes: &[u8],
    kind: StoredFloat,
) -> std::result::Result<Vec<f32>, (usize, f32)> {
    let data = values_from_le(bytes, kind);
    match data.iter().position(|x| !x.is_finite()) {
        Some(i) => Err((i, data[i])),
        None => Ok(data),
    }
}

/// A tensor's values as f32, in memory asked to be huge pages ([`crate::huge_pages`]); `bytes`
/// is already checked to lie inside its file. Loading is a pass over the whole file, so each
/// kind is a loop that vectorises (in wasm too, where a per-value call was a third of the time
/// `createEngine` plus 64 decode tokens took).
pub(crate) fn values_from_le(bytes: &[u8], kind: StoredFloat) -> Vec<f32> {
    fn widen<const W: usize>(bytes: &[u8], f: impl Fn(&[u8]) -> f32) -> Vec<f32> {
        let mut data = crate::huge_pages::vec_with_capacity(bytes.len() / W);
        data.extend(bytes.chunks_exact(W).map(f));
        data
    }
    match kind {
        #[cfg(target_endian = "little")]
        StoredFloat::F32 => {
            let n = bytes.len() / 4;
            let mut data: Vec<f32> = crate::huge_pages::vec_with_capacity(n);
            // SAFETY: `data` has room for n values and `bytes` holds 4·n bytes; every bit
            // pattern is an f32, and on a little-endian target the bytes are the values.
            unsafe {
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), data.as_mut_ptr().cast(), 4 * n);
                data.set_len(n);
            }
            data
        }
        #[cfg(not(target_endian = "little"))]
        StoredFloat::F32 => widen::<4>(bytes, |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        StoredFloat::F16 => widen::<2>(bytes, |b| {
            let h = half::f16::from_le_bytes([b[0], b[1]]);
            // The bit-level widening is exact for finite values only; a NaN or an infinity
            // stays one, for the caller's check to name.
            if h.is_finite() {
                crate::cpu::widen_f16(h)
            } else {
                h.to_f32()
            }
        }),
        StoredFloat::BF16 => widen::<2>(bytes, |b| {
            f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16)
        }),
    }
}

fn st_error(file: &str, e: SafeTensorError) -> Error {
    let reason = match e {
        SafeTensorError::HeaderTooSmall => "the file is shorter than its 8-byte header length".into(),
        SafeTensorError::InvalidHeaderLength => {
            "the header length points past the end of the file (truncated?)".into()
        }
        SafeTensorError::HeaderTooLarge => "the header length is implausibly large".into(),
        SafeTensorError::InvalidHeader(_) => "the header is not UTF-8".into(),
        SafeTensorError::InvalidHeaderDeserialization(e) => {
            format!("the header is not valid safetensors JSON (unknown dtype?): {e}")
        }
        SafeTensorError::InvalidOffset(name) => format!(
            "tensor `{name}` has data offsets that overlap another tensor, leave a gap or run out of range"
        ),
        SafeTensorError::TensorInvalidInfo => {
            "a tensor's data offsets do not match its shape and dtype".into()
        }
        SafeTensorError::MetadataIncompleteBuffer => {
            "the tensors' data does not match the file's length (truncated or padded file)".into()
        }
        SafeTensorError::ValidationOverflow => "a tensor's shape overflows".into(),
        other => format!("{other:?}"),
    };
    Error::Safetensors {
        file: file.to_string(),
        reason,
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn mmap(path: &Path) -> Result<memmap2::Mmap> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    // SAFETY: the map is read-only and lives only while the model loads; the files are
    // not expected to change under us (the same contract every safetensors loader has).
    unsafe { memmap2::Mmap::map(&file) }.map_err(io)
}

/// The safetensors files of a model directory: those the sharded index names, or every
/// `*.safetensors` in it.
#[cfg(not(target_arch = "wasm32"))]
fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(|source| Error::Io {
            path: index.clone(),
            source,
        })?;
        let files = shard_names(&text, &index.display().to_string())?;
        return files
            .into_iter()
            .map(|f| shard_path(dir, &index, &f))
            .collect();
    }
    let entries = std::fs::read_dir(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::ModelNotFound(dir.to_path_buf()));
    }
    Ok(files)
}

/// The files a sharded index (`model.safetensors.index.json`) names in its `weight_map`,
/// sorted and without repeats; `name` names the index in errors.
pub fn shard_names(index_json: &str, name: &str) -> Result<Vec<String>> {
    let bad = |reason: String| Error::ConfigJson {
        source_name: name.to_string(),
        reason,
    };
    let v: serde_json::Value = serde_json::from_str(index_json).map_err(|e| bad(e.to_string()))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("no `weight_map` object".into()))?;
    let mut files: Vec<String> = map
        .values()
        .map(|f| {
            f.as_str()
                .map(str::to_string)
                .ok_or_else(|| bad(format!("weight_map value {f} is not a file name")))
        })
        .collect::<Result<_>>()?;
    files.sort();
    files.dedup();
    Ok(files)
}

/// A shard the index names: a plain relative path (no root, no `..`) to a regular file that,
/// with symbolic links resolved, stays inside the model's directory.
#[cfg(not(target_arch = "wasm32"))]
fn shard_path(dir: &Path, index: &Path, name: &str) -> Result<PathBuf> {
    use std::path::Component;
    let outside = || Error::ShardOutsideModel {
        index: index.display().to_string(),
        file: name.to_string(),
    };
    let rel = Path::new(name);
    if name.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(outside());
    }
    let path = dir.join(rel);
    let io = |source| Error::Io {
        path: path.clone(),
        source,
    };
    let real = path.canonicalize().map_err(io)?;
    let real_dir = dir.canonicalize().map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let meta = std::fs::metadata(&real).map_err(io)?;
    if !real.starts_with(&real_dir) || !meta.is_file() {
        return Err(outside());
    }
    Ok(path)
}

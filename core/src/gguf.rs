//! GGUF files (llama.cpp's format, versions 2 and 3) holding Mamba2 models, as llama.cpp's
//! `convert_hf_to_gguf.py` writes them (architecture `mamba2`): F32, F16, BF16, Q8_0 and Q4_0
//! tensors, the tokenizer in the metadata. Parsed here (no dependency): every count, length,
//! dimension and offset is checked against the file before anything is sized by it.
//!
//! The tensors map onto MODEL.md's names and shapes (GGUF lists dimensions innermost first):
//! `token_embd` → embeddings, `blk.N.attn_norm` → norm, `ssm_in` → in_proj, `ssm_conv1d` →
//! conv1d, `ssm_dt.bias` → dt_bias, `ssm_a` (stored as A = −exp(A_log)) → A_log = ln(−A),
//! `ssm_d` → D, `ssm_norm` → the gated norm, `ssm_out` → out_proj, `output_norm` → norm_f,
//! `output` → lm_head (absent when tied). A GGUF model is plain Mamba2: TransPoint 0 unless the
//! user gives a schedule.

use std::collections::HashMap;

use serde_json::json;

use crate::config::limits::MAX_TENSOR_ELEMENTS;
use crate::error::{Error, Result};
use crate::model::{finite_values_from_le, half_from_le, Model, StoredFloat, Tensor, TensorSource};
use crate::quant::{QuantFormat, QuantMatrix, BLOCK};
use crate::ModelConfig;

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Uint(u64),
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Array(Vec<Value>),
}

impl Value {
    fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::Uint(v) => Some(v),
            Value::Int(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
    fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::Float(v) => Some(v),
            Value::Uint(v) => Some(v as f64),
            Value::Int(v) => Some(v as f64),
            _ => None,
        }
    }
    fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// One tensor's header entry.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    /// Dimensions, innermost first (GGUF's `ne`).
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    /// Byte range in the file.
    pub start: usize,
    pub len: usize,
}

/// A parsed GGUF file: its metadata and tensor headers, the bytes borrowed.
pub struct GgufFile<'a> {
    pub name: String,
    pub version: u32,
    pub metadata: HashMap<String, Value>,
    pub tensors: HashMap<String, TensorInfo>,
    bytes: &'a [u8],
}

/// ggml tensor types this runtime reads, and their storage: (elements per block, block bytes).
fn type_layout(t: u32) -> Option<(&'static str, u64, u64)> {
    match t {
        0 => Some(("F32", 1, 4)),
        1 => Some(("F16", 1, 2)),
        2 => Some(("Q4_0", 32, 18)),
        8 => Some(("Q8_0", 32, 34)),
        30 => Some(("BF16", 1, 2)),
        _ => None,
    }
}

/// ggml's name for a type, for errors.
fn type_name(t: u32) -> String {
    let names = [
        "F32", "F16", "Q4_0", "Q4_1", "Q4_2", "Q4_3", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2_K",
        "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL",
        "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64", "IQ1_M", "BF16",
    ];
    names
        .get(t as usize)
        .map_or(format!("type {t}"), |n| n.to_string())
}

/// Whether `bytes` start like a GGUF file.
pub fn is_gguf(bytes: &[u8]) -> bool {
    bytes.starts_with(b"GGUF")
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    file: &'a str,
}

impl<'a> Reader<'a> {
    fn bad(&self, reason: String) -> Error {
        Error::Gguf {
            file: self.file.to_string(),
            reason,
        }
    }
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.bad(format!(
                "truncated: {what} needs {n} bytes at offset {}, {} left",
                self.pos,
                self.remaining()
            )));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    /// A count of items that each take at least `min_bytes`: refused if the rest of the file
    /// cannot hold them (so nothing is allocated from a hostile count).
    fn count(&mut self, what: &str, min_bytes: usize) -> Result<usize> {
        let n = self.u64(what)?;
        if n > (self.remaining() / min_bytes.max(1)) as u64 {
            return Err(self.bad(format!(
                "{what} {n} cannot fit in the {} bytes left",
                self.remaining()
            )));
        }
        Ok(n as usize)
    }
    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.count(what, 1)?;
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| self.bad(format!("{what} is not UTF-8")))
    }
    fn value(&mut self, ty: u32, key: &str, depth: u32) -> Result<Value> {
        Ok(match ty {
            0 => Value::Uint(self.take(1, key)?[0] as u64),
            1 => Value::Int(self.take(1, key)?[0] as i8 as i64),
            2 => {
                let b = self.take(2, key)?;
                Value::Uint(u16::from_le_bytes([b[0], b[1]]) as u64)
            }
            3 => {
                let b = self.take(2, key)?;
                Value::Int(i16::from_le_bytes([b[0], b[1]]) as i64)
            }
            4 => Value::Uint(self.u32(key)? as u64),
            5 => Value::Int(self.u32(key)? as i32 as i64),
            6 => Value::Float(f32::from_bits(self.u32(key)?) as f64),
            7 => Value::Bool(self.take(1, key)?[0] != 0),
            8 => Value::Str(self.string(key)?),
            9 => {
                if depth >= 4 {
                    return Err(self.bad(format!("`{key}`: arrays nested deeper than 4")));
                }
                let ety = self.u32(key)?;
                let min = match ety {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    9 => 12,
                    other => {
                        return Err(self.bad(format!("`{key}`: unknown array element type {other}")))
                    }
                };
                let n = self.count(key, min)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(ety, key, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::Uint(self.u64(key)?),
            11 => Value::Int(self.u64(key)? as i64),
            12 => Value::Float(f64::from_bits(self.u64(key)?)),
            other => return Err(self.bad(format!("`{key}`: unknown value type {other}"))),
        })
    }
}

impl<'a> GgufFile<'a> {
    /// Parses the header of `bytes`; `name` names the file in errors.
    pub fn parse(bytes: &'a [u8], name: &str) -> Result<Self> {
        let mut r = Reader {
            bytes,
            pos: 0,
            file: name,
        };
        if !is_gguf(bytes) {
            return Err(r.bad("bad magic: not a GGUF file".into()));
        }
        r.pos = 4;
        let version = r.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(r.bad(format!("version {version} is not supported (2 or 3)")));
        }
        // A tensor header takes at least 8 (name length) + 4 + 4 + 8 bytes; a key-value 8 + 4 + 1.
        let n_tensors = r.u64("tensor count")?;
        let n_kv = r.u64("metadata count")?;
        if n_tensors > (r.remaining() / 24) as u64 || n_kv > (r.remaining() / 13) as u64 {
            return Err(r.bad(format!(
                "{n_tensors} tensors and {n_kv} metadata entries cannot fit in {} bytes",
                bytes.len()
            )));
        }
        let mut metadata = HashMap::new();
        for _ in 0..n_kv {
            let key = r.string("metadata key")?;
            let ty = r.u32(&key)?;
            let v = r.value(ty, &key, 0)?;
            metadata.insert(key, v);
        }
        let alignment = match metadata.get("general.alignment") {
            None => 32,
            Some(v) => match v.as_u64() {
                Some(a) if a.is_power_of_two() && a <= 1 << 16 => a as usize,
                _ => return Err(r.bad(format!("general.alignment {v:?} is not a power of two"))),
            },
        };
        let mut infos = Vec::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let tname = r.string("tensor name")?;
            let n_dims = r.u32(&tname)?;
            if !(1..=4).contains(&n_dims) {
                return Err(r.bad(format!("tensor `{tname}` has {n_dims} dimensions (1 to 4)")));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(r.u64(&tname)?);
            }
            let ty = r.u32(&tname)?;
            let offset = r.u64(&tname)?;
            infos.push((tname, dims, ty, offset));
        }
        let data_start = r.pos.div_ceil(alignment) * alignment;
        let mut tensors = HashMap::new();
        for (tname, dims, ty, offset) in infos {
            let bad = |reason: String| Error::Gguf {
                file: name.to_string(),
                reason: format!("tensor `{tname}`: {reason}"),
            };
            let elements = dims
                .iter()
                .try_fold(1u64, |n, &d| n.checked_mul(d))
                .filter(|&n| n > 0 && n <= MAX_TENSOR_ELEMENTS)
                .ok_or_else(|| bad(format!("dimensions {dims:?} are empty or overflow")))?;
            let (_, per_block, block_bytes) = type_layout(ty).ok_or_else(|| {
                bad(format!(
                    "type {} is not supported (F32, F16, BF16, Q8_0, Q4_0)",
                    type_name(ty)
                ))
            })?;
            if !dims[0].is_multiple_of(per_block) {
                return Err(bad(format!(
                    "rows of {} values are not whole blocks of {per_block}",
                    dims[0]
                )));
            }
            if !(offset as usize as u64 == offset && (offset as usize).is_multiple_of(alignment)) {
                return Err(bad(format!(
                    "offset {offset} is not aligned to {alignment}"
                )));
            }
            let len = elements / per_block * block_bytes;
            let start = (data_start as u64).checked_add(offset);
            let end = start.and_then(|s| s.checked_add(len));
            match (start, end) {
                (Some(s), Some(e)) if e <= bytes.len() as u64 => {
                    let info = TensorInfo {
                        dims,
                        ggml_type: ty,
                        start: s as usize,
                        len: len as usize,
                    };
                    if tensors.insert(tname.clone(), info).is_some() {
                        return Err(bad("listed twice".into()));
                    }
                }
                _ => {
                    return Err(bad(format!(
                        "{len} bytes at offset {offset} run past the end of the file ({} bytes)",
                        bytes.len()
                    )))
                }
            }
        }
        Ok(Self {
            name: name.to_string(),
            version,
            metadata,
            tensors,
            bytes,
        })
    }

    fn bad(&self, reason: String) -> Error {
        Error::Gguf {
            file: self.name.clone(),
            reason,
        }
    }

    fn uint(&self, key: &str) -> Result<u64> {
        self.metadata
            .get(key)
            .and_then(Value::as_u64)
            .ok_or_else(|| self.bad(format!("metadata `{key}` is missing or not an integer")))
    }

    /// Bytes the model takes once loaded (f32 values; q8_0 / q4_0 matrices as their blocks
    /// only, f16 matrices as f16): what the browser checks against its wasm heap before loading.
    pub fn f32_bytes_needed(&self) -> u64 {
        self.tensors
            .iter()
            .map(|(name, t)| {
                let n: u64 = t.dims.iter().product();
                match t.ggml_type {
                    2 | 8 => t.len as u64,
                    // An f16 matrix is kept as f16 (`load` with `keep_half`).
                    1 if t.dims.len() == 2 && Self::is_matrix(name) => n * 2,
                    _ => n * 4,
                }
            })
            .sum()
    }

    /// The model config the metadata and tensor shapes describe (transformers' mamba2 dialect).
    fn config(&self) -> Result<ModelConfig> {
        let arch = self
            .metadata
            .get("general.architecture")
            .and_then(Value::as_str)
            .ok_or_else(|| self.bad("metadata `general.architecture` is missing".into()))?;
        if arch != "mamba2" {
            return Err(self.bad(format!(
                "architecture `{arch}` is not supported (mamba2 only)"
            )));
        }
        let key = |k: &str| self.uint(&format!("mamba2.{k}"));
        let (d, layers, conv) = (
            key("embedding_length")?,
            key("block_count")?,
            key("ssm.conv_kernel")?,
        );
        let (di, n, h, g) = (
            key("ssm.inner_size")?,
            key("ssm.state_size")?,
            key("ssm.time_step_rank")?,
            key("ssm.group_count")?,
        );
        if h == 0 || !di.is_multiple_of(h) {
            return Err(self.bad(format!(
                "ssm.inner_size {di} is not a multiple of ssm.time_step_rank (heads) {h}"
            )));
        }
        let eps = self
            .metadata
            .get("mamba2.attention.layer_norm_rms_epsilon")
            .and_then(Value::as_f64)
            .unwrap_or(1e-5);
        let vocab = self
            .tensors
            .get("token_embd.weight")
            .and_then(|t| t.dims.get(1).copied())
            .ok_or_else(|| Error::MissingTensor("token_embd.weight".into()))?;
        let has = |t: &str| self.tensors.contains_key(t);
        let cfg = json!({
            "model_type": "mamba2",
            "vocab_size": vocab,
            "hidden_size": d,
            "num_hidden_layers": layers,
            "num_heads": h,
            "head_dim": di / h,
            "state_size": n,
            "n_groups": g,
            "conv_kernel": conv,
            "use_bias": has("blk.0.ssm_in.bias"),
            "use_conv_bias": has("blk.0.ssm_conv1d.bias"),
            "layer_norm_epsilon": eps,
            "tie_word_embeddings": !has("output.weight"),
        });
        let obj = cfg.as_object().ok_or_else(|| self.bad("config".into()))?;
        ModelConfig::from_json(obj)
    }

    /// The tokenizer as a `tokenizer.json` (byte-level BPE, `tokenizer.ggml.model` = gpt2), the
    /// tokens kept below `vocab` and the merges whose pieces are tokens; `None` for other
    /// tokenizer models (text prompts are then bytes).
    fn tokenizer_json(&self, vocab: usize) -> Option<String> {
        let model = self.metadata.get("tokenizer.ggml.model")?.as_str()?;
        if model != "gpt2" {
            return None;
        }
        let Value::Array(tokens) = self.metadata.get("tokenizer.ggml.tokens")? else {
            return None;
        };
        let mut ids = serde_json::Map::new();
        for (i, t) in tokens.iter().enumerate().take(vocab) {
            let t = t.as_str()?;
            if !ids.contains_key(t) {
                ids.insert(t.to_string(), json!(i));
            }
        }
        let merges: Vec<serde_json::Value> = match self.metadata.get("tokenizer.ggml.merges") {
            Some(Value::Array(m)) => m
                .iter()
                .filter_map(Value::as_str)
                .filter(|m| {
                    m.split_once(' ').is_some_and(|(a, b)| {
                        ids.contains_key(a)
                            && ids.contains_key(b)
                            && ids.contains_key(&format!("{a}{b}"))
                    })
                })
                .map(|m| json!(m))
                .collect(),
            _ => Vec::new(),
        };
        let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false,
                                "trim_offsets": true, "use_regex": true});
        Some(
            json!({
                "version": "1.0",
                "truncation": null,
                "padding": null,
                "added_tokens": [],
                "normalizer": null,
                "pre_tokenizer": byte_level,
                "post_processor": null,
                "decoder": byte_level,
                "model": {"type": "BPE", "dropout": null, "unk_token": null,
                          "continuing_subword_prefix": null, "end_of_word_suffix": null,
                          "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                          "vocab": ids, "merges": merges},
            })
            .to_string(),
        )
    }

    /// The GGUF tensor holding MODEL.md's `name`, and how its values are rearranged.
    /// Whether `gname` (a name [`Self::gguf_name`] gives) is one of the large matrices, which
    /// load kept in f16 when stored so (the small tensors go through f32 for their fix-ups).
    fn is_matrix(gname: &str) -> bool {
        matches!(gname, "token_embd.weight" | "output.weight")
            || gname.ends_with(".ssm_in.weight")
            || gname.ends_with(".ssm_out.weight")
    }

    fn gguf_name(name: &str) -> Option<(String, Fixup)> {
        let plain = |s: String| Some((s, Fixup::None));
        match name {
            "backbone.embeddings.weight" => return plain("token_embd.weight".into()),
            "backbone.norm_f.weight" => return plain("output_norm.weight".into()),
            "lm_head.weight" => return plain("output.weight".into()),
            _ => {}
        }
        let rest = name.strip_prefix("backbone.layers.")?;
        let (i, t) = rest.split_once('.')?;
        let b = format!("blk.{i}.");
        match t {
            "norm.weight" => plain(format!("{b}attn_norm.weight")),
            "mixer.in_proj.weight" => plain(format!("{b}ssm_in.weight")),
            "mixer.in_proj.bias" => plain(format!("{b}ssm_in.bias")),
            "mixer.conv1d.weight" => Some((format!("{b}ssm_conv1d.weight"), Fixup::Conv)),
            "mixer.conv1d.bias" => plain(format!("{b}ssm_conv1d.bias")),
            "mixer.dt_bias" => plain(format!("{b}ssm_dt.bias")),
            "mixer.A_log" => Some((format!("{b}ssm_a"), Fixup::ALog)),
            "mixer.D" => Some((format!("{b}ssm_d"), Fixup::Flatten)),
            "mixer.norm.weight" => Some((format!("{b}ssm_norm.weight"), Fixup::Flatten)),
            "mixer.out_proj.weight" => plain(format!("{b}ssm_out.weight")),
            "mixer.out_proj.bias" => plain(format!("{b}ssm_out.bias")),
            _ => None,
        }
    }
}

/// How a GGUF tensor differs from MODEL.md's.
#[derive(Clone, Copy, PartialEq)]
enum Fixup {
    None,
    /// A vector stored with extra unit or group axes (D as [H, 1], the gated norm as [G, Di/G]).
    Flatten,
    /// The conv weight as [Dc, K]: MODEL.md's is [Dc, 1, K].
    Conv,
    /// A = −exp(A_log) stored; A_log = ln(−A), as a vector.
    ALog,
}

impl TensorSource for GgufFile<'_> {
    fn contains(&self, name: &str) -> bool {
        Self::gguf_name(name).is_some_and(|(g, _)| self.tensors.contains_key(&g))
    }

    fn load(&self, name: &str, keep_half: bool) -> Result<(Tensor, String)> {
        let (gname, fixup) =
            Self::gguf_name(name).ok_or_else(|| Error::MissingTensor(name.into()))?;
        let info = self
            .tensors
            .get(&gname)
            .ok_or_else(|| Error::MissingTensor(format!("{name} (GGUF `{gname}`)")))?;
        let (dtype, _, _) = type_layout(info.ggml_type)
            .ok_or_else(|| self.bad(format!("tensor `{gname}`: unsupported type")))?;
        let bytes = &self.bytes[info.start..info.start + info.len];
        // MODEL.md's shape: GGUF's dimensions reversed (outermost first).
        let mut shape: Vec<usize> = info.dims.iter().rev().map(|&d| d as usize).collect();
        let quant = match info.ggml_type {
            2 => Some(QuantFormat::Q4_0),
            8 => Some(QuantFormat::Q8_0),
            _ => None,
        };
        let non_finite = |(index, value)| Error::NonFiniteWeight {
            file: self.name.clone(),
            name: gname.clone(),
            index,
            value,
        };
        let mut t = match quant {
            Some(q) => {
                let cols = shape[shape.len() - 1];
                let rows = info.len / q.row_bytes(cols).max(1);
                if !cols.is_multiple_of(BLOCK) || shape.len() != 2 {
                    return Err(self.bad(format!(
                        "tensor `{gname}`: {} blocks are for matrices, not shape {shape:?}",
                        q.name()
                    )));
                }
                Tensor::from_blocks(QuantMatrix::from_bytes(
                    &self.name,
                    &gname,
                    q,
                    rows,
                    cols,
                    {
                        let mut v = crate::huge_pages::vec_with_capacity(bytes.len());
                        v.extend_from_slice(bytes);
                        v
                    },
                )?)
            }
            // A matrix kept in f16 (no fix-up works on it).
            None if keep_half
                && info.ggml_type == 1
                && fixup == Fixup::None
                && shape.len() == 2 =>
            {
                let half = half_from_le(bytes).map_err(non_finite)?;
                Tensor::from_shared_half(std::mem::take(&mut shape), std::sync::Arc::new(half))
            }
            None => {
                let kind = match info.ggml_type {
                    0 => StoredFloat::F32,
                    1 => StoredFloat::F16,
                    _ => StoredFloat::BF16,
                };
                let data = finite_values_from_le(bytes, kind).map_err(non_finite)?;
                Tensor::new(std::mem::take(&mut shape), data)
            }
        };
        match fixup {
            Fixup::None => {}
            Fixup::Flatten => t.shape = vec![t.data.len()],
            Fixup::Conv => {
                if let [dc, k] = t.shape[..] {
                    t.shape = vec![dc, 1, k];
                }
            }
            Fixup::ALog => {
                t.shape = vec![t.data.len()];
                if let Some(i) = t.data.iter().position(|&a| a >= 0.0) {
                    return Err(self.bad(format!(
                        "tensor `{gname}` holds A = {} at {i}; A = -exp(A_log) must be negative",
                        t.data[i]
                    )));
                }
                for a in &mut t.data {
                    *a = (-*a).ln();
                }
            }
        }
        Ok((t, dtype.to_string()))
    }
}

impl Model {
    /// A Mamba2 model from a GGUF file's bytes; `name` names it in errors.
    pub fn from_gguf_bytes(bytes: &[u8], name: &str) -> Result<Model> {
        let file = GgufFile::parse(bytes, name)?;
        let config = file.config()?;
        let mut model = Model::assemble(config, &file)?;
        model.tokenizer_json = file.tokenizer_json(model.vocab);
        Ok(model)
    }
}

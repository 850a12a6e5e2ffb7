//! Model configuration: the three config.json dialects of MODEL.md mapped onto one struct.

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::schedule::TransPoint;

/// Which dialect a config.json was written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// `"model_type": "transmamba"`.
    TransMamba,
    /// transformers' `"model_type": "mamba2"`.
    Mamba2,
    /// mamba_ssm's own `d_model` / `n_layer` / `ssm_cfg` config.
    MambaSsm,
}

/// Everything MODEL.md's forward pass needs to know about a model's shape and options.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub dialect: Dialect,
    /// V as the config states it; the tensors' row count is authoritative (see [`crate::Model`]).
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub head_dim: usize,
    pub state_size: usize,
    pub n_groups: usize,
    pub conv_kernel: usize,
    pub use_bias: bool,
    pub use_conv_bias: bool,
    pub layer_norm_epsilon: f32,
    /// `[lo, hi]` clamp of dt; `hi` may be +inf.
    pub time_step_limit: (f32, f32),
    pub tie_word_embeddings: bool,
    /// M: width of the gated MLP, 0 for none.
    pub mlp_intermediate_size: usize,
    pub attention_scale: f32,
    pub attention_gate: bool,
    pub rope_theta: Option<f32>,
    /// The model's default TransPoint per layer.
    pub transpoints: Vec<TransPoint>,
    /// The chunk size the model was trained with (a hint for the GPU scan; math does not depend on it).
    pub chunk_size: usize,
}

/// Upper bounds on a config's sizes, checked before anything is allocated from them. They are
/// far above any real model (mamba2-2.7b: 64 layers, D 2560) and keep every product below.
pub mod limits {
    /// Layers a config may declare (a per-layer schedule is allocated from it).
    pub const MAX_LAYERS: usize = 1 << 16;
    /// Any one width (hidden, heads, head_dim, state, groups, vocab, MLP): 2^24.
    pub const MAX_DIM: usize = 1 << 24;
    /// The depthwise conv's taps (4 in every known model).
    pub const MAX_CONV_KERNEL: usize = 64;
    /// Elements of any one weight tensor: kernels index them with u32 arithmetic, and on
    /// wasm32 `usize` is 32 bits.
    pub const MAX_TENSOR_ELEMENTS: u64 = u32::MAX as u64;
    /// The SSD chunk-size hint.
    pub const MAX_CHUNK: usize = 1 << 16;
}

impl ModelConfig {
    /// Di = H·P.
    pub fn d_inner(&self) -> usize {
        self.num_heads * self.head_dim
    }
    /// Dc = Di + 2·G·N: width of the conv'd xBC stream.
    pub fn d_conv(&self) -> usize {
        self.d_inner() + 2 * self.n_groups * self.state_size
    }
    /// Rows of in_proj: z | xBC | dt.
    pub fn d_in_proj(&self) -> usize {
        self.d_inner() + self.d_conv() + self.num_heads
    }
    pub fn heads_per_group(&self) -> usize {
        self.num_heads / self.n_groups
    }

    /// Parses config.json text in any of the three dialects. `source_name` names it in errors.
    pub fn from_json_str(text: &str, source_name: &str) -> Result<Self> {
        let cleaned = replace_bare_non_finite(text);
        let value: Value = serde_json::from_str(&cleaned).map_err(|e| Error::ConfigJson {
            source_name: source_name.to_string(),
            reason: e.to_string(),
        })?;
        let obj = value.as_object().ok_or_else(|| Error::ConfigJson {
            source_name: source_name.to_string(),
            reason: "the top level is not a JSON object".into(),
        })?;
        Self::from_json(obj)
    }

    pub fn from_json(obj: &Map<String, Value>) -> Result<Self> {
        let cfg = match obj.get("model_type").and_then(Value::as_str) {
            Some("transmamba") => Self::from_hf(obj, Dialect::TransMamba)?,
            Some("mamba2") => Self::from_hf(obj, Dialect::Mamba2)?,
            Some(other) => {
                return Err(Error::ConfigValue {
                    key: "model_type".into(),
                    reason: format!("`{other}` is not supported (expected transmamba or mamba2)"),
                })
            }
            None if obj.contains_key("d_model") => Self::from_mamba_ssm(obj)?,
            None => return Err(Error::MissingConfigKey("model_type".into())),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// transformers' Mamba2Config keys, plus the TransMamba keys for that dialect.
    fn from_hf(o: &Map<String, Value>, dialect: Dialect) -> Result<Self> {
        let hidden_size = req_usize(o, "hidden_size")?;
        let head_dim = req_usize(o, "head_dim")?;
        let num_heads = match opt_usize(o, "num_heads")? {
            Some(h) => h,
            None => {
                let expand = opt_usize(o, "expand")?.unwrap_or(2);
                checked_product("expand·hidden_size", &[expand, hidden_size])? / head_dim.max(1)
            }
        };
        let state_size = req_usize(o, "state_size")?;
        let num_layers = check_layers(req_usize(o, "num_hidden_layers")?, "num_hidden_layers")?;
        let transmamba = dialect == Dialect::TransMamba;
        let transpoints = match o.get("transpoints") {
            Some(v) if transmamba => parse_transpoints(v, num_layers)?,
            _ => vec![TransPoint::At(0); num_layers],
        };
        let attention_scale = match o.get("attention_scale") {
            Some(v) if transmamba && !v.is_null() => as_f32(v, "attention_scale")?,
            _ => 1.0 / (state_size as f32).sqrt(),
        };
        let rope_theta = match o.get("rope_theta") {
            Some(v) if transmamba && !v.is_null() => Some(as_f32(v, "rope_theta")?),
            _ => None,
        };
        Ok(Self {
            dialect,
            vocab_size: req_usize(o, "vocab_size")?,
            hidden_size,
            num_layers,
            num_heads,
            head_dim,
            state_size,
            n_groups: req_usize(o, "n_groups")?,
            conv_kernel: opt_usize(o, "conv_kernel")?.unwrap_or(4),
            use_bias: opt_bool(o, "use_bias")?.unwrap_or(false),
            use_conv_bias: opt_bool(o, "use_conv_bias")?.unwrap_or(true),
            layer_norm_epsilon: opt_f32(o, "layer_norm_epsilon")?.unwrap_or(1e-5),
            time_step_limit: match o.get("time_step_limit") {
                Some(v) => parse_limit(v)?,
                None => (0.0, f32::INFINITY),
            },
            tie_word_embeddings: opt_bool(o, "tie_word_embeddings")?.unwrap_or(false),
            mlp_intermediate_size: if transmamba {
                opt_usize(o, "mlp_intermediate_size")?.unwrap_or(0)
            } else {
                0
            },
            attention_scale,
            attention_gate: transmamba && opt_bool(o, "attention_gate")?.unwrap_or(false),
            rope_theta,
            transpoints,
            chunk_size: opt_usize(o, "chunk_size")?.unwrap_or(256),
        })
    }

    /// mamba_ssm's MambaConfig: `d_model`, `n_layer`, `ssm_cfg`, `d_intermediate`, `tie_embeddings`.
    fn from_mamba_ssm(o: &Map<String, Value>) -> Result<Self> {
        let empty = Map::new();
        let ssm = match o.get("ssm_cfg") {
            Some(Value::Object(m)) => m,
            Some(Value::Null) | None => &empty,
            Some(_) => {
                return Err(Error::ConfigValue {
                    key: "ssm_cfg".into(),
                    reason: "not an object".into(),
                })
            }
        };
        match ssm.get("layer").and_then(Value::as_str) {
            Some("Mamba2") => {}
            other => {
                return Err(Error::ConfigValue {
                    key: "ssm_cfg.layer".into(),
                    reason: format!("{other:?}: only Mamba2 layers are supported"),
                })
            }
        }
        if let Some(Value::Array(a)) = o.get("attn_layer_idx") {
            if !a.is_empty() {
                return Err(Error::ConfigValue {
                    key: "attn_layer_idx".into(),
                    reason: "mamba_ssm's separate attention layers are not supported".into(),
                });
            }
        }
        if opt_bool(o, "rms_norm")? == Some(false) {
            return Err(Error::ConfigValue {
                key: "rms_norm".into(),
                reason: "only RMSNorm models are supported".into(),
            });
        }
        let d_model = req_usize(o, "d_model")?;
        let expand = opt_usize(ssm, "expand")?.unwrap_or(2);
        let head_dim = opt_usize(ssm, "headdim")?.unwrap_or(64);
        let state_size = opt_usize(ssm, "d_state")?.unwrap_or(128);
        let num_layers = check_layers(req_usize(o, "n_layer")?, "n_layer")?;
        let d_inner = checked_product("ssm_cfg.expand·d_model", &[expand, d_model])?;
        if head_dim == 0 || d_inner % head_dim != 0 {
            return Err(Error::ConfigValue {
                key: "ssm_cfg.headdim".into(),
                reason: format!("{head_dim} does not divide expand·d_model = {d_inner}"),
            });
        }
        Ok(Self {
            dialect: Dialect::MambaSsm,
            vocab_size: req_usize(o, "vocab_size")?,
            hidden_size: d_model,
            num_layers,
            num_heads: d_inner / head_dim,
            head_dim,
            state_size,
            n_groups: opt_usize(ssm, "ngroups")?.unwrap_or(1),
            conv_kernel: opt_usize(ssm, "d_conv")?.unwrap_or(4),
            use_bias: opt_bool(ssm, "bias")?.unwrap_or(false),
            use_conv_bias: opt_bool(ssm, "conv_bias")?.unwrap_or(true),
            layer_norm_epsilon: opt_f32(o, "norm_epsilon")?.unwrap_or(1e-5),
            time_step_limit: match ssm.get("dt_limit") {
                Some(v) => parse_limit(v)?,
                None => (0.0, f32::INFINITY),
            },
            tie_word_embeddings: opt_bool(o, "tie_embeddings")?.unwrap_or(true),
            mlp_intermediate_size: opt_usize(o, "d_intermediate")?.unwrap_or(0),
            attention_scale: 1.0 / (state_size as f32).sqrt(),
            attention_gate: false,
            rope_theta: None,
            transpoints: vec![TransPoint::At(0); num_layers],
            chunk_size: opt_usize(ssm, "chunk_size")?.unwrap_or(256),
        })
    }

    fn validate(&self) -> Result<()> {
        let positive = [
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_layers),
            ("num_heads", self.num_heads),
            ("head_dim", self.head_dim),
            ("state_size", self.state_size),
            ("n_groups", self.n_groups),
            ("conv_kernel", self.conv_kernel),
            ("vocab_size", self.vocab_size),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(Error::ConfigValue {
                    key: key.into(),
                    reason: "must be positive".into(),
                });
            }
        }
        let bounded = [
            ("hidden_size", self.hidden_size, limits::MAX_DIM),
            ("num_heads", self.num_heads, limits::MAX_DIM),
            ("head_dim", self.head_dim, limits::MAX_DIM),
            ("state_size", self.state_size, limits::MAX_DIM),
            ("n_groups", self.n_groups, limits::MAX_DIM),
            ("vocab_size", self.vocab_size, limits::MAX_DIM),
            (
                "mlp_intermediate_size",
                self.mlp_intermediate_size,
                limits::MAX_DIM,
            ),
            ("conv_kernel", self.conv_kernel, limits::MAX_CONV_KERNEL),
            ("chunk_size", self.chunk_size, limits::MAX_CHUNK),
        ];
        for (key, v, max) in bounded {
            if v > max {
                return Err(Error::ConfigValue {
                    key: key.into(),
                    reason: format!("{v} is larger than this runtime supports ({max})"),
                });
            }
        }
        if self.chunk_size == 0 {
            return Err(Error::ConfigValue {
                key: "chunk_size".into(),
                reason: "must be positive".into(),
            });
        }
        // Every weight tensor's element count, in checked arithmetic, before any is allocated.
        let (d, h, p, n, g) = (
            self.hidden_size,
            self.num_heads,
            self.head_dim,
            self.state_size,
            self.n_groups,
        );
        let di = checked_product("num_heads·head_dim", &[h, p])?;
        let gn2 = checked_product("2·n_groups·state_size", &[2, g, n])?;
        let dc = checked_sum("d_inner + 2·n_groups·state_size", &[di, gn2])?;
        let rows = checked_sum("in_proj rows", &[di, dc, h])?;
        checked_product("in_proj (rows·hidden_size)", &[rows, d])?;
        checked_product("out_proj (hidden_size·d_inner)", &[d, di])?;
        checked_product("embedding (vocab_size·hidden_size)", &[self.vocab_size, d])?;
        checked_product("conv1d (channels·conv_kernel)", &[dc, self.conv_kernel])?;
        checked_product(
            "mlp fc1 (2·mlp_intermediate_size·hidden_size)",
            &[2, self.mlp_intermediate_size, d],
        )?;
        let finite_positive = [
            ("attention_scale", Some(self.attention_scale)),
            ("rope_theta", self.rope_theta),
        ];
        for (key, v) in finite_positive {
            if let Some(v) = v {
                if !(v.is_finite() && v > 0.0) {
                    return Err(Error::ConfigValue {
                        key: key.into(),
                        reason: format!("{v} is not a finite number > 0"),
                    });
                }
            }
        }
        if !(self.layer_norm_epsilon.is_finite() && self.layer_norm_epsilon >= 0.0) {
            return Err(Error::ConfigValue {
                key: "layer_norm_epsilon".into(),
                reason: format!("{} is not a finite number >= 0", self.layer_norm_epsilon),
            });
        }
        if !self.num_heads.is_multiple_of(self.n_groups) {
            return Err(Error::ConfigValue {
                key: "n_groups".into(),
                reason: format!(
                    "{} does not divide num_heads = {}",
                    self.n_groups, self.num_heads
                ),
            });
        }
        if self.rope_theta.is_some() && !self.state_size.is_multiple_of(2) {
            return Err(Error::ConfigValue {
                key: "rope_theta".into(),
                reason: "rotary embedding needs an even state_size".into(),
            });
        }
        let (lo, hi) = self.time_step_limit;
        if !lo.is_finite() || hi.is_nan() || lo > hi {
            return Err(Error::ConfigValue {
                key: "time_step_limit".into(),
                reason: format!("[{lo}, {hi}] is not an interval"),
            });
        }
        Ok(())
    }
}

impl ModelConfig {
    /// The number of weights the config's tensors hold at least (the vocabulary may be padded
    /// beyond `vocab_size`; a tied output matrix is not counted), in checked arithmetic: what
    /// the files must back before anything is allocated from the config.
    pub fn min_parameter_count(&self) -> Option<u64> {
        let u = |x: usize| x as u64;
        let (d, di, dc, h) = (
            u(self.hidden_size),
            u(self.d_inner()),
            u(self.d_conv()),
            u(self.num_heads),
        );
        let rows = di.checked_add(dc)?.checked_add(h)?;
        let mut layer = rows.checked_mul(d)?; // in_proj
        layer = layer.checked_add(d.checked_mul(di)?)?; // out_proj
        layer = layer.checked_add(dc.checked_mul(u(self.conv_kernel))?)?;
        layer = layer.checked_add(d.checked_add(di)?.checked_add(3 * h)?)?; // norms, dt_bias, A_log, D
        let m = u(self.mlp_intermediate_size);
        if m > 0 {
            layer = layer.checked_add(m.checked_mul(3)?.checked_mul(d)?.checked_add(d)?)?;
        }
        let body = layer.checked_mul(u(self.num_layers))?;
        body.checked_add(u(self.vocab_size).checked_mul(d)?)?
            .checked_add(d)
    }
}

fn check_layers(n: usize, key: &str) -> Result<usize> {
    if n > limits::MAX_LAYERS {
        return Err(Error::ConfigValue {
            key: key.into(),
            reason: format!(
                "{n} layers is more than this runtime supports ({})",
                limits::MAX_LAYERS
            ),
        });
    }
    Ok(n)
}

/// The product of `factors`, refused when it overflows or exceeds one tensor's limit.
fn checked_product(what: &str, factors: &[usize]) -> Result<usize> {
    let p = factors
        .iter()
        .try_fold(1u64, |acc, &f| acc.checked_mul(f as u64))
        .filter(|&p| p <= limits::MAX_TENSOR_ELEMENTS);
    p.map(|p| p as usize).ok_or_else(|| Error::ConfigValue {
        key: what.into(),
        reason: format!(
            "{} overflows this runtime's limit of {} elements per tensor",
            factors
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join("·"),
            limits::MAX_TENSOR_ELEMENTS
        ),
    })
}

fn checked_sum(what: &str, terms: &[usize]) -> Result<usize> {
    let s = terms
        .iter()
        .try_fold(0u64, |acc, &t| acc.checked_add(t as u64))
        .filter(|&s| s <= limits::MAX_TENSOR_ELEMENTS);
    s.map(|s| s as usize).ok_or_else(|| Error::ConfigValue {
        key: what.into(),
        reason: format!(
            "the sum overflows this runtime's limit of {} elements",
            limits::MAX_TENSOR_ELEMENTS
        ),
    })
}

/// transformers' older configs write a bare `Infinity`/`-Infinity`/`NaN`, which strict JSON rejects:
/// rewrite those tokens (outside strings) into the `{"__float__": ...}` spelling newer versions use.
fn replace_bare_non_finite(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            rest = &rest[c.len_utf8()..];
            continue;
        }
        if c == '"' {
            in_string = true;
        }
        let token = ["-Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|t| rest.starts_with(t));
        if let Some(t) = token {
            out.push_str(&format!("{{\"__float__\": \"{t}\"}}"));
            rest = &rest[t.len()..];
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

fn as_f32(v: &Value, key: &str) -> Result<f32> {
    let bad = || Error::ConfigValue {
        key: key.into(),
        reason: format!("expected a number, found {v}"),
    };
    match v {
        Value::Number(n) => n.as_f64().map(|x| x as f32).ok_or_else(bad),
        Value::Object(m) => match m.get("__float__").and_then(Value::as_str) {
            Some("Infinity") | Some("inf") => Ok(f32::INFINITY),
            Some("-Infinity") | Some("-inf") => Ok(f32::NEG_INFINITY),
            Some("NaN") | Some("nan") => Ok(f32::NAN),
            _ => Err(bad()),
        },
        Value::String(s) => match s.as_str() {
            "Infinity" | "inf" => Ok(f32::INFINITY),
            "-Infinity" | "-inf" => Ok(f32::NEG_INFINITY),
            _ => s.parse().map_err(|_| bad()),
        },
        _ => Err(bad()),
    }
}

fn parse_limit(v: &Value) -> Result<(f32, f32)> {
    match v.as_array().map(Vec::as_slice) {
        Some([lo, hi]) => Ok((
            as_f32(lo, "time_step_limit")?,
            as_f32(hi, "time_step_limit")?,
        )),
        _ => Err(Error::ConfigValue {
            key: "time_step_limit".into(),
            reason: format!("expected [lo, hi], found {v}"),
        }),
    }
}

fn parse_transpoints(v: &Value, layers: usize) -> Result<Vec<TransPoint>> {
    let bad = |reason: String| Error::ConfigValue {
        key: "transpoints".into(),
        reason,
    };
    let arr = v
        .as_array()
        .ok_or_else(|| bad(format!("expected a list, found {v}")))?;
    if arr.len() != layers {
        return Err(bad(format!("{} entries for {layers} layers", arr.len())));
    }
    arr.iter()
        .map(|e| match e {
            Value::Null => Ok(TransPoint::Never),
            Value::Number(n) => n
                .as_u64()
                .and_then(|x| usize::try_from(x).ok())
                .map(TransPoint::At)
                .ok_or_else(|| bad(format!("{n} is not a non-negative integer"))),
            other => Err(bad(format!("{other} is not an integer or null"))),
        })
        .collect()
}

fn opt_usize(o: &Map<String, Value>, key: &str) -> Result<Option<usize>> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            // try_from: on wasm32 `usize` is 32 bits, and a larger value must not wrap.
            n.as_u64()
                .and_then(|x| usize::try_from(x).ok())
                .map(Some)
                .ok_or_else(|| Error::ConfigValue {
                    key: key.into(),
                    reason: format!("{n} is not a non-negative integer this platform can index"),
                })
        }
        Some(v) => Err(Error::ConfigValue {
            key: key.into(),
            reason: format!("expected an integer, found {v}"),
        }),
    }
}

fn req_usize(o: &Map<String, Value>, key: &str) -> Result<usize> {
    opt_usize(o, key)?.ok_or_else(|| Error::MissingConfigKey(key.into()))
}

fn opt_bool(o: &Map<String, Value>, key: &str) -> Result<Option<bool>> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(Error::ConfigValue {
            key: key.into(),
            reason: format!("expected true or false, found {v}"),
        }),
    }
}

fn opt_f32(o: &Map<String, Value>, key: &str) -> Result<Option<f32>> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => as_f32(v, key).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HF: &str = r#"{"model_type": "mamba2", "vocab_size": 256, "hidden_size": 64,
        "num_hidden_layers": 2, "num_heads": 8, "head_dim": 16, "state_size": 16, "n_groups": 2,
        "time_step_limit": [0.0, INF]}"#;

    #[test]
    fn every_spelling_of_infinity() {
        for inf in [r#"{"__float__": "Infinity"}"#, "Infinity", r#""Infinity""#] {
            let cfg = ModelConfig::from_json_str(&HF.replace("INF", inf), "t").unwrap();
            assert_eq!(cfg.time_step_limit, (0.0, f32::INFINITY));
        }
        let cfg = ModelConfig::from_json_str(&HF.replace("INF", "0.5"), "t").unwrap();
        assert_eq!(cfg.time_step_limit, (0.0, 0.5));
    }

    #[test]
    fn infinity_inside_strings_is_left_alone() {
        let s = replace_bare_non_finite(r#"{"a": "Infinity \" NaN", "b": Infinity}"#);
        assert_eq!(
            s,
            r#"{"a": "Infinity \" NaN", "b": {"__float__": "Infinity"}}"#
        );
    }

    #[test]
    fn missing_key_is_named() {
        let text = HF.replace("INF", "1").replace(r#""state_size": 16,"#, "");
        match ModelConfig::from_json_str(&text, "t") {
            Err(Error::MissingConfigKey(k)) => assert_eq!(k, "state_size"),
            other => panic!("expected a missing key error, got {other:?}"),
        }
    }

    #[test]
    fn bad_json_is_an_error() {
        assert!(matches!(
            ModelConfig::from_json_str("{\"model_type\": ", "t"),
            Err(Error::ConfigJson { .. })
        ));
    }

    #[test]
    fn transmamba_keys() {
        let text = HF
            .replace("INF", "1")
            .replace("mamba2", "transmamba")
            .replace(
                "\"n_groups\": 2,",
                "\"n_groups\": 2, \"transpoints\": [3, null], \"rope_theta\": 10000, \
                 \"attention_gate\": true, \"mlp_intermediate_size\": 32,",
            );
        let cfg = ModelConfig::from_json_str(&text, "t").unwrap();
        assert_eq!(cfg.transpoints, vec![TransPoint::At(3), TransPoint::Never]);
        assert_eq!(cfg.rope_theta, Some(10000.0));
        assert!(cfg.attention_gate);
        assert_eq!(cfg.mlp_intermediate_size, 32);
        assert_eq!(cfg.attention_scale, 0.25);
    }
}

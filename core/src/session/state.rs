//! A sequence's state as data, and its file: what [`super::Session::save`] writes and
//! [`super::Session::restore`] reads, on either engine.
//!
//! The file is safetensors (format in ARCHITECTURE.md, "Session state files"): per layer the
//! conv state, the attention cache the schedule still holds (B, x, dt of the positions before
//! the TransPoint) and, from the TransPoint on, the SSM state; the logits of the last position;
//! in the metadata the format and its version, the position, the schedule and the model's
//! fingerprint. Every field is checked against the model before anything is allocated from it.

use std::collections::HashMap;

use rayon::prelude::*;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::config::ModelConfig;
use crate::cpu::mixer::{AttentionCache, LayerState};
use crate::error::{Error, Result};
use crate::model::{Model, Tensor};
use crate::schedule::{Schedule, ScheduleSpec, TransPoint};

/// The `format` metadata value of a session state file.
pub const STATE_FORMAT: &str = "transmamba-session";
/// The version this build writes and reads.
pub const STATE_VERSION: u32 = 1;

/// Everything a sequence remembers, host-side: enough to continue it on either engine.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionState {
    /// Tokens fed so far.
    pub position: usize,
    pub schedule: Schedule,
    /// Per layer: conv state, attention cache, SSM state (as the CPU engine keeps them).
    pub layers: Vec<LayerState>,
    /// The logits of the last fed position (`[V]`): what the next token is sampled from.
    pub logits: Option<Vec<f32>>,
}

/// A 64-bit fingerprint of a model: its shape, numeric settings and every weight's bits. It tells
/// one model from another and notices altered weights; it is not a defence against an adversary.
pub fn fingerprint(model: &Model) -> u64 {
    let c = &model.config;
    let mut head = vec![
        c.num_layers as u64,
        c.hidden_size as u64,
        c.num_heads as u64,
        c.head_dim as u64,
        c.state_size as u64,
        c.n_groups as u64,
        c.conv_kernel as u64,
        c.mlp_intermediate_size as u64,
        model.vocab as u64,
        c.layer_norm_epsilon.to_bits() as u64,
        c.attention_scale.to_bits() as u64,
        c.rope_theta.map_or(u64::MAX, |t| t.to_bits() as u64),
        c.time_step_limit.0.to_bits() as u64,
        c.time_step_limit.1.to_bits() as u64,
        c.attention_gate as u64,
    ];
    let mut tensors: Vec<&Tensor> = vec![&model.embedding, &model.norm_f];
    tensors.extend(&model.lm_head);
    for l in &model.layers {
        tensors.extend([
            &l.norm,
            &l.in_proj,
            &l.conv_weight,
            &l.dt_bias,
            &l.a_log,
            &l.d,
            &l.gated_norm,
            &l.out_proj,
        ]);
        tensors.extend(
            [&l.in_proj_bias, &l.conv_bias, &l.out_proj_bias]
                .into_iter()
                .flatten(),
        );
        if let Some(m) = &l.mlp {
            tensors.extend([&m.norm2, &m.fc1, &m.fc2]);
        }
    }
    // Tensors hashed in parallel (the weights of a 130m model take ~0.1 s on one core).
    let per_tensor: Vec<u64> = tensors.par_iter().map(|t| hash_tensor(t)).collect();
    head.extend(per_tensor);
    mix_words(head.iter().flat_map(|&v| [v as u32, (v >> 32) as u32]))
}

fn hash_tensor(t: &Tensor) -> u64 {
    let shape = t.shape.iter().map(|&d| d as u32);
    mix_words(
        shape
            .chain([u32::MAX])
            .chain(t.values().iter().map(|v| v.to_bits())),
    )
}

/// FNV-style multiply-xor over 32-bit words in four independent lanes (so the multiplies
/// pipeline), folded at the end.
fn mix_words(words: impl Iterator<Item = u32>) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut lanes = [0xcbf2_9ce4_8422_2325u64, 1, 2, 3];
    let mut n = 0u64;
    for (i, w) in words.enumerate() {
        let l = &mut lanes[i & 3];
        *l = (*l ^ w as u64).wrapping_mul(K).rotate_left(23);
        n += 1;
    }
    lanes.iter().fold(n.wrapping_mul(K), |acc, &l| {
        (acc ^ l).wrapping_mul(K).rotate_left(29)
    })
}

impl SessionState {
    /// Bytes of a state file (safetensors) for the model with `fingerprint`.
    pub fn to_bytes(&self, fingerprint: u64, engine: &str) -> Result<Vec<u8>> {
        let mut tensors: Vec<(String, Vec<usize>, &[f32])> = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            tensors.push((
                format!("layers.{i}.conv_state"),
                vec![l.conv_state.len()],
                &l.conv_state,
            ));
            let a = &l.attention_cache;
            if a.len > 0 {
                tensors.push((
                    format!("layers.{i}.attention.b"),
                    vec![a.len, a.b.len() / a.len],
                    &a.b,
                ));
                tensors.push((
                    format!("layers.{i}.attention.x"),
                    vec![a.len, a.x.len() / a.len],
                    &a.x,
                ));
                tensors.push((
                    format!("layers.{i}.attention.dt"),
                    vec![a.len, a.dt.len() / a.len],
                    &a.dt,
                ));
            }
            if let Some(s) = &l.ssm_state {
                tensors.push((format!("layers.{i}.ssm_state"), vec![s.len()], s));
            }
        }
        if let Some(logits) = &self.logits {
            tensors.push(("logits".into(), vec![logits.len()], logits));
        }
        let views = tensors
            .iter()
            .map(|(name, shape, data)| {
                let view = TensorView::new(Dtype::F32, shape.clone(), bytemuck::cast_slice(data))
                    .map_err(|e| Error::StateFile {
                    file: "(state being saved)".into(),
                    reason: format!("tensor {name}: {e}"),
                })?;
                Ok((name.clone(), view))
            })
            .collect::<Result<Vec<_>>>()?;
        let metadata = HashMap::from([
            ("format".to_string(), STATE_FORMAT.to_string()),
            ("version".to_string(), STATE_VERSION.to_string()),
            ("position".to_string(), self.position.to_string()),
            ("transpoints".to_string(), self.schedule.to_string()),
            (
                "model_fingerprint".to_string(),
                format!("{fingerprint:016x}"),
            ),
            ("engine".to_string(), engine.to_string()),
        ]);
        safetensors::tensor::serialize(views, Some(metadata)).map_err(|e| Error::StateFile {
            file: "(state being saved)".into(),
            reason: e.to_string(),
        })
    }

    /// Reads a state file (`file` names it in errors) for `config` / `vocab` and the model with
    /// `fingerprint`: the format, version, fingerprint, every shape and the schedule's
    /// consistency with the position are checked; any difference is an error naming it.
    pub fn from_bytes(
        bytes: &[u8],
        file: &str,
        config: &ModelConfig,
        vocab: usize,
        fingerprint: u64,
    ) -> Result<Self> {
        let bad = |reason: String| Error::StateFile {
            file: file.into(),
            reason,
        };
        let mismatch = |reason: String| Error::StateMismatch {
            file: file.into(),
            reason,
        };
        let (_, meta) =
            SafeTensors::read_metadata(bytes).map_err(|e| bad(format!("not safetensors: {e}")))?;
        let st =
            SafeTensors::deserialize(bytes).map_err(|e| bad(format!("not safetensors: {e}")))?;
        let info = meta.metadata().clone().unwrap_or_default();
        let field = |k: &str| {
            info.get(k)
                .map(String::as_str)
                .ok_or_else(|| bad(format!("the metadata has no `{k}`")))
        };
        if field("format")? != STATE_FORMAT {
            return Err(bad(format!(
                "format is {:?}, not {STATE_FORMAT:?} (is this a model file?)",
                field("format")?
            )));
        }
        let version = field("version")?;
        if version != STATE_VERSION.to_string() {
            return Err(bad(format!(
                "format version {version} (this build reads version {STATE_VERSION})"
            )));
        }
        let saved_fp = field("model_fingerprint")?;
        if saved_fp != format!("{fingerprint:016x}") {
            return Err(mismatch(format!(
                "it was saved from another model (fingerprint {saved_fp}, this model's is {fingerprint:016x})"
            )));
        }
        let position: usize = field("position")?
            .parse()
            .map_err(|_| bad(format!("position {:?} is not a count", field("position"))))?;
        let spec: ScheduleSpec = field("transpoints")?.parse()?;
        let schedule = spec.resolve(&config.transpoints)?;
        if schedule.len() != config.num_layers {
            return Err(mismatch(format!(
                "its schedule has {} layers, the model {}",
                schedule.len(),
                config.num_layers
            )));
        }
        let gn = config.n_groups * config.state_size;
        let (di, h) = (config.d_inner(), config.num_heads);
        let per_token = gn + di + h;
        // Every tensor must be named below; anything else is an altered file.
        let mut expected = 0usize;
        let tensor = |name: &str, len: usize, rows: Option<usize>| -> Result<Vec<f32>> {
            let t = st
                .tensor(name)
                .map_err(|_| bad(format!("tensor `{name}` is missing")))?;
            if t.dtype() != Dtype::F32 {
                return Err(bad(format!("tensor `{name}` is {:?}, not F32", t.dtype())));
            }
            let shape_ok = match rows {
                Some(r) => t.shape().len() == 2 && t.shape()[0] == r && t.shape()[1] * r == len,
                None => t.shape() == [len],
            };
            if !shape_ok || t.data().len() != 4 * len {
                return Err(mismatch(format!(
                    "tensor `{name}` has shape {:?}; this model needs {} values",
                    t.shape(),
                    len
                )));
            }
            let v: Vec<f32> = t
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                return Err(bad(format!(
                    "tensor `{name}` holds {} at element {i}",
                    v[i]
                )));
            }
            Ok(v)
        };
        // Sizes come from the file's metadata: checked, and bounded by the file's own size,
        // before anything is read or allocated from them.
        let max_values = bytes.len() / 4;
        let values = |rows: usize, width: usize| {
            rows.checked_mul(width)
                .filter(|&n| n <= max_values)
                .ok_or_else(|| {
                    mismatch(format!(
                        "position {position} under schedule {schedule} needs {rows} cached rows, more than the file holds"
                    ))
                })
        };
        // The cached rows the position implies, against the file's size, before any tensor.
        for i in 0..config.num_layers {
            let tp = schedule.layer(i);
            if !matches!(tp, TransPoint::At(tau) if position > tau) {
                values(tp.attention_len(position), per_token)?;
            }
        }
        let mut layers = Vec::with_capacity(config.num_layers);
        for i in 0..config.num_layers {
            let tp = schedule.layer(i);
            // What the schedule implies at this position (see the engines: the cache is
            // converted, and freed, when the first token at or after the TransPoint is fed).
            let has_ssm = matches!(tp, TransPoint::At(tau) if position > tau);
            let cache_len = if has_ssm {
                0
            } else {
                tp.attention_len(position)
            };
            let conv_state = tensor(
                &format!("layers.{i}.conv_state"),
                (config.conv_kernel - 1) * config.d_conv(),
                None,
            )?;
            expected += 1;
            let attention_cache = if cache_len > 0 {
                expected += 3;
                AttentionCache {
                    b: tensor(
                        &format!("layers.{i}.attention.b"),
                        values(cache_len, gn)?,
                        Some(cache_len),
                    )?,
                    x: tensor(
                        &format!("layers.{i}.attention.x"),
                        values(cache_len, di)?,
                        Some(cache_len),
                    )?,
                    dt: tensor(
                        &format!("layers.{i}.attention.dt"),
                        values(cache_len, h)?,
                        Some(cache_len),
                    )?,
                    len: cache_len,
                }
            } else {
                AttentionCache::default()
            };
            let ssm_state = if has_ssm {
                expected += 1;
                Some(tensor(
                    &format!("layers.{i}.ssm_state"),
                    di * config.state_size,
                    None,
                )?)
            } else {
                None
            };
            layers.push(LayerState {
                conv_state,
                attention_cache,
                ssm_state,
            });
        }
        let logits = match st.tensor("logits") {
            Ok(_) => {
                expected += 1;
                Some(tensor("logits", vocab, None)?)
            }
            Err(_) => None,
        };
        if position > 0 && logits.is_none() {
            return Err(bad("the logits of the last position are missing".into()));
        }
        if st.len() != expected {
            let extra: Vec<&str> = st
                .names()
                .into_iter()
                .filter(|n| !is_expected(n, &layers))
                .collect();
            return Err(mismatch(format!(
                "it holds tensors the schedule {schedule} at position {position} does not: {}",
                extra.join(", ")
            )));
        }
        Ok(Self {
            position,
            schedule,
            layers,
            logits,
        })
    }
}

fn is_expected(name: &str, layers: &[LayerState]) -> bool {
    if name == "logits" {
        return true;
    }
    let Some(rest) = name.strip_prefix("layers.") else {
        return false;
    };
    let Some((i, what)) = rest.split_once('.') else {
        return false;
    };
    let Some(l) = i.parse::<usize>().ok().and_then(|i| layers.get(i)) else {
        return false;
    };
    match what {
        "conv_state" => true,
        "attention.b" | "attention.x" | "attention.dt" => l.attention_cache.len > 0,
        "ssm_state" => l.ssm_state.is_some(),
        _ => false,
    }
}

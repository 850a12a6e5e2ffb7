//! A model's weights on the GPU, uploaded once at load.

use std::sync::Arc;

use crate::config::ModelConfig;
use crate::error::Result;
use crate::gpu::{GpuBuffer, GpuContext, GpuMatrix, SsmDims, WeightFormat};
use crate::model::{Model, Tensor};

pub(crate) struct GpuLayer {
    pub norm: GpuBuffer,
    pub in_proj: GpuMatrix,
    pub in_proj_bias: Option<GpuBuffer>,
    pub conv_weight: GpuBuffer,
    pub conv_bias: Option<GpuBuffer>,
    pub dt_bias: GpuBuffer,
    pub a_log: GpuBuffer,
    pub d: GpuBuffer,
    pub gated_norm: GpuBuffer,
    pub out_proj: GpuMatrix,
    pub out_proj_bias: Option<GpuBuffer>,
    pub mlp: Option<GpuMlp>,
}

pub(crate) struct GpuMlp {
    pub norm2: GpuBuffer,
    pub fc1: GpuMatrix,
    pub fc2: GpuMatrix,
}

/// Options of the GPU engine.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Chunk size of the SSD scan (and the memory converter); the math does not depend on it.
    /// 128 by default: at the mamba2-130m shape (N = 128) prefill of 512 tokens took 4.0-4.2 s
    /// against 4.8-5.4 s at 64 and 4.6 s at 256 on lavapipe (fewer chunk states to compute and
    /// pass); no difference at the small preset.
    pub chunk_size: u32,
    /// Most tokens one submission processes; longer prompts run as consecutive pieces.
    pub max_rows: u32,
    /// How weight matrices are stored on the device (`F16` halves their bytes; f32 compute).
    pub weights: WeightFormat,
    /// Attention (without RoPE) as two products over the cache held in textures
    /// (`ops::attention_products`); `false`: the fused kernel over the cache buffers.
    pub attention_products: bool,
    /// Fold the norm weights into in_proj / out_proj (f32 weights) so that decode runs the
    /// norms, the conv step and the gate inside the products and the SSM step (3 dispatches a
    /// layer instead of 6) and prefill's products normalise their rows themselves. `false`
    /// keeps them separate (same results within rounding; for A/B measurements).
    pub fused_decode: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            chunk_size: 128,
            max_rows: 1024,
            weights: WeightFormat::F32,
            attention_products: true,
            fused_decode: true,
        }
    }
}

/// A model uploaded to a GPU: the device context plus every weight, built once.
pub struct GpuModel {
    pub ctx: Arc<GpuContext>,
    pub config: ModelConfig,
    pub vocab: usize,
    pub options: EngineOptions,
    pub(crate) embedding: GpuMatrix,
    pub(crate) lm_head: Option<GpuMatrix>,
    pub(crate) norm_f: GpuBuffer,
    pub(crate) layers: Vec<GpuLayer>,
    /// Whether each layer's norm weights are folded into the matrices they feed (in_proj,
    /// out_proj) and the uploaded norm weights are ones: then decode and prefill run the norms
    /// inside the products (`ops::matmul_normed`, `ops::matmul_gated_normed`). See
    /// [`GpuModel::new`].
    pub(crate) folded_norms: bool,
    /// Whether decode runs the norms inside quantized products with their weights applied to X
    /// (`ops::matvec_quant_normed`): q8_0 / q4_0 weights, whose blocks a folded weight would
    /// change. Prefill runs the norms separately then.
    pub(crate) quant_norms: bool,
}

impl GpuModel {
    /// Uploads `model` to the device of `ctx` (shared: several models may live on one device). Matrices larger than the binding limit are split.
    pub fn new(ctx: Arc<GpuContext>, model: &Model, options: EngineOptions) -> Result<Self> {
        let up = |label: &str, t: &Tensor| ctx.upload_f32(label, &t.values());
        let opt = |label: &str, t: &Option<Tensor>| t.as_ref().map(|t| up(label, t)).transpose();
        let mat = |label: &str, t: &Tensor| -> Result<GpuMatrix> {
            Ok(match options.weights.quant() {
                // A quantized file's own blocks, else quantized here (crate::quant).
                Some(q) => GpuMatrix::from_quant(ctx.as_ref(), label, &*t.quantized(label, q)?)?,
                None => GpuMatrix::from_f32_as(
                    ctx.as_ref(),
                    label,
                    &t.values(),
                    t.shape[0],
                    t.shape[1],
                    options.weights,
                )?,
            })
        };
        // RMSNorm(x; g) . W^T = (x / rms(x)) . (W diag(g))^T: with g folded into W's columns the
        // norms need no dispatch of their own (the products accumulate each row's sum of
        // squares in their loop; ~0.1 ms per dispatch on lavapipe, and prefill's gated norm
        // was 8% of it). Only for f32
        // weights (rounding W g to f16 would add an error an f16 model does not have) and
        // shapes the fused kernel takes; the other paths normalise with unit weights.
        let c = &model.config;
        let folded_norms = options.fused_decode
            && options.weights == WeightFormat::F32
            && c.hidden_size.is_multiple_of(4)
            && c.n_groups > 0
            && c.d_inner().is_multiple_of(4 * c.n_groups);
        let quant_norms = options.fused_decode
            && options.weights.quant().is_some()
            && c.n_groups > 0
            && c.d_inner().is_multiple_of(32 * c.n_groups);
        let folded = |label: &str, t: &Tensor, g: &Tensor| {
            let (rows, cols) = (t.shape[0], t.shape[1]);
            let values = t.values();
            if g.data.len() != cols {
                return Err(crate::gpu::GpuError::Shape {
                    op: "fold norm weight",
                    detail: format!("{label}: {} weights for {cols} columns", g.data.len()),
                });
            }
            GpuMatrix::from_fn(
                ctx.as_ref(),
                label,
                rows,
                cols,
                options.weights,
                |r, out| {
                    let src = &values[r.start * cols..r.end * cols];
                    for (o, (v, k)) in out.iter_mut().zip(src.iter().zip((0..cols).cycle())) {
                        *o = v * g.data[k];
                    }
                },
            )
        };
        // One buffer of unit weights serves every folded norm (they read its first D or Di).
        let ones = if folded_norms {
            let n = c.hidden_size.max(c.d_inner());
            Some(ctx.upload_f32("unit norm weights", &vec![1.0; n])?)
        } else {
            None
        };
        let mut layers = Vec::with_capacity(model.layers.len());
        for w in &model.layers {
            let (norm, in_proj, gated_norm, out_proj) = if let Some(ones) = &ones {
                (
                    ones.clone(),
                    folded("in_proj", &w.in_proj, &w.norm)?,
                    ones.clone(),
                    folded("out_proj", &w.out_proj, &w.gated_norm)?,
                )
            } else {
                (
                    up("norm", &w.norm)?,
                    mat("in_proj", &w.in_proj)?,
                    up("mixer.norm", &w.gated_norm)?,
                    mat("out_proj", &w.out_proj)?,
                )
            };
            layers.push(GpuLayer {
                norm,
                in_proj,
                in_proj_bias: opt("in_proj.bias", &w.in_proj_bias)?,
                conv_weight: up("conv1d.weight", &w.conv_weight)?,
                conv_bias: opt("conv1d.bias", &w.conv_bias)?,
                dt_bias: up("dt_bias", &w.dt_bias)?,
                a_log: up("A_log", &w.a_log)?,
                d: up("D", &w.d)?,
                gated_norm,
                out_proj,
                out_proj_bias: opt("out_proj.bias", &w.out_proj_bias)?,
                mlp: match &w.mlp {
                    Some(m) => Some(GpuMlp {
                        norm2: up("norm2", &m.norm2)?,
                        fc1: mat("fc1", &m.fc1)?,
                        fc2: mat("fc2", &m.fc2)?,
                    }),
                    None => None,
                },
            });
        }
        Ok(Self {
            embedding: mat("embeddings", &model.embedding)?,
            lm_head: model
                .lm_head
                .as_ref()
                .map(|t| mat("lm_head", t))
                .transpose()?,
            norm_f: up("norm_f", &model.norm_f)?,
            layers,
            folded_norms,
            quant_norms,
            vocab: model.vocab,
            config: model.config.clone(),
            options: EngineOptions {
                chunk_size: options.chunk_size.max(1),
                max_rows: options.max_rows.max(1),
                ..options
            },
            ctx,
        })
    }

    pub(crate) fn output_matrix(&self) -> &GpuMatrix {
        self.lm_head.as_ref().unwrap_or(&self.embedding)
    }

    /// The SSM / attention sizes of the model, as the kernels take them.
    pub fn dims(&self) -> SsmDims {
        let c = &self.config;
        SsmDims {
            heads: c.num_heads as u32,
            head_dim: c.head_dim as u32,
            state: c.state_size as u32,
            groups: c.n_groups as u32,
        }
    }
}

//! Weight matrices as the CPU engine's products read them: the model's own f32 tensors, or
//! copies of the large ones (in_proj, out_proj, the MLP, the embedding and the output matrix)
//! in f16, q8_0 or q4_0, which cut the bytes a decode step streams from memory (what bounds
//! decode here); the product loops widen or dequantize them to f32 as they read.
//!
//! f16 storage is lossless for a model stored in f16 (what `--weights auto` picks for one) and
//! rounds an f32 model's weights otherwise (`--weights f16`), refusing values beyond f16's range.
//! q8_0 / q4_0 reuse a quantized file's own blocks and quantize anything else ([`crate::quant`]).

use std::sync::Arc;

use half::f16;

use crate::error::{Error, Result};
use crate::model::{LayerWeights, Model, Tensor};
use crate::quant::QuantMatrix;
use crate::weight_format::WeightFormat;

/// A `[rows, cols]` weight matrix (checkpoint layout: `[out, in]`).
#[derive(Clone, Copy)]
pub enum Matrix<'a> {
    F32(&'a Tensor),
    F16 {
        data: &'a [f16],
        rows: usize,
        cols: usize,
    },
    Quant(&'a QuantMatrix),
}

impl Matrix<'_> {
    pub fn rows(&self) -> usize {
        match self {
            Matrix::F32(t) => t.shape[0],
            Matrix::F16 { rows, .. } => *rows,
            Matrix::Quant(q) => q.rows,
        }
    }
    pub fn cols(&self) -> usize {
        match self {
            Matrix::F32(t) => t.shape[1],
            Matrix::F16 { cols, .. } => *cols,
            Matrix::Quant(q) => q.cols,
        }
    }

    /// Row `r` as the products see it (widened or dequantized), appended to `out`.
    pub fn read_row(&self, r: usize, out: &mut Vec<f32>) {
        match self {
            Matrix::F32(t) => out.extend_from_slice(&t.data[r * t.shape[1]..(r + 1) * t.shape[1]]),
            // As the products widen it (finite values: checked when stored).
            Matrix::F16 { data, cols, .. } => out.extend(
                data[r * cols..(r + 1) * cols]
                    .iter()
                    .map(|&h| super::simd::widen_f16(h)),
            ),
            Matrix::Quant(q) => {
                let at = out.len();
                out.resize(at + q.cols, 0.0);
                q.dequantize_row(r, &mut out[at..]);
            }
        }
    }
}

/// One matrix's copy.
enum Copy {
    F16 {
        data: Arc<Vec<f16>>,
        rows: usize,
        cols: usize,
    },
    Quant(Arc<QuantMatrix>),
}

impl Copy {
    fn new(name: &str, t: &Tensor, format: WeightFormat) -> Result<Self> {
        if let Some(q) = format.quant() {
            let m = t.quantized(name, q)?;
            // q4_0 in groups of 8 rows where the CPU's kernel reads them so (fixed_dot.rs).
            if super::fixed_dot::groups_pay_off(q) {
                if let Some(g) = m.grouped() {
                    return Ok(Copy::Quant(Arc::new(g)));
                }
            }
            return Ok(Copy::Quant(m));
        }
        if let (Some(h), &[rows, cols]) = (&t.half, &t.shape[..]) {
            if t.data.is_empty() {
                // Held as f16 already (shared with an engine's copy): share it again.
                return Ok(Copy::F16 {
                    data: h.clone(),
                    rows,
                    cols,
                });
            }
        }
        let values = t.values();
        if let Some(index) = crate::model::first_beyond_f16(&values) {
            return Err(Error::F16Overflow {
                name: name.to_string(),
                index,
                value: values[index],
            });
        }
        Ok(Copy::F16 {
            data: {
                let mut data = crate::huge_pages::vec_with_capacity(values.len());
                data.extend(values.iter().map(|&v| f16::from_f32(v)));
                Arc::new(data)
            },
            rows: t.shape[0],
            cols: t.shape[1],
        })
    }

    fn view(&self) -> Matrix<'_> {
        match self {
            Copy::F16 { data, rows, cols } => Matrix::F16 {
                data,
                rows: *rows,
                cols: *cols,
            },
            Copy::Quant(q) => Matrix::Quant(q),
        }
    }

    fn shape(&self) -> [usize; 2] {
        let v = self.view();
        [v.rows(), v.cols()]
    }

    /// A tensor holding this copy (shared, not copied), for the model to read in place of the
    /// matrix it copies.
    fn tensor(&self) -> Tensor {
        match self {
            Copy::Quant(q) => Tensor::from_shared_blocks(q.clone()),
            Copy::F16 { data, rows, cols } => {
                Tensor::from_shared_half(vec![*rows, *cols], data.clone())
            }
        }
    }
}

struct CopyLayer {
    in_proj: Copy,
    out_proj: Copy,
    mlp: Option<(Copy, Copy)>,
}

impl CopyLayer {
    fn new(i: usize, w: &LayerWeights, format: WeightFormat) -> Result<Self> {
        let name = |t: &str| format!("layer {i} {t}");
        Ok(CopyLayer {
            in_proj: Copy::new(&name("in_proj"), &w.in_proj, format)?,
            out_proj: Copy::new(&name("out_proj"), &w.out_proj, format)?,
            mlp: match &w.mlp {
                Some(m) => Some((
                    Copy::new(&name("mlp.fc1"), &m.fc1, format)?,
                    Copy::new(&name("mlp.fc2"), &m.fc2, format)?,
                )),
                None => None,
            },
        })
    }

    /// Gives layer `w` these copies in place of its matrices.
    fn share_with(&self, w: &mut LayerWeights) {
        w.in_proj = self.in_proj.tensor();
        w.out_proj = self.out_proj.tensor();
        if let (Some((a, b)), Some(m)) = (&self.mlp, &mut w.mlp) {
            m.fc1 = a.tensor();
            m.fc2 = b.tensor();
        }
    }
}

/// Copies of a model's large matrices in one format, built once per model
/// ([`crate::cpu::CpuSession::with_weights`]).
pub struct WeightCopies {
    format: WeightFormat,
    layers: Vec<CopyLayer>,
    output: Copy,
    /// The embedding's copy when it is not the output matrix (untied); tied models read
    /// `output`'s rows.
    embedding: Option<Copy>,
}

impl WeightCopies {
    /// Copies in `format` (f16, q8_0 or q4_0; f32 needs none and is refused here).
    pub fn new(model: &Model, format: WeightFormat) -> Result<Self> {
        Self::refuse_f32(format)?;
        let layers = model
            .layers
            .iter()
            .enumerate()
            .map(|(i, w)| CopyLayer::new(i, w, format))
            .collect::<Result<Vec<_>>>()?;
        let embedding = match &model.lm_head {
            Some(_) => Some(Copy::new("embedding", &model.embedding, format)?),
            None => None,
        };
        Ok(Self {
            format,
            layers,
            output: Copy::new("output matrix", model.output_matrix(), format)?,
            embedding,
        })
    }

    fn refuse_f32(format: WeightFormat) -> Result<()> {
        if format == WeightFormat::F32 {
            return Err(Error::InvalidOption {
                name: "weights",
                reason: "f32 matrices are the model's own; no copies to make".into(),
            });
        }
        Ok(())
    }

    pub fn format(&self) -> WeightFormat {
        self.format
    }

    /// Copies in `format` that `model` then reads in place of its own matrices (shared, not
    /// copied), freeing the originals the engine never reads again: an engine of an f32
    /// mamba2-130m then holds 72 MB of matrices in q4_0, not 587 MB, and an f16-stored model's
    /// matrices once, in f16. Made and swapped in one layer at a time, so loading holds the
    /// model plus one layer's copies at most (q4_0 copies regrouped for the x86 kernels are new
    /// bytes even when the file's blocks are q4_0). `before` sees the model once, before the
    /// first matrix whose values change (not at all when every matrix is already stored in
    /// `format`: regrouping keeps the values).
    pub(crate) fn sharing(
        model: &mut Model,
        format: WeightFormat,
        before: impl FnOnce(&Model),
    ) -> Result<Self> {
        Self::refuse_f32(format)?;
        let stored = |t: &Tensor| match format.quant() {
            Some(q) => t.blocks_only().is_some_and(|b| b.format == q),
            None => t.half_only().is_some(),
        };
        if !model.matrices().into_iter().all(stored) {
            before(model);
        }
        let mut layers = Vec::with_capacity(model.layers.len());
        for (i, w) in model.layers.iter_mut().enumerate() {
            let l = CopyLayer::new(i, w, format)?;
            l.share_with(w);
            layers.push(l);
        }
        let embedding = match &model.lm_head {
            Some(_) => {
                let e = Copy::new("embedding", &model.embedding, format)?;
                model.embedding = e.tensor();
                Some(e)
            }
            None => None,
        };
        let output = Copy::new("output matrix", model.output_matrix(), format)?;
        *model.lm_head.as_mut().unwrap_or(&mut model.embedding) = output.tensor();
        Ok(Self {
            format,
            layers,
            output,
            embedding,
        })
    }

    /// Whether these copies fit `model` (same layers, same shapes).
    pub(crate) fn check(&self, model: &Model) -> Result<()> {
        let same = |m: &Copy, t: &Tensor| t.shape[..] == m.shape();
        let fits = self.layers.len() == model.layers.len()
            && same(&self.output, model.output_matrix())
            && self.embedding.is_some() == model.lm_head.is_some()
            && self.layers.iter().zip(&model.layers).all(|(f, w)| {
                same(&f.in_proj, &w.in_proj)
                    && same(&f.out_proj, &w.out_proj)
                    && match (&f.mlp, &w.mlp) {
                        (Some((a, b)), Some(m)) => same(a, &m.fc1) && same(b, &m.fc2),
                        (None, None) => true,
                        _ => false,
                    }
            });
        if fits {
            Ok(())
        } else {
            let [r, c] = self.output.shape();
            Err(Error::WeightsMismatch {
                detail: format!(
                    "{} layers, output matrix {r}x{c}; the model has {} layers",
                    self.layers.len(),
                    model.layers.len()
                ),
            })
        }
    }
}

/// The matrices one layer's products read: the copies when there are, else the model's tensors.
pub(crate) struct LayerMatrices<'a> {
    pub in_proj: Matrix<'a>,
    pub out_proj: Matrix<'a>,
    pub fc1: Option<Matrix<'a>>,
    pub fc2: Option<Matrix<'a>>,
}

pub(crate) fn layer_matrices<'a>(
    model: &'a Model,
    copies: Option<&'a WeightCopies>,
    i: usize,
) -> LayerMatrices<'a> {
    let w = &model.layers[i];
    match copies.and_then(|f| f.layers.get(i)) {
        Some(l) => LayerMatrices {
            in_proj: l.in_proj.view(),
            out_proj: l.out_proj.view(),
            fc1: l.mlp.as_ref().map(|(a, _)| a.view()),
            fc2: l.mlp.as_ref().map(|(_, b)| b.view()),
        },
        None => LayerMatrices {
            in_proj: Matrix::from(&w.in_proj),
            out_proj: Matrix::from(&w.out_proj),
            fc1: w.mlp.as_ref().map(|m| Matrix::from(&m.fc1)),
            fc2: w.mlp.as_ref().map(|m| Matrix::from(&m.fc2)),
        },
    }
}

/// The embedding as the products see it: its copy when there are copies (the output matrix's
/// when tied, as the GPU engine's storage has it), else the model's tensor.
pub(crate) fn embedding_matrix<'a>(
    model: &'a Model,
    copies: Option<&'a WeightCopies>,
) -> Matrix<'a> {
    match copies {
        Some(f) => f.embedding.as_ref().unwrap_or(&f.output).view(),
        None => Matrix::from(&model.embedding),
    }
}

pub(crate) fn output_matrix<'a>(model: &'a Model, copies: Option<&'a WeightCopies>) -> Matrix<'a> {
    match copies {
        Some(f) => f.output.view(),
        None => Matrix::from(model.output_matrix()),
    }
}

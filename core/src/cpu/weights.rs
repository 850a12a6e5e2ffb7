//! Weight matrices as the CPU engine's products read them: the model's own f32 tensors, or f16
//! copies of the large ones (in_proj, out_proj, the MLP and the output matrix), which halve the
//! bytes a decode step streams from memory; the product loops widen them to f32 as they read.
//!
//! f16 storage is lossless for a model stored in f16 (what `--weights auto` picks for one) and
//! rounds an f32 model's weights otherwise (`--weights f16`), refusing values beyond f16's range.

use half::f16;

use crate::error::{Error, Result};
use crate::model::{Model, Tensor};

/// A `[rows, cols]` weight matrix (checkpoint layout: `[out, in]`).
#[derive(Clone, Copy)]
pub enum Matrix<'a> {
    F32(&'a Tensor),
    F16 {
        data: &'a [f16],
        rows: usize,
        cols: usize,
    },
}

impl Matrix<'_> {
    pub fn rows(&self) -> usize {
        match self {
            Matrix::F32(t) => t.shape[0],
            Matrix::F16 { rows, .. } => *rows,
        }
    }
    pub fn cols(&self) -> usize {
        match self {
            Matrix::F32(t) => t.shape[1],
            Matrix::F16 { cols, .. } => *cols,
        }
    }
}

struct F16Matrix {
    data: Vec<f16>,
    rows: usize,
    cols: usize,
}

impl F16Matrix {
    fn new(name: &str, t: &Tensor) -> Result<Self> {
        if let Some(index) = crate::model::first_beyond_f16(&t.data) {
            return Err(Error::F16Overflow {
                name: name.to_string(),
                index,
                value: t.data[index],
            });
        }
        Ok(Self {
            data: t.data.iter().map(|&v| f16::from_f32(v)).collect(),
            rows: t.shape[0],
            cols: t.shape[1],
        })
    }

    fn view(&self) -> Matrix<'_> {
        Matrix::F16 {
            data: &self.data,
            rows: self.rows,
            cols: self.cols,
        }
    }
}

struct F16Layer {
    in_proj: F16Matrix,
    out_proj: F16Matrix,
    mlp: Option<(F16Matrix, F16Matrix)>,
}

/// f16 copies of a model's large matrices, built once per model ([`crate::cpu::CpuSession::with_f16`]).
pub struct F16Weights {
    layers: Vec<F16Layer>,
    output: F16Matrix,
}

impl F16Weights {
    pub fn new(model: &Model) -> Result<Self> {
        let layers = model
            .layers
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let name = |t: &str| format!("layer {i} {t}");
                Ok(F16Layer {
                    in_proj: F16Matrix::new(&name("in_proj"), &w.in_proj)?,
                    out_proj: F16Matrix::new(&name("out_proj"), &w.out_proj)?,
                    mlp: match &w.mlp {
                        Some(m) => Some((
                            F16Matrix::new(&name("mlp.fc1"), &m.fc1)?,
                            F16Matrix::new(&name("mlp.fc2"), &m.fc2)?,
                        )),
                        None => None,
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            layers,
            output: F16Matrix::new("output matrix", model.output_matrix())?,
        })
    }

    /// Whether these copies fit `model` (same layers, same shapes).
    pub(crate) fn check(&self, model: &Model) -> Result<()> {
        let same = |m: &F16Matrix, t: &Tensor| t.shape == [m.rows, m.cols];
        let fits = self.layers.len() == model.layers.len()
            && same(&self.output, model.output_matrix())
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
            Err(Error::WeightsMismatch {
                detail: format!(
                    "{} layers, output matrix {}x{}; the model has {} layers",
                    self.layers.len(),
                    self.output.rows,
                    self.output.cols,
                    model.layers.len()
                ),
            })
        }
    }
}

/// The matrices one layer's products read: f16 copies when there are, else the model's tensors.
pub(crate) struct LayerMatrices<'a> {
    pub in_proj: Matrix<'a>,
    pub out_proj: Matrix<'a>,
    pub fc1: Option<Matrix<'a>>,
    pub fc2: Option<Matrix<'a>>,
}

pub(crate) fn layer_matrices<'a>(
    model: &'a Model,
    f16: Option<&'a F16Weights>,
    i: usize,
) -> LayerMatrices<'a> {
    let w = &model.layers[i];
    match f16.and_then(|f| f.layers.get(i)) {
        Some(l) => LayerMatrices {
            in_proj: l.in_proj.view(),
            out_proj: l.out_proj.view(),
            fc1: l.mlp.as_ref().map(|(a, _)| a.view()),
            fc2: l.mlp.as_ref().map(|(_, b)| b.view()),
        },
        None => LayerMatrices {
            in_proj: Matrix::F32(&w.in_proj),
            out_proj: Matrix::F32(&w.out_proj),
            fc1: w.mlp.as_ref().map(|m| Matrix::F32(&m.fc1)),
            fc2: w.mlp.as_ref().map(|m| Matrix::F32(&m.fc2)),
        },
    }
}

pub(crate) fn output_matrix<'a>(model: &'a Model, f16: Option<&'a F16Weights>) -> Matrix<'a> {
    match f16 {
        Some(f) => f.output.view(),
        None => Matrix::F32(model.output_matrix()),
    }
}

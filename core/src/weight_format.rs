//! How an engine stores a model's weight matrices (in_proj, out_proj, the MLP, the embedding and
//! the output matrix); norms, conv, A_log, D and dt_bias stay f32 in every format.

use crate::quant::QuantFormat;

/// The storage of the large matrices, on either engine. f16 rounds (no shader-f16 needed: the
/// GPU unpacks halves from u32 words); q8_0 / q4_0 are GGUF's block formats ([`crate::quant`]),
/// dequantized inside the product kernels. Compute is f32 in every format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum WeightFormat {
    #[default]
    F32,
    F16,
    Q8_0,
    Q4_0,
}

impl WeightFormat {
    pub const ALL: [WeightFormat; 4] = [
        WeightFormat::F32,
        WeightFormat::F16,
        WeightFormat::Q8_0,
        WeightFormat::Q4_0,
    ];

    /// What `auto` means: the format the file stores its matrices in (lossless): q4_0 or q8_0
    /// for a quantized file, f16 for a file in f16, else f32.
    pub fn auto_for(model: &crate::Model) -> Self {
        let stored = |d: &str| model.stored_dtype.split('+').any(|s| s == d);
        if stored("Q4_0") {
            WeightFormat::Q4_0
        } else if stored("Q8_0") {
            WeightFormat::Q8_0
        } else if model.stored_dtype == "F16" {
            WeightFormat::F16
        } else {
            WeightFormat::F32
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            WeightFormat::F32 => "f32",
            WeightFormat::F16 => "f16",
            WeightFormat::Q8_0 => "q8_0",
            WeightFormat::Q4_0 => "q4_0",
        }
    }

    /// `f32`, `f16`, `q8_0`, `q4_0` (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(s))
    }

    /// The block format, for q8_0 / q4_0.
    pub fn quant(self) -> Option<QuantFormat> {
        match self {
            WeightFormat::Q8_0 => Some(QuantFormat::Q8_0),
            WeightFormat::Q4_0 => Some(QuantFormat::Q4_0),
            _ => None,
        }
    }

    /// Bytes a weight takes (blocks included: 34 / 32 and 18 / 32).
    pub fn bytes_per_weight(self) -> f64 {
        match self {
            WeightFormat::F32 => 4.0,
            WeightFormat::F16 => 2.0,
            WeightFormat::Q8_0 => 34.0 / 32.0,
            WeightFormat::Q4_0 => 18.0 / 32.0,
        }
    }
}

impl From<QuantFormat> for WeightFormat {
    fn from(q: QuantFormat) -> Self {
        match q {
            QuantFormat::Q8_0 => WeightFormat::Q8_0,
            QuantFormat::Q4_0 => WeightFormat::Q4_0,
        }
    }
}

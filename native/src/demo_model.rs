//! The demo model (trained by `demo/train`, shipped as `demo/transmamba-demo.safetensors`),
//! built into the binary so `tm-run generate --prompt ...` works with nothing to download.
//! Its tokenizer travels in the file's metadata.

use std::path::Path;

use transmamba::text::TextCodec;
use transmamba::Model;

use crate::AnyResult;

/// Shown where a model path would be.
pub const NAME: &str = "<embedded demo model>";

static BYTES: &[u8] = include_bytes!("../../demo/transmamba-demo.safetensors");

/// The model at `path`, or the embedded demo model when there is none.
pub fn load(path: Option<&Path>) -> AnyResult<Model> {
    Ok(match path {
        Some(p) => Model::load(p)?,
        None => Model::from_safetensors_bytes(BYTES, NAME)?,
    })
}

/// The model and its text codec (metadata tokenizer, a tokenizer.json beside it, or bytes).
pub fn load_with_codec(path: Option<&Path>) -> AnyResult<(Model, TextCodec)> {
    let model = load(path)?;
    let codec = TextCodec::for_model(&model, path)?;
    Ok((model, codec))
}

pub fn display(path: Option<&Path>) -> String {
    path.map_or(NAME.to_string(), |p| p.display().to_string())
}

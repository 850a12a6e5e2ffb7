//! Typed errors for everything a user's input can get wrong.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed safetensors file {file}: {reason}")]
    Safetensors { file: String, reason: String },
    #[error("tensor `{name}` in {file} has unsupported dtype {dtype} (expected F32, F16, BF16, or U8 blocks listed in __metadata__.quantization)")]
    UnsupportedDtype {
        file: String,
        name: String,
        dtype: String,
    },
    #[error("missing tensor `{0}`")]
    MissingTensor(String),
    #[error("tensor `{name}` has shape {actual:?}, but the config implies {expected:?}")]
    TensorShape {
        name: String,
        expected: Vec<usize>,
        actual: Vec<usize>,
    },
    #[error("bad config JSON in {source_name}: {reason}")]
    ConfigJson { source_name: String, reason: String },
    #[error("config is missing required key `{0}`")]
    MissingConfigKey(String),
    #[error("config key `{key}` is invalid: {reason}")]
    ConfigValue { key: String, reason: String },
    #[error("no model found at {0}: expected a directory with config.json and *.safetensors, or a .safetensors file with the config in its metadata")]
    ModelNotFound(PathBuf),
    #[error("invalid TransPoint schedule `{spec}`: {reason}")]
    Schedule { spec: String, reason: String },
    #[error("the schedule has {got} entries but the model has {layers} layers")]
    ScheduleLength { got: usize, layers: usize },
    #[error("token id {token} at position {position} is out of range (vocabulary size {vocab})")]
    TokenOutOfRange {
        token: u32,
        position: usize,
        vocab: usize,
    },
    #[error("the token list is empty")]
    EmptyTokens,
    #[error("malformed token list `{0}`: expected comma-separated integers")]
    TokenList(String),
    #[error("invalid {name}: {reason}")]
    InvalidOption { name: &'static str, reason: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("tensor `{name}` in {file} holds a non-finite value ({value} at element {index}); the weights are corrupt")]
    NonFiniteWeight {
        file: String,
        name: String,
        index: usize,
        value: f32,
    },
    #[error("{name}: the weight {value} (element {index}) is outside f16's range (±65504) and would become infinite: store the weights in f32 (--weights f32)")]
    F16Overflow {
        name: String,
        index: usize,
        value: f32,
    },
    #[error("cannot quantize `{name}` to {format}: {reason}")]
    Quantize {
        name: String,
        format: &'static str,
        reason: String,
    },
    #[error("quantized tensor `{name}` in {file}: {reason}")]
    QuantizedTensor {
        file: String,
        name: String,
        reason: String,
    },
    #[error("malformed GGUF file {file}: {reason}")]
    Gguf { file: String, reason: String },
    #[error("these weight copies were made for another model ({detail})")]
    WeightsMismatch { detail: String },
    #[error("tensor `{name}` is stored twice: in {first} and in {second}")]
    DuplicateTensor {
        name: String,
        first: String,
        second: String,
    },
    #[error("the config implies at least {params} weights ({min_bytes} bytes or more), but the model's files hold {file_bytes} bytes: the config does not match the files")]
    ConfigExceedsFiles {
        params: u64,
        min_bytes: u64,
        file_bytes: u64,
    },
    #[error("the sharded index {index} names `{file}`, which is not a regular file inside the model's directory")]
    ShardOutsideModel { index: String, file: String },
    #[error("the logits at position {position} are not finite ({value}): the computation overflowed or the weights are corrupt; generation stopped")]
    NonFiniteLogits { position: usize, value: f32 },
    #[error("malformed session state {file}: {reason}")]
    StateFile { file: String, reason: String },
    #[error("the session state {file} does not fit this model: {reason}")]
    StateMismatch { file: String, reason: String },
    #[error("the session is unusable: {0}; start a new session or restore a saved state")]
    SessionPoisoned(String),
    #[error("GPU: {0}")]
    Gpu(#[from] crate::gpu::GpuError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

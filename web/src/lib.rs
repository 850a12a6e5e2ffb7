//! The browser side of transmamba: a wasm-bindgen module over the `transmamba` core crate.
//!
//! This is the low-level layer; the npm package's hand-written ES module (`web/npm/`) wraps it,
//! runs it in a Web Worker and gives it the public API. Every export returns `Result` (a JS
//! `Error` with a human message) instead of panicking; a panic hook records the message of any
//! panic that slips through so the worker can report it instead of "unreachable".
//!
//! Options and results cross the boundary as JSON strings: the worker parses them, and the
//! shapes are documented in `web/npm/index.d.ts`.

#![cfg(target_arch = "wasm32")]

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use js_sys::Uint8Array;
use js_sys::{Float32Array, Function, Promise};
use serde::Deserialize;
use serde_json::{json, Value};
use transmamba::engine::EngineOptions;
use transmamba::engine_choice::{choose, AdapterFacts, EngineChoice, EngineKind, EnginePreference};
use transmamba::gpu::{GpuContext, GpuOptions, KernelChoice, WeightFormat};
use transmamba::sampling::SamplingOptions;
use transmamba::schedule::{Schedule, ScheduleSpec, TransPoint};
use transmamba::session::{self, Generator, Session};
use transmamba::text::TextCodec;
use transmamba::{Logits, Model, ModelConfig};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{future_to_promise, JsFuture};

#[cfg(target_feature = "atomics")]
mod threads;

static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Installs the panic hook (idempotent). Called by the worker right after instantiation.
#[wasm_bindgen(js_name = installPanicHook)]
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = info.to_string();
        if let Ok(mut g) = LAST_PANIC.lock() {
            *g = Some(msg);
        }
    }));
}

/// The message of the last panic, if one happened (cleared by reading it).
#[wasm_bindgen(js_name = takePanic)]
pub fn take_panic() -> Option<String> {
    LAST_PANIC.lock().ok().and_then(|mut g| g.take())
}

fn js_err(e: impl std::fmt::Display) -> JsError {
    JsError::new(&e.to_string())
}

fn js_val(e: impl std::fmt::Display) -> JsValue {
    JsError::new(&e.to_string()).into()
}

/// Options of `createEngine` (JSON, camelCase).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
struct LoadOptions {
    /// Request shader-f16 when the adapter offers it.
    prefer_f16: bool,
    /// Pretend the storage-binding limit is at most this many bytes (splits weight matrices).
    max_binding_size: Option<u64>,
    /// Test hook: pretend the device's largest buffer is this many bytes (allocations beyond
    /// it fail, as out-of-memory would).
    max_buffer_size: Option<u64>,
    /// SSD scan chunk size.
    chunk_size: Option<u32>,
    /// Most tokens one submission processes.
    max_rows: Option<u32>,
    /// Weight storage: "auto" (f16 for a model stored in f16, else f32), "f32" or "f16".
    weights: Option<String>,
    /// "auto" (WebGPU on a real GPU, the CPU engine on a software or missing adapter),
    /// "webgpu" or "cpu".
    device: Option<String>,
    /// WebGPU kernel plan: "auto", "gpu", "portable" or "cpu-adapter".
    kernels: Option<String>,
}

/// What the worker found of WebGPU (JSON): `{ "name", "fallback" }`, or `{ "error" }`.
#[derive(Deserialize, Default)]
#[serde(default)]
struct WebAdapter {
    name: String,
    fallback: bool,
    error: Option<String>,
}

/// Options of `generate` (JSON, camelCase).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
struct GenerateOptions {
    max_tokens: usize,
    temperature: f32,
    top_k: usize,
    top_p: f32,
    seed: u64,
    transpoints: String,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_tokens: 64,
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
            transpoints: "config".into(),
        }
    }
}

fn parse_options<T: for<'de> Deserialize<'de> + Default>(
    json: &str,
    what: &str,
) -> Result<T, String> {
    if json.trim().is_empty() {
        return Ok(T::default());
    }
    serde_json::from_str(json).map_err(|e| format!("invalid {what} options: {e}"))
}

struct Inner {
    engine: session::Engine,
    codec: TextCodec,
    name: String,
    parameters: usize,
    dtype: String,
    /// Cache state of the most recent sequence (generate or forward), for `info()`.
    last_cache: RefCell<Value>,
}

impl Inner {
    fn config(&self) -> &ModelConfig {
        self.engine.config()
    }

    fn vocab(&self) -> usize {
        self.engine.vocab()
    }
}

/// A model on its engine (WebGPU or the CPU engine), with its text codec.
#[wasm_bindgen]
pub struct Engine {
    inner: Rc<Inner>,
}

/// Loads a model from the bytes of one `.safetensors` file (config in `__metadata__.config`),
/// with its tokenizer (given, or carried in `__metadata__.tokenizer`), and puts it on the engine
/// the `device` option and the adapter the worker found (`adapter_json`, see [`WebAdapter`])
/// resolve to: a new WebGPU device, or the CPU engine in this module.
#[wasm_bindgen(js_name = createEngine)]
pub async fn create_engine(
    model_bytes: Vec<u8>,
    name: String,
    tokenizer_json: Option<Vec<u8>>,
    options_json: String,
    adapter_json: String,
) -> Result<Engine, JsError> {
    let opts: LoadOptions = parse_options(&options_json, "load").map_err(js_err)?;
    let adapter: WebAdapter = parse_options(&adapter_json, "adapter").map_err(js_err)?;
    let (choice, facts) = engine_choice(&opts, &adapter)?;
    if let (EngineKind::Gpu, Some(e)) = (choice.kind, &adapter.error) {
        return Err(JsError::new(e));
    }
    let weights = match opts.weights.as_deref().unwrap_or("auto") {
        "auto" => None,
        other => Some(WeightFormat::parse(other).ok_or_else(|| {
            JsError::new(&format!(
                "load option `weights` must be \"auto\", \"f32\", \"f16\", \"q8_0\" or \"q4_0\", not {other:?}"
            ))
        })?),
    };
    let kernels = match opts.kernels.as_deref() {
        None => KernelChoice::Auto,
        Some(k) => KernelChoice::parse(k).ok_or_else(|| {
            JsError::new(&format!(
                "load option `kernels` must be \"auto\", \"gpu\", \"portable\" or \"cpu-adapter\", not {k:?}"
            ))
        })?,
    };
    reserve_model_memory(&model_bytes)?;
    let model = Model::from_file_bytes(&model_bytes, &name).map_err(js_err)?;
    // A tokenizer given by the caller wins over the one the file carries in its metadata.
    let codec = match tokenizer_json {
        Some(b) => TextCodec::from_tokenizer_json(&b, "tokenizer.json").map_err(js_err)?,
        None => TextCodec::from_metadata(&model)
            .map_err(js_err)?
            .unwrap_or(TextCodec::Bytes),
    };
    drop(model_bytes);
    let (parameters, dtype) = (model.parameter_count(), model.stored_dtype.clone());
    let weights = weights.unwrap_or_else(|| WeightFormat::auto_for(&model));
    let engine = match choice.kind {
        EngineKind::Cpu => session::Engine::cpu(model, weights, choice).map_err(js_err)?,
        EngineKind::Gpu => {
            let ctx = GpuContext::new(GpuOptions {
                max_binding_size: opts.max_binding_size,
                max_buffer_size: opts.max_buffer_size,
                kernels,
                prefer_f16: opts.prefer_f16,
                software_adapter: facts.is_software(),
                ..GpuOptions::default()
            })
            .await
            .map_err(js_err)?;
            let defaults = EngineOptions::default();
            let engine_opts = EngineOptions {
                chunk_size: opts.chunk_size.unwrap_or(defaults.chunk_size),
                max_rows: opts.max_rows.unwrap_or(defaults.max_rows),
                weights,
                ..defaults
            };
            // The module is single-threaded: wgpu's web types are neither Send nor Sync.
            #[allow(clippy::arc_with_non_send_sync)]
            let ctx = Arc::new(ctx);
            let engine =
                session::Engine::on_gpu(ctx, &model, engine_opts, choice).map_err(js_err)?;
            drop(model);
            // Surface validation errors of the uploads now rather than at the first forward.
            if let Some(g) = engine.gpu() {
                g.ctx.check().map_err(js_err)?;
            }
            engine
        }
    };
    Ok(Engine {
        inner: Rc::new(Inner {
            engine,
            parameters,
            dtype,
            codec,
            name,
            last_cache: RefCell::new(Value::Null),
        }),
    })
}

/// Which engine `createEngine` would put a model on: `"cpu"` or `"webgpu"` (the worker starts
/// the threaded module's pool only for the CPU engine).
#[wasm_bindgen(js_name = chooseEngine)]
pub fn choose_engine(options_json: String, adapter_json: String) -> Result<String, JsError> {
    let opts: LoadOptions = parse_options(&options_json, "load").map_err(js_err)?;
    let adapter: WebAdapter = parse_options(&adapter_json, "adapter").map_err(js_err)?;
    let (choice, _) = engine_choice(&opts, &adapter)?;
    Ok(match choice.kind {
        EngineKind::Cpu => "cpu",
        EngineKind::Gpu => "webgpu",
    }
    .into())
}

/// The `device` option and what the worker found of WebGPU, resolved by core's engine choice.
fn engine_choice(
    opts: &LoadOptions,
    adapter: &WebAdapter,
) -> Result<(EngineChoice, AdapterFacts), JsError> {
    let pref = match opts.device.as_deref().unwrap_or("auto") {
        "auto" => EnginePreference::Auto,
        "webgpu" => EnginePreference::Gpu,
        "cpu" => EnginePreference::Cpu,
        other => {
            return Err(JsError::new(&format!(
                "load option `device` must be \"auto\", \"webgpu\" or \"cpu\", not {other:?}"
            )))
        }
    };
    let facts = AdapterFacts {
        name: adapter.name.clone(),
        cpu_device_type: false,
        fallback: adapter.fallback,
    };
    let choice = match &adapter.error {
        Some(e) => choose(pref, Err(e.as_str())),
        None => choose(pref, Ok(&facts)),
    };
    Ok((choice, facts))
}

/// Grows the wasm heap to what the weights will take once loaded (f32, or f16 / blocks for the
/// matrices a file stores so; beside the file's bytes, still held)
/// before loading, then frees it for the loader: a model too big for the heap (at most 4 GiB in
/// wasm32, often less) is then this error naming the sizes, not an abort mid-load.
fn reserve_model_memory(model_bytes: &[u8]) -> Result<(), JsError> {
    let Some(need) = Model::f32_bytes_needed(model_bytes) else {
        return Ok(()); // a malformed header: the loader says what is wrong with it
    };
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let too_big = || {
        JsError::new(&format!(
            "the model needs {:.0} MiB of memory for its weights once loaded, beside the {:.0} MiB \
             of the file itself, and the browser's WebAssembly memory cannot grow that far \
             (at most 4 GiB, often less): use a smaller model or one stored in fewer bits",
            mib(need),
            mib(model_bytes.len() as u64)
        ))
    };
    let need = usize::try_from(need).map_err(|_| too_big())?;
    let mut probe: Vec<u8> = Vec::new();
    probe.try_reserve_exact(need).map_err(|_| too_big())?;
    Ok(())
}

fn schedule_string(s: &[TransPoint]) -> String {
    Schedule(s.to_vec()).to_string()
}

/// Cache state of a session: totals and, per layer, attention positions vs SSM positions and
/// the bytes of each part.
fn cache_snapshot(cfg: &ModelConfig, session: &Session) -> Value {
    // The caches' position: tokens fed so far (a just-sampled token is fed with the next step).
    let pos = session.fed();
    let per_token = cfg.n_groups * cfg.state_size + cfg.d_inner() + cfg.num_heads;
    let conv = 4 * (cfg.conv_kernel - 1) * cfg.d_conv();
    let ssm_len = 4 * cfg.d_inner() * cfg.state_size;
    let mut totals = (0usize, 0usize, 0usize);
    let layers: Vec<Value> = session
        .layer_states()
        .into_iter()
        .enumerate()
        .map(|(i, (entries, has_ssm))| {
            let tp = session.schedule().layer(i);
            let attention_positions = tp.attention_len(pos);
            let attention_bytes = 4 * entries * per_token;
            let ssm_bytes = if has_ssm { ssm_len } else { 0 };
            totals.0 += attention_bytes;
            totals.1 += ssm_bytes;
            totals.2 += conv;
            json!({
                "transpoint": tp.to_string(),
                "attentionPositions": attention_positions,
                "ssmPositions": pos - attention_positions,
                "attentionEntries": entries,
                "ssmState": has_ssm,
                "attentionBytes": attention_bytes,
                "ssmBytes": ssm_bytes,
                "convBytes": conv,
            })
        })
        .collect();
    json!({
        "position": pos,
        "transpoints": session.schedule().to_string(),
        "cacheBytes": session.cache_bytes(),
        "attentionBytes": totals.0,
        "ssmBytes": totals.1,
        "convBytes": totals.2,
        "layers": layers,
    })
}

fn resolve_schedule(cfg: &ModelConfig, spec: &str) -> Result<Schedule, String> {
    let spec: ScheduleSpec = spec.parse().map_err(|e: transmamba::Error| e.to_string())?;
    spec.resolve(&cfg.transpoints).map_err(|e| e.to_string())
}

fn now_ms() -> f64 {
    js_sys::Date::now()
}

#[wasm_bindgen]
impl Engine {
    /// Model shape, adapter, features and cache in use, as a JSON string.
    pub fn info(&self) -> String {
        let inner = &self.inner;
        let c = inner.config();
        let model = json!({
            "name": inner.name,
            "dialect": format!("{:?}", c.dialect),
            "layers": c.num_layers,
            "hiddenSize": c.hidden_size,
            "heads": c.num_heads,
            "headDim": c.head_dim,
            "stateSize": c.state_size,
            "groups": c.n_groups,
            "convKernel": c.conv_kernel,
            "mlpSize": c.mlp_intermediate_size,
            "vocab": inner.vocab(),
            "parameters": inner.parameters,
            "dtype": inner.dtype,
            "transpoints": schedule_string(&c.transpoints),
            "ropeTheta": c.rope_theta,
            "attentionGate": c.attention_gate,
        });
        let engine = json!({
            "kind": inner.engine.choice().kind.name(),
            "reason": inner.engine.choice().reason,
        });
        let mut info = match inner.engine.gpu() {
            Some(m) => {
                let (ctx, a) = (&m.ctx, &m.ctx.info);
                json!({
                    "adapter": {
                        "name": a.name,
                        "vendor": a.vendor,
                        "device": a.device,
                        "driver": a.driver,
                        "driverInfo": a.driver_info,
                        "backend": format!("{:?}", a.backend),
                        "deviceType": format!("{:?}", a.device_type),
                    },
                    "shaderF16": ctx.has_f16(),
                    "kernels": ctx.kernels(),
                    "weights": m.options.weights.name(),
                    "limits": {
                        "maxStorageBufferBindingSize": ctx.limits.max_storage_buffer_binding_size,
                        "maxBufferSize": ctx.limits.max_buffer_size,
                        "bindingSizeUsed": ctx.max_binding_size(),
                    },
                })
            }
            // The CPU engine, SIMD128: rayon's pool over Web Workers in the threaded module,
            // the worker's own thread alone in the other.
            None => json!({
                "adapter": null,
                "shaderF16": false,
                "weights": inner.engine.weights().name(),
                "limits": null,
                "threads": rayon::current_num_threads(),
                // Bytes of the output screen greedy and top-k decoding read (0: none).
                "outputScreenBytes": inner.engine.screen_bytes(),
            }),
        };
        info["engine"] = engine;
        info["model"] = model;
        info["tokenizer"] = json!(inner.codec.name());
        info["cache"] = inner.last_cache.borrow().clone();
        info.to_string()
    }

    /// The vocabulary size (token ids must be below it).
    pub fn vocab(&self) -> usize {
        self.inner.vocab()
    }

    /// Text to token ids (the model's tokenizer.json, or bytes).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, JsError> {
        self.inner.codec.encode(text).map_err(js_err)
    }

    /// Token ids to text.
    pub fn decode(&self, tokens: Vec<u32>) -> Result<String, JsError> {
        self.inner.codec.decode(&tokens).map_err(js_err)
    }

    /// Checks a schedule against the model and returns it resolved (`"8,inf"`).
    #[wasm_bindgen(js_name = resolveTranspoints)]
    pub fn resolve_transpoints(&self, spec: &str) -> Result<String, JsError> {
        resolve_schedule(self.inner.config(), spec)
            .map(|s| s.to_string())
            .map_err(js_err)
    }

    /// One forward pass of a fresh sequence over `tokens` under the schedule `transpoints`.
    /// Resolves to a Float32Array: `[T * vocab]` when `all`, else the last row `[vocab]`.
    pub fn forward(&self, tokens: Vec<u32>, transpoints: String, all: bool) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let schedule = resolve_schedule(inner.config(), &transpoints).map_err(js_val)?;
            let mut session = inner.engine.session(schedule).map_err(js_val)?;
            let which = if all { Logits::All } else { Logits::Last };
            let logits = session.forward(&tokens, which).await.map_err(js_val)?;
            *inner.last_cache.borrow_mut() = cache_snapshot(inner.config(), &session);
            Ok(Float32Array::from(&logits[..]).into())
        })
    }

    /// Generates from the prompt `tokens` in a fresh sequence with the options JSON
    /// (`maxTokens`, `temperature`, `topK`, `topP`, `seed`, `transpoints`). Calls
    /// `on_step(stepJson)` for every token; a return value of `false` stops. Resolves to a
    /// summary JSON string.
    pub fn generate(&self, tokens: Vec<u32>, options_json: String, on_step: Function) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let opts: GenerateOptions = parse_options(&options_json, "generate").map_err(js_val)?;
            let schedule = resolve_schedule(inner.config(), &opts.transpoints).map_err(js_val)?;
            let mut session = inner.engine.session(schedule).map_err(js_val)?;
            let summary = run_generation(&inner, &mut session, &tokens, &opts, &on_step).await?;
            Ok(JsValue::from_str(&summary.to_string()))
        })
    }

    /// Resolves with the reason when the GPU device is lost (never on the CPU engine): the
    /// worker then refuses further calls and tells the page.
    pub fn lost(&self) -> Promise {
        let ctx = self.inner.engine.gpu().map(|g| g.ctx.clone());
        future_to_promise(async move {
            match ctx {
                Some(ctx) => Ok(JsValue::from_str(&ctx.lost().await)),
                None => std::future::pending().await,
            }
        })
    }

    /// Test hooks for the fault paths: `"loseDevice"` destroys the GPU device, as a driver
    /// reset would; `"failNextSubmission"` makes the device reject a submission right after
    /// the next step's.
    #[wasm_bindgen(js_name = debugFault)]
    pub fn debug_fault(&self, kind: &str) -> Result<(), JsError> {
        if kind == "panicOnPoolThread" {
            // A bug on one of the pool's threads: with panic=abort it ends that thread's
            // instance and this one would wait on the job forever; the page must hear of it.
            rayon::scope(|s| s.spawn(|_| panic!("debug fault: a panic on a pool thread")));
            return Ok(());
        }
        let gpu = self
            .inner
            .engine
            .gpu()
            .ok_or_else(|| JsError::new("fault hooks need the WebGPU engine"))?;
        match kind {
            "loseDevice" => gpu.ctx.destroy_device(),
            "failNextSubmission" => gpu.ctx.fail_next_submission(),
            other => return Err(JsError::new(&format!("unknown fault {other:?}"))),
        }
        Ok(())
    }

    /// A new sequence that lasts across calls, under the schedule `transpoints`.
    #[wasm_bindgen(js_name = createSession)]
    pub fn create_session(&self, transpoints: &str) -> Result<WebSession, JsError> {
        let schedule = resolve_schedule(self.inner.config(), transpoints).map_err(js_err)?;
        let session = self.inner.engine.session(schedule).map_err(js_err)?;
        Ok(WebSession::new(&self.inner, session))
    }

    /// A sequence continuing from a state file's bytes (saved here or by `tm-run`, on either
    /// engine); an `Error` naming what does not fit otherwise.
    #[wasm_bindgen(js_name = restoreSession)]
    pub fn restore_session(&self, bytes: Vec<u8>, name: &str) -> Result<WebSession, JsError> {
        let session = self.inner.engine.restore(&bytes, name).map_err(js_err)?;
        Ok(WebSession::new(&self.inner, session))
    }
}

/// The generation loop of `generate` and `Session.generate` (core's [`Generator`], as
/// `tm-run generate` runs it, so the same state, prompt and options give the same tokens).
async fn run_generation(
    inner: &Inner,
    session: &mut Session,
    tokens: &[u32],
    opts: &GenerateOptions,
    on_step: &Function,
) -> Result<Value, JsValue> {
    let cfg = inner.config();
    let gen_opts = session::GenerateOptions {
        max_tokens: opts.max_tokens,
        sampling: SamplingOptions {
            temperature: opts.temperature,
            top_k: opts.top_k,
            top_p: opts.top_p,
            seed: opts.seed,
        },
        stop_tokens: Vec::new(),
    };
    let mut generator = Generator::new(&inner.codec, &gen_opts).map_err(js_val)?;
    let resumed_at = session.position();
    let t0 = now_ms();
    generator.start(session, tokens).await.map_err(js_val)?;
    let prefill_ms = now_ms() - t0;
    let t1 = now_ms();
    let mut stopped = false;
    while let Some(step) = generator.next(session).await.map_err(js_val)? {
        let cache = cache_snapshot(cfg, session);
        let json = json!({
            "index": step.index,
            "token": step.token,
            "text": step.text,
            "elapsedMs": now_ms() - t1,
            "cache": cache,
        });
        *inner.last_cache.borrow_mut() = cache;
        // The worker answers with a promise that settles after a macrotask, so an abort
        // message reaches it between steps even when the engine never awaits anything itself
        // (the CPU engine computes synchronously).
        let mut keep = on_step.call1(&JsValue::NULL, &JsValue::from_str(&json.to_string()))?;
        if let Some(p) = keep.dyn_ref::<Promise>() {
            keep = JsFuture::from(p.clone()).await?;
        }
        if keep == JsValue::FALSE {
            stopped = true;
            break;
        }
    }
    let decode_ms = now_ms() - t1;
    let out = generator.tokens();
    let steps = out.len().saturating_sub(1);
    let cache = cache_snapshot(cfg, session);
    *inner.last_cache.borrow_mut() = cache.clone();
    Ok(json!({
        "transpoints": session.schedule().to_string(),
        "resumedAt": resumed_at,
        "position": session.position(),
        "promptTokens": tokens,
        "tokens": out,
        "text": inner.codec.decode(out).map_err(js_val)?,
        "stopped": stopped,
        "prefillMs": prefill_ms,
        "prefillTokensPerS": tokens.len() as f64 / (prefill_ms.max(1e-3) / 1e3),
        "decodeMs": decode_ms,
        "decodeTokensPerS": if steps > 0 { steps as f64 / (decode_ms.max(1e-3) / 1e3) } else { 0.0 },
        "cache": cache,
    }))
}

/// A sequence that lasts across calls (JS `model.session()`): each `generate` continues it;
/// `save` gives its state file's bytes; `fork` an independent copy.
#[wasm_bindgen]
pub struct WebSession {
    inner: Rc<Inner>,
    /// `None` while a call holds it (calls on one session must not overlap).
    session: Rc<RefCell<Option<Session>>>,
}

impl WebSession {
    fn new(inner: &Rc<Inner>, session: Session) -> Self {
        Self {
            inner: inner.clone(),
            session: Rc::new(RefCell::new(Some(session))),
        }
    }
}

/// Takes a session out for one call and puts it back after, even when the call fails.
struct Lease {
    slot: Rc<RefCell<Option<Session>>>,
    session: Option<Session>,
}

impl Lease {
    fn take(slot: &Rc<RefCell<Option<Session>>>) -> Result<Self, JsValue> {
        let session = slot.borrow_mut().take().ok_or_else(|| {
            js_val("this session is busy with another call (await it first) or was disposed")
        })?;
        Ok(Self {
            slot: slot.clone(),
            session: Some(session),
        })
    }

    /// The session, held from `take` until drop (an `Option` only so `Drop` can hand it back).
    fn get(&mut self) -> Result<&mut Session, JsValue> {
        self.session
            .as_mut()
            .ok_or_else(|| js_val("this session was handed back before the call ended"))
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        *self.slot.borrow_mut() = self.session.take();
    }
}

#[wasm_bindgen]
impl WebSession {
    /// Continues the sequence: appends `tokens` (may be empty to continue from the last token)
    /// and generates with the options JSON (`maxTokens`, `temperature`, `topK`, `topP`, `seed`;
    /// the schedule is the session's). Resolves to the summary JSON string.
    pub fn generate(&self, tokens: Vec<u32>, options_json: String, on_step: Function) -> Promise {
        let (inner, slot) = (self.inner.clone(), self.session.clone());
        future_to_promise(async move {
            let opts: GenerateOptions = parse_options(&options_json, "generate").map_err(js_val)?;
            let mut lease = Lease::take(&slot)?;
            let summary = run_generation(&inner, lease.get()?, &tokens, &opts, &on_step).await?;
            Ok(JsValue::from_str(&summary.to_string()))
        })
    }

    /// The state file's bytes (a `Uint8Array`): the position, schedule and per-layer state.
    pub fn save(&self) -> Promise {
        let slot = self.session.clone();
        future_to_promise(async move {
            let mut lease = Lease::take(&slot)?;
            let bytes = lease.get()?.save().await.map_err(js_val)?;
            Ok(Uint8Array::from(&bytes[..]).into())
        })
    }

    /// An independent copy of the sequence (resolves to a `WebSession`).
    pub fn fork(&self) -> Promise {
        let (inner, slot) = (self.inner.clone(), self.session.clone());
        future_to_promise(async move {
            let mut lease = Lease::take(&slot)?;
            let copy = lease.get()?.fork().await.map_err(js_val)?;
            Ok(WebSession::new(&inner, copy).into())
        })
    }

    /// Position, schedule and cache bytes per layer, as a JSON string.
    pub fn stats(&self) -> Result<String, JsError> {
        let slot = self.session.borrow();
        let session = slot
            .as_ref()
            .ok_or_else(|| JsError::new("this session is busy with another call"))?;
        Ok(cache_snapshot(self.inner.config(), session).to_string())
    }
}

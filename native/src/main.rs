//! `tm-run`: run TransMamba and Mamba2 models from the command line.

mod backend;
mod bench;
mod chat;
mod demo_model;
mod generate;
mod perplexity;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand, ValueEnum};
use transmamba::engine::EngineOptions;
use transmamba::memory::{cache_bytes, format_bytes};
use transmamba::sampling::SamplingOptions;
use transmamba::synthetic::{
    random_model, write_model_dir, write_single_file, RandomSpec, StoreAs,
};
use transmamba::text::TextCodec;
use transmamba::{npy, tokens::parse_token_list};
use transmamba::{Logits, Model, ScheduleSpec};

use backend::{Backend, Kernels, Weights};

#[derive(Parser)]
#[command(
    name = "tm-run",
    version,
    about = "Run TransMamba / Mamba2 models (WebGPU, or the CPU reference)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// GPU engine kernel plan: `auto` (`cpu-adapter` on CPU adapters with 8-wide subgroups,
    /// such as lavapipe; else `gpu`), `gpu` (kernels for real GPUs and browsers: any subgroup
    /// width, workgroup memory without subgroups), `portable` (no subgroups, no shader-f16:
    /// what every adapter runs) or `cpu-adapter` (the 8-wide subgroup kernels; an error
    /// elsewhere). `inspect` shows the kernel of each step.
    #[arg(long, global = true, value_enum, default_value_t = Kernels::Auto)]
    kernels: Kernels,
}

/// A schedule: `config`, a number, `inf`, a comma list of those (one per layer), or `paper`.
const SPEC_HELP: &str =
    "TransPoint schedule: `config`, a number, `inf`, a comma list of those, or `paper`";

#[derive(Subcommand)]
enum Command {
    /// One forward pass over a token list; writes the logits [T, vocab] as float32 .npy.
    Forward {
        /// Model directory (config.json + safetensors) or a .safetensors with the config inside;
        /// without it, the embedded demo model.
        #[arg(long)]
        model: Option<PathBuf>,
        /// Token ids `1,2,3`, or `@FILE` holding them.
        #[arg(long)]
        tokens: String,
        #[arg(long, default_value = "config", help = SPEC_HELP)]
        transpoints: String,
        #[arg(long, value_enum, default_value_t = Backend::Auto)]
        backend: Backend,
        /// Weight matrix storage (either engine): `auto` keeps the file's format (q4_0, q8_0, f16, else f32); q8_0 / q4_0 quantize at load.
        #[arg(long, value_enum, default_value_t = Weights::Auto)]
        weights: Weights,
        /// Write the logits here (.npy); without it, print a summary.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Generate text, streaming tokens as they come.
    Generate {
        /// Model path; without it, the embedded demo model.
        #[arg(long)]
        model: Option<PathBuf>,
        /// Text prompt (the model's tokenizer.json, or bytes when it has none).
        #[arg(long, conflicts_with = "tokens")]
        prompt: Option<String>,
        /// Prompt as token ids `1,2,3` or `@FILE`.
        #[arg(long)]
        tokens: Option<String>,
        /// Tokens to generate. Memory grows with them only until the last TransPoint (attention
        /// cache) and by 4 bytes a token for the list of tokens; any number is accepted, and
        /// Ctrl-C stops a long run.
        #[arg(long, default_value_t = 64)]
        max_tokens: usize,
        #[command(flatten)]
        sampling: Sampling,
        #[arg(long, default_value = "config", help = SPEC_HELP)]
        transpoints: String,
        #[arg(long, value_enum, default_value_t = Backend::Auto)]
        backend: Backend,
        /// Weight matrix storage (either engine): `auto` keeps the file's format (q4_0, q8_0, f16, else f32); q8_0 / q4_0 quantize at load.
        #[arg(long, value_enum, default_value_t = Weights::Auto)]
        weights: Weights,
        /// Print the tokens, text and timings as one JSON object.
        #[arg(long)]
        json: bool,
        /// Continue the sequence saved in this state file (by `--save-state` or chat's `/save`):
        /// its schedule and position are used, and the prompt, if given, is appended.
        #[arg(long, conflicts_with = "transpoints")]
        state: Option<PathBuf>,
        /// Save the sequence's state after the last generated token to this file (safetensors;
        /// its size stops growing at the last TransPoint).
        #[arg(long)]
        save_state: Option<PathBuf>,
    },
    /// A conversation on stdin: each line is appended to one session and answered (streamed);
    /// the session keeps its state between turns. /save FILE, /load FILE, /reset, /stats, /quit.
    Chat {
        /// Model path; without it, the embedded demo model.
        #[arg(long)]
        model: Option<PathBuf>,
        /// Tokens per answer.
        #[arg(long, default_value_t = 64)]
        max_tokens: usize,
        #[command(flatten)]
        sampling: Sampling,
        #[arg(long, default_value = "config", help = SPEC_HELP)]
        transpoints: String,
        #[arg(long, value_enum, default_value_t = Backend::Auto)]
        backend: Backend,
        #[arg(long, value_enum, default_value_t = Weights::Auto)]
        weights: Weights,
        /// Start from this saved state instead of an empty conversation.
        #[arg(long)]
        state: Option<PathBuf>,
    },
    /// Measure prefill/decode speed, scaling, cache memory and per-kernel GPU time.
    Bench {
        /// Model to measure; without it a synthetic model of `--preset` shape.
        #[arg(long)]
        model: Option<PathBuf>,
        /// Shape of the synthetic model: tiny, small, or mamba2-130m.
        #[arg(long, default_value = "small")]
        preset: String,
        #[arg(long, default_value_t = 512)]
        prompt_len: usize,
        #[arg(long, default_value_t = 32)]
        gen: usize,
        #[arg(long, default_value = "config", help = SPEC_HELP)]
        transpoints: String,
        #[arg(long, value_enum, default_value_t = Backend::Auto)]
        backend: Backend,
        /// Weight matrix storage (either engine): `auto` keeps the file's format (q4_0, q8_0, f16, else f32); q8_0 / q4_0 quantize at load.
        #[arg(long, value_enum, default_value_t = Weights::Auto)]
        weights: Weights,
        /// Decode time per token after prompts of these lengths, e.g. `1000,8000`.
        #[arg(long, value_delimiter = ',')]
        positions: Vec<usize>,
        /// Prefill time for each of these prompt lengths, e.g. `512,1024,2048`.
        #[arg(long, value_delimiter = ',')]
        sweep: Vec<usize>,
        /// A long run: generate this many tokens (greedy, streamed to text as `generate` does)
        /// and print, at each tenth, tokens/s, the cache, GPU memory and the process's memory.
        #[arg(long)]
        long: Option<usize>,
        /// Time the chunked SSD scan against a one-token-at-a-time scan over T tokens.
        #[arg(long)]
        scan_compare: Option<usize>,
        /// GFLOP/s of the matmul kernel at the model's in_proj size vs the CPU backend.
        #[arg(long)]
        matmul: bool,
        /// Per-kernel GPU time: from timestamp queries on a GPU, from the host clock around
        /// each command (submitted alone) on a CPU adapter such as lavapipe, whose timestamps do
        /// not bracket dispatches. Profiled runs are slower; compare shares, not throughputs.
        #[arg(long)]
        profile: bool,
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Chunk size of the SSD scan.
        #[arg(long, default_value_t = 128)]
        chunk: u32,
        /// Attention with the fused kernel over the cache buffers instead of two products
        /// over the cache in textures (to compare the two).
        #[arg(long)]
        fused_attention: bool,
        /// Run the norms (and in decode the conv step and the gate) as dispatches of their
        /// own instead of inside the products and the SSM step (to compare the two).
        #[arg(long)]
        unfused_decode: bool,
        /// Decode computing every logit each token, as a full forward pass does, instead of
        /// greedy decoding as `generate` runs it (where the CPU engine's output screen computes
        /// only the rows that can be the argmax).
        #[arg(long)]
        full_logits: bool,
        #[arg(long)]
        json: bool,
    },
    /// Perplexity of a text under a schedule (windows of --context tokens, each a fresh sequence).
    Perplexity {
        /// Model path; without it, the embedded demo model.
        #[arg(long)]
        model: Option<PathBuf>,
        /// A UTF-8 text file, tokenized with the model's tokenizer.
        #[arg(long)]
        text: PathBuf,
        #[arg(long, default_value = "config", help = SPEC_HELP)]
        transpoints: String,
        /// Tokens per window; 0 = the whole text as one sequence.
        #[arg(long, default_value_t = 1024)]
        context: usize,
        /// Score at most this many tokens of the text (0 = all).
        #[arg(long, default_value_t = 0)]
        max_tokens: usize,
        #[arg(long, value_enum, default_value_t = Backend::Auto)]
        backend: Backend,
        /// Weight matrix storage (either engine): `auto` keeps the file's format (q4_0, q8_0, f16, else f32); q8_0 / q4_0 quantize at load.
        #[arg(long, value_enum, default_value_t = Weights::Auto)]
        weights: Weights,
        #[arg(long)]
        json: bool,
    },
    /// Describe a model: config, parameters, cache memory per sequence length.
    Inspect {
        /// Model path; without it, the embedded demo model.
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long, default_value = "config", help = SPEC_HELP)]
        transpoints: String,
    },
    /// Write a model's large matrices in q8_0 or q4_0 (GGUF's block formats) into one
    /// `.safetensors` with the config and tokenizer in its metadata (what a browser fetches).
    Quantize {
        /// Model path; without it, the embedded demo model.
        #[arg(long)]
        model: Option<PathBuf>,
        /// q8_0 or q4_0.
        #[arg(long)]
        to: String,
        /// The `.safetensors` file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Write a model with random weights in the spec's format (for benchmarks and tests).
    MakeModel {
        /// tiny, small, or mamba2-130m.
        #[arg(long)]
        preset: String,
        /// A directory (config.json + model.safetensors), or a `.safetensors` file with the
        /// config in its metadata.
        #[arg(long)]
        out: PathBuf,
        /// The model's default schedule (written into its config).
        #[arg(long, help = SPEC_HELP)]
        transpoints: Option<String>,
        #[arg(long, default_value = "f32")]
        dtype: String,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

/// How the next token is drawn (generate and chat).
#[derive(clap::Args)]
struct Sampling {
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// 0 = off.
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

impl From<Sampling> for SamplingOptions {
    fn from(s: Sampling) -> Self {
        SamplingOptions {
            temperature: s.temperature,
            top_k: s.top_k,
            top_p: s.top_p,
            seed: s.seed,
        }
    }
}

/// Mesa's Vulkan packages install an implicit layer, VK_LAYER_MESA_device_select, that connects
/// to Wayland while listing devices; when XDG_RUNTIME_DIR is unset or not an absolute path (what
/// libwayland checks; containers, CI) libwayland then prints "error: XDG_RUNTIME_DIR is invalid
/// or not set in the environment." on every adapter probe, which reads like a failure of ours.
/// The layer only orders GPUs for a display, which this compute-only process does not use, so
/// it is switched off there by its own variable (unless the user set that variable).
fn quiet_mesa_device_select() {
    let runtime_dir_valid =
        std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|d| Path::new(&d).is_absolute());
    if !runtime_dir_valid && std::env::var_os("NODEVICE_SELECT").is_none() {
        std::env::set_var("NODEVICE_SELECT", "1");
    }
}

fn main() -> ExitCode {
    // Before any thread exists (set_var races with other threads' getenv).
    quiet_mesa_device_select();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tm-run: error: {e}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;

/// `println!` that returns an error instead of panicking when stdout is gone (`| head`).
#[macro_export]
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($t)*)?
    }};
}

fn preset(name: &str) -> AnyResult<RandomSpec> {
    use transmamba::TransPoint::At;
    Ok(match name {
        "tiny" => RandomSpec::default(),
        // About the size of the demo model: 7 M parameters.
        "small" => RandomSpec {
            vocab: 8192,
            d: 256,
            layers: 6,
            heads: 8,
            head_dim: 64,
            state: 64,
            groups: 1,
            mlp: 512,
            transpoints: vec![At(0); 6],
            ..RandomSpec::default()
        },
        "mamba2-130m" => RandomSpec::mamba2_130m(),
        other => return Err(format!("unknown preset `{other}` (tiny, small, mamba2-130m)").into()),
    })
}

fn load_model(path: Option<&Path>, preset_name: &str) -> AnyResult<Model> {
    match path {
        Some(p) => Ok(Model::load(p)?),
        None => Ok(random_model(&preset(preset_name)?, 0)),
    }
}

fn run(cli: Cli) -> AnyResult<()> {
    let kernels = cli.kernels;
    match cli.command {
        Command::Forward {
            model,
            tokens,
            transpoints,
            backend,
            weights,
            out,
        } => forward(
            model.as_deref(),
            &tokens,
            &transpoints,
            (backend, kernels),
            weights,
            out.as_deref(),
        ),
        Command::Generate {
            model,
            prompt,
            tokens,
            max_tokens,
            sampling,
            transpoints,
            backend,
            weights,
            json,
            state,
            save_state,
        } => {
            let spec: ScheduleSpec = transpoints.parse()?;
            let (m, codec) = demo_model::load_with_codec(model.as_deref())?;
            let prompt_tokens = match (prompt, tokens) {
                (Some(text), None) => codec.encode(&text)?,
                (None, Some(list)) => read_tokens(&list)?,
                // Continuing a saved state: the prompt is optional.
                (None, None) if state.is_some() => Vec::new(),
                _ => return Err("give the prompt as --prompt TEXT or --tokens LIST".into()),
            };
            if !prompt_tokens.is_empty() {
                m.check_tokens(&prompt_tokens)?;
            }
            let schedule = spec.resolve(&m.config.transpoints)?;
            let opts = weights.options(&m, EngineOptions::default());
            let engine = backend::load_engine(m, backend, opts, false, kernels)?;
            let args = generate::GenerateArgs {
                prompt_tokens,
                max_tokens,
                sampling: sampling.into(),
                json,
                state,
                save_state,
            };
            generate::generate(&engine, &codec, schedule, args)
        }
        Command::Chat {
            model,
            max_tokens,
            sampling,
            transpoints,
            backend,
            weights,
            state,
        } => {
            let spec: ScheduleSpec = transpoints.parse()?;
            let (m, codec) = demo_model::load_with_codec(model.as_deref())?;
            let schedule = spec.resolve(&m.config.transpoints)?;
            let opts = weights.options(&m, EngineOptions::default());
            let engine = backend::load_engine(m, backend, opts, false, kernels)?;
            let gen = transmamba::session::GenerateOptions {
                max_tokens,
                sampling: sampling.into(),
                stop_tokens: Vec::new(),
            };
            chat::chat(&engine, &codec, schedule, state.as_deref(), gen)
        }
        Command::Bench {
            model,
            preset: preset_name,
            prompt_len,
            gen,
            transpoints,
            backend,
            weights,
            positions,
            sweep,
            long,
            scan_compare,
            matmul,
            profile,
            repeats,
            chunk,
            fused_attention,
            unfused_decode,
            full_logits,
            json,
        } => {
            let spec: ScheduleSpec = transpoints.parse()?;
            let m = load_model(model.as_deref(), &preset_name)?;
            let schedule = spec.resolve(&m.config.transpoints)?;
            let opts = EngineOptions {
                chunk_size: chunk,
                attention_products: !fused_attention,
                fused_decode: !unfused_decode,
                ..EngineOptions::default()
            };
            let opts = weights.options(&m, opts);
            let engine = backend::load_engine(m, backend, opts, profile, kernels)?;
            // These measure the GPU engine only: say so rather than print nothing for them.
            let gpu_only = [
                ("--profile", profile),
                ("--scan-compare", scan_compare.is_some()),
                ("--matmul", matmul),
                ("--fused-attention", fused_attention),
                ("--unfused-decode", unfused_decode),
            ];
            if let (None, Some((flag, _))) = (engine.gpu(), gpu_only.iter().find(|(_, on)| *on)) {
                return Err(format!(
                    "{flag} measures the GPU engine, but the engine here is {}: add --backend gpu",
                    engine.name()
                )
                .into());
            }
            let args = bench::BenchArgs {
                prompt_len,
                gen,
                positions,
                sweep,
                long,
                scan_compare,
                matmul,
                repeats: repeats.max(1),
                full_logits,
                json,
            };
            bench::bench(&engine, &schedule, &args)
        }
        Command::Perplexity {
            model,
            text,
            transpoints,
            context,
            max_tokens,
            backend,
            weights,
            json,
        } => {
            let spec: ScheduleSpec = transpoints.parse()?;
            let content = std::fs::read_to_string(&text)
                .map_err(|e| format!("cannot read text file {}: {e}", text.display()))?;
            let (m, codec) = demo_model::load_with_codec(model.as_deref())?;
            let mut tokens = codec.encode(&content)?;
            if max_tokens > 0 {
                tokens.truncate(max_tokens);
            }
            m.check_token_range(&tokens, 0)?;
            let schedule = spec.resolve(&m.config.transpoints)?;
            let opts = weights.options(&m, EngineOptions::default());
            let engine = backend::load_engine(m, backend, opts, false, kernels)?;
            let args = perplexity::PerplexityArgs {
                model_name: demo_model::display(model.as_deref()),
                tokens,
                context,
                json,
            };
            perplexity::perplexity(&engine, &schedule, &args)
        }
        Command::Inspect { model, transpoints } => inspect(model.as_deref(), &transpoints, kernels),
        Command::Quantize { model, to, out } => quantize(model.as_deref(), &to, &out),
        Command::MakeModel {
            preset: name,
            out,
            dtype,
            seed,
            transpoints,
        } => {
            let store = match dtype.as_str() {
                "f32" => StoreAs::F32,
                "f16" => StoreAs::F16,
                "bf16" => StoreAs::Bf16,
                other => return Err(format!("unknown dtype `{other}` (f32, f16, bf16)").into()),
            };
            let mut m = random_model(&preset(&name)?, seed);
            if let Some(tp) = transpoints {
                let spec: ScheduleSpec = tp.parse()?;
                m.config.transpoints = spec.resolve(&m.config.transpoints)?.0;
            }
            if out.extension().is_some_and(|e| e == "safetensors") {
                write_single_file(&m, &out, store)?;
            } else {
                write_model_dir(&m, &out, store)?;
            }
            eprintln!(
                "wrote {} ({} parameters, {dtype})",
                out.display(),
                m.parameter_count()
            );
            Ok(())
        }
    }
}

fn read_tokens(arg: &str) -> AnyResult<Vec<u32>> {
    let text = match arg.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read token file {path}: {e}"))?,
        None => arg.to_string(),
    };
    Ok(parse_token_list(&text)?)
}

fn forward(
    model_path: Option<&Path>,
    tokens: &str,
    transpoints: &str,
    (backend, kernels): (Backend, Kernels),
    weights: Weights,
    out: Option<&Path>,
) -> AnyResult<()> {
    let tokens = read_tokens(tokens)?;
    let spec: ScheduleSpec = transpoints.parse()?;
    let model = demo_model::load(model_path)?;
    let schedule = spec.resolve(&model.config.transpoints)?;
    model.check_tokens(&tokens)?;
    let opts = weights.options(&model, EngineOptions::default());
    let engine = backend::load_engine(model, backend, opts, false, kernels)?;
    let mut session = engine.session(schedule.clone())?;
    let start = Instant::now();
    let logits = session.forward_blocking(&tokens, Logits::All)?;
    let elapsed = start.elapsed();
    let (t, v) = (tokens.len(), engine.vocab());
    let name = engine.name();
    match out {
        Some(path) => {
            let cannot = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
            let file = std::fs::File::create(path).map_err(cannot)?;
            npy::write_npy_f32(&mut std::io::BufWriter::new(file), &[t, v], &logits)
                .map_err(cannot)?;
            eprintln!(
                "wrote logits [{t}, {v}] to {} ({:.1} ms, {name}, transpoints {schedule})",
                path.display(),
                elapsed.as_secs_f64() * 1e3
            );
        }
        None => {
            out!(
                "forward: {t} tokens, vocab {v}, backend {name}, transpoints {schedule}, {:.1} ms ({:.0} tokens/s)",
                elapsed.as_secs_f64() * 1e3,
                t as f64 / elapsed.as_secs_f64()
            );
            let last = &logits[(t - 1) * v..];
            let mut top: Vec<(usize, f32)> = last.iter().copied().enumerate().collect();
            top.sort_by(|a, b| b.1.total_cmp(&a.1));
            let shown: Vec<String> = top
                .iter()
                .take(5)
                .map(|(i, l)| format!("{i} ({l:.4})"))
                .collect();
            out!("last position's top tokens: {}", shown.join(", "));
            out!(
                "cache after the prompt: {}",
                format_bytes(session.cache_bytes())
            );
        }
    }
    Ok(())
}

fn quantize(model_path: Option<&Path>, to: &str, out: &Path) -> AnyResult<()> {
    let format = transmamba::quant::QuantFormat::parse(to)
        .ok_or_else(|| format!("--to must be q8_0 or q4_0, not `{to}`"))?;
    if out.extension().is_none_or(|e| e != "safetensors") {
        return Err(format!("--out must name a .safetensors file, not {}", out.display()).into());
    }
    let mut model = demo_model::load(model_path)?;
    // The tokenizer travels in the file: the model's own, or a tokenizer.json beside it.
    if model.tokenizer_json.is_none() {
        if let Some(p) = model_path {
            let dir = if p.is_dir() {
                p
            } else {
                p.parent().unwrap_or(Path::new("."))
            };
            let file = dir.join("tokenizer.json");
            if file.is_file() {
                model.tokenizer_json = Some(
                    std::fs::read_to_string(&file)
                        .map_err(|e| format!("cannot read {}: {e}", file.display()))?,
                );
            }
        }
    }
    write_single_file(&model, out, StoreAs::Quant(format))?;
    let bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    let params = model.parameter_count();
    eprintln!(
        "wrote {} ({} parameters, matrices in {}, {:.1} MiB; {:.2} bytes a parameter{})",
        out.display(),
        params,
        format.name(),
        bytes as f64 / (1 << 20) as f64,
        bytes as f64 / params.max(1) as f64,
        if model.tokenizer_json.is_some() {
            ", tokenizer included"
        } else {
            ""
        }
    );
    Ok(())
}

fn inspect(model_path: Option<&Path>, transpoints: &str, kernels: Kernels) -> AnyResult<()> {
    let spec: ScheduleSpec = transpoints.parse()?;
    let model = demo_model::load(model_path)?;
    let c = &model.config;
    let schedule = spec.resolve(&c.transpoints)?;
    out!("model: {}", demo_model::display(model_path));
    out!("  dialect            {:?}", c.dialect);
    out!(
        "  vocabulary         {} (tensors) / {} (config)",
        model.vocab,
        c.vocab_size
    );
    out!("  width D            {}", c.hidden_size);
    out!("  layers L           {}", c.num_layers);
    out!(
        "  heads H × P        {} × {}  (inner width {})",
        c.num_heads,
        c.head_dim,
        c.d_inner()
    );
    out!("  state N, groups G  {}, {}", c.state_size, c.n_groups);
    out!("  conv kernel K      {}", c.conv_kernel);
    out!(
        "  MLP width M        {}",
        if c.mlp_intermediate_size == 0 {
            "none".to_string()
        } else {
            c.mlp_intermediate_size.to_string()
        }
    );
    out!(
        "  time_step_limit    [{}, {}]",
        c.time_step_limit.0,
        c.time_step_limit.1
    );
    out!(
        "  attention          scale {:.4}, gate {}, rope {}",
        c.attention_scale,
        c.attention_gate,
        c.rope_theta.map_or("none".into(), |t| format!("θ={t}"))
    );
    out!(
        "  tied embeddings    {}",
        if model.lm_head.is_none() { "yes" } else { "no" }
    );
    out!("  stored as          {}", model.stored_dtype);
    out!(
        "  tokenizer          {}",
        TextCodec::for_model(&model, model_path)?.name()
    );
    let params = model.parameter_count();
    out!(
        "  parameters         {params} ({:.2} M, {} in f32)",
        params as f64 / 1e6,
        format_bytes(4 * params)
    );
    out!("  transpoints        {schedule}  (spec `{spec}`)");
    out!("  engine (auto)      {}", backend::auto_choice());
    match backend::kernel_plan(kernels) {
        Ok((adapter, caps, plan)) => {
            let sg = if caps.subgroups {
                format!("subgroups of {}-{}", caps.subgroup_min, caps.subgroup_max)
            } else {
                "no subgroups".to_string()
            };
            out!(
                "GPU kernel plan: {} (--kernels {}; {adapter}: {:?}, {sg})",
                plan.name(),
                kernels
                    .to_possible_value()
                    .map_or("?".into(), |v| v.get_name().to_string()),
                caps.device_type
            );
            let steps = plan.steps();
            let w = steps.iter().map(|s| s.step.len()).max().unwrap_or(0);
            for s in steps {
                out!("  {:<w$}  {}", s.step, s.kernels);
            }
        }
        Err(e) => out!("GPU kernel plan: none ({e})"),
    }
    out!("cache memory per sequence (conv state + attention cache until each TransPoint, then SSM state):");
    for len in [1usize, 128, 512, 1024, 4096, 8192, 32768] {
        out!(
            "  {len:>6} tokens: {}",
            format_bytes(cache_bytes(c, &schedule, len))
        );
    }
    Ok(())
}

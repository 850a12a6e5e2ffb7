//! `tm-run`: run TransMamba and Mamba2 models from the command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand, ValueEnum};
use transmamba::memory::{cache_bytes, format_bytes};
use transmamba::{cpu::CpuSession, npy, tokens::parse_token_list};
use transmamba::{Logits, Model, ScheduleSpec};

#[derive(Parser)]
#[command(
    name = "tm-run",
    version,
    about = "Run TransMamba / Mamba2 models (CPU reference, WebGPU)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// One forward pass over a token list; writes the logits [T, vocab] as float32 .npy.
    Forward {
        /// Model directory (config.json + safetensors) or a .safetensors with the config inside.
        #[arg(long)]
        model: PathBuf,
        /// Token ids `1,2,3`, or `@FILE` holding them.
        #[arg(long)]
        tokens: String,
        /// TransPoint schedule: `config`, a number, `inf`, a comma list of those, or `paper`.
        #[arg(long, default_value = "config")]
        transpoints: String,
        #[arg(long, value_enum, default_value_t = Backend::Cpu)]
        backend: Backend,
        /// Write the logits here (.npy); without it, print a summary.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Describe a model: config, parameters, cache memory per sequence length.
    Inspect {
        #[arg(long)]
        model: PathBuf,
        #[arg(long, default_value = "config")]
        transpoints: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Backend {
    Cpu,
    Gpu,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tm-run: error: {e}");
            ExitCode::FAILURE
        }
    }
}

type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;

fn run(cli: Cli) -> AnyResult<()> {
    match cli.command {
        Command::Forward {
            model,
            tokens,
            transpoints,
            backend,
            out,
        } => forward(&model, &tokens, &transpoints, backend, out.as_deref()),
        Command::Inspect { model, transpoints } => inspect(&model, &transpoints),
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
    model_path: &Path,
    tokens: &str,
    transpoints: &str,
    backend: Backend,
    out: Option<&Path>,
) -> AnyResult<()> {
    let tokens = read_tokens(tokens)?;
    let spec: ScheduleSpec = transpoints.parse()?;
    if let Backend::Gpu = backend {
        return Err("the GPU backend is not available yet in this build; use --backend cpu".into());
    }
    let model = Model::load(model_path)?;
    let schedule = spec.resolve(&model.config.transpoints)?;
    model.check_tokens(&tokens)?;
    let mut session = CpuSession::new(&model, schedule.clone())?;
    let start = Instant::now();
    let logits = session.forward(&tokens, Logits::All)?;
    let elapsed = start.elapsed();
    let (t, v) = (tokens.len(), model.vocab);
    match out {
        Some(path) => {
            std::fs::write(path, npy::to_npy_f32(&[t, v], &logits))
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            eprintln!(
                "wrote logits [{t}, {v}] to {} ({:.1} ms, cpu, transpoints {schedule})",
                path.display(),
                elapsed.as_secs_f64() * 1e3
            );
        }
        None => {
            println!(
                "forward: {t} tokens, vocab {v}, backend cpu, transpoints {schedule}, {:.1} ms ({:.0} tokens/s)",
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
            println!("last position's top tokens: {}", shown.join(", "));
            println!(
                "cache after the prompt: {}",
                format_bytes(session.cache_bytes())
            );
        }
    }
    Ok(())
}

fn inspect(model_path: &Path, transpoints: &str) -> AnyResult<()> {
    let spec: ScheduleSpec = transpoints.parse()?;
    let model = Model::load(model_path)?;
    let c = &model.config;
    let schedule = spec.resolve(&c.transpoints)?;
    println!("model: {}", model_path.display());
    println!("  dialect            {:?}", c.dialect);
    println!(
        "  vocabulary         {} (tensors) / {} (config)",
        model.vocab, c.vocab_size
    );
    println!("  width D            {}", c.hidden_size);
    println!("  layers L           {}", c.num_layers);
    println!(
        "  heads H × P        {} × {}  (inner width {})",
        c.num_heads,
        c.head_dim,
        c.d_inner()
    );
    println!("  state N, groups G  {}, {}", c.state_size, c.n_groups);
    println!("  conv kernel K      {}", c.conv_kernel);
    println!(
        "  MLP width M        {}",
        if c.mlp_intermediate_size == 0 {
            "none".to_string()
        } else {
            c.mlp_intermediate_size.to_string()
        }
    );
    println!(
        "  time_step_limit    [{}, {}]",
        c.time_step_limit.0, c.time_step_limit.1
    );
    println!(
        "  attention          scale {:.4}, gate {}, rope {}",
        c.attention_scale,
        c.attention_gate,
        c.rope_theta.map_or("none".into(), |t| format!("θ={t}"))
    );
    println!(
        "  tied embeddings    {}",
        if model.lm_head.is_none() { "yes" } else { "no" }
    );
    println!("  stored as          {}", model.stored_dtype);
    let params = model.parameter_count();
    println!(
        "  parameters         {params} ({:.2} M, {} in f32)",
        params as f64 / 1e6,
        format_bytes(4 * params)
    );
    println!("  transpoints        {schedule}  (spec `{spec}`)");
    println!("cache memory per sequence (conv state + attention cache until each TransPoint, then SSM state):");
    for len in [1usize, 128, 512, 1024, 4096, 8192, 32768] {
        println!(
            "  {len:>6} tokens: {}",
            format_bytes(cache_bytes(c, &schedule, len))
        );
    }
    Ok(())
}

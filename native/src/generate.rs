//! `tm-run generate`: streamed text generation, optionally continuing a saved session state
//! and saving the state it ends in.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use transmamba::sampling::SamplingOptions;
use transmamba::session::{Engine, GenerateOptions, Generator, Session};
use transmamba::text::TextCodec;

use crate::AnyResult;

pub struct GenerateArgs {
    pub prompt_tokens: Vec<u32>,
    pub max_tokens: usize,
    pub sampling: SamplingOptions,
    pub json: bool,
    /// Continue from this state file (the prompt, if any, is appended).
    pub state: Option<PathBuf>,
    /// Save the state after the last generated token here.
    pub save_state: Option<PathBuf>,
}

/// A session: fresh under `schedule`, or restored from `state`.
pub fn open_session(
    engine: &Engine,
    schedule: transmamba::Schedule,
    state: Option<&Path>,
) -> AnyResult<Session> {
    Ok(match state {
        Some(path) => {
            let bytes = std::fs::read(path)
                .map_err(|e| format!("cannot read the state file {}: {e}", path.display()))?;
            engine.restore(&bytes, &path.display().to_string())?
        }
        None => engine.session(schedule)?,
    })
}

/// Writes a session's state file (through a temporary file, so an interrupted save never
/// leaves a truncated state under the name). Returns its size.
pub fn save_session(session: &mut Session, path: &Path) -> AnyResult<usize> {
    let bytes = session.save_blocking()?;
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, &bytes)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| format!("cannot write the state file {}: {e}", path.display()))?;
    Ok(bytes.len())
}

pub fn generate(
    engine: &Engine,
    codec: &TextCodec,
    schedule: transmamba::Schedule,
    args: GenerateArgs,
) -> AnyResult<()> {
    let mut session = open_session(engine, schedule, args.state.as_deref())?;
    let resumed_at = session.position();
    let opts = GenerateOptions {
        max_tokens: args.max_tokens,
        sampling: args.sampling.clone(),
        stop_tokens: Vec::new(),
    };
    let mut generator = Generator::new(codec, &opts)?;
    let start = Instant::now();
    generator.start_blocking(&mut session, &args.prompt_tokens)?;
    let prefill = start.elapsed();
    let mut stdout = std::io::stdout().lock();
    if !args.json {
        write!(stdout, "{}", codec.decode(&args.prompt_tokens)?)?;
        stdout.flush()?;
    }
    let decode_start = Instant::now();
    let mut peak_cache = session.cache_bytes();
    while let Some(step) = generator.next_blocking(&mut session)? {
        if !args.json {
            write!(stdout, "{}", step.text)?;
            stdout.flush()?;
        }
        peak_cache = peak_cache.max(session.cache_bytes());
    }
    let decode = decode_start.elapsed();
    let out_tokens = generator.tokens().to_vec();
    let saved = match &args.save_state {
        Some(path) => Some(save_session(&mut session, path)?),
        None => None,
    };
    let steps = out_tokens.len().saturating_sub(1);
    let prefill_tps = args.prompt_tokens.len() as f64 / prefill.as_secs_f64();
    let decode_tps = if steps > 0 {
        steps as f64 / decode.as_secs_f64()
    } else {
        0.0
    };
    let schedule = session.schedule().clone();
    if args.json {
        let j = serde_json::json!({
            "backend": engine.name(),
            "kernels": engine.gpu().map(|g| g.ctx.kernels()),
            "transpoints": schedule.to_string(),
            "resumed_at": resumed_at,
            "position": session.position(),
            "prompt_tokens": args.prompt_tokens,
            "tokens": out_tokens,
            "text": codec.decode(&out_tokens)?,
            "prefill_ms": prefill.as_secs_f64() * 1e3,
            "prefill_tokens_per_s": prefill_tps,
            "decode_ms": decode.as_secs_f64() * 1e3,
            "decode_tokens_per_s": decode_tps,
            "peak_cache_bytes": peak_cache,
            "state_file_bytes": saved,
            "sampling": {
                "temperature": args.sampling.temperature,
                "top_k": args.sampling.top_k,
                "top_p": args.sampling.top_p,
                "seed": args.sampling.seed,
            },
        });
        writeln!(stdout, "{j}")?;
    } else {
        writeln!(stdout)?;
        let resumed = if args.state.is_some() {
            format!("resumed at {resumed_at} | ")
        } else {
            String::new()
        };
        let saved = match (saved, &args.save_state) {
            (Some(n), Some(p)) => format!(
                " | state saved to {} ({})",
                p.display(),
                transmamba::memory::format_bytes(n)
            ),
            _ => String::new(),
        };
        eprintln!(
            "[{} | transpoints {schedule} | {resumed}prompt {} tokens, {prefill_tps:.1} tokens/s | generated {} tokens, {decode_tps:.1} tokens/s | peak cache {}{saved}]",
            engine.name(),
            args.prompt_tokens.len(),
            out_tokens.len(),
            transmamba::memory::format_bytes(peak_cache),
        );
    }
    Ok(())
}

//! `tm-run generate`: streamed text generation.

use std::io::Write;
use std::time::Instant;

use transmamba::sampling::{Sampler, SamplingOptions};
use transmamba::text::{TextCodec, TextStream};
use transmamba::Logits;

use crate::backend::Engine;
use crate::AnyResult;

pub struct GenerateArgs {
    pub prompt_tokens: Vec<u32>,
    pub max_tokens: usize,
    pub sampling: SamplingOptions,
    pub json: bool,
}

pub fn generate(
    engine: &Engine,
    codec: &TextCodec,
    schedule: transmamba::Schedule,
    args: GenerateArgs,
) -> AnyResult<()> {
    let mut sampler = Sampler::new(args.sampling.clone())?;
    let mut session = engine.session(schedule.clone())?;
    let start = Instant::now();
    let mut logits = session.forward(&args.prompt_tokens, Logits::Last)?;
    let prefill = start.elapsed();
    let mut stream = TextStream::new(codec);
    // Grows as tokens come: --max-tokens may be huge (a run stopped by hand).
    let mut out_tokens = Vec::new();
    let mut stdout = std::io::stdout().lock();
    if !args.json {
        write!(stdout, "{}", codec.decode(&args.prompt_tokens)?)?;
        stdout.flush()?;
    }
    let decode_start = Instant::now();
    let mut peak_cache = session.cache_bytes();
    for i in 0..args.max_tokens {
        // The logits are the model's output at the last position fed so far.
        let next = sampler.sample(&logits, args.prompt_tokens.len().saturating_sub(1) + i)?;
        out_tokens.push(next);
        if !args.json {
            write!(stdout, "{}", stream.push(next)?)?;
            stdout.flush()?;
        }
        if i + 1 < args.max_tokens {
            logits = session.forward(&[next], Logits::Last)?;
            peak_cache = peak_cache.max(session.cache_bytes());
        }
    }
    let decode = decode_start.elapsed();
    let steps = args.max_tokens.saturating_sub(1);
    let prefill_tps = args.prompt_tokens.len() as f64 / prefill.as_secs_f64();
    let decode_tps = if steps > 0 {
        steps as f64 / decode.as_secs_f64()
    } else {
        0.0
    };
    if args.json {
        let j = serde_json::json!({
            "backend": engine.name(),
            "transpoints": schedule.to_string(),
            "prompt_tokens": args.prompt_tokens,
            "tokens": out_tokens,
            "text": codec.decode(&out_tokens)?,
            "prefill_ms": prefill.as_secs_f64() * 1e3,
            "prefill_tokens_per_s": prefill_tps,
            "decode_ms": decode.as_secs_f64() * 1e3,
            "decode_tokens_per_s": decode_tps,
            "peak_cache_bytes": peak_cache,
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
        eprintln!(
            "[{} | transpoints {schedule} | prompt {} tokens, {prefill_tps:.1} tokens/s | generated {} tokens, {decode_tps:.1} tokens/s | peak cache {}]",
            engine.name(),
            args.prompt_tokens.len(),
            out_tokens.len(),
            transmamba::memory::format_bytes(peak_cache),
        );
    }
    Ok(())
}

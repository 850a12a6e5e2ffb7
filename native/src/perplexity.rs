//! `tm-run perplexity`: how well a model predicts a text under a TransPoint schedule.
//!
//! The text is cut into windows of `--context` tokens, each a fresh sequence (the first token of
//! a window is context only). A window is fed in pieces, so the logits held at once stay small
//! and the progress bar moves; the session carries its caches across pieces, so this is the same
//! as one forward over the window.

use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use transmamba::memory::{cache_bytes, format_bytes};
use transmamba::perplexity::NllSum;
use transmamba::{Logits, Schedule};

use crate::{out, AnyResult};
use transmamba::session::Engine;

/// Tokens per forward call inside a window.
const PIECE: usize = 256;

pub struct PerplexityArgs {
    pub model_name: String,
    pub tokens: Vec<u32>,
    pub context: usize,
    pub json: bool,
}

pub fn perplexity(engine: &Engine, schedule: &Schedule, args: &PerplexityArgs) -> AnyResult<()> {
    let tokens = &args.tokens;
    if tokens.len() < 2 {
        return Err(format!(
            "the text has {} token(s); perplexity needs at least 2",
            tokens.len()
        )
        .into());
    }
    let context = if args.context == 0 {
        tokens.len()
    } else {
        args.context
    };
    if context < 2 {
        return Err("--context must be at least 2 tokens (or 0 for the whole text)".into());
    }
    let bar = ProgressBar::new(tokens.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} tokens, {per_sec}, eta {eta}")
            .map_err(|e| e.to_string())?,
    );
    let vocab = engine.vocab();
    let start = Instant::now();
    let mut total = NllSum::default();
    let mut windows = 0;
    let mut peak_cache = 0;
    for window in tokens.chunks(context) {
        if window.len() < 2 {
            bar.inc(window.len() as u64);
            continue;
        }
        windows += 1;
        let mut session = engine.session(schedule.clone())?;
        for (i, piece) in window.chunks(PIECE).enumerate() {
            let logits = session.forward_blocking(piece, Logits::All)?;
            let next = &window[(i * PIECE + 1).min(window.len())..];
            total.push_rows(&logits, vocab, next);
            peak_cache = peak_cache.max(session.cache_bytes());
            bar.inc(piece.len() as u64);
        }
    }
    bar.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    let cfg = engine.config();
    let cache_1k = cache_bytes(cfg, schedule, 1024);
    let cache_8k = cache_bytes(cfg, schedule, 8192);
    if args.json {
        let j = serde_json::json!({
            "model": args.model_name,
            "backend": engine.name(),
            "kernels": engine.gpu().map(|g| g.ctx.kernels()),
            "transpoints": schedule.to_string(),
            "context": context,
            "windows": windows,
            "tokens": tokens.len(),
            "scored_tokens": total.tokens,
            "mean_nll": total.mean(),
            "perplexity": total.perplexity(),
            "seconds": seconds,
            "peak_cache_bytes": peak_cache,
            "cache_bytes_1k": cache_1k,
            "cache_bytes_8k": cache_8k,
        });
        out!("{j}");
    } else {
        out!(
            "perplexity {:.3} (mean NLL {:.4} nats) over {} scored tokens in {windows} window(s) of ≤{context}",
            total.perplexity(),
            total.mean(),
            total.tokens
        );
        out!(
            "model {} | backend {} | transpoints {schedule} | {:.1} s ({:.0} tokens/s)",
            args.model_name,
            engine.name(),
            seconds,
            tokens.len() as f64 / seconds
        );
        out!(
            "cache memory under this schedule: {} at 1k tokens, {} at 8k tokens (peak here {})",
            format_bytes(cache_1k),
            format_bytes(cache_8k),
            format_bytes(peak_cache)
        );
    }
    Ok(())
}

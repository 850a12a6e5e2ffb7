//! `tm-run bench`: prefill and decode throughput, time per token by position, cache memory,
//! scaling with T, the chunked scan against a sequential one, matmul GFLOP/s and a per-kernel
//! breakdown per kernel (timestamp queries on a GPU; the host clock around each command on a
//! CPU adapter, whose timestamps do not bracket dispatches). Method: one warm-up run, then the
//! median of `repeats`.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use transmamba::gpu::{ops, GpuContext, GpuMatrix, ProfileClock, Recorder, SsmDims};
use transmamba::memory::format_bytes;
use transmamba::synthetic::random_tokens;
use transmamba::{Logits, Schedule};

use crate::AnyResult;
use transmamba::session::{Engine, Session};

pub struct BenchArgs {
    pub prompt_len: usize,
    pub gen: usize,
    pub positions: Vec<usize>,
    pub sweep: Vec<usize>,
    pub long: Option<usize>,
    pub scan_compare: Option<usize>,
    pub matmul: bool,
    pub repeats: usize,
    /// Decode through every logit rather than greedy decoding's screened output product.
    pub full_logits: bool,
    pub json: bool,
}

/// Rows the output screen computed exactly, summed over the greedy tokens it chose.
#[derive(Default)]
struct ScreenTally {
    tokens: usize,
    screened: usize,
    candidates: usize,
}

/// One decode step: feeds the pending token and chooses the next greedily, as `generate` does
/// (through the CPU engine's output screen, which `full_logits` turns off), then appends it.
fn decode_step(s: &mut Session, full_logits: bool, tally: &mut ScreenTally) -> AnyResult<()> {
    let screened = match full_logits {
        true => None,
        false => s.screened_greedy_blocking()?,
    };
    tally.tokens += 1;
    let next = match screened {
        Some(x) => {
            tally.screened += 1;
            tally.candidates += x.candidates;
            x.token
        }
        None => transmamba::sampling::argmax(&s.next_logits_blocking()?),
    };
    s.push(next)?;
    Ok(())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Prints a line unless the output is JSON.
macro_rules! say {
    ($json:expr, $($t:tt)*) => { if !$json { $crate::out!($($t)*); } };
}

pub fn bench(engine: &Engine, schedule: &Schedule, args: &BenchArgs) -> AnyResult<()> {
    let q = args.json;
    let vocab = engine.vocab();
    let c = engine.config();
    let profiling = engine.gpu().is_some_and(|g| g.ctx.profiling());
    say!(
        q,
        "bench: backend {}, transpoints {schedule}",
        engine.name()
    );
    say!(
        q,
        "model: D {} L {} H {}×{} N {} G {} M {} V {vocab}",
        c.hidden_size,
        c.num_layers,
        c.num_heads,
        c.head_dim,
        c.state_size,
        c.n_groups,
        c.mlp_intermediate_size
    );
    // What the weights take in this format (the size of `tm-run quantize`'s file, about, and of
    // the weights on the device; GPU memory is measured below, after the warm-up).
    let format = engine.weights();
    let weight_bytes = engine.weight_bytes();
    say!(
        q,
        "weights: {} ({} for the weights: {:.0} M matrix weights at {:.2} bytes each)",
        format.name(),
        format_bytes(weight_bytes as usize),
        engine.matrix_weights() as f64 / 1e6,
        format.bytes_per_weight()
    );
    let mut report = json!({
        "backend": engine.name(),
        "weights": format.name(),
        "weight_bytes": weight_bytes,
        "kernels": engine.gpu().map(|g| g.ctx.kernels()),
        "transpoints": schedule.to_string(),
        "repeats": args.repeats,
        "method": "one warm-up run, then the median of `repeats` runs",
    });

    // Warm-up: pipelines, buffers, a decode step.
    let tokens = random_tokens(vocab, args.prompt_len.max(1), 1);
    let mut warm = engine.session(schedule.clone())?;
    let logits = warm.forward_blocking(&tokens[..tokens.len().min(8)], Logits::Last)?;
    warm.push(transmamba::sampling::argmax(&logits))?;
    decode_step(&mut warm, args.full_logits, &mut ScreenTally::default())?;
    if let Some(g) = engine.gpu() {
        g.ctx.profile_reset();
        if let Some(m) = g.ctx.memory() {
            say!(
                q,
                "GPU memory after warm-up: {} in buffers, {} in textures",
                format_bytes(m.buffer_bytes as usize),
                format_bytes(m.texture_bytes as usize)
            );
            report["gpu_memory"] =
                json!({"buffer_bytes": m.buffer_bytes, "texture_bytes": m.texture_bytes});
        }
    }

    // Prefill and decode.
    let mut prefill = Vec::new();
    let mut decode = Vec::new();
    // Every decode token's time: the fastest tenth is the least disturbed by a busy machine.
    let mut per_token = Vec::new();
    let mut peak = 0;
    let mut tally = ScreenTally::default();
    for _ in 0..args.repeats {
        let mut s = engine.session(schedule.clone())?;
        let t0 = Instant::now();
        let logits = s.forward_blocking(&tokens, Logits::Last)?;
        prefill.push(t0.elapsed());
        s.push(transmamba::sampling::argmax(&logits))?;
        // Each step feeds one token and chooses the next.
        let t1 = Instant::now();
        for _ in 0..args.gen {
            let t = Instant::now();
            decode_step(&mut s, args.full_logits, &mut tally)?;
            per_token.push(t.elapsed());
            peak = peak.max(s.cache_bytes());
        }
        decode.push(t1.elapsed());
    }
    let (p, d) = (median(prefill), median(decode));
    let prefill_tps = args.prompt_len as f64 / p.as_secs_f64();
    let decode_tps = args.gen as f64 / d.as_secs_f64();
    say!(
        q,
        "prefill {} tokens: {:.1} ms, {prefill_tps:.1} tokens/s",
        args.prompt_len,
        ms(p)
    );
    say!(
        q,
        "decode {} tokens: {:.2} ms/token, {decode_tps:.1} tokens/s",
        args.gen,
        ms(d) / args.gen.max(1) as f64
    );
    per_token.sort();
    let p10 = per_token.get(per_token.len() / 10).map_or(0.0, |&d| ms(d));
    let p50 = per_token.get(per_token.len() / 2).map_or(0.0, |&d| ms(d));
    say!(
        q,
        "decode time per token: p10 {p10:.2} ms, median {p50:.2} ms"
    );
    let decode_logits = match (args.full_logits, engine.screen_bytes()) {
        (true, _) => "every logit".to_string(),
        (false, 0) => "greedy, every logit (no output screen on this engine)".to_string(),
        (false, bytes) => {
            let each = tally.candidates as f64 / tally.screened.max(1) as f64;
            say!(
                q,
                "output screen ({}): {} of {} greedy tokens chosen from {each:.1} exact rows each, of {vocab}",
                format_bytes(bytes),
                tally.screened,
                tally.tokens
            );
            format!("greedy through the output screen ({each:.1} exact rows a token)")
        }
    };
    say!(q, "peak cache memory: {}", format_bytes(peak));
    report["prefill"] =
        json!({"tokens": args.prompt_len, "ms": ms(p), "tokens_per_s": prefill_tps});
    report["decode"] = json!({"tokens": args.gen, "ms_per_token": ms(d) / args.gen.max(1) as f64, "tokens_per_s": decode_tps, "token_ms_p10": p10, "token_ms_median": p50, "logits": decode_logits});
    report["peak_cache_bytes"] = json!(peak);
    if profiling {
        if let Some(g) = engine.gpu() {
            report["kernel_times"] = kernel_breakdown(&g.ctx, q)?;
            report["profile_clock"] = json!(g.ctx.profile_clock().name());
        }
    }

    // Decode time per token at given positions.
    if !args.positions.is_empty() {
        say!(
            q,
            "decode time per token by position (8 tokens each, median):"
        );
        let mut rows = Vec::new();
        let mut first = None;
        for &pos in &args.positions {
            let mut s = engine.session(schedule.clone())?;
            let prompt = random_tokens(vocab, pos.max(1), 2);
            let logits = s.forward_blocking(&prompt, Logits::Last)?;
            s.push(transmamba::sampling::argmax(&logits))?;
            let mut times = Vec::new();
            for _ in 0..8 {
                let t = Instant::now();
                decode_step(&mut s, args.full_logits, &mut ScreenTally::default())?;
                times.push(t.elapsed());
            }
            let per = ms(median(times));
            let ratio = per / *first.get_or_insert(per);
            say!(
                q,
                "  position {pos:>6}: {per:.2} ms/token ({ratio:.2}x the first), cache {}",
                format_bytes(s.cache_bytes())
            );
            rows.push(
                json!({"position": pos, "ms_per_token": per, "cache_bytes": s.cache_bytes()}),
            );
        }
        report["decode_by_position"] = json!(rows);
    }

    // Prefill time against T.
    if !args.sweep.is_empty() {
        say!(q, "prefill time vs T:");
        let mut rows = Vec::new();
        let mut first: Option<(usize, f64)> = None;
        for &t in &args.sweep {
            let toks = random_tokens(vocab, t, 3);
            let mut times = Vec::new();
            for _ in 0..args.repeats.min(3) {
                let mut s = engine.session(schedule.clone())?;
                let t0 = Instant::now();
                s.forward_blocking(&toks, Logits::Last)?;
                times.push(t0.elapsed());
            }
            let m = ms(median(times));
            let (t0, m0) = *first.get_or_insert((t, m));
            say!(
                q,
                "  T {t:>6}: {m:>10.1} ms  ({:.2}x the time for {:.1}x the tokens)",
                m / m0,
                t as f64 / t0 as f64
            );
            rows.push(json!({"tokens": t, "ms": m}));
        }
        report["prefill_sweep"] = json!(rows);
    }

    if let Some(n) = args.long {
        report["long_run"] = long_run(engine, schedule, args.prompt_len, n, q)?;
    }

    if let Some(g) = engine.gpu() {
        if let Some(t) = args.scan_compare {
            report["scan_compare"] = scan_compare(&g.ctx, g.dims(), t, args.repeats, q)?;
        }
        if args.matmul {
            report["matmul"] = matmul_bench(&g.ctx, c, args.repeats, q)?;
        }
    }
    if q {
        crate::out!("{report}");
    }
    Ok(())
}

fn kernel_breakdown(ctx: &GpuContext, quiet: bool) -> AnyResult<Value> {
    let totals = pollster::block_on(ctx.profile_collect())?;
    let all: f64 = totals.iter().map(|t| t.1).sum();
    let how = match ctx.profile_clock() {
        ProfileClock::Timestamps => "timestamp queries".to_string(),
        ProfileClock::Host => format!(
            "host clock: each command submitted alone and waited for, less {:.0} us",
            ctx.host_submit_ms()? * 1e3
        ),
    };
    say!(quiet, "per-kernel GPU time ({how}; all runs above):");
    let mut rows = Vec::new();
    for (name, total, n) in &totals {
        say!(
            quiet,
            "  {name:<24} {total:>10.2} ms {:>5.1}%  ({n} dispatches)",
            100.0 * total / all.max(1e-9)
        );
        rows.push(json!({"kernel": name, "ms": total, "dispatches": n}));
    }
    Ok(json!(rows))
}

/// The chunked SSD scan against the one-token-at-a-time scan kernel, same device and inputs.
fn scan_compare(
    ctx: &GpuContext,
    d: SsmDims,
    t: usize,
    repeats: usize,
    quiet: bool,
) -> AnyResult<Value> {
    let rnd = |n: usize, seed: u64, scale: f32| -> Vec<f32> {
        random_tokens(1000, n, seed)
            .iter()
            .map(|&v| (v as f32 / 500.0 - 1.0) * scale)
            .collect()
    };
    let (hp, gn, h) = (d.inner() as usize, d.bc_width() as usize, d.heads as usize);
    let x = ctx.upload_f32("x", &rnd(t * hp, 1, 1.0))?;
    let b = ctx.upload_f32("B", &rnd(t * gn, 2, 1.0))?;
    let c = ctx.upload_f32("C", &rnd(t * gn, 3, 1.0))?;
    let dt: Vec<f32> = rnd(t * h, 4, 0.05).iter().map(|v| v.abs() + 0.01).collect();
    let dt = ctx.upload_f32("dt", &dt)?;
    let a_log = ctx.upload_f32("A_log", &rnd(h, 5, 1.0))?;
    let state = ctx.zeros("state", d.state_len() as usize)?;
    let y = ctx.zeros("y", t * hp)?;
    let inputs = ops::SsmInputs {
        x: ops::View::dense(&x, hp as u32),
        b: ops::View::dense(&b, gn as u32),
        c: ops::View::dense(&c, gn as u32),
        dt: ops::View::dense(&dt, h as u32),
        a_log: &a_log,
    };
    let yv = ops::View::dense(&y, hp as u32);
    let time = |chunked: bool| -> AnyResult<Duration> {
        let mut v = Vec::new();
        for _ in 0..repeats + 1 {
            let start = Instant::now();
            let mut rec = Recorder::new(ctx);
            if chunked {
                ops::ssd_scan(&mut rec, d, t as u32, &inputs, &state, yv, 64)?;
            } else {
                ops::ssm_sequential_scan(&mut rec, d, t as u32, &inputs, &state, yv)?;
            }
            rec.submit()?;
            ctx.wait_idle()?;
            v.push(start.elapsed());
        }
        v.remove(0);
        Ok(median(v))
    };
    let chunked = time(true)?;
    let sequential = time(false)?;
    let speedup = sequential.as_secs_f64() / chunked.as_secs_f64();
    say!(quiet, "scan over T={t} (H {} P {} N {}): chunked {:.1} ms, sequential {:.1} ms: chunked is {speedup:.1}x faster",
        d.heads, d.head_dim, d.state, ms(chunked), ms(sequential));
    Ok(
        json!({"tokens": t, "chunked_ms": ms(chunked), "sequential_ms": ms(sequential), "speedup": speedup}),
    )
}

/// GFLOP/s of the matmul kernel at the model's in_proj size, beside the CPU backend's.
fn matmul_bench(
    ctx: &GpuContext,
    c: &transmamba::ModelConfig,
    repeats: usize,
    quiet: bool,
) -> AnyResult<Value> {
    let (k, n) = (c.hidden_size, c.d_in_proj());
    let mut rows_out = Vec::new();
    for rows in [1usize, 512] {
        let xs: Vec<f32> = (0..rows * k)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let ws: Vec<f32> = (0..n * k)
            .map(|i| ((i * 104729) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let x = ctx.upload_f32("x", &xs)?;
        let w = GpuMatrix::from_f32(ctx, "w", &ws, n, k)?;
        let y = ctx.zeros("y", rows * n)?;
        let mut gpu = Vec::new();
        for _ in 0..repeats + 1 {
            let start = Instant::now();
            let mut rec = Recorder::new(ctx);
            for _ in 0..10 {
                ops::matmul(
                    &mut rec,
                    rows as u32,
                    ops::View::dense(&x, k as u32),
                    &w,
                    None,
                    ops::View::dense(&y, n as u32),
                    false,
                )?;
            }
            rec.submit()?;
            ctx.wait_idle()?;
            gpu.push(start.elapsed() / 10);
        }
        gpu.remove(0);
        let wt = transmamba::model::Tensor::new(vec![n, k], ws);
        let mut cpu = Vec::new();
        for _ in 0..repeats {
            let start = Instant::now();
            std::hint::black_box(transmamba::cpu::ops::matmul(&xs, rows, &wt, None));
            cpu.push(start.elapsed());
        }
        let flop = 2.0 * (rows * k * n) as f64;
        let g = flop / median(gpu).as_secs_f64() / 1e9;
        let cp = flop / median(cpu).as_secs_f64() / 1e9;
        say!(
            quiet,
            "matmul [{rows}×{k}]·[{k}×{n}]: GPU {g:.2} GFLOP/s, CPU backend {cp:.2} GFLOP/s"
        );
        rows_out.push(json!({"rows": rows, "in": k, "out": n, "gpu_gflops": g, "cpu_gflops": cp}));
    }
    Ok(json!(rows_out))
}

/// `n` greedy tokens after a `prompt_len` prompt, each streamed to text as `generate` does;
/// at every tenth: tokens/s over that tenth, the session's cache, GPU memory (buffers,
/// textures, bind groups) and the process's resident memory. After the last TransPoint all
/// of them should stay flat: the SSM state is fixed-size, the text stream decodes a bounded
/// window, and nothing grows per token but the 4-byte token list.
fn long_run(
    engine: &Engine,
    schedule: &Schedule,
    prompt_len: usize,
    n: usize,
    q: bool,
) -> AnyResult<Value> {
    let codec = transmamba::text::TextCodec::Bytes;
    let mut stream = transmamba::text::TextStream::new(&codec);
    let mut sampler = transmamba::sampling::Sampler::new(Default::default())?;
    let mut s = engine.session(schedule.clone())?;
    let prompt = random_tokens(engine.vocab(), prompt_len.max(1), 5);
    let mut logits = s.forward_blocking(&prompt, Logits::Last)?;
    let every = (n / 10).max(1);
    say!(
        q,
        "long run: {n} tokens after a {}-token prompt:",
        prompt.len()
    );
    let mut rows = Vec::new();
    let mut t0 = Instant::now();
    let mut last_mark = 0;
    let mut text_bytes = 0usize;
    for i in 0..n {
        let next = sampler.sample(&logits, prompt.len() - 1 + i)?;
        text_bytes += stream.push(next)?.len();
        logits = s.forward_blocking(&[next], Logits::Last)?;
        if (i + 1) % every == 0 || i + 1 == n {
            let tps = (i + 1 - last_mark) as f64 / t0.elapsed().as_secs_f64();
            let gpu = engine.gpu().and_then(|g| g.ctx.memory());
            let rss = resident_bytes();
            say!(
                q,
                "  {:>7} tokens: {tps:>8.1} tokens/s, cache {}, GPU {}, process {}",
                i + 1,
                format_bytes(s.cache_bytes()),
                gpu.map_or("-".into(), |m| format!(
                    "{} in {} bind groups",
                    format_bytes((m.buffer_bytes + m.texture_bytes) as usize),
                    m.bind_groups
                )),
                rss.map_or("-".into(), |b| format_bytes(b as usize)),
            );
            rows.push(json!({
                "tokens": i + 1,
                "tokens_per_s": tps,
                "cache_bytes": s.cache_bytes(),
                "gpu_buffer_bytes": gpu.map(|m| m.buffer_bytes),
                "gpu_texture_bytes": gpu.map(|m| m.texture_bytes),
                "gpu_bind_groups": gpu.map(|m| m.bind_groups),
                "resident_bytes": rss,
                "text_bytes": text_bytes,
            }));
            last_mark = i + 1;
            t0 = Instant::now();
        }
    }
    Ok(json!(rows))
}

/// The process's resident memory (Linux: VmRSS), if the platform says.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

//! `tm-run` as a user runs it: golden logits through `forward --out`, and clear errors.

use std::process::Command;

use transmamba::npy::from_npy_f32;
use transmamba_tests::{golden_cases, max_abs_diff, temp_dir, GoldenCase};

fn tm_run(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tm-run"))
        .args(args)
        .output()
        .expect("tm-run runs")
}

/// Writes the tiny random model (`make-model --preset tiny` plus `extra`) to `path`.
fn make_tiny(path: &std::path::Path, extra: &[&str]) {
    let mut args = vec![
        "make-model",
        "--preset",
        "tiny",
        "--out",
        path.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let r = tm_run(&args);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
}

/// `tm-run forward --out` on a golden case reproduces transformers' logits.
fn check_golden_forward(case: &GoldenCase, backend: &str) {
    let out = temp_dir(&format!("cli-golden-{backend}")).join(format!("{}.npy", case.name));
    let tokens: Vec<String> = case.tokens.iter().map(ToString::to_string).collect();
    let r = tm_run(&[
        "forward",
        "--model",
        case.dir.to_str().unwrap(),
        "--tokens",
        &tokens.join(","),
        "--backend",
        backend,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let (shape, logits) = from_npy_f32(&std::fs::read(&out).unwrap(), "out").unwrap();
    assert_eq!(shape, vec![case.tokens.len(), case.vocab]);
    let err = max_abs_diff(&logits, &case.logits);
    assert!(err < 1e-4, "{} on {backend}: |Δ| = {err}", case.name);
}

#[test]
fn golden_cases_through_forward_cpu() {
    for case in golden_cases() {
        check_golden_forward(&case, "cpu");
    }
}

#[test]
fn token_file_and_inspect() {
    let case = &golden_cases()[0];
    let dir = temp_dir("cli-tokens");
    let file = dir.join("tokens.txt");
    std::fs::write(&file, "1, 2, 3\n4").unwrap();
    let r = tm_run(&[
        "forward",
        "--model",
        case.dir.to_str().unwrap(),
        "--tokens",
        &format!("@{}", file.display()),
        "--transpoints",
        "2",
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(String::from_utf8_lossy(&r.stdout).contains("forward: 4 tokens"));
    let r = tm_run(&[
        "inspect",
        "--model",
        case.dir.to_str().unwrap(),
        "--transpoints",
        "paper",
    ]);
    assert!(r.status.success());
    let text = String::from_utf8_lossy(&r.stdout);
    assert!(
        text.contains("parameters") && text.contains("8192 tokens"),
        "{text}"
    );
}

#[test]
fn bad_input_gives_a_message_not_a_panic() {
    let case = &golden_cases()[0];
    let m = case.dir.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["forward", "--model", m, "--tokens", "1,999"],
            "out of range",
        ),
        (
            &["forward", "--model", m, "--tokens", "1,a"],
            "malformed token list",
        ),
        (&["forward", "--model", m, "--tokens", ","], "empty"),
        (
            &[
                "forward",
                "--model",
                m,
                "--tokens",
                "1",
                "--transpoints",
                "x",
            ],
            "invalid TransPoint schedule",
        ),
        (
            &[
                "forward",
                "--model",
                m,
                "--tokens",
                "1",
                "--transpoints",
                "1,2,3,4,5",
            ],
            "layers",
        ),
        (
            &["forward", "--model", "/nonexistent", "--tokens", "1"],
            "no model found",
        ),
        (
            &["forward", "--model", m, "--tokens", "@/nonexistent"],
            "cannot read token file",
        ),
    ];
    for (args, needle) in cases {
        let r = tm_run(args);
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(!r.status.success(), "{args:?} should fail");
        assert!(
            err.contains(needle),
            "{args:?}: stderr `{err}` should contain `{needle}`"
        );
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    }
}

#[test]
fn golden_case_through_forward_gpu() {
    check_golden_forward(&golden_cases()[0], "gpu");
}

fn generate_json(model: &str, backend: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "generate",
        "--model",
        model,
        "--tokens",
        "1,2,3,4,5",
        "--max-tokens",
        "24",
        "--transpoints",
        "8,inf",
        "--backend",
        backend,
        "--json",
    ];
    args.extend_from_slice(extra);
    let r = tm_run(&args);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    serde_json::from_slice(&r.stdout).expect("one JSON object")
}

#[test]
fn generate_is_the_same_on_cpu_and_gpu_and_reproducible() {
    let dir = temp_dir("cli-generate");
    let model = dir.join("tiny.safetensors");
    make_tiny(&model, &["--transpoints", "8,inf"]);
    let m = model.to_str().unwrap();
    // Greedy: the TransPoint (8) is crossed during generation; CPU and GPU agree token for token.
    let cpu = generate_json(m, "cpu", &[]);
    let gpu = generate_json(m, "gpu", &[]);
    assert_eq!(cpu["tokens"].as_array().unwrap().len(), 24);
    assert_eq!(cpu["tokens"], gpu["tokens"]);
    // Sampling: a seed reproduces the run, another seed gives another one.
    let s1 = generate_json(m, "cpu", &["--temperature", "1.5", "--seed", "3"]);
    let s1b = generate_json(m, "gpu", &["--temperature", "1.5", "--seed", "3"]);
    let s2 = generate_json(m, "cpu", &["--temperature", "1.5", "--seed", "4"]);
    assert_eq!(s1["tokens"], s1b["tokens"]);
    assert_ne!(s1["tokens"], s2["tokens"]);
    // A text prompt without tokenizer.json is read as bytes (this vocabulary has 64 ids).
    let r = tm_run(&[
        "generate",
        "--model",
        m,
        "--prompt",
        "!?",
        "--max-tokens",
        "3",
        "--json",
        "--backend",
        "cpu",
    ]);
    assert!(r.status.success());
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(v["prompt_tokens"], serde_json::json!([33, 63]));
    // Bad sampling options are errors.
    let r = tm_run(&["generate", "--model", m, "--tokens", "1", "--top-p", "0"]);
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("top-p"));
}

/// `auto` runs the CPU engine where the only adapter is a software one (CI's is lavapipe, whose
/// device type is Cpu) and says so; `--backend gpu` still gets lavapipe.
#[test]
fn auto_picks_the_cpu_engine_on_a_software_adapter_and_says_why() {
    let dir = temp_dir("cli-auto");
    let model = dir.join("tiny.safetensors");
    make_tiny(&model, &[]);
    let m = model.to_str().unwrap();
    let auto = generate_json(m, "auto", &[]);
    let backend = auto["backend"].as_str().unwrap();
    assert!(
        backend.starts_with("cpu (") && backend.contains("software"),
        "{backend}"
    );
    let gpu = generate_json(m, "gpu", &[]);
    let backend = gpu["backend"].as_str().unwrap();
    assert!(
        backend.starts_with("gpu (") && backend.contains("requested"),
        "{backend}"
    );
    assert_eq!(auto["tokens"], gpu["tokens"]);
    let r = tm_run(&["inspect", "--model", m]);
    let text = String::from_utf8_lossy(&r.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("engine (auto)"))
        .unwrap_or_else(|| panic!("no engine line in {text}"));
    assert!(
        line.contains("cpu (auto: the only adapter") && line.contains("software"),
        "{line}"
    );
    // GPU-only measurements on the CPU engine: a message, not a silently shorter report.
    let r = tm_run(&[
        "bench",
        "--preset",
        "tiny",
        "--gen",
        "2",
        "--prompt-len",
        "8",
        "--matmul",
    ]);
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("--matmul measures the GPU engine") && err.contains("--backend gpu"),
        "{err}"
    );
}

/// Without XDG_RUNTIME_DIR (containers, CI), probing adapters used to print libwayland's
/// "error: XDG_RUNTIME_DIR is invalid …" through Mesa's device-select layer: a user's first run
/// must not show an "error" line that is not ours. Both engines, stderr empty of it.
#[test]
fn no_wayland_noise_without_xdg_runtime_dir() {
    // Unset, and set to what libwayland also rejects (empty: not an absolute path).
    for runtime_dir in [None, Some("")] {
        for backend in ["auto", "gpu"] {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_tm-run"));
            cmd.args(["generate", "--prompt", "Once", "--max-tokens", "2"])
                .args(["--backend", backend])
                .env_remove("NODEVICE_SELECT");
            match runtime_dir {
                Some(d) => cmd.env("XDG_RUNTIME_DIR", d),
                None => cmd.env_remove("XDG_RUNTIME_DIR"),
            };
            let r = cmd.output().expect("tm-run runs");
            let err = String::from_utf8_lossy(&r.stderr);
            assert!(r.status.success(), "{runtime_dir:?} {backend}: {err}");
            assert!(
                !err.contains("XDG_RUNTIME_DIR"),
                "{runtime_dir:?} {backend}: {err}"
            );
        }
    }
}

#[test]
fn bench_prints_its_figures() {
    let r = tm_run(&[
        "bench",
        "--preset",
        "tiny",
        "--prompt-len",
        "16",
        "--gen",
        "4",
        "--repeats",
        "1",
        "--positions",
        "8,40",
        "--sweep",
        "8,16",
        "--scan-compare",
        "32",
        "--matmul",
        "--profile",
        "--transpoints",
        "12",
        "--backend",
        "gpu",
        "--json",
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).expect("JSON");
    assert!(v["prefill"]["tokens_per_s"].as_f64().unwrap() > 0.0);
    assert!(v["decode"]["tokens_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(v["decode_by_position"].as_array().unwrap().len(), 2);
    assert_eq!(v["prefill_sweep"].as_array().unwrap().len(), 2);
    assert!(v["scan_compare"]["speedup"].as_f64().unwrap() > 0.0);
    let kernels = v["kernel_times"].as_array().unwrap();
    assert_eq!(v["kernels"], "cpu-adapter", "the kernels lavapipe runs");
    assert!(!kernels.is_empty(), "per-kernel times");
    // lavapipe is a CPU adapter: its breakdown comes from the host clock, and the SSM and
    // product kernels of this decode are in it.
    assert_eq!(v["profile_clock"], "host");
    for k in ["matvec", "ssm_step_tex"] {
        assert!(
            kernels
                .iter()
                .any(|r| r["kernel"] == k && r["ms"].as_f64().unwrap() > 0.0),
            "{k} in {kernels:?}"
        );
    }
    // After the TransPoint (12) the cache holds only conv + SSM state: position 40 uses less than
    // a pure-attention layer would.
    let at40 = v["decode_by_position"][1]["cache_bytes"].as_u64().unwrap();
    let at8 = v["decode_by_position"][0]["cache_bytes"].as_u64().unwrap();
    assert!(
        at40 <= at8 * 4,
        "cache should stop growing after the TransPoint: {at8} -> {at40}"
    );
}

fn json_of(r: &std::process::Output) -> serde_json::Value {
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    serde_json::from_slice(&r.stdout).expect("one JSON object")
}

#[test]
fn perplexity_is_the_mean_nll_of_forward_logits() {
    use transmamba::perplexity::NllSum;
    let dir = temp_dir("cli-perplexity");
    let model = dir.join("tiny.safetensors");
    let m = model.to_str().unwrap();
    make_tiny(&model, &["--transpoints", "6,inf"]);
    // No tokenizer: the text is read as bytes, all below this vocabulary's 64 ids.
    let text = "12 34, 56! 78? 90. 13 57; 24 68: 0.";
    let text_file = dir.join("text.txt");
    std::fs::write(&text_file, text).unwrap();
    let t = text_file.to_str().unwrap();
    let tokens: Vec<u32> = text.bytes().map(u32::from).collect();
    let list: Vec<String> = tokens.iter().map(ToString::to_string).collect();

    // The whole text as one sequence equals the NLL of one forward pass's logits.
    let logits_file = dir.join("logits.npy");
    let r = tm_run(&[
        "forward",
        "--model",
        m,
        "--tokens",
        &list.join(","),
        "--backend",
        "cpu",
        "--out",
        logits_file.to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let (_, logits) = from_npy_f32(&std::fs::read(&logits_file).unwrap(), "logits").unwrap();
    let mut expected = NllSum::default();
    expected.push_rows(&logits, 64, &tokens[1..]);
    for backend in ["cpu", "gpu"] {
        let v = json_of(&tm_run(&[
            "perplexity",
            "--model",
            m,
            "--text",
            t,
            "--context",
            "0",
            "--backend",
            backend,
            "--json",
        ]));
        assert_eq!(v["scored_tokens"], tokens.len() - 1);
        let ppl = v["perplexity"].as_f64().unwrap();
        assert!(
            (ppl - expected.perplexity()).abs() < 1e-4 * expected.perplexity(),
            "{backend}: {ppl} vs {}",
            expected.perplexity()
        );
    }
    // Windows of 10 tokens: each a fresh sequence whose first token is context only.
    let v = json_of(&tm_run(&[
        "perplexity",
        "--model",
        m,
        "--text",
        t,
        "--context",
        "10",
        "--backend",
        "cpu",
        "--json",
    ]));
    let windows = tokens.len().div_ceil(10);
    assert_eq!(v["windows"], windows);
    assert_eq!(v["scored_tokens"], tokens.len() - windows);
    assert!(v["cache_bytes_8k"].as_u64().unwrap() > 0);
    // Errors name the problem.
    let r = tm_run(&["perplexity", "--model", m, "--text", "/nonexistent.txt"]);
    assert!(String::from_utf8_lossy(&r.stderr).contains("cannot read text file"));
    std::fs::write(dir.join("high.txt"), "zebra").unwrap();
    let r = tm_run(&[
        "perplexity",
        "--model",
        m,
        "--text",
        dir.join("high.txt").to_str().unwrap(),
    ]);
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("out of range"));
}

/// With no --model, tm-run runs the demo model built into it (trained, with its tokenizer).
#[test]
fn the_embedded_demo_model_generates_and_is_trained() {
    let v = json_of(&tm_run(&[
        "generate",
        "--prompt",
        "Once upon a time",
        "--max-tokens",
        "16",
        "--backend",
        "cpu",
        "--json",
    ]));
    assert_eq!(v["tokens"].as_array().unwrap().len(), 16);
    let prompt = v["prompt_tokens"].as_array().unwrap().len();
    assert!(
        prompt < "Once upon a time".len() / 2,
        "BPE, not bytes: {prompt} tokens"
    );
    let text = v["text"].as_str().unwrap();
    let words = text
        .split_whitespace()
        .filter(|w| w.chars().any(|c| c.is_ascii_alphabetic()));
    assert!(words.count() >= 3, "`{text}`");
    // Trained: far below the 4096 of a uniform guess on held-out text (the end of Moby-Dick).
    let heldout = transmamba_tests::demo_dir().join("reference/heldout.txt");
    let v = json_of(&tm_run(&[
        "perplexity",
        "--text",
        heldout.to_str().unwrap(),
        "--max-tokens",
        "512",
        "--context",
        "256",
        "--backend",
        "cpu",
        "--json",
    ]));
    let ppl = v["perplexity"].as_f64().unwrap();
    assert!(ppl < 400.0, "held-out perplexity {ppl}");
}

/// Issue 15's hostile inputs as a user meets them: a corrupt (NaN) weight is a one-line message
/// naming the tensor, and a huge `--max-tokens` streams tokens instead of aborting on an
/// up-front allocation.
#[test]
fn hostile_model_and_runaway_length() {
    use std::io::Read;
    use transmamba::synthetic::{random_model, write_single_file, RandomSpec, StoreAs};
    let dir = temp_dir("cli-hostile");
    let mut m = random_model(&RandomSpec::default(), 3);
    m.layers[0].in_proj.data[7] = f32::NAN;
    let path = dir.join("nan.safetensors");
    write_single_file(&m, &path, StoreAs::F32).unwrap();
    let r = tm_run(&[
        "forward",
        "--model",
        path.to_str().unwrap(),
        "--tokens",
        "1,2",
    ]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success());
    assert!(
        err.contains("backbone.layers.0.mixer.in_proj.weight") && err.contains("non-finite"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");

    let mut child = Command::new(env!("CARGO_BIN_EXE_tm-run"))
        .args([
            "generate",
            "--tokens",
            "1,2,3",
            "--max-tokens",
            "1000000000000",
            "--backend",
            "cpu",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read until a few generated tokens' text has arrived (or the process ends, a failure).
    let mut stdout = child.stdout.take().unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while got.len() < 64 && std::time::Instant::now() < deadline {
        match stdout.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let still_running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    assert!(
        still_running && got.len() >= 64,
        "generation with a huge --max-tokens should stream: {} bytes, stderr {}",
        got.len(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A long run (issue 15, part 4) at a size CI affords: after the TransPoint, the cache, the
/// GPU's memory and bind groups stay exactly flat, and the process's memory about flat.
#[test]
fn long_run_memory_is_flat_after_the_transpoint() {
    let v = json_of(&tm_run(&[
        "bench",
        "--preset",
        "tiny",
        "--backend",
        "gpu",
        "--prompt-len",
        "4",
        "--gen",
        "2",
        "--repeats",
        "1",
        "--transpoints",
        "8",
        "--long",
        "400",
        "--json",
    ]));
    let rows = v["long_run"].as_array().expect("long_run rows");
    assert_eq!(rows.len(), 10);
    let first = &rows[0];
    assert_eq!(first["tokens"], 40);
    for r in rows {
        for key in [
            "cache_bytes",
            "gpu_buffer_bytes",
            "gpu_texture_bytes",
            "gpu_bind_groups",
        ] {
            assert_eq!(r[key], first[key], "{key} grew: {r}");
        }
        assert!(r["tokens_per_s"].as_f64().unwrap() > 0.0);
    }
    assert!(
        first["gpu_buffer_bytes"].as_u64().unwrap() > 0,
        "GPU memory is counted"
    );
    let rss = |r: &serde_json::Value| r["resident_bytes"].as_u64().unwrap() as f64;
    let (a, b) = (rss(first), rss(&rows[9]));
    assert!(
        b <= a * 1.05 + 8e6,
        "process memory grew from {a} to {b} bytes"
    );
}

/// `generate --save-state` then `--state` continues the sequence: the tokens of one run, with
/// the state saved on one engine and continued on the other; `chat` keeps its session across
/// turns and its `/save` file continues with `generate --state`; bad state files are one-line
/// errors.
#[test]
fn saved_states_continue_on_either_engine_and_in_chat() {
    let dir = temp_dir("cli-state");
    let model = dir.join("tiny.safetensors");
    let m = model.to_str().unwrap();
    make_tiny(&model, &["--transpoints", "8,inf"]);
    // One run: 5 prompt tokens, 24 generated (crossing the TransPoint at 8).
    let whole = generate_json(m, "cpu", &["--temperature", "0.8", "--seed", "9"]);
    let want = whole["tokens"].as_array().unwrap().clone();
    for (first, second) in [("cpu", "gpu"), ("gpu", "cpu")] {
        let state = dir.join(format!("{first}.state"));
        let s = state.to_str().unwrap();
        let head = tm_run(&[
            "generate",
            "--model",
            m,
            "--tokens",
            "1,2,3,4,5",
            "--max-tokens",
            "6",
            "--transpoints",
            "8,inf",
            "--temperature",
            "0.8",
            "--seed",
            "9",
            "--backend",
            first,
            "--json",
            "--save-state",
            s,
        ]);
        assert!(
            head.status.success(),
            "{}",
            String::from_utf8_lossy(&head.stderr)
        );
        let head = json_of(&head);
        assert!(head["state_file_bytes"].as_u64().unwrap() > 0);
        let tail = tm_run(&[
            "generate",
            "--model",
            m,
            "--state",
            s,
            "--max-tokens",
            "18",
            "--temperature",
            "0.8",
            "--seed",
            "9",
            "--backend",
            second,
            "--json",
        ]);
        assert!(
            tail.status.success(),
            "{}",
            String::from_utf8_lossy(&tail.stderr)
        );
        let tail = json_of(&tail);
        assert_eq!(tail["resumed_at"], 11);
        let mut got = head["tokens"].as_array().unwrap().clone();
        got.extend(tail["tokens"].as_array().unwrap().iter().cloned());
        assert_eq!(got, want, "saved on {first}, continued on {second}");
    }
    // Chat: two turns, /save, then generate --state continues the conversation.
    let saved = dir.join("chat.state");
    // "é" is outside this 64-id byte vocabulary: that turn is an error and the chat goes on.
    let script = format!("!?\n/stats\né\n+-\n/save {}\n/quit\n", saved.display());
    let mut child = Command::new(env!("CARGO_BIN_EXE_tm-run"))
        .args([
            "chat",
            "--model",
            m,
            "--max-tokens",
            "4",
            "--backend",
            "cpu",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let r = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{err}");
    // Turn 1: "!?\n" (3) + 4 answered + "\n" = 8; turn 2: "+-\n" + 4 + "\n" = 16.
    assert!(err.contains("position 8 "), "{err}");
    assert!(
        err.contains("[error: token id 195 at position 8 is out of range"),
        "{err}"
    );
    assert!(err.contains("saved 16 tokens"), "{err}");
    let r = tm_run(&[
        "generate",
        "--model",
        m,
        "--state",
        saved.to_str().unwrap(),
        "--max-tokens",
        "2",
        "--json",
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(json_of(&r)["resumed_at"], 16);
    // The same conversation as plain generate calls: chat's answers are greedy continuations.
    // Bad state files: one line naming the problem, no panic.
    let junk = dir.join("junk.state");
    std::fs::write(&junk, b"not a state").unwrap();
    let other = dir.join("other.safetensors");
    make_tiny(&other, &["--seed", "77"]);
    for (model, state, needle) in [
        (m, junk.to_str().unwrap(), "malformed session state"),
        (
            other.to_str().unwrap(),
            saved.to_str().unwrap(),
            "another model",
        ),
        (m, model.to_str().unwrap(), "malformed session state"),
        (m, "/nonexistent.state", "cannot read the state file"),
    ] {
        let r = tm_run(&[
            "generate",
            "--model",
            model,
            "--state",
            state,
            "--max-tokens",
            "2",
        ]);
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(!r.status.success());
        assert!(err.contains(needle) && err.lines().count() == 1, "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// A lost GPU device (forced with the test hook `TM_TEST_LOSE_DEVICE`): `tm-run` prints one
/// line saying so and exits non-zero, for forward and generate alike.
#[test]
fn a_lost_device_is_one_line_and_a_failing_exit() {
    for args in [
        &["forward", "--tokens", "1,2,3", "--backend", "gpu"][..],
        &[
            "generate",
            "--tokens",
            "1,2,3",
            "--max-tokens",
            "4",
            "--backend",
            "gpu",
        ][..],
    ] {
        let r = Command::new(env!("CARGO_BIN_EXE_tm-run"))
            .args(args)
            .env("TM_TEST_LOSE_DEVICE", "1")
            .output()
            .expect("tm-run runs");
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(!r.status.success(), "{err}");
        assert!(err.contains("GPU device lost"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// `--kernels portable` runs the GPU engine on the portable kernels (as an adapter without
/// subgroups would) and gives the CPU engine's tokens; the JSON names the kernels; `auto` picks
/// lavapipe's 8-wide subgroup kernels; the CPU engine has none.
#[test]
fn kernels_are_chosen_and_named() {
    let dir = temp_dir("cli-kernels");
    let model = dir.join("tiny.safetensors");
    let m = model.to_str().unwrap();
    make_tiny(&model, &["--transpoints", "8,inf"]);
    let cpu = generate_json(m, "cpu", &[]);
    let portable = generate_json(m, "gpu", &["--kernels", "portable"]);
    let auto = generate_json(m, "gpu", &[]);
    assert_eq!(portable["tokens"], cpu["tokens"]);
    assert_eq!(auto["tokens"], cpu["tokens"]);
    assert_eq!(portable["kernels"], "portable");
    assert_eq!(auto["kernels"], "cpu-adapter");
    assert!(cpu["kernels"].is_null());
    assert!(portable["backend"]
        .as_str()
        .unwrap()
        .contains("portable kernels"));
}

#[test]
fn quantize_writes_a_file_that_generates_what_quantize_at_load_does() {
    let dir = temp_dir("cli-quantize");
    let model = dir.join("tiny.safetensors");
    make_tiny(&model, &["--transpoints", "8,inf"]);
    let m = model.to_str().unwrap();
    for format in ["q8_0", "q4_0"] {
        let out = dir.join(format!("tiny-{format}.safetensors"));
        let o = out.to_str().unwrap();
        let r = tm_run(&["quantize", "--model", m, "--to", format, "--out", o]);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        let said = String::from_utf8_lossy(&r.stderr).to_string();
        assert!(said.contains(format) && said.contains("MiB"), "{said}");
        assert!(
            std::fs::metadata(&out).unwrap().len() < std::fs::metadata(&model).unwrap().len() / 2
        );
        // The file's own blocks (auto) = quantizing the f32 model at load, on both engines.
        let from_file = generate_json(o, "cpu", &[]);
        let backend = from_file["backend"].as_str().unwrap().to_string();
        assert!(backend.contains(&format!("{format} weights")), "{backend}");
        let at_load = generate_json(m, "cpu", &["--weights", format]);
        let gpu = generate_json(o, "gpu", &[]);
        assert_eq!(from_file["tokens"], at_load["tokens"], "{format}");
        assert_eq!(from_file["tokens"], gpu["tokens"], "{format}");
    }
    // Bad requests are one-line errors.
    let r = tm_run(&[
        "quantize",
        "--model",
        m,
        "--to",
        "q5_1",
        "--out",
        "x.safetensors",
    ]);
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("q8_0 or q4_0"));
    let r = tm_run(&["generate", "--model", m, "--tokens", "1", "--weights", "q3"]);
    assert!(!r.status.success());
}

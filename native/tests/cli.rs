//! `tm-run` as a user runs it: golden logits through `forward --out`, and clear errors.

use std::process::Command;

use transmamba::npy::from_npy_f32;
use transmamba_tests::{golden_cases, max_abs_diff, temp_dir};

fn tm_run(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tm-run"))
        .args(args)
        .output()
        .expect("tm-run runs")
}

#[test]
fn golden_cases_through_forward_cpu() {
    let out_dir = temp_dir("cli-golden");
    for case in golden_cases() {
        let tokens: Vec<String> = case.tokens.iter().map(ToString::to_string).collect();
        let out = out_dir.join(format!("{}.npy", case.name));
        let r = tm_run(&[
            "forward",
            "--model",
            case.dir.to_str().unwrap(),
            "--tokens",
            &tokens.join(","),
            "--backend",
            "cpu",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        let (shape, logits) = from_npy_f32(&std::fs::read(&out).unwrap(), "out").unwrap();
        assert_eq!(shape, vec![case.tokens.len(), case.vocab]);
        let err = max_abs_diff(&logits, &case.logits);
        assert!(err < 1e-4, "{}: |Δ| = {err}", case.name);
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

"""Held-out perplexity of the demo model under TransPoint schedules, from `tm-run perplexity`.

    cargo build --release -p tm-run
    python demo/train/perplexity_table.py            # writes docs/perplexity.{json,png}, prints the table

Needs only the runtime, matplotlib and the held-out text shipped in demo/reference/.
"""

import argparse
import json
import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCHEDULES = [
    ("0", "TransPoint 0 everywhere (pure SSM)"),
    ("inf", "`inf` everywhere (pure attention)"),
    ("config", "the model's default `0,16,32,64,128,256`"),
    ("16", "uniform 16"),
    ("64", "uniform 64"),
    ("256", "uniform 256"),
    ("paper", "the paper's cycle `0,128,256,512,1024,2048`"),
]
CONTEXTS = [256, 1024]
# The default schedule again with the matrices quantized at load (docs/QUANTIZATION.md).
WEIGHTS = [
    ("q8_0", "the model's default, weights in q8_0 (7.4 MB file)"),
    ("q4_0", "the model's default, weights in q4_0 (4.2 MB file)"),
]


def run(tm_run, text, spec, context, backend, weights="auto"):
    out = subprocess.run(
        [tm_run, "perplexity", "--text", str(text), "--transpoints", spec, "--context", str(context),
         "--backend", backend, "--weights", weights, "--json"],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout)


def mib(b):
    return f"{b / 2**20:.2f} MiB" if b >= 2**20 else f"{b / 2**10:.0f} KiB"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tm-run", default=str(ROOT / "target/release/tm-run"))
    ap.add_argument("--text", default=str(ROOT / "demo/reference/heldout.txt"))
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--out", default=str(ROOT / "docs"))
    ap.add_argument("--replot", action="store_true", help="redraw from OUT/perplexity.json")
    args = ap.parse_args()
    out = pathlib.Path(args.out)
    if args.replot:
        results = json.loads((out / "perplexity.json").read_text())
        report(results, out)
        return

    results = []
    runs = [(spec, label, "auto") for spec, label in SCHEDULES]
    runs += [("config", label, w) for w, label in WEIGHTS]
    for spec, label, weights in runs:
        row = {"spec": spec, "label": label, "weights": weights}
        for ctx in CONTEXTS:
            r = run(args.tm_run, args.text, spec, ctx, args.backend, weights)
            row[f"ppl_{ctx}"] = r["perplexity"]
            row["transpoints"] = r["transpoints"]
            row["tokens"] = r["scored_tokens"]
            row["cache_1k"], row["cache_8k"] = r["cache_bytes_1k"], r["cache_bytes_8k"]
            print(f"{spec:>6} {weights:>4} context {ctx:>5}: perplexity {r['perplexity']:.2f}", flush=True)
        results.append(row)

    out.mkdir(parents=True, exist_ok=True)
    (out / "perplexity.json").write_text(json.dumps(results, indent=1) + "\n")
    report(results, out)


def report(results, out):

    head = "| schedule | per-layer TransPoints | " + " | ".join(
        f"perplexity, {c}-token windows" for c in CONTEXTS) + " | cache at 1k tokens | cache at 8k tokens |"
    print()
    print(head)
    print("|" + "---|" * (4 + len(CONTEXTS)))
    for r in results:
        ppl = " | ".join(f"{r[f'ppl_{c}']:.2f}" for c in CONTEXTS)
        print(f"| {r['label']} | `{r['transpoints']}` | {ppl} | {mib(r['cache_1k'])} | {mib(r['cache_8k'])} |")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = [r for r in results if r.get("weights", "auto") == "auto"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    names = [r["spec"] for r in results]
    x = range(len(results))
    w = 0.8 / len(CONTEXTS)
    for i, c in enumerate(CONTEXTS):
        a.bar([j + i * w for j in x], [r[f"ppl_{c}"] for r in results], w, label=f"{c}-token windows")
    a.set_xticks([j + w * (len(CONTEXTS) - 1) / 2 for j in x], names)
    a.set_ylabel("held-out perplexity (lower is better)")
    a.set_xlabel("TransPoint schedule")
    a.legend(loc="lower right")
    a.set_title("Quality across schedules (one trained model)")
    for i, (k, lab) in enumerate([("cache_1k", "1k tokens"), ("cache_8k", "8k tokens")]):
        b.bar([j + i * 0.4 for j in x], [r[k] / 2**20 for r in results], 0.4, label=lab)
    b.set_xticks([j + 0.2 for j in x], names)
    b.set_yscale("log")
    b.set_ylabel("cache memory per sequence (MiB, log)")
    b.set_xlabel("TransPoint schedule")
    b.legend(loc="upper center")
    b.set_title("Memory each schedule needs")
    fig.tight_layout()
    fig.savefig(out / "perplexity.png", dpi=110)
    print(f"\nwrote {out / 'perplexity.json'} and {out / 'perplexity.png'}")


if __name__ == "__main__":
    main()

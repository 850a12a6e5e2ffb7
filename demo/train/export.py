"""Ship a trained checkpoint: one f16 .safetensors (config and tokenizer in its metadata) and the
reference logits the runtime's tests compare against.

    python export.py                 # work/ckpt.pt -> ../transmamba-demo.safetensors, ../reference/

The reference logits come from this directory's own forward (model.py), in float64, over the
f16-rounded weights that are shipped, for a held-out passage under three schedules.
"""

import argparse
import json
import pathlib

import numpy as np
import torch
from safetensors.torch import save_file

from model import Config, TransMamba

HERE = pathlib.Path(__file__).parent
DEMO = HERE.parent
# The model's default schedule: log-spaced over the training length (256), the shape of the
# paper's cycle; the first layer is pure SSM and the last attends over its whole window.
DEFAULT_TRANSPOINTS = [0, 16, 32, 64, 128, 256]
REFERENCE_TOKENS = 96
REFERENCE_SCHEDULES = {"config": DEFAULT_TRANSPOINTS, "0": [0] * 6, "inf": [None] * 6}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default=str(HERE / "work"))
    ap.add_argument("--out", default=str(DEMO / "transmamba-demo.safetensors"))
    ap.add_argument("--reference", default=str(DEMO / "reference"))
    args = ap.parse_args()
    work = pathlib.Path(args.work)

    ckpt = torch.load(work / "ckpt.pt", map_location="cpu")
    cfg = Config(**{k: v for k, v in ckpt["config"].items() if k != "transpoints"})
    cfg.transpoints = DEFAULT_TRANSPOINTS
    model = TransMamba(cfg)
    model.load_state_dict(ckpt["model"])

    tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in model.spec_tensors().items()}
    tokenizer = (work / "tokenizer.json").read_text()
    meta = {"config": json.dumps(cfg.to_json()), "tokenizer": tokenizer, "format": "pt"}
    save_file(tensors, args.out, metadata=meta)
    size = pathlib.Path(args.out).stat().st_size
    print(f"wrote {args.out}: {size / 1e6:.2f} MB, step {ckpt['step']}")

    # Reference: the shipped (f16-rounded) weights, evaluated in float64.
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.float16).to(p.dtype))
    model = model.double().eval()
    held = np.load(work / "heldout.tokens.npy")[:REFERENCE_TOKENS].astype(np.int64)
    ref = pathlib.Path(args.reference)
    ref.mkdir(parents=True, exist_ok=True)
    (ref / "tokens.txt").write_text(",".join(str(t) for t in held) + "\n")
    # The held-out text itself, for `tm-run perplexity` (perplexity_table.py).
    (ref / "heldout.txt").write_text((work / "heldout.txt").read_text())
    with torch.no_grad():
        for name, tps in REFERENCE_SCHEDULES.items():
            logits = model(torch.from_numpy(held)[None], tps)[0].float().numpy()
            np.save(ref / f"logits_{name}.npy", logits)
            print(f"reference logits `{name}` {list(logits.shape)}")


if __name__ == "__main__":
    main()

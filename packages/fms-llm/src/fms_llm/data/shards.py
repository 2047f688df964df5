"""Token shards: a corpus tokenised once into flat, memory-mapped arrays of token ids.

Layout of a shard directory:

- `meta.json`: the format version, the token `dtype` (`uint16` when every id fits, else `uint32`),
  `vocab_size`, `eos_id`, the tokenizer fingerprint, and per split the shard files with their token
  counts and the number of documents and UTF-8 bytes they hold (bytes turn nats per token into bits
  per byte);
- `train-00000.bin, ...` and `val-00000.bin, ...`: raw little-endian token ids, each document
  followed by the end-of-text id, at most `shard_tokens` ids a file.

The split is by *document* (a seeded permutation puts `val_fraction` of the documents in
validation), so no validation text is ever trained on. The directory is written into a temporary
sibling and renamed into place, so a crash never leaves a half-written corpus that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from fms_llm.data.corpus import CorpusError

__all__ = ["FORMAT_VERSION", "ShardError", "TokenShards", "split_documents", "write_token_shards"]

FORMAT_VERSION = 1


class ShardError(ValueError):
    """A shard directory is missing, corrupt, or does not match the tokenizer or model."""


def split_documents(
    n_docs: int, *, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training and validation documents (a seeded permutation, each sorted).

    At least one document goes to each split, so `n_docs` must be at least 2.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if n_docs < 2:
        raise CorpusError(
            f"the corpus has {n_docs} document(s); at least 2 are needed to split train/val. "
            "Documents are separated by blank lines (or are separate files): a text file "
            "without blank lines is one document, so put a blank line between its documents "
            "(paragraphs, chapters) or give a folder of files"
        )
    perm = np.random.default_rng([seed, 0x5EED]).permutation(n_docs)
    n_val = min(n_docs - 1, max(1, round(n_docs * val_fraction)))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _dtype_for(vocab_size: int) -> np.dtype[Any]:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


@dataclass(frozen=True)
class TokenShards:
    """A shard directory opened for reading; `split(name)` memory-maps one split's shards."""

    directory: Path
    meta: dict[str, Any]

    @classmethod
    def open(cls, directory: str | Path) -> TokenShards:
        """Open and check a shard directory written by [write_token_shards][fms_llm.data.shards.write_token_shards].

        Raises:
            ShardError: the directory or `meta.json` is missing or malformed, or a shard file's
                size does not match its recorded token count.
        """
        directory = Path(directory)
        meta_path = directory / "meta.json"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ShardError(f"{meta_path} does not exist: not a token shard directory") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise ShardError(f"{meta_path} is unreadable or not JSON ({exc})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
            raise ShardError(
                f"{meta_path}: format {meta.get('format') if isinstance(meta, dict) else None!r}, "
                f"expected {FORMAT_VERSION}"
            )
        itemsize = np.dtype(meta["dtype"]).itemsize
        for name, split in meta["splits"].items():
            for shard in split["shards"]:
                path = directory / shard["file"]
                expected = shard["n_tokens"] * itemsize
                actual = path.stat().st_size if path.is_file() else None
                if actual != expected:
                    raise ShardError(
                        f"{path} ({name} split) has {actual} bytes, expected {expected} "
                        f"({shard['n_tokens']} tokens of {meta['dtype']}): the shard is missing "
                        "or corrupt; delete the directory to re-tokenise"
                    )
        return cls(directory, meta)

    @property
    def vocab_size(self) -> int:
        """Vocabulary size of the tokenizer the shards were written with."""
        return int(self.meta["vocab_size"])

    @property
    def eos_id(self) -> int:
        """The end-of-text id that follows every document."""
        return int(self.meta["eos_id"])

    def split(self, name: str) -> list[np.memmap[Any, np.dtype[Any]]]:
        """The memory-mapped shards of split `name` (`"train"` or `"val"`)."""
        if name not in self.meta["splits"]:
            raise ShardError(
                f"split {name!r} not in {self.directory}: {sorted(self.meta['splits'])}"
            )
        dtype = np.dtype(self.meta["dtype"])
        return [
            np.memmap(self.directory / s["file"], dtype=dtype, mode="r", shape=(s["n_tokens"],))
            for s in self.meta["splits"][name]["shards"]
            if s["n_tokens"] > 0
        ]

    def n_tokens(self, name: str) -> int:
        """Total number of tokens in split `name`."""
        return int(sum(s["n_tokens"] for s in self.meta["splits"][name]["shards"]))

    def n_bytes(self, name: str) -> int:
        """Total UTF-8 bytes of the documents of split `name`."""
        return int(self.meta["splits"][name]["n_bytes"])


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_token_shards(
    documents: Sequence[str],
    encode_batch: Callable[[list[str]], list[list[int]]],
    directory: str | Path,
    *,
    vocab_size: int,
    eos_id: int,
    val_fraction: float = 0.05,
    seed: int = 0,
    shard_tokens: int = 2**27,
    fingerprint: str = "",
    extra: dict[str, Any] | None = None,
    progress: bool = True,
) -> TokenShards:
    """Tokenise `documents` into train/validation shards under `directory` (atomically).

    Args:
        documents: the corpus, one string a document.
        encode_batch: a tokenizer's `encode_batch` (a list of texts to a list of id lists).
        directory: the shard directory to create; it must not exist yet.
        vocab_size: the tokenizer's vocabulary size (chooses `uint16` or `uint32`).
        eos_id: the end-of-text id appended to every document.
        val_fraction: share of documents held out for validation.
        seed: seed of the document split.
        shard_tokens: at most this many ids a shard file.
        fingerprint: a tokenizer fingerprint recorded in `meta.json` and checked by readers.
        extra: more JSON-serialisable fields for `meta.json` (e.g. the synthetic floor).
        progress: show a tqdm progress bar.
    """
    directory = Path(directory)
    if directory.exists():
        raise ShardError(f"shard directory {directory} already exists; refusing to overwrite it")
    if not 0 <= eos_id < vocab_size:
        raise ValueError(f"eos_id must be in [0, vocab_size={vocab_size}), got {eos_id}")
    if shard_tokens < 1:
        raise ValueError(f"shard_tokens must be >= 1, got {shard_tokens}")
    train_idx, val_idx = split_documents(len(documents), val_fraction=val_fraction, seed=seed)
    dtype = _dtype_for(vocab_size)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        splits: dict[str, Any] = {}
        bar = tqdm(
            total=len(documents), desc="tokenising", unit="doc", disable=not progress, leave=False
        )
        for name, idx in (("train", train_idx), ("val", val_idx)):
            shards: list[dict[str, Any]] = []
            buf: list[np.ndarray] = []
            n_buf = 0
            n_bytes = 0

            def flush(name: str = name, shards: list[dict[str, Any]] = shards) -> None:
                nonlocal buf, n_buf
                arr = np.concatenate(buf) if buf else np.zeros(0, dtype)
                file = f"{name}-{len(shards):05d}.bin"
                with open(tmp / file, "wb") as f:
                    f.write(arr.astype("<" + dtype.str[1:], copy=False).tobytes())
                    f.flush()
                    os.fsync(f.fileno())
                shards.append({"file": file, "n_tokens": int(arr.size)})
                buf, n_buf = [], 0

            for start in range(0, len(idx), 256):
                chunk = [documents[i] for i in idx[start : start + 256]]
                n_bytes += sum(len(d.encode("utf-8")) for d in chunk)
                for ids in encode_batch(chunk):
                    arr = np.asarray([*ids, eos_id], dtype=np.int64)
                    if arr.size and (arr.min() < 0 or arr.max() >= vocab_size):
                        raise ShardError(
                            f"the tokenizer produced id {int(arr.max())} outside "
                            f"[0, vocab_size={vocab_size})"
                        )
                    arr = arr.astype(dtype)
                    while arr.size:
                        take = min(arr.size, shard_tokens - n_buf)
                        buf.append(arr[:take])
                        n_buf += take
                        arr = arr[take:]
                        if n_buf == shard_tokens:
                            flush()
                bar.update(len(chunk))
            if n_buf or not shards:
                flush()
            splits[name] = {"shards": shards, "n_docs": len(idx), "n_bytes": n_bytes}
        bar.close()
        meta = {
            "format": FORMAT_VERSION,
            "dtype": dtype.name,
            "vocab_size": vocab_size,
            "eos_id": eos_id,
            "tokenizer": fingerprint,
            "val_fraction": val_fraction,
            "seed": seed,
            "splits": splits,
            **(extra or {}),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        _fsync_dir(tmp)
        os.replace(tmp, directory)
        _fsync_dir(directory.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return TokenShards.open(directory)


def fingerprint_file(path: str | Path) -> str:
    """sha256 of a file (used to tie shards to the tokenizer file that wrote them)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()

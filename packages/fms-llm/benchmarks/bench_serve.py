"""Latency under load: time to first token (TTFT) and inter-token latency (ITL) of the server.

The OpenAI-compatible server ([fms_llm.serve][]) runs in this process (uvicorn on 127.0.0.1, a
free port) over a random Llama saved with a byte-level BPE tokenizer; C streaming clients
(`/v1/completions`, greedy, `--new` tokens each, no stop) start at once, and each records when
its request was sent, when its first token arrived and when each later one did (an answer may end early on the
end-of-text token; waves of C are repeated so that a row has at least 16 requests). Reported per C:
TTFT and ITL p50 and p99 (with 95% bootstrap intervals of the percentile over requests and
tokens), and the aggregate tokens/s. Percentiles are of wall time on a machine that may be
shared: compare rows of one run, and re-measure on a quiet machine for absolute figures.

    python packages/fms-llm/benchmarks/bench_serve.py [--quick] [--new 32] [--conc 1 8 32]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import socket
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx
import numpy as np
import torch
import uvicorn

from fms_llm.inference.engine import Engine
from fms_llm.models import Llama, LlamaConfig
from fms_llm.serve import create_app, load_served_model
from fms_llm.tokenizer import BPETokenizer
from fms_ml.experiment import bootstrap_ci

TEXT = ["Ada went to the garden; Bob went to the river. The river ran north past the mill. "] * 4


def _model_dir(root: Path, d: int, layers: int) -> Path:
    tok = BPETokenizer.train(TEXT, 320, special_tokens=["<|endoftext|>"], progress=False)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=tok.vocab_size, n_layers=layers, d_model=d,
                      n_heads=max(1, d // 64), n_kv_heads=max(1, d // 128), max_seq_len=512)  # fmt: skip
    model = Llama(cfg).eval()
    return model.save_pretrained(root / "bench", tok)


async def _one(client: httpx.AsyncClient, i: int, new: int) -> tuple[float, list[float]]:
    body = {"model": "bench", "prompt": f"Ada {i} went to the", "max_tokens": new,
            "temperature": 0, "stream": True}  # fmt: skip
    t0 = time.perf_counter()
    stamps: list[float] = []
    async with client.stream("POST", "/v1/completions", json=body) as r:
        async for line in r.aiter_lines():
            done = line == "data: [DONE]"
            if (
                line.startswith("data: ")
                and not done
                and json.loads(line[6:])["choices"][0]["text"]
            ):
                stamps.append(time.perf_counter())
    return t0, stamps


def _pct(values: list[float], q: float) -> str:
    arr = np.asarray(values) * 1000
    ci = bootstrap_ci(arr, lambda x: np.percentile(x, q), n_resamples=1000, random_state=0)
    return f"{ci.estimate:.1f} [{ci.low:.1f}, {ci.high:.1f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="C = 1, 8 and 16 new tokens")
    parser.add_argument("--new", type=int, default=32, help="tokens per request (32)")
    parser.add_argument("--conc", type=int, nargs="+", default=[1, 8, 32], help="concurrencies")
    parser.add_argument("--d-model", type=int, default=256, help="model width (256)")
    parser.add_argument("--layers", type=int, default=4, help="layers (4)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    conc, new = ([1, 8], 16) if args.quick else (args.conc, args.new)
    with tempfile.TemporaryDirectory() as tmp:
        served = load_served_model(_model_dir(Path(tmp), args.d_model, args.layers), device="cpu")
    app = create_app(served, engine=Engine(served.model, max_num_seqs=max(conc)),
                     max_queue=max(conc))  # fmt: skip
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    print(f"Llama d_model={args.d_model} layers={args.layers}, {new} tokens a request, greedy, "
          "1 thread; milliseconds, p50/p99 with 95% bootstrap intervals")  # fmt: skip
    print("| C | TTFT p50 | TTFT p99 | ITL p50 | ITL p99 | tokens/s |")
    print("|---|---|---|---|---|---|")

    async def run(c: int) -> tuple[list[tuple[float, list[float]]], float]:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=600) as client:
            await _one(client, -1, 2)  # warm-up
            t0 = time.perf_counter()
            res: list[tuple[float, list[float]]] = []
            for _ in range(max(2, 16 // c)):  # waves of c at once: at least 16 requests a row
                res += await asyncio.gather(*(_one(client, i, new) for i in range(c)))
            return res, time.perf_counter() - t0

    try:
        for c in conc:
            res, wall = asyncio.run(run(c))
            ttft = [st[0] - t0 for t0, st in res if st]
            itl = [b - a for _, st in res for a, b in itertools.pairwise(st)]
            n_tok = sum(len(st) for _, st in res)
            print(f"| {c} | {_pct(ttft, 50)} | {_pct(ttft, 99)} | {_pct(itl, 50)} | "
                  f"{_pct(itl, 99)} | {n_tok / wall:.0f} |", flush=True)  # fmt: skip
    finally:
        server.should_exit = True
        thread.join(timeout=30)


if __name__ == "__main__":
    main()

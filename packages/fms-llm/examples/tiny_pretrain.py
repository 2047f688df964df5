"""Pretrain a tiny GPT on synthetic stories in seconds, compare its loss with the corpus's entropy
floor, and sample from it: the main job's pipeline through the public API, shrunk.

Run from the repository root: `uv run python packages/fms-llm/examples/tiny_pretrain.py`.
"""

import tempfile
from pathlib import Path

import torch

from fms_llm.generate import generate_text
from fms_llm.train import load_config, pretrain

torch.set_num_threads(1)
with tempfile.TemporaryDirectory() as tmp:
    config = load_config(
        "tiny",  # the preset of `fms-llm train`, every setting that matters overridden below
        [
            'data.corpus="synthetic"',  # generated stories whose exact entropy is known
            "data.synthetic_docs=1000",
            'data.tokenizer="train"',  # a byte-level BPE trained on the corpus first
            "data.vocab_size=320",
            "data.val_fraction=0.1",
            f'data.cache_dir="{Path(tmp) / "cache"}"',
            'model.family="gpt"',
            "model.n_kv_heads=none",  # GPT-2 has no grouped-query attention (the preset's Llama has)
            "model.n_layers=2",
            "model.d_model=64",
            "model.n_heads=4",
            "model.max_seq_len=160",
            "train.seed=0",
            "train.seq_len=128",
            "train.batch_size=8",
            "train.max_steps=200",
            "train.lr=1e-2",
            "train.min_lr=1e-3",
            "train.warmup_steps=10",
            "train.weight_decay=0.1",
            "train.eval_every=200",
            "train.eval_batches=2",
            "train.log_every=200",
            "train.checkpoint_every=none",
            f'train.out_dir="{Path(tmp) / "run"}"',
            "train.progress=false",
            "sample.max_new_tokens=1",
        ],
    )
    result = pretrain(config)  # tokenise, train, evaluate, save a transformers-readable model dir
    m = result.metrics
    print(f"{result.model.num_parameters():,} parameters, {m['step']:.0f} steps of 8 x 128 tokens")
    print(
        f"validation loss {m['eval_doc_loss']:.3f} nats/token, entropy floor {m['eval_floor_loss']:.3f}"
    )
    print("saved:", sorted(p.name for p in result.model_dir.iterdir()))
    text = generate_text(
        result.model, result.tokenizer, "Once upon a time", 40, temperature=0.8, top_k=50, seed=0
    )
    print("sample: Once upon a time" + text.split("\n")[0])

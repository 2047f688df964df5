"""One seed of the fine-tuning pipeline's base and SFT, looked at closely: what the base knows.

`finetune_pipeline.py` reports means over seeds; this script asks why a figure is what it is, at
one seed and a smaller cost. It pretrains the pipeline's base (the same documents, tokenizer,
model and batches as `finetune_pipeline.pretrain_base`, with the size, learning rate and batch
given here) and, every `--curve-every` steps, scores the base in its own plain format
(`story\\nquestion\\nAnswer:`) on 20 questions of each kind, held-out and seen phrasings: the
learning curve of what pretraining knows, kind by kind. Then it runs one or more SFT variants
from that same base (`--sft-grid STEPS@LR[@lora],...`; `lora`: rank-16 adapters on every
projection, the base frozen) and scores each in the chat format on 40 questions of each kind,
held-out phrasings on the pipeline's test stories and seen phrasings on fresh ones.

    uv run python packages/fms-llm/experiments/finetune_diagnose.py --pre-steps 500 \\
        --curve-every 100 --sft-grid 100@1e-3 --json /tmp/diagnosis.json

Everything it measures is printed as it comes (`CURVE`, `SFT` and a final `RESULT` line) and
written to `--json`.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

import torch
from finetune_pipeline import (
    MAX_OPERAND,
    plain_answers,
    pretrain_base,
    pretrain_texts,
    scores,
    train_tokenizer,
)

from fms_llm.finetune.common import TrainArgs
from fms_llm.finetune.data import Example, arithmetic, split, story_qa
from fms_llm.finetune.lora import LoRAConfig, apply_lora
from fms_llm.finetune.sft import answer, sft
from fms_llm.models import Llama, LlamaConfig

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "out_proj", "gate_proj", "up_proj", "down_proj")


def by_kind(examples: list[Example], n: int) -> list[Example]:
    """The first `n` examples of each question kind."""
    out: dict[str, list[Example]] = {}
    for e in examples:
        if len(out.setdefault(e.kind, [])) < n:
            out[e.kind].append(e)
    return [e for v in out.values() for e in v]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pre-steps", type=int, default=500)
    ap.add_argument("--pre-lr", type=float, default=3e-3)
    ap.add_argument("--pre-bs", type=int, default=32)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--curve-every", type=int, default=0, help="0: no learning curve")
    ap.add_argument("--sft-grid", default="100@1e-3", help="STEPS@LR[@lora],...")
    ap.add_argument("--n-eval", type=int, default=40, help="questions of each kind")
    ap.add_argument(
        "--answer-sep",
        choices=("newline", "space"),
        default="newline",
        help="the base's plain format: `Answer:\\n<answer>` (the pipeline's) or `Answer: <answer>` "
        "(its first revision's, whose answers are other tokens than the chat model's)",
    )
    ap.add_argument("--json", type=Path, help="write every figure here")
    a = ap.parse_args()
    torch.set_num_threads(1)
    seed = a.seed
    sep = "\n" if a.answer_sep == "newline" else " "
    tok = train_tokenizer(1000, sep)
    torch.manual_seed(seed)
    model = Llama(
        LlamaConfig(
            vocab_size=tok.vocab_size,
            n_layers=a.layers,
            d_model=a.d,
            n_heads=a.heads,
            max_seq_len=128,
        )
    )
    ops = ("add", "sub")
    s_train, s_test = split(story_qa(6000, seed=seed), "template")
    m_train, m_test = split(
        arithmetic(3000, seed=seed, ops=ops, max_operand=MAX_OPERAND), "template"
    )
    fresh_s = split(story_qa(2000, seed=seed + 200), "template")[0]
    fresh_m = split(
        arithmetic(1000, seed=seed + 200, ops=ops, max_operand=MAX_OPERAND), "template"
    )[0]
    held, seen = by_kind(s_test + m_test, a.n_eval), by_kind(fresh_s + fresh_m, a.n_eval)
    small_h, small_s = by_kind(s_test + m_test, 20), by_kind(fresh_s + fresh_m, 20)
    res: dict[str, Any] = {"args": {k: str(v) for k, v in vars(a).items()}, "curve": []}
    c0 = time.process_time()

    def eval_fn(m: torch.nn.Module) -> dict[str, float]:
        point = {
            "cpu": time.process_time() - c0,
            **scores(small_h, plain_answers(model, tok, small_h, sep), "held"),
            **scores(small_s, plain_answers(model, tok, small_s, sep), "seen"),
        }
        res["curve"].append(point)
        print("CURVE", json.dumps(point), flush=True)
        return {"plain_held": point["held"]}

    pretrain_base(
        model,
        tok,
        pretrain_texts(8000, 12000, seed, sep),
        TrainArgs(steps=a.pre_steps, batch_size=a.pre_bs, lr=a.pre_lr, warmup_steps=20, seed=seed),
        eval_fn=eval_fn if a.curve_every else None,
        eval_every=a.curve_every or None,
    )
    res["cpu_seconds_pretrain"] = time.process_time() - c0
    res.update(scores(held, plain_answers(model, tok, held, sep), "base_plain_held"))
    res.update(scores(seen, plain_answers(model, tok, seen, sep), "base_plain_seen"))
    base_state = copy.deepcopy(model.state_dict())
    res["sft"] = {}
    for spec in a.sft_grid.split(","):
        parts = spec.split("@")
        steps, lr, lora = int(parts[0]), float(parts[1]), parts[2:] == ["lora"]
        model.load_state_dict(base_state)
        tuned = copy.deepcopy(model)
        if lora:
            apply_lora(tuned, LoRAConfig(r=16, alpha=32.0, targets=PROJECTIONS))
        c1 = time.process_time()
        sft(
            tuned,
            tok,
            [e.messages for e in s_train + m_train],
            TrainArgs(steps=steps, batch_size=32, lr=lr, warmup_steps=10, seed=seed),
        )
        r = {"cpu_seconds": time.process_time() - c1}
        r.update(scores(held, answer(tuned, tok, [e.prompt for e in held]), "held"))
        r.update(scores(seen, answer(tuned, tok, [e.prompt for e in seen]), "seen"))
        res["sft"][spec] = r
        print("SFT", spec, json.dumps(r), flush=True)
    res["cpu_seconds"] = time.process_time() - c0
    print("RESULT", json.dumps(res), flush=True)
    if a.json is not None:
        a.json.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()

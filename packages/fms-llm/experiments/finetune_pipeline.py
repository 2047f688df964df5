"""Base -> SFT -> DPO, and SFT -> GRPO, on questions with exact answers, over several seeds.

The base model is a small Llama pretrained from scratch here, on plain text in the shape of the
task: a story, then a question and `Answer: ...`, and arithmetic in words, phrased with *every*
template (a pretrained model knows the language; what it lacks is the chat format). The stories
it is pretrained on are not the ones it is fine-tuned or tested on. Then:

1. SFT on the chat-formatted training questions (training templates only; loss on assistant
   tokens);
2. DPO from the SFT model on preference pairs (chosen = right, rejected = a plausible wrong
   answer);
3. GRPO from the SFT model on arithmetic prompts with the exact-match reward.

Measured on questions held out by template (phrasings never seen in the chat format, on fresh
stories): exact-match accuracy of greedy answers at each stage; the base model also in its own
plain format (`Answer:` after the question), which separates what SFT teaches (the chat format,
stopping) from what pretraining knows; the DPO implicit-reward margin and pair accuracy (against
the SFT model as reference); arithmetic accuracy before and after GRPO. Each over `--seeds`
seeds with 95% Student-t intervals (fms_ml.experiment.t_ci).

Arithmetic uses operands below 10 (`max_operand=10`): with two-digit operands the digit-split
BPE numbers make addition a task this 4-layer model does not learn in a CPU budget.

    uv run python packages/fms-llm/experiments/finetune_pipeline.py            # 3 seeds
    uv run python packages/fms-llm/experiments/finetune_pipeline.py --quick    # a smoke run

Writes docs/figures/fms-llm/finetune_pipeline.{json,png}.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from fms_llm.finetune.chat import IM_END, IM_START, ChatTemplate
from fms_llm.finetune.common import TrainArgs, run_trainer
from fms_llm.finetune.data import (
    Example,
    arithmetic,
    exact_match_reward,
    preference_pairs,
    split,
    story_qa,
)
from fms_llm.finetune.dpo import dpo, dpo_batch, encode_pair, preference_metrics
from fms_llm.finetune.grpo import grpo
from fms_llm.finetune.sft import accuracy, pad_batch, sft, sft_loss
from fms_llm.generate import generate
from fms_llm.models import Llama, LlamaConfig
from fms_llm.tokenizer import BPETokenizer
from fms_ml.experiment import t_ci

ROOT = Path(__file__).resolve().parents[3]
FIG = ROOT / "docs" / "figures" / "fms-llm"
MAX_OPERAND = 10


def plain(e: Example) -> str:
    """The pretraining text of an example: no chat markers."""
    return f"{e.messages[1]['content']}\nAnswer: {e.answer}\n"


@torch.no_grad()
def plain_accuracy(model: Llama, tok: BPETokenizer, examples: list[Example]) -> float:
    """Exact match of the base model prompted in its own format (`...question\nAnswer:`)."""
    eos = tok.token_to_id(IM_END)
    ok = []
    model.eval()
    for e in examples:
        ids = tok.encode(f"{e.messages[1]['content']}\nAnswer:")
        new = generate(model, torch.tensor([ids]), 8, temperature=0.0, eos_id=eos)[0, len(ids) :]
        ok.append(exact_match_reward(tok.decode(new.tolist()).split("\n")[0], e.answer))
    model.train()
    return float(np.mean(ok))


def pretrain_base(model: Llama, tok: BPETokenizer, texts: list[str], args: TrainArgs) -> None:
    eos = tok.token_to_id(IM_END)
    docs = [(ids, [1] * len(ids)) for ids in ([*tok.encode(t), eos] for t in texts)]

    def batch_fn(index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([args.seed, 99, index])
        return pad_batch([docs[j] for j in rng.integers(len(docs), size=args.batch_size)], eos)

    run_trainer(model, args, batch_fn=batch_fn, loss_fn=sft_loss)


def run_seed(seed: int, tok: BPETokenizer, sizes: dict[str, int]) -> dict[str, float]:
    torch.manual_seed(seed)
    stories = story_qa(sizes["n_story"], seed=seed)
    sums = arithmetic(sizes["n_math"], seed=seed, ops=("add", "sub"), max_operand=MAX_OPERAND)
    s_train, s_test = split(stories, "template")
    m_train, m_test = split(sums, "template")
    train, test = s_train + m_train, s_test[: sizes["n_eval"]] + m_test[: sizes["n_eval"]]
    # the pretraining text: other stories, every phrasing, no chat markers
    pre = story_qa(sizes["n_pre_story"], seed=seed + 100) + arithmetic(
        sizes["n_math"], seed=seed + 100, ops=("add", "sub"), max_operand=MAX_OPERAND
    )
    model = Llama(
        LlamaConfig(vocab_size=tok.vocab_size, n_layers=4, d_model=128, n_heads=4, max_seq_len=128)
    )
    out: dict[str, float] = {}
    t0, c0 = time.time(), time.process_time()
    pretrain_base(
        model,
        tok,
        [plain(e) for e in pre],
        TrainArgs(steps=sizes["pretrain"], batch_size=32, lr=3e-3, warmup_steps=20, seed=seed),
    )
    out["base_acc"] = accuracy(model, tok, test)
    out["base_plain_acc"] = plain_accuracy(model, tok, test)
    sft(
        model,
        tok,
        [e.messages for e in train],
        TrainArgs(steps=sizes["sft"], batch_size=32, lr=1e-3, warmup_steps=10, seed=seed),
    )
    out["sft_acc"] = accuracy(model, tok, test)
    out["sft_math_acc"] = accuracy(model, tok, m_test[: sizes["n_eval"]])
    sft_model = copy.deepcopy(model).eval()
    for p in sft_model.parameters():
        p.requires_grad_(False)
    held_pairs = preference_pairs(test, seed=seed)
    eos = tok.token_to_id(IM_END)
    batch = dpo_batch([encode_pair(tok, p) for p in held_pairs], eos)
    policy = copy.deepcopy(model)
    dpo(
        policy,
        tok,
        preference_pairs(train, seed=seed),
        TrainArgs(steps=sizes["dpo"], batch_size=16, lr=2e-4, warmup_steps=5, seed=seed),
        beta=0.1,
        reference=sft_model,
    )
    with torch.no_grad():
        m = preference_metrics(policy, sft_model, batch)
    out["dpo_margin"] = float(m["margin"])
    out["dpo_pair_acc"] = float(m["accuracy"])
    out["dpo_acc"] = accuracy(policy, tok, test)
    # the SFT model's own preference: log-prob margin of chosen over rejected (beta-scaled, vs
    # the base it came from is not defined; report the sign rate of log p(chosen) - log p(rejected))
    from fms_llm.finetune.common import completion_logprobs

    with torch.no_grad():
        lp = completion_logprobs(sft_model, *batch)
    half = lp.shape[0] // 2
    out["sft_pair_acc"] = float((lp[:half] > lp[half:]).float().mean())
    out["dpo_logp_pair_acc"] = float(
        (lambda q: (q[:half] > q[half:]).float().mean())(
            completion_logprobs(policy, *batch).detach()
        )
    )
    rl = copy.deepcopy(model)
    r = grpo(
        rl,
        tok,
        m_train,
        TrainArgs(steps=sizes["grpo"], batch_size=4, lr=2e-5, warmup_steps=2, seed=seed),
        group_size=8,
        beta=0.04,
        max_new_tokens=6,
        reference=sft_model,
    )
    out["grpo_math_acc"] = accuracy(rl, tok, m_test[: sizes["n_eval"]])
    out["grpo_last_reward"] = r.metrics["reward"]
    out["seconds"] = time.time() - t0
    out["cpu_seconds"] = time.process_time() - c0
    print(f"seed {seed}: {json.dumps(out)}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run, not a result")
    ap.add_argument("--out", type=Path, default=FIG)
    ap.add_argument(
        "--only-seed",
        type=int,
        help="run this one seed and write its result to --out/finetune_pipeline_seed<N>.json "
        "(seeds can then run as separate processes)",
    )
    ap.add_argument(
        "--combine",
        action="store_true",
        help="no training: summarise the finetune_pipeline_seed<N>.json files of --out",
    )
    a = ap.parse_args()
    torch.set_num_threads(1)
    sizes = {
        "n_story": 6000,
        "n_pre_story": 8000,
        "n_math": 3000,
        "n_eval": 200,
        "pretrain": 800,
        "sft": 300,
        "dpo": 150,
        "grpo": 60,
    }
    if a.quick:
        sizes = {
            "n_story": 300,
            "n_pre_story": 300,
            "n_math": 200,
            "n_eval": 20,
            "pretrain": 20,
            "sft": 20,
            "dpo": 5,
            "grpo": 2,
        }
    if a.combine:
        files = sorted(a.out.glob("finetune_pipeline_seed*.json"))
        runs = [json.loads(f.read_text()) for f in files]
        if not runs:
            raise SystemExit(f"--combine: no finetune_pipeline_seed<N>.json in {a.out}")
        report(runs, sizes, a.out, a.quick)
        return
    t = ChatTemplate()
    corpus = [
        t.render(e.messages)
        for e in story_qa(2000, seed=1000) + arithmetic(1000, seed=1000, max_operand=MAX_OPERAND)
    ]
    corpus += [plain(e) for e in story_qa(1000, seed=1001)]
    tok = BPETokenizer.train(
        corpus, vocab_size=700, special_tokens=[IM_START, IM_END], progress=False
    )
    a.out.mkdir(parents=True, exist_ok=True)
    if a.only_seed is not None:
        one = run_seed(a.only_seed, tok, sizes)
        (a.out / f"finetune_pipeline_seed{a.only_seed}.json").write_text(json.dumps(one) + "\n")
        return
    runs = [run_seed(s, tok, sizes) for s in range(a.seeds)]
    report(runs, sizes, a.out, a.quick)


def report(runs: list[dict[str, float]], sizes: dict[str, int], out: Path, quick: bool) -> None:
    """Means and 95% t intervals over the seeds' runs; the JSON and the figure."""
    keys = list(runs[0])
    summary = {}
    for k in keys:
        vals = np.array([r[k] for r in runs])
        ci = t_ci(vals) if len(vals) > 1 else None
        summary[k] = {
            "mean": float(vals.mean()),
            "lo": ci.low if ci else float("nan"),
            "hi": ci.high if ci else float("nan"),
            "values": vals.tolist(),
        }
    result = {"sizes": sizes, "seeds": len(runs), "summary": summary, "quick": quick}
    (out / "finetune_pipeline.json").write_text(json.dumps(result, indent=1) + "\n")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    stages = [("base", "base_acc"), ("SFT", "sft_acc"), ("DPO", "dpo_acc")]
    for ax, items, title in (
        (axes[0], stages, "held-out questions (template split)"),
        (axes[1], [("SFT", "sft_math_acc"), ("GRPO", "grpo_math_acc")], "held-out arithmetic"),
    ):
        means = [summary[k]["mean"] for _, k in items]
        err = [
            [summary[k]["mean"] - summary[k]["lo"] for _, k in items],
            [summary[k]["hi"] - summary[k]["mean"] for _, k in items],
        ]
        ax.bar([n for n, _ in items], means, yerr=err, capsize=4, color="#4c72b0")
        ax.set_ylim(0, 1)
        ax.set_ylabel("exact-match accuracy")
        ax.set_title(title, fontsize=10)
    fig.suptitle(f"fine-tuning a 4-layer Llama, {len(runs)} seeds, 95% t intervals", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "finetune_pipeline.png", dpi=120)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()

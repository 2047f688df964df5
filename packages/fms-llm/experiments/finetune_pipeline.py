"""Base -> SFT -> DPO, and SFT -> GRPO, on questions with exact answers, over several seeds.

The base model is a small Llama (3 layers, d=64) pretrained from scratch here, on plain text in
the shape of the task: stories each followed by one question of every kind with its answer
(`Answer:` then the answer on its own line, the tokens the chat format's answers use), and
documents of sums in words, phrased with *every* template (a pretrained model knows the
language; what it lacks is the chat format). The stories it is pretrained on are not the ones
it is fine-tuned or tested on. Then:

1. SFT on the chat-formatted training questions (training templates only; loss on assistant
   tokens);
2. DPO from the SFT model on preference pairs (chosen = right, rejected = a plausible wrong
   answer);
3. GRPO from the SFT model on arithmetic prompts with the exact-match reward.

Measured on questions held out by template (phrasings never seen in the chat format, on fresh
stories): exact-match accuracy of greedy answers at each stage, overall and by question kind;
the base model also in its own plain format, which separates what SFT teaches (the chat format,
stopping) from what pretraining knows; the SFT model also on seen phrasings; the DPO
implicit-reward margin and pair accuracy (against the SFT model as reference) and the
log-probability margin of chosen over rejected for both models; arithmetic accuracy before and
after GRPO; CPU seconds of each stage and the machine's load. Each over `--seeds` seeds with 95%
Student-t intervals (fms_ml.experiment.t_ci). `finetune_diagnose.py` looks at one seed closely.

Arithmetic uses operands below 10 (`max_operand=10`): with two-digit operands the digit-split
BPE numbers make addition a task this small model does not learn in a CPU budget.

    uv run python packages/fms-llm/experiments/finetune_pipeline.py            # 3 seeds
    uv run python packages/fms-llm/experiments/finetune_pipeline.py --only-seed 0  # one seed
    uv run python packages/fms-llm/experiments/finetune_pipeline.py --combine  # the seeds' files
    uv run python packages/fms-llm/experiments/finetune_pipeline.py --quick    # a smoke run

Writes docs/figures/fms-llm/finetune_pipeline.{json,png} (or --out).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from fms_llm.finetune.chat import IM_END, IM_START, ChatTemplate
from fms_llm.finetune.common import TrainArgs, completion_logprobs, run_trainer
from fms_llm.finetune.data import (
    Example,
    arithmetic,
    exact_match_reward,
    preference_pairs,
    split,
    story_documents,
    story_qa,
)
from fms_llm.finetune.dpo import dpo, dpo_batch, encode_pair, preference_metrics
from fms_llm.finetune.grpo import grpo
from fms_llm.finetune.sft import answer, pad_batch, sft, sft_loss
from fms_llm.generate import generate
from fms_llm.models import Llama, LlamaConfig
from fms_llm.tokenizer import BPETokenizer
from fms_ml.experiment import t_ci

ROOT = Path(__file__).resolve().parents[3]
FIG = ROOT / "docs" / "figures" / "fms-llm"
MAX_OPERAND = 10
STORY_KINDS = ("where", "found", "met", "next")
MATH_PER_DOC = 8


# the settings of the measured run; --quick shrinks everything to a smoke run
FULL: dict[str, Any] = {
    "n_story": 6000,
    "n_pre_story": 8000,
    "n_pre_math": 12000,
    "n_math": 3000,
    "n_eval": 200,
    "n_tok": 1000,
    "n_layers": 3,
    "d_model": 64,
    "n_heads": 4,
    "pretrain": 1500,
    "pretrain_lr": 5e-3,
    "sft": 200,
    "sft_lr": 1e-3,
    "dpo": 100,
    "dpo_lr": 2e-4,
    "grpo": 40,
    "grpo_lr": 5e-5,
}
QUICK: dict[str, Any] = {
    **FULL,
    "n_story": 300,
    "n_pre_story": 300,
    "n_pre_math": 200,
    "n_math": 200,
    "n_eval": 20,
    "n_tok": 100,
    "pretrain": 20,
    "sft": 20,
    "dpo": 5,
    "grpo": 2,
}


def plain(e: Example, sep: str = "\n") -> str:
    """One question in the base's plain format: `story\nquestion\nAnswer:\n<answer>\n`.

    The answer starts a line, as in the chat format (`<|im_start|>assistant\n<answer>`): BPE
    tokens carry their leading space (` Maya` and `Maya` are different ids), so `Answer: Maya`
    would teach the base answers in tokens the chat model never writes.
    """
    return f"{e.messages[1]['content']}\nAnswer:{sep}{e.answer}\n"


def pretrain_texts(n_stories: int, n_math: int, seed: int, sep: str = "\n") -> list[str]:
    """The base's pretraining documents, plain text in the task's shape, every phrasing.

    A story document is a story followed by one question of every kind, each with its answer
    (four answers a story: [story_documents][fms_llm.finetune.data.story_documents]); an
    arithmetic document is `MATH_PER_DOC` questions with their answers. `sep` follows `Answer:`
    (see `plain`). Seeds `seed + 100` on:
    never the stories that are fine-tuned on or tested.
    """
    docs = []
    for doc in story_documents(n_stories, seed=seed + 100):
        story = doc[0].messages[1]["content"].split("\n")[0]
        qa = "".join(
            f"{e.messages[1]['content'].split(chr(10))[1]}\nAnswer:{sep}{e.answer}\n" for e in doc
        )
        docs.append(f"{story}\n{qa}")
    sums = arithmetic(n_math, seed=seed + 100, ops=("add", "sub"), max_operand=MAX_OPERAND)
    docs += [
        "".join(plain(e, sep) for e in sums[i : i + MATH_PER_DOC])
        for i in range(0, len(sums), MATH_PER_DOC)
    ]
    return docs


@torch.no_grad()
def plain_answers(
    model: Llama, tok: BPETokenizer, examples: list[Example], sep: str = "\n"
) -> list[str]:
    """Greedy answers of the base prompted in its own format (`story\nquestion\nAnswer:`), to
    the end of the line; prompts of equal length decoded together."""
    eos = tok.token_to_id(IM_END)
    enc = [tok.encode(f"{e.messages[1]['content']}\nAnswer:{sep}".rstrip(" ")) for e in examples]
    out = [""] * len(examples)
    groups: dict[int, list[int]] = {}
    for i, ids in enumerate(enc):
        groups.setdefault(len(ids), []).append(i)
    was_training = model.training
    model.eval()
    for length, rows in groups.items():
        idx = torch.tensor([enc[i] for i in rows])
        new = generate(model, idx, 8, temperature=0.0, eos_id=eos)[:, length:]
        for r, i in enumerate(rows):
            out[i] = tok.decode(new[r].tolist()).split("\n")[0]
    model.train(was_training)
    return out


def scores(examples: list[Example], got: list[str], prefix: str) -> dict[str, float]:
    """Exact match over all `examples` (`prefix`) and by question kind (`prefix_<kind>`)."""
    ok = [exact_match_reward(g, e.answer) for g, e in zip(got, examples, strict=True)]
    out = {prefix: float(np.mean(ok))}
    for kind in (*STORY_KINDS, "add", "sub"):
        mine = [o for o, e in zip(ok, examples, strict=True) if e.kind == kind]
        if mine:
            out[f"{prefix}_{kind}"] = float(np.mean(mine))
    return out


def chat_scores(
    model: Llama, tok: BPETokenizer, examples: list[Example], prefix: str
) -> dict[str, float]:
    """[scores][] of the greedy chat-format answers (to `<|im_end|>`)."""
    return scores(examples, answer(model, tok, [e.prompt for e in examples]), prefix)


def pretrain_base(
    model: Llama,
    tok: BPETokenizer,
    texts: list[str],
    args: TrainArgs,
    eval_fn: Callable[[torch.nn.Module], dict[str, float]] | None = None,
    eval_every: int | None = None,
) -> None:
    """Next-token loss on every token of every document (each ends with `<|im_end|>`); batch `i`
    draws `args.batch_size` documents with `np.random.default_rng([args.seed, 99, i])`."""
    eos = tok.token_to_id(IM_END)
    docs = [(ids, [1] * len(ids)) for ids in ([*tok.encode(t), eos] for t in texts)]

    def batch_fn(index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([args.seed, 99, index])
        return pad_batch([docs[j] for j in rng.integers(len(docs), size=args.batch_size)], eos)

    run_trainer(
        model, args, batch_fn=batch_fn, loss_fn=sft_loss, eval_fn=eval_fn, eval_every=eval_every
    )


def pair_logp_margins(model: Llama, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    r"""$\log \pi(y_w \mid x) - \log \pi(y_l \mid x)$ per held-out pair `(pairs,)`."""
    with torch.no_grad():
        lp = completion_logprobs(model, *batch)
    half = lp.shape[0] // 2
    return lp[:half] - lp[half:]


def run_seed(
    seed: int, tok: BPETokenizer, sizes: dict[str, Any], base_cache: Path | None = None
) -> dict[str, float]:
    """Pretrain, SFT, DPO and GRPO for one seed; every measured figure of the run.

    With `base_cache`, the pretrained base is saved there (keyed by its settings and seed) and
    loaded instead of pretrained again by a later run with the same ones.
    """
    torch.manual_seed(seed)
    stories = story_qa(sizes["n_story"], seed=seed)
    sums = arithmetic(sizes["n_math"], seed=seed, ops=("add", "sub"), max_operand=MAX_OPERAND)
    s_train, s_test = split(stories, "template")
    m_train, m_test = split(sums, "template")
    n_eval = sizes["n_eval"]
    train, test = s_train + m_train, s_test[:n_eval] + m_test[:n_eval]
    # seen phrasings on fresh stories: what SFT does where no phrasing is new
    fresh = story_qa(n_eval * 2, seed=seed + 200) + arithmetic(
        n_eval * 2, seed=seed + 200, ops=("add", "sub"), max_operand=MAX_OPERAND
    )
    seen = split(fresh, "template")[0]
    model = Llama(
        LlamaConfig(
            vocab_size=tok.vocab_size,
            n_layers=sizes["n_layers"],
            d_model=sizes["d_model"],
            n_heads=sizes["n_heads"],
            max_seq_len=128,
        )
    )
    out: dict[str, float] = {"load_start": os.getloadavg()[0]}
    t0, c0 = time.time(), time.process_time()
    pre_keys = ("n_pre_story", "n_pre_math", "n_tok", "n_layers", "d_model", "n_heads")
    pre_key = {k: sizes[k] for k in (*pre_keys, "pretrain", "pretrain_lr")} | {"seed": seed}
    cached, reused = None, 0.0
    if base_cache is not None:
        tag = hashlib.sha256(json.dumps(pre_key, sort_keys=True).encode()).hexdigest()[:16]
        cached = base_cache / f"base_seed{seed}_{tag}.pt"
    if cached is not None and cached.exists():
        # the same base as a run with the same pretraining settings and seed; its CPU time is
        # the one measured when it was trained, so per-seed totals stay what they cost
        saved = torch.load(cached)
        if saved["key"] != pre_key:
            raise SystemExit(f"{cached}: made with {saved['key']}, not {pre_key}")
        model.load_state_dict(saved["state"])
        out["cpu_seconds_pretrain"] = saved["cpu_seconds"]
        reused = saved["cpu_seconds"]
    else:
        pretrain_base(
            model,
            tok,
            pretrain_texts(sizes["n_pre_story"], sizes["n_pre_math"], seed),
            TrainArgs(
                steps=sizes["pretrain"],
                batch_size=32,
                lr=sizes["pretrain_lr"],
                warmup_steps=20,
                seed=seed,
            ),
        )
        out["cpu_seconds_pretrain"] = time.process_time() - c0
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            state = {"key": pre_key, "state": model.state_dict()}
            torch.save(state | {"cpu_seconds": out["cpu_seconds_pretrain"]}, cached)
    out.update(chat_scores(model, tok, test, "base_acc"))
    out.update(scores(test, plain_answers(model, tok, test), "base_plain_acc"))
    out.update(scores(seen, plain_answers(model, tok, seen), "base_plain_seen_acc"))
    print(f"seed {seed} base: {json.dumps(out)}", flush=True)
    c1 = time.process_time()
    sft(
        model,
        tok,
        [e.messages for e in train],
        TrainArgs(
            steps=sizes["sft"], batch_size=32, lr=sizes["sft_lr"], warmup_steps=10, seed=seed
        ),
    )
    out["cpu_seconds_sft"] = time.process_time() - c1
    out.update(chat_scores(model, tok, test, "sft_acc"))
    out.update(chat_scores(model, tok, seen, "sft_seen_acc"))
    out["sft_math_acc"] = chat_scores(model, tok, m_test[:n_eval], "m")["m"]
    print(f"seed {seed} sft: {json.dumps(out)}", flush=True)
    sft_model = copy.deepcopy(model).eval()
    for p in sft_model.parameters():
        p.requires_grad_(False)
    eos = tok.token_to_id(IM_END)
    held_batch = dpo_batch([encode_pair(tok, p) for p in preference_pairs(test, seed=seed)], eos)
    c2 = time.process_time()
    policy = copy.deepcopy(model)
    dpo(
        policy,
        tok,
        preference_pairs(train, seed=seed),
        TrainArgs(steps=sizes["dpo"], batch_size=16, lr=sizes["dpo_lr"], warmup_steps=5, seed=seed),
        beta=0.1,
        reference=sft_model,
    )
    out["cpu_seconds_dpo"] = time.process_time() - c2
    with torch.no_grad():
        m = preference_metrics(policy, sft_model, held_batch)
    # the implicit reward beta * log(pi / pi_sft): 0 for the SFT model itself, by definition
    out["dpo_margin"] = float(m["margin"])
    out["dpo_pair_acc"] = float(m["accuracy"])
    # log p(chosen) - log p(rejected): defined for both models, so comparable
    sft_gap, dpo_gap = (
        pair_logp_margins(sft_model, held_batch),
        pair_logp_margins(policy, held_batch),
    )
    out["sft_logp_margin"] = float(sft_gap.mean())
    out["dpo_logp_margin"] = float(dpo_gap.mean())
    out["sft_pair_acc"] = float((sft_gap > 0).float().mean())
    out["dpo_logp_pair_acc"] = float((dpo_gap > 0).float().mean())
    out.update(chat_scores(policy, tok, test, "dpo_acc"))
    del policy
    c3 = time.process_time()
    rl = copy.deepcopy(model)
    r = grpo(
        rl,
        tok,
        m_train,
        TrainArgs(
            steps=sizes["grpo"], batch_size=8, lr=sizes["grpo_lr"], warmup_steps=2, seed=seed
        ),
        group_size=8,
        beta=0.04,
        max_new_tokens=4,
        reference=sft_model,
    )
    out["cpu_seconds_grpo"] = time.process_time() - c3
    out["grpo_math_acc"] = chat_scores(rl, tok, m_test[:n_eval], "m")["m"]
    out["grpo_last_reward"] = r.metrics["reward"]
    out["load_end"] = os.getloadavg()[0]
    out["seconds"] = time.time() - t0
    out["cpu_seconds"] = time.process_time() - c0 + reused
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
        "--base-cache",
        type=Path,
        help="save each seed's pretrained base here and reuse it in runs with the same "
        "pretraining settings (changing only SFT, DPO or GRPO then skips pretraining)",
    )
    ap.add_argument(
        "--combine",
        action="store_true",
        help="no training: summarise the finetune_pipeline_seed<N>.json files of --out",
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one of the sizes/settings (repeatable), e.g. --set pretrain=1500",
    )
    a = ap.parse_args()
    torch.set_num_threads(1)
    sizes: dict[str, Any] = dict(QUICK if a.quick else FULL)
    for item in a.set:
        key, _, value = item.partition("=")
        if key not in sizes or not value:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE with KEY one of {sorted(sizes)}")
        sizes[key] = type(sizes[key])(value)
    if a.combine:
        files = sorted(a.out.glob("finetune_pipeline_seed*.json"))
        if not files:
            raise SystemExit(f"--combine: no finetune_pipeline_seed<N>.json in {a.out}")
        saved = [json.loads(f.read_text()) for f in files]
        if any(s["sizes"] != saved[0]["sizes"] for s in saved):
            raise SystemExit(f"--combine: the seed files of {a.out} were run with different sizes")
        report([s["run"] for s in saved], saved[0]["sizes"], a.out, a.quick)
        return
    tok = train_tokenizer(sizes["n_tok"])
    a.out.mkdir(parents=True, exist_ok=True)
    if a.only_seed is not None:
        one = run_seed(a.only_seed, tok, sizes, a.base_cache)
        (a.out / f"finetune_pipeline_seed{a.only_seed}.json").write_text(
            json.dumps({"sizes": sizes, "run": one}) + "\n"
        )
        return
    runs = [run_seed(s, tok, sizes, a.base_cache) for s in range(a.seeds)]
    report(runs, sizes, a.out, a.quick)


def train_tokenizer(n: int, sep: str = "\n") -> BPETokenizer:
    """A 700-token BPE on chat-rendered questions (`2n` stories, `n` sums) and `n` plain ones."""
    t = ChatTemplate()
    corpus = [
        t.render(e.messages)
        for e in story_qa(2 * n, seed=1000) + arithmetic(n, seed=1000, max_operand=MAX_OPERAND)
    ]
    corpus += [plain(e, sep) for e in story_qa(n, seed=1001)]
    return BPETokenizer.train(
        corpus, vocab_size=700, special_tokens=[IM_START, IM_END], progress=False
    )


def report(runs: list[dict[str, float]], sizes: dict[str, Any], out: Path, quick: bool) -> None:
    """Means and 95% t intervals over the seeds' runs; the JSON and the figure."""
    keys = [k for k in runs[0] if all(k in r for r in runs)]  # a kind can miss in a tiny run
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
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.6), gridspec_kw={"width_ratios": [4, 6, 2, 2]})

    def bars(ax: Any, items: list[tuple[str, str]], title: str, ylabel: str, **kw: Any) -> None:
        items = [(n, k) for n, k in items if k in summary]
        means = [summary[k]["mean"] for _, k in items]
        err = [
            [summary[k]["mean"] - summary[k]["lo"] for _, k in items],
            [summary[k]["hi"] - summary[k]["mean"] for _, k in items],
        ]
        ax.bar([n for n, _ in items], means, yerr=err, capsize=4, color="#4c72b0", **kw)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)

    acc = "exact-match accuracy"
    stages = [
        ("base\n(chat)", "base_acc"),
        ("base\n(plain)", "base_plain_acc"),
        ("SFT", "sft_acc"),
        ("DPO", "dpo_acc"),
    ]
    bars(axes[0], stages, "held-out phrasings (template split)", acc)
    axes[0].axhline(0.8, color="grey", ls="--", lw=1)
    kinds = [k for k in (*STORY_KINDS, "add", "sub") if f"sft_acc_{k}" in summary]
    x = np.arange(len(kinds))
    for dx, prefix, label, color in (
        (-0.2, "sft_acc", "held-out phrasing", "#4c72b0"),
        (0.2, "sft_seen_acc", "seen phrasing", "#dd8452"),
    ):
        keys = [f"{prefix}_{k}" for k in kinds]
        ok = [k in summary for k in keys]
        if not all(ok):
            continue
        means = [summary[k]["mean"] for k in keys]
        err = [
            [summary[k]["mean"] - summary[k]["lo"] for k in keys],
            [summary[k]["hi"] - summary[k]["mean"] for k in keys],
        ]
        axes[1].bar(x + dx, means, 0.4, yerr=err, capsize=3, color=color, label=label)
    axes[1].set_xticks(x, kinds)
    axes[1].set_ylabel(acc)
    axes[1].set_title("after SFT, by question kind", fontsize=10)
    axes[1].legend(fontsize=8, loc="lower left")
    bars(
        axes[2],
        [("SFT", "sft_logp_margin"), ("DPO", "dpo_logp_margin")],
        "held-out pairs",
        "log p(chosen) - log p(rejected)",
    )
    bars(axes[3], [("SFT", "sft_math_acc"), ("GRPO", "grpo_math_acc")], "held-out arithmetic", acc)
    for ax in (axes[0], axes[1], axes[3]):
        ax.set_ylim(0, 1.05)
    fig.suptitle(
        f"fine-tuning a {sizes['n_layers']}-layer Llama (d={sizes['d_model']}), "
        f"{len(runs)} seeds, 95% t intervals",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(out / "finetune_pipeline.png", dpi=120)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()

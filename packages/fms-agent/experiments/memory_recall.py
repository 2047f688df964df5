"""Recall of planted facts in long dialogues: buffer, running summary, BM25 and vector memory.

    uv run python packages/fms-agent/experiments/memory_recall.py [--seeds 3] [--dialogues 30]

Each dialogue has `--turns` turns (user and assistant alternating, about 9 words each, so about
3,600 tokens in all): small talk drawn from templates, distractors shaped like facts ("my
friend's locker number is 17") and 5 planted facts ("the wifi password is tulip-4821") at random
user turns in the first 90%. At the end each planted fact is asked back in other words ("What is
the wifi password?"). A memory *recalls* a fact at $k$ when one of its top $k$ texts contains the
fact's answer (the answers are unique to their fact); *retained* is recall at any depth, whether
the fact is still held anywhere (for the buffer: whether it is still in the context). The four memories, all fed every turn:

- buffer: [BufferMemory][fms_agent.memory.BufferMemory] of `--budget` tokens (600: about the last
  65 turns);
- summary: [SummaryMemory][fms_agent.memory.SummaryMemory] with the same recent budget plus a
  100-word running summary. The summariser is a scripted back end, not a language model: it keeps
  the fact-like sentences (holding a digit or a capitalised word after the first), newest first,
  up to the summary's budget. It stands in for a model's judgement of what matters; what it
  measures is the bound, not a model's skill at summarising;
- BM25: [BM25Memory][fms_agent.memory.BM25Memory] (Lucene idf, $k_1 = 1.5$, $b = 0.75$);
- vector: [VectorMemory][fms_agent.memory.VectorMemory] on hashed character 3- to 5-grams.

Intervals are Student-$t$ 95% intervals over the seeds (`fms_ml.experiment.t_ci`) of each seed's
recall over its dialogues. Writes `docs/figures/fms-agent/memory_recall.png` and `.json`.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from fms_agent.llm import AssistantMessage, Message, ScriptedBackend
from fms_agent.memory import (
    BM25Memory,
    BufferMemory,
    Memory,
    SummaryMemory,
    VectorMemory,
    count_tokens,
)
from fms_ml.experiment import t_ci

ROOT = Path(__file__).resolve().parents[3]
OUT = ROOT / "docs" / "figures" / "fms-agent"

NAMES = ["Bella", "Oskar", "Marisol", "Tobias", "Ingrid", "Rafael", "Yuki", "Henrietta"]
WORDS = ["tulip", "falcon", "cobalt", "maple", "quartz", "nimbus", "saffron", "juniper"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
SPOTS = ["doormat", "flowerpot", "mailbox", "garden gnome", "loose brick"]

# (planted statement, question asked later, answer maker); the answer is in the statement
FACTS: list[tuple[str, str, Callable[[random.Random], str]]] = [
    (
        "By the way, the wifi password is {a}.",
        "What is the wifi password?",
        lambda r: f"{r.choice(WORDS)}-{r.randrange(1000, 10000)}",
    ),
    (
        "Note that my locker number is {a}.",
        "Which locker number is mine?",
        lambda r: str(r.randrange(1000, 10000)),
    ),
    (
        "I parked the car on level {a} of the big garage.",
        "On which level did I leave the car?",
        lambda r: f"P{r.randrange(100, 1000)}",
    ),
    (
        "My sister is called {a}, she visits soon.",
        "What is my sister's name?",
        lambda r: r.choice(NAMES),
    ),
    (
        "The landlord meeting moved to {a} morning.",
        "When is the meeting with the landlord?",
        lambda r: r.choice(DAYS),
    ),
    (
        "Our flight number is {a}, remember it please.",
        "What's the flight number?",
        lambda r: f"QX{r.randrange(1000, 10000)}",
    ),
    (
        "The office door code is {a}.",
        "Tell me the code for the office door.",
        lambda r: f"{r.randrange(1000, 10000)}#",
    ),
    (
        "I hid the spare key under the {a}.",
        "Where is the spare key hidden?",
        lambda r: r.choice(SPOTS),
    ),
]

TOPICS = [
    "cooking",
    "jazz",
    "hiking",
    "chess",
    "gardening",
    "astronomy",
    "football",
    "poetry",
    "trains",
    "painting",
    "coffee",
    "history",
    "robots",
    "birds",
    "cycling",
    "baking",
]
ADJS = ["fun", "odd", "boring", "lovely", "strange", "relaxing", "long", "great"]
USER = [
    "Yesterday I read something about {t} and it was {j}.",
    "Do you know much about {t}? I find it {j}.",
    "I might spend the weekend on {t}, it sounds {j}.",
    "My friend's locker number is {n}, funny coincidence.",  # fact-shaped distractors
    "A colleague said her door code was {n} at the old place.",
    "The bus number {n} was late again today.",
    "Someone at work is called {p}, we talked about {t}.",
]
ASSISTANT = [
    "That sounds {j}, tell me more about {t}.",
    "I see, {t} can be {j} at times.",
    "Interesting, what do you like about {t}?",
    "Sure, I am happy to talk about {t}.",
]
PEOPLE = ["Sam", "Alex", "Jordan", "Casey", "Morgan", "Riley"]


def _fill(template: str, rng: random.Random) -> str:
    return template.format(
        t=rng.choice(TOPICS), j=rng.choice(ADJS), n=rng.randrange(10, 100), p=rng.choice(PEOPLE)
    )


def dialogue(
    rng: random.Random, turns: int, n_facts: int = 5
) -> tuple[list[str], list[tuple[str, str]]]:
    """`turns` texts and the `(question, answer)` of each planted fact."""
    texts = [_fill(rng.choice(USER if i % 2 == 0 else ASSISTANT), rng) for i in range(turns)]
    user_turns = list(range(0, int(0.9 * turns), 2))
    qa = []
    for (statement, question, answer), at in zip(
        rng.sample(FACTS, n_facts), rng.sample(user_turns, n_facts), strict=True
    ):
        a = answer(rng)
        texts[at] = statement.format(a=a)
        qa.append((question, a))
    return texts, qa


_SENTENCE = re.compile(r"[^.!?\n|]+[.!?]?")


def _fact_like(sentence: str) -> bool:
    words = sentence.split()
    return any(ch.isdigit() for ch in sentence) or any(w[:1].isupper() for w in words[1:])


def extractive_summariser(budget: int) -> Callable[[Sequence[Message]], AssistantMessage]:
    """The scripted summariser: fact-like sentences of the old summary and the new lines, the
    newest kept first, up to `budget` words, written back in their original order."""

    def reply(messages: Sequence[Message]) -> AssistantMessage:
        text = str(messages[-1]["content"]).replace("Summary so far:", "").replace("New lines:", "")
        sentences = [s.strip() for s in _SENTENCE.findall(text) if s.strip()]
        kept: list[str] = []
        used = 0
        for s in reversed([s for s in sentences if _fact_like(s) and s != "(empty)"]):
            if used + count_tokens(s) > budget:
                break
            kept.append(s)
            used += count_tokens(s)
        return AssistantMessage(" | ".join(reversed(kept)))

    return reply


def memories(budget: int, summary_budget: int) -> dict[str, Memory]:
    summariser = ScriptedBackend([extractive_summariser(summary_budget)] * 10_000)
    return {
        "buffer": BufferMemory(budget),
        "summary": SummaryMemory(summariser, budget, summary_tokens=summary_budget),
        "BM25": BM25Memory(),
        "vector": VectorMemory(),
    }


KS = (1, 5, 0)  # 0: recall at any depth, i.e. the fact is still held somewhere


def _label(k: int) -> str:
    return f"recall@{k}" if k else "retained"


def run_seed(seed: int, n_dialogues: int, turns: int, budget: int) -> dict[str, dict[int, float]]:
    rng = random.Random(seed)
    hits: dict[str, dict[int, int]] = {}
    total = 0
    for _ in range(n_dialogues):
        texts, qa = dialogue(rng, turns)
        mems = memories(budget, 100)
        for text in texts:
            for m in mems.values():
                m.remember(text)
        for question, answer in qa:
            total += 1
            for name, m in mems.items():
                recalled = m.recall(question, k=len(texts) + 1)  # everything, best first
                for k in KS:
                    got = any(answer in t for t in recalled[: k or None])
                    hits.setdefault(name, dict.fromkeys(KS, 0))[k] += got
    return {name: {k: v / total for k, v in by_k.items()} for name, by_k in hits.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--dialogues", type=int, default=30, help="dialogues per seed (5 facts each)")
    p.add_argument("--turns", type=int, default=400)
    p.add_argument("--budget", type=int, default=600, help="token budget of buffer and summary")
    args = p.parse_args()
    per_seed = [run_seed(s, args.dialogues, args.turns, args.budget) for s in range(args.seeds)]
    names = list(per_seed[0])
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for name in names:
        summary[name] = {}
        for k in KS:
            ci = t_ci([r[name][k] for r in per_seed])
            summary[name][_label(k)] = {"mean": ci.estimate, "low": ci.low, "high": ci.high}
            print(f"{name:8s} {_label(k):9s}: {ci.estimate:.3f} [{ci.low:.3f}, {ci.high:.3f}]")
    OUT.mkdir(parents=True, exist_ok=True)
    record = {"config": vars(args), "per_seed": per_seed, "summary": summary}
    (OUT / "memory_recall.json").write_text(json.dumps(record, indent=1) + "\n")

    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.27
    for j, k in enumerate(KS):
        key = _label(k)
        xs = [i + (j - 1) * width for i in range(len(names))]
        means = [summary[n][key]["mean"] for n in names]
        errs = [
            [max(0.0, m - summary[n][key]["low"]) for n, m in zip(names, means, strict=True)],
            [max(0.0, summary[n][key]["high"] - m) for n, m in zip(names, means, strict=True)],
        ]
        ax.bar(xs, means, width, yerr=errs, capsize=3, label=key)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("facts recalled")
    ax.set_title(
        f"Planted facts in {args.turns}-turn dialogues ({args.seeds} seeds x {args.dialogues}"
        f" dialogues, 95% t intervals)",
        fontsize=9,
    )
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "memory_recall.png", dpi=130)
    print(f"wrote {OUT / 'memory_recall.png'}")


if __name__ == "__main__":
    main()

r"""Fine-tuning data with known answers: story questions, arithmetic, preference pairs, a reward.

Nothing is downloaded. Every example is a conversation (OpenAI messages) whose correct answer is
known exactly, so accuracy is exact-match and a reward can be checked, not judged:

- **story questions** ([story_qa][fms_llm.finetune.data.story_qa]): a short story in the
  vocabulary of [fms_llm.data.synthetic][] (names, places, objects), told as a sequence of events,
  then a question about it: where someone went, what they found, whom they met, where they went
  *after* a place (what happened next). The answer is a phrase of the story.
- **arithmetic** ([arithmetic][fms_llm.finetune.data.arithmetic]): `What is 37 + 48?` with the
  exact integer answer (addition, subtraction, small multiplication).

Held-out splits: by *template* (the question is phrased in a way training never saw) and by
*entity* (the story's hero has a name training never saw); [split][fms_llm.finetune.data.split]
cuts either. [preference_pairs][fms_llm.finetune.data.preference_pairs] turns examples into DPO
data (chosen = the correct answer, rejected = a plausible wrong one: another place of the same
story, a sum off by a little), and [exact_match_reward][fms_llm.finetune.data.exact_match_reward]
is GRPO's verifiable reward. [chatterbot_dialogues][fms_llm.finetune.data.chatterbot_dialogues]
reads the multi-turn dialogues shipped inside the `chatterbot-corpus` wheel (extra
`fms-llm[dialogues]`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fms_llm.data.synthetic import _NAMES_HE, _NAMES_SHE, _OBJECTS, _PLACES

__all__ = [
    "QUESTION_TEMPLATES",
    "DataError",
    "Example",
    "PreferencePair",
    "arithmetic",
    "chatterbot_dialogues",
    "exact_match_reward",
    "normalize_answer",
    "preference_pairs",
    "split",
    "story_documents",
    "story_qa",
]

SYSTEM = "Answer with the exact answer only."

# Each kind of question has several phrasings; the last of each is held out by `split("template")`.
QUESTION_TEMPLATES: dict[str, tuple[str, ...]] = {
    "where": (
        "Where did {name} go first?",
        "What was the first place {name} went to?",
        "First, where did {name} go?",
    ),
    "found": (
        "What did {name} find?",
        "What thing did {name} find?",
        "Name the thing that {name} found.",
    ),
    "met": (
        "Who did {name} meet?",
        "Whom did {name} meet?",
        "Which friend did {name} meet?",
    ),
    "next": (
        "Where did {name} go after {place}?",
        "After {place}, where did {name} go?",
        "Which place did {name} visit after {place}?",
    ),
    "add": ("What is {a} + {b}?", "Compute {a} + {b}.", "{a} plus {b} equals?"),
    "sub": ("What is {a} - {b}?", "Compute {a} - {b}.", "{a} minus {b} equals?"),
    "mul": ("What is {a} * {b}?", "Compute {a} * {b}.", "{a} times {b} equals?"),
}

# Names held out by `split("entity")`: the last two of each list never lead a training story.
_HELD_OUT_NAMES = (*_NAMES_HE[-2:], *_NAMES_SHE[-2:])


class DataError(ValueError):
    """Fine-tuning data that cannot be built or used as asked."""


@dataclass(frozen=True)
class Example:
    """One conversation with its exact answer.

    Attributes:
        messages: system and user turns, then the assistant's answer.
        answer: the exact correct answer (the assistant's content).
        kind: the question kind (`"where"`, `"found"`, `"met"`, `"next"`, `"add"`, `"sub"`, `"mul"`).
        template: the index of the phrasing in `QUESTION_TEMPLATES[kind]`.
        entity: the story's hero (empty for arithmetic).
        wrong: plausible wrong answers (for preference pairs), never equal to `answer`.
    """

    messages: tuple[dict[str, str], ...]
    answer: str
    kind: str
    template: int
    entity: str = ""
    wrong: tuple[str, ...] = field(default=())

    @property
    def prompt(self) -> list[dict[str, str]]:
        """The messages before the answer."""
        return [dict(m) for m in self.messages[:-1]]


@dataclass(frozen=True)
class PreferencePair:
    """A prompt, a preferred (correct) answer and a dispreferred (wrong) one."""

    prompt: list[dict[str, str]]
    chosen: str
    rejected: str

    def __post_init__(self) -> None:
        if normalize_answer(self.chosen) == normalize_answer(self.rejected):
            raise DataError(
                f"preference pair has identical answers (chosen={self.chosen!r}, "
                f"rejected={self.rejected!r}); there is nothing to prefer"
            )


def _chat(question: str, answer: str, context: str = "") -> tuple[dict[str, str], ...]:
    user = f"{context}\n{question}" if context else question
    return (
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": user},
        {"role": "assistant", "content": answer},
    )


def _story(rng: np.random.Generator, names: Sequence[str]) -> tuple[str, str, list[str], str, str]:
    """A story of 2-3 trips, a find and a meeting: `(text, hero, places, object, friend)`."""
    hero = str(names[int(rng.integers(len(names)))])
    others = [n for n in (*_NAMES_HE, *_NAMES_SHE) if n != hero]
    friend = str(others[rng.integers(len(others))])
    n_trips = int(rng.integers(2, 4))
    places = [_PLACES[int(i)] for i in rng.choice(len(_PLACES), size=n_trips, replace=False)]
    obj = str(_OBJECTS[rng.integers(len(_OBJECTS))])
    events = [f"{hero} went to {p}." for p in places]
    events.insert(int(rng.integers(1, len(events) + 1)), f"There, {hero} found {obj}.")
    events.insert(int(rng.integers(0, len(events) + 1)), f"{hero} met {friend}.")
    return " ".join(events), hero, places, obj, friend


def _question(
    rng: np.random.Generator,
    kind: str,
    text: str,
    hero: str,
    places: list[str],
    obj: str,
    friend: str,
) -> Example:
    """A question of `kind` about a story (its phrasing drawn from `rng`), with its answers."""
    t = int(rng.integers(len(QUESTION_TEMPLATES[kind])))
    fill: dict[str, str] = {"name": hero}
    wrong: list[str]
    if kind == "where":
        answer, wrong = places[0], places[1:]
    elif kind == "found":
        answer, wrong = obj, [o for o in _OBJECTS if o != obj][:2]
    elif kind == "met":
        answer, wrong = friend, [hero]
    else:
        i = int(rng.integers(len(places) - 1))
        fill["place"] = places[i]
        answer, wrong = places[i + 1], [p for p in places if p != places[i + 1]]
    question = QUESTION_TEMPLATES[kind][t].format(**fill)
    return Example(_chat(question, answer, text), answer, kind, t, hero, tuple(wrong))


def story_qa(n: int, *, seed: int = 0, names: Sequence[str] | None = None) -> list[Example]:
    """`n` story questions (kinds and phrasings uniformly mixed), reproducible from `seed`.

    Args:
        n: how many examples.
        seed: the random seed (the same seed gives the same list).
        names: the heroes to draw from (default: every name of the synthetic stories).
    """
    if n < 0:
        raise DataError(f"n must be >= 0, got {n}")
    rng = np.random.default_rng([seed, 16])
    pool = list(names) if names is not None else [*_NAMES_HE, *_NAMES_SHE]
    out: list[Example] = []
    kinds = ("where", "found", "met", "next")
    for _ in range(n):
        text, hero, places, obj, friend = _story(rng, pool)
        kind = kinds[rng.integers(len(kinds))]
        out.append(_question(rng, kind, text, hero, places, obj, friend))
    return out


def story_documents(
    n: int, *, seed: int = 0, names: Sequence[str] | None = None
) -> list[list[Example]]:
    """`n` stories, each with one question of every kind (`where`, `found`, `met`, `next`, in a
    random order, each in a random phrasing): the material of pretraining text in the task's
    shape, several answers per story instead of one.

    Each inner list shares one story (the user turn's first line); reproducible from `seed`, and
    independent of [story_qa][fms_llm.finetune.data.story_qa]'s stream for the same seed.
    """
    if n < 0:
        raise DataError(f"n must be >= 0, got {n}")
    rng = np.random.default_rng([seed, 19])
    pool = list(names) if names is not None else [*_NAMES_HE, *_NAMES_SHE]
    out: list[list[Example]] = []
    for _ in range(n):
        text, hero, places, obj, friend = _story(rng, pool)
        kinds = rng.permutation(["where", "found", "met", "next"]).tolist()
        out.append([_question(rng, k, text, hero, places, obj, friend) for k in kinds])
    return out


def arithmetic(
    n: int,
    *,
    seed: int = 0,
    ops: Sequence[Literal["add", "sub", "mul"]] = ("add", "sub", "mul"),
    max_operand: int = 100,
) -> list[Example]:
    """`n` arithmetic questions with exact integer answers: sums and differences of numbers below
    `max_operand` (default 100), products of numbers below `min(13, max_operand)`.

    A small `max_operand` (10: a hundred facts per operation) gives a task a small model can
    learn in minutes; the default gives one it cannot without far more training.
    """
    if n < 0:
        raise DataError(f"n must be >= 0, got {n}")
    if isinstance(max_operand, bool) or not isinstance(max_operand, int) or max_operand < 2:
        raise DataError(f"max_operand must be an int >= 2, got {max_operand!r}")
    bad = [o for o in ops if o not in ("add", "sub", "mul")]
    if not ops or bad:
        raise DataError(f"ops must be a non-empty subset of ('add', 'sub', 'mul'), got {ops!r}")
    rng = np.random.default_rng([seed, 17])
    out: list[Example] = []
    for _ in range(n):
        op = ops[int(rng.integers(len(ops)))]
        hi = min(13, max_operand) if op == "mul" else max_operand
        a, b = int(rng.integers(hi)), int(rng.integers(hi))
        if op == "sub" and b > a:
            a, b = b, a
        value = a + b if op == "add" else a - b if op == "sub" else a * b
        t = int(rng.integers(len(QUESTION_TEMPLATES[op])))
        q = QUESTION_TEMPLATES[op][t].format(a=a, b=b)
        # plausible mistakes: off by one or ten, a digit slip
        wrong = tuple(str(value + d) for d in (1, -1, 10) if value + d >= 0)
        out.append(Example(_chat(q, str(value)), str(value), op, t, "", wrong))
    return out


def split(
    examples: Sequence[Example], by: Literal["template", "entity"]
) -> tuple[list[Example], list[Example]]:
    """`(train, held_out)`: held out are the examples phrased with each kind's last template
    (`by="template"`), or whose hero is one of the held-out names (`by="entity"`; arithmetic,
    having no hero, stays in train)."""
    if by == "template":
        held = [len(QUESTION_TEMPLATES[e.kind]) - 1 == e.template for e in examples]
    elif by == "entity":
        held = [e.entity in _HELD_OUT_NAMES for e in examples]
    else:
        raise DataError(f"by must be 'template' or 'entity', got {by!r}")
    train = [e for e, h in zip(examples, held, strict=True) if not h]
    test = [e for e, h in zip(examples, held, strict=True) if h]
    return train, test


def preference_pairs(examples: Sequence[Example], *, seed: int = 0) -> list[PreferencePair]:
    """One pair per example: chosen = the answer, rejected = one of its plausible wrong answers."""
    rng = np.random.default_rng([seed, 18])
    pairs = []
    for i, e in enumerate(examples):
        if not e.wrong:
            raise DataError(f"examples[{i}] has no wrong answers to reject ({e.answer!r})")
        pairs.append(PreferencePair(e.prompt, e.answer, e.wrong[rng.integers(len(e.wrong))]))
    return pairs


def normalize_answer(text: str) -> str:
    """Lower case, surrounding space and a final full stop removed, inner space collapsed."""
    return re.sub(r"\s+", " ", text.strip().lower()).removesuffix(".").strip()


def exact_match_reward(completion: str, answer: str) -> float:
    """GRPO's verifiable reward: 1.0 if the completion, normalised, equals the answer, else 0.0.

    The completion is cut at the end-of-turn marker `<|im_end|>` if it has one.
    """
    text = completion.split("<|im_end|>", 1)[0]
    return 1.0 if normalize_answer(text) == normalize_answer(answer) else 0.0


def chatterbot_dialogues(language: str = "english") -> list[list[dict[str, str]]]:
    """Multi-turn dialogues from the `chatterbot-corpus` wheel (extra `fms-llm[dialogues]`).

    Each conversation of the corpus's YAML files alternates user and assistant turns. No network:
    the data ships inside the package.

    Raises:
        DataError: when the package is not installed (with the extra to install) or the language
            has no data.
    """
    try:
        import chatterbot_corpus  # type: ignore[import-untyped]
        import yaml  # type: ignore[import-untyped]
    except ImportError as err:
        raise DataError(
            f"chatterbot_dialogues needs the extra: pip install 'fms-llm[dialogues]' ({err})"
        ) from None
    root = Path(chatterbot_corpus.__file__).parent / "data" / language
    files = sorted(root.glob("*.yml"))
    if not files:
        raise DataError(f"chatterbot-corpus has no data for language={language!r} in {root}")
    out: list[list[dict[str, str]]] = []
    for f in files:
        doc: Any = yaml.safe_load(f.read_text(encoding="utf-8"))
        for conv in doc.get("conversations", []) if isinstance(doc, dict) else []:
            turns = [str(t) for t in conv if isinstance(t, str | int | float)]
            if len(turns) < 2:
                continue
            msgs = [
                {"role": "user" if i % 2 == 0 else "assistant", "content": t}
                for i, t in enumerate(turns)
            ]
            out.append(msgs)
    return out

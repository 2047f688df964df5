r"""A synthetic corpus of simple English stories whose exact probability is known.

Why: a language model's loss has a floor, the entropy of the text it is fed, and on real text that
floor is unknown, so "is 1.9 nats per token good?" has no answer. Here the text comes from a
probabilistic program whose every random choice is visible in the text it writes, so the exact
log-probability of each document, and hence the Bayes-optimal loss, is computable:

$$\log p(\text{doc}) = \sum_{c \in \text{choices}(\text{doc})} \log p(c \mid \text{earlier choices}).$$

The story program (characters with a gender and a kind, places, objects, actions and their
consequences, a variable number of events, an ending) is written once, against a small interface
with two methods: `say(text)` writes fixed text and `pick(options, weights)` makes a random choice
and writes the chosen option. Running it with a *sampler* draws a story; running it with a
*scorer* that reads the choices back from a given text computes $\log p(\text{doc})$.

**Each text determines its choices.** At every choice point the options are *prefix-free* (no
option is a prefix of another; checked when the program runs), so at most one option can start the
rest of the text: the scorer's reading is forced, and two different choice sequences cannot write
the same text (the first choice where they differ writes different, non-prefix strings). So
$p(\text{doc})$ is the probability of its one choice sequence, and the tests check that the scorer
recovers the sampler's log-probability exactly for thousands of stories.

**Floors.** Over a set of documents $D$, the Bayes-optimal loss is
$\sum_{d\in D} -\log p(d) / \sum_{d} \text{bytes}(d)$ nats per byte, and for a tokenizer
$\sum_d -\log p(d) / \sum_d (\text{tokens}(d) + 1)$ nats per token (the $+1$ is the end-of-text
token that follows each document in the token stream; it costs an optimal model nothing, because
every story ends with its ending sentence). A model that scores documents with full context can
approach the floor but not beat it on held-out data, whatever its size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

__all__ = [
    "Story",
    "StoryError",
    "StoryGenerator",
    "entropy_floor",
    "story_log_prob",
]


class StoryError(ValueError):
    """A text is not a story the synthetic program can write (the message says where it fails)."""


@dataclass(frozen=True)
class Story:
    """One synthetic document and the natural log of its exact probability."""

    text: str
    log_prob: float


# --- the vocabulary of the stories (weights are Zipf-like: 1 / rank) -------------------------------

_NAMES_HE = (
    "Tom",
    "Sam",
    "Ben",
    "Max",
    "Leo",
    "Jack",
    "Finn",
    "Oscar",
    "Hugo",
    "Noah",
    "Eli",
    "Ravi",
)
_NAMES_SHE = (
    "Lily",
    "Mia",
    "Anna",
    "Zoe",
    "Ella",
    "Ruby",
    "Nora",
    "Ivy",
    "Grace",
    "Maya",
    "Luna",
    "Kate",
)
_KINDS = (
    "girl",
    "boy",
    "cat",
    "dog",
    "rabbit",
    "fox",
    "bird",
    "bear",
    "mouse",
    "duck",
    "frog",
    "owl",
)
_ADJS = (
    "a little",
    "a kind",
    "a brave",
    "a happy",
    "a curious",
    "a shy",
    "an old",
    "a clever",
    "a tiny",
    "a sleepy",
    "a funny",
    "an honest",
)
_OPENINGS = ("Once upon a time, there was", "Long ago, there lived", "There once was")
_HOMES = (
    "in a small house",
    "near a big forest",
    "by the sea",
    "on a quiet farm",
    "in a busy town",
    "under an old bridge",
    "next to a river",
    "at the top of a hill",
)
_PLACES = (
    "the park",
    "the market",
    "the river",
    "the forest",
    "the beach",
    "the garden",
    "the school",
    "the old mill",
    "the library",
    "the bakery",
)
_OBJECTS = (
    "a red ball",
    "a shiny key",
    "a small box",
    "a blue kite",
    "an old map",
    "a lost hat",
    "a golden coin",
    "a big apple",
    "a wooden boat",
    "a tiny bell",
)
_SPOTS = ("under a tree", "behind a rock", "in the grass", "near the water", "on the path")
_FEELINGS = ("happy", "sad", "scared", "proud", "surprised", "tired", "excited", "calm")
_SIGHTS = (
    "a big ship",
    "many flowers",
    "a funny clown",
    "a rainbow",
    "some ducks",
    "a tall tower",
    "a sleeping cat",
)
_WEATHER = ("The sun was shining.", "It started to rain.", "A cold wind blew.", "The sky was grey.")
_CONNECT = (" Then,", " After that,", " Later,", " The next day,")
_ENDINGS = (
    "was very happy",
    "went home to sleep",
    "told everyone about the day",
    "smiled and ate a warm dinner",
)


def _zipf(n: int) -> list[float]:
    return [1.0 / (r + 1) for r in range(n)]


class _Chooser(Protocol):
    def say(self, text: str) -> None: ...

    def pick(self, options: Sequence[str], weights: Sequence[float]) -> int: ...


def _check_prefix_free(options: Sequence[str]) -> None:
    for i, a in enumerate(options):
        if not a:
            raise AssertionError("story options must be non-empty")
        for j, b in enumerate(options):
            if i != j and b.startswith(a):
                raise AssertionError(f"story options {a!r} and {b!r} are not prefix-free")


class _Sampler:
    """Draws each choice with a seeded generator and writes it; accumulates the log-probability."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.parts: list[str] = []
        self.log_prob = 0.0

    def say(self, text: str) -> None:
        self.parts.append(text)

    def pick(self, options: Sequence[str], weights: Sequence[float]) -> int:
        _check_prefix_free(options)
        total = math.fsum(weights)
        u = self.rng.random() * total
        acc = 0.0
        i = len(weights) - 1
        for k, w in enumerate(weights):
            acc += w
            if u < acc:
                i = k
                break
        self.parts.append(options[i])
        self.log_prob += math.log(weights[i] / total)
        return i


class _Scorer:
    """Reads the choices back from a text; raises `StoryError` where the text leaves the grammar."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.log_prob = 0.0

    def say(self, text: str) -> None:
        if not self.text.startswith(text, self.pos):
            raise StoryError(
                f"text is not a synthetic story: expected {text!r} at character {self.pos}, "
                f"found {self.text[self.pos : self.pos + len(text)]!r}"
            )
        self.pos += len(text)

    def pick(self, options: Sequence[str], weights: Sequence[float]) -> int:
        _check_prefix_free(options)
        for i, option in enumerate(options):
            if self.text.startswith(option, self.pos):
                self.pos += len(option)
                self.log_prob += math.log(weights[i] / math.fsum(weights))
                return i
        raise StoryError(
            f"text is not a synthetic story: none of {list(options)[:4]}... at character "
            f"{self.pos}, found {self.text[self.pos : self.pos + 20]!r}"
        )


def _story(ch: _Chooser) -> None:
    """The story program: every random choice goes through `ch.pick`, every fixed word `ch.say`."""
    names = _NAMES_HE + _NAMES_SHE
    ch.pick(_OPENINGS, [3.0, 1.0, 1.0])
    ch.say(" ")
    ch.pick(_ADJS, _zipf(len(_ADJS)))
    ch.say(" ")
    kind = _KINDS[ch.pick(_KINDS, _zipf(len(_KINDS)))]
    ch.say(" named ")
    # a girl has a girl's name, a boy a boy's; an animal any name
    allowed = {"girl": _NAMES_SHE, "boy": _NAMES_HE}.get(kind, names)
    name = allowed[ch.pick(allowed, _zipf(len(_NAMES_HE)) * (len(allowed) // len(_NAMES_HE)))]
    he = name in _NAMES_HE
    pron, Pron, pos = ("he", "He", "his") if he else ("she", "She", "her")
    ch.say(f". {Pron} lived ")
    ch.pick(_HOMES, _zipf(len(_HOMES)))
    ch.say(".")
    friend: str | None = None
    ch.say(" One day,")
    n_events = 0
    while True:
        n_events += 1
        # the subject: the name or the pronoun
        subj = (name, pron)[ch.pick((f" {name}", f" {pron}"), [1.0, 1.0])]
        event = ch.pick((" went to ", " found ", " met ", " looked at the sky."), [4, 3, 2, 1])
        if event == 0:  # go somewhere; something is seen there
            ch.pick(_PLACES, _zipf(len(_PLACES)))
            ch.say(". There, ")
            ch.pick((f"{pron} saw ", f"{name} saw "), [3.0, 1.0])
            ch.pick(_SIGHTS, _zipf(len(_SIGHTS)))
            ch.say(".")
        elif event == 1:  # find something; a consequence follows
            obj = _OBJECTS[ch.pick(_OBJECTS, _zipf(len(_OBJECTS)))]
            ch.say(" ")
            ch.pick(_SPOTS, _zipf(len(_SPOTS)))
            ch.say(". ")
            keeps = (f"{Pron} kept it in {pos} bag.", f"{Pron} was so ")
            gives = (f"{Pron} gave it to {friend}.",) if friend is not None else ()
            outcome = ch.pick(keeps + gives, [2.0, 2.0] + [3.0] * len(gives))
            if outcome == 1:
                ch.pick(_FEELINGS, _zipf(len(_FEELINGS)))
                ch.say(f" to find the {obj[obj.index(' ') + 1 :]}!")
        elif event == 2:  # meet a friend (someone else), who stays in the story
            others = [n for n in names if n != name]
            j = ch.pick(others, [1.0] * len(others))
            friend = others[j]
            ch.say(", ")
            ch.pick(_ADJS, _zipf(len(_ADJS)))
            ch.say(" ")
            ch.pick(_KINDS, _zipf(len(_KINDS)))
            ch.say(f". {subj[0].upper() + subj[1:]} and {friend} played all day.")
        else:  # the weather
            ch.say(" ")
            ch.pick(_WEATHER, _zipf(len(_WEATHER)))
            ch.say(f" {Pron} felt ")
            ch.pick(_FEELINGS, _zipf(len(_FEELINGS)))
            ch.say(".")
        # another event, or the ending: stopping becomes likelier with every event
        p_stop = min(0.9, 0.2 * n_events)
        k = ch.pick((*_CONNECT, " In the end,"), [(1 - p_stop) / 4] * 4 + [p_stop])
        if k == len(_CONNECT):
            break
    ch.say(f" {name} ")
    ch.pick(_ENDINGS, _zipf(len(_ENDINGS)))
    ch.say(".")


def story_log_prob(text: str) -> float:
    """The exact natural log-probability of `text` under the story program.

    Raises:
        StoryError: `text` is not a story the program can write (so its probability is 0).
    """
    scorer = _Scorer(text)
    _story(scorer)
    if scorer.pos != len(text):
        raise StoryError(
            f"text is not a synthetic story: it goes on after the ending at character "
            f"{scorer.pos}: {text[scorer.pos : scorer.pos + 20]!r}"
        )
    return scorer.log_prob


class StoryGenerator:
    """Draws synthetic stories; document `i` is a pure function of `(seed, i)`.

    Args:
        seed: the corpus seed.

    Example:
        >>> gen = StoryGenerator(seed=0)
        >>> story = gen.story(0)
        >>> abs(story.log_prob - story_log_prob(story.text)) < 1e-9
        True
    """

    def __init__(self, seed: int = 0) -> None:
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.seed = seed

    def story(self, index: int) -> Story:
        """The story at `index` (drawn with `numpy.random.default_rng([seed, index])`)."""
        sampler = _Sampler(np.random.default_rng([self.seed, index]))
        _story(sampler)
        return Story("".join(sampler.parts), sampler.log_prob)

    def stories(self, n: int, start: int = 0) -> list[Story]:
        """Stories `start, ..., start + n - 1`."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        return [self.story(i) for i in range(start, start + n)]


def entropy_floor(
    stories: Sequence[Story], encode: Callable[[str], Sequence[int]] | None = None
) -> dict[str, float]:
    """The Bayes-optimal loss on `stories`: nats per byte, and per token when `encode` is given.

    Args:
        stories: the documents (their exact log-probabilities are used).
        encode: a tokenizer's `encode`; each document counts one extra end-of-text token.

    Returns:
        `{"nats_per_byte", "bits_per_byte", "nats_per_doc"}` and, with `encode`, `"nats_per_token"`.
    """
    if not stories:
        raise ValueError("stories must not be empty")
    nats = -math.fsum(s.log_prob for s in stories)
    n_bytes = sum(len(s.text.encode("utf-8")) for s in stories)
    out = {
        "nats_per_byte": nats / n_bytes,
        "bits_per_byte": nats / n_bytes / math.log(2),
        "nats_per_doc": nats / len(stories),
    }
    if encode is not None:
        n_tokens = sum(len(encode(s.text)) + 1 for s in stories)
        out["nats_per_token"] = nats / n_tokens
    return out

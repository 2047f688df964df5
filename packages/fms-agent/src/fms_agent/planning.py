r"""Planning: plan-and-execute with re-planning, and a search over candidate plans.

A ReAct loop decides one action at a time; on a long task it can wander. Plan-and-execute
(Wang et al., 2023; LangChain's "plan-and-execute" agents) splits the work:

1. a **planner** (a model call) writes the task as a short list of steps;
2. an **executor** (an [Agent][fms_agent.agent.Agent] with tools) carries out each step in turn,
   seeing the task and the results of the steps before it;
3. when a step **fails** (the executor ran out of steps, or answered with the failure marker
   `FAILED:`), the planner is asked again, shown what was done and what failed, for a new plan of
   the remaining work: **re-planning**, at most `max_replans` times.

**Planning as search.** A planner's first plan is one sample from many it could write. Asking
for $n$ candidates and keeping the one a **verifier** scores highest turns planning into a
search over plans, best-of-$n$: with a verifier that tells a plan that will work from one that
will not, the chance that the kept plan works rises from $p$ to $1 - (1 - p)^n$ (if the
candidates are independent). The verifier is any function `(task, plan) -> score`: a check
written in code (does every step name an existing tool?) or a model asked for a score
([ModelVerifier][fms_agent.planning.ModelVerifier]).

Plans are read from the planner's reply as JSON (`{"steps": [...]}` or a bare list) or, failing
that, as a numbered or bulleted list; a reply with no steps is a
[PlanError][fms_agent.planning.PlanError] naming what came back.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fms_agent.agent import Agent, RunResult
from fms_agent.llm import Backend, Message

__all__ = [
    "FAILED",
    "PLANNER_PROMPT",
    "ModelVerifier",
    "Plan",
    "PlanAndExecute",
    "PlanError",
    "PlanResult",
    "StepResult",
    "parse_plan",
    "plans_from",
    "propose_plans",
    "search_plans",
]

FAILED = "FAILED:"
"""An executor's answer that starts with this marks the step as failed (and triggers a re-plan)."""

PLANNER_PROMPT = (
    "You are a planner. Break the user's task into a short list of concrete steps that an "
    "assistant with tools can carry out one at a time. Answer with JSON only: "
    '{"steps": ["first step", "second step", ...]}.'
)
"""The planner's system prompt."""


class PlanError(ValueError):
    """A planner's reply holds no plan."""


@dataclass(frozen=True)
class Plan:
    """An ordered list of steps."""

    steps: tuple[str, ...]

    def render(self) -> str:
        """The plan as a numbered list."""
        return "\n".join(f"{i}. {s}" for i, s in enumerate(self.steps, 1))


_ITEM = re.compile(r"^\s*(?:\d+[.)]|[-*\u2022])\s+(.+?)\s*$")


def parse_plan(text: str | None) -> Plan:
    """A plan from a planner's reply: JSON `{"steps": [...]}` or a list, else numbered lines.

    Raises:
        PlanError: no step can be read.
    """
    raw = (text or "").strip()
    match = re.search(r"\{.*\}|\[.*\]", raw, re.DOTALL)
    if match:
        try:
            data: Any = json.loads(match.group(0))
        except json.JSONDecodeError:
            data = None
        steps = data.get("steps") if isinstance(data, dict) else data
        if isinstance(steps, list) and steps and all(isinstance(s, str) for s in steps):
            return Plan(tuple(s.strip() for s in steps if s.strip()))
    items = [m.group(1) for line in raw.splitlines() if (m := _ITEM.match(line))]
    if items:
        return Plan(tuple(items))
    raise PlanError(
        'the planner\'s reply holds no plan (expected JSON {"steps": [...]} or a numbered '
        f"list), got {raw[:200]!r}"
    )


def _planner_messages(task: str, context: str = "") -> list[Message]:
    user = f"Task: {task}" + (f"\n\n{context}" if context else "")
    return [{"role": "system", "content": PLANNER_PROMPT}, {"role": "user", "content": user}]


def propose_plans(backend: Backend, task: str, n: int = 1, context: str = "") -> list[Plan]:
    """Ask the planner `n` times (a sampling back end gives `n` different plans); replies that
    hold no plan are skipped.

    Raises:
        PlanError: none of the `n` replies holds a plan.
        ValueError: `n` is not positive.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n!r}")
    plans, errors = [], []
    for _ in range(n):
        reply = backend.complete(_planner_messages(task, context))
        try:
            plans.append(parse_plan(reply.content))
        except PlanError as e:
            errors.append(str(e))
    if not plans:
        raise PlanError(f"none of {n} planner replies held a plan; first: {errors[0]}")
    return plans


Verifier = Callable[[str, Plan], float]


def search_plans(
    backend: Backend, task: str, verifier: Verifier, n: int = 4, context: str = ""
) -> tuple[Plan, list[tuple[float, Plan]]]:
    """Best-of-`n`: propose `n` plans, score each with `verifier`, keep the best (the first of
    equals). Returns the best plan and every `(score, plan)` in proposal order."""
    scored = [(float(verifier(task, p)), p) for p in propose_plans(backend, task, n, context)]
    best = max(range(len(scored)), key=lambda i: (scored[i][0], -i))
    return scored[best][1], scored


class ModelVerifier:
    """A verifier that asks a model to score a plan from 0 to 10 (the first number it writes;
    a reply without a number scores 0)."""

    PROMPT = (
        "You check plans. Given a task and a plan, answer with one number from 0 (will fail) "
        "to 10 (certain to work), then a short reason."
    )

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def __call__(self, task: str, plan: Plan) -> float:
        """The model's score of `plan` for `task`, clipped to [0, 10]."""
        reply = self.backend.complete(
            [
                {"role": "system", "content": self.PROMPT},
                {"role": "user", "content": f"Task: {task}\n\nPlan:\n{plan.render()}"},
            ]
        )
        m = re.search(r"-?\d+(?:\.\d+)?", reply.content or "")
        return min(10.0, max(0.0, float(m.group(0)))) if m else 0.0


@dataclass(frozen=True)
class StepResult:
    """One executed step."""

    step: str
    run: RunResult

    @property
    def ok(self) -> bool:
        """The executor answered, and not with the failure marker."""
        answer = self.run.answer
        return answer is not None and not answer.lstrip().startswith(FAILED)

    @property
    def text(self) -> str:
        """The step's answer, or why it has none."""
        return self.run.answer if self.run.answer is not None else "(step budget ran out)"


@dataclass
class PlanResult:
    """What [PlanAndExecute.run][fms_agent.planning.PlanAndExecute.run] returns.

    Attributes:
        answer: the last step's answer when every step of the final plan succeeded, else None.
        plans: every plan used, the first and each re-plan.
        steps: every executed step, failed ones included, in order.
        replans: how many times the planner was asked again.
    """

    answer: str | None
    plans: list[Plan] = field(default_factory=list)
    steps: list[StepResult] = field(default_factory=list)
    replans: int = 0


class PlanAndExecute:
    """Plan, execute step by step, re-plan on failure.

    Args:
        planner: the back end that writes plans.
        executor: the agent that carries out each step.
        max_replans: re-plans allowed after failed steps.
        verifier: with `n_candidates > 1`, plans are chosen by
            [search_plans][fms_agent.planning.search_plans] with this verifier.
        n_candidates: plans proposed per planning call.
    """

    def __init__(
        self,
        planner: Backend,
        executor: Agent,
        *,
        max_replans: int = 2,
        verifier: Verifier | None = None,
        n_candidates: int = 1,
    ) -> None:
        if max_replans < 0:
            raise ValueError(f"max_replans must be >= 0, got {max_replans!r}")
        if n_candidates < 1:
            raise ValueError(f"n_candidates must be >= 1, got {n_candidates!r}")
        if n_candidates > 1 and verifier is None:
            raise ValueError("n_candidates > 1 needs a verifier to choose between the plans")
        self.planner, self.executor = planner, executor
        self.max_replans, self.verifier, self.n_candidates = max_replans, verifier, n_candidates

    def _plan(self, task: str, context: str = "") -> Plan:
        if self.verifier is not None and self.n_candidates > 1:
            return search_plans(self.planner, task, self.verifier, self.n_candidates, context)[0]
        return propose_plans(self.planner, task, 1, context)[0]

    def run(self, task: str) -> PlanResult:
        """Carry out `task`.

        Raises:
            PlanError: the planner's reply holds no plan.
            fms_agent.llm.BackendError: a back end failed.
        """
        result = PlanResult(None)
        plan = self._plan(task)
        result.plans.append(plan)
        done: list[StepResult] = []
        while True:
            failed = None
            for step in plan.steps:
                previous = "\n".join(f"- {d.step}: {d.text}" for d in done)
                prompt = f"Overall task: {task}\n" + (
                    f"Steps done so far and their results:\n{previous}\n" if previous else ""
                )
                prompt += (
                    f"Now do this step and answer with its result: {step}\n"
                    f"(If it cannot be done, answer starting with {FAILED} and say why.)"
                )
                sr = StepResult(step, self.executor.run(prompt))
                result.steps.append(sr)
                if not sr.ok:
                    failed = sr
                    break
                done.append(sr)
            if failed is None:
                result.answer = done[-1].text if done else None
                return result
            if result.replans >= self.max_replans:
                return result
            result.replans += 1
            lines = "\n".join(f"- {d.step}: {d.text}" for d in done) or "(nothing yet)"
            context = (
                f"Done so far:\n{lines}\n\nThis step failed: {failed.step}\nResult: "
                f"{failed.text}\n\nWrite a new plan for the remaining work only."
            )
            plan = self._plan(task, context)
            result.plans.append(plan)


def plans_from(replies: Sequence[Sequence[str]]) -> list[str]:
    """Planner replies as JSON text, one per list of steps (for scripted back ends)."""
    return [json.dumps({"steps": list(r)}) for r in replies]

"""`fms_agent.planning` on scripted models: plans parsed from JSON or lists, executed step by step
with each step's results passed on, a failed step re-planned (at most `max_replans` times), and
best-of-n plan search picking the plan the verifier scores highest."""

from __future__ import annotations

import json

import pytest

from fms_agent.agent import Agent
from fms_agent.llm import AssistantMessage, ScriptedBackend, ToolCall
from fms_agent.planning import (
    ModelVerifier,
    Plan,
    PlanAndExecute,
    PlanError,
    parse_plan,
    plans_from,
    search_plans,
)
from fms_agent.tools import tool


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers.

    Args:
        a: the first.
        b: the second.
    """
    return a * b


def _call(name: str, **args: int) -> AssistantMessage:
    return AssistantMessage(None, (ToolCall("c1", name, json.dumps(args)),))


def test_parse_plan_reads_json_lists_and_numbered_lines() -> None:
    assert parse_plan('{"steps": ["a", "b"]}').steps == ("a", "b")
    assert parse_plan('Sure! ["look up x", "add 1"]').steps == ("look up x", "add 1")
    assert parse_plan("Plan:\n1. find the rate\n2) convert\n- report").steps == (
        "find the rate",
        "convert",
        "report",
    )
    with pytest.raises(PlanError, match=r"holds no plan .* got 'I will just do it'"):
        parse_plan("I will just do it")
    assert Plan(("a", "b")).render() == "1. a\n2. b"


def test_steps_run_in_order_and_see_earlier_results() -> None:
    planner = ScriptedBackend(plans_from([["compute 6 times 7", "add one to it"]]))
    model = ScriptedBackend([_call("multiply", a=6, b=7), "42", "43"])
    result = PlanAndExecute(planner, Agent(model, [multiply])).run("6*7+1")
    assert result.answer == "43"
    assert [s.step for s in result.steps] == ["compute 6 times 7", "add one to it"]
    assert result.replans == 0
    second_prompt = model.requests[2][0][-1]["content"]
    assert "- compute 6 times 7: 42" in second_prompt  # the step sees the result before it
    assert "Now do this step and answer with its result: add one to it" in second_prompt


def test_a_failed_step_is_replanned_with_what_was_done() -> None:
    planner = ScriptedBackend(
        plans_from([["fetch the rate from the web", "convert"], ["use the rate 2", "convert"]])
    )
    model = ScriptedBackend(["FAILED: no web access", "rate is 2", "10 EUR is 20 USD"])
    result = PlanAndExecute(planner, Agent(model)).run("convert 10 EUR")
    assert result.answer == "10 EUR is 20 USD"
    assert result.replans == 1
    assert len(result.plans) == 2
    assert [s.ok for s in result.steps] == [False, True, True]
    replan_request = planner.requests[1][0][-1]["content"]
    assert "This step failed: fetch the rate from the web" in replan_request
    assert "FAILED: no web access" in replan_request


def test_running_out_of_replans_gives_no_answer() -> None:
    planner = ScriptedBackend(plans_from([["try"], ["try again"]]))
    model = ScriptedBackend(["FAILED: no", "FAILED: still no"])
    result = PlanAndExecute(planner, Agent(model), max_replans=1).run("impossible")
    assert result.answer is None
    assert result.replans == 1
    assert len(result.steps) == 2


def test_a_step_that_exhausts_the_agent_budget_counts_as_failed() -> None:
    planner = ScriptedBackend(plans_from([["loop"]]))
    model = ScriptedBackend([_call("multiply", a=1, b=1)] * 2)
    result = PlanAndExecute(planner, Agent(model, [multiply], max_steps=2), max_replans=0).run("x")
    assert result.answer is None
    assert result.steps[0].text == "(step budget ran out)"


def _uses_known_tools(task: str, plan: Plan) -> float:
    """A verifier in code: the share of steps that name a tool the agent has."""
    return sum("multiply" in s for s in plan.steps) / len(plan.steps)


def test_search_keeps_the_plan_the_verifier_scores_highest() -> None:
    planner = ScriptedBackend(
        plans_from([["guess the answer"], ["multiply 6 by 7 with multiply"], ["search the web"]])
    )
    best, scored = search_plans(planner, "6*7", _uses_known_tools, n=3)
    assert best.steps == ("multiply 6 by 7 with multiply",)
    assert [s for s, _ in scored] == [0.0, 1.0, 0.0]


def test_best_of_n_avoids_the_failing_first_plan() -> None:
    """Sampling one plan takes the first (which fails and has no re-plan); best-of-3 with the
    verifier takes the one that works."""
    replies = [["search the web for 6*7"], ["multiply 6 by 7 with multiply"], ["ask a friend"]]

    def fresh() -> tuple[ScriptedBackend, ScriptedBackend]:
        model = ScriptedBackend([_call("multiply", a=6, b=7), "42"])
        return ScriptedBackend(plans_from(replies)), model

    planner, _ = fresh()
    one = PlanAndExecute(planner, Agent(ScriptedBackend(["FAILED: no web"])), max_replans=0)
    assert one.run("6*7").answer is None
    planner, model = fresh()
    searched = PlanAndExecute(
        planner, Agent(model, [multiply]), max_replans=0, verifier=_uses_known_tools, n_candidates=3
    )
    assert searched.run("6*7").answer == "42"


def test_model_verifier_reads_the_first_number() -> None:
    v = ModelVerifier(ScriptedBackend(["7 - sensible", "score: 12", "no idea"]))
    plan = Plan(("a",))
    assert v("t", plan) == 7.0
    assert v("t", plan) == 10.0  # clipped
    assert v("t", plan) == 0.0


def test_bad_arguments_and_planless_replies_are_named() -> None:
    with pytest.raises(ValueError, match="n_candidates > 1 needs a verifier"):
        PlanAndExecute(ScriptedBackend([]), Agent(ScriptedBackend([])), n_candidates=2)
    with pytest.raises(ValueError, match="max_replans must be >= 0, got -1"):
        PlanAndExecute(ScriptedBackend([]), Agent(ScriptedBackend([])), max_replans=-1)
    with pytest.raises(PlanError, match="none of 1 planner replies held a plan"):
        PlanAndExecute(ScriptedBackend(["just do it"]), Agent(ScriptedBackend([]))).run("x")

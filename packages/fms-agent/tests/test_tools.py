"""`fms_agent.tools`: schemas equal to transformers' `get_json_schema` (exactly, where both apply),
accepted by the openai client's request types, and argument validation naming the argument."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal, Optional, TypedDict

import pytest

from fms_agent.tools import Tool, ToolArgumentError, ToolDefinitionError, tool


def weather(city: str, unit: Literal["celsius", "fahrenheit"] = "celsius", days: int = 1) -> str:
    """Get the weather forecast.

    Args:
        city: the city, e.g. "Paris".
        unit: temperature unit (choices: ["celsius", "fahrenheit"])
        days: how many days
            ahead to forecast.
    """
    return f"{city} {unit} {days}"


def search(
    query: str,
    tags: list[str],
    limit: Optional[int] = None,  # noqa: UP045 - Optional is what is tested
    scores: dict[str, float] | None = None,
) -> list[str]:
    """Search the notes.

    A longer explanation
    on two lines.

    Args:
        query (str): the query.
        tags: tags to match.
        limit: at most this many.
        scores: weights by tag.

    Returns:
        The matching notes.
    """
    return [query]


def mixed(
    x: int | str, pair: tuple[int, str], flag: bool, rate: float | None = 0.5, anything: Any = None
) -> None:
    """Mix of types.

    Args:
        x: an int or a string.
        pair: a pair.
        flag: a flag.
        rate: a rate.
        anything: any value.
    """


@pytest.mark.parametrize("fn", [weather, search, mixed])
def test_schema_equals_transformers_get_json_schema_exactly(fn: Any) -> None:
    """Equal, key for key, to transformers' `get_json_schema` (minus its `return` entry)."""
    from transformers.utils import get_json_schema

    ref = get_json_schema(fn)
    ref["function"].pop("return", None)
    assert tool(fn).json_schema() == ref


@dataclass
class Address:
    """A postal address.

    Args:
        street: street and number.
        zip_code: postal code.
    """

    street: str
    zip_code: str | None = None


class Line(TypedDict):
    sku: str
    quantity: int


def order(
    customer: str, address: Address, lines: list[Line], priority: Literal[1, 2, 3] = 2
) -> str:
    """Place an order.

    Args:
        customer: who orders.
        address: where to ship.
        lines: what to ship.
        priority: 1 is the highest.
    """
    return f"{customer}:{address.street}:{len(lines)}:{priority}"


def test_nested_dataclass_and_typeddict_schema() -> None:
    t = tool(order)
    p = t.parameters
    assert p["required"] == ["customer", "address", "lines"]
    assert p["properties"]["address"] == {
        "type": "object",
        "properties": {
            "street": {"type": "string", "description": "street and number."},
            "zip_code": {"type": "string", "nullable": True, "description": "postal code."},
        },
        "required": ["street"],
        "description": "where to ship.",
    }
    assert p["properties"]["lines"]["items"]["required"] == ["sku", "quantity"]
    assert p["properties"]["priority"]["enum"] == [1, 2, 3]


def test_strict_form_follows_openai_rules() -> None:
    """Every object: all properties required, additionalProperties false; optionals nullable."""
    s = tool(order).openai_schema()
    assert s["function"]["strict"] is True

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" or "properties" in node:
                assert node["additionalProperties"] is False
                assert node["required"] == list(node["properties"])
            assert "nullable" not in node
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(s["function"]["parameters"])
    props = s["function"]["parameters"]["properties"]
    assert props["priority"]["type"] == ["integer", "null"]
    assert props["priority"]["enum"] == [1, 2, 3, None]
    assert props["address"]["properties"]["zip_code"]["type"] == ["string", "null"]
    # free-form dicts and tuples have no strict spelling
    assert tool(search).openai_schema()["function"]["strict"] is False
    assert tool(mixed).strict is False


@pytest.mark.parametrize("fn", [weather, search, mixed, order])
def test_openai_client_accepts_tool_definitions(fn: Any) -> None:
    """The official openai client's request types accept the definition (pydantic validation)."""
    import pydantic
    from openai.types.chat import ChatCompletionToolParam
    from openai.types.chat.completion_create_params import CompletionCreateParamsNonStreaming

    schema = tool(fn).openai_schema()
    pydantic.TypeAdapter(ChatCompletionToolParam).validate_python(schema)
    request = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": [schema]}
    pydantic.TypeAdapter(CompletionCreateParamsNonStreaming).validate_python(request)
    json.dumps(schema)  # JSON all the way down


def test_validation_builds_nested_values_and_applies_defaults() -> None:
    t = tool(order)
    out = t(
        customer="ada",
        address={"street": "1 Main"},
        lines=[{"sku": "a", "quantity": 2}],
        priority=None,
    )
    assert out == "ada:1 Main:1:2"
    kwargs = t.validate(
        {"customer": "ada", "address": {"street": "x", "zip_code": None}, "lines": []}
    )
    assert kwargs["address"] == Address("x", None)
    assert tool(weather)(city="Oslo", days=3.0) == "Oslo celsius 3"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({}, "missing required field(s) ['city']"),
        ({"city": "x", "when": 1}, "unknown field(s) ['when']"),
        ({"city": 3}, "tool 'weather'.city: expected a string, got 3 (int)"),
        (
            {"city": "x", "unit": "kelvin"},
            "tool 'weather'.unit: expected one of ['celsius', 'fahrenheit'], got 'kelvin' (str)",
        ),
        ({"city": "x", "days": "2"}, "tool 'weather'.days: expected an integer, got '2' (str)"),
        ({"city": "x", "days": True}, "expected an integer, got True (bool)"),
        ("Paris", "arguments must be a JSON object, got 'Paris' (str)"),
    ],
)
def test_bad_arguments_name_the_argument(args: Any, message: str) -> None:
    with pytest.raises(ToolArgumentError) as e:
        tool(weather).validate(args)
    assert message in str(e.value)


def test_nested_errors_name_the_path() -> None:
    with pytest.raises(ToolArgumentError, match=r"lines\[0\]\.quantity: expected an integer"):
        tool(order).validate(
            {"customer": "a", "address": {"street": "s"}, "lines": [{"sku": "a", "quantity": "x"}]}
        )
    with pytest.raises(
        ToolArgumentError, match=r"address: missing required field\(s\) \['street'\]"
    ):
        tool(order).validate({"customer": "a", "address": {}, "lines": []})


def test_definition_errors() -> None:
    def no_hint(x):  # type: ignore[no-untyped-def]
        """Doc."""

    def no_doc(x: int) -> None:
        pass

    def star(*xs: int) -> None:
        """Doc."""

    def bad_type(x: set[int]) -> None:
        """Doc."""

    with pytest.raises(ToolDefinitionError, match="argument 'x' has no type hint"):
        tool(no_hint)
    with pytest.raises(ToolDefinitionError, match="has no description"):
        tool(no_doc)
    with pytest.raises(ToolDefinitionError, match=r"\*args"):
        tool(star)
    with pytest.raises(ToolDefinitionError, match="no JSON schema for the type hint"):
        tool(bad_type)
    with pytest.raises(ToolDefinitionError, match="tool name"):
        Tool.from_function(weather, name="has space")
    assert tool(name="wx", timeout=2.0)(weather).name == "wx"

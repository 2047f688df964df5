r"""Tools: a Python function becomes a JSON-schema'd tool a model can call, with its arguments
checked before the call.

A tool is what a model may *do*. The model never runs code: it writes a **tool call**, a name and
a JSON object of arguments, and the agent runs the function and returns the result as an
observation. For the model to write a valid call it must be told, for each tool, its name, what
it does and the JSON Schema of its arguments. [tool][fms_agent.tools.tool] reads all three from
the function itself: the name from `__name__`, the description and each argument's description
from a Google-style docstring (`Args:` section), and the schema from the type hints:

| Python hint | JSON Schema |
|---|---|
| `str`, `int`, `float`, `bool`, `None` | `string`, `integer`, `number`, `boolean`, `null` |
| `Literal["a", "b"]` | `{"type": "string", "enum": ["a", "b"]}` |
| `list[T]`, `tuple[A, B]` | `array` with `items`, `array` with `prefixItems` |
| `dict[str, T]` | `object` with `additionalProperties: T` |
| `T \| None` (`Optional[T]`) | `T` with `"nullable": true` |
| `A \| B` of primitives | `{"type": ["a", "b"]}`; of anything else `anyOf` |
| a dataclass or a `TypedDict` | a nested `object` with its own `properties` and `required` |

This plain form is the one `transformers.utils.get_json_schema` writes, and on every function
both accept the two are equal (tested). transformers rejects dataclasses and TypedDicts and adds
a `"return"` entry that OpenAI's tool format does not have; those are the only differences.

**OpenAI's strict form.** With `"strict": true` an OpenAI-compatible server may constrain
decoding to the schema, which it can only do for a subset of JSON Schema: every object lists
*all* its properties in `required` and sets `"additionalProperties": false`, and an optional
value is spelled as a union with `null`. [Tool.openai_schema][fms_agent.tools.Tool.openai_schema]
rewrites the plain form that way: an argument with a default becomes required-but-nullable, and
`null` means "use the default". Free-form mappings (`dict[str, T]`) and tuples have no strict
spelling; a tool that uses them is described with `"strict": false`.

**Validation.** [Tool.validate][fms_agent.tools.Tool.validate] checks a call's arguments against
the hints before the function runs (missing or unknown arguments, wrong types, values outside a
`Literal`) and builds dataclass arguments from their JSON objects. A bad call raises
[ToolArgumentError][fms_agent.tools.ToolArgumentError] naming the argument, what was received and
what was expected: the agent hands that message back to the model as the observation.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, overload

__all__ = ["Tool", "ToolArgumentError", "ToolDefinitionError", "tool"]

JSON = dict[str, Any]
F = TypeVar("F", bound=Callable[..., Any])

_PRIMITIVES: dict[Any, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


class ToolDefinitionError(TypeError):
    """A function cannot be described as a tool (a hint without a schema, a missing hint)."""


class ToolArgumentError(ValueError):
    """A tool call's arguments do not fit the tool: the message names the argument."""


# -- docstrings -------------------------------------------------------------------------------

_SECTION = re.compile(
    r"^\s*(Args|Arguments|Parameters|Returns|Return|Raises|Yields|Example|Examples|Note|Notes):\s*$"
)
_ARG_LINE = re.compile(r"^\s*(\*{0,2}\w+)\s*(\([^)]*\))?\s*:\s*(.*)$")
_CHOICES = re.compile(r"\s*\(choices:\s*(.*?)\)\s*$", re.IGNORECASE)


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """Split a Google-style docstring into its summary and `{argument: description}`.

    The summary is everything before the first section header; an argument's description may
    run over several indented lines, which are joined with single spaces; a trailing
    `(choices: [...])`, which transformers reads as an enum, is removed from the text.
    """
    if not doc:
        return "", {}
    lines = inspect.cleandoc(doc).splitlines()
    summary: list[str] = []
    args: dict[str, list[str]] = {}
    section: str | None = None
    current: str | None = None
    arg_indent = 0
    for line in lines:
        m = _SECTION.match(line)
        if m:
            section, current = m.group(1), None
            continue
        if section is None:
            summary.append(line)
            continue
        if section not in ("Args", "Arguments", "Parameters") or not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        a = _ARG_LINE.match(line)
        if a and (current is None or indent <= arg_indent):
            current, arg_indent = a.group(1).lstrip("*"), indent
            args[current] = [a.group(3).strip()]
        elif current is not None:
            args[current].append(line.strip())
    described = {k: _CHOICES.sub("", " ".join(p for p in v if p)).strip() for k, v in args.items()}
    return "\n".join(summary).strip(), described


# -- hints to schemas -------------------------------------------------------------------------


def _is_typeddict(tp: Any) -> bool:
    return isinstance(tp, type) and typing.is_typeddict(tp)


def _union_args(tp: Any) -> tuple[Any, ...] | None:
    origin = get_origin(tp)
    if origin is Union or origin is types.UnionType:
        return get_args(tp)
    return None


def _schema(tp: Any, where: str) -> JSON:
    """The plain JSON Schema of one type hint; `where` names it in errors."""
    if tp is Any:
        return {}
    if tp in _PRIMITIVES:
        return {"type": _PRIMITIVES[tp]}
    members = _union_args(tp)
    if members is not None:
        rest = [m for m in members if m is not type(None)]
        nullable = len(rest) < len(members)
        if len(rest) == 1:
            out = _schema(rest[0], where)
        elif all(m in _PRIMITIVES for m in rest):
            out = {"type": [_PRIMITIVES[m] for m in rest]}
        else:
            out = {"anyOf": [_schema(m, where) for m in rest]}
        if nullable:
            out["nullable"] = True
        return out
    origin = get_origin(tp)
    if origin is Literal:
        values = list(get_args(tp))
        kinds = {type(v) for v in values}
        if len(kinds) != 1 or next(iter(kinds)) not in (str, int, float, bool):
            raise ToolDefinitionError(
                f"{where}: Literal values must share one primitive type, got {values!r}"
            )
        return {"type": _PRIMITIVES[next(iter(kinds))], "enum": values}
    if origin is list or tp is list:
        (item,) = get_args(tp) or (Any,)
        return (
            {"type": "array"} if item is Any else {"type": "array", "items": _schema(item, where)}
        )
    if origin is tuple:
        items = get_args(tp)
        if len(items) == 2 and items[1] is Ellipsis:
            return {"type": "array", "items": _schema(items[0], where)}
        return {"type": "array", "prefixItems": [_schema(i, where) for i in items]}
    if origin is dict or tp is dict:
        key, value = get_args(tp) or (str, Any)
        if key is not str:
            raise ToolDefinitionError(
                f"{where}: JSON object keys are strings, got dict[{key!r}, ...]"
            )
        out = {"type": "object"}
        if value is not Any:
            out["additionalProperties"] = _schema(value, where)
        return out
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        hints = typing.get_type_hints(tp)
        _, docs = parse_docstring(tp.__doc__)
        props: JSON = {}
        required: list[str] = []
        for f in dataclasses.fields(tp):
            props[f.name] = _described(
                _schema(hints[f.name], f"{where}.{f.name}"), docs.get(f.name)
            )
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                required.append(f.name)
        return {"type": "object", "properties": props, "required": required}
    if _is_typeddict(tp):
        hints = typing.get_type_hints(tp)
        _, docs = parse_docstring(tp.__doc__)
        props = {k: _described(_schema(h, f"{where}.{k}"), docs.get(k)) for k, h in hints.items()}
        req = [k for k in hints if k in tp.__required_keys__]
        return {"type": "object", "properties": props, "required": req}
    raise ToolDefinitionError(
        f"{where}: no JSON schema for the type hint {tp!r}; expected str, int, float, bool, None, "
        "Literal, list, tuple, dict[str, ...], a union of those, a dataclass or a TypedDict"
    )


def _described(schema: JSON, description: str | None) -> JSON:
    if description:
        schema = {**schema, "description": description}
    return schema


def _strict(schema: JSON, optional: bool = False) -> JSON | None:
    """Rewrite a plain schema in OpenAI's strict form, or None if it has no strict spelling."""
    s = dict(schema)
    nullable = bool(s.pop("nullable", False)) or optional
    if "prefixItems" in s or isinstance(s.get("additionalProperties"), dict):
        return None
    if s.get("type") == "object" and "properties" not in s:
        return None  # a free-form object: strict mode needs every key named
    if "properties" in s:
        props: JSON = {}
        for k, v in s["properties"].items():
            inner = _strict(v, optional=k not in s.get("required", []))
            if inner is None:
                return None
            props[k] = inner
        s["properties"], s["required"], s["additionalProperties"] = props, list(props), False
    if "items" in s:
        inner = _strict(s["items"])
        if inner is None:
            return None
        s["items"] = inner
    if "anyOf" in s:
        branches = [_strict(b) for b in s["anyOf"]]
        if any(b is None for b in branches):
            return None
        s["anyOf"] = branches
    if nullable:
        if "anyOf" in s:
            s["anyOf"] = [*s["anyOf"], {"type": "null"}]
        elif "type" in s:
            kinds = s["type"] if isinstance(s["type"], list) else [s["type"]]
            s["type"] = [*kinds, "null"] if "null" not in kinds else kinds
            if "enum" in s and None not in s["enum"]:
                s["enum"] = [*s["enum"], None]
        else:
            return None
    return s


# -- validation -------------------------------------------------------------------------------


def _kind(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Check `value` (decoded JSON) against the hint `tp`; build dataclasses; return the value."""
    if tp is Any:
        return value
    if tp is type(None):
        if value is not None:
            raise ToolArgumentError(f"{where}: expected null, got {_kind(value)}")
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise ToolArgumentError(f"{where}: expected a boolean, got {_kind(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ToolArgumentError(f"{where}: expected an integer, got {_kind(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ToolArgumentError(f"{where}: expected a number, got {_kind(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ToolArgumentError(f"{where}: expected a string, got {_kind(value)}")
        return value
    members = _union_args(tp)
    if members is not None:
        if value is None and type(None) in members:
            return None
        errors = []
        for m in (m for m in members if m is not type(None)):
            try:
                return _coerce(m, value, where)
            except ToolArgumentError as e:
                errors.append(str(e).split(": ", 1)[-1])
        raise ToolArgumentError(f"{where}: no member of {tp!r} fits: " + "; ".join(errors))
    origin = get_origin(tp)
    if origin is Literal:
        allowed = list(get_args(tp))
        if value not in allowed or type(value) is not type(allowed[0]):
            raise ToolArgumentError(f"{where}: expected one of {allowed!r}, got {_kind(value)}")
        return value
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, list):
            raise ToolArgumentError(f"{where}: expected an array, got {_kind(value)}")
        args = get_args(tp)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise ToolArgumentError(
                    f"{where}: expected an array of {len(args)} items, got {len(value)}"
                )
            return tuple(
                _coerce(a, v, f"{where}[{i}]")
                for i, (a, v) in enumerate(zip(args, value, strict=True))
            )
        item = args[0] if args else Any
        out = [_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ToolArgumentError(f"{where}: expected an object, got {_kind(value)}")
        vt = get_args(tp)[1] if get_args(tp) else Any
        return {k: _coerce(vt, v, f"{where}[{k!r}]") for k, v in value.items()}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        hints = typing.get_type_hints(tp)
        fields = {
            f.name: f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            for f in dataclasses.fields(tp)
        }
        return tp(**_check_object(value, hints, {k for k, r in fields.items() if r}, where))
    if _is_typeddict(tp):
        hints = typing.get_type_hints(tp)
        return _check_object(value, hints, set(tp.__required_keys__), where)
    raise ToolArgumentError(f"{where}: cannot check a value against {tp!r}")  # pragma: no cover


def _check_object(value: Any, hints: Mapping[str, Any], required: set[str], where: str) -> JSON:
    if not isinstance(value, dict):
        raise ToolArgumentError(f"{where}: expected an object, got {_kind(value)}")
    unknown = sorted(set(value) - set(hints))
    if unknown:
        raise ToolArgumentError(
            f"{where}: unknown field(s) {unknown}; expected fields {sorted(hints)}"
        )
    missing = sorted(k for k in required if k not in value)
    if missing:
        raise ToolArgumentError(f"{where}: missing required field(s) {missing}")
    return {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in value.items()}


# -- the tool ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Tool:
    """A callable with the JSON schema a model needs to call it.

    Attributes:
        fn: the function.
        name: the name the model calls it by.
        description: what it does (the docstring's summary).
        parameters: the plain JSON Schema of its arguments (transformers' form).
        timeout: seconds the agent lets one call run, or None for no limit.
    """

    fn: Callable[..., Any]
    name: str
    description: str
    parameters: JSON
    timeout: float | None = None
    _hints: Mapping[str, Any] = dataclasses.field(default_factory=dict, repr=False)
    _defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict, repr=False)

    @classmethod
    def from_function(
        cls,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout: float | None = None,
    ) -> Tool:
        """Read name, description and schema from `fn`'s signature, hints and docstring.

        Raises:
            ToolDefinitionError: an argument has no type hint, a hint has no JSON schema,
                `*args`/`**kwargs` are used, or there is no description.
        """
        label = name or getattr(fn, "__name__", None)
        if not label or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", label):
            raise ToolDefinitionError(
                f"tool name must be 1-64 letters, digits, '_' or '-', got {label!r}"
            )
        summary, docs = parse_docstring(fn.__doc__)
        desc = description if description is not None else summary
        if not desc:
            raise ToolDefinitionError(
                f"tool {label!r} has no description: give it a docstring or pass description="
            )
        hints = typing.get_type_hints(fn)
        props: JSON = {}
        required: list[str] = []
        defaults: dict[str, Any] = {}
        for p in inspect.signature(fn).parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise ToolDefinitionError(f"tool {label!r}: *args/**kwargs have no JSON schema")
            if p.name not in hints:
                raise ToolDefinitionError(f"tool {label!r}: argument {p.name!r} has no type hint")
            props[p.name] = _described(
                _schema(hints[p.name], f"tool {label!r} argument {p.name!r}"), docs.get(p.name)
            )
            if p.default is inspect.Parameter.empty:
                required.append(p.name)
            else:
                defaults[p.name] = p.default
        params = {"type": "object", "properties": props, "required": required}
        arg_hints = {k: v for k, v in hints.items() if k in props}
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds or None, got {timeout!r}")
        return cls(fn, label, desc, params, timeout, arg_hints, defaults)

    def json_schema(self) -> JSON:
        """The tool in the plain form `transformers.utils.get_json_schema` writes (no `return`)."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }

    @property
    def strict(self) -> bool:
        """Whether the schema has a spelling in OpenAI's strict subset."""
        return _strict(self.parameters) is not None

    def openai_schema(self) -> JSON:
        """The tool as an OpenAI `tools` entry: strict form when it has one, else `strict: false`."""
        strict = _strict(self.parameters)
        fn: JSON = {"name": self.name, "description": self.description}
        fn["parameters"] = strict if strict is not None else self.parameters
        fn["strict"] = strict is not None
        return {"type": "function", "function": fn}

    def validate(self, arguments: Any) -> JSON:
        """Check a call's decoded JSON arguments; return the keyword arguments to call with.

        `null` for an argument with a default means the default (the strict form's spelling of
        "left out").

        Raises:
            ToolArgumentError: naming the argument, the value received and what was expected.
        """
        where = f"tool {self.name!r}"
        if not isinstance(arguments, dict):
            raise ToolArgumentError(
                f"{where}: arguments must be a JSON object, got {_kind(arguments)}"
            )
        args = {
            k: v
            for k, v in arguments.items()
            if not (v is None and k in self._defaults and self._defaults[k] is not None)
        }
        return _check_object(args, self._hints, set(self.parameters["required"]), where)

    def __call__(self, **arguments: Any) -> Any:
        """Validate `arguments`, then call the function with them."""
        return self.fn(**self.validate(arguments))


@overload
def tool(fn: F, /) -> Tool: ...


@overload
def tool(
    *, name: str | None = None, description: str | None = None, timeout: float | None = None
) -> Callable[[F], Tool]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a [Tool][fms_agent.tools.Tool] of a function: `@tool` or `@tool(timeout=5.0)`.

    Example:
        >>> @tool
        ... def add(a: int, b: int) -> int:
        ...     '''Add two integers.
        ...
        ...     Args:
        ...         a: the first.
        ...         b: the second.
        ...     '''
        ...     return a + b
        >>> add.parameters["required"], add(a=2, b=3)
        (['a', 'b'], 5)
    """

    def wrap(f: Callable[..., Any]) -> Tool:
        return Tool.from_function(f, name=name, description=description, timeout=timeout)

    return wrap(fn) if fn is not None else wrap

"""Grammars that hold the tool roles to answers the caller can use.

A 135M role misspells a listed name, drops a required parameter or repeats a key often
enough to cost a third of its calls. Guided decoding (vLLM's structured outputs, xgrammar
EBNF) removes those failures without touching what the role chooses: the selector writes
listed names or `none`; a call line is `{"name": ..., "arguments": {...}}` of a listed
function with its parameters' JSON types, required ones present. The grammars follow the
roles' trained formats exactly (one item per line, `json.dumps` spacing), so a role that
was already right writes the same tokens.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from agentstack.chat.tool_prompts import NONE_SELECTED, function_names, function_spec

# At most this many lines per answer: BFCL's parallel questions ask for up to 6 calls.
MAX_LINES = 8
# BFCL writes Python type names; JSON Schema has others (and no `any`).
JSON_TYPES = {"dict": "object", "float": "number", "tuple": "array", "any": None}


def parameters_schema(schema: Any) -> dict[str, Any]:
    """A function's parameter schema (OpenAI's JSON Schema or BFCL's dialect) reduced to
    what guided decoding needs: types, properties, required names, items and enums."""
    if not isinstance(schema, Mapping):
        return {}
    out: dict[str, Any] = {}
    kind = JSON_TYPES.get(schema.get("type"), schema.get("type"))
    if isinstance(kind, str):
        out["type"] = kind
    if isinstance(schema.get("properties"), Mapping):
        out["properties"] = {name: parameters_schema(s) for name, s in schema["properties"].items()}
        out["required"] = [r for r in schema.get("required", []) if r in out["properties"]]
    if "items" in schema:
        out["items"] = parameters_schema(schema["items"])
    if isinstance(schema.get("enum"), list):
        out["enum"] = schema["enum"]
    return out


def call_schema(tool: Mapping[str, Any], *, reduced: bool = True) -> dict[str, Any]:
    """One call of one function: its name and its arguments. `reduced` keeps only what the
    roles' line grammar needs (`parameters_schema`); a forced call (`tool_choice`
    `required` or named) keeps the caller's whole parameter schema."""
    spec = function_spec(tool)
    parameters = spec.get("parameters") or {"type": "object"}
    arguments = parameters_schema(parameters) if reduced else dict(parameters)
    return {"type": "object", "required": ["name", "arguments"],
            "properties": {"name": {"enum": [spec["name"]]}, "arguments": arguments}}


def calls_list_schema(tools: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A JSON list of calls of the listed functions (the base model's answer format)."""
    return {"type": "array", "maxItems": MAX_LINES, "items": {"anyOf": [call_schema(t) for t in tools]}}


_RULE_OR_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"|(?<![A-Za-z0-9_])root')


def _literal(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _lines(item: str, *, allow_none: bool) -> str:
    rule = f'root ::= {item} ("\\n" {item}){{0, {MAX_LINES - 1}}}'
    return f"{rule} | {_literal(NONE_SELECTED)}" if allow_none else rule


def selection_grammar(tools: Sequence[Mapping[str, Any]]) -> str | None:
    """The selector's answer: listed names, one per line, or `none`."""
    names = list(dict.fromkeys(function_names(tools)))
    if not names:
        return None
    grammar = _lines("name", allow_none=True) + "\nname ::= " + " | ".join(_literal(n) for n in names)
    return _checked(grammar)


def call_lines_grammar(tools: Sequence[Mapping[str, Any]], *, allow_none: bool) -> str | None:
    """Call lines of the listed functions (`tools` holds just the chosen one for the
    arguments writer), or `none` where the role may decline; None when a schema is
    beyond the grammar compiler, and the role then writes unconstrained."""
    if not tools:
        return None
    schemas = [call_schema(t) for t in tools]
    schema = schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
    return _call_lines(json.dumps(schema), allow_none)  # key order is the order written


@lru_cache(maxsize=256)
def _call_lines(schema: str, allow_none: bool) -> str | None:
    import xgrammar

    try:
        call = str(xgrammar.Grammar.from_json_schema(schema, any_whitespace=False))
    except (RuntimeError, ValueError):
        return None
    # xgrammar names the schema's rules root, root_*; they become call, call_* (string
    # literals, such as a parameter named root_type, stay as they are).
    renamed = _RULE_OR_LITERAL.sub(lambda m: m[0] if m[0].startswith('"') else "call", call)
    return _checked(_lines("call", allow_none=allow_none) + "\n" + renamed)


@lru_cache(maxsize=256)
def _checked(grammar: str) -> str | None:
    import xgrammar

    try:
        xgrammar.Grammar.from_ebnf(grammar)
    except (RuntimeError, ValueError):
        return None
    return grammar

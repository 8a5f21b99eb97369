"""Example tools for `tool_agent`: real, side-effect free, and safe on any input.

- `calculator`: arithmetic on numbers (+ - * / // % **, parentheses), parsed with
  `ast` and evaluated by walking the tree: no `eval`, bounded exponents.
- `convert_units`: length, mass, volume, time and temperature.
- `capital_of`: a small local lookup table of capital cities.

Users add their own with `ToolRegistry.register` (any LangChain tool or a typed,
documented function) and pass the registry to `build_tool_agent`.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from langchain_core.tools import BaseTool, tool
from langchain_core.utils.function_calling import convert_to_openai_tool

MAX_EXPONENT = 64
MAX_EXPRESSION_CHARS = 200

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def _evaluate(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ValueError(f"exponent {right} is larger than {MAX_EXPONENT}")
        return _BINARY[type(node.op)](left, right)  # type: ignore[no-any-return]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))  # type: ignore[no-any-return]
    raise ValueError(f"unsupported expression element: {ast.dump(node)[:60]}")


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression with + - * / // % ** and parentheses, e.g. "12 * (3 + 4)"."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ValueError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.replace("^", "**"), mode="eval")
    except SyntaxError as e:
        raise ValueError(f"not an arithmetic expression: {expression!r}") from e
    value = _evaluate(tree)
    if isinstance(value, float) and value.is_integer() and math.isfinite(value):
        value = int(value)
    return str(value)


# Factor to the base unit of each dimension.
_UNITS: dict[str, tuple[str, float]] = {
    "m": ("length", 1.0), "km": ("length", 1000.0), "cm": ("length", 0.01), "mm": ("length", 0.001),
    "mi": ("length", 1609.344), "ft": ("length", 0.3048), "in": ("length", 0.0254), "yd": ("length", 0.9144),
    "kg": ("mass", 1.0), "g": ("mass", 0.001), "lb": ("mass", 0.45359237), "oz": ("mass", 0.028349523125),
    "l": ("volume", 1.0), "ml": ("volume", 0.001), "gal": ("volume", 3.785411784),
    "s": ("time", 1.0), "min": ("time", 60.0), "h": ("time", 3600.0), "day": ("time", 86400.0),
}
_ALIASES = {
    "meter": "m", "meters": "m", "kilometer": "km", "kilometers": "km", "centimeter": "cm", "centimeters": "cm",
    "millimeter": "mm", "millimeters": "mm", "mile": "mi", "miles": "mi", "foot": "ft", "feet": "ft",
    "inch": "in", "inches": "in", "yard": "yd", "yards": "yd", "kilogram": "kg", "kilograms": "kg",
    "gram": "g", "grams": "g", "pound": "lb", "pounds": "lb", "lbs": "lb", "ounce": "oz", "ounces": "oz",
    "liter": "l", "liters": "l", "litre": "l", "litres": "l", "milliliter": "ml", "milliliters": "ml",
    "gallon": "gal", "gallons": "gal", "second": "s", "seconds": "s", "minute": "min", "minutes": "min",
    "hour": "h", "hours": "h", "days": "day", "celsius": "c", "fahrenheit": "f", "kelvin": "k",
}
_TEMPERATURE_TO_K: dict[str, Callable[[float], float]] = {
    "c": lambda v: v + 273.15, "f": lambda v: (v - 32) * 5 / 9 + 273.15, "k": lambda v: v,
}
_K_TO_TEMPERATURE: dict[str, Callable[[float], float]] = {
    "c": lambda k: k - 273.15, "f": lambda k: (k - 273.15) * 9 / 5 + 32, "k": lambda k: k,
}


def _unit(name: str) -> str:
    key = name.strip().lower().rstrip(".")
    key = _ALIASES.get(key, key)
    if key not in _UNITS and key not in _TEMPERATURE_TO_K:
        raise ValueError(f"unknown unit {name!r}; known: {sorted({*_UNITS, *_TEMPERATURE_TO_K})}")
    return key


@tool
def convert_units(value: float, from_unit: str, to_unit: str) -> str:
    """Convert a value between units of length (m, km, mi, ft, ...), mass (kg, lb, ...),
    volume (l, ml, gal), time (s, min, h, day) or temperature (c, f, k)."""
    source, target = _unit(from_unit), _unit(to_unit)
    if source in _TEMPERATURE_TO_K or target in _TEMPERATURE_TO_K:
        if not (source in _TEMPERATURE_TO_K and target in _TEMPERATURE_TO_K):
            raise ValueError(f"cannot convert {from_unit} to {to_unit}")
        result = _K_TO_TEMPERATURE[target](_TEMPERATURE_TO_K[source](value))
    else:
        (dim_a, factor_a), (dim_b, factor_b) = _UNITS[source], _UNITS[target]
        if dim_a != dim_b:
            raise ValueError(f"cannot convert {dim_a} ({from_unit}) to {dim_b} ({to_unit})")
        result = value * factor_a / factor_b
    return f"{value:g} {from_unit} = {result:.6g} {to_unit}"


_CAPITALS = {
    "argentina": "Buenos Aires", "australia": "Canberra", "brazil": "Brasília", "canada": "Ottawa",
    "china": "Beijing", "egypt": "Cairo", "france": "Paris", "germany": "Berlin", "india": "New Delhi",
    "italy": "Rome", "japan": "Tokyo", "kenya": "Nairobi", "mexico": "Mexico City", "nigeria": "Abuja",
    "norway": "Oslo", "poland": "Warsaw", "portugal": "Lisbon", "russia": "Moscow", "south africa": "Pretoria",
    "spain": "Madrid", "sweden": "Stockholm", "switzerland": "Bern", "turkey": "Ankara",
    "united kingdom": "London", "united states": "Washington, D.C.",
}


@tool
def capital_of(country: str) -> str:
    """Look up the capital city of a country in a local table."""
    key = country.strip().lower()
    if key not in _CAPITALS:
        raise ValueError(f"no capital known for {country!r}")
    return _CAPITALS[key]


DEFAULT_TOOLS: tuple[BaseTool, ...] = (calculator, convert_units, capital_of)


@dataclass
class ToolRegistry:
    """Name -> tool. Functions are wrapped with LangChain's `tool` (typed, with a docstring)."""

    tools: dict[str, BaseTool] = field(default_factory=dict)

    @classmethod
    def of(cls, tools: Iterable[BaseTool | Callable[..., Any]]) -> ToolRegistry:
        registry = cls()
        for item in tools:
            registry.register(item)
        return registry

    def register(self, item: BaseTool | Callable[..., Any]) -> BaseTool:
        wrapped = item if isinstance(item, BaseTool) else tool(item)
        if wrapped.name in self.tools:
            raise ValueError(f"a tool named {wrapped.name!r} is registered already")
        self.tools[wrapped.name] = wrapped
        return wrapped

    def get(self, name: str) -> BaseTool | None:
        return self.tools.get(name)

    def openai_tools(self) -> list[dict[str, Any]]:
        return [convert_to_openai_tool(t) for t in self.tools.values()]

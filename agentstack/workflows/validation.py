"""Check a run's input against the graph's input schema before the run starts, so a
client mistake is a 422 naming the field rather than a failed run.

LangGraph itself validates little: TypedDict states accept anything and message
fields take many shapes (dicts with `role`, tuples, strings). The rules here:

- a pydantic input schema validates as that model;
- otherwise (TypedDict, dataclass, annotated class) the input must be an object,
  unknown keys are refused, keys required by a *separate* input schema must be there
  (a graph whose input is its whole state needs none of them), and each given value
  must fit its field's type; message fields accept whatever LangChain converts to
  messages.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, get_args, get_origin, get_type_hints

import typing_extensions
from langchain_core.messages import BaseMessage, convert_to_messages
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.errors import PydanticSchemaGenerationError

from agentstack.workflows.errors import InvalidRunInput


_QUALIFIERS = {
    q for module in (typing, typing_extensions) for name in ("Required", "NotRequired", "ReadOnly")
    if (q := getattr(module, name, None)) is not None
}


def _strip_annotated(tp: Any) -> Any:
    """`Annotated[T, reducer]` and `NotRequired[T]` to `T`; constraints such as
    `Field(ge=1)` stay, reducers (callables) go."""
    while get_origin(tp) in _QUALIFIERS:
        tp = get_args(tp)[0]
    if get_origin(tp) is typing.Annotated:
        inner, *extras = get_args(tp)
        kept = [m for m in extras if not callable(m)]
        inner = _strip_annotated(inner)
        return typing.Annotated[(inner, *kept)] if kept else inner
    return tp


def _mentions_messages(tp: Any) -> bool:
    tp = _strip_annotated(tp)
    if isinstance(tp, type) and issubclass(tp, BaseMessage):
        return True
    return any(_mentions_messages(arg) for arg in get_args(tp))


def _required_keys(schema: type, hints: dict[str, Any]) -> frozenset[str]:
    """Keys a TypedDict or dataclass input needs. Read from the resolved hints, because
    `__required_keys__` is wrong when the module uses string annotations."""
    if typing_extensions.is_typeddict(schema):
        total = getattr(schema, "__total__", True)
        required = {getattr(typing, "Required"), typing_extensions.Required}
        optional = {getattr(typing, "NotRequired"), typing_extensions.NotRequired}
        return frozenset(
            name for name, tp in hints.items()
            if get_origin(tp) in required or (total and get_origin(tp) not in optional)
        )
    if dataclasses.is_dataclass(schema):
        return frozenset(
            f.name for f in dataclasses.fields(schema)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        )
    return frozenset()


def _first_error(e: ValidationError, prefix: str) -> tuple[str, str]:
    first = e.errors()[0]
    loc = ".".join(str(p) for p in (prefix, *first.get("loc", ())) if p != "")
    return loc, first.get("msg", "invalid value")


@dataclass
class InputValidator:
    """Validates inputs for one graph; built once when the graph is registered."""

    schema: Any
    enforce_required: bool
    _fields: dict[str, Any] = field(init=False, default_factory=dict)
    _adapters: dict[str, TypeAdapter[Any] | None] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.schema, type) and not issubclass(self.schema, BaseModel):
            try:
                self._fields = get_type_hints(self.schema, include_extras=True)
            except (NameError, TypeError):
                self._fields = {}

    def _adapter(self, name: str) -> TypeAdapter[Any] | None:
        if name not in self._adapters:
            try:
                self._adapters[name] = TypeAdapter(_strip_annotated(self._fields[name]))
            except (PydanticSchemaGenerationError, TypeError):
                self._adapters[name] = None
        return self._adapters[name]

    def validate(self, value: Any) -> None:
        """Raise `InvalidRunInput` naming the first field that does not fit."""
        if value is None:
            return
        if isinstance(self.schema, type) and issubclass(self.schema, BaseModel):
            try:
                self.schema.model_validate(value)
            except ValidationError as e:
                raise InvalidRunInput(*_first_error(e, "input")) from e
            return
        if not self._fields:
            return
        if not isinstance(value, Mapping):
            raise InvalidRunInput("input", f"must be an object with keys {sorted(self._fields)}")
        missing = sorted(_required_keys(self.schema, self._fields) - set(value)) if self.enforce_required else []
        if missing:
            raise InvalidRunInput(f"input.{missing[0]}", "field required")
        for name, item in value.items():
            if name not in self._fields:
                raise InvalidRunInput(f"input.{name}", f"unknown field; the graph takes {sorted(self._fields)}")
            self._check(name, item)

    def _check(self, name: str, item: Any) -> None:
        if _mentions_messages(self._fields[name]):
            try:
                convert_to_messages(item if isinstance(item, list) else [item])
            except (ValueError, TypeError, NotImplementedError) as e:
                reason = str(e).splitlines()[0]
                raise InvalidRunInput(f"input.{name}", f"not a message or list of messages: {reason}") from e
            return
        adapter = self._adapter(name)
        if adapter is None:
            return
        try:
            adapter.validate_python(item)
        except ValidationError as e:
            raise InvalidRunInput(*_first_error(e, f"input.{name}")) from e


def validator_for(graph: Any) -> InputValidator:
    """The validator of a compiled graph: its builder's input schema, if it has one."""
    builder = getattr(graph, "builder", None)
    schema = getattr(builder, "input_schema", None)
    state = getattr(builder, "state_schema", None)
    return InputValidator(schema=schema, enforce_required=schema is not None and schema is not state)

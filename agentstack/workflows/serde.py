"""JSON for what graphs put in their state and streams: LangChain messages, interrupts,
commands, pydantic models and dataclasses, in the shapes LangGraph clients read back."""

from __future__ import annotations

import base64
import dataclasses
import json
from datetime import date, datetime
from enum import Enum
from typing import Any
from uuid import UUID

from langgraph.types import Interrupt, Send
from pydantic import BaseModel


def _default(obj: Any) -> Any:
    if isinstance(obj, Interrupt):
        # RemoteGraph rebuilds these with Interrupt(**data).
        return {"value": obj.value, "id": obj.id}
    if isinstance(obj, BaseModel):
        return obj.model_dump()
    if isinstance(obj, Send):
        return {"node": obj.node, "arg": obj.arg}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    if isinstance(obj, (datetime, date)):
        return obj.isoformat()
    if isinstance(obj, UUID):
        return str(obj)
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, bytes):
        return base64.b64encode(obj).decode()
    if isinstance(obj, BaseException):
        return {"error": type(obj).__name__, "message": str(obj)}
    return repr(obj)


def dumps(obj: Any) -> str:
    """Compact JSON; anything JSON has no type for is written in its client-facing shape."""
    return json.dumps(obj, default=_default, separators=(",", ":"), ensure_ascii=False)


def to_jsonable(obj: Any) -> Any:
    """The same conversion, as plain Python data."""
    return json.loads(dumps(obj))

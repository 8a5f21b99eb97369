"""Which graphs the server runs: the built-in ones plus a users' registry file.

The registry file has the `langgraph.json` shape that LangGraph's own tooling uses:

    {"graphs": {"my_agent": "./my_agent.py:graph", "other": "package.module:make_graph"}}

An entry is a file path (relative to the registry file) or an importable module (the
registry file's directory is put on `sys.path`), then `:` and an attribute: a
`StateGraph`, a compiled graph, or a function of no arguments returning either. Every
graph is compiled (or copied) with the server's Redis checkpointer, and gets one
assistant whose id is derived from the graph id the way LangGraph's server does, so
clients may name either.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import re
import sys
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import StateGraph
from langgraph.pregel import Pregel
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from agentstack.workflows.errors import GraphRegistryError, WorkflowNotFound
from agentstack.workflows.validation import InputValidator, validator_for

logger = logging.getLogger(__name__)

# LangGraph's server derives a graph's default assistant id as uuid5(this, graph_id).
ASSISTANT_NAMESPACE = uuid.UUID("6ba7b821-9dad-11d1-80b4-00c04fd430c8")
GRAPH_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
BUILTIN_GRAPHS: dict[str, str] = {
    "tool_agent": "graphs.tool_agent:graph",
    "plan_act_reflect": "graphs.plan_act_reflect:graph",
}


class GraphsFile(BaseModel):
    """The part of a `langgraph.json` the server reads; other keys are ignored."""

    model_config = ConfigDict(extra="ignore")

    graphs: dict[str, str] = Field(default_factory=dict)


def assistant_id_for(graph_id: str) -> str:
    return str(uuid.uuid5(ASSISTANT_NAMESPACE, graph_id))


@dataclass
class GraphEntry:
    """One served graph and its default assistant."""

    graph_id: str
    source: str
    graph: Pregel
    validator: InputValidator
    assistant_id: str = ""
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())

    def __post_init__(self) -> None:
        self.assistant_id = self.assistant_id or assistant_id_for(self.graph_id)

    def assistant(self) -> dict[str, Any]:
        """The assistant object in the LangGraph API's shape."""
        return {
            "assistant_id": self.assistant_id,
            "graph_id": self.graph_id,
            "config": {},
            "context": {},
            "created_at": self.created_at,
            "updated_at": self.created_at,
            "metadata": {"created_by": "system", "source": self.source},
            "version": 1,
            "name": self.graph_id,
            "description": None,
        }

    def schemas(self) -> dict[str, Any]:
        graph = self.graph
        state_schema: dict[str, Any] | None = None
        builder = getattr(graph, "builder", None)
        if builder is not None:
            try:
                state_schema = TypeAdapter(builder.state_schema).json_schema()
            except Exception as e:  # a schema pydantic cannot describe is reported as absent
                logger.debug("no JSON schema for the state of %s: %s", self.graph_id, e)
        return {
            "graph_id": self.graph_id,
            "input_schema": graph.get_input_jsonschema(),
            "output_schema": graph.get_output_jsonschema(),
            "state_schema": state_schema,
            "config_schema": None,
            "context_schema": graph.get_context_jsonschema(),
        }


def _load_module(spec: str, base_dir: Path, graph_id: str) -> Any:
    if spec.endswith(".py") or "/" in spec:
        path = (base_dir / spec).resolve()
        if not path.is_file():
            raise GraphRegistryError(f"graph {graph_id!r}: no file {path}")
        name = f"agentstack_user_graphs.{re.sub(r'[^A-Za-z0-9_]', '_', graph_id)}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise GraphRegistryError(f"graph {graph_id!r}: cannot load {path}")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        module_spec.loader.exec_module(module)
        return module
    if str(base_dir) not in sys.path:
        sys.path.insert(0, str(base_dir))
    return importlib.import_module(spec)


def _resolve(reference: str, base_dir: Path, graph_id: str) -> Any:
    module_part, sep, attribute = reference.rpartition(":")
    if not sep or not module_part or not attribute:
        raise GraphRegistryError(f"graph {graph_id!r}: {reference!r} is not 'module:attribute' or 'file.py:attribute'")
    try:
        target: Any = _load_module(module_part, base_dir, graph_id)
        for part in attribute.split("."):
            target = getattr(target, part)
    except GraphRegistryError:
        raise
    except Exception as e:
        raise GraphRegistryError(f"graph {graph_id!r}: cannot load {reference!r}: {type(e).__name__}: {e}") from e
    return target


def _compile(target: Any, checkpointer: BaseCheckpointSaver[Any], graph_id: str) -> Pregel:
    if callable(target) and not isinstance(target, (StateGraph, Pregel)):
        try:
            target = target()
        except Exception as e:
            raise GraphRegistryError(f"graph {graph_id!r}: its factory failed: {type(e).__name__}: {e}") from e
    if isinstance(target, StateGraph):
        return target.compile(checkpointer=checkpointer, name=graph_id)
    if isinstance(target, Pregel):
        return target.copy(update={"checkpointer": checkpointer})
    raise GraphRegistryError(
        f"graph {graph_id!r} is a {type(target).__name__}, not a StateGraph, a compiled graph "
        "or a function returning one"
    )


@dataclass
class GraphRegistry:
    """Graph id -> entry; lookups accept a graph id or an assistant id."""

    entries: dict[str, GraphEntry] = field(default_factory=dict)

    @classmethod
    def load(cls, checkpointer: BaseCheckpointSaver[Any], graphs_file: Path | None = None) -> GraphRegistry:
        registry = cls()
        for graph_id, reference in BUILTIN_GRAPHS.items():
            registry.add(graph_id, reference, checkpointer, base_dir=Path.cwd())
        if graphs_file is not None:
            try:
                parsed = GraphsFile.model_validate(json.loads(graphs_file.read_text()))
            except (OSError, ValueError, ValidationError) as e:
                raise GraphRegistryError(f"invalid graphs file {graphs_file}: {e}") from e
            for graph_id, reference in parsed.graphs.items():
                registry.add(graph_id, reference, checkpointer, base_dir=graphs_file.resolve().parent)
        logger.info("serving graphs: %s", ", ".join(registry.entries))
        return registry

    def add(self, graph_id: str, reference: str, checkpointer: BaseCheckpointSaver[Any], *, base_dir: Path) -> GraphEntry:
        if not re.match(GRAPH_ID_PATTERN, graph_id):
            raise GraphRegistryError(f"invalid graph id {graph_id!r}")
        if graph_id in self.entries:
            raise GraphRegistryError(f"graph id {graph_id!r} is registered twice")
        graph = _compile(_resolve(reference, base_dir, graph_id), checkpointer, graph_id)
        entry = GraphEntry(graph_id=graph_id, source=reference, graph=graph, validator=validator_for(graph))
        self.entries[graph_id] = entry
        return entry

    def get(self, assistant_or_graph_id: str) -> GraphEntry:
        if assistant_or_graph_id in self.entries:
            return self.entries[assistant_or_graph_id]
        for entry in self.entries.values():
            if entry.assistant_id == assistant_or_graph_id:
                return entry
        raise WorkflowNotFound("assistant", assistant_or_graph_id)

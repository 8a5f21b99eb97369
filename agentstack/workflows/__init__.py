"""LangGraph workflows on the roles: graph registry, threads, runs and Redis checkpoints,
behind the LangGraph-Platform-compatible API in `agentstack.api.langgraph_routes`."""

from agentstack.workflows.errors import (
    GraphRegistryError,
    InvalidRunInput,
    ThreadBusy,
    WorkflowConflict,
    WorkflowError,
    WorkflowNotFound,
    WorkflowRequestError,
)
from agentstack.workflows.manager import RunHandle, RunSpec, WorkflowManager
from agentstack.workflows.registry import BUILTIN_GRAPHS, GraphEntry, GraphRegistry, assistant_id_for

__all__ = [
    "BUILTIN_GRAPHS",
    "GraphEntry",
    "GraphRegistry",
    "GraphRegistryError",
    "InvalidRunInput",
    "RunHandle",
    "RunSpec",
    "ThreadBusy",
    "WorkflowConflict",
    "WorkflowError",
    "WorkflowManager",
    "WorkflowNotFound",
    "WorkflowRequestError",
    "assistant_id_for",
]

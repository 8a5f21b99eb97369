"""Errors of the workflow layer; the API turns each into its HTTP status.

    WorkflowError                  base
     ├── WorkflowNotFound          an assistant, thread or run that does not exist (404)
     ├── InvalidRunInput           run input that does not fit the graph's input schema (422)
     ├── WorkflowConflict          a thread id that exists already (409)
     │    └── ThreadBusy           a thread already running a run, multitask_strategy=reject (409)
     ├── WorkflowRequestError      a request the workflow layer cannot carry out (400)
     └── GraphRegistryError        a registry entry that does not load (at start)
"""

from __future__ import annotations


class WorkflowError(Exception):
    """Base of the workflow layer's errors."""


class WorkflowNotFound(WorkflowError):
    def __init__(self, kind: str, ident: str) -> None:
        super().__init__(f"{kind} {ident!r} not found")
        self.kind = kind
        self.ident = ident


class InvalidRunInput(WorkflowError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class WorkflowConflict(WorkflowError):
    """The request clashes with the current state of a thread."""


class ThreadBusy(WorkflowConflict):
    def __init__(self, thread_id: str) -> None:
        super().__init__(
            f"thread {thread_id!r} is busy with another run; "
            "pass multitask_strategy=enqueue, interrupt or rollback to run anyway"
        )


class WorkflowRequestError(WorkflowError):
    """A well-formed request the workflow layer refuses (e.g. state of a thread with no graph)."""


class GraphRegistryError(WorkflowError):
    """The graphs registry file or one of its entries is invalid."""

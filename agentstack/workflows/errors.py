"""Errors of the workflow layer, each one of agentstack's request errors (its HTTP status
follows from that).

    WorkflowError                  base
     ├── WorkflowNotFound          an assistant, thread or run that does not exist (NotFound)
     ├── InvalidRunInput           run input that does not fit the graph's input schema (UnprocessableEntity)
     ├── WorkflowConflict          a thread id that exists already (Conflict)
     │    └── ThreadBusy           a thread already running a run, multitask_strategy=reject
     └── WorkflowRequestError      a request the workflow layer cannot carry out (InvalidRequest)

`GraphRegistryError` is a configuration error found at start, not a request error.
"""

from __future__ import annotations

from agentstack.errors import AgentstackError, Conflict, InvalidRequest, NotFound, UnprocessableEntity


class WorkflowError(AgentstackError):
    """Base of the workflow layer's request errors."""


class WorkflowNotFound(WorkflowError, NotFound):
    def __init__(self, kind: str, ident: str) -> None:
        super().__init__(f"{kind} {ident!r} not found", param=f"{kind}_id")
        self.kind = kind
        self.ident = ident


class InvalidRunInput(WorkflowError, UnprocessableEntity):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", param=field)
        self.field = field


class WorkflowConflict(WorkflowError, Conflict):
    """The request clashes with the current state of a thread."""


class ThreadBusy(WorkflowConflict):
    def __init__(self, thread_id: str) -> None:
        super().__init__(
            f"thread {thread_id!r} is busy with another run; "
            "pass multitask_strategy=enqueue, interrupt or rollback to run anyway"
        )


class WorkflowRequestError(WorkflowError, InvalidRequest):
    """A well-formed request the workflow layer refuses (e.g. state of a thread with no graph)."""


class GraphRegistryError(ValueError):
    """The graphs registry file or one of its entries is invalid."""

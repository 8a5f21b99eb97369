"""Thread ids per tenant.

With API keys on, the thread id a caller names is stored as `<scope>~<id>`, the scope
being a digest of the caller's key name. Two keys may then use one id, and neither can
learn whether the other did: creating a thread with an id another tenant holds succeeds
as if the id were free, and reading it finds the caller's own thread or nothing. Graph
runs, checkpoints and records all use the scoped id; the LangGraph routes remove the
caller's scope from everything they send back, so callers only ever see their own ids.
Without keys (one tenant) ids are stored as given. A caller's id always gets the caller's
scope in front, so no caller can name another scope's stored id; a thread stored under a
scoped id is used only by its owner.

Threads created before ids were scoped keep their stored id and are still found by
their owner.
"""

from __future__ import annotations

import hashlib

from fastapi import Request, Response
from starlette.responses import StreamingResponse

from agentstack.auth import current_principal
from agentstack.workflows import WorkflowNotFound

OWNER = "owner"
SEPARATOR = "~"


def owner_of(request: Request) -> str | None:
    """The calling key's name when keys are on; None means one tenant, no ownership."""
    return current_principal.get().name if request.app.state.keyring.enabled else None


def scope_of(request: Request) -> str:
    owner = owner_of(request)
    if owner is None:
        return ""
    return hashlib.sha256(b"agentstack-thread-scope\x00" + owner.encode()).hexdigest()[:16] + SEPARATOR


async def scoped_thread_id(request: Request, thread_id: str) -> str:
    """The stored id of the caller's thread `thread_id` (the path's or the body's)."""
    scope = scope_of(request)
    if not scope:
        return thread_id
    store = request.app.state.workflows.store
    owner = owner_of(request)
    scoped = scope + thread_id
    found = await store.get_thread(scoped)
    if found is not None and found.metadata.get(OWNER) != owner:
        # Only an id planted before ids were scoped (or while keys were off) gets here.
        raise WorkflowNotFound("thread", thread_id)
    if found is None:
        legacy = await store.get_thread(thread_id)
        if legacy is not None and legacy.metadata.get(OWNER) == owner:
            return thread_id
    return scoped


def unscoped(response: Response, scope: str) -> Response:
    """A JSON response with the caller's scope removed from its body and headers (the
    run streams remove it from each event themselves)."""
    if not scope:
        return response
    if "content-location" in response.headers:
        response.headers["content-location"] = response.headers["content-location"].replace(scope, "")
    if isinstance(response, StreamingResponse) or not hasattr(response, "body"):
        return response
    body = bytes(response.body)
    if scope.encode() in body:
        response.body = body.replace(scope.encode(), b"")
        response.headers["content-length"] = str(len(response.body))
    return response

"""Operational endpoints: run-time adapters (vLLM's shapes, admin keys only), and the
public health, readiness and metrics routes."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from agentstack.api.openai_routes import service_of
from agentstack.api.schemas import LoadLoraAdapterRequest, UnloadLoraAdapterRequest
from agentstack.api.security import require_admin

router = APIRouter()


def plain_text(description: str) -> dict[int | str, dict[str, object]]:
    """A 200 documented as text. vLLM answers the adapter routes in plain text but their
    errors in the JSON error body, so the route's errors stay documented as JSON."""
    return {200: {"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}}}


@router.post("/v1/load_lora_adapter", responses=plain_text("Success message, as vLLM words it"),
             dependencies=[Depends(require_admin)])
async def load_lora_adapter(body: LoadLoraAdapterRequest, request: Request) -> PlainTextResponse:
    await service_of(request).load_adapter(body.lora_name, body.lora_path, inplace=body.load_inplace)
    return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' added successfully.")


@router.post("/v1/unload_lora_adapter", responses=plain_text("Success message, as vLLM words it"),
             dependencies=[Depends(require_admin)])
async def unload_lora_adapter(body: UnloadLoraAdapterRequest, request: Request) -> PlainTextResponse:
    await service_of(request).unload_adapter(body.lora_name)
    return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' removed successfully.")


@router.get("/ok")
async def ok() -> dict[str, bool]:
    """LangGraph server's health route, which its SDK calls."""
    return {"ok": True}


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers. Readiness of the parts is `/readyz`."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    readiness = await service_of(request).readiness()
    status = "not ready" if not readiness.ready else "degraded" if readiness.degraded else "ready"
    return JSONResponse({"status": status, "checks": readiness.checks, "degraded": readiness.degraded},
                        status_code=200 if readiness.ready else 503)


@router.get("/metrics", responses=plain_text("Prometheus text exposition format"))
async def metrics(request: Request) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(service_of(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)

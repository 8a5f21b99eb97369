"""HTTP API: OpenAI-compatible endpoints plus adapter management, health and metrics."""

from agentstack.api.app import create_app

__all__ = ["create_app"]

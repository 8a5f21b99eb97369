"""agentstack: multi-agent LLM workflows on one vLLM backbone, one LoRA adapter per role."""

from agentstack.config import Settings
from agentstack.service import Service

__all__ = ["Service", "Settings"]
__version__ = "0.1.0"

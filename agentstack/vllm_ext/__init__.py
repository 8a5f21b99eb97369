"""Changes to vLLM that this package installs through vLLM's plugin entry points.

Each module here is small, version-guarded and shaped as a proposed upstream change
(docs/VLLM_PATCHES.md): vLLM runs the entry points in every one of its processes, so an
engine started by agentstack, by ``vllm serve`` or by ``vllm.LLM`` in the same
environment gets the same behaviour.
"""

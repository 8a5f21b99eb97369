"""LangGraph workflows on the roles. The server serves `tool_agent` and
`plan_act_reflect` (see `agentstack.workflows.registry.BUILTIN_GRAPHS`) beside users'
graphs from a registry file; the builders make variants on other tools or roles."""

from graphs.plan_act_reflect import build_plan_act_reflect
from graphs.tool_agent import build_tool_agent
from graphs.tools import DEFAULT_TOOLS, ToolRegistry

__all__ = ["DEFAULT_TOOLS", "ToolRegistry", "build_plan_act_reflect", "build_tool_agent"]

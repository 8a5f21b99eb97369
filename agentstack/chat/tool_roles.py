"""The tool-calling workflow on the engine: selector, then arguments once per chosen
function, ending in OpenAI `tool_calls`; and the one-adapter `single` pass it is
compared with. Prompts and parsing live in `agentstack.chat.tool_prompts`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from agentstack.chat.call_grammar import call_lines_grammar, selection_grammar
from agentstack.chat.requests import ToolCall, ToolCallFunction
from agentstack.chat.tool_prompts import (
    Call,
    arguments_messages,
    function_spec,
    parse_calls,
    parse_selection,
    selector_messages,
    single_messages,
)
from agentstack.chat.tool_shortlist import SHORTLIST_SIZE, shortlisted
from agentstack.service import Completion

SELECTOR_ROLE = "selector"
ARGUMENTS_ROLE = "arguments"
SINGLE_ROLE = "single"
SELECTOR_MAX_TOKENS = 48
CALLS_MAX_TOKENS = 320


class Completer(Protocol):
    """Greedy completion of a chat by a role, held to `grammar` (xgrammar EBNF) when one is
    given; `Service.complete` is the real one."""

    async def complete(self, role: str, messages: list[dict[str, str]], max_tokens: int,
                       *, grammar: str | None = None) -> Completion: ...


@dataclass(slots=True)
class ToolCallOutcome:
    calls: list[Call]
    selected: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    generated_tokens: int = 0
    steps: list[tuple[str, str]] = field(default_factory=list)

    def add(self, role: str, completion: Completion) -> None:
        self.prompt_tokens += completion.prompt_tokens
        self.generated_tokens += completion.generated_tokens
        self.steps.append((role, completion.text))

    def openai_tool_calls(self) -> list[ToolCall]:
        return [
            ToolCall(function=ToolCallFunction(name=c["name"], arguments=json.dumps(c["arguments"])))
            for c in self.calls
        ]


async def select_and_fill(
    completer: Completer, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]],
    *, named: str | None = None, guided: bool = True, shortlist: int | None = SHORTLIST_SIZE,
) -> ToolCallOutcome:
    """Selector names the functions (or none); one arguments pass per name runs
    concurrently. A caller that `named` the function skips the selector. `guided` holds
    each role to its answer format over these tools (`call_grammar`). Both roles read the
    same `shortlist` of a longer toolbox (`tool_shortlist`; None: the whole listing)."""
    tools = shortlisted(messages, tools, shortlist, keep=named)
    outcome = ToolCallOutcome(calls=[])
    if named is not None:
        outcome.selected = [named]
    else:
        selection = await completer.complete(SELECTOR_ROLE, selector_messages(messages, tools), SELECTOR_MAX_TOKENS,
                                             grammar=selection_grammar(tools) if guided else None)
        outcome.add(SELECTOR_ROLE, selection)
        outcome.selected = parse_selection(selection.text, tools)
    by_name = {str(function_spec(t)["name"]): t for t in tools}
    fills = await asyncio.gather(*(
        completer.complete(ARGUMENTS_ROLE, arguments_messages(messages, tools, name), CALLS_MAX_TOKENS,
                           grammar=call_lines_grammar([by_name[name]], allow_none=False) if guided else None)
        for name in outcome.selected
    ))
    for name, fill in zip(outcome.selected, fills):
        outcome.add(ARGUMENTS_ROLE, fill)
        outcome.calls += [c for c in parse_calls(fill.text, tools) if c["name"] == name]
    return outcome


async def single_pass(
    completer: Completer, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]],
    *, guided: bool = True, shortlist: int | None = SHORTLIST_SIZE,
) -> ToolCallOutcome:
    tools = shortlisted(messages, tools, shortlist)
    completion = await completer.complete(SINGLE_ROLE, single_messages(messages, tools), CALLS_MAX_TOKENS,
                                          grammar=call_lines_grammar(tools, allow_none=True) if guided else None)
    outcome = ToolCallOutcome(calls=parse_calls(completion.text, tools))
    outcome.add(SINGLE_ROLE, completion)
    outcome.selected = list(dict.fromkeys(c["name"] for c in outcome.calls))
    return outcome

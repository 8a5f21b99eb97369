"""The workload `agentstack bench cache` serves: the tool agent on BFCL dev prompts.

Each prompt's shared context is a toolbox of 1–2k tokens — the entry's own functions among
functions of other entries, as an agent with a larger toolbox sees it — then the user's
question. Prompts take the four trained categories' dev splits in turn, `multiple` first
(200 prompts at most, so an accuracy comparison can rest on hundreds of checks). Three
roles read it: the ``selector`` (first, so it computes the context), the
``arguments`` writer once per chosen function, and the one-pass ``single`` writer. The
agent's calls and single's calls are scored by bfcl-eval's checker against the entry's
ground truth.
"""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentstack.engine import chat_prompt_ids
from agentstack.offline.bfcl.checker import check
from agentstack.offline.bfcl.dataset import TRAIN_CATEGORIES, BfclExample, examples
from agentstack.service import Completion
from agentstack.chat.tool_roles import SELECTOR_ROLE, select_and_fill, single_pass
from agentstack.chat.tool_prompts import (
    arguments_messages,
    calls_text,
    function_names,
    selector_messages,
    single_messages,
)
from cache.index import BlockHash, PrefixHasher

if TYPE_CHECKING:
    from agentstack.engine import Adapter, Engine

BFCL_ROLES = ("selector", "arguments", "single")
"""Writer first: the selector computes the shared context, the others read it."""
MIN_CONTEXT_TOKENS = 1024
MAX_CONTEXT_TOKENS = 1600
"""Leaves room in a 2048-token context for the longest answer the agent writes."""
TOP_LOGPROBS = 20
"""Top next-token log-probabilities recorded for each request's first token."""


@dataclass(frozen=True, slots=True)
class ToolboxPrompt:
    example: BfclExample
    tools: list[dict[str, Any]]


WORKLOAD_CATEGORIES = ("multiple", *(c for c in TRAIN_CATEGORIES if c != "multiple"))


def dev_prompts() -> list[BfclExample]:
    """The trained categories' dev entries taken in turn, so any first N mix them."""
    splits = [examples(c, "dev") for c in WORKLOAD_CATEGORIES]
    return [s[i] for i in range(max(map(len, splits))) for s in splits if i < len(s)]


def toolbox_prompts(count: int, tokenizer: Any, min_tokens: int = MIN_CONTEXT_TOKENS) -> list[ToolboxPrompt]:
    """The first ``count`` dev entries (`dev_prompts`), each with distractor functions
    from the entries after it until its context holds ``min_tokens`` (an entry that would
    take it past ``MAX_CONTEXT_TOKENS`` is passed over); the entry's own functions sit at a
    position drawn from its id, so no list order gives them away. ``min_tokens`` 0 keeps
    each entry's own functions only (the adapters' training shape)."""
    pool = dev_prompts()
    if not 1 <= count <= len(pool):
        raise ValueError(f"prompts must be between 1 and {len(pool)}")
    prompts = []
    for i, example in enumerate(pool[:count]):
        own = list(example.functions)
        distractors: list[dict[str, Any]] = []
        names = set(function_names(own))
        tokens = _context_tokens(tokenizer, example, own)
        for other in pool[i + 1 :] + pool[:i]:
            if tokens >= min_tokens:
                break
            fresh = [f for f in other.functions if f["name"] not in names]
            grown = _context_tokens(tokenizer, example, own + distractors + fresh)
            if grown > MAX_CONTEXT_TOKENS:
                continue
            distractors += fresh
            names.update(function_names(fresh))
            tokens = grown
        at = random.Random(example.id).randint(0, len(distractors))
        tools = distractors[:at] + own + distractors[at:]
        if _context_tokens(tokenizer, example, tools) > MAX_CONTEXT_TOKENS:
            raise ValueError(f"{example.id}: toolbox context over {MAX_CONTEXT_TOKENS} tokens")
        prompts.append(ToolboxPrompt(example, tools))
    return prompts


def _context_tokens(tokenizer: Any, example: BfclExample, tools: list[dict[str, Any]]) -> int:
    return len(chat_prompt_ids(tokenizer, selector_messages(example.messages, tools)))


@dataclass(slots=True)
class RequestRecord:
    """One engine request of the workload, as the bench compares them across modes."""

    round: int
    role: str
    prompt_key: str
    """Digest of the prompt ids: modes are compared only on identical prompts."""
    prompt_tokens: int
    cached_tokens: int
    generated_tokens: int
    ttft_s: float
    first_token: int
    logprobs: dict[str, float]
    sent_s: float = 0.0
    done_s: float = 0.0
    """When the request was sent and answered (the process's monotonic clock): whether two
    requests were in the engine at the same time."""


def _digest(ids: list[int]) -> str:
    return hashlib.blake2b(str(ids).encode(), digest_size=16).hexdigest()


@dataclass(slots=True)
class RecordingCompleter:
    """The tool agent's `Completer` on the bench engine: greedy, one cache salt per round
    (per role too when ``isolate``, so no role can reuse another's prefix), recording what
    each request cost and which full blocks a shared cache would store for it."""

    engine: Engine
    adapters: dict[str, Adapter]
    round: int
    block_size: int
    isolate: bool = False
    records: list[RequestRecord] = field(default_factory=list)
    blocks: set[BlockHash] = field(default_factory=set)
    """The cache's key of every full prompt block: salt and tokens, not the adapter."""

    async def complete(self, role: str, messages: list[dict[str, str]], max_tokens: int,
                       *, grammar: str | None = None) -> Completion:
        ids = self.engine.chat_prompt(messages)
        text, generated = await self.request(role, ids, max_tokens, grammar=grammar)
        return Completion(text, len(ids), generated)

    async def request(self, role: str, ids: list[int], max_tokens: int,
                      *, grammar: str | None = None) -> tuple[str, int]:
        """Greedy completion of prompt ids; returns the text and the tokens generated."""
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        sampling = SamplingParams(temperature=0.0, max_tokens=max_tokens, logprobs=TOP_LOGPROBS,
                                  structured_outputs=StructuredOutputsParams(grammar=grammar) if grammar else None)
        salt = f"bench-{self.round}" + (f"-{role}" if self.isolate else "")
        started = time.perf_counter()
        first_at = None
        final = None
        async for output in self.engine.generate(
            ids, sampling, request_id=f"bench-{self.round}-{role}-{len(self.records)}",
            adapter=self.adapters[role], cache_salt=salt,
        ):
            first_at = first_at or time.perf_counter()
            final = output
        assert final is not None and first_at is not None
        out = final.outputs[0]
        top = out.logprobs[0] if out.logprobs else {}
        self.records.append(RequestRecord(
            round=self.round,
            role=role,
            prompt_key=_digest(ids),
            prompt_tokens=len(ids),
            cached_tokens=final.num_cached_tokens or 0,
            generated_tokens=len(out.token_ids),
            ttft_s=first_at - started,
            first_token=out.token_ids[0],
            logprobs={str(t): float(lp.logprob) for t, lp in top.items()},
            sent_s=started,
            done_s=time.perf_counter(),
        ))
        self.blocks.update(PrefixHasher(self.block_size, "bench").block_hashes(ids, salt=salt))
        return out.text, len(out.token_ids)


@dataclass(slots=True)
class PromptOutcome:
    id: str
    agent_correct: bool
    single_correct: bool
    selected: list[str]


async def run_prompt(completer: RecordingCompleter, prompt: ToolboxPrompt) -> PromptOutcome:
    """The agent (selector, then arguments per chosen function), then single, on one prompt.
    Both read the whole toolbox, not a shortlist of it: the bench measures how the cache
    modes share a long context."""
    messages = prompt.example.messages
    agent = await select_and_fill(completer, messages, prompt.tools, shortlist=None)
    single = await single_pass(completer, messages, prompt.tools, shortlist=None)
    return PromptOutcome(
        id=prompt.example.id,
        agent_correct=check(prompt.example, agent.calls).correct,
        single_correct=check(prompt.example, single.calls).correct,
        selected=agent.selected,
    )


@dataclass(frozen=True, slots=True)
class ReferenceCase:
    """For the pure-PyTorch comparison: the context the writer computes, and for each reader
    the rest of its prompt followed by the ground-truth answer it should write."""

    writer: str
    context: list[int]
    tails: dict[str, list[int]]


def reference_case(prompt: ToolboxPrompt, tokenizer: Any) -> ReferenceCase:
    example = prompt.example
    calls = example.reference_calls()
    first = [c for c in calls if c["name"] == calls[0]["name"]]

    def answer(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    writer = chat_prompt_ids(tokenizer, selector_messages(example.messages, prompt.tools))
    readers = {
        "arguments": chat_prompt_ids(tokenizer, arguments_messages(example.messages, prompt.tools, calls[0]["name"]))
        + answer(calls_text(first)),
        "single": chat_prompt_ids(tokenizer, single_messages(example.messages, prompt.tools)) + answer(calls_text(calls)),
    }
    shared = min(_common_prefix(writer, ids) for ids in readers.values())
    # A reader always computes its prompt's last token itself, as vLLM does.
    shared = min(shared, len(writer) - 1)
    return ReferenceCase(SELECTOR_ROLE, writer[:shared], {role: ids[shared:] for role, ids in readers.items()})


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n

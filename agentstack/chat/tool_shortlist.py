"""A long toolbox cut to the functions a request is about, before any tool role reads it.

The tool roles read a listing of a few functions well and one of fifteen or twenty poorly:
on BFCL dev entries listed among other entries' functions up to 1,500 tokens, the
selector named another function in most of its misses (docs/TOOL_ROLES.md). Retrieval
first, then choice, is how large toolboxes are served elsewhere too (Gorilla's retriever,
ToolLLM's API retriever). Here the retrieval is BM25 over each function's listing block
(name split into words, description, parameters) against the request's own turns. On
those toolboxes the top three held every function the reference calls for all of the
first 50 dev entries of `simple_python`, `multiple` and `parallel` and 49 of
`live_simple` (the one missed: "multiplication" against `multiply`).

The shortlist keeps the caller's order, so the roles see the listing as it was given,
only shorter; and every role of one request reads the same shortlist, so the
shared-context cache still shares it. A request with no word in common with any function
(another language, say) keeps the whole listing: scores of zero rank nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import Stemmer
from rank_bm25 import BM25Okapi

from agentstack.chat.tool_prompts import current_exchange, function_spec, plain_turns, render_function

LONG_LISTING = 6
"""Listings of more functions than this are shortlisted; shorter ones are read as given
(the roles read BFCL's own listings of one to four functions well)."""

SHORTLIST_SIZE = 3
"""Functions a long listing is cut to. Measured on `eval bfcl --toolbox 1500` (dev, roles,
of 200): 58 with six, 65 with four, 73 with three; every extra distractor costs the
selector more than the lost recall of requests for four functions (`parallel_multiple`:
all its functions in the top three for 39 of 50, in the top four for 48; 7 right either way)."""

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_WORD = re.compile(r"[^\W_]{2,}")
_STOPWORDS = frozenset(
    "a an and are as at be by can could do for from get give has have how i in is it its me my "
    "of on or please show tell that the their them then there these this to use was we what when "
    "where which who will with would you your".split())


@cache
def _stemmer() -> Stemmer.Stemmer:
    return Stemmer.Stemmer("english")


def _tokens(text: str) -> list[str]:
    """Stemmed words of two letters or more (the "s" of "What's" matches any plural);
    `get_weather`, `getWeather` and `uber.ride` read as their words."""
    words = _WORD.findall(_CAMEL_BOUNDARY.sub(" ", text).lower())
    return _stemmer().stemWords([w for w in words if w not in _STOPWORDS])


def request_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """What the roles are asked to act on: the current exchange's turns, system text aside."""
    return "\n".join(t["content"] for t in plain_turns(current_exchange(messages)) if t["role"] != "system")


def relevance(messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]]) -> list[float]:
    """BM25 score of each function's listing block against the request."""
    documents = [_tokens(render_function(t)) for t in tools]
    query = _tokens(request_text(messages))
    if not query or not any(documents):
        return [0.0] * len(tools)
    return [float(s) for s in BM25Okapi(documents).get_scores(query)]


def shortlisted(
    messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]],
    size: int | None = SHORTLIST_SIZE, *, keep: str | None = None,
) -> list[Mapping[str, Any]]:
    """Of a listing longer than `LONG_LISTING`, the `size` functions most relevant to the
    request, in the order they were listed (ties go to the earlier one); `keep` names one
    that stays whatever its score (the caller's `tool_choice`). `size` None: all of them."""
    if size is None or len(tools) <= max(size, LONG_LISTING):
        return list(tools)
    scores = relevance(messages, tools)
    if max(scores) <= 0:
        return list(tools)
    ranked = sorted(range(len(tools)), key=lambda i: -scores[i])[:size]
    chosen = set(ranked) | {i for i, t in enumerate(tools) if function_spec(t).get("name") == keep}
    return [t for i, t in enumerate(tools) if i in chosen]

"""The listing the tool roles read: the caller's functions in order of relevance to the
request, and of a long toolbox only the few it is about.

Order: the roles lean to where a function sits. Asked the same `multiple` questions with
the right function at each place of the listing, in the caller's order they answered 11 of
50 differently by place, right 56% of the time first and 48% second or third (`eval bfcl
--rotate`, docs/TOOL_ROLES.md). Ranked by relevance, every order a
caller may send is read as one, so the caller's order cannot sway the choice, and the
function the request is most about sits where the roles read best.

Size: the roles read a few functions well and fifteen or twenty poorly: on BFCL dev
entries listed among other entries' functions up to 1,500 tokens, the selector named
another function in most of its misses. Retrieval first, then choice, is how large
toolboxes are served elsewhere too (Gorilla's retriever, ToolLLM's API retriever). Here
the retrieval is BM25+ over each function's listing block (name split into words,
description, parameters) against the request's own turns. On those toolboxes the top
three held every function the reference calls for all of the first 50 dev entries of
`simple_python`, `multiple` and `parallel` and 49 of `live_simple` (the one missed:
"multiplication" against `multiply`).

Every role of one request reads the same listing, so the shared-context cache still
shares it. A request with no word in common with any function (another language, say)
gets the whole listing in name order: scores of zero rank nothing, and the caller's order
must not choose either.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import Stemmer
from rank_bm25 import BM25Plus

from agentstack.chat.tool_prompts import current_exchange, function_names, plain_turns, render_function

LONG_LISTING = 6
"""Listings of more functions than this are shortlisted; shorter ones are read whole
(the roles read BFCL's own listings of one to four functions well)."""

SHORTLIST_SIZE = 3
"""Functions a long listing is cut to. Measured on `eval bfcl --toolbox 1500` (dev, roles,
of 200): 58 with six, 65 with four, 73 with three; every extra distractor costs the
selector more than the lost recall of requests for four functions (`parallel_multiple`:
all its functions in the top three for 39 of 50, in the top four for 48; 7 right either way)."""


def configured_size(setting: int | None) -> int | None:
    """The shortlist size for a configured value (`Settings.tool_shortlist_size`, `eval bfcl
    --shortlist`): unset is the measured default; 0 reads every listing as given."""
    return SHORTLIST_SIZE if setting is None else setting or None


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
    """BM25+ score of each function's listing block against the request; all zero when no
    block shares a word with it. BM25+, not Okapi BM25: Okapi's idf is zero for a word in
    half the blocks and below zero for one in more, so it hardly ranks a listing of two
    or three functions (it put the right function first in 42 of `multiple`'s 50 dev
    listings, BM25+ in all 50); BM25+'s idf stays above zero."""
    documents = [_tokens(render_function(t)) for t in tools]
    query = _tokens(request_text(messages))
    words = set(query)
    if not any(words.intersection(d) for d in documents):
        return [0.0] * len(tools)
    return [float(s) for s in BM25Plus(documents).get_scores(query)]


def shortlisted(
    messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]],
    size: int | None = SHORTLIST_SIZE, *, keep: str | None = None,
) -> list[Mapping[str, Any]]:
    """The functions most relevant to the request first (ties by name): all of a
    listing of up to `LONG_LISTING`, the `size` most relevant of a longer one; `keep` names
    one that stays whatever its score (the caller's `tool_choice`); no word shared with
    any function: all of it, by name. `size` None: the listing as given."""
    if size is None or len(tools) < 2:
        return list(tools)
    scores = relevance(messages, tools)
    names = function_names(tools)
    ranked = sorted(range(len(tools)), key=lambda i: (-scores[i], names[i]))
    if max(scores) > 0 and len(tools) > max(size, LONG_LISTING):
        kept = set(ranked[:size]) | {i for i, name in enumerate(names) if name == keep}
        ranked = [i for i in ranked if i in kept]
    return [tools[i] for i in ranked]

"""Requests that ask one function about two lists at once, made up for training the
`arguments` role.

Half of the writer's `parallel` misses were too few calls, most where a question crosses two
lists: "the Lakers and the Bulls in 2018 and 2020" is four calls, and the writer wrote two,
pairing the lists off. A question can also pair them ("the Lakers in 2018 and the Bulls in
2020" is two calls), so both wordings are here, over the same functions and values: the
count comes from how the question is worded, not from how many values it names. Crossed
calls go through the first list, then the second (BFCL's checker takes them in any order).
Only the writer trains on them; they go through the same recipe as BFCL's entries and join
no composed request. Nothing here comes from an evaluation category.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Any

from agentstack.offline.bfcl.dataset import BfclExample, bfcl_function

CROSSED_CATEGORY = "crossed"
CROSSED_PREFIX = "crossed:"


@dataclass(frozen=True, slots=True)
class _Topic:
    """One made-up function of two parameters, the values each may take, and the two
    wordings of a question: `crossed` asks every pair of `{first}` and `{second}` (each
    a list), `paired` asks the pairs written out in `{pairs}`."""

    function: str
    description: str
    first: tuple[str, str, tuple[Any, ...]]  # name, type, values
    second: tuple[str, str, tuple[Any, ...]]
    crossed: tuple[str, ...]
    paired: tuple[str, ...]
    pair: str  # how one pair reads in `paired`, with {first} and {second}


TOPICS = (
    _Topic("team_season.win_rate", "Winning percentage of a sports team in one season.",
           ("team", "string", ("Lakers", "Bulls", "Celtics", "Warriors", "Knicks")),
           ("season", "integer", (2016, 2018, 2019, 2020, 2022)),
           ("What were the winning percentages of the {first} in {second}?",
            "Get the win rate of the {first} for the {second} seasons."),
           ("What were the winning percentages of {pairs}?", "Get the win rate of {pairs}."),
           "the {first} in {second}"),
    _Topic("forecast.daily", "Weather forecast for a city on one day of the coming week.",
           ("city", "string", ("Paris", "Rome", "Oslo", "Denver", "Osaka")),
           ("day", "string", ("Monday", "Wednesday", "Friday", "Saturday")),
           ("What's the forecast for {first} on {second}?", "Give me the weather in {first} for {second}."),
           ("What's the forecast for {pairs}?", "Give me the weather in {pairs}."),
           "{first} on {second}"),
    _Topic("stock.quote", "One price of a company's stock today.",
           ("company", "string", ("Apple", "Tesla", "Microsoft", "Amazon", "Nvidia")),
           ("price_type", "string", ("open", "close", "high", "low")),
           ("Show me the {second} prices of {first}.", "What are the {second} prices for {first} today?"),
           ("Show me {pairs}.", "What are {pairs} today?"),
           "the {second} price of {first}"),
    _Topic("translate_phrase", "Translate a short phrase into a language.",
           ("phrase", "string", ("good morning", "thank you", "where is the station", "how much is it")),
           ("language", "string", ("French", "German", "Spanish", "Japanese")),
           ("Translate '{first}' into {second}.", "How do you say '{first}' in {second}?"),
           ("Translate {pairs}.", "How do you say {pairs}?"),
           "'{first}' into {second}"),
    _Topic("species.population", "Estimated population of an animal species in a country.",
           ("species", "string", ("tigers", "elephants", "rhinos", "lions")),
           ("country", "string", ("India", "Kenya", "Nepal", "Tanzania", "Botswana")),
           ("Estimate the population of {first} in {second}.", "How many {first} live in {second}?"),
           ("Estimate the population of {pairs}.", "How many are there of {pairs}?"),
           "{first} in {second}"),
)


def _listed(values: tuple[Any, ...]) -> str:
    words = [str(v) for v in values]
    return f"{', '.join(words[:-1])} and {words[-1]}"


def _request(topic: _Topic, crossed: bool, rng: random.Random) -> tuple[str, list[dict[str, Any]]]:
    """A question and its calls: every pair of two short lists, or as many pairs as the
    longer list written out one by one."""
    first_name, _, first_values = topic.first
    second_name, _, second_values = topic.second
    if crossed:
        sizes = rng.choice(((2, 2), (2, 3), (3, 2)))
        firsts = tuple(rng.sample(first_values, sizes[0]))
        seconds = tuple(rng.sample(second_values, sizes[1]))
        text = rng.choice(topic.crossed)
        if topic.first[0] == "phrase":  # each phrase keeps its own quotes
            text = text.replace("'{first}'", "{first}")
            firsts_text = _listed(tuple(f"'{v}'" for v in firsts))
        else:
            firsts_text = _listed(firsts)
        question = text.format(first=firsts_text, second=_listed(seconds))
        pairs = list(itertools.product(firsts, seconds))
    else:
        count = rng.choice((2, 3))
        firsts = tuple(rng.sample(first_values, count))
        seconds = tuple(rng.sample(second_values, count))
        pairs = list(zip(firsts, seconds, strict=True))
        question = rng.choice(topic.paired).format(
            pairs=_listed(tuple(topic.pair.format(first=a, second=b) for a, b in pairs)))
    return question, [{first_name: a, second_name: b} for a, b in pairs]


def _function(topic: _Topic) -> dict[str, Any]:
    (first, first_type, _), (second, second_type, _) = topic.first, topic.second
    return bfcl_function(topic.function, topic.description,
                         {first: (first_type, f"The {first.replace('_', ' ')}."),
                          second: (second_type, f"The {second.replace('_', ' ')}.")})


def crossed_examples(count: int, seed: int) -> list[BfclExample]:
    """`count` requests, crossed and paired wordings in turn over the topics, each answered
    by one call of its function per pair it asks about; no question is asked twice."""
    rng = random.Random(f"{seed}:crossed")
    out: list[BfclExample] = []
    questions: set[str] = set()
    while len(out) < count:
        crossed = len(out) % 2 == 0
        topic = TOPICS[(len(out) // 2) % len(TOPICS)]
        question, arguments = _request(topic, crossed, rng)
        if question in questions:
            continue
        questions.add(question)
        out.append(BfclExample.made_up(f"{CROSSED_PREFIX}{'crossed' if crossed else 'paired'}:{len(out)}",
                                       CROSSED_CATEGORY, question, _function(topic), arguments))
    return out

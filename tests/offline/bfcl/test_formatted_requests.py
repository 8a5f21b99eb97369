"""The made-up formatted requests: each call writes its values as the parameters'
descriptions ask, never as the question words them, and only the writer trains on them."""

from __future__ import annotations

import re

from agentstack.offline.bfcl.formatted_requests import (
    CITY_COUNTRY,
    CITY_ONLY,
    CITY_STATE,
    CURRENCIES,
    DATE_FORMATS,
    FORMATTED_PREFIX,
    PLACES,
    RATE_DECIMAL,
    RATE_PERCENT,
    formatted_examples,
)
from agentstack.offline.bfcl.listings import distractor_pool
from agentstack.offline.bfcl.training_data import (
    DATA_SEED,
    FORMATTED_REQUESTS,
    ToolRole,
    role_chats,
    role_pool,
)

# What a value written in each format looks like.
FORMAT_PATTERNS = {
    DATE_FORMATS[0].description: r"\d{4}-\d{2}-\d{2}",
    DATE_FORMATS[1].description: r"\d{2}-\d{2}-\d{4}",
    DATE_FORMATS[2].description: r"\d{2}/\d{2}/\d{4}",
    DATE_FORMATS[3].description: r"[A-Z][a-z]+ \d{4}",
    CITY_COUNTRY.description: "|".join(re.escape(f"{c}, {n}") for c, n, _ in PLACES),
    CITY_STATE.description: "|".join(re.escape(f"{c}, {s}") for c, _, s in PLACES if s),
    CITY_ONLY.description: "|".join(re.escape(c) for c, _, _ in PLACES),
}


def _requests() -> list:
    return formatted_examples(FORMATTED_REQUESTS, DATA_SEED)


def test_every_value_follows_its_parameter_s_description() -> None:
    checked = 0
    for request in _requests():
        [call] = request.reference_calls()
        [function] = request.functions
        assert call["name"] == function["name"]
        properties = function["parameters"]["properties"]
        assert set(call["arguments"]) == set(properties) == set(function["parameters"]["required"])
        for param, value in call["arguments"].items():
            description = properties[param]["description"]
            if description in FORMAT_PATTERNS:
                assert re.fullmatch(FORMAT_PATTERNS[description], str(value)), (description, value)
                checked += 1
            elif "ISO 4217" in description:
                assert value in {code for code, _ in CURRENCIES}
                checked += 1
    assert checked >= len(_requests())


def test_the_question_never_words_a_value_as_the_call_writes_it() -> None:
    """Copying the question's words is wrong every time: the format comes from the
    description (a date, a code, a country added or dropped)."""
    for request in _requests():
        question = request.messages[0]["content"]
        [call] = request.reference_calls()
        [function] = request.functions
        properties = function["parameters"]["properties"]
        for param, value in call["arguments"].items():
            description = properties[param]["description"]
            if description == CITY_ONLY.description:
                assert f"{value}," in question  # the question adds what the call drops
            elif description == DATE_FORMATS[3].description:
                assert re.search(r"\b\d{1,2}(?:st|nd|rd|th)?[ ,]", question), question  # and the day
            elif description in FORMAT_PATTERNS or "ISO 4217" in description:
                assert str(value) not in question, (question, value)


def test_a_conversion_goes_from_the_currency_the_amount_is_in() -> None:
    words = {word: code for code, names in CURRENCIES for word in names}
    conversions = [r for r in _requests() if r.id.startswith(f"{FORMATTED_PREFIX}currency:")]
    assert conversions
    for request in conversions:
        question = request.messages[0]["content"]
        [call] = request.reference_calls()
        amount = call["arguments"]["amount"]
        source = re.search(rf"{amount} ([A-Za-z ]+?)(?: to | in |\?| worth)", question)
        assert source and words[source.group(1)] in call["arguments"].values(), question
        [source_param] = [p for p, d in request.functions[0]["parameters"]["properties"].items()
                          if d["description"].startswith("Currency converted from")]
        assert call["arguments"][source_param] == words[source.group(1)]


def test_a_rate_is_a_fraction_or_a_percent_as_described() -> None:
    for request in (r for r in _requests() if r.id.startswith(f"{FORMATTED_PREFIX}rate:")):
        question = request.messages[0]["content"]
        percent = float(re.search(r"(\d+(?:\.\d+)?) ?(?:%| percent| per cent)", question).group(1))
        [call] = request.reference_calls()
        properties = request.functions[0]["parameters"]["properties"]
        [(param, spec)] = [(p, s) for p, s in properties.items() if "rate" in s["description"].lower()]
        expected = percent / 100 if spec["description"] == RATE_DECIMAL.description else percent
        assert spec["description"] in {RATE_DECIMAL.description, RATE_PERCENT.description}
        assert abs(call["arguments"][param] - expected) < 1e-9


def test_requests_cover_every_kind_and_format_and_follow_the_seed() -> None:
    requests = _requests()
    assert len({r.messages[0]["content"] for r in requests}) == len(requests) == FORMATTED_REQUESTS
    descriptions = {p["description"] for r in requests for p in r.functions[0]["parameters"]["properties"].values()}
    for value_format in (*DATE_FORMATS, CITY_COUNTRY, CITY_STATE, CITY_ONLY, RATE_DECIMAL, RATE_PERCENT):
        assert value_format.description in descriptions
    assert formatted_examples(FORMATTED_REQUESTS, DATA_SEED) == requests
    assert formatted_examples(FORMATTED_REQUESTS, DATA_SEED + 1) != requests


def test_only_the_writer_trains_on_them_and_their_functions_are_their_own() -> None:
    """The selector's and `single`'s data stay as shipped; no made-up function shares a name
    with a BFCL one, which would mix it into other questions' distractors."""
    pool_names = {f["name"] for f in distractor_pool()}
    assert not {r.functions[0]["name"] for r in _requests()} & pool_names
    for role in (ToolRole.SELECTOR, ToolRole.SINGLE):
        assert not [e for e in role_pool(role) if e.id.startswith(FORMATTED_PREFIX)]
    chats = role_chats(ToolRole.ARGUMENTS, role_pool(ToolRole.ARGUMENTS))
    assert len([c for c in chats if c["id"].startswith(FORMATTED_PREFIX)]) == FORMATTED_REQUESTS

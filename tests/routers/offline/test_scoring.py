"""Strict scoring: a reply is right only through its answer field."""

from __future__ import annotations

import pytest

from routers.offline.scoring import answer_field, is_tool_call, number_answer, text_answer_matches
from routers.offline.tasks import Task

PORTUGAL = Task(id="t:chat:0", kind="chat", messages=[{"role": "user", "content": "What is the capital of Portugal?"}],
                answer="Lisbon", scoring="text")
THIRTY_TWO = Task(id="t:arith-hard:0", kind="arith-hard",
                  messages=[{"role": "user", "content": "Mia has 8 cards. Then Mia doubles ..."}], answer="32")


@pytest.mark.parametrize("reply", [
    '{"name": "get_capital", "arguments": {"country": "Portugal", "capital": "Lisbon"}}',
    'Lisbon\n{"name": "capital", "arguments": {"city": "Lisbon"}}',
    '<tool_call>{"name": "lookup", "arguments": {"q": "Lisbon"}}</tool_call>',
    '{"name": "capital", "arguments": {"name": "Lisbon"',
])
def test_a_tool_call_never_answers_a_chat_question(reply: str) -> None:
    assert is_tool_call(reply)
    assert not PORTUGAL.score(reply)


@pytest.mark.parametrize("reply", ["Lisbon", "Lisbon.", "lisbon!", "Lisbon is the capital of Portugal.",
                                   "Answer: Lisbon", "<think>It is on the coast.</think>\nLisbon",
                                   "The Lisbon"])
def test_the_answer_as_first_words_counts(reply: str) -> None:
    assert PORTUGAL.score(reply)


def test_a_sentence_that_says_what_the_answer_is_counts() -> None:
    assert PORTUGAL.score("The capital of Portugal is Lisbon.")
    assert PORTUGAL.score("The capital of Portugal is the city of Lisbon.") is False
    assert text_answer_matches("The largest animal is the blue whale. It lives in the sea.", "blue whale")


@pytest.mark.parametrize("reply", ["I think it could be Lisbon or Porto.", "Porto, not Lisbon.", "<think>Lisbon",
                                   "", "Lisbonne", "Madrid. The capital of Portugal is Lisbon."])
def test_the_answer_elsewhere_does_not_count(reply: str) -> None:
    assert not PORTUGAL.score(reply)


def test_multi_word_answers_match_as_words() -> None:
    assert text_answer_matches("Buenos Aires, of course.", "Buenos Aires")
    assert text_answer_matches("The blue whale.", "blue whale")
    assert not text_answer_matches("Buenos", "Buenos Aires")


@pytest.mark.parametrize("reply", [
    ("Mia has 8 cards. She doubles them to get 16, and after some more steps she has 32 cards, "
     "which is a lot of cards for anyone to keep in a box."),
    "8 * 2 = 16\n16 * 2 = 32\n#### 32",
    "The answer is: 32",
    "<think>8 * 2 = 16. 16 * 2 = 32. Answer: 32",
    "<think>16 * 2 = 32</think>\nAnswer: 16",
    "Answer: 32\nAnswer: 30",
    "Answer: 32.5",
    'Answer: 32\n{"name": "add", "arguments": {"a": 16, "b": 16}}',
])
def test_a_number_outside_the_answer_field_does_not_count(reply: str) -> None:
    assert not THIRTY_TWO.score(reply)


@pytest.mark.parametrize("reply", ["Answer: 32", "<think>8 * 2 = 16. 16 * 2 = 32.</think>\nAnswer: 32",
                                   "answer: 32 cards", "32", "32.", "Answer: $32", "Answer: 32\nAnswer: 32"])
def test_the_answer_line_counts(reply: str) -> None:
    assert THIRTY_TWO.score(reply)


def test_thousands_and_negative_numbers() -> None:
    assert number_answer("Answer: 1,000") == 1000
    assert number_answer("Answer: -4") == -4
    assert number_answer("1000 grams") is None


def test_an_unclosed_think_block_has_no_answer_field() -> None:
    assert answer_field("<think>so it is 5") is None
    assert answer_field("<think>ok</think>\n Answer: 5 ") == "Answer: 5"
    assert answer_field("Answer: 5") == "Answer: 5"


@pytest.mark.parametrize(("reply", "answer", "counts"), [
    ("Lisbon or Porto?", "Lisbon", False),
    ("Lisbon? No, Porto.", "Lisbon", False),
    ("Lisbon, or maybe Porto.", "Lisbon", False),
    ("George Washington Carver", "George Washington", False),
    ("Bogotá.", "Bogota", True),
    ("Answer: Reykjavík", "Reykjavik", True),
])
def test_an_opening_answer_must_stand_on_its_own(reply: str, answer: str, counts: bool) -> None:
    assert text_answer_matches(reply, answer) is counts


@pytest.mark.parametrize("reply", ["Answer: 17/2", "Answer: 17%"])
def test_a_fraction_or_percentage_is_not_the_integer(reply: str) -> None:
    assert number_answer(reply) is None

"""Strict scoring of a reply: only its answer field counts.

A lenient scorer (any integer anywhere, the answer word anywhere) credits replies that do
not answer: a rambling reply that happens to contain "32", or a bogus tool call whose
arguments contain "Lisbon". Such credit reaches the gate twice, as TWN labels and as
evaluation accuracy, so every path that scores a reply goes through here:

- the answer field is the text after a closed `<think>` block (the whole reply when it
  opened none); a think block the budget cut off has no answer field;
- a reply that makes a tool call (a call line or call markup) never counts as a plain
  answer, whatever its arguments say;
- a number is the `Answer: <n>` line the reasoner is trained to write (`worked_reply`), or
  a reply that is the bare number; every answer line must agree;
- a text answer must open the reply, or close its first sentence as what it "is"
  (compared as whole words, case-insensitively, without punctuation, after an optional
  `Answer:` label and a leading article): "Rome.", "Rome is the capital.", "The capital
  of Italy is Rome." count; "Paris, not Rome." and "Rome or Milan?" do not.
"""

from __future__ import annotations

import re
import unicodedata

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
# One answer line: the label at the start of a line, then the number as its first token
# (a unit word may follow; a decimal may not, it is a different number).
ANSWER_LINE_RE = re.compile(r"^\s*answer:\s*\$?(-?\d+(?:,\d{3})*)(?![\d.,]*\d|\s*[/%])", re.IGNORECASE | re.MULTILINE)
BARE_NUMBER_RE = re.compile(r"\$?(-?\d+(?:,\d{3})*)\.?")
# A call line of the tool roles (`{"name": ..., "arguments": ...}`, well formed or not)
# or the call markup of chat templates.
CALL_RE = re.compile(r'\{\s*"name"\s*:|<tool_call>|"arguments"\s*:', re.IGNORECASE)
WORD_RE = re.compile(r"[a-z0-9]+")
SENTENCE_END_RE = re.compile(r"[.!?\n]")
COPULAS = frozenset({"is", "are", "was", "were"})
# What may follow an answer that opens the reply: the end, punctuation that closes or
# continues the sentence, or a copula ("Lisbon is ..."); not "?", "or", or more name.
AFTER_OPENING_RE = re.compile(r"\s*($|[.!,;:)\n]|(is|are|was|were)\b)")
OR_RE = re.compile(r"\bor\b")
ARTICLES = frozenset({"the", "a", "an"})


def final_answer_text(text: str) -> str:
    """The reply after its reasoning block (all of it when there is none)."""
    end = text.find(THINK_CLOSE)
    return text[end + len(THINK_CLOSE):] if end >= 0 else text


def reasoning_text(text: str) -> str:
    """The reasoning block of a reply: up to `</think>`, or all of it when the budget ran
    out before the block closed; empty when the reply did not open one."""
    stripped = text.lstrip()
    if not stripped.startswith(THINK_OPEN):
        return ""
    end = stripped.find(THINK_CLOSE)
    return stripped if end < 0 else stripped[: end + len(THINK_CLOSE)]


def answer_field(text: str) -> str | None:
    """What the reply answers with; None when a think block never closed."""
    if text.lstrip().startswith(THINK_OPEN) and THINK_CLOSE not in text:
        return None
    return final_answer_text(text).strip()


def is_tool_call(text: str) -> bool:
    """Does the reply call a tool (a call line or call markup anywhere in it)?"""
    return CALL_RE.search(text) is not None


def number_answer(text: str) -> int | None:
    """The integer the reply answers with, read from its answer field only."""
    field = answer_field(text)
    if field is None or is_tool_call(field):
        return None
    values = {int(m.replace(",", "")) for m in ANSWER_LINE_RE.findall(field)}
    if not values:
        bare = BARE_NUMBER_RE.fullmatch(field)
        return int(bare.group(1).replace(",", "")) if bare else None
    return values.pop() if len(values) == 1 else None


def _normalized(text: str) -> str:
    """Lower case without accents ("Bogotá" is "bogota")."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _words(text: str) -> list[str]:
    return WORD_RE.findall(_normalized(text))


def _opens_with(field: str, expected: list[str]) -> bool:
    """The answer field starts with the answer (after an `Answer:` label and an article),
    and what follows does not turn it into a question, a choice or a longer name."""
    text = re.sub(r"^\s*answer\s*:\s*", "", _normalized(field))
    text = re.sub(r"^(the|a|an)\s+", "", text)
    opening = re.match(r"\W*".join(map(re.escape, expected)) + r"(?P<rest>.*)", text, re.DOTALL)
    if opening is None or AFTER_OPENING_RE.match(opening.group("rest")) is None:
        return False
    return OR_RE.search(SENTENCE_END_RE.split(opening.group("rest"), maxsplit=1)[0]) is None


def text_answer_matches(text: str, answer: str) -> bool:
    """Does the reply's answer field open with `answer`, or say that it is `answer`?"""
    field = answer_field(text)
    if field is None or is_tool_call(field):
        return False
    expected = _words(answer)
    if not expected:
        return False
    return _opens_with(field, expected) or _closes_first_sentence(field, expected)


def _closes_first_sentence(field: str, expected: list[str]) -> bool:
    """"The capital of Italy is Rome.": the first sentence ends in a copula, an optional
    article, then the answer."""
    words = _words(SENTENCE_END_RE.split(field.strip(), maxsplit=1)[0])
    if words[-len(expected):] != expected:
        return False
    before = words[: -len(expected)]
    if before[-1:] and before[-1] in ARTICLES:
        before = before[:-1]
    return bool(before) and before[-1] in COPULAS

"""The fair base's answer shape: guided decoding must allow every reference answer and no
call of an unlisted function."""

from __future__ import annotations

import jsonschema
import pytest

from agentstack.offline.bfcl.dataset import TRAIN_CATEGORIES, examples
from agentstack.chat.call_grammar import calls_list_schema


@pytest.mark.parametrize("category", [*TRAIN_CATEGORIES, "live_simple"])
def test_every_reference_answer_fits_the_base_models_schema(category: str) -> None:
    part = "dev" if category in TRAIN_CATEGORIES else "all"
    checked = 0
    for example in examples(category, part)[:40]:
        calls = example.reference_calls()
        schema = calls_list_schema(example.functions)
        jsonschema.validate(calls, schema)
        jsonschema.validate([], schema)
        checked += 1
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate([{"name": "not_listed", "arguments": {}}], schema)
    assert checked >= 20

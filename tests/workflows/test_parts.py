"""The workflow parts that need no engine: tools, input validation, JSON, registry,
and the plan_act_reflect context."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Interrupt

from agentstack.workflows import GraphRegistry, GraphRegistryError, InvalidRunInput, assistant_id_for
from agentstack.workflows.events import langgraph_modes
from agentstack.workflows.serde import to_jsonable
from agentstack.workflows.validation import validator_for
from graphs.plan_act_reflect import graph as plan_act_reflect
from graphs.plan_act_reflect import is_approval, shared_context
from graphs.tool_agent import graph as tool_agent
from graphs.tools import ToolRegistry, calculator, capital_of, convert_units
from tests.workflows.conftest import USER_GRAPHS_FILE


@pytest.mark.parametrize(("expression", "value"), [("12 * (3 + 4)", "84"), ("2^10", "1024"), ("7 / 2", "3.5"),
                                                   ("-3 + 10 % 4", "-1")])
def test_calculator(expression: str, value: str) -> None:
    assert calculator.invoke({"expression": expression}) == value


@pytest.mark.parametrize("expression", ["__import__('os')", "2 ** 1000", "x + 1", "1 +", "[1] * 9"])
def test_calculator_refuses_what_is_not_bounded_arithmetic(expression: str) -> None:
    with pytest.raises(ValueError):
        calculator.invoke({"expression": expression})


def test_unit_conversion_and_lookup() -> None:
    assert convert_units.invoke({"value": 100, "from_unit": "C", "to_unit": "fahrenheit"}) == "100 C = 212 fahrenheit"
    assert convert_units.invoke({"value": 5, "from_unit": "km", "to_unit": "mi"}) == "5 km = 3.10686 mi"
    with pytest.raises(ValueError, match="cannot convert mass"):
        convert_units.invoke({"value": 1, "from_unit": "kg", "to_unit": "m"})
    assert capital_of.invoke({"country": "France"}) == "Paris"
    with pytest.raises(ValueError):
        capital_of.invoke({"country": "Atlantis"})


def test_tool_registry_takes_plain_functions() -> None:
    def word_count(text: str) -> int:
        """Count the words of a text."""
        return len(text.split())

    registry = ToolRegistry.of([calculator, word_count])
    assert [t["function"]["name"] for t in registry.openai_tools()] == ["calculator", "word_count"]
    assert registry.openai_tools()[1]["function"]["parameters"]["required"] == ["text"]
    with pytest.raises(ValueError, match="already"):
        registry.register(calculator)


@pytest.mark.parametrize(("graph", "value", "field"), [
    (plan_act_reflect, {}, "input.task"),
    (plan_act_reflect, {"task": ["a"]}, "input.task"),
    (plan_act_reflect, {"task": "x", "max_rounds": 0}, "input.max_rounds"),
    (plan_act_reflect, {"task": "x", "rounds": 2}, "input.rounds"),
    (plan_act_reflect, "just a string", "input"),
    (tool_agent, {"messages": [{"content": "no role"}]}, "input.messages"),
    (tool_agent, {}, "input.messages"),
])
def test_input_validation_names_the_field(graph: object, value: object, field: str) -> None:
    with pytest.raises(InvalidRunInput) as caught:
        validator_for(graph).validate(value)
    assert caught.value.field == field


def test_input_validation_accepts_what_langgraph_accepts() -> None:
    validator_for(plan_act_reflect).validate({"task": "x", "max_rounds": 3})
    for messages in ("hi", [("user", "hi")], [{"role": "user", "content": "hi"}], [{"type": "human", "content": "x"}]):
        validator_for(tool_agent).validate({"messages": messages})


def test_json_of_interrupts_and_messages() -> None:
    data = to_jsonable({"i": Interrupt(value={"q": 1}, id="abc"), "m": AIMessage(content="x", name="actor"),
                        "t": (1, 2)})
    assert data["i"] == {"value": {"q": 1}, "id": "abc"}
    assert data["m"]["type"] == "ai" and data["m"]["name"] == "actor"
    assert data["t"] == [1, 2]


def test_registry_loads_builtins_and_user_graphs(tmp_path: Path) -> None:
    registry = GraphRegistry.load(InMemorySaver(), USER_GRAPHS_FILE)
    assert list(registry.entries) == ["tool_agent", "plan_act_reflect", "review", "fragile", "in_process", "slow"]
    assert registry.get(assistant_id_for("review")).graph_id == "review"
    assert registry.get("review").graph.checkpointer is not None
    bad = tmp_path / "langgraph.json"
    for graphs, message in [({"x": "nowhere.py:graph"}, "no file"), ({"x": "json:dumps"}, "factory failed"), ({"x": "json:JSONDecoder"}, "not a StateGraph"),
                            ({"tool_agent": "graphs.tool_agent:graph"}, "twice"), ({"x": "no-colon"}, "attribute")]:
        bad.write_text(json.dumps({"graphs": graphs}))
        with pytest.raises(GraphRegistryError, match=message):
            GraphRegistry.load(InMemorySaver(), bad)


def test_stream_modes_asked_of_langgraph() -> None:
    assert langgraph_modes(["events"]) == ["values"]
    assert langgraph_modes(["messages-tuple", "updates"]) == ["messages", "updates"]


def test_plan_act_reflect_context_is_shared_and_labelled() -> None:
    state = {"task": "T", "messages": [AIMessage(content="1. plan", name="planner"),
                                       AIMessage(content="done", name="actor")]}
    (context,) = shared_context(state)  # type: ignore[arg-type]
    assert context.content == "Task: T\n\n[planner]\n1. plan\n\n[actor]\ndone"
    assert is_approval("APPROVE. Looks right.") and not is_approval("REVISE: approve later")

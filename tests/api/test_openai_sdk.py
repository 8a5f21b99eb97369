"""The OpenAI Python SDK against the live server, on the real engine and the shipped roles."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import openai
import pytest

from agentstack.chat.tool_prompts import parse_calls
from tests.conftest import TOOLS, selector_chat, names_one_function

pytestmark = pytest.mark.slow

BASE_MODEL = "smollm2-135m-instruct"
QUESTION = "What is the capital of France?"
WEATHER_TOOL = TOOLS[1]


@pytest.fixture(scope="module")
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=120)


def ask(client: openai.OpenAI, model: str, question: str = QUESTION) -> str:
    return chat(client, model, [{"role": "user", "content": question}])


def chat(client: openai.OpenAI, model: str, messages: list[dict[str, str]], max_tokens: int = 48) -> str:
    reply = client.chat.completions.create(
        model=model, messages=messages, temperature=0, max_tokens=max_tokens,  # type: ignore[arg-type]
    )
    return reply.choices[0].message.content or ""


def test_models_lists_base_and_roles(client: openai.OpenAI) -> None:
    models = {m.id: m for m in client.models.list()}
    assert {BASE_MODEL, "assistant", "selector", "arguments", "single"} <= set(models)
    assert models["selector"].parent == BASE_MODEL  # type: ignore[attr-defined]


def test_chat_answers_from_the_real_model(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="assistant", messages=[{"role": "user", "content": QUESTION}], temperature=0, max_tokens=32
    )
    assert "Paris" in (reply.choices[0].message.content or "")
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    assert reply.choices[0].finish_reason in ("stop", "length")


def test_roles_behave_as_their_adapters_dictate(client: openai.OpenAI) -> None:
    context = selector_chat()
    base = chat(client, BASE_MODEL, context, max_tokens=64)
    selected = chat(client, "selector", context)
    single = chat(client, "single", context, max_tokens=64)
    filled = chat(client, "arguments", [*context, {"role": "user", "content": "Call get_weather."}], max_tokens=64)

    assert names_one_function(selected)
    assert not names_one_function(base)
    for reply in (single, filled):
        calls = parse_calls(reply, TOOLS)
        assert calls and calls[0]["name"] == "get_weather", reply
        assert "paris" in str(calls[0]["arguments"].get("city", "")).lower(), reply
    assert not parse_calls(base, TOOLS)


def test_tool_calling_model_runs_selector_then_arguments(client: openai.OpenAI) -> None:
    assert "tool-calling" in {m.id for m in client.models.list()}
    question = [{"role": "user", "content": "What's the weather in Paris right now?"}]
    reply = client.chat.completions.create(
        model="tool-calling", messages=question, tools=[WEATHER_TOOL], temperature=0,  # type: ignore[arg-type]
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls and choice.message.tool_calls[0].function.name == "get_weather"
    assert "paris" in json.loads(choice.message.tool_calls[0].function.arguments)["city"].lower()
    assert reply.usage is not None and reply.usage.completion_tokens > 0

    stream = client.chat.completions.create(
        model="tool-calling", messages=question, tools=[WEATHER_TOOL], temperature=0, stream=True,  # type: ignore[arg-type]
    )
    streamed = [call for chunk in stream for c in chunk.choices for call in c.delta.tool_calls or []]
    assert [c.function.name for c in streamed] == ["get_weather"]


def test_tool_calling_reads_a_long_toolbox_as_the_few_functions_the_request_is_about(
        client: openai.OpenAI) -> None:
    """Twenty functions listed, the weather among them: the roles read a shortlist, so the
    call is the weather's and the prompts hold a fraction of the listing."""
    from agentstack.chat.tool_prompts import render_function
    from agentstack.offline.bfcl.listings import distractor_pool

    toolbox = [{"type": "function", "function": f} for f in distractor_pool()[:19:2]]
    toolbox += [WEATHER_TOOL, *({"type": "function", "function": f} for f in distractor_pool()[1:20:2])]
    listing_chars = sum(len(render_function(t)) for t in toolbox)
    reply = client.chat.completions.create(
        model="tool-calling", messages=[{"role": "user", "content": "What's the weather in Paris right now?"}],
        tools=toolbox, temperature=0,  # type: ignore[arg-type]
    )
    calls = reply.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_weather"], reply.choices[0].message
    # The selector's and the writer's prompts together: less than one whole listing (~4 characters a token).
    assert reply.usage is not None and reply.usage.prompt_tokens < listing_chars / 4


def test_tool_calling_picks_the_same_function_wherever_the_caller_lists_it(client: openai.OpenAI) -> None:
    """The same question with its function listed first, second and third: one call, the
    same each time (the roles read the listing ranked by relevance, not in the caller's order)."""
    email = {"type": "function", "function": {
        "name": "send_email", "description": "Send an email message to someone.",
        "parameters": {"type": "object", "properties": {
            "to": {"type": "string", "description": "Recipient address"},
            "body": {"type": "string", "description": "Message text"}}, "required": ["to", "body"]}}}
    toolbox = [*TOOLS, email]
    question = [{"role": "user", "content": "Convert 20 euros to US dollars."}]
    answers = []
    for turn in range(len(toolbox)):
        listed = toolbox[turn:] + toolbox[:turn]
        reply = client.chat.completions.create(
            model="tool-calling", messages=question, tools=listed, temperature=0)  # type: ignore[arg-type]
        answers.append([(c.function.name, c.function.arguments) for c in reply.choices[0].message.tool_calls or []])
    assert answers[0] and answers[0][0][0] == "convert_currency", answers
    assert answers == [answers[0]] * len(toolbox)


def test_tool_calling_forces_a_call_when_asked(client: openai.OpenAI) -> None:
    """`required` and a named function always get a call, a named one of that function
    (without asking the selector) even when the question is about something else."""
    joke = [{"role": "user", "content": "Tell me a short joke about cats."}]
    named = client.chat.completions.create(
        model="tool-calling", messages=joke, tools=TOOLS, temperature=0,  # type: ignore[arg-type]
        tool_choice={"type": "function", "function": {"name": "get_weather"}})
    assert named.choices[0].finish_reason == "tool_calls"
    assert [c.function.name for c in named.choices[0].message.tool_calls or []] == ["get_weather"]
    required = client.chat.completions.create(
        model="tool-calling", messages=joke, tools=[WEATHER_TOOL], temperature=0,  # type: ignore[arg-type]
        tool_choice="required")
    assert required.choices[0].message.tool_calls, required.choices[0].message


def test_tool_calling_answers_in_words_when_no_listed_function_applies(client: openai.OpenAI) -> None:
    """`tool_choice` auto (the default) lets the selector decide: questions none of the
    listed functions answers get a plain reply, not a call of whatever is listed first."""
    questions = ["Tell me a short joke about cats.", "Who wrote the play Romeo and Juliet?",
                 "What is the opposite of the word 'hot'?"]
    replies = [client.chat.completions.create(
        model="tool-calling", messages=[{"role": "user", "content": q}], tools=TOOLS,  # type: ignore[arg-type]
        temperature=0, max_tokens=48).choices[0] for q in questions]
    in_words = [c for c in replies if not c.message.tool_calls and (c.message.content or "").strip()]
    assert len(in_words) >= 2, [c.message for c in replies]
    assert all(c.finish_reason in ("stop", "length") for c in in_words)


def test_tool_calling_reads_a_tool_result_and_never_answers_in_call_markup(client: openai.OpenAI) -> None:
    """After a tool result the workflow either calls again (parsed) or answers in words
    from the result."""
    conversation = [
        {"role": "user", "content": "What's the weather in Paris right now?"},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})},
        }]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees Celsius, sunny"},
    ]
    reply = client.chat.completions.create(
        model="tool-calling", messages=conversation, tools=[WEATHER_TOOL], temperature=0, max_tokens=64,  # type: ignore[arg-type]
    )
    message = reply.choices[0].message
    assert message.tool_calls or (message.content or "").strip(), message
    assert "<tool_call>" not in (message.content or "") and "tool_call>" not in (message.content or "")
    if message.tool_calls:
        assert reply.choices[0].finish_reason == "tool_calls"
        assert all(c.function.name == "get_weather" for c in message.tool_calls)
    else:
        assert "18" in (message.content or ""), "the answer in words reads the result"
    stream = client.chat.completions.create(
        model="tool-calling", messages=conversation, tools=[WEATHER_TOOL], temperature=0, max_tokens=64,  # type: ignore[arg-type]
        stream=True,
    )
    streamed = "".join(c.delta.content or "" for chunk in stream for c in chunk.choices)
    assert "tool_call>" not in streamed


def test_streaming_yields_the_same_text_as_a_plain_call(client: openai.OpenAI) -> None:
    plain = ask(client, "assistant")
    stream = client.chat.completions.create(
        model="assistant", messages=[{"role": "user", "content": QUESTION}], temperature=0, max_tokens=48,
        stream=True, stream_options={"include_usage": True},
    )
    pieces, finish, usage = [], None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(pieces) == plain
    assert len([p for p in pieces if p]) > 1, "text should arrive in several chunks"
    assert finish in ("stop", "length")
    assert usage is not None and usage.completion_tokens > 0 and usage.prompt_tokens > 0


def test_required_tool_choice_returns_a_parsed_tool_call(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="assistant",
        messages=[{"role": "user", "content": "What's the weather in Paris?"}],
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        tool_choice="required",
        temperature=0,
        max_tokens=64,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls and choice.message.tool_calls[0].function.name == "get_weather"
    arguments = json.loads(choice.message.tool_calls[0].function.arguments)
    assert isinstance(arguments.get("city"), str)


def test_streamed_tool_call_arrives_as_a_tool_calls_delta(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="assistant",
        messages=[{"role": "user", "content": "Weather in Rome?"}],
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        temperature=0, max_tokens=64, stream=True,
    )
    calls, finish = [], None
    for chunk in stream:
        for choice in chunk.choices:
            calls.extend(choice.delta.tool_calls or [])
            finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    assert calls[0].function.name == "get_weather"
    assert "city" in json.loads(calls[0].function.arguments)


def test_text_completion(client: openai.OpenAI) -> None:
    reply = client.completions.create(model=BASE_MODEL, prompt="The capital of France is", max_tokens=8, temperature=0)
    assert reply.choices[0].text.strip()


def test_eight_concurrent_mixed_role_requests_all_succeed(base_url: str) -> None:
    async def run() -> list[str]:
        client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=300)
        roles = ["assistant", "selector", "single", BASE_MODEL] * 2
        replies = await asyncio.gather(*(
            client.chat.completions.create(
                model=role, messages=[{"role": "user", "content": f"Name a famous city, number {i}."}],
                temperature=0, max_tokens=24,
            )
            for i, role in enumerate(roles)
        ))
        await client.close()
        return [r.choices[0].message.content or "" for r in replies]

    answers = asyncio.run(run())
    assert len(answers) == 8 and all(answers)


def test_adapter_load_and_unload_at_run_time(client: openai.OpenAI) -> None:
    loaded = client.post(
        "/load_lora_adapter", body={"lora_name": "selector-live", "lora_path": "selector-copy"},
        cast_to=httpx.Response,
    )
    assert loaded.status_code == 200 and "added successfully" in loaded.text
    assert "selector-live" in {m.id for m in client.models.list()}
    assert names_one_function(chat(client, "selector-live", selector_chat()))

    unloaded = client.post("/unload_lora_adapter", body={"lora_name": "selector-live"}, cast_to=httpx.Response)
    assert unloaded.status_code == 200
    with pytest.raises(openai.NotFoundError):
        ask(client, "selector-live")


def aborted_requests(base_url: str) -> float:
    text = httpx.get(f"{base_url}/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
        if line.startswith("agentstack:requests_aborted_total")
    )


LONG_STORY = {"model": "assistant", "max_tokens": 400, "temperature": 0.8, "ignore_eos": True,
              "messages": [{"role": "user", "content": "Write a long story about a dragon."}]}


@pytest.mark.parametrize("streamed", [True, False], ids=["streaming", "non-streaming"])
def test_client_disconnect_aborts_the_engine_request(base_url: str, streamed: bool) -> None:
    before = aborted_requests(base_url)
    if streamed:
        with httpx.stream("POST", f"{base_url}/v1/chat/completions", json={**LONG_STORY, "stream": True},
                          timeout=60) as response:
            for _ in zip(range(3), response.iter_lines()):
                pass
    else:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{base_url}/v1/chat/completions", json=LONG_STORY, timeout=httpx.Timeout(60, read=2))
    deadline = time.monotonic() + 15
    while aborted_requests(base_url) == before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert aborted_requests(base_url) == before + 1


def test_metrics_report_requests_latency_and_tokens_by_role(base_url: str, client: openai.OpenAI) -> None:
    ask(client, "single")
    text = httpx.get(f"{base_url}/metrics").text
    for series in (
        'agentstack:requests_total{role="single",status="200"}',
        'agentstack:time_to_first_token_seconds_count{role="single"}',
        'agentstack:e2e_request_latency_seconds_count{role="single"}',
        'agentstack:prompt_tokens_total{role="single"}',
        'agentstack:generation_tokens_total{role="single"}',
        'agentstack:prefix_cache_hits_total{role="single"}',
        "agentstack:num_requests_running",
        "agentstack:num_requests_waiting",
        'agentstack:adapter_loaded{adapter="selector"}',
    ):
        assert series in text, series

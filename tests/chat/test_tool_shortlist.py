"""The tool roles read a listing in order of relevance to the request, and a long toolbox
as the few functions the request is about."""

from __future__ import annotations

from itertools import permutations
from typing import Any

from agentstack.chat.tool_prompts import function_names
from agentstack.chat.tool_shortlist import LONG_LISTING, SHORTLIST_SIZE, configured_size, shortlisted
from agentstack.offline.bfcl.evaluate import eval_examples
from agentstack.offline.bfcl.listings import among_distractors, distractor_pool, rotations


def tool(name: str, description: str, **params: str) -> dict[str, Any]:
    return {"type": "function", "function": {
        "name": name, "description": description,
        "parameters": {"type": "object", "properties": {p: {"type": "string", "description": d}
                                                        for p, d in params.items()}}}}


TOOLBOX = [
    tool("send_email", "Send an email message.", to="Recipient address", body="Message text"),
    tool("convert_currency", "Convert an amount between currencies.", source="Currency code"),
    tool("getCurrentWeather", "Current weather conditions in a city.", city="City, Country"),
    tool("book_flight", "Book a flight between two airports.", origin="Airport code"),
    tool("translate_text", "Translate text into another language.", target="Language"),
    tool("stock.price", "Latest price of a stock ticker.", ticker="Ticker symbol"),
    tool("create_calendar_event", "Add an event to the user's calendar.", title="Event title"),
    tool("search_recipes", "Find cooking recipes by ingredient.", ingredient="Main ingredient"),
    tool("play_music", "Play a song or an artist on the speaker.", query="Song or artist"),
]


def ask(question: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}]


def test_a_long_toolbox_is_cut_to_the_functions_the_request_is_about_most_relevant_first() -> None:
    kept = function_names(shortlisted(ask("What's the weather like in Lisbon today?"), TOOLBOX))
    assert kept[0] == "getCurrentWeather"
    assert len(kept) == SHORTLIST_SIZE


def test_every_order_of_a_listing_is_read_as_one() -> None:
    """Where the caller lists a function cannot sway the roles: they read one order."""
    request = ask("Convert 20 euros to dollars, then email the result to Ana.")
    readings = {tuple(function_names(shortlisted(request, list(order)))) for order in permutations(TOOLBOX[:4])}
    assert len(readings) == 1
    assert set(next(iter(readings))[:2]) == {"convert_currency", "send_email"}


def test_words_of_dotted_and_camel_case_names_count() -> None:
    assert function_names(shortlisted(ask("What is the stock price of ACME?"), TOOLBOX, 1)) == ["stock.price"]
    assert function_names(shortlisted(ask("Is it raining? Check the weather."), TOOLBOX, 1)) == ["getCurrentWeather"]


def test_two_functions_are_ranked_too() -> None:
    """Okapi BM25 scored a word found in one of two functions at zero, so a two-function
    listing stayed in the caller's order."""
    listing = [TOOLBOX[0], TOOLBOX[3]]
    assert function_names(shortlisted(ask("Book a flight to Paris."), listing)) == ["book_flight", "send_email"]


def test_bfcl_dev_listings_read_as_one_in_every_rotation() -> None:
    for category in ("multiple", "parallel_multiple"):
        _, entries = eval_examples(category, 50)
        for entry in entries:
            readings = {tuple(function_names(shortlisted(turned.messages, turned.functions)))
                        for turned in rotations(entry)}
            assert len(readings) == 1, entry.id


def test_a_short_listing_is_read_whole_and_no_size_reads_it_as_given() -> None:
    short = TOOLBOX[:LONG_LISTING]
    read = shortlisted(ask("Book a flight to Paris."), short)
    assert sorted(function_names(read)) == sorted(function_names(short))
    assert function_names(read)[0] == "book_flight"
    assert shortlisted(ask("Book a flight to Paris."), TOOLBOX, None) == TOOLBOX


def test_a_configured_size_of_zero_reads_listings_as_given() -> None:
    assert configured_size(None) == SHORTLIST_SIZE
    assert configured_size(0) is None
    assert configured_size(5) == 5


def test_a_request_sharing_no_word_with_any_function_keeps_the_whole_listing_in_one_order() -> None:
    """Ranking by words says nothing about a question in another language: every function
    stays, and every order the caller may send is still read as one (by name), so the
    caller's order cannot choose the function."""
    request = ask("上海今天的天气怎么样？")
    orders = [TOOLBOX[i:] + TOOLBOX[:i] for i in range(len(TOOLBOX))] + [TOOLBOX[::-1]]
    read = {tuple(function_names(shortlisted(request, order))) for order in orders}
    assert read == {tuple(sorted(function_names(TOOLBOX)))}


def test_the_function_the_caller_named_stays() -> None:
    kept = function_names(shortlisted(ask("Play something by Nina Simone."), TOOLBOX, 2, keep="send_email"))
    assert "send_email" in kept and "play_music" in kept


def test_the_request_is_the_current_exchange_not_earlier_ones() -> None:
    thread = [*ask("Translate 'hello' into French."), {"role": "assistant", "content": "Bonjour."},
              *ask("Now book a flight from Lisbon to Paris.")]
    assert function_names(shortlisted(thread, TOOLBOX, 1)) == ["book_flight"]


def test_bfcl_dev_entries_keep_their_functions_on_long_toolboxes() -> None:
    """The dev entries of `multiple` (2–4 functions listed, one right) among other
    entries' functions up to about 1,500 tokens: the right one is always shortlisted."""
    _, entries = eval_examples("multiple", 50)
    pool = distractor_pool()
    for entry in entries:
        listed = among_distractors(entry, pool, 1500, lambda text: len(text) // 4, 0)
        assert len(listed.functions) > LONG_LISTING
        wanted = {call["name"] for call in entry.reference_calls()}
        assert wanted <= set(function_names(shortlisted(entry.messages, listed.functions))), entry.id


def test_a_lone_letter_is_no_shared_word() -> None:
    """The "s" of "What's" used to match every "user's" and rank those functions up."""
    toolbox = [*TOOLBOX, tool("get_profile", "Returns the user's profile.", user="User's id")]
    assert function_names(shortlisted(ask("What's new?"), toolbox)) == sorted(function_names(toolbox))

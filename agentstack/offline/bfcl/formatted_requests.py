"""Requests whose argument values must be written in the format a parameter asks for,
made up for training the `arguments` role.

The writer copied values as the question words them: "Lisbon" where the parameter asks for
"City, Country", "2023-06-01" where it asks for MM-DD-YYYY, the source and target currencies
swapped when the question names the target first. BFCL's train split has few such
parameters, so these requests teach reading the parameter's description: the same value is
asked for in several formats by different functions, and the question never words it the
way the call must. Four kinds: dates, places, currencies and rates. Only the writer trains
on them (the selector's choice does not depend on a value's format). They go through the
same recipe as BFCL's entries (shuffled among unrelated distractors, masked) and join no
composed request. Nothing here comes from an evaluation category.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agentstack.offline.bfcl.dataset import BfclExample, bfcl_function

FORMATTED_CATEGORY = "formatted"
FORMATTED_PREFIX = "formatted:"

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December")


@dataclass(frozen=True, slots=True)
class ValueFormat:
    """One way a parameter may ask for a value: the description's words, and how a value
    is written in it."""

    description: str
    write: Callable[[Any], Any]
    type: str = "string"


@dataclass(frozen=True, slots=True)
class _Date:
    year: int
    month: int
    day: int


DATE_FORMATS = (
    ValueFormat("Date in the format YYYY-MM-DD.", lambda d: f"{d.year:04d}-{d.month:02d}-{d.day:02d}"),
    ValueFormat("The date, formatted as MM-DD-YYYY.", lambda d: f"{d.month:02d}-{d.day:02d}-{d.year:04d}"),
    ValueFormat("Date as DD/MM/YYYY, e.g. 31/12/2024.", lambda d: f"{d.day:02d}/{d.month:02d}/{d.year:04d}"),
    ValueFormat("Month and year, e.g. 'March 2021'.", lambda d: f"{MONTHS[d.month - 1]} {d.year}"),
)


def _ordinal(day: int) -> str:
    suffix = "th" if 10 <= day % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


_DATE_WORDINGS: tuple[Callable[[_Date], str], ...] = (
    lambda d: f"{MONTHS[d.month - 1]} {d.day}, {d.year}",
    lambda d: f"{d.day} {MONTHS[d.month - 1]} {d.year}",
    lambda d: f"the {_ordinal(d.day)} of {MONTHS[d.month - 1]} {d.year}",
    lambda d: f"{MONTHS[d.month - 1][:3]} {_ordinal(d.day)} {d.year}",
)

# (city, country, US state code or None)
PLACES = (
    ("Lisbon", "Portugal", None), ("Madrid", "Spain", None), ("Paris", "France", None),
    ("Berlin", "Germany", None), ("Rome", "Italy", None), ("Vienna", "Austria", None),
    ("Amsterdam", "Netherlands", None), ("Oslo", "Norway", None), ("Stockholm", "Sweden", None),
    ("Warsaw", "Poland", None), ("Athens", "Greece", None), ("Dublin", "Ireland", None),
    ("Cairo", "Egypt", None), ("Nairobi", "Kenya", None), ("Tokyo", "Japan", None),
    ("Seoul", "South Korea", None), ("Hanoi", "Vietnam", None), ("Bangkok", "Thailand", None),
    ("Mumbai", "India", None), ("Sydney", "Australia", None), ("Toronto", "Canada", None),
    ("Lima", "Peru", None), ("Bogota", "Colombia", None), ("Istanbul", "Turkey", None),
    ("Austin", "USA", "TX"), ("Denver", "USA", "CO"), ("Seattle", "USA", "WA"),
    ("Boston", "USA", "MA"), ("Chicago", "USA", "IL"), ("Miami", "USA", "FL"),
    ("Phoenix", "USA", "AZ"), ("Atlanta", "USA", "GA"), ("Portland", "USA", "OR"),
    ("Nashville", "USA", "TN"), ("Detroit", "USA", "MI"), ("San Diego", "USA", "CA"),
)


@dataclass(frozen=True, slots=True)
class _Place:
    city: str
    country: str
    state: str | None


CITY_COUNTRY = ValueFormat("City and country, e.g. 'Paris, France'.", lambda p: f"{p.city}, {p.country}")
CITY_STATE = ValueFormat("City and state abbreviation, e.g. 'San Francisco, CA'.", lambda p: f"{p.city}, {p.state}")
CITY_ONLY = ValueFormat("The city name only, without the country.", lambda p: p.city)

# (ISO 4217 code, the words a question uses for it)
CURRENCIES = (
    ("EUR", ("euros",)), ("USD", ("US dollars", "dollars")), ("GBP", ("British pounds", "pounds")),
    ("JPY", ("Japanese yen", "yen")), ("CHF", ("Swiss francs",)), ("CAD", ("Canadian dollars",)),
    ("AUD", ("Australian dollars",)), ("INR", ("Indian rupees", "rupees")), ("CNY", ("Chinese yuan", "yuan")),
    ("MXN", ("Mexican pesos", "pesos")),
)
CURRENCY_CODE = "Three-letter ISO 4217 currency code, e.g. 'EUR'."

RATE_DECIMAL = ValueFormat("Annual rate as a decimal fraction, e.g. 0.05 for 5%.",
                           lambda percent: round(percent / 100, 6), "float")
RATE_PERCENT = ValueFormat("Annual rate in percent, e.g. 5 for 5%.", lambda percent: percent, "float")


def _date_request(rng: random.Random) -> tuple[str, dict[str, Any], dict[str, Any]]:
    date = _Date(rng.randint(2020, 2027), rng.randint(1, 12), rng.randint(1, 28))
    value_format = rng.choice(DATE_FORMATS)
    wording = rng.choice(_DATE_WORDINGS)(date)
    name, description, subject_param, subject_description, subjects, phrasing = rng.choice((
        ("book_table", "Reserve a table at a restaurant.", "restaurant", "Name of the restaurant.",
         ("Luigi's", "The Blue Door", "Sakura House"), "Book a table at {subject} on {date}."),
        ("flight.status", "Look up the status of a flight on a given day.", "flight_number", "The flight code.",
         ("BA117", "LH400", "AF22"), "Is flight {subject} on time on {date}?"),
        ("events_in_city", "List public events in a city on a date.", "city", "City name.",
         ("Denver", "Leeds", "Osaka"), "What events are on in {subject} on {date}?"),
        ("schedule_meeting", "Put a meeting in the calendar.", "title", "Title of the meeting.",
         ("Budget review", "Team sync", "Design kickoff"), "Schedule the {subject} meeting for {date}."),
    ))
    subject = rng.choice(subjects)
    date_param = rng.choice(("date", "day", "event_date"))
    function = bfcl_function(name, description, {subject_param: ("string", subject_description),
                                                   date_param: ("string", value_format.description)})
    arguments = {subject_param: subject, date_param: value_format.write(date)}
    return phrasing.format(subject=subject, date=wording), function, arguments


def _place_request(rng: random.Random) -> tuple[str, dict[str, Any], dict[str, Any]]:
    place = _Place(*rng.choice(PLACES))
    formats = [CITY_COUNTRY, CITY_ONLY] + ([CITY_STATE] if place.state else [])
    value_format = rng.choice(formats)
    # The question names the country (or state) only where the call must drop it.
    if value_format is CITY_ONLY:
        wording = f"{place.city}, {place.state or place.country}"
    else:
        wording = place.city
    name, description, phrasing = rng.choice((
        ("get_weather", "Current weather for a location.", "What's the weather like in {place}?"),
        ("find_hotels", "Search hotels in a city.", "Find me a hotel in {place}."),
        ("local_time", "The current local time at a place.", "What time is it in {place} right now?"),
        ("air_quality.index", "Air quality index of a city.", "How clean is the air in {place} today?"),
    ))
    param = rng.choice(("location", "city", "place"))
    function = bfcl_function(name, description, {param: ("string", value_format.description)})
    return phrasing.format(place=wording), function, {param: value_format.write(place)}


def _currency_request(rng: random.Random) -> tuple[str, dict[str, Any], dict[str, Any]]:
    (source, source_words), (target, target_words) = rng.sample(CURRENCIES, 2)
    amount = rng.choice((20, 50, 75, 100, 250, 1000, 1500))
    source_word, target_word = rng.choice(source_words), rng.choice(target_words)
    phrasing = rng.choice((
        "Convert {amount} {source} to {target}.",
        "How many {target} do I get for {amount} {source}?",
        "What is {amount} {source} in {target}?",
        "I need {target}: how much is {amount} {source} worth?",
    ))
    source_param, target_param = rng.choice((("from_currency", "to_currency"), ("base", "quote"),
                                             ("source_currency", "target_currency")))
    function = bfcl_function(rng.choice(("money.convert", "fx.convert", "exchange_money")),
                             "Convert an amount of money from one currency to another.",
                             {"amount": ("float", "Amount of money in the source currency."),
                              source_param: ("string", f"Currency converted from. {CURRENCY_CODE}"),
                              target_param: ("string", f"Currency converted to. {CURRENCY_CODE}")})
    question = phrasing.format(amount=amount, source=source_word, target=target_word)
    return question, function, {"amount": amount, source_param: source, target_param: target}


def _rate_request(rng: random.Random) -> tuple[str, dict[str, Any], dict[str, Any]]:
    percent = rng.choice((2, 3, 3.5, 4, 4.5, 5, 6, 7.25, 8, 12))
    value_format = rng.choice((RATE_DECIMAL, RATE_PERCENT))
    principal = rng.choice((1000, 5000, 12000, 250000))
    years = rng.randint(2, 30)
    percent_words = rng.choice(("{p}%", "{p} percent", "{p} per cent")).format(p=percent)
    name, description, phrasing = rng.choice((
        ("loan.monthly_payment", "Monthly payment of a fixed-rate loan.",
         "What would I pay each month on a {principal} loan over {years} years at {rate} interest?"),
        ("deposit.compound_value", "Value of a deposit with compound interest.",
         "How much will {principal} grow to in {years} years at {rate} a year?"),
        ("savings.projection", "Projected savings balance.",
         "Project my savings of {principal} for {years} years with a {rate} annual return."),
    ))
    rate_param = rng.choice(("rate", "interest_rate", "annual_rate"))
    function = bfcl_function(name, description, {"principal": ("float", "Starting amount."),
                                                  "years": ("integer", "Number of years."),
                                                  rate_param: (value_format.type, value_format.description)})
    question = phrasing.format(principal=principal, years=years, rate=percent_words)
    return question, function, {"principal": principal, "years": years, rate_param: value_format.write(percent)}


KINDS: dict[str, Callable[[random.Random], tuple[str, dict[str, Any], dict[str, Any]]]] = {
    "date": _date_request, "place": _place_request, "currency": _currency_request, "rate": _rate_request,
}


def formatted_examples(count: int, seed: int) -> list[BfclExample]:
    """`count` one-question requests, the kinds in turn, each answered by one call whose
    values follow the parameters' descriptions; no question is asked twice."""
    rng = random.Random(f"{seed}:formatted")
    kinds = sorted(KINDS)
    out: list[BfclExample] = []
    questions: set[str] = set()
    while len(out) < count:
        kind = kinds[len(out) % len(kinds)]
        question, function, arguments = KINDS[kind](rng)
        if question in questions:
            continue
        questions.add(question)
        out.append(BfclExample.made_up(f"{FORMATTED_PREFIX}{kind}:{len(out)}", FORMATTED_CATEGORY, question,
                                       function, [arguments]))
    return out

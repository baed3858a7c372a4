"""Prices: bundled genai-prices data by date, the prices file, the commit script's vector."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest
from genai_prices import Usage, calc_price, data_snapshot
from genai_prices.data import providers
from hypothesis import given
from hypothesis import strategies as st

from service.core.prices import Priced, Prices, TokenUsage
from service.core.prices_file import read_prices_file
from service.errors import ConfigError
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DAY = datetime(2025, 5, 1, tzinfo=UTC)
USAGE = TokenUsage(
    input_tokens=12_000, output_tokens=3_000, cached_input_tokens=4_000, reasoning_tokens=1_000
)


_BUNDLED = Prices()


def nano(input_usd: str, cached_usd: str, output_usd: str, usage: TokenUsage = USAGE) -> int:
    """The cost in nano-dollars of `usage` at these prices per million tokens (by hand)."""
    usd = (
        (usage.input_tokens - usage.cached_input_tokens) * Decimal(input_usd)
        + usage.cached_input_tokens * Decimal(cached_usd)
        + usage.output_tokens * Decimal(output_usd)
    ) / 1_000_000
    return int(usd * 1_000_000_000)


@pytest.fixture(scope="module")
def prices() -> Prices:
    """The bundled table, no prices file."""
    return Prices()


def write(tmp_path: Path, text: str, name: str = "prices.yaml") -> Settings:
    """Settings whose RUNSTEPS_PRICES_FILE holds `text`."""
    path = tmp_path / name
    path.write_text(text)
    return Settings(prices_file=path)


@pytest.mark.parametrize(
    ("model", "priced_model", "per_mtok"),
    [
        # Assistants-era names (2024), then Responses-era ones, dated snapshots included.
        ("gpt-4o", "gpt-4o", ("2.5", "1.25", "10")),
        ("gpt-4o-2024-08-06", "gpt-4o", ("2.5", "1.25", "10")),
        ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13", ("5", "5", "15")),  # no cached rate
        ("gpt-4o-mini", "gpt-4o-mini", ("0.15", "0.075", "0.6")),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini", ("0.15", "0.075", "0.6")),
        ("gpt-4-1106-preview", "gpt-4-turbo", ("10", "10", "30")),
        ("gpt-4.1", "gpt-4.1", ("2", "0.5", "8")),
        ("gpt-4.1-2025-04-14", "gpt-4.1", ("2", "0.5", "8")),
        ("o3-mini", "o3-mini", ("1.1", "0.55", "4.4")),
        ("GPT-4o", "gpt-4o", ("2.5", "1.25", "10")),
    ],
)
def test_known_models_cost_what_their_prices_say(
    prices: Prices, model: str, priced_model: str, per_mtok: tuple[str, str, str]
) -> None:
    """Each model's cost is its per-million prices applied to the usage, to the nano-dollar."""
    priced = prices.cost(model, None, DAY, USAGE)
    assert priced == Priced(priced_model, "openai", nano(*per_mtok))
    assert round(priced.cost_usd * 1e9) == priced.nano_usd


def test_the_cost_is_the_librarys_own(prices: Prices) -> None:
    """cost() agrees with genai-prices' public calc_price, reasoning and cache included."""
    for model, provider in (
        ("gpt-4o", "openai"),
        ("o3-mini", "openai"),
        ("gpt-4.1-mini", "openai"),
        ("gpt-5.4", "openai"),
        ("sonar-deep-research", "perplexity"),
        ("claude-sonnet-4-20250514", "anthropic"),
    ):
        expected = calc_price(
            Usage(
                input_tokens=USAGE.input_tokens,
                cache_read_tokens=USAGE.cached_input_tokens,
                output_tokens=USAGE.output_tokens,
                output_reasoning_tokens=USAGE.reasoning_tokens,
            ),
            model,
            provider_id=provider,
            genai_request_timestamp=DAY,
        ).total_price
        priced = prices.cost(model, provider, DAY, USAGE)
        assert priced is not None
        assert Decimal(priced.nano_usd) / 10**9 == expected, model


def test_every_bundled_model_costs_what_the_library_says() -> None:
    """Each model of every provider, on two days, with and without cache and reasoning:
    cost() is calc_price's total to the nano-dollar (cost() takes a shorter way)."""
    usages = [USAGE, TokenUsage(input_tokens=777, output_tokens=333)]
    compared = 0
    for provider in providers:
        for model in provider.models:
            for day in (datetime(2024, 9, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)):
                for usage in usages:
                    try:
                        expected = calc_price(
                            Usage(
                                input_tokens=usage.input_tokens,
                                cache_read_tokens=usage.cached_input_tokens,
                                output_tokens=usage.output_tokens,
                                output_reasoning_tokens=usage.reasoning_tokens,
                            ),
                            model.id,
                            provider_id=provider.id,
                            genai_request_timestamp=day,
                        )
                    except (LookupError, ValueError):
                        continue  # not found under its own id, or usage it refuses
                    priced = _BUNDLED.cost(model.id, provider.id, day, usage)
                    if priced is None:  # listed without a price for tokens
                        assert expected.model_price.input_mtok is None
                        assert expected.model_price.output_mtok is None
                        continue
                    assert (priced.provider, priced.priced_model) == (
                        expected.provider.id,
                        expected.model.id,
                    )
                    nano_usd = (expected.total_price * 10**9).quantize(Decimal(1), ROUND_HALF_UP)
                    assert priced.nano_usd == nano_usd, (
                        provider.id,
                        model.id,
                    )
                    compared += 1
    assert compared > 2000


def test_a_historic_date_takes_that_days_price(prices: Prices) -> None:
    """o3's price fell on 2025-06-10: runs created before pay the old one (unix seconds too)."""
    usage = TokenUsage(input_tokens=1_000_000, output_tokens=1_000_000)
    before = prices.cost("o3", None, datetime(2025, 6, 9, 23, 59, tzinfo=UTC), usage)
    after = prices.cost("o3", None, datetime(2025, 6, 10, tzinfo=UTC).timestamp(), usage)
    assert before is not None
    assert after is not None
    assert (before.cost_usd, after.cost_usd) == (50.0, 10.0)
    naive = prices.cost("o3", None, datetime(2025, 6, 9, 23, 59), usage)  # naive: UTC
    assert naive == before


def test_reasoning_tokens_are_output_unless_the_model_prices_them(prices: Prices) -> None:
    """Reasoning is part of output: no change for o3-mini; its own rate where one exists."""
    plain = TokenUsage(input_tokens=1000, output_tokens=500)
    thinking = TokenUsage(input_tokens=1000, output_tokens=500, reasoning_tokens=400)
    assert prices.cost("o3-mini", None, DAY, plain) == prices.cost("o3-mini", None, DAY, thinking)
    # Perplexity's deep research lists reasoning tokens at $3/M against $8/M for output.
    cheaper = prices.cost("sonar-deep-research", "perplexity", DAY, thinking)
    full = prices.cost("sonar-deep-research", "perplexity", DAY, plain)
    assert cheaper is not None
    assert full is not None
    assert full.nano_usd - cheaper.nano_usd == 400 * (8 - 3) * 1000


@pytest.mark.parametrize(
    ("model", "provider"),
    [
        ("no-such-model", None),
        ("gpt-4 o", None),
        ("", None),
        (None, None),
        ("gpt-4o", "github-copilot"),  # listed there, without a price (subscription)
    ],
)
def test_unknown_or_unpriced_models_have_no_cost(
    prices: Prices, model: str | None, provider: str | None
) -> None:
    """No model, an unknown one, or one whose table lists no price: None, never zero."""
    assert prices.cost(model, provider, DAY, USAGE) is None
    assert prices.per_token(model, DAY, provider) is None


def test_a_provider_hint_is_tried_first_then_the_models_own(prices: Prices) -> None:
    """Azure serves OpenAI's models at their prices; a wrong hint falls back to the name."""
    azure = prices.cost("gpt-4o", "azure", DAY, USAGE)
    assert azure is not None
    assert azure.nano_usd == nano("2.5", "1.25", "10")
    assert prices.cost("gpt-4o", "no-such-provider", DAY, USAGE) == prices.cost(
        "gpt-4o", None, DAY, USAGE
    )


def test_usage_parts_past_their_totals_are_clamped(prices: Prices) -> None:
    """A producer reporting more cached than input tokens gets a cost, not an exception."""
    odd = TokenUsage(input_tokens=10, output_tokens=5, cached_input_tokens=50, reasoning_tokens=9)
    assert prices.cost("gpt-4o", None, DAY, odd) == prices.cost(
        "gpt-4o", None, DAY, TokenUsage(10, 5, cached_input_tokens=10, reasoning_tokens=5)
    )


@given(
    st.sampled_from(["gpt-4o", "gpt-4o-mini", "gpt-4.1", "o3-mini", "o3", "gpt-4-turbo"]),
    st.integers(0, 2**33 - 1),
    st.integers(0, 2**33 - 1),
    st.integers(0, 2**33 - 1),
)
def test_the_vector_prices_totals_exactly_as_cost_does(
    model: str, inp: int, cached: int, out: int
) -> None:
    """For untiered models, the commit script's arithmetic gives cost()'s nano-dollars."""
    prices = _BUNDLED
    usage = TokenUsage(input_tokens=inp, output_tokens=out, cached_input_tokens=min(cached, inp))
    vector = prices.per_token(model, DAY)
    priced = prices.cost(model, None, DAY, usage)
    assert vector is not None
    assert priced is not None
    assert vector.exact
    assert vector.priced_model == priced.priced_model
    assert vector.nano_usd(usage) == priced.nano_usd


def test_the_vector_is_in_nano_dollars_per_token(prices: Prices) -> None:
    """gpt-4o: $2.50, $1.25, $10 per million tokens are 2500, 1250, 10000 nano-dollars."""
    vector = prices.per_token("gpt-4o-2024-08-06", DAY)
    assert vector is not None
    assert (vector.priced_model, vector.input, vector.cached_input, vector.output) == (
        "gpt-4o",
        2500.0,
        1250.0,
        10000.0,
    )
    assert vector.input_usd_per_token == 2.5e-6
    assert vector.cached_input_usd_per_token == 1.25e-6
    assert vector.output_usd_per_token == 1e-5


def test_the_vector_says_when_it_is_not_exact(prices: Prices) -> None:
    """Tiered prices (base tier in the vector) and reasoning rates make it inexact."""
    tiered = prices.per_token("gpt-5.4", DAY)
    assert tiered is not None
    assert not tiered.exact
    assert (tiered.input, tiered.output) == (2500.0, 15000.0)  # the base tier's rates
    reasoning = prices.per_token("sonar-deep-research", DAY, "perplexity")
    assert reasoning is not None
    assert not reasoning.exact


def test_nothing_is_fetched_and_the_librarys_updates_are_ignored(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No socket, no thread; data set by the library's updater does not change our prices."""

    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("prices opened a connection or a thread")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(threading.Thread, "start", refuse)
    # What UpdatePrices does with downloaded data: replace the library's global snapshot.
    empty = data_snapshot.DataSnapshot(providers=[], from_auto_update=True)
    monkeypatch.setattr(data_snapshot, "_custom_snapshot", empty)

    settings = write(
        tmp_path, "prices: [{model: mine, input_usd_per_mtok: 1, output_usd_per_mtok: 2}]"
    )
    prices = Prices.load(settings)
    for model in ("gpt-4o", "gpt-4.1", "o3-mini", "claude-sonnet-4-20250514", "mine", "nope"):
        prices.cost(model, None, DAY, USAGE)
        prices.per_token(model, DAY)
    priced = prices.cost("gpt-4o", None, DAY, USAGE)
    assert priced is not None
    assert priced.nano_usd == nano("2.5", "1.25", "10")


# -- RUNSTEPS_PRICES_FILE -----------------------------------------------------------------------

PRICES_YAML = """
# Negotiated, fine-tuned and self-hosted prices, USD per million tokens.
prices:
  - model: gpt-4o                      # a negotiated rate for a bundled model
    input_usd_per_mtok: 2.0
    cached_input_usd_per_mtok: 0.5
    output_usd_per_mtok: 8
  - model: acme-support-ft             # every fine-tune of ours, by pattern
    match: "^ft:gpt-4o-mini(-2024-07-18)?:acme:"
    input_usd_per_mtok: 0.3
    output_usd_per_mtok: 1.2
  - model: llama-local                 # self-hosted: free until the new GPUs
    input_usd_per_mtok: 0
    output_usd_per_mtok: 0
  - model: llama-local
    from: 2025-06-01
    input_usd_per_mtok: 0.05
    output_usd_per_mtok: 0.1
  - model: gpt-4.1                     # only what Azure bills us
    provider: azure
    input_usd_per_mtok: 1
    output_usd_per_mtok: 4
"""


def test_the_prices_file_adds_and_overrides_prices(tmp_path: Path) -> None:
    """Overrides win, patterns match fine-tunes, uncached rate by default, priced_model named."""
    prices = Prices.load(write(tmp_path, PRICES_YAML))
    assert prices.cost("GPT-4o", None, DAY, USAGE) == Priced(
        "gpt-4o", "prices_file", nano("2", "0.5", "8")
    )
    # A dated snapshot is another name: the bundled price still applies to it.
    assert prices.cost("gpt-4o-2024-08-06", None, DAY, USAGE) == Priced(
        "gpt-4o", "openai", nano("2.5", "1.25", "10")
    )
    fine_tune = prices.cost("ft:gpt-4o-mini-2024-07-18:acme:support:9abc", None, DAY, USAGE)
    assert fine_tune == Priced("acme-support-ft", "prices_file", nano("0.3", "0.3", "1.2"))
    assert prices.cost("ft:gpt-4o-mini:other-org:x:1", None, DAY, USAGE) is None


def test_a_price_valid_from_a_date_applies_from_that_day(tmp_path: Path) -> None:
    """Before an entry's `from`, the older entry (or the bundled price) applies."""
    prices = Prices.load(write(tmp_path, PRICES_YAML))
    free = prices.cost("llama-local", None, datetime(2025, 5, 31, 23, tzinfo=UTC), USAGE)
    paid = prices.cost("llama-local", None, datetime(2025, 6, 1, tzinfo=UTC), USAGE)
    assert free == Priced("llama-local", "prices_file", 0)
    assert paid == Priced("llama-local", "prices_file", nano("0.05", "0.05", "0.1"))
    vector = prices.per_token("llama-local", datetime(2025, 6, 1, tzinfo=UTC))
    assert vector is not None
    assert (vector.input, vector.cached_input, vector.output, vector.exact) == (
        50.0,
        50.0,
        100.0,
        True,
    )


def test_a_provider_bound_price_applies_only_to_that_provider(tmp_path: Path) -> None:
    """gpt-4.1 through Azure at the file's rate, through OpenAI at the bundled one."""
    prices = Prices.load(write(tmp_path, PRICES_YAML))
    assert prices.cost("gpt-4.1", "Azure", DAY, USAGE) == Priced(
        "gpt-4.1", "prices_file", nano("1", "1", "4")
    )
    assert prices.cost("gpt-4.1", None, DAY, USAGE) == Priced(
        "gpt-4.1", "openai", nano("2", "0.5", "8")
    )


def test_a_json_prices_file_reads_the_same(tmp_path: Path) -> None:
    """JSON is accepted as well as YAML."""
    document = {
        "prices": [
            {"model": "mine", "input_usd_per_mtok": "0.1", "output_usd_per_mtok": 0.4},
        ]
    }
    prices = Prices.load(write(tmp_path, json.dumps(document), "prices.json"))
    assert prices.cost("mine", None, DAY, USAGE) == Priced(
        "mine", "prices_file", nano("0.1", "0.1", "0.4")
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("prices: [{model: m, input_usd_per_mtok: -1, output_usd_per_mtok: 1}]",
         "prices.0.input_usd_per_mtok: Input should be greater than or equal to 0"),
        ("prices: [{model: m, input_usd_per_mtok: .nan, output_usd_per_mtok: 1}]",
         "prices.0.input_usd_per_mtok: Input should be a finite number"),
        ("prices: [{model: m, input_usd_per_mtok: 1}]",
         "prices.0.output_usd_per_mtok: Field required"),
        ("prices: [{model: m, input_usd_per_mtok: 1, output_usd_per_mtok: 1, outptu: 2}]",
         "prices.0.outptu: Extra inputs are not permitted"),
        ("prices: [{model: m, match: '(', input_usd_per_mtok: 1, output_usd_per_mtok: 1}]",
         "prices.0.match: Input should be a valid regular expression"),
        ("prices: [{model: m, from: someday, input_usd_per_mtok: 1, output_usd_per_mtok: 1}]",
         "prices.0.from: Input should be a valid date"),
        ("prices: [{model: '', input_usd_per_mtok: 1, output_usd_per_mtok: 1}]",
         "prices.0.model: String should have at least 1 character"),
        ("- model: m", "Input should be a valid dictionary"),
        ("", "Input should be a valid dictionary"),
        ("prices: [unclosed", "not YAML or JSON"),
    ],
)  # fmt: skip
def test_a_bad_prices_file_is_one_line_naming_the_problem(
    tmp_path: Path, text: str, problem: str
) -> None:
    """Every problem is a ConfigError of one line: the variable, the file, where, what."""
    settings = write(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        Prices.load(settings)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"RUNSTEPS_PRICES_FILE: {settings.prices_file}: ")
    assert problem in message


def test_a_missing_prices_file_is_named(tmp_path: Path) -> None:
    """A file that is not there: the error says it cannot be read."""
    with pytest.raises(ConfigError, match="cannot be read"):
        read_prices_file(tmp_path / "absent.yaml")


def test_the_worker_exits_2_on_a_bad_prices_file(tmp_path: Path) -> None:
    """`runsteps worker` with a bad file: exit 2 and one line naming the problem, before it
    ever reaches for Redis (nothing listens at the URL)."""
    path = tmp_path / "prices.yaml"
    path.write_text("prices: [{model: m, input_usd_per_mtok: -1, output_usd_per_mtok: 1}]")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNSTEPS_")}
    env |= {"RUNSTEPS_PRICES_FILE": str(path), "RUNSTEPS_REDIS_URL": "redis://127.0.0.1:1/0"}
    done = subprocess.run(
        [sys.executable, "-m", "service", "worker"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    err = done.stderr
    assert err.count("\n") == 1, err
    assert err.startswith(
        f"runsteps worker: configuration error: RUNSTEPS_PRICES_FILE: {path}: "
        "prices.0.input_usd_per_mtok: Input should be greater than or equal to 0"
    )


def test_no_prices_file_means_the_bundled_prices() -> None:
    """RUNSTEPS_PRICES_FILE unset (or empty, as the ConfigMap has it): bundled prices only."""
    assert Settings(prices_file="").prices_file is None
    assert Prices.load(Settings()).entries == ()


@pytest.mark.parametrize("at", [2.0**53, -1e20, float("nan"), 0.0])
def test_a_time_past_the_calendar_still_prices(prices: Prices, at: float) -> None:
    """A creation time no datetime holds takes the first or last prices, never raises."""
    priced = prices.cost("gpt-4o", None, at, USAGE)
    assert priced is not None
    assert prices.per_token("gpt-4o", at) is not None


def test_half_a_nano_dollar_rounds_up_both_ways(tmp_path: Path) -> None:
    """$0.0375 per million is 37.5 nano-dollars a token: 3 tokens cost 113, by either path."""
    prices = Prices.load(
        write(tmp_path, "prices: [{model: m, input_usd_per_mtok: 0.0375, output_usd_per_mtok: 0}]")
    )
    usage = TokenUsage(input_tokens=3)
    vector = prices.per_token("m", DAY)
    assert vector is not None
    assert vector.input == 37.5
    assert vector.nano_usd(usage) == 113
    assert prices.cost("m", None, DAY, usage) == Priced("m", "prices_file", 113)

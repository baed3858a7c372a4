"""PURE: what a run's tokens cost, at its model's prices on the day the run was created.

Prices come from `genai-prices` (its bundled data, pinned in the lock: historic prices by
date, every major provider) and from an optional file, `RUNSTEPS_PRICES_FILE`, that adds or
overrides prices (negotiated rates, fine-tuned or self-hosted models). The file is read once,
when `Prices.load` runs at start-up; nothing here does I/O afterwards.

The library can update its data from the network (`UpdatePrices`, opt-in, and a module
global every `calc_price` reads once anything set it). Neither is used here: this module
keeps a snapshot of the bundled data of its own and never starts the updater, so a worker's
prices are exactly those of the locked release, whatever else runs in the process.

Two ways to price, for the two places usage is known:
- `cost`: usage in hand (Python), priced as the library prices it: cached input at its
  cached rate, reasoning tokens as output unless the model has a price of their own.
- `per_token`: a linear price vector for the commit script, which multiplies the token
  totals it keeps in Redis (Python never sees them). `TokenPrices` says when it is exact.

Longer than most modules because both share one lookup (file entries, then the library's
snapshot, a bounded cache) and the short way `cost` takes past the library's general
calculation (about 15 times faster), which must match it; the file's format is its own
module, `prices_file`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from functools import cache
from typing import TYPE_CHECKING, Any

from service.core.prices_file import PriceEntry, read_prices_file

if TYPE_CHECKING:
    from genai_prices.data_snapshot import DataSnapshot
    from genai_prices.types import ModelInfo, ModelPrice, Provider

    from service.settings import Settings

__all__ = ["Priced", "Prices", "TokenPrices", "TokenUsage", "bundled_prices"]

_NANO = 1_000_000_000
_PER = Decimal(1_000_000)  # prices are per million tokens
# Lookups remembered (hits and misses); past that many, the cache and the snapshot (whose own
# caches grow with every model name it is asked about) start afresh: a producer sending
# endless unique model names cannot grow the worker's memory.
_CACHED = 4096


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """A run's (or response's) tokens. Each detail is a part of its total: `cached_input_tokens`
    of `input_tokens`, `reasoning_tokens` of `output_tokens` (as both APIs report them)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0

    def clamped(self) -> TokenUsage:
        """The same usage with each part at most its total (a producer may send worse)."""
        inp, out = max(self.input_tokens, 0), max(self.output_tokens, 0)
        return TokenUsage(
            inp,
            out,
            min(max(self.cached_input_tokens, 0), inp),
            min(max(self.reasoning_tokens, 0), out),
        )


@dataclass(frozen=True, slots=True)
class Priced:
    """A priced usage: its cost, exact in whole nano-dollars, and the price that matched."""

    priced_model: str  # the price table's model id (or the prices file's `model`)
    provider: str  # the library's provider id, or `prices_file`
    nano_usd: int  # the cost in 1e-9 US dollars, rounded half up

    @property
    def cost_usd(self) -> float:
        """The cost in US dollars: the double nearest `nano_usd` / 1e9 (a JSON number that
        reads back as exactly that many nano-dollars)."""
        return self.nano_usd / _NANO


@dataclass(frozen=True, slots=True)
class TokenPrices:
    """A model's prices as a linear vector, in nano-dollars (1e-9 USD) per token.

    For the commit script, which knows only token totals: cost in nano-dollars =
    (input - cached) * `input` + cached * `cached_input` + output * `output`, rounded half
    up to an integer, math.floor(x + 0.5) (`nano_usd` does exactly this). In nano-dollars
    every price with at most three decimals per million tokens (all of OpenAI's) is an
    integer, halves and quarters (four or five decimals) are exact doubles too; so is each
    product below 2**53 and so the sum: the result is `Prices.cost`'s to the nano-dollar.

    `exact` is False when the vector cannot say what `Prices.cost` would: the model has
    tiered prices (the rate depends on the input tokens of each request, which a run's
    totals do not show: the vector holds the base tier's rates, so a run whose requests
    passed a tier's threshold costs more than it says), or reasoning tokens have a price of
    their own (the vector prices them as output).
    """

    priced_model: str
    provider: str
    input: float
    cached_input: float
    output: float
    exact: bool

    @property
    def input_usd_per_token(self) -> float:
        """`input` in US dollars per token."""
        return self.input / _NANO

    @property
    def cached_input_usd_per_token(self) -> float:
        """`cached_input` in US dollars per token."""
        return self.cached_input / _NANO

    @property
    def output_usd_per_token(self) -> float:
        """`output` in US dollars per token."""
        return self.output / _NANO

    def nano_usd(self, usage: TokenUsage) -> int:
        """The vector applied to `usage`, in the arithmetic the commit script uses."""
        u = usage.clamped()
        cost = (
            (u.input_tokens - u.cached_input_tokens) * self.input
            + u.cached_input_tokens * self.cached_input
            + u.output_tokens * self.output
        )
        return math.floor(cost + 0.5)


def _day(at: datetime | float) -> datetime:
    if isinstance(at, datetime):
        return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    try:
        return datetime.fromtimestamp(at, tz=UTC)
    except (OverflowError, OSError, ValueError):  # past the calendar: its first or last day
        return (datetime.max if at > 0 else datetime.min).replace(tzinfo=UTC)


def _nano(usd: Decimal) -> int:
    # Half up, as the commit script's math.floor(x + 0.5) rounds.
    return int((usd * _NANO).to_integral_value(ROUND_HALF_UP))


def _per_token(price_per_mtok: Decimal) -> float:
    # Nano-dollars per token = dollars per million tokens * 1000.
    return float(price_per_mtok * 1000)


@cache
def bundled_prices() -> Prices:
    """The bundled price table alone, built once per process (no prices file)."""
    return Prices()


class Prices:
    """The price table: the prices file's entries first, then the library's bundled data."""

    def __init__(self, entries: tuple[PriceEntry, ...] = ()) -> None:
        from genai_prices.data import providers

        self.entries = entries
        self._providers = providers
        self._snapshot = self._fresh_snapshot()
        self._found: dict[tuple[str, str | None], tuple[Provider, ModelInfo] | None] = {}
        # Vectors by (model, provider, day): every run op of a run asks again.
        self._vectors: dict[tuple[str, str | None, date], TokenPrices | None] = {}

    @classmethod
    def load(cls, settings: Settings) -> Prices:
        """The table for these settings: bundled prices, plus `RUNSTEPS_PRICES_FILE` if set
        (read now; a bad file is a ConfigError naming the problem)."""
        if settings.prices_file is None:
            return cls()
        return cls(tuple(read_prices_file(settings.prices_file).prices))

    def cost(
        self,
        model: str | None,
        provider: str | None,
        at: datetime | float,
        usage: TokenUsage,
    ) -> Priced | None:
        """What `usage` of `model` cost for a run created `at` (a datetime, naive = UTC, or
        unix seconds); None when the model is unknown or has no price.

        `provider` is a hint (a genai-prices provider id: openai, azure, anthropic, ...):
        tried first, then the provider the model's name points to.
        """
        if not model:
            return None
        when = _day(at)
        usage = usage.clamped()
        entry = self._entry(model, provider, when.date())
        if entry is not None:
            cached = entry.cached_input_usd_per_mtok
            usd = (
                (usage.input_tokens - usage.cached_input_tokens) * entry.input_usd_per_mtok
                + usage.cached_input_tokens
                * (entry.input_usd_per_mtok if cached is None else cached)
                + usage.output_tokens * entry.output_usd_per_mtok
            ) / _PER
            return Priced(entry.model, "prices_file", _nano(usd))
        found = self._find(model, provider)
        if found is None:
            return None
        source, info = found
        model_price = info.get_prices(when)
        if not _has_token_prices(model_price):
            return None
        total = _token_cost(model_price, usage)
        if total is None:  # prices the short way cannot apply: the library's own calculation
            from genai_prices.types import Usage

            tokens = Usage(
                input_tokens=usage.input_tokens,
                cache_read_tokens=usage.cached_input_tokens,
                output_tokens=usage.output_tokens,
                output_reasoning_tokens=usage.reasoning_tokens,
            )
            try:
                total = info.calc_price(tokens, source, genai_request_timestamp=when).total_price
            except ValueError:  # usage the library refuses for this model's units
                return None
        return Priced(info.id, source.id, _nano(total))

    def per_token(
        self, model: str | None, at: datetime | float, provider: str | None = None
    ) -> TokenPrices | None:
        """`model`'s prices for a run created `at` as a vector the commit script can
        multiply token totals with; None when the model is unknown or has no price."""
        if not model:
            return None
        when = _day(at)
        key = (model, provider, when.date())
        if key in self._vectors:
            return self._vectors[key]
        if len(self._vectors) >= _CACHED:  # endless unique names cannot grow memory
            self._vectors.clear()
        vector = self._vectors[key] = self._per_token(model, provider, when)
        return vector

    def _per_token(self, model: str, provider: str | None, when: datetime) -> TokenPrices | None:
        entry = self._entry(model, provider, when.date())
        if entry is not None:
            cached = entry.cached_input_usd_per_mtok
            return TokenPrices(
                entry.model,
                "prices_file",
                _per_token(entry.input_usd_per_mtok),
                _per_token(entry.input_usd_per_mtok if cached is None else cached),
                _per_token(entry.output_usd_per_mtok),
                exact=True,
            )
        found = self._find(model, provider)
        if found is None:
            return None
        source, info = found
        mp = info.get_prices(when)
        if not _has_token_prices(mp):
            return None
        from genai_prices.types import TieredPrices

        inp, cached, out, reasoning = (
            _price(mp, "input_mtok"),
            _price(mp, "cache_read_mtok"),
            _price(mp, "output_mtok"),
            _price(mp, "output_reasoning_mtok"),
        )
        tiered = any(isinstance(p, TieredPrices) for p in (inp, cached, out, reasoning))
        base_in, base_out = _base(inp), _base(out)
        base_cached = base_in if cached is None else _base(cached)
        return TokenPrices(
            info.id,
            source.id,
            _per_token(base_in),
            _per_token(base_cached),
            _per_token(base_out),
            exact=not tiered and (reasoning is None or _base(reasoning) == base_out),
        )

    def _entry(self, model: str, provider: str | None, day: date) -> PriceEntry | None:
        """The file's entry for `model`: of those that apply, the latest `from` wins, and
        of equal ones the last in the file."""
        best: PriceEntry | None = None
        for entry in self.entries:
            if entry.applies(model, provider, day) and (
                best is None or (entry.valid_from or date.min) >= (best.valid_from or date.min)
            ):
                best = entry
        return best

    def _fresh_snapshot(self) -> DataSnapshot:
        from genai_prices.data_snapshot import DataSnapshot

        # Our own snapshot of the bundled data, never the library's global one (which its
        # opt-in updater replaces with downloaded data).
        return DataSnapshot(providers=self._providers, from_auto_update=False)

    def _find(self, model: str, provider: str | None) -> tuple[Provider, ModelInfo] | None:
        """The library's provider and model for `model`: the hinted provider's (with its
        fallbacks, e.g. azure -> openai) first, then the one the model's name points to."""
        key = (model.lower(), provider)
        if key in self._found:
            return self._found[key]
        if len(self._found) >= _CACHED:
            self._found.clear()
            self._snapshot = self._fresh_snapshot()
        found = None
        for hint in (provider, None) if provider else (None,):
            try:
                found = self._snapshot.find_provider_model(model, None, hint, None)
                break
            except LookupError:
                continue
        self._found[key] = found
        return found


def _price(model_price: ModelPrice, key: str) -> Any:
    # ModelPrice answers None for a price key it does not hold.
    return getattr(model_price, key)


def _base(price: Any) -> Decimal:
    from genai_prices.types import TieredPrices

    if price is None:
        return Decimal(0)
    return price.base if isinstance(price, TieredPrices) else Decimal(price)


# The usage keys we report, by the price key that prices them (all per million tokens).
_REPORTED = {
    "input_mtok": "input_tokens",
    "cache_read_mtok": "cached_input_tokens",
    "output_mtok": "output_tokens",
    "output_reasoning_mtok": "reasoning_tokens",
}


@cache
def _families() -> dict[str, str]:
    """The unit family (tokens, requests, tool_calls, ...) of each of the library's price keys."""
    from genai_prices.data_units import unit_data

    return {unit["price_key"]: unit["dimensions"]["family"] for unit in unit_data.values()}


def _token_cost(model_price: ModelPrice, usage: TokenUsage) -> Decimal | None:
    """`usage` at `model_price` in US dollars, as the library computes it, or None where
    that takes the library itself (tiered prices, other token prices, a per-request fee).

    The library is general (any unit, any mix) and takes about half a millisecond a call;
    for the usual prices of the four token counts we report it comes down to: a priced
    part (cached, reasoning) is taken out of its total and priced at its own rate, an
    unpriced part stays in its total. Units we report nothing for (web searches, audio
    seconds, ...) cost nothing. tests/unit/test_prices.py holds both ways equal.
    """
    families = _families()
    prices: dict[str, Decimal] = {}
    for key, price in vars(model_price).items():
        if price is None or key.startswith("_"):
            continue
        if key in _REPORTED:
            if not isinstance(price, Decimal):
                return None  # tiered
            prices[key] = price
        elif families.get(key) in (None, "tokens", "requests"):
            return None  # an unknown unit, another token price, or a fee per request
    inp, out = prices.get("input_mtok"), prices.get("output_mtok")
    if inp is None or out is None:
        return None
    cached, reasoning = prices.get("cache_read_mtok"), prices.get("output_reasoning_mtok")
    total = Decimal(0)
    if cached is None:
        total += usage.input_tokens * inp
    else:
        total += (usage.input_tokens - usage.cached_input_tokens) * inp
        total += usage.cached_input_tokens * cached
    if reasoning is None:
        total += usage.output_tokens * out
    else:
        total += (usage.output_tokens - usage.reasoning_tokens) * out
        total += usage.reasoning_tokens * reasoning
    return total / _PER


def _has_token_prices(model_price: ModelPrice) -> bool:
    """Whether the model has a price for tokens at all (some entries list none: a model
    included in a subscription, one whose price is not published)."""
    return _price(model_price, "input_mtok") is not None or (
        _price(model_price, "output_mtok") is not None
    )

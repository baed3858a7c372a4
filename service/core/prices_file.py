"""The prices file, `RUNSTEPS_PRICES_FILE`: its format (README: *Prices*), read and validated
once, at start-up (the only I/O of pricing), into the entries `prices.Prices` looks up first."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path
from re import Pattern
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.errors import ConfigError

__all__ = ["PriceEntry", "PricesFile", "read_prices_file"]

_Price = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]


class PriceEntry(BaseModel):
    """One price of `RUNSTEPS_PRICES_FILE`, in US dollars per million tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    model: str = Field(
        min_length=1,
        description="the model id (case-insensitive); reported as `priced_model`",
    )
    match: Pattern[str] | None = Field(
        None,
        description="a regular expression searched in the model name instead of `model`, "
        "e.g. '^ft:gpt-4o-mini:acme:' (anchor it with ^ and $)",
    )
    provider: str | None = Field(
        None,
        min_length=1,
        description="applies only when the run's provider hint is this one (case-insensitive)",
    )
    valid_from: date | None = Field(
        None,
        alias="from",
        description="applies to runs created on or after this day (UTC); before it, the "
        "file's older entries or the bundled prices",
    )
    input_usd_per_mtok: _Price
    cached_input_usd_per_mtok: _Price | None = Field(
        None, description="cached input tokens; unset: priced as input"
    )
    output_usd_per_mtok: _Price

    def applies(self, model: str, provider: str | None, day: date) -> bool:
        """Whether this entry prices `model` for a run created on `day`."""
        if self.provider is not None and (provider or "").lower() != self.provider.lower():
            return False
        if self.valid_from is not None and day < self.valid_from:
            return False
        if self.match is not None:
            return self.match.search(model) is not None
        return model.lower() == self.model.lower()


class PricesFile(BaseModel):
    """The document `RUNSTEPS_PRICES_FILE` holds (README: *Prices*)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prices: list[PriceEntry]


def read_prices_file(path: Path) -> PricesFile:
    """The prices file at `path`, validated; a ConfigError naming the problem in one line."""
    import yaml

    where = f"RUNSTEPS_PRICES_FILE: {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot be read ({_one_line(exc)})") from None
    try:
        document = yaml.safe_load(text)  # YAML, or JSON (which YAML reads too)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not YAML or JSON ({_one_line(exc)})") from None
    try:
        return PricesFile.model_validate(document)
    except ValidationError as exc:
        problems = [
            ".".join(map(str, e["loc"])) + ": " + e["msg"] if e["loc"] else e["msg"]
            for e in exc.errors()
        ]
        raise ConfigError(f"{where}: " + "; ".join(problems)) from None


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())

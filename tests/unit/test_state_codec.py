"""The step state string: every record survives encode -> decode unchanged."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from contracts.run_step import LastErrorCode, StepStatus, StepType
from service.store import STATE_FIELDS, Tracked, decode_state, encode_state

_PLAIN = st.text(st.characters(blacklist_characters="|,", blacklist_categories=["Cs"]), min_size=1)
_INT = st.integers(-(2**40), 2**40).map(str)
_STATUSES = st.sampled_from([str(s) for s in StepStatus])


@st.composite
def records(draw: st.DrawFn) -> dict[str, str]:
    record = {"v": draw(_PLAIN), "s": draw(_STATUSES)}
    optional = {
        "x": st.lists(_STATUSES, min_size=1, unique=True).map(",".join),
        "c": _INT,
        "y": st.sampled_from([str(t) for t in StepType]),
        "d": _INT,
        "e": st.sampled_from([str(c) for c in LastErrorCode]),
    }
    for name, values in optional.items():
        if draw(st.booleans()):
            record[name] = draw(values)
    if draw(st.booleans()):  # usage comes whole; its total may or may not be the sum
        prompt, completion = draw(st.integers(0, 10**9)), draw(st.integers(0, 10**9))
        total = draw(st.sampled_from([prompt + completion, draw(st.integers(0, 10**9))]))
        record |= {"up": str(prompt), "uc": str(completion), "ut": str(total)}
    return record


@given(records())
def test_every_record_round_trips(record: dict[str, str]) -> None:
    assert set(record) <= set(STATE_FIELDS)
    assert decode_state(encode_state(record)) == record


def test_state_is_compact() -> None:
    record = {"v": "a1", "s": "completed", "c": "1764000000", "d": "1764000014"}
    record |= {"up": "1266", "uc": "101", "ut": "1367"}
    raw = encode_state(record)
    assert raw == "a1|c||1764000000||14|1266|101||"
    assert decode_state(raw) == record


def test_a_long_state_stays_short_enough_for_a_listpack() -> None:
    """Redis keeps a hash compact while every value is at most 64 bytes (the default)."""
    record = {"v": "f" * 6 + "f" * 8, "s": "failed", "x": "completed,cancelled", "c": "9" * 10}
    record |= {"y": "tool_calls", "d": "9" * 10 + "9", "up": "9" * 6, "uc": "9" * 6}
    record |= {"ut": "1", "e": "rate_limit_exceeded"}
    assert len(encode_state(record)) <= 64


def test_state_uses_one_letter_codes() -> None:
    raw = encode_state({"v": "a1", "s": "completed", "x": "failed,cancelled", "y": "tool_calls"})
    assert raw == "a1|c|f,x||t|||||"
    tracked = Tracked.parse(raw)
    assert tracked.status is StepStatus.COMPLETED
    assert tracked.rejected == {StepStatus.FAILED, StepStatus.CANCELLED}

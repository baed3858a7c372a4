"""The pure lifecycle: every (tracked, incoming) pair, and order/duplication properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.run_step import StepStatus
from service.lifecycle import Decision, Outcome, decide

IP = StepStatus.IN_PROGRESS
TERMINAL = [s for s in StepStatus if s is not IP]

TABLE: list[tuple[StepStatus | None, StepStatus, Outcome]] = [
    (None, IP, Outcome.STARTED),
    *[(None, t, Outcome.FINISHED) for t in TERMINAL],
    (IP, IP, Outcome.DUPLICATE),
    *[(IP, t, Outcome.FINISHED) for t in TERMINAL],
    *[(t, IP, Outcome.STALE) for t in TERMINAL],
    *[(t, t, Outcome.DUPLICATE) for t in TERMINAL],
    *[(a, b, Outcome.REJECTED) for a in TERMINAL for b in TERMINAL if a is not b],
]


def test_table_covers_every_pair() -> None:
    """The table names every (tracked status or none, incoming status) pair once."""
    pairs = {(cur, inc) for cur, inc, _ in TABLE}
    assert len(pairs) == len(TABLE) == (len(StepStatus) + 1) * len(StepStatus)


@pytest.mark.parametrize(("current", "incoming", "outcome"), TABLE)
def test_decide_table(current: StepStatus | None, incoming: StepStatus, outcome: Outcome) -> None:
    """Each pair yields its outcome, and only state-changing outcomes store a status."""
    d = decide(current, incoming)
    assert d.outcome is outcome
    assert d.from_status is current
    assert d.to_status is incoming
    if outcome in (Outcome.STARTED, Outcome.FINISHED):
        assert d.new_status is incoming
    else:
        assert d.new_status is None
    assert d.changes_state == (outcome in (Outcome.STARTED, Outcome.FINISHED, Outcome.REJECTED))


def test_rejection_made_once() -> None:
    """A terminal step refuses another terminal status once; the redelivery is a duplicate."""
    first = decide(StepStatus.COMPLETED, StepStatus.FAILED)
    again = decide(StepStatus.COMPLETED, StepStatus.FAILED, frozenset({StepStatus.FAILED}))
    assert first.outcome is Outcome.REJECTED
    assert again.outcome is Outcome.DUPLICATE


def _replay(events: list[StepStatus]) -> tuple[StepStatus | None, list[tuple[str, str]]]:
    """Fold events through decide like the store does; return final status and emissions."""
    status: StepStatus | None = None
    rejected: frozenset[StepStatus] = frozenset()
    emitted: list[tuple[str, str]] = []
    for incoming in events:
        d: Decision = decide(status, incoming, rejected)
        if d.outcome is Outcome.STARTED:
            emitted.append(("started", ""))
        elif d.outcome is Outcome.FINISHED:
            emitted.append(("finished", str(incoming)))
        elif d.outcome is Outcome.REJECTED:
            emitted.append(("rejected", str(incoming)))
            rejected |= {incoming}
        status = d.new_status or status
    return status, emitted


@given(
    terminal=st.sampled_from(TERMINAL),
    progress_count=st.integers(min_value=0, max_value=3),
    copies=st.integers(min_value=1, max_value=3),
    data=st.data(),
)
def test_any_order_any_duplication_same_final_state(
    terminal: StepStatus, progress_count: int, copies: int, data: st.DataObject
) -> None:
    """A step's history, permuted and duplicated, ends terminal with each event once."""
    history = [IP] * progress_count + [terminal]
    delivered = data.draw(st.permutations(history * copies))
    final, emitted = _replay(delivered)
    assert final is terminal
    assert len(emitted) == len(set(emitted)), "a derived event was emitted twice"
    assert emitted.count(("finished", str(terminal))) == 1
    assert not [e for e in emitted if e[0] == "rejected"]


@given(events=st.lists(st.sampled_from(list(StepStatus)), max_size=12))
def test_arbitrary_streams_emit_each_event_at_most_once(events: list[StepStatus]) -> None:
    """Whatever arrives, every derived event (kind, status) is emitted at most once."""
    final, emitted = _replay(events)
    assert len(emitted) == len(set(emitted))
    assert sum(1 for kind, _ in emitted if kind == "finished") <= 1
    if events:
        assert final is not None

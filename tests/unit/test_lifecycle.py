"""The pure lifecycle: every (tracked, incoming) pair, its table, and order properties."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.core.lifecycle import RUNS, STEPS, Action, Decision, Machine, Outcome, decide
from service.core.lifecycle import transition_table as table_of

IP = "in_progress"
TERMINAL = sorted(STEPS.terminal)
RUN_OPEN = ["queued", "in_progress", "requires_action", "cancelling"]

STEP_TABLE: list[tuple[str | None, str, Outcome, bool]] = [
    (None, IP, Outcome.STARTED, True),
    *[(None, t, Outcome.FINISHED, True) for t in TERMINAL],
    (IP, IP, Outcome.DUPLICATE, False),
    *[(IP, t, Outcome.FINISHED, False) for t in TERMINAL],
    *[(t, IP, Outcome.STALE, False) for t in TERMINAL],
    *[(t, t, Outcome.DUPLICATE, False) for t in TERMINAL],
    *[(a, b, Outcome.REJECTED, False) for a in TERMINAL for b in TERMINAL if a != b],
]


def test_step_table_covers_every_pair() -> None:
    """The table names every (tracked status or none, incoming status) pair once."""
    pairs = {(cur, inc) for cur, inc, _, _ in STEP_TABLE}
    assert len(pairs) == len(STEP_TABLE) == (len(STEPS.codes) + 1) * len(STEPS.codes)


@pytest.mark.parametrize(("current", "incoming", "outcome", "starts"), STEP_TABLE)
def test_decide_steps(current: str | None, incoming: str, outcome: Outcome, starts: bool) -> None:
    """Each pair yields its outcome; only a first sighting publishes the start."""
    d = decide(STEPS, current, incoming)
    assert (d.outcome, d.from_status, d.to_status, d.starts) == (
        outcome,
        current,
        incoming,
        starts,
    )
    assert not d.waits


@pytest.mark.parametrize(
    ("current", "incoming", "action"),
    [
        (None, "queued", Action.START),
        (None, "requires_action", Action.WAIT_START),
        (None, "completed", Action.BEGIN_END),
        ("queued", "in_progress", Action.MOVE),
        ("in_progress", "requires_action", Action.AWAIT),
        ("requires_action", "requires_action", Action.DUPLICATE),
        ("requires_action", "in_progress", Action.MOVE),
        ("cancelling", "cancelled", Action.END),
        ("cancelled", "in_progress", Action.LATE),
        ("cancelled", "completed", Action.REJECT),
        ("completed", "completed", Action.DUPLICATE),
    ],
)
def test_decide_runs(current: str | None, incoming: str, action: Action) -> None:
    """A run moves freely between non-terminal statuses until one terminal status."""
    assert decide(RUNS, current, incoming).action is action


def test_refused_status_is_rejected_once() -> None:
    """A terminal status already refused is a duplicate, not a second rejection."""
    for machine in (STEPS, RUNS):
        assert decide(machine, "completed", "failed").outcome is Outcome.REJECTED
        refused = decide(machine, "completed", "failed", frozenset({"failed"}))
        assert refused.outcome is Outcome.DUPLICATE


@pytest.mark.parametrize("machine", [STEPS, RUNS], ids=lambda m: m.name)
def test_transition_table_is_decide(machine: Machine) -> None:
    """The commit script's table holds `decide`'s action for every pair of codes."""
    table = table_of(machine)
    names = {code: status for status, code in machine.codes.items()}
    assert len(table) == (len(names) + 1) * len(names)
    for key, action in table.items():
        current = names[key[0]] if len(key) == 2 else None
        assert decide(machine, current, names[key[-1]]).action is action


def _replay(machine: Machine, statuses: list[str]) -> list[Decision]:
    current: str | None = None
    rejected: frozenset[str] = frozenset()
    decisions = []
    for incoming in statuses:
        d = decide(machine, current, incoming, rejected)
        decisions.append(d)
        if d.outcome in (Outcome.STARTED, Outcome.MOVED, Outcome.FINISHED):
            current = d.to_status
        elif d.outcome is Outcome.REJECTED:
            rejected |= {incoming}
    return decisions


_STEP_STATUSES = st.lists(st.sampled_from(sorted(STEPS.codes)), min_size=1, max_size=12)
_RUN_STATUSES = st.lists(st.sampled_from(sorted(RUNS.codes)), min_size=1, max_size=12)


@given(_STEP_STATUSES)
def test_one_start_then_at_most_one_end(statuses: list[str]) -> None:
    """Any arrival order: exactly one start, first; at most one end, from in_progress."""
    decisions = _replay(STEPS, statuses)
    starts = [i for i, d in enumerate(decisions) if d.starts]
    ends = [d for d in decisions if d.outcome is Outcome.FINISHED]
    assert starts == [0]
    assert len(ends) <= 1
    assert len(ends) == (1 if any(s in STEPS.terminal for s in statuses) else 0)


@given(_RUN_STATUSES)
def test_run_ends_once_with_the_first_terminal(statuses: list[str]) -> None:
    """A run's first terminal status is its end; nothing later changes it."""
    decisions = _replay(RUNS, statuses)
    ends = [d.to_status for d in decisions if d.outcome is Outcome.FINISHED]
    first = next((s for s in statuses if s in RUNS.terminal), None)
    assert ends == ([] if first is None else [first])
    assert sum(d.starts for d in decisions) == 1


@given(_STEP_STATUSES)
def test_redelivery_changes_nothing(statuses: list[str]) -> None:
    """Delivering every status twice in a row publishes exactly what one delivery does."""
    noop = {Outcome.DUPLICATE, Outcome.STALE}
    once = [d.action for d in _replay(STEPS, statuses) if d.outcome not in noop]
    twice = _replay(
        STEPS, list(itertools.chain.from_iterable(zip(statuses, statuses, strict=True)))
    )
    assert [d.action for d in twice if d.outcome not in noop] == once

"""The commit script's protocol: its keys and arguments built from a batch, its reply read.

This module is the only one that knows the order of the commit script's arguments. Each
op goes as the fields named in `STEP_ARGS` or `RUN_ARGS` (attributes of `core.ops.Op`), in
that order; the script unpacks them into locals of the same names (a unit test compares its
two `unpack` lines with these tuples), and `storage.scripts` puts their counts in the
script's header. The reply is one action letter per op sent, read back against the very
list of ops the call was built from, so order is owned here, once.

KEYS: derived stream, source stream, stall index, seconds-budget index, then one run hash
per group.
ARGV: `BATCH_ARGS`, then the ids to ack that carry no op, then per group (a run's ops that
agree on its thread and assistant) `GROUP_ARGS` and its ops.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import attrgetter
from typing import TYPE_CHECKING, Any, cast

from service.core.lifecycle import Action
from service.core.published import Kind

if TYPE_CHECKING:
    from service.core.ops import Op
    from service.storage.client import PartitionClient

__all__ = [
    "BATCH_ARGS",
    "GROUP_ARGS",
    "RUN_ARGS",
    "STEP_ARGS",
    "CommitCall",
    "Committed",
    "commit_call",
]

BATCH_ARGS = (
    "group",
    "maxlen",
    "ttl",
    "budget_tokens",
    "budget_usd",
    "budget_steps",
    "budget_seconds",
    "acks",
)
"""The batch's arguments: consumer group, derived stream MAXLEN, state TTL (seconds), the
run budgets ('' when off), and how many entry ids to ack follow (entries with no op:
ignored events). The script reads them by name (`BATCH` in its header)."""

GROUP_ARGS = ("ops", "run_id", "thread", "assistant")
"""Each group's arguments: how many ops follow, the run, the thread and assistant its
naming entries name ('' if none does)."""

STEP_ARGS = (
    "field",  # first: its prefix tells a step's op from a run's (core.layout)
    "source_id",
    "status",
    "names",
    "state",
    "deadline",
    "start_event",
    "end_event",
    "usage",
    "usage_event",
    "tools",
)
"""A step's op, as the script unpacks it."""

RUN_ARGS = (
    "field",
    "source_id",
    "status",
    "names",
    "state",
    "start_event",
    "end_event",
    "usage",
    "usage_event",
    "round",
    "wait_event",
    "model",
    "prices",
    "usage_cost",
)
"""A run's op, as the script unpacks it."""

_STEP = attrgetter(*STEP_ARGS)
_RUN = attrgetter(*RUN_ARGS)
_ACTIONS = {action.value: action for action in Action}
_STEP_KIND = Kind.STEP  # a global (ARCHITECTURE.md, "Hot path rules")


def _agreeing(ops: list[Op]) -> list[tuple[str, str, list[Op]]]:
    """A run's ops in arrival order, cut where one names another thread or assistant than
    those before it: (thread, assistant, ops) groups, each checked against the run's once.
    Ops naming neither (Responses items) join any group."""
    groups: list[tuple[str, str, list[Op]]] = []
    thread = assistant = ""
    group: list[Op] = []
    for op in ops:
        if (op.thread_id and thread and op.thread_id != thread) or (
            op.assistant_id and assistant and op.assistant_id != assistant
        ):
            groups.append((thread, assistant, group))
            thread = assistant = ""
            group = []
        group.append(op)
        thread = thread or op.thread_id
        assistant = assistant or op.assistant_id
    groups.append((thread, assistant, group))
    return groups


@dataclass(frozen=True, slots=True)
class Committed:
    """What a commit did: each op with its action, in the order sent, and the events it
    published beyond what the actions declare (core.published): the end events of the steps
    a run's end closed (their JSON, `{...`) and budget events (`run.budget_exceeded|<limit>`)."""

    actions: list[tuple[Op, Action]]
    also: list[str]


@dataclass(slots=True)
class CommitCall:
    """One commit script call: its keys and arguments, and the ops in the order sent."""

    keys: list[str] = field(default_factory=list)
    args: list[Any] = field(default_factory=list)
    sent: list[Op] = field(default_factory=list)

    def read(self, reply: list[Any]) -> Committed:
        """Each op sent, with the action the script took for it, and what it published
        beyond what the actions declare: step ends a run's end closed, budget events."""
        letters = cast("bytes", reply[0]).decode()
        also = [t.decode() for t in cast("list[bytes]", reply[1])]
        if len(letters) != len(self.sent):
            raise RuntimeError(
                f"the commit script answered {len(letters)} actions for {len(self.sent)} ops"
            )
        pairs = [(op, _ACTIONS[letter]) for op, letter in zip(self.sent, letters, strict=True)]
        return Committed(pairs, also)


def commit_call(
    client: PartitionClient, runs: dict[str, list[Op]], acks: list[bytes]
) -> CommitCall:
    """The commit call for each run's ops (in arrival order) and the other ids to ack."""
    s, part, run_key = client.settings, client.part, client.keys.run
    call = CommitCall(
        [part.derived_stream, part.source_stream, client.keys.stalls, client.keys.budgets]
    )
    args = call.args
    budgets = (s.budget_tokens, s.budget_usd, s.budget_steps, s.budget_seconds)
    args += (s.group, s.derived_maxlen, s.state_ttl_s)
    args += tuple("" if b is None else repr(b) for b in budgets)
    args += (len(acks), *acks)
    sent = call.sent
    for run_id, ops in runs.items():
        for thread, assistant, group in _agreeing(ops):
            call.keys.append(run_key(run_id))
            args += (len(group), run_id, thread, assistant)
            for op in group:
                args += _STEP(op) if op.kind is _STEP_KIND else _RUN(op)
            sent += group
    return call

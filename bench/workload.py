"""Realistic source entries: the producer mix the demo shows, at benchmark scale.

Every payload is pre-serialised once, so building JSON never counts against a consumer.
"""

from __future__ import annotations

import json
import random
import string
from collections import Counter, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from contracts.partitioning import partition_for
from service.dev.sample import T0, run, step

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = [
    "SENT_PLACEHOLDER",
    "PacedEvent",
    "Workload",
    "build",
    "paced_events",
    "prefill",
    "route",
]

STEPS_PER_RUN = 20
MODEL = "gpt-4o-2024-08-06"  # every run names it: run.usage carries the model and a cost
TERMINAL_SHARE = 0.45
DUPLICATE_SHARE = 0.04
KINDS = ("message_creation",) * 6 + ("function",) * 3 + ("code_interpreter",)
TERMINALS = ("completed",) * 16 + ("failed",) * 2 + ("cancelled", "expired")
SENT_PLACEHOLDER = "0" * 19
"""Fixed-width stand-in for the send time in nanoseconds, replaced when an event is sent."""

_ALPHABET = string.ascii_letters + string.digits


def _api_id(rnd: random.Random, prefix: str) -> str:
    # API ids are a prefix plus 24 base62 characters; key length is part of Redis memory.
    return prefix + "".join(rnd.choices(_ALPHABET, k=24))


@dataclass(frozen=True, slots=True)
class Workload:
    """N pre-serialised `data` payloads in producer order, with what they contain."""

    payloads: list[bytes]
    steps: int
    runs: int
    mix: Counter[str]
    completed_step: str  # a step that ends `completed`: a typical terminal state
    run_id: str  # the run it belongs to (a typical run hash)

    def __len__(self) -> int:
        return len(self.payloads)


def _payload(rnd: random.Random, body: dict[str, Any], event: str) -> bytes:
    # About half of the producers forward the streaming envelope, half the bare step.
    if rnd.random() < 0.5:
        body = {"event": f"thread.run.step.{event}", "data": body}
    return json.dumps(body).encode()


class _Producer:
    """Turns step numbers into payloads; remembers each step's run, kind and ending."""

    def __init__(self, rnd: random.Random, steps: int, terminal: set[int]) -> None:
        self.rnd = rnd
        runs = max(1, steps // STEPS_PER_RUN)
        self.run_ids = [_api_id(rnd, "run_") for _ in range(runs)]
        self.step_ids = [_api_id(rnd, "step_") for _ in range(steps)]
        self.kinds = [rnd.choice(KINDS) for _ in range(steps)]
        self.endings = {i: rnd.choice(TERMINALS) for i in terminal}

    def run_of(self, i: int) -> str:
        return self.run_ids[i // STEPS_PER_RUN % len(self.run_ids)]

    def run_started(self, i: int) -> bytes:
        """The run of step `i` in progress, naming its model (its first step's turn)."""
        event = run(self.run_of(i), "in_progress")
        event["data"]["model"] = MODEL
        event["data"]["created_at"] = T0 + i // 50
        return json.dumps(event).encode()

    def started(self, i: int) -> bytes:
        body = step(
            self.step_ids[i],
            "in_progress",
            run_id=self.run_of(i),
            kind=self.kinds[i],
            created_at=T0 + i // 50,
        )
        return _payload(self.rnd, body, self.rnd.choice(("created", "in_progress")))

    def ended(self, i: int) -> bytes:
        status = self.endings[i]
        failed = status == "failed"
        body = step(
            self.step_ids[i],
            status,
            run_id=self.run_of(i),
            kind=self.kinds[i],
            created_at=T0 + i // 50,
            ended_at=T0 + i // 50 + self.rnd.randint(1, 30),
            usage=(self.rnd.randint(50, 2000), 0 if failed else self.rnd.randint(1, 500)),
            error="rate_limit_exceeded" if failed else None,
        )
        return _payload(self.rnd, body, status)

    def poison(self, i: int) -> bytes:
        if i % 2:
            return b'{"id": "step_broken", "status": '  # truncated JSON
        body = step(self.step_ids[0], "paused", run_id=self.run_ids[0])  # unknown status
        return json.dumps(body).encode()


def build(n: int, seed: int = 4) -> Workload:
    """N entries: ~50% in_progress, ~45% terminal, ~4% duplicates, ~1% poison, and each
    run's start (naming its model) before its first step's.

    A step's terminal event always follows its in_progress one, some thousands of entries
    later, as with many runs in flight; kinds are drawn from quotas, so the totals are exact.
    """
    if n < 4:
        raise ValueError("a workload needs at least 4 entries")
    rnd = random.Random(seed)
    steps = n // 2
    n_terminal = min(steps, round(n * TERMINAL_SHARE))
    n_dup = round(n * DUPLICATE_SHARE)
    n_poison = n - steps - n_terminal - n_dup
    terminal = set(rnd.sample(range(steps), n_terminal))
    producer = _Producer(rnd, steps, terminal)
    quota = Counter(in_progress=steps, terminal=n_terminal, duplicate=n_dup, poison=n_poison)
    waiting: deque[int] = deque()  # started steps whose terminal event is still to come
    recent: deque[bytes] = deque(maxlen=256)  # what a redelivery would repeat
    payloads: list[bytes] = []
    mix: Counter[str] = Counter()
    started = 0
    while len(payloads) < n:
        kinds = [k for k, left in quota.items() if left > 0]
        kind = rnd.choices(kinds, weights=[quota[k] for k in kinds])[0]
        if (kind == "terminal" and not waiting) or (kind == "duplicate" and not recent):
            kind = "in_progress" if quota["in_progress"] else "poison"
            if not quota[kind]:
                continue
        if kind == "in_progress":
            if started % STEPS_PER_RUN == 0 and started < len(producer.run_ids) * STEPS_PER_RUN:
                payloads.append(producer.run_started(started))  # its run starts first
                mix["run"] += 1
                if len(payloads) >= n:
                    break
            data = producer.started(started)
            if started in terminal:
                waiting.append(started)
            started += 1
        elif kind == "terminal":
            data = producer.ended(waiting.popleft())
        elif kind == "duplicate":
            data = rnd.choice(recent)
        else:
            data = producer.poison(len(payloads))
        if kind in ("in_progress", "terminal"):
            recent.append(data)
        quota[kind] -= 1
        mix[kind] += 1
        payloads.append(data)
    done = next(i for i in sorted(terminal) if producer.endings[i] == "completed")
    return Workload(
        payloads=payloads,
        steps=steps,
        runs=len(producer.run_ids),
        mix=mix,
        completed_step=producer.step_ids[done],
        run_id=producer.run_of(done),
    )


@dataclass(frozen=True, slots=True)
class PacedEvent:
    """One event of the latency run: the payload has SENT_PLACEHOLDER where the time goes."""

    step_id: str
    status: str
    template: bytes


def paced_events(n: int, seed: int = 5, lag: int = 50) -> list[PacedEvent]:
    """N events, in_progress and completed only (each yields a derived event), interleaved.

    Every step's completed event comes `lag` new steps after its in_progress one.
    """
    rnd = random.Random(seed)
    steps = (n + 1) // 2
    run_ids = [_api_id(rnd, "run_") for _ in range(max(1, steps // STEPS_PER_RUN))]
    step_ids = [_api_id(rnd, "step_") for _ in range(steps)]
    meta = {"sent_ns": SENT_PLACEHOLDER}

    def event(i: int, status: str) -> PacedEvent:
        done = status == "completed"
        body = step(
            step_ids[i],
            status,
            run_id=run_ids[i // STEPS_PER_RUN % len(run_ids)],
            ended_at=T0 + 2 if done else None,
            usage=(rnd.randint(50, 2000), rnd.randint(1, 500)) if done else None,
            metadata=meta,
        )
        return PacedEvent(step_ids[i], status, json.dumps(body).encode())

    out: list[PacedEvent] = []
    for i in range(steps + lag):
        if i < steps:
            out.append(event(i, "in_progress"))
        if i >= lag:
            out.append(event(i - lag, "completed"))
    return out[:n]


def route(payloads: list[bytes], n: int) -> list[list[bytes]]:
    """`payloads` over `n` partitions by run id, as producers route them (`partition_for`);
    an entry without a readable run id (poison) goes where the run id "poison" would."""
    routed: list[list[bytes]] = [[] for _ in range(n)]
    for data in payloads:
        try:
            body = json.loads(data)
            run_id = body.get("run_id") or body["data"]["run_id"]
        except (ValueError, KeyError, TypeError, AttributeError):
            run_id = "poison"
        routed[partition_for(run_id, n)].append(data)
    return routed


async def prefill(
    redis: Redis, stream: str, group: str, payloads: list[bytes], chunk: int = 2000
) -> None:
    """Create `group` at the stream's start, then XADD every payload, pipelined by chunks."""
    await redis.xgroup_create(stream, group, id="0", mkstream=True)
    for at in range(0, len(payloads), chunk):
        pipe = redis.pipeline(transaction=False)
        for data in payloads[at : at + chunk]:
            pipe.xadd(stream, {"data": data})
        await pipe.execute()

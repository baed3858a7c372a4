"""Each hostile entry is refused at decode time with the exact DLQ kind and a precise reason.

The entries are in tests/hostile.py (shared with the system test); here each is decoded as
the worker would after reading it from Redis: repeated field names kept
(service/storage/replies.py).
"""

from __future__ import annotations

import pytest

from service.core.decode import Rejection, decode_entry
from service.storage.replies import renamed_repeats
from tests.hostile import HOSTILE, MAX_PAYLOAD_BYTES, Hostile


def _as_read(fields: tuple[tuple[bytes, bytes], ...]) -> dict[bytes, bytes]:
    """The fields as the worker's Redis client hands them over."""
    flat = renamed_repeats([part for pair in fields for part in pair])
    return dict(zip(flat[::2], flat[1::2], strict=True))


@pytest.mark.parametrize("case", HOSTILE, ids=[h.name for h in HOSTILE])
def test_hostile_entry_is_refused_with_its_kind_and_reason(case: Hostile) -> None:
    """decode_entry returns the rejection (never raises), with the kind and the reason."""
    decoded = decode_entry(_as_read(case.fields), MAX_PAYLOAD_BYTES, 1764000000.0)
    assert isinstance(decoded, Rejection), decoded
    assert (decoded.kind, case.reason in decoded.message) == (case.kind, True), decoded.message
    assert len(decoded.to_json()) < 4096  # the reason never copies the payload


def test_every_kind_decided_at_decode_is_covered() -> None:
    """The table exercises every kind that depends on an entry's bytes alone."""
    kinds = {h.kind for h in HOSTILE}
    assert kinds == {"invalid_json", "invalid_payload", "missing_data", "oversized"}

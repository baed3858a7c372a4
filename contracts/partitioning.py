"""How producers route events to partitions: a rule any language can reimplement.

With N partitions, every event of a run goes to partition `crc32(run_id) mod N` (CRC-32 of
the UTF-8 bytes of `run_id`, as zlib/IEEE 802.3 computes it, read as an unsigned integer).
Partition p's streams are `<base>:{p}` (e.g. `runsteps.events:{3}`): the `{p}` hash tag puts
a partition's streams and all its state keys in one Redis Cluster slot. With one partition
on a single Redis the base names are used as they are.
"""

from __future__ import annotations

import zlib

__all__ = ["partition_for", "partition_stream"]


def partition_for(run_id: str, partitions: int) -> int:
    """The partition that every event of `run_id` goes to."""
    if partitions < 1:
        raise ValueError("partitions must be >= 1")
    return zlib.crc32(run_id.encode("utf-8")) % partitions


def partition_stream(base: str, partition: int, tagged: bool = True) -> str:
    """Name of partition `partition` of the stream `base` (untagged: `base` itself)."""
    return f"{base}:{{{partition}}}" if tagged else base

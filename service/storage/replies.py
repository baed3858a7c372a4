"""Stream replies that keep an entry's repeated field names visible to the decoder.

Redis keeps every field of an entry, repeated names included; redis-py turns each entry's
field list into a dict (`pairs_to_dict`), so an entry with two `data` fields would reach
`decode_entry` as one of them, silently. These callbacks wrap redis-py's own for the reads
that hand entries to the worker (XREADGROUP: FastStream's subscriber and the own-pending
pass; XAUTOCLAIM: claims): before redis-py builds the dict, every later copy of a repeated
name is renamed `\\x00dup<n>:<name>` (n: its position in the entry), so `decode_entry` sees
it and the dead-letter entry keeps every copy. A reply whose entries have one field each
(nearly all of them) costs one C-speed pass over their lengths.
"""

from __future__ import annotations

from operator import itemgetter
from typing import TYPE_CHECKING, Any

from service.core.decode import DUPLICATE_PREFIX

if TYPE_CHECKING:
    from collections.abc import Callable

    from redis.asyncio import Redis

__all__ = ["keep_duplicate_fields", "renamed_repeats"]


_FIELDS = itemgetter(1)  # an entry's [name, value, ...] list


def renamed_repeats(fields: list[Any]) -> list[Any]:
    """An entry's [name, value, ...] list with every later copy of a name renamed."""
    names = fields[::2]
    if len(set(names)) == len(names):
        return fields
    seen: set[bytes] = set()
    out: list[Any] = []
    for i in range(0, len(fields) - 1, 2):
        name = fields[i]
        if name in seen:
            name = b"%s%d:%s" % (DUPLICATE_PREFIX, i // 2, name)
        else:
            seen.add(name)
        out += (name, fields[i + 1])
    return out


def _mark(entries: list[Any] | None) -> None:
    """Rename repeated field names in each [id, [name, value, ...]] entry, in place."""
    if not entries:
        return
    try:  # the common case, one field per entry, decided at C speed
        if max(map(len, map(_FIELDS, entries))) <= 2:
            return
    except TypeError:  # a deleted entry's fields are None (a pending entry read again)
        pass
    for entry in entries:
        if entry is not None and entry[1] is not None and len(entry[1]) > 2:
            entry[1] = renamed_repeats(entry[1])


def _mark_read(reply: Any) -> None:
    # RESP2: [[stream, entries], ...]; RESP3: {stream: entries}; None when nothing came.
    groups = reply.values() if isinstance(reply, dict) else (r[1] for r in reply or ())
    for entries in groups:
        _mark(entries)


def _mark_claimed(reply: Any) -> None:
    _mark(reply[1])  # [next cursor, entries, deleted ids]


def _wrapped(parse: Callable[..., Any] | None, mark: Callable[[Any], None]) -> Callable[..., Any]:
    def parse_keeping_duplicates(response: Any, **options: Any) -> Any:
        if not options.get("parse_justid"):  # ids alone carry no fields
            mark(response)
        return response if parse is None else parse(response, **options)

    parse_keeping_duplicates.marks = True  # type: ignore[attr-defined]  # wrap only once
    return parse_keeping_duplicates


def keep_duplicate_fields(client: Redis) -> Redis:
    """Make `client`'s XREADGROUP and XAUTOCLAIM replies keep repeated field names."""
    callbacks = client.response_callbacks
    for command, mark in (("XREADGROUP", _mark_read), ("XAUTOCLAIM", _mark_claimed)):
        parse = callbacks.get(command)
        if not getattr(parse, "marks", False):
            client.set_response_callback(command, _wrapped(parse, mark))
    return client

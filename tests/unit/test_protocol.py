"""The commit protocol and the Lua header: declared once in Python, read by every script."""

from __future__ import annotations

import re

import pytest

from service.core.layout import ENDED_FIELDS, STEP_PREFIX, RunField
from service.core.lifecycle import Action
from service.storage.protocol import RUN_ARGS, STEP_ARGS
from service.storage.scripts import COMMIT, SCRIPTS, header


def _unpacked(text: str, stride: str) -> list[str]:
    """The local names of the commit script's unpack() of one op of `stride` arguments."""
    match = re.search(
        r"(?:then|else)\n\s+([\w,\s]+?)\s*=\s*unpack\(ARGV, at,\s+at \+ " + stride, text
    )
    assert match, f"no unpack line for {stride}"
    return [name.strip() for name in match.group(1).split(",")]


def test_the_script_unpacks_the_declared_step_arguments() -> None:
    """commit.lua names a step op's arguments in STEP_ARGS's order."""
    assert _unpacked(COMMIT.source, "STEP_ARGS") == list(STEP_ARGS)


def test_the_script_unpacks_the_declared_run_arguments() -> None:
    """commit.lua names a run op's arguments in RUN_ARGS's order."""
    assert _unpacked(COMMIT.source, "RUN_ARGS") == list(RUN_ARGS)


def test_an_op_starts_with_its_field() -> None:
    """The script tells a step's op from a run's by the first argument's prefix."""
    assert STEP_ARGS[0] == RUN_ARGS[0] == "field"
    assert not RunField.STATE.startswith(STEP_PREFIX)


@pytest.mark.parametrize("action", list(Action))
def test_an_action_letter_is_its_names_first_letter(action: Action) -> None:
    """By design: a reply reads letter by letter."""
    assert action.value == action.name[0]


def test_every_script_starts_with_the_generated_header() -> None:
    """No script spells a field or code of its own: each loads the one header."""
    text = header()
    for script in SCRIPTS:
        assert script.source.startswith(text)


def test_the_header_holds_the_declared_layout() -> None:
    """The run-wide fields and the ended counts are the ones core.layout declares."""
    text = header()
    for field in RunField:
        assert f"['{field.name.lower()}'] = '{field.value}'" in text
    for ended in ENDED_FIELDS.values():
        assert f"'{ended}'" in text


def test_no_script_spells_a_run_field_itself() -> None:
    """Beyond the header, the scripts use the names F, STEP_PREFIX and ENDED."""
    for script in SCRIPTS:
        body = script.source.removeprefix(header())
        assert "'@'" not in body
        assert not re.search(r"'(r|t|a|n|ra|k[cfxen])'", body)

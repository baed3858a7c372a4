"""System tests print a one-line summary each at the end of the session."""

from __future__ import annotations

import pytest

from tests.system.load import SUMMARIES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print each system test's sent/expected/observed/lost/doubled line."""
    if SUMMARIES:
        terminalreporter.section("system test summaries")
        for line in SUMMARIES:
            terminalreporter.write_line(line)

"""Executor tests drive the real `flowfed` command, like tests/cli."""

from tests.cli.conftest import project  # noqa: F401 (the same project fixture)

"""Executor tests drive the real `flowfed` command, like tests/cli."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import distributed
import pytest

from tests.cli.conftest import project  # noqa: F401 (the same project fixture)
from tests.server.conftest import make_server  # noqa: F401 (real server subprocesses)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    # Workers as threads of this process (two cores are shared), reachable over TCP by
    # the `flowfed run` subprocess like any remote scheduler.
    c = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=False,
        protocol="tcp://",
        host="127.0.0.1",
        dashboard_address=None,
    )
    yield c
    c.close()

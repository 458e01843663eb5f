"""Serving the application under uvicorn, with a graceful SIGTERM: drain, then stop.

uvicorn on its own stops at SIGTERM by closing its connections and then running the
application's shutdown, which used to cancel the live runs: a graceful restart lost more
work than a crash. :class:`DrainingServer` instead drains first, while still serving:

1. the run manager stops taking work (``POST /runs`` answers ``503 server-draining`` with
   ``Retry-After``, ``/ready`` answers 503, no run is adopted) and every live run starts
   no further task;
2. the tasks in flight get up to ``--drain-timeout`` seconds to end and be recorded
   (node agents still reach the hub meanwhile);
3. the runs are left ``running`` with their leases released, and the server stops:
   another server on the database (or this one restarted) adopts each run at once and
   resumes it.

A second SIGTERM or SIGINT during the drain cuts it short: the runs are handed over as
they are (their tasks in flight run again where they are adopted).

Example:
    >>> # server = DrainingServer(uvicorn.Config(app), app, drain_timeout=30.0)
    >>> # server.run(sockets=[sock])
"""

from __future__ import annotations

import logging
import threading
from types import FrameType
from typing import Any

import uvicorn

log = logging.getLogger("flowfed.server")


class DrainingServer(uvicorn.Server):
    """A uvicorn server whose first SIGTERM/SIGINT drains the runs of ``app``."""

    def __init__(self, config: uvicorn.Config, app: Any, *, drain_timeout: float) -> None:
        super().__init__(config)
        self.app = app
        self.drain_timeout = drain_timeout
        self._drain: threading.Thread | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """First signal: drain in the background, then stop; a second: hand over now."""
        manager = getattr(self.app.state, "runs", None)
        if manager is None or self.should_exit:
            super().handle_exit(sig, frame)  # not serving yet, or stopping already
            return
        if self._drain is not None:
            log.warning("second signal: handing the runs over without waiting")
            threading.Thread(target=manager.drain, args=(0.0,), daemon=True).start()
            return
        # Re-raised by uvicorn once stopped, so the exit status still says which signal.
        self._captured_signals.append(sig)
        log.warning(
            "draining: taking no new work; tasks in flight have %gs to end before their "
            "runs are handed over to another server",
            self.drain_timeout,
        )
        self._drain = threading.Thread(
            target=self._drain_then_exit, args=(manager,), name="flowfed-drain", daemon=True
        )
        self._drain.start()

    def _drain_then_exit(self, manager: Any) -> None:
        try:
            handed = manager.drain(self.drain_timeout)
            if handed:
                log.warning("handed over %d run(s): %s", len(handed), ", ".join(handed))
        except Exception:
            log.exception("draining failed; stopping anyway (the leases run out by themselves)")
        finally:
            self.should_exit = True

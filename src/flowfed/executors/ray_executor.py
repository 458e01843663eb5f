"""Run tool calls on Ray.

``ray://local`` starts Ray on this machine (``?cpus=2``; no dashboard), or joins the
cluster named by ``$RAY_ADDRESS`` when that is set; ``ray://HOST:PORT`` connects to an
existing cluster through Ray Client (the head's client server, port 10001 by default).
Each call is one remote task running :func:`flowfed.executors.worker.run_call` on a
plain-data :class:`~flowfed.executors.worker.WorkerCall` (``max_retries=0``: the engine
owns retries); values larger than ``inline_max`` go through the artifact store, not
Ray's object store. A timed-out or cancelled call is cancelled with ``ray.cancel(force=True)``.

Workers must import flowfed and reach the artifact store; tools from a flow's
``imports:`` files are loaded by absolute path.

Example:
    >>> from flowfed.executors import executor_from_url
    >>> executor_from_url("ray://local?cpus=2").options["cpus"]
    '2'
"""

from __future__ import annotations

import atexit
import logging
import os
import warnings
from typing import Any

from flowfed.executors.cluster import ClusterExecutor, ClusterURL, ExecutorUnavailable
from flowfed.executors.worker import WorkerCall, WorkerResult, run_call


class RayExecutor(ClusterExecutor):
    """A :class:`~flowfed.executors.ClusterExecutor` over Ray remote tasks."""

    name = "ray"

    def __init__(self, target: ClusterURL, store: Any) -> None:
        super().__init__(target, store)
        self._remote: Any = None
        self._ray: Any = None

    def _connect(self) -> None:
        try:
            import ray
        except ImportError:
            raise ExecutorUnavailable(
                f"executor {self.url} needs Ray: pip install 'flowfed[ray]'"
            ) from None
        # Workers import flowfed and the tools: hand them this process's import path.
        env = {k: os.environ[k] for k in ("PYTHONPATH",) if k in os.environ}
        runtime_env = {"env_vars": env} if env else None
        if ray.is_initialized():
            pass  # this process already joined a cluster (an embedding application did)
        elif self.address == "local":
            if os.environ.get("RAY_ADDRESS"):
                ray.init(runtime_env=runtime_env, log_to_driver=False)
            else:
                ray.init(
                    num_cpus=int(self.options.get("cpus", os.cpu_count() or 2)),
                    include_dashboard=False,
                    runtime_env=runtime_env,
                    log_to_driver=False,
                )
        else:
            # Ray Client. Ray logs that it forwards init's options to the server, and warns
            # with its source path when the head does not answer: the user gets one line
            # from us instead (the same contract as every other executor's connect).
            builder_log = logging.getLogger("ray.client_builder")
            level = builder_log.level
            builder_log.setLevel(logging.WARNING)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    ray.init(
                        address=f"ray://{self.address}",
                        runtime_env=runtime_env,
                        log_to_driver=False,  # tool output must not mix into --json
                    )
            except ConnectionError as exc:
                raise ExecutorUnavailable(
                    f"executor {self.url}: cannot connect: {exc}: is {self.address} the "
                    "head's Ray Client port (10001 unless `ray start "
                    "--ray-client-server-port` says otherwise), and reachable from here?"
                ) from None
            finally:
                builder_log.setLevel(level)
        self._ray = ray
        self._remote = ray.remote(max_retries=0, num_cpus=1)(run_call)
        atexit.register(self.close)

    def _submit(self, call: WorkerCall, key: str) -> Any:
        return self._remote.options(name=key[:120]).remote(call)

    def _poll(self, handle: Any, wait: float) -> WorkerResult | None:
        ray = self._ray
        done, _ = ray.wait([handle], timeout=wait)
        if not done:
            return None
        try:
            result: WorkerResult = ray.get(handle)
        except Exception as exc:  # the worker died, or the task was cancelled
            return WorkerResult(
                error=(f"{type(exc).__name__}: {exc}", "", type(exc).__name__), where="ray"
            )
        return result

    def _cancel(self, handle: Any) -> None:
        self._ray.cancel(handle, force=True)

    def _shutdown(self) -> None:
        ray, self._ray = self._ray, None
        if ray is not None and ray.is_initialized():
            ray.shutdown()

"""Run tool calls on a Dask cluster (``distributed``).

``dask://local`` starts a ``LocalCluster`` in this process (``?workers=2`` workers, one
thread each; ``?processes=0`` keeps the workers in this process as threads, which starts
faster but shares the GIL); ``dask://HOST:PORT`` connects to an existing scheduler. Each
call is one ``client.submit`` of :func:`flowfed.executors.worker.run_call` with a
plain-data :class:`~flowfed.executors.worker.WorkerCall`; results come back straight from
the worker (Dask never routes task data through the scheduler) and values larger than
``inline_max`` go through the artifact store. Retries stay with the engine, so Dask's own
retries are off; a timed-out or cancelled call has its future cancelled.

Workers must import flowfed and reach the artifact store (a shared directory or an
object store URL such as ``s3://``); tools from a flow's ``imports:`` files are loaded by
absolute path, so the file must exist at the same path on the workers.

Example:
    >>> from flowfed.executors import executor_from_url
    >>> executor_from_url("dask://local?workers=2").options["workers"]
    '2'
"""

from __future__ import annotations

import atexit
from typing import Any

from flowfed.executors.cluster import ClusterExecutor, ClusterURL, ExecutorUnavailable
from flowfed.executors.worker import WorkerCall, WorkerResult, run_call


class DaskExecutor(ClusterExecutor):
    """A :class:`~flowfed.executors.ClusterExecutor` over ``distributed.Client``."""

    name = "dask"

    def __init__(self, target: ClusterURL, store: Any) -> None:
        super().__init__(target, store)
        self.client: Any = None
        self.cluster: Any = None

    def _connect(self) -> None:
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise ExecutorUnavailable(
                f"executor {self.url} needs Dask: pip install 'flowfed[dask]'"
            ) from None
        if self.address == "local":
            self.cluster = LocalCluster(
                n_workers=int(self.options.get("workers", 2)),
                threads_per_worker=int(self.options.get("threads", 1)),
                processes=self.options.get("processes", "1") not in ("0", "false", "no"),
                dashboard_address=None,
                silence_logs=40,  # logging.ERROR: the run's own output stays readable
            )
            self.client = Client(self.cluster, set_as_default=False)
        else:
            self.client = Client(
                self.address if "://" in self.address else f"tcp://{self.address}",
                timeout=self.options.get("connect_timeout", "10s"),
                set_as_default=False,
            )
        atexit.register(self.close)

    def _submit(self, call: WorkerCall, key: str) -> Any:
        # pure=False: two attempts of one task are two computations, never deduplicated.
        return self.client.submit(run_call, call, key=key, pure=False, retries=0)

    def _poll(self, handle: Any, wait: float) -> WorkerResult | None:
        import asyncio
        import concurrent.futures as cf

        try:
            result: WorkerResult = handle.result(timeout=wait)
        except (TimeoutError, cf.TimeoutError):
            return None
        except (asyncio.CancelledError, cf.CancelledError):
            return WorkerResult(error=("dask cancelled the task", "", "Cancelled"), where="dask")
        except Exception as exc:  # the worker died (KilledWorker) or the call did not pickle
            return WorkerResult(
                error=(f"{type(exc).__name__}: {exc}", "", type(exc).__name__), where="dask"
            )
        return result

    def _cancel(self, handle: Any) -> None:
        handle.cancel(force=True)

    def _shutdown(self) -> None:
        client, cluster = self.client, self.cluster
        self.client = self.cluster = None
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()

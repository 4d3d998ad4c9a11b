"""Dask for the work that splits into independent units: the teacher's shots, generation g's
candidate shots, `ussl segment`'s image batches.

`--cluster ADDRESS` connects to a running `distributed` scheduler (tcp://host:8786);
`--cluster local[:N]` starts a LocalCluster of N worker processes on this machine. Workers
compute and write their results under temporary names unique to each attempt; the client (the
ussl process that holds the project lock) stays the only writer of the catalog and commits each
unit as it arrives, exactly as with the local process pool. A worker that dies mid-unit loses
only that unit, which the scheduler runs again elsewhere (up to its `allowed-failures`).

The documented assumption: every worker sees the project folder and the media at the same
paths as the client (a shared filesystem), and has the same ussl installed. Both are checked
when the client connects.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ussl_core.errors import SettingsError, UsslError
from ussl_core.progress import CancelToken, Progress

# The local pool's worker environment (teacher/runner.py), applied to LocalCluster workers
# before they start; a remote cluster's workers are started by the lab (docs/scale-out.md).
NUMERIC_THREADS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
IN_FLIGHT_PER_WORKER = 2   # enough to keep a worker busy, few enough that cancel is quick
RETRIES = 2                # an exception in a task (a shared filesystem's hiccup) is retried
CONNECT_TIMEOUT_S = 20
WORKERS_RECOUNT_S = 5.0    # how often the window of units in flight follows the worker count
_ADDRESS = re.compile(r"^(?:(tcp|tls|ucx|inproc|ws|wss)://)?[A-Za-z0-9_.\-\[\]:]+:\d+$")


@dataclass(frozen=True)
class ClusterSpec:
    """Where the work runs: a scheduler's address, or (address None) a LocalCluster."""
    address: str | None
    local_workers: int | None = None   # None: one worker per core

    def __str__(self) -> str:
        if self.address:
            return self.address
        return "local" + (f":{self.local_workers}" if self.local_workers else "")


def parse_cluster(text: str) -> ClusterSpec:
    """'local', 'local:N', 'tcp://host:port' or 'host:port' (tcp); a SettingsError otherwise."""
    text = text.strip()
    if text == "local":
        return ClusterSpec(None)
    if text.startswith("local:"):
        count = text[len("local:"):]
        if not count.isdigit() or int(count) < 1:
            raise SettingsError(f"--cluster {text}: local:N needs a whole number of workers, at least 1")
        return ClusterSpec(None, int(count))
    if not _ADDRESS.match(text):
        raise SettingsError(f"--cluster {text}: not a scheduler address (tcp://host:8786) "
                            "nor local[:N]")
    return ClusterSpec(text if "://" in text else f"tcp://{text}")


def new_attempt() -> str:
    """A token for one attempt's temporary file names: two attempts of the same unit (a retry,
    or a worker the scheduler took for dead that still runs) never write the same file."""
    return uuid.uuid4().hex[:12]


def local_worker_environment() -> dict[str, str]:
    """A LocalCluster worker's environment: the local pool's, and one TensorFlow thread (the
    workers share this machine's cores)."""
    from ussl_core.teacher.runner import WORKER_ENV

    return {**WORKER_ENV, "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}


def _worker_facts(paths: list[str]) -> dict[str, Any]:
    """Run on each worker at connect: what must match the client."""
    import ussl_core

    return {"ussl": ussl_core.__version__,
            "missing": [p for p in paths if not os.path.exists(p)],
            "threads": {k: os.environ.get(k) for k in NUMERIC_THREADS}}


_prepared = False


def _prepare_worker() -> None:
    """Once per worker process: the settings the local pool's workers start with."""
    global _prepared
    if _prepared:
        return
    import cv2

    cv2.setNumThreads(1)
    _prepared = True


_worker_models: dict = {}   # on a Dask worker: the models of the latest task, kept loaded


def worker_models(key: Any, load: Callable[[], Any]) -> Any:
    """On a Dask worker: the models `key` names, loaded by `load()` once for all the tasks that
    use them (TensorFlow's threads capped first); only the latest key is kept."""
    if key not in _worker_models:
        from ussl_core.steps import cap_tensorflow_threads

        cap_tensorflow_threads()
        _worker_models.clear()
        _worker_models[key] = load()
    return _worker_models[key]


def run_unit(function: Callable[[Any], Any], item: Any) -> Any:
    """What a worker runs for one unit."""
    _prepare_worker()
    return function(item)


class DaskPool:
    """A Dask client (and the LocalCluster it started, if any) for one step; a context manager.

    `shared` are paths every worker must see (the project folder, the media)."""

    def __init__(self, spec: ClusterSpec, shared: list[Path] = ()) -> None:
        self.spec = spec
        self.shared = [str(Path(p).resolve()) for p in shared]
        self.client = None
        self._cluster = None
        self.notes: list[str] = []
        self._environ: dict[str, str] = {}

    def __enter__(self) -> DaskPool:
        try:
            import dask
            from distributed import Client, LocalCluster
        except ImportError:
            raise SettingsError("--cluster needs Dask: pip install 'ussl[cluster]'") from None
        import logging

        if self.spec.address is None:
            # distributed's nanny sets its workers' environment in this process's os.environ
            # before each spawn and leaves it there: put this process's own back after.
            self._environ = dict(os.environ)
            try:
                with dask.config.set({"distributed.nanny.pre-spawn-environ": local_worker_environment()}):
                    self._cluster = LocalCluster(
                        n_workers=self.spec.local_workers or os.cpu_count() or 1, threads_per_worker=1,
                        processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0",
                        silence_logs=logging.ERROR)
            except (RuntimeError, OSError) as exc:
                raise UsslError(f"--cluster {self.spec}: the local Dask cluster did not start "
                                f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
            finally:
                _restore_environ(self._environ)
            self.client = Client(self._cluster)
        else:
            try:
                self.client = Client(self.spec.address, timeout=CONNECT_TIMEOUT_S)
            except (OSError, TimeoutError) as exc:
                raise UsslError(f"--cluster {self.spec}: cannot reach the Dask scheduler "
                                f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
        try:
            self._check_workers()
        except BaseException:
            self.close()
            raise
        return self

    def _check_workers(self) -> None:
        """Refuse workers that cannot do the work (no ussl, another version, a project folder
        they do not see); note those whose numeric threads differ from the local pool's."""
        import ussl_core

        if not self.worker_count:
            try:
                self.client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
            except TimeoutError:
                raise UsslError(f"--cluster {self.spec}: the scheduler has no worker (waited "
                                f"{CONNECT_TIMEOUT_S} s); start some with `dask worker {self.spec}`") from None
        try:
            facts = self.client.run(_worker_facts, self.shared)
        except Exception as exc:   # a worker that cannot even import ussl_core
            raise UsslError(f"--cluster {self.spec}: a worker cannot run ussl "
                            f"({type(exc).__name__}: {exc}); install the same ussl on every worker") from None
        for worker, fact in facts.items():
            if fact["ussl"] != ussl_core.__version__:
                raise UsslError(f"--cluster {self.spec}: worker {worker} has ussl {fact['ussl']}, "
                                f"this client {ussl_core.__version__}; install the same version on both")
            if fact["missing"]:
                raise UsslError(f"--cluster {self.spec}: worker {worker} does not see "
                                f"{fact['missing'][0]} (a filesystem shared at the same path is required)")
            if any(value != "1" for value in fact["threads"].values()):
                self.notes.append(f"worker {worker} runs numeric libraries with {fact['threads']}; "
                                  "start workers with one thread each for results equal to a local run")

    @property
    def worker_count(self) -> int:
        return len(self.client.scheduler_info(n_workers=-1).get("workers", {}))

    @property
    def dashboard_link(self) -> str | None:
        try:
            return self.client.dashboard_link
        except Exception:   # no dashboard (bokeh missing on the scheduler)
            return None

    def describe(self) -> str:
        link = self.dashboard_link
        return (f"Dask {self.spec}: {self.worker_count} worker(s)"
                + (f", dashboard {link}" if link else ""))

    def progress(self, done: int, total: int, stage: str) -> Progress:
        """The event that tells the user where the work runs (and the dashboard's address)."""
        return Progress(done, total, self.describe() + "".join(f"; {note}" for note in self.notes),
                        {"dashboard": self.dashboard_link, "notice": True}, stage=stage)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None
            _restore_environ(self._environ)   # a worker restarted meanwhile set it again

    def __exit__(self, *exc) -> None:
        self.close()

    def map_unordered(self, function: Callable[[Any], Any], items: list[Any], label: Callable[[Any], str],
                      cancel: CancelToken | None = None) -> Iterator[Any]:
        """function(item) on the workers, results yielded as they finish (in any order). Every
        result that arrived is yielded before a failure is raised; on a failure, cancel or
        Ctrl-C the units still queued or running are cancelled."""
        from distributed import wait
        from distributed.scheduler import KilledWorker

        queue = list(reversed(items))
        pending: dict[Any, Any] = {}
        workers, counted_at = max(1, self.worker_count), time.monotonic()
        try:
            while queue or pending:
                if time.monotonic() - counted_at > WORKERS_RECOUNT_S:   # workers come and go
                    workers, counted_at = max(1, self.worker_count), time.monotonic()
                window = IN_FLIGHT_PER_WORKER * workers
                while queue and len(pending) < window:
                    item = queue.pop()
                    future = self.client.submit(run_unit, function, item, pure=False, retries=RETRIES,
                                                key=f"ussl-{label(item)}-{new_attempt()}")
                    pending[future] = item
                try:
                    wait(list(pending), timeout=0.2, return_when="FIRST_COMPLETED")
                except TimeoutError:
                    pass
                finished = [f for f in pending if f.done()]
                failures = []
                for future in finished:
                    item = pending.pop(future)
                    if future.status == "finished":
                        yield future.result()
                    else:
                        failures.append((item, future))
                if failures:
                    item, future = failures[0]
                    if future.status == "cancelled":   # the scheduler dropped it (restarted, gone)
                        raise UsslError(f"{label(item)}: the Dask scheduler dropped it (restarted or "
                                        "gone); completed units are kept, run the same command again")
                    exc = future.exception()
                    if isinstance(exc, KilledWorker):
                        raise UsslError(
                            f"{label(item)}: the Dask workers running it died again and again "
                            "(killed, or out of memory); completed units are kept, "
                            "run the same command again to continue") from None
                    raise exc
                if cancel:
                    cancel.raise_if_cancelled()
        finally:
            if pending and self.client is not None:
                self.client.cancel(list(pending), force=True)


def _restore_environ(saved: dict[str, str]) -> None:
    for key in set(os.environ) - set(saved):
        del os.environ[key]
    os.environ.update(saved)


@contextmanager
def open_pool(cluster: ClusterSpec | None, shared: list[Path],
              attempts_under: Path | None = None) -> Iterator[DaskPool | None]:
    """A connected DaskPool for `cluster`, or None (the work stays on this machine). Afterwards,
    what dead or cancelled attempts left under their own temporary names in `attempts_under`
    is removed."""
    if cluster is None:
        yield None
        return
    try:
        with DaskPool(cluster, shared) as pool:
            yield pool
    finally:
        if attempts_under is not None:
            from ussl_core.store.shards import remove_temporaries

            remove_temporaries(attempts_under, attempts_only=True)

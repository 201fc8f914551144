"""A few worker processes that run CPU-bound jobs with a time budget each.

The API reads and checks order documents here, not in the serving process: parsing and
validating is pure Python work that holds the GIL, and device fetches in the same process
must keep their latency while a big or hostile document is judged (DESIGN.md §5). A job past
its budget is stopped by killing its worker, which is replaced on the next job.

Each worker is a fresh interpreter (``python -m provisioner.documents.workers``), never a
fork of the serving process: that process has threads (uvicorn, TFTP, the audit writer) whose
locks a fork would copy in whatever state they are, and multiprocessing's spawn and forkserver
re-run the parent's main script in every child. Jobs and answers are pickled over a
socket pair; the worker gets the parent's ``sys.path`` first.
"""

from __future__ import annotations

import contextlib
import importlib
import queue
import resource
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, TypeVar

T = TypeVar("T")


class JobTimeout(Exception):
    """The job ran past its time budget; its worker was stopped."""


class WorkersBusy(Exception):
    """Every worker is busy and the queue of waiting jobs is full."""


class JobFailed(Exception):
    """The job raised, or its worker died; the message says which (never a traceback)."""


class JobOutOfMemory(JobFailed):
    """The job needed more memory than a worker may use; its worker was replaced."""


def _serve(conn: Connection) -> None:
    """A worker's loop: run each (function, args) it is sent, answer ("ok"|"error", value)."""
    while True:
        try:
            fn, args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            answer: tuple[str, Any] = ("ok", fn(*args))
        except MemoryError:
            answer = ("memory", "")
        except BaseException as exc:  # the job's failure, reported to the caller
            answer = ("error", f"{type(exc).__name__}: {str(exc)[:200]}")
        try:
            conn.send(answer)
        except Exception as exc:  # an answer that does not pickle
            conn.send(("error", f"cannot send the answer: {type(exc).__name__}"))


def _main(argv: list[str]) -> None:
    """``python -m provisioner.documents.workers FD MEMORY MODULE...``: serve jobs on the socket FD,
    using at most MEMORY bytes of address space (0: no limit)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the server, which stops us
    if int(argv[1]):
        resource.setrlimit(resource.RLIMIT_AS, (int(argv[1]), int(argv[1])))
    argv = [argv[0], *argv[2:]]
    conn = Connection(int(argv[0]))
    sys.path[:] = conn.recv()
    for module in argv[1:]:
        importlib.import_module(module)
    _serve(conn)


class _Worker:
    def __init__(self, preload: tuple[str, ...], memory: int):
        ours, theirs = socket.socketpair()
        try:
            argv = [str(theirs.fileno()), str(memory), *preload]
            self.process = subprocess.Popen(
                [sys.executable, "-m", "provisioner.documents.workers", *argv],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                close_fds=True,
            )
        finally:
            theirs.close()
        self.conn = Connection(ours.detach())
        self.conn.send(list(sys.path))

    def call(self, fn: Callable[..., Any], args: tuple[Any, ...], seconds: float) -> Any:
        self.conn.send((fn, args))
        if not self.conn.poll(seconds):
            raise JobTimeout(f"more than {seconds:g} s")
        status, value = self.conn.recv()
        if status == "memory":
            raise JobOutOfMemory("out of memory")
        if status == "error":
            raise JobFailed(value)
        return value

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.process.kill()
            self.process.wait(2)
        with contextlib.suppress(Exception):
            self.conn.close()


class WorkerPool:
    """``size`` worker processes, started on first use; at most ``queue_size`` jobs wait;
    each worker may use ``memory`` bytes of address space (0: no limit).

    ``run(fn, *args)`` blocks the calling thread until the job is done (call it from a
    thread, e.g. FastAPI's threadpool); ``fn`` and its arguments must pickle (a module-level
    function). Raises :class:`JobTimeout` past ``seconds`` (the worker is replaced),
    :class:`WorkersBusy` when the queue is full, :class:`JobFailed` when the job raised,
    :class:`JobOutOfMemory` past ``memory`` (the worker is replaced).
    """

    def __init__(
        self,
        size: int,
        seconds: float,
        queue_size: int,
        preload: tuple[str, ...] = (),
        memory: int = 0,
    ) -> None:
        self.size = size
        self.seconds = seconds
        self.queue_size = queue_size
        self.memory = memory
        self._preload = preload
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._lock = threading.Lock()
        self._started = 0  # workers alive (idle or busy)
        self._pending = 0  # jobs running or waiting

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        with self._lock:
            if self._pending >= self.size + self.queue_size:
                raise WorkersBusy(f"{self._pending} documents are being checked")
            self._pending += 1
        try:
            worker = self._take()
            try:
                result = worker.call(fn, args, self.seconds)
            except JobOutOfMemory:
                self._retire(worker)  # its heap may stay large: start afresh
                raise
            except JobFailed:
                self._idle.put(worker)  # the job failed, the worker is fine
                raise
            except BaseException as exc:
                self._retire(worker)
                if isinstance(exc, EOFError | OSError):
                    raise JobFailed("the worker stopped") from None
                raise
            self._idle.put(worker)
            return result
        finally:
            with self._lock:
                self._pending -= 1

    def _take(self) -> _Worker:
        """An idle worker, or a new one while fewer than ``size`` are alive (a job that timed
        out took its worker with it), or wait for one."""
        while True:
            with self._lock:
                start = self._idle.empty() and self._started < self.size
                if start:
                    self._started += 1
            if start:
                try:
                    return _Worker(self._preload, self.memory)
                except BaseException:
                    with self._lock:
                        self._started -= 1
                    raise
            with contextlib.suppress(queue.Empty):
                return self._idle.get(timeout=0.2)

    def _retire(self, worker: _Worker) -> None:
        worker.stop()
        with self._lock:
            self._started -= 1

    def close(self) -> None:
        """Stop every idle worker (busy ones stop when their job is done or times out)."""
        while True:
            try:
                worker = self._idle.get_nowait()
            except queue.Empty:
                return
            worker.stop()
            with self._lock:
                self._started -= 1


if __name__ == "__main__":  # pragma: no cover - a worker process
    _main(sys.argv[1:])

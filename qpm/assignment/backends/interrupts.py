"""Stopping a running solver: its time limit, a signal, a failing callback (one per solve).

Python runs a signal handler only in the main thread, between two bytecodes. While a solver's C
code runs, that is not the case, and each backend then lost the signal in its own way (measured
with highspy 1.16, PySCIPOpt 6.3 / SCIP 10 and gurobipy 13, each accepted as a result):

* SCIP and Gurobi release the GIL and run no Python code: a SIGTERM waited until the solve
  ended, minutes later;
* where a callback runs Python code (HiGHS's interrupt callbacks, the progress callbacks), the
  handler ran inside it, and the solver's wrapper swallowed the exception it raised: HiGHS
  ended with status ``error`` and returned its incumbent;
* SCIP and Gurobi install a SIGINT handler of their own while they solve: Ctrl-C ended the
  solve with status ``interrupted``, as if its time were up, and printed a line on stdout.

:class:`Stop` collects the reasons a running solve has to end and calls the backend's
``interrupt`` (a thread-safe stop request). :func:`deferred_signals` holds SIGINT and SIGTERM
for the length of one solve: their handler raises nothing, it records the signal and asks the
solver to stop, also from a watcher thread woken through :func:`signal.set_wakeup_fd` while
the main thread is inside C code. Once the solver has returned, the signal is raised again
(:func:`signal.raise_signal`) for whatever handled it before: ``qpm``'s command line turns it
into exit code 143 or 130, Python's default SIGINT handler into ``KeyboardInterrupt``, and an
unhandled SIGTERM ends the process as it would have. The interrupted answer is never returned.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import threading
import time
from collections.abc import Callable, Iterator

log = logging.getLogger("qpm.solve.backend")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Seconds between repeated stop requests once a signal came: a solver may not listen yet
# (Gurobi and SCIP forget a request made before their solve started).
REPEAT = 0.1


class Stop:
    """Why one running solve must end, and the backend's ``interrupt()`` that ends it."""

    def __init__(self, interrupt: Callable[[], None]) -> None:
        self._interrupt = interrupt
        self.started = time.perf_counter()
        self.timed_out = False
        self.signum: int | None = None
        self.failure: BaseException | None = None
        self.handler: Callable | None = None  # the deferring handler, while installed

    @property
    def asked(self) -> bool:
        """Whether qpm asked the solver to stop (else a stop came from the solver itself)."""
        return self.timed_out or self.signum is not None or self.failure is not None

    def request(self) -> None:
        try:
            self._interrupt()
        except Exception:  # noqa: BLE001 - the solver is not running (any more)
            log.debug("stop request not taken (the solver is not running)")

    def time_is_up(self) -> None:
        self.timed_out = True
        self.request()

    def signalled(self, signum: int) -> None:
        if self.signum is None:
            self.signum = signum
        self.request()

    def fail(self, exc: BaseException) -> None:
        """A callback raised ``exc``: stop the solver and raise it once the solver returned
        (a solver's wrapper would swallow it and report a status instead)."""
        if self.failure is None:
            self.failure = exc
        self.request()

    def reclaim(self) -> None:
        """Put the deferring handler back in place of one a solver installed over it during
        the solve (Gurobi replaces Python's SIGINT handler; its callbacks call this)."""
        if self.handler is None or threading.current_thread() is not threading.main_thread():
            return
        for signum in STOP_SIGNALS:
            if signal.getsignal(signum) is self.handler:
                signal.signal(signum, self.handler)

    def settle(self, interrupted: bool) -> None:
        """After the solver returned with its termination: an interruption nobody in qpm
        asked for came from the solver's own SIGINT handler (Ctrl-C), so it surfaces as one."""
        if interrupted and not self.asked:
            _raise_again(signal.SIGINT, "the solver caught")


def _raise_again(signum: int, how: str) -> None:
    log.debug("solver stopped by %s (%s); raising it again", signal.Signals(signum).name, how)
    signal.raise_signal(signum)


def _watch(fd: int, stop: Stop, done: threading.Event) -> None:
    """Watcher thread: a signal's byte on the wakeup pipe asks the solver to stop at once."""
    while not done.is_set():
        ready, _, _ = select.select([fd], [], [], REPEAT if stop.signum is not None else None)
        if done.is_set():
            return
        if ready:
            try:
                data = os.read(fd, 512)
            except BlockingIOError:
                data = b""
            for byte in data:
                if byte in STOP_SIGNALS:
                    stop.signalled(byte)
        elif stop.signum is not None:
            stop.request()


def _handled(signum: int) -> bool:
    """Whether ``signum`` is handled from Python or by default (an ignored one stays so)."""
    return signal.getsignal(signum) not in (signal.SIG_IGN, None)


@contextlib.contextmanager
def deferred_signals(stop: Stop) -> Iterator[None]:
    """While the block runs (one solve), SIGINT and SIGTERM ask ``stop`` to end the solver;
    afterwards the signal is raised again for the handler that was there before. Outside the
    main thread (where Python runs no signal handler) the block runs as it is."""
    signums = [s for s in STOP_SIGNALS if _handled(s)]
    if threading.current_thread() is not threading.main_thread() or not signums:
        yield
        return
    read_fd, write_fd = os.pipe()
    try:
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)
        old_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    except (OSError, ValueError):  # a platform that wants a socket here (Windows)
        os.close(read_fd)
        os.close(write_fd)
        yield
        return
    done = threading.Event()
    watcher = threading.Thread(target=_watch, args=(read_fd, stop, done), daemon=True,
                               name="qpm-solver-signals")
    stop.handler = lambda signum, _frame: stop.signalled(signum)
    previous: dict = {}
    try:
        for signum in signums:
            previous[signum] = signal.signal(signum, stop.handler)
        watcher.start()
        yield
    finally:
        done.set()
        with contextlib.suppress(BlockingIOError):
            os.write(write_fd, b"\0")  # wakes the watcher
        if watcher.ident is not None:
            watcher.join()
        signal.set_wakeup_fd(old_fd)
        os.close(read_fd)
        os.close(write_fd)
        stop.handler = None
        _restore(list(previous.items()))
        if stop.signum is not None:  # also over an error the interrupted solver raised
            _raise_again(stop.signum, f"after {time.perf_counter() - stop.started:.1f} s")


def _restore(handlers: list) -> None:
    """Put the previous handlers back; a signal that lands in between still finds the rest
    restored (its handler may raise)."""
    if handlers:
        signum, handler = handlers[0]
        try:
            signal.signal(signum, handler)
        finally:
            _restore(handlers[1:])

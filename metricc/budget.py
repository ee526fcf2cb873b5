"""CPU-time budgets for sympy calls that can run for a very long time.

sympy's simplification and solving routines have no timeout of their own. On the
main thread of a POSIX process a ``SIGVTALRM`` timer interrupts them once the
process has spent the budget in CPU time; elsewhere (other threads, Windows) nothing
can interrupt them, so the budgeted work runs to completion: the same answers as on
the main thread, which may take longer for hostile expressions. Callers treat
``BudgetExceeded`` as "unknown".

CPU time, not wall-clock time: what the analysis proves decides whether a metric may
be compiled, and that must not depend on how busy the machine is. With wall-clock
budgets, markedness was refused on a 2-core machine running three other processes,
because its sign proofs ran out of time. On an idle machine the two are the same.
"""

from __future__ import annotations

import _weakrefset
import contextlib
import gc
import signal
import threading
import time
import weakref


class BudgetExceeded(Exception):
    """The work did not finish inside its budget."""


_expirations = 0  # budgets that ran out (or could not be set), since the process started


def expirations() -> int:
    """How many budgets have run out so far: compare before and after a step to tell whether it was cut short."""
    return _expirations


def _expired() -> None:
    global _expirations
    _expirations += 1


def budgets_available() -> bool:
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def time_budget(seconds: float):
    """Raise ``BudgetExceeded`` inside the block once the process has spent ``seconds`` of CPU time in it.

    Nested budgets keep the tighter deadline. Without timer support (outside the main
    thread, or without ``setitimer``) the block runs to completion: refusing the work
    would make every answer "unknown" there (the analysis would refuse F1 in a thread).
    """
    if seconds <= 0:
        _expired()
        raise BudgetExceeded("no time left")
    if not budgets_available():
        yield
        return
    previous_handler = signal.getsignal(signal.SIGVTALRM)
    previous_remaining, previous_interval = signal.getitimer(signal.ITIMER_VIRTUAL)
    started = cpu_time()
    if previous_remaining and previous_remaining < seconds:
        seconds = previous_remaining  # an outer budget ends sooner

    def on_alarm(signum, frame):
        if _inside_unraisable_context(frame):
            return  # the timer fires again in 20 ms, once back in the budgeted code
        _expired()
        raise BudgetExceeded(f"gave up after {seconds:.2f} s")

    signal.signal(signal.SIGVTALRM, on_alarm)
    # Keep firing every 20 ms after the deadline, so that an alarm deferred by
    # _inside_unraisable_context is delivered soon after.
    signal.setitimer(signal.ITIMER_VIRTUAL, seconds, 0.02)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        signal.signal(signal.SIGVTALRM, previous_handler)
        if previous_remaining:
            left = previous_remaining - (cpu_time() - started)
            signal.setitimer(signal.ITIMER_VIRTUAL, max(left, 1e-3), previous_interval)


def cpu_time() -> float:
    """CPU seconds this process has spent: the clock budgets are measured in."""
    return time.process_time()


# The standard library's weak-reference callbacks (WeakValueDictionary, WeakSet, finalize),
# which the interpreter calls when an object dies, anywhere in the budgeted code.
_WEAKREF_CALLBACK_FILES = frozenset({weakref.__file__, _weakrefset.__file__})


def _inside_unraisable_context(frame) -> bool:
    """Whether ``frame`` runs inside a garbage-collector callback, a ``__del__`` or a weak-reference
    callback of the standard library: an exception raised there is not seen by the budgeted
    code but reported as "unraisable" (printed as "Exception ignored in ...", and a test runner
    may turn that report into a failure), so the alarm must wait."""
    callback_codes = {getattr(callback, "__code__", None) for callback in gc.callbacks}
    while frame is not None:
        code = frame.f_code
        if code in callback_codes or code.co_name == "__del__" or code.co_filename in _WEAKREF_CALLBACK_FILES:
            return True
        frame = frame.f_back
    return False


def try_within(seconds: float, work, fallback):
    """``work()`` if it finishes within ``seconds``, else ``fallback``."""
    try:
        with time_budget(seconds):
            return work()
    except BudgetExceeded:
        return fallback
    except RecursionError:
        return fallback

"""CPU-time budgets that hold on every thread, for sympy calls that can run for a very long time.

sympy's simplification and solving routines have no timeout of their own. A watchdog thread reads
the CPU clock of every thread that is inside a budget, every few milliseconds, and once a deadline
has passed it raises ``BudgetExceeded`` in that thread (CPython's ``PyThreadState_SetAsyncExc``):
the exception arrives between two bytecodes, as a signal handler's would, but on any thread. A
POSIX signal timer would work on the main thread only, while data loaders, servers and notebooks
compile from threads (issue 22: a thread spent 57 s and 5.4 GB where the main thread stopped at
4.8 s). What no budget can interrupt, one long call into C, is kept short by the structural
limits of the parser (``metricc.parse``), which bound every expression's size and degree.

Deadlines are absolute. A budget entered inside another ends no later than the outer one, and
when the outer deadline passes inside an inner ``try_within``, the exception belongs to the
outer budget and passes through the inner one (each exception names the budget it belongs to):
many short inner budgets cannot postpone an outer deadline.

``BudgetExceeded`` derives from ``BaseException``, like ``KeyboardInterrupt``, so that the many
``except Exception`` clauses inside sympy (and in the analysis, which turns sympy's failures into
"unknown") do not swallow it. Should some bare ``except`` swallow it anyway, it is raised again
every ``REFIRE_SECONDS`` of CPU time until the budget's block ends.

CPU time of the thread that runs the budget, not wall-clock time: what the analysis proves decides
whether a metric may be compiled, and that must not depend on how busy the machine is. With
wall-clock budgets, markedness was refused on a 2-core machine running three other processes,
because its sign proofs ran out of time. On an idle machine the two are the same. Where the
platform has no clock per thread (``time.pthread_getcpuclockid``, e.g. macOS and Windows), the
process's CPU time is used.
"""

from __future__ import annotations

import _weakrefset
import ctypes
import functools
import gc
import math
import os
import sys
import threading
import time
import weakref

TICK_SECONDS = 0.005  # how often the watchdog reads the clocks of the threads inside a budget
REFIRE_SECONDS = 0.05  # CPU time after which a raise that the work swallowed is repeated


class BudgetExceeded(BaseException):
    """The work did not finish inside its budget.

    Attributes:
        budget: the :class:`Budget` whose deadline passed (the outermost one, when several did).
    """

    def __init__(self, *args, budget: Budget | None = None):  # the watchdog's raise has no arguments
        super().__init__(*args)
        self.budget = budget


_expirations = 0  # budgets that ran out (or had no time to start with), since the process started


def expirations() -> int:
    """How many budgets have run out so far: compare before and after a step to tell whether it was cut short."""
    return _expirations


def _expired() -> None:
    global _expirations
    _expirations += 1


def _thread_clock(ident: int):
    """A function reading the CPU time of thread ``ident``, callable from any thread."""
    try:
        clock_id = time.pthread_getcpuclockid(ident)
    except (AttributeError, OSError):  # no clock per thread on this platform
        return time.process_time
    return functools.partial(time.clock_gettime, clock_id)


def cpu_time() -> float:
    """CPU seconds the calling thread has spent: the clock its budgets are measured in."""
    return _thread_clock(threading.get_ident())()


def _async_raiser(exception_type):
    """``PyThreadState_SetAsyncExc`` with its own argument types (the shared ``ctypes.pythonapi`` entry is
    left as other libraries may have set it); None where the interpreter has no such function."""
    try:
        prototype = ctypes.PYFUNCTYPE(None, ctypes.c_ulong, exception_type)  # its count of threads is not needed
        return prototype(("PyThreadState_SetAsyncExc", ctypes.pythonapi))
    except (AttributeError, TypeError):
        return None


_RAISERS = None


def _async_raisers():
    """(raise, withdraw), built at first use: ``raise(ident, BudgetExceeded)`` raises in thread ``ident``,
    ``withdraw(ident, None)`` withdraws a raise that has not arrived yet."""
    global _RAISERS
    if _RAISERS is None:
        _RAISERS = (_async_raiser(ctypes.py_object), _async_raiser(ctypes.c_void_p))
    return _RAISERS


def budgets_available() -> bool:
    """Whether budgets can interrupt running work (on every thread); without it, only a budget entered
    after an enclosing one has run out stops (a cooperative check)."""
    return _async_raisers()[0] is not None


class _Stack:
    """The budgets one thread is inside, outermost first, and when the watchdog last raised there."""

    def __init__(self, ident: int):
        self.ident = ident
        self.clock = _thread_clock(ident)
        self.budgets: list[Budget] = []
        self.raised_at: float | None = None  # CPU time of the watchdog's last raise, while it may be pending

    def spent(self, now: float) -> Budget | None:
        """The outermost budget whose deadline has passed at ``now``."""
        for budget in self.budgets:
            if now >= budget.deadline:
                return budget
        return None


class _Watchdog:
    """One daemon thread that raises ``BudgetExceeded`` in threads whose budget has run out."""

    def __init__(self):
        self.lock = threading.Lock()  # guards the stacks; held while raising into a thread
        self.busy = threading.Condition(self.lock)
        self.stacks: dict[int, _Stack] = {}
        self.thread: threading.Thread | None = None

    def stack(self) -> _Stack:
        """The calling thread's stack (a new, empty one outside any budget)."""
        ident = threading.get_ident()
        return self.stacks.get(ident) or _Stack(ident)

    def push(self, stack: _Stack, budget: Budget) -> None:
        with self.lock:
            self.stacks[stack.ident] = stack
            stack.budgets.append(budget)
            if budgets_available() and self.thread is None:
                self.thread = threading.Thread(target=self._watch, name="metricc-budget-watchdog", daemon=True)
                self.thread.start()
            self.busy.notify()

    def pop(self, stack: _Stack, budget: Budget) -> None:
        """Leave ``budget`` (idempotent), and withdraw a raise that has not arrived yet: once its block has
        ended, no exception of a budget may surface in the caller's code."""
        with self.lock:
            if budget in stack.budgets:
                del stack.budgets[stack.budgets.index(budget):]
            if not stack.budgets and self.stacks.get(stack.ident) is stack:
                del self.stacks[stack.ident]
            if stack.raised_at is not None:
                _async_raisers()[1](stack.ident, None)
                stack.raised_at = None

    def _watch(self) -> None:
        while True:
            with self.lock:
                while not self.stacks:
                    self.busy.wait()
                for stack in list(self.stacks.values()):
                    self._check(stack)
            time.sleep(TICK_SECONDS)

    def _check(self, stack: _Stack) -> None:
        if not stack.budgets:
            return
        try:
            now = stack.clock()
        except OSError:  # the thread has ended inside a budget (killed by the interpreter's shutdown)
            del self.stacks[stack.ident]
            return
        if now < stack.budgets[-1].deadline:  # the innermost deadline is the earliest
            return
        if stack.raised_at is not None and now - stack.raised_at < REFIRE_SECONDS:
            return
        frame = sys._current_frames().get(stack.ident)
        if frame is None or _inside_unraisable_context(frame):
            return  # checked again at the next tick, once back in the budgeted code
        stack.raised_at = now  # first: the raise may arrive at once when the watchdog checks its own thread
        _async_raisers()[0](stack.ident, BudgetExceeded)


_WATCHDOG: _Watchdog | None = None
_WATCHDOG_CREATED = threading.Lock()


def _watchdog() -> _Watchdog:
    """The process's watchdog (created with the first budget; its thread starts then too)."""
    global _WATCHDOG
    with _WATCHDOG_CREATED:
        if _WATCHDOG is None:
            _WATCHDOG = _Watchdog()
        return _WATCHDOG


def _after_fork_in_child() -> None:
    # Only the forking thread survives a fork, without the watchdog; budgets start afresh in the child.
    global _WATCHDOG, _WATCHDOG_CREATED, _RAISERS
    _WATCHDOG, _WATCHDOG_CREATED, _RAISERS = None, threading.Lock(), None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Budget:
    """A CPU-time budget for a block: ``with Budget(2.0): work()`` raises ``BudgetExceeded`` inside the
    block once its thread has spent 2 s of CPU time there, or once an enclosing budget has run out."""

    def __init__(self, seconds: float):
        self.seconds = float(seconds)
        self.deadline = math.inf

    def __enter__(self) -> Budget:
        if not self.seconds > 0:  # NaN too
            _expired()
            raise BudgetExceeded("no time left", budget=self)
        stack = _watchdog().stack()
        now = stack.clock()
        if stack.spent(now) is not None:  # inside a budget that has run out: its __exit__ claims this raise
            raise BudgetExceeded()
        outer = stack.budgets[-1].deadline if stack.budgets else math.inf
        self.deadline = min(now + self.seconds, outer)
        self._stack = stack
        _watchdog().push(stack, self)
        return self

    def __exit__(self, kind, error, traceback) -> None:
        stack = self._stack  # holds this budget and the enclosing ones: inner ones have left already
        if isinstance(error, BudgetExceeded) and error.budget is None:  # raised by the watchdog
            error.budget = stack.spent(stack.clock()) or self
            error.args = (f"gave up after {error.budget.seconds:.2f} s of CPU time",)
        while True:  # a raise that arrives on the way out (the block ended at its deadline): leave again
            try:
                _watchdog().pop(stack, self)
                break
            except BudgetExceeded:
                continue
        if isinstance(error, BudgetExceeded) and error.budget is self:
            _expired()


def time_budget(seconds: float) -> Budget:
    """A :class:`Budget` of ``seconds`` of CPU time, as a context manager."""
    return Budget(seconds)


def remaining() -> float:
    """CPU seconds left in the calling thread's tightest budget (infinity outside any budget)."""
    stack = _watchdog().stacks.get(threading.get_ident())
    if stack is None or not stack.budgets:
        return math.inf
    return stack.budgets[-1].deadline - stack.clock()


# The standard library's weak-reference callbacks (WeakValueDictionary, WeakSet, finalize),
# which the interpreter calls when an object dies, anywhere in the budgeted code.
_WEAKREF_CALLBACK_FILES = frozenset({weakref.__file__, _weakrefset.__file__})


def _inside_unraisable_context(frame) -> bool:
    """Whether ``frame`` runs inside a garbage-collector callback, a ``__del__`` or a weak-reference
    callback of the standard library: an exception raised there is not seen by the budgeted
    code but reported as "unraisable" (printed as "Exception ignored in ...", and a test runner
    may turn that report into a failure), so the raise must wait."""
    callback_codes = {_code_of(callback) for callback in gc.callbacks}
    while frame is not None:
        code = frame.f_code
        if code in callback_codes or code.co_name == "__del__" or code.co_filename in _WEAKREF_CALLBACK_FILES:
            return True
        frame = frame.f_back
    return False


def _code_of(callback):
    """The code a callback runs: a function's, a bound method's, or a callable object's ``__call__``."""
    function = getattr(callback, "__func__", callback)
    code = getattr(function, "__code__", None)
    if code is None:
        code = getattr(type(callback).__call__, "__code__", None)  # gc calls only callables
    return code


def try_within(seconds: float, work, fallback, *, failures: tuple[type[Exception], ...] = (RecursionError,)):
    """``work()`` if it finishes within ``seconds`` of CPU time, else ``fallback`` (also when it raises one
    of ``failures``). When an enclosing budget runs out meanwhile, its ``BudgetExceeded`` passes through."""
    budget = Budget(seconds)
    try:
        with budget:
            return work()
    except BudgetExceeded as exceeded:
        if exceeded.budget is not budget:
            raise
        return fallback
    except failures:
        return fallback

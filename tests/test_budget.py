"""metricc.budget: CPU-time budgets, interrupted by a watchdog thread, on every thread."""

import functools
import gc
import math
import platform
import sys
import threading
import time
import weakref

import pytest

from metricc import budget as budget_module
from metricc.budget import BudgetExceeded, budgets_available, cpu_time, remaining, time_budget, try_within

pytestmark = pytest.mark.skipif(platform.python_implementation() != "CPython",
                                reason="needs PyThreadState_SetAsyncExc (CPython)")


def _spin(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def _spin_cpu(seconds):
    """Spend ``seconds`` of this thread's CPU time (however busy the machine is)."""
    end = cpu_time() + seconds
    while cpu_time() < end:
        pass


def _in_thread(work):
    """``work()`` run in another thread: its result, or the exception it raised."""
    outcome = []

    def run():
        try:
            outcome.append(work())
        except BaseException as error:  # noqa: BLE001 - handed back to the test
            outcome.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return outcome[0]


def test_budgets_interrupt_work_on_cpython():
    assert budgets_available()
    assert try_within(0.05, lambda: _spin(5.0), "interrupted") == "interrupted"


def test_work_past_its_budget_is_interrupted_and_the_fallback_returned():
    started = cpu_time()
    assert try_within(0.05, lambda: _spin(5.0), "fallback") == "fallback"
    assert cpu_time() - started < 0.5
    assert try_within(1.0, lambda: "done", "fallback") == "done"


def test_the_budget_holds_on_any_thread():
    """Issue 22: outside the main thread no signal timer can fire; the watchdog raises there as well."""
    def work():
        started = cpu_time()
        return try_within(0.05, lambda: _spin(5.0), "fallback"), cpu_time() - started

    result, spent = _in_thread(work)
    assert result == "fallback" and spent < 0.5
    assert _in_thread(lambda: try_within(1.0, lambda: "done", "fallback")) == "done"


def test_many_inner_budgets_cannot_postpone_the_outer_deadline():
    """Issue 22's minimal reproducer: inside time_budget(0.5), a loop of try_within(0.5, small_work) ran past
    10 s, because each inner budget re-armed the timer. Deadlines are absolute now, on every thread."""
    def loop():
        started = cpu_time()
        with pytest.raises(BudgetExceeded) as raised:
            with time_budget(0.2) as outer:
                while True:
                    try_within(0.2, lambda: _spin_cpu(0.02), None)
        assert raised.value.budget is outer
        return cpu_time() - started

    assert loop() < 0.5
    assert _in_thread(loop) < 0.5


def test_the_outer_budget_s_exception_passes_through_inner_ones_and_the_inner_one_s_stops_there():
    with pytest.raises(BudgetExceeded) as raised:
        with time_budget(0.2) as outer:
            try_within(5.0, lambda: try_within(5.0, lambda: _spin(5.0), "innermost"), "inner")
    assert raised.value.budget is outer and "0.20 s" in str(raised.value)
    with time_budget(5.0):
        assert try_within(0.05, lambda: _spin(5.0), "inner gave up") == "inner gave up"
        assert try_within(5.0, lambda: "the outer one goes on", None) == "the outer one goes on"


def test_an_inner_budget_ends_no_later_than_the_outer_one():
    with time_budget(0.3) as outer:
        with time_budget(10.0) as inner:
            assert inner.deadline == outer.deadline
            assert 0 < remaining() <= 0.3
    with time_budget(10.0), time_budget(5.0), time_budget(0.2):  # the innermost is the tightest
        assert 0.1 < remaining() <= 0.2
    assert remaining() == math.inf


def test_a_budget_entered_after_the_outer_one_ran_out_ends_the_outer_one_at_once():
    """The cooperative check: where nothing interrupts the work, entering a budget still stops it."""
    with pytest.raises(BudgetExceeded) as raised:
        with time_budget(0.05) as outer:
            budget_module._watchdog().stacks[threading.get_ident()].budgets[0].deadline = cpu_time() - 1
            try_within(5.0, lambda: "never runs", "not this fallback either")
    assert raised.value.budget is outer


def test_no_time_left_fails_at_once_and_counts_as_run_out():
    before = budget_module.expirations()
    for seconds in (0, -1.0, float("nan")):
        assert try_within(seconds, lambda: "never runs", "fallback") == "fallback"
    assert budget_module.expirations() == before + 3


def test_sympy_style_except_exception_does_not_swallow_the_budget():
    def swallowing():
        while True:
            try:
                _spin(0.01)
            except Exception:  # sympy catches Exception in many places
                pass

    assert try_within(0.05, swallowing, "stopped") == "stopped"


def test_no_budget_exception_escapes_once_the_block_has_ended():
    """A raise the watchdog decided on just as the block ended is withdrawn: hundreds of budgets that end
    right around their deadline, and not one BudgetExceeded outside them."""
    for index in range(200):
        seconds = 0.001 + (index % 7) * 0.0005
        try_within(seconds, lambda seconds=seconds: _spin_cpu(seconds), None)
    _spin(0.05)  # a late raise would arrive here
    assert threading.get_ident() not in budget_module._watchdog().stacks


def test_an_alarm_inside_a_garbage_collector_callback_waits_for_the_budgeted_code():
    """Raised inside a gc callback, BudgetExceeded would be swallowed as 'unraisable' (and pytest
    turns that into a failure of whatever test runs); the budget must defer it instead."""
    finished = []

    def slow_callback(phase, info):
        if phase == "start":
            _spin_cpu(0.2)  # the 0.05 s deadline passes in here (CPU time: whatever the load)
            finished.append(phase)

    class SlowCallable:  # a callback that is not a function: the code it runs is its __call__'s
        def __call__(self, phase, info):
            if phase == "start":
                _spin_cpu(0.1)
                finished.append("callable")

    unraisable = []
    hook, sys.unraisablehook = sys.unraisablehook, unraisable.append
    without_code = SlowCallable()
    gc.callbacks.extend([without_code, slow_callback])
    try:
        with pytest.raises(BudgetExceeded):
            with time_budget(0.05):
                gc.collect()
                _spin(5.0)
    finally:
        gc.callbacks.remove(slow_callback)
        gc.callbacks.remove(without_code)
        sys.unraisablehook = hook
    assert finished == ["callable", "start"]
    assert unraisable == []


def test_a_gc_callback_without_python_code_does_not_stop_the_watchdog():
    """A builtin callable in gc.callbacks (a functools.partial: its type's __call__ is a slot, no __code__) is
    no callback the raise must wait for; looking for its code must not fail inside the watchdog (a survivor of
    the budget's mutation run: a lookup without its default raised AttributeError there, and nothing fired)."""
    builtin = functools.partial(lambda phase, info: None)
    gc.callbacks.append(builtin)
    try:
        with pytest.raises(BudgetExceeded):
            with time_budget(0.05):
                _spin(5.0)
    finally:
        gc.callbacks.remove(builtin)


def test_an_alarm_inside_a_weak_reference_callback_waits_for_the_budgeted_code():
    """The same for the standard library's weak-reference callbacks (here weakref.finalize; sympy's
    caches use WeakValueDictionary): the alarm was printed as "Exception ignored in ...remove"
    during `metricc compile mcc` and did not stop the budgeted work."""
    finished = []

    class Dying:
        pass

    unraisable = []
    hook, sys.unraisablehook = sys.unraisablehook, unraisable.append
    try:
        with pytest.raises(BudgetExceeded):
            with time_budget(0.05):
                dying = Dying()
                weakref.finalize(dying, lambda: (_spin_cpu(0.2), finished.append("finalized")))
                del dying  # the finalizer runs here, and the 0.05 s deadline passes inside it
                _spin(5.0)
    finally:
        sys.unraisablehook = hook
    assert finished == ["finalized"]
    assert unraisable == []


def test_expirations_count_the_budgets_that_ran_out_and_only_those():
    before = budget_module.expirations()
    assert try_within(1.0, lambda: "done", "fallback") == "done"
    assert budget_module.expirations() == before
    assert try_within(0.05, lambda: _spin(5.0), "fallback") == "fallback"
    assert budget_module.expirations() == before + 1
    with pytest.raises(BudgetExceeded):  # the outer one ran out, not the inner one
        with time_budget(0.05):
            try_within(5.0, lambda: _spin(5.0), None)
    assert budget_module.expirations() == before + 2


def test_other_failures_give_the_fallback_only_when_asked_to():
    def fails():
        raise ValueError("sympy gave up")

    assert try_within(1.0, fails, "fallback", failures=(ValueError,)) == "fallback"
    with pytest.raises(ValueError):
        try_within(1.0, fails, "fallback")

    def recurses():
        return recurses()

    assert try_within(1.0, recurses, "fallback") == "fallback"  # RecursionError by default


def test_budgets_count_cpu_time_so_a_busy_machine_does_not_change_the_answers():
    # Waiting (as a thread does while other processes hold the CPU) spends no budget; computing does.
    assert try_within(0.05, lambda: (time.sleep(0.2), "done")[1], "fallback") == "done"
    started = cpu_time()
    assert try_within(0.05, lambda: _spin(5.0), "fallback") == "fallback"
    assert cpu_time() - started < 0.5


def test_each_thread_spends_its_own_budget():
    """Another thread computing does not spend this thread's budget (each thread's own CPU clock)."""
    stop = threading.Event()

    def compute():
        while not stop.is_set():
            _spin(0.01)

    busy = threading.Thread(target=compute)
    busy.start()
    try:  # the process spends about twice this thread's CPU time meanwhile
        assert try_within(0.15, lambda: (_spin_cpu(0.1), "done")[1], "fallback") == "done"
    finally:
        stop.set()
        busy.join()


def test_a_raise_the_work_swallowed_comes_again_soon():
    """A bare ``except`` (or ``except BaseException``) swallows one raise; the watchdog raises again after
    REFIRE_SECONDS of CPU time, while the budget has run out."""
    def swallows_once():
        try:
            _spin(5.0)
        except BaseException:  # noqa: BLE001 - what some library code does
            pass
        _spin(5.0)

    started = cpu_time()
    assert try_within(0.05, swallows_once, "stopped") == "stopped"
    assert cpu_time() - started < 0.05 + 3 * budget_module.REFIRE_SECONDS + 0.2


def test_a_raise_that_arrives_while_leaving_the_block_is_withdrawn(monkeypatch):
    """The block ended just at its deadline and the watchdog's raise arrives on the way out: leaving is
    repeated, and nothing escapes."""
    real_pop, calls = budget_module._watchdog().pop, []

    def late_then_pop(stack, budget):
        calls.append(budget)
        if len(calls) == 1:
            raise BudgetExceeded()  # as PyThreadState_SetAsyncExc delivers it
        real_pop(stack, budget)

    monkeypatch.setattr(budget_module._watchdog(), "pop", late_then_pop)
    assert try_within(1.0, lambda: "done", "fallback") == "done"
    assert len(calls) == 2 and threading.get_ident() not in budget_module._watchdog().stacks


def test_an_alarm_inside_a_destructor_waits_for_the_budgeted_code():
    finished = []

    class Slow:
        def __del__(self):
            _spin_cpu(0.2)  # the 0.05 s deadline passes in here (CPU time: whatever the load)
            finished.append("deleted")

    unraisable = []
    hook, sys.unraisablehook = sys.unraisablehook, unraisable.append
    try:
        with pytest.raises(BudgetExceeded):
            with time_budget(0.05):
                slow = Slow()
                del slow
                _spin(5.0)
    finally:
        sys.unraisablehook = hook
    assert finished == ["deleted"] and unraisable == []


def test_a_forked_child_has_budgets_of_its_own():
    import os

    pid = os.fork()
    if pid == 0:  # the child: only this thread survived the fork, the parent's watchdog did not
        started = cpu_time()
        ok = try_within(0.05, lambda: _spin(5.0), "fallback") == "fallback" and cpu_time() - started < 0.5
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_the_watchdog_forgets_a_thread_whose_clock_cannot_be_read():
    stack = budget_module._Stack(threading.get_ident())
    stack.budgets.append(budget_module.Budget(1.0))

    def gone():
        raise OSError("the thread has ended")

    stack.clock = gone
    watchdog = budget_module._Watchdog()
    watchdog.stacks[stack.ident] = stack
    watchdog._check(stack)
    assert watchdog.stacks == {}


def test_without_a_clock_per_thread_the_process_clock_is_used(monkeypatch):
    monkeypatch.delattr(time, "pthread_getcpuclockid", raising=False)
    assert budget_module._thread_clock(threading.get_ident()) is time.process_time


def test_an_interpreter_without_the_async_raise_has_no_raiser():
    assert budget_module._async_raiser("not a ctypes type") is None


def test_no_time_left_says_so():
    empty = time_budget(0)
    with pytest.raises(BudgetExceeded) as raised:
        with empty:
            pass
    assert raised.value.budget is empty and str(raised.value) == "no time left"


def _stack_at(now: float, deadline: float = 0.0):
    """This thread's stack as the watchdog sees it, with one budget and a clock that reads ``now``."""
    stack = budget_module._Stack(threading.get_ident())
    budget = budget_module.Budget(1.0)
    budget.deadline = deadline
    stack.budgets.append(budget)
    stack.clock = lambda: now
    return stack, budget


def _delivered(action) -> bool:
    """Whether ``action()`` made a BudgetExceeded arrive in this thread (delivered at the next bytecodes)."""
    try:
        action()
        for _ in range(1000):  # the interpreter delivers a pending raise within a few instructions
            pass
    except BudgetExceeded:
        return True
    return False


def test_a_deadline_is_reached_at_its_instant():
    stack, budget = _stack_at(5.0, deadline=5.0)
    assert stack.spent(5.0) is budget and stack.spent(4.999) is None
    watchdog = budget_module._Watchdog()
    assert _delivered(lambda: watchdog._check(stack)) and stack.raised_at == 5.0
    early, _ = _stack_at(4.999, deadline=5.0)
    assert not _delivered(lambda: watchdog._check(early)) and early.raised_at is None


def test_the_watchdog_raises_again_only_after_refire_seconds():
    watchdog = budget_module._Watchdog()
    refire = budget_module.REFIRE_SECONDS
    for last, now, expected in ((1.0, 1.0 + refire / 2, False), (0.0, refire, True)):
        stack, _ = _stack_at(now)
        stack.raised_at = last  # the last raise, which the work swallowed
        assert _delivered(lambda stack=stack: watchdog._check(stack)) is expected
        assert stack.raised_at == (now if expected else last)


def test_leaving_a_budget_the_watchdog_raised_in_forgets_the_raise():
    """The outer budget goes on after an inner one ran out: no raise is left pending or remembered for it."""
    with time_budget(5.0):
        assert try_within(0.05, lambda: _spin(5.0), "inner gave up") == "inner gave up"
        assert budget_module._watchdog().stacks[threading.get_ident()].raised_at is None
        _spin_cpu(0.1)  # a pending raise would arrive here


def test_one_watchdog_thread_serves_every_budget_and_never_keeps_the_interpreter_alive():
    for _ in range(3):
        try_within(1.0, lambda: None, None)
        _in_thread(lambda: try_within(1.0, lambda: None, None))
    watchdogs = [t for t in threading.enumerate() if t.name == "metricc-budget-watchdog"]
    assert len(watchdogs) == 1 and watchdogs[0].daemon

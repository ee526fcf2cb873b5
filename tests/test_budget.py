"""metricc.budget: SIGALRM time budgets around sympy calls that can run for a long time."""

import gc
import sys
import time
import weakref

import pytest

from metricc.budget import BudgetExceeded, budgets_available, time_budget, try_within

pytestmark = pytest.mark.skipif(not budgets_available(), reason="needs setitimer on the main thread")


def _spin(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_work_past_its_budget_is_interrupted_and_the_fallback_returned():
    started = time.monotonic()
    assert try_within(0.05, lambda: _spin(5.0), "fallback") == "fallback"
    assert time.monotonic() - started < 1.0
    assert try_within(1.0, lambda: "done", "fallback") == "done"


def test_nested_budgets_keep_the_tighter_deadline_and_restore_the_outer_one():
    started = time.monotonic()
    with pytest.raises(BudgetExceeded):
        with time_budget(0.3):
            assert try_within(5.0, lambda: _spin(5.0), "inner gave up") == "inner gave up"  # the outer 0.3 s
            _spin(5.0)
    assert time.monotonic() - started < 1.5


def test_an_alarm_inside_a_garbage_collector_callback_waits_for_the_budgeted_code():
    """Raised inside a gc callback, BudgetExceeded would be swallowed as 'unraisable' (and pytest
    turns that into a failure of whatever test runs); the budget must defer it instead."""
    finished = []

    def slow_callback(phase, info):
        if phase == "start":
            _spin(0.2)  # the 0.05 s deadline passes in here
            finished.append(phase)

    unraisable = []
    hook, sys.unraisablehook = sys.unraisablehook, unraisable.append
    gc.callbacks.append(slow_callback)
    try:
        with pytest.raises(BudgetExceeded):
            with time_budget(0.05):
                gc.collect()
                _spin(5.0)
    finally:
        gc.callbacks.remove(slow_callback)
        sys.unraisablehook = hook
    assert finished == ["start"]
    assert unraisable == []


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
                weakref.finalize(dying, lambda: (_spin(0.2), finished.append("finalized")))
                del dying  # the finalizer runs here, and the 0.05 s deadline passes inside it
                _spin(5.0)
    finally:
        sys.unraisablehook = hook
    assert finished == ["finalized"]
    assert unraisable == []


def test_expirations_count_the_budgets_that_ran_out_and_only_those():
    from metricc.budget import expirations

    before = expirations()
    assert try_within(1.0, lambda: "done", "fallback") == "done"
    assert expirations() == before
    assert try_within(0.05, lambda: _spin(5.0), "fallback") == "fallback"
    assert expirations() == before + 1


def test_outside_the_main_thread_the_work_runs_to_completion():
    # No timer can interrupt another thread: refusing the work would make every answer "unknown" there.
    import threading

    results = []
    thread = threading.Thread(target=lambda: results.append(try_within(0.01, lambda: (_spin(0.1), "done")[1],
                                                                       "fallback")))
    thread.start()
    thread.join()
    assert results == ["done"]


def test_budgets_count_cpu_time_so_a_busy_machine_does_not_change_the_answers():
    # Waiting (as a process does while other processes hold the CPU) spends no budget; computing does.
    assert try_within(0.05, lambda: (time.sleep(0.2), "done")[1], "fallback") == "done"
    started = time.process_time()
    assert try_within(0.05, lambda: _spin(5.0), "fallback") == "fallback"
    assert time.process_time() - started < 0.5

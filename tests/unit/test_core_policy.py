"""Pure restart policy and state tables: no processes, no loop."""

from __future__ import annotations

import pytest

from circus_linux.core.policy import BackoffPolicy, RestartBook, allocate_wid, pick_to_stop, wids_to_spawn
from circus_linux.core.states import ProcessState, TransitionError, WatcherState, check_process, check_watcher


def test_wid_is_lowest_free_in_range() -> None:
    assert allocate_wid([], 3) == 1
    assert allocate_wid([1, 2, 4], 3) == 3
    assert allocate_wid([1, 2, 3], 3) == 4  # reload overlap: up to 2N
    assert allocate_wid(range(1, 7), 3) == 7  # past 2N we keep counting rather than fail


def test_backoff_first_retry_is_immediate_then_doubles_capped() -> None:
    policy = BackoffPolicy(base=0.1, cap=1.0)
    assert [policy.delay(n) for n in range(0, 7)] == [0.0, 0.0, 0.1, 0.2, 0.4, 0.8, 1.0]


def test_failed_starts_count_per_wid_and_give_up_after_max_retry() -> None:
    book = RestartBook(BackoffPolicy(window=1.0, max_retry=2))
    v1 = book.on_exit(1, lifetime=0.1, now=100.0)
    assert v1.respawn and v1.failed_start and v1.delay == 0.0
    v2 = book.on_exit(1, lifetime=0.1, now=100.1)
    assert v2.respawn and v2.delay > 0
    assert book.ready_at(1) == pytest.approx(100.1 + v2.delay)
    assert book.on_exit(2, lifetime=0.1, now=100.2).respawn  # another wid has its own count
    v3 = book.on_exit(1, lifetime=0.1, now=100.3)
    assert v3.give_up and not v3.respawn


def test_a_long_lived_worker_resets_its_count() -> None:
    book = RestartBook(BackoffPolicy(window=1.0, max_retry=1))
    book.on_exit(1, lifetime=0.1, now=10.0)
    verdict = book.on_exit(1, lifetime=5.0, now=20.0)
    assert verdict.respawn and not verdict.failed_start and verdict.delay == 0.0
    assert not book.on_exit(1, lifetime=0.1, now=21.0).give_up


def test_exec_failure_is_a_failed_start_whatever_the_lifetime() -> None:
    book = RestartBook(BackoffPolicy(window=1.0, max_retry=0))
    assert book.on_exit(1, lifetime=99.0, now=1.0, exec_failed=True).give_up


def test_negative_max_retry_never_gives_up() -> None:
    book = RestartBook(BackoffPolicy(max_retry=-1))
    assert all(not book.on_exit(1, 0.0, float(i)).give_up for i in range(100))


def test_wids_to_spawn_fills_lowest_and_skips_backing_off_slots() -> None:
    book = RestartBook(BackoffPolicy(window=1.0, max_retry=10))
    book.on_exit(2, 0.0, now=0.0)
    book.on_exit(2, 0.0, now=0.0)  # second failure: wid 2 waits until 0.1
    wids, wake = wids_to_spawn(4, [1], book, now=0.05)
    assert wids == [3, 4]  # slot 2 stays reserved for its own retry
    assert wake == pytest.approx(0.1)
    wids, wake = wids_to_spawn(4, [1, 3, 4], book, now=0.2)
    assert wids == [2] and wake is None


def test_scale_down_picks_the_oldest() -> None:
    assert pick_to_stop([(10, 5.0), (11, 1.0), (12, 3.0)], 2) == [11, 12]
    assert pick_to_stop([(10, 5.0)], 0) == []


def test_state_tables_reject_going_back() -> None:
    check_process(ProcessState.RUNNING, ProcessState.READY)
    check_process(ProcessState.STOPPING, ProcessState.EXITED)
    with pytest.raises(TransitionError):
        check_process(ProcessState.EXITED, ProcessState.RUNNING)
    with pytest.raises(TransitionError):
        check_process(ProcessState.STOPPING, ProcessState.READY)
    check_watcher(WatcherState.STOPPED, WatcherState.STARTING)
    with pytest.raises(TransitionError):
        check_watcher(WatcherState.STOPPED, WatcherState.ACTIVE)


def test_max_retry_counts_retries_so_3_means_4_failed_starts() -> None:
    """The docs said "given up after 3 failed starts" for max_retry = 3 (plugins); the code gives a slot
    its first start and max_retry retries: 4 failed starts, then the give-up. The docs now say so."""
    book = RestartBook(BackoffPolicy(window=1.0, max_retry=3))
    verdicts = [book.on_exit(1, lifetime=0.0, now=float(i)) for i in range(4)]
    assert [v.give_up for v in verdicts] == [False, False, False, True]

"""The cancel token: the one way to stop a run, whoever asks and from whichever thread."""

from __future__ import annotations

import threading

from flowforge._engine.cancel import CancelToken, Stop


def test_fail_fast_stops_new_starts_but_lets_running_attempts_finish():
    """FAIL_FAST and STATE stop starting; only TIMEOUT and CANCEL stop running attempts."""
    token = CancelToken()
    assert not token.stopping
    assert token.cancel(Stop.FAIL_FAST, "task 'a' failed (fail_fast)")
    assert token.stopping and not token.stop_running
    assert token.reason == "task 'a' failed (fail_fast)"
    token.cancel(Stop.STATE, "saving failed")
    assert not token.stop_running


def test_a_stronger_request_upgrades_an_earlier_one_and_keeps_the_first_reason():
    """Ctrl-C after fail-fast stops running attempts too; both causes are remembered."""
    token = CancelToken()
    token.cancel(Stop.FAIL_FAST, "first")
    assert token.cancel(Stop.CANCEL, "interrupted (Ctrl-C)")
    assert token.stop_running
    assert Stop.FAIL_FAST in token and Stop.CANCEL in token and Stop.TIMEOUT not in token
    assert token.reason == "first"
    assert not token.cancel(Stop.CANCEL, "again")  # nothing new to do


def test_a_cancel_from_another_thread_wakes_the_loop_once_per_change():
    """The wake callback runs when the request changes what the loop must do."""
    woken = []
    token = CancelToken(wake=lambda: woken.append(threading.current_thread().name))
    t = threading.Thread(target=token.cancel, args=(Stop.CANCEL, "cancel requested"),
                         name="canceller")
    t.start()
    t.join()
    assert woken == ["canceller"]
    token.cancel(Stop.TIMEOUT, "late")  # already stopping running attempts: no wake
    assert woken == ["canceller"]

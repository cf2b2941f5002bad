"""Live configs are acknowledged (issue 11 item 7): the instance says which config it applied or refused and why,
through the control link's shared memory; the parent waits for that answer, with a bound."""

from __future__ import annotations

import time

from cam_server.common.process import CONFIG_APPLIED, CONFIG_ENDED, CONFIG_PENDING, CONFIG_REFUSED, InstanceProcess
from tests.common import targets


def test_applied_refused_and_pending_configs_are_told_apart() -> None:
    proc = InstanceProcess("acknowledging", targets.acknowledging_loop, (0.005,))
    proc.start()
    try:
        assert proc.wait_config(proc.update_config({"clients": 3}), 10) == (CONFIG_APPLIED, None)
        assert proc.control.stats.get("clients") == 3
        assert proc.wait_config(proc.update_config({"bad": "no such function", "status": 404}), 10) == (
            CONFIG_REFUSED, "refused: no such function")
        assert proc.control.refusal_status() == 404
        assert proc.control.stats.get("clients") == 3  # the refused config changed nothing
        assert proc.wait_config(proc.update_config({"clients": 5}), 10) == (CONFIG_APPLIED, None)  # not blocked
        # One long frame: no answer within the bound; the answer comes later.
        assert proc.wait_config(proc.update_config({"clients": 6, "busy": 1.5}), 10)[0] == CONFIG_APPLIED
        start = time.monotonic()
        number = proc.update_config({"clients": 7})
        assert proc.wait_config(number, 0.3) == (CONFIG_PENDING, None)
        assert time.monotonic() - start < 1.0
        assert proc.wait_config(number, 10) == (CONFIG_APPLIED, None)
        huge = "x" * 100_000  # a reason is cut, never megabytes in shared memory or an answer
        outcome, reason = proc.wait_config(proc.update_config({"bad": huge}), 10)
        assert outcome == CONFIG_REFUSED and len(reason) <= 4000 and reason.startswith("refused: xxx")
    finally:
        proc.stop()


def test_an_instance_that_ends_is_not_waited_for() -> None:
    proc = InstanceProcess("ended", targets.exit_with, (3,))
    proc.start()
    start = time.monotonic()
    assert proc.wait_config(proc.update_config({"clients": 1}), 10) == (CONFIG_ENDED, None)
    assert time.monotonic() - start < 5
    proc.stop()

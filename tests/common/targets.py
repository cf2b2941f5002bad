"""Instance loops used by the process tests (importable, so forkserver children can run them)."""

import time


def counting_loop(control, step: float) -> None:
    config = {}
    while not control.should_stop():
        new = control.poll_config()
        if new is not None:
            config = new
            control.stats.set("clients", config.get("clients", 0))
        control.stats.add("frames_in")
        time.sleep(step)
    control.report_error("stopped cleanly")


def failing_loop(control) -> None:
    control.report_error("boom: the source is gone")
    raise SystemExit(2)


def stubborn_loop(control) -> None:
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(0.05)


def blocking_receive_loop(control, address: str) -> None:
    """Blocks in a receive without timeout on a stream that never sends: only the stop wakeup can end it."""
    from cam_server.bsread import PULL, Source, Wakeup

    wakeup = Wakeup()
    control.on_stop(wakeup.set)
    with Source(address=address, mode=PULL, receive_timeout=None, wakeup=wakeup) as source:
        control.stats.set("clients", 1)  # "I am about to block"
        message = source.receive()
    control.report_error(f"receive returned {message!r}, interrupted={source.interrupted}, "
                         f"timed_out={source.timed_out}")


def exit_with(control, code: int, error: str | None = None) -> None:
    if error:
        control.report_error(error)
    raise SystemExit(code)


def slow_to_stop(control, delay: float) -> None:
    """Loops until asked to stop, then takes ``delay`` s to finish; stamps both moments in the shared stats."""
    while not control.should_stop():
        time.sleep(0.01)
    control.stats.set("rate", time.time())  # when the stop request was seen
    time.sleep(delay)
    control.stats.set("last_frame_time", time.time())  # when the instance finished


def exit_with_reason(control, reason: str, code: int) -> None:
    """Reports why it ends (the hook a memory limit uses), and an error beside it, then exits with ``code``."""
    control.report_error("something went wrong")
    control.report_exit_reason(reason)
    raise SystemExit(code)

def acknowledging_loop(control, step: float) -> None:
    """Takes configs (dicts) between "frames" and acknowledges each: refused when it has ``bad`` (with its status),
    applied otherwise; ``busy`` seconds: one long frame before the next config is taken."""
    while not control.should_stop():
        new = control.poll_config()
        if new is not None:
            if new.get("bad"):
                control.config_refused(f"refused: {new['bad']}", new.get("status", 400))
            else:
                control.stats.set("clients", new.get("clients", 0))
                control.config_applied()
            time.sleep(new.get("busy", 0))
        time.sleep(step)


def echo_queue(inbox, outbox, count: int) -> None:
    """Child: take ``count`` objects from ``inbox`` and put each back on ``outbox``, then wait until they are out."""
    for _ in range(count):
        outbox.put_nowait(inbox.get(timeout=10))
    outbox.flush(10)

"""Instance loops used by the process tests (importable, so forkserver children can run them)."""

import time


def counting_loop(channel, step: float) -> None:
    config = {}
    while not channel.should_stop():
        new = channel.poll_config()
        if new is not None:
            config = new
            channel.stats.set("clients", config.get("clients", 0))
        channel.stats.add("frames_in")
        time.sleep(step)
    channel.report_error("stopped cleanly")


def failing_loop(channel) -> None:
    channel.report_error("boom: the source is gone")
    raise SystemExit(2)


def stubborn_loop(channel) -> None:
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(0.05)


def blocking_receive_loop(channel, address: str) -> None:
    """Blocks in a receive without timeout on a stream that never sends: only the stop wakeup can end it."""
    from cam_server.bsread import PULL, Source, Wakeup

    wakeup = Wakeup()
    channel.on_stop(wakeup.set)
    with Source(address=address, mode=PULL, receive_timeout=None, wakeup=wakeup) as source:
        channel.stats.set("clients", 1)  # "I am about to block"
        message = source.receive()
    channel.report_error(f"receive returned {message!r}, interrupted={source.interrupted}, "
                         f"timed_out={source.timed_out}")


def exit_with(channel, code: int, error: str | None = None) -> None:
    if error:
        channel.report_error(error)
    raise SystemExit(code)


def slow_to_stop(channel, delay: float) -> None:
    """Loops until asked to stop, then takes ``delay`` s to finish; stamps both moments in the shared stats."""
    while not channel.should_stop():
        time.sleep(0.01)
    channel.stats.set("rate", time.time())  # when the stop request was seen
    time.sleep(delay)
    channel.stats.set("last_frame_time", time.time())  # when the instance finished

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

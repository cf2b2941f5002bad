"""Stand-in instance loops for manager tests (importable, so forkserver children can run them).

They follow the real contract of ``run_instance(control, spec)``: bind ``spec.output_endpoint``, apply live configs,
stop when asked, end by themselves when ``records`` is reached, report an error and exit non-zero on a crash.
"""

from __future__ import annotations

import time

import numpy as np

from cam_server.bsread import PUB, Sender


def counter_instance(control, spec) -> None:
    config = spec.config.to_dict()
    port = int(spec.output_endpoint.rsplit(":", 1)[1])
    sender = Sender(port=port, mode=PUB, block=False)
    sender.open()
    image = np.arange(12, dtype=np.uint16).reshape(3, 4)
    sent = 0
    try:
        while not control.should_stop():
            new = control.poll_config()
            if new is not None:
                config = new.to_dict()
            if config.get("crash"):
                control.report_error(f"crash requested: {config['crash']}")
                raise SystemExit(3)
            control.stats.add("frames_in")
            sender.send(data={"image": image, "value": float(config.get("image_threshold") or 0.0),
                              "nan": float("nan"), "name": spec.instance_id}, pulse_id=sent)
            sent += 1
            control.stats.add("frames_out")
            if config.get("records") and sent >= config["records"]:
                return
            time.sleep(0.02)
    finally:
        sender.close()

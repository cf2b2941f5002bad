"""How many messages a stream queues per client (ZeroMQ's SNDHWM): the defaults and the bound in bytes.

Apart from ``sender.py`` so that the configs (camera, pipeline) can name the default without importing ZeroMQ.
"""

from __future__ import annotations

DEFAULT_SEND_QUEUE = 10  # messages per client: the default queue_size of cameras and pipelines (the reference: 100)
# The most bytes of messages a socket queues for one (slow) client at the default queue size: ZeroMQ holds each queued
# message (sent without a copy) until the client takes it, so a stalled client pins SNDHWM messages; 10 of 2560x2160
# uint16 are 110 MB per client (the reference's 100 of 1280x1024: 262 MB).
SEND_QUEUE_BYTES = 32 * 2**20
MIN_SEND_QUEUE = 2  # messages: the least a client's queue holds, however large the messages


def send_queue_size(queue_size: int, message_bytes: int) -> int:
    """Messages to queue per client (SNDHWM) for a configured ``queue_size``: as configured, except the default
    (:data:`DEFAULT_SEND_QUEUE`), which is bounded to :data:`SEND_QUEUE_BYTES` of messages of ``message_bytes`` (at
    least :data:`MIN_SEND_QUEUE`; ``message_bytes`` <= 0: not known yet). Decided by the value, not by whether a config
    spelled it out: configs are stored with every default filled in.

    Only when the socket is opened: changing SNDHWM on a socket with clients changes their live queues, and libzmq can
    then stop delivering to a client (a benchmark client got nothing for 9 s; compare libzmq issue #2509, RCVHWM
    changed after connect); a client that connects later gets the value the socket was bound with anyway."""
    if queue_size != DEFAULT_SEND_QUEUE or message_bytes <= 0:
        return queue_size
    return max(MIN_SEND_QUEUE, min(queue_size, SEND_QUEUE_BYTES // message_bytes))

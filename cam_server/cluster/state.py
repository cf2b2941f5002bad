"""The cluster's shared state in Redis: workers, heartbeats, instances, permanent instances, the workers file, lost
instances and the claims that make one manager act where two could.

Managers hold nothing that is not here, so any number of them serve side by side and one restarted (kill -9) goes
on at once. Keys (``P`` = ``cam_server:<kind>``, kind ``camera`` or ``pipeline``; values are JSON):

| key | type | holds |
|---|---|---|
| ``P:workers`` | hash url → record | each worker's last heartbeat record (load, instances, version) |
| ``P:hb:<url>`` | string, TTL = dead_after | present while the worker heartbeats: its absence is death |
| ``P:instances`` | hash id → record | which worker runs each instance, its stream, config, kind, start time |
| ``P:permanent`` | string | ``{instance_id: name}``, keys starting with ``#`` disabled |
| ``P:servers`` | string | the workers file (``servers.json``) |
| ``P:lost`` | hash id → record | private instances lost with their worker: host and cause |
| ``P:pending`` | hash id → record | instances being started (placements at the same time count them) |
| ``P:ended:<id>`` | string, TTL 1 day | the worker of a stopped instance (its exit code stays readable there) |
| ``P:claim:<id>`` | string NX, TTL | the manager placing instance ``id`` (a second one waits for its record) |
| ``P:backoff:<id>`` | string, TTL | a permanent instance that failed to start or ended early: not started meanwhile |
| ``P:restarts:<id>`` | string, TTL 1 h | its early ends in a row: ``{"delay": s, "run": started_at}`` |
| ``P:failover:<url>:<beat>`` | string NX, TTL | the manager failing over a dead worker (one per death) |
| ``cam_server:dead_after`` | string | seconds of silence after which a worker is dead (set by managers) |
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

DEFAULT_DEAD_AFTER = 3.0
CLAIM_TTL_S = 60.0  # a placement (start on a worker) never takes longer; a crashed claimer's claim expires
FAILOVER_CLAIM_TTL_S = 10.0  # a failover is a few Redis writes; a crashed claimer's claim expires, another retries
FAILOVER_DONE_TTL_S = 3600.0
ENDED_TTL_S = 86400  # how long a stopped instance's worker is remembered
RESTARTS_TTL_S = 3600  # a permanent instance's early ends are remembered this long (its back-off grows meanwhile)


@dataclass
class InstanceRecord:
    """One instance's place in the cluster (``kind``: permanent, private, shared or camera)."""

    instance_id: str
    host: str
    stream: str
    config: dict[str, Any]
    kind: str
    started_at: float = field(default_factory=time.time)
    name: str | None = None  # saved pipeline / camera it was started from
    requested: dict[str, Any] | None = None  # shared pipelines: the config they were asked with (for reuse)

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=str)

    @classmethod
    def from_json(cls, text: str) -> InstanceRecord:
        return cls(**json.loads(text))


class ClusterState:
    """Typed access to one kind's keys (``kind``: ``camera`` or ``pipeline``) in the Redis at ``url``."""

    def __init__(self, url: str, kind: str) -> None:
        self.url = url
        self.kind = kind
        self.redis = redis.Redis.from_url(url, decode_responses=True, socket_timeout=5, socket_connect_timeout=5,
                                          health_check_interval=10)
        self.prefix = f"cam_server:{kind}"
        self.token = uuid.uuid4().hex  # this process's claims

    def of_kind(self, kind: str) -> ClusterState:
        """The state of the other kind on the same Redis (the pipeline manager reads where cameras run)."""
        other = ClusterState.__new__(ClusterState)
        other.url, other.kind, other.redis, other.token = self.url, kind, self.redis, self.token
        other.prefix = f"cam_server:{kind}"
        return other

    def _k(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    # --- settings -------------------------------------------------------------------------------------------
    def dead_after(self) -> float:
        value = self.redis.get("cam_server:dead_after")
        return float(value) if value else DEFAULT_DEAD_AFTER

    def set_dead_after(self, seconds: float) -> None:
        self.redis.set("cam_server:dead_after", repr(float(seconds)))

    # --- workers --------------------------------------------------------------------------------------------
    def heartbeat(self, url: str, record: dict[str, Any], ttl: float) -> bool:
        """Refresh worker ``url``'s heartbeat (TTL ``ttl`` s) and record; True when it was absent (a (re)start)."""
        record = {**record, "url": url, "last_heartbeat": time.time()}
        pipe = self.redis.pipeline()
        pipe.set(self._k("hb", url), repr(record["last_heartbeat"]), px=max(1, int(ttl * 1000)), get=True)
        pipe.hset(self._k("workers"), url, json.dumps(record))
        previous, _ = pipe.execute()
        return previous is None

    def deregister(self, url: str) -> None:
        """A worker stopping cleanly: dead at once (its instances are failed over at the next check)."""
        self.redis.delete(self._k("hb", url))

    def workers(self) -> dict[str, dict[str, Any]]:
        """Every worker that ever registered, with ``alive`` (its heartbeat key exists)."""
        records = {url: json.loads(text) for url, text in self.redis.hgetall(self._k("workers")).items()}
        if not records:
            return {}
        pipe = self.redis.pipeline()
        for url in records:
            pipe.exists(self._k("hb", url))
        for (_url, record), alive in zip(records.items(), pipe.execute(), strict=True):
            record["alive"] = bool(alive)
        return records

    def is_alive(self, url: str) -> bool:
        """One worker's heartbeat key exists (one round trip: the hot path of forwarded requests)."""
        return bool(self.redis.exists(self._k("hb", url)))

    # --- instances ------------------------------------------------------------------------------------------
    def instances(self) -> dict[str, InstanceRecord]:
        return {iid: InstanceRecord.from_json(text) for iid, text in self.redis.hgetall(self._k("instances")).items()}

    def instance(self, instance_id: str) -> InstanceRecord | None:
        text = self.redis.hget(self._k("instances"), instance_id)
        return InstanceRecord.from_json(text) if text else None

    def instances_of(self, instance_ids: list[str]) -> dict[str, InstanceRecord]:
        """The records of these ids only (those that exist)."""
        if not instance_ids:
            return {}
        texts = self.redis.hmget(self._k("instances"), instance_ids)
        return {iid: InstanceRecord.from_json(t) for iid, t in zip(instance_ids, texts, strict=True) if t}

    def hosts_of(self, instance_ids: list[str]) -> tuple[list[str | None], list[str | None]]:
        """For each id: the worker Redis assigns it to, and the worker it was lost from (None: no such record).
        Reads only those ids (a worker checks its own instances every heartbeat)."""
        pipe = self.redis.pipeline()
        pipe.hmget(self._k("instances"), instance_ids)
        pipe.hmget(self._k("lost"), instance_ids)
        records, lost = pipe.execute()
        return ([InstanceRecord.from_json(t).host if t else None for t in records],
                [json.loads(t).get("host") if t else None for t in lost])

    def put_instance(self, record: InstanceRecord) -> None:
        """Record where an instance runs (and forget it was lost: the id runs again)."""
        pipe = self.redis.pipeline()
        pipe.hset(self._k("instances"), record.instance_id, record.to_json())
        pipe.hdel(self._k("lost"), record.instance_id)
        pipe.execute()

    def remove_instance(self, instance_id: str, host: str | None = None) -> bool:
        """Forget an instance (only if it is still on ``host``, when given: a failover must not drop a newer
        placement). Atomic with WATCH."""
        key = self._k("instances")
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    text = pipe.hget(key, instance_id)
                    if text is None or (host is not None and InstanceRecord.from_json(text).host != host):
                        pipe.unwatch()
                        return False
                    pipe.multi()
                    pipe.hdel(key, instance_id)
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue

    def clear_instances(self, host: str | None = None) -> list[InstanceRecord]:
        """Forget every instance (of ``host``); returns the forgotten records."""
        gone = [r for r in self.instances().values() if host is None or r.host == host]
        for record in gone:
            self.remove_instance(record.instance_id, record.host)
        return gone

    def add_pending(self, record: InstanceRecord) -> None:
        """An instance being started on ``record.host``: counted by placements running at the same time."""
        self.redis.hset(self._k("pending"), record.instance_id, record.to_json())

    def remove_pending(self, instance_id: str) -> None:
        self.redis.hdel(self._k("pending"), instance_id)

    def placed(self) -> list[InstanceRecord]:
        """Instances running and being started (what placement counts)."""
        pipe = self.redis.pipeline()
        pipe.hgetall(self._k("instances"))
        pipe.hgetall(self._k("pending"))
        running, pending = pipe.execute()
        return [InstanceRecord.from_json(t) for t in running.values()] + [
            InstanceRecord.from_json(t) for iid, t in pending.items() if iid not in running]

    def remember_ended(self, record: InstanceRecord) -> None:
        """A stopped instance's worker, so its exit code and "not running any more" stay readable there."""
        pipe = self.redis.pipeline()
        pipe.set(self._k("ended", record.instance_id), record.host, ex=ENDED_TTL_S)
        pipe.hdel(self._k("lost"), record.instance_id)
        pipe.execute()

    def ended_on(self, instance_id: str) -> str | None:
        return self.redis.get(self._k("ended", instance_id))

    # --- claims ---------------------------------------------------------------------------------------------
    def claim(self, instance_id: str, ttl: float = CLAIM_TTL_S) -> bool:
        """Claim the placement of ``instance_id`` (SET NX): True for the one manager that got it."""
        return bool(self.redis.set(self._k("claim", instance_id), self.token, nx=True, px=int(ttl * 1000)))

    def release(self, instance_id: str) -> None:
        """Release our claim (only ours: compare and delete in one script)."""
        self.redis.eval("if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end "
                        "return 0", 1, self._k("claim", instance_id), self.token)

    def claimed(self, instance_id: str) -> bool:
        return bool(self.redis.exists(self._k("claim", instance_id)))

    def claim_failover(self, url: str, beat: float) -> bool:
        """Claim the failover of worker ``url`` dead after its heartbeat at ``beat``: one manager per death."""
        return bool(self.redis.set(self._k("failover", url, repr(beat)), self.token, nx=True,
                                   px=int(FAILOVER_CLAIM_TTL_S * 1000)))

    def failover_done(self, url: str, beat: float) -> None:
        """The failover of ``url``'s death at ``beat`` is complete: remember it (no manager does it again)."""
        self.redis.pexpire(self._k("failover", url, repr(beat)), int(FAILOVER_DONE_TTL_S * 1000))

    def failed_over(self, url: str, beat: float) -> bool:
        """Whether a manager has claimed (done) the failover of ``url``'s death after its heartbeat at ``beat``."""
        return bool(self.redis.exists(self._k("failover", url, repr(beat))))

    def back_off(self, instance_id: str, seconds: float) -> None:
        """Starting ``instance_id`` failed: no manager tries again for ``seconds``."""
        self.redis.set(self._k("backoff", instance_id), "1", px=int(seconds * 1000))

    def backing_off(self, instance_id: str) -> bool:
        return bool(self.redis.exists(self._k("backoff", instance_id)))

    def early_end(self, instance_id: str) -> dict[str, Any] | None:
        """The judgement of the last early end of ``instance_id`` in a row (``{"delay": s, "run": started_at}``)."""
        text = self.redis.get(self._k("restarts", instance_id))
        return json.loads(text) if text else None

    def crash_back_off(self, instance_id: str, run: float, delay: float) -> None:
        """The run of ``instance_id`` started at ``run`` ended early: no start for ``delay`` seconds (the back-off is
        set before the judgement, so that a manager that sees the judgement also sees the back-off)."""
        self.back_off(instance_id, delay)
        self.redis.set(self._k("restarts", instance_id), json.dumps({"delay": delay, "run": run}),
                       ex=RESTARTS_TTL_S)

    def ran_long(self, instance_id: str) -> None:
        """A run of ``instance_id`` lasted: its next early end backs off from the start again."""
        self.redis.delete(self._k("restarts", instance_id))

    # --- permanent instances, the workers file -------------------------------------------------------------
    def permanent(self) -> dict[str, str]:
        text = self.redis.get(self._k("permanent"))
        return json.loads(text) if text else {}

    def set_permanent(self, instances: dict[str, str]) -> None:
        self.redis.set(self._k("permanent"), json.dumps(instances))

    def servers_file(self) -> dict[str, dict[str, Any]] | None:
        text = self.redis.get(self._k("servers"))
        return json.loads(text) if text else None

    def set_servers_file(self, servers: dict[str, dict[str, Any]]) -> None:
        self.redis.set(self._k("servers"), json.dumps(servers))

    # --- lost instances -------------------------------------------------------------------------------------
    def lost(self) -> dict[str, dict[str, Any]]:
        return {iid: json.loads(text) for iid, text in self.redis.hgetall(self._k("lost")).items()}

    def add_lost(self, record: InstanceRecord, cause: str) -> None:
        self.redis.hset(self._k("lost"), record.instance_id,
                        json.dumps({"host": record.host, "cause": cause, "at": time.time(), "kind": record.kind,
                                    "name": record.name}))

    def unlose(self, instance_id: str) -> None:
        """The id is being placed again: it is no longer lost (its old worker must not stop the new one)."""
        self.redis.hdel(self._k("lost"), instance_id)


"""``ProxyClient``: the ``/api/v1/proxy`` routes of a camera or pipeline manager (psi-interface.md §4), with the
method names of PSI's client."""

from __future__ import annotations

from typing import Any

from cam_server.client.rest import RestClient

PROXY = "/api/v1/proxy"


class ProxyClient(RestClient):
    """A manager's own routes: its workers, where instances run, the workers file and permanent instances."""

    def __init__(self, address: str = "http://sf-daqsync-01:8888/", timeout: float = 30.0,
                 token: str | None = None) -> None:
        super().__init__(address, PROXY, timeout, token)

    def get_servers_info(self) -> dict[str, list[Any]]:
        """Parallel lists ``servers, load, instances, version, cpu, memory, tx, rx`` (one entry per worker)."""
        body = self._get("/servers")
        return {k: v for k, v in body.items() if k not in ("state", "status")}

    def get_status_info(self) -> dict[str, list[str] | None]:
        """``{worker_url: [instance ids]}``, None for a worker that does not heartbeat."""
        return self._get("/status")["servers"]

    def get_instances_info(self) -> dict[str, Any]:
        """``{instance_id: info + "host"}`` of every running instance."""
        return self._get("/info")["info"]["active_instances"]

    def get_info(self) -> dict[str, Any]:
        """``{"active_instances": ..., "servers": {url: {..., "alive", "last_heartbeat"}}}``."""
        return self._get("/info")["info"]

    def get_lost_instances(self) -> dict[str, Any]:
        """``{instance_id: {"host", "cause", ...}}``: private instances lost with their worker."""
        return self._get("/lost")["lost"]

    def stop_instance(self, instance_id: str) -> None:
        """Stop an instance on whichever worker runs it."""
        self._delete(f"/{instance_id}")

    def stop_all_instances(self, server: int | str) -> None:
        """Stop every instance of one worker (its index in :meth:`get_servers_info` or its URL)."""
        self._delete(f"/server/{server}")

    def get_config(self) -> dict[str, Any]:
        """The workers file."""
        return self._get("/config")["config"]

    def set_config(self, config: dict[str, Any]) -> dict[str, Any]:
        return self._post("/config", json=config)["config"]

    def get_permanent_instances(self) -> dict[str, str]:
        """``{instance_id: name}``; keys starting with ``#`` are disabled."""
        return self._get("/permanent")["permanent_instances"]

    def set_permanent_instances(self, permanent_instances: dict[str, str]) -> dict[str, str]:
        return self._post("/permanent", json=permanent_instances)["permanent_instances"]

    def get_server_logs(self, server_index: int | str, txt: bool = False) -> Any:
        """One worker's recent log records (as its ``/api/v1/logs``), or their text."""
        if txt:
            return self._get_raw(f"/server/logs/{server_index}/txt").text
        return self._get(f"/server/logs/{server_index}")["logs"]

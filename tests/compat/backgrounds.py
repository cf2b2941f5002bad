"""What both background test modules send and check: PSI's image_bytes dict, the error envelope's message."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np


def payload(array: np.ndarray, **extra: Any) -> dict[str, Any]:
    """The dict PSI's client sends back (what GET image_bytes answers): base64 bytes, shape, dtype."""
    return {"bytes": base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii"),
            "shape": list(array.shape), "dtype": array.dtype.name, **extra}


def error_message(response: Any, status: int) -> str:
    """The envelope message of an error answer with HTTP ``status`` (a requests or an httpx response)."""
    assert response.status_code == status, response.text[:500]
    body = response.json()
    assert body["state"] == "error" and isinstance(body["status"], str) and body["status"]
    return body["status"]

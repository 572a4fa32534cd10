"""The JSON-lines event stream on stdout (PROTOCOL.md). Only rank 0 speaks; everything else goes to stderr."""
from __future__ import annotations

import json
import math
from typing import IO, Any


def _plain(value: Any) -> Any:
    """Non-finite floats become the strings "NaN", "Infinity", "-Infinity" (JSON has no such numbers; JS Number() reads them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class Events:
    def __init__(self, stream: IO[str], enabled: bool = True):
        self.stream, self.enabled = stream, enabled

    def emit(self, event: dict) -> None:
        if self.enabled:
            self.stream.write(json.dumps(_plain(event), allow_nan=False) + "\n")
            self.stream.flush()

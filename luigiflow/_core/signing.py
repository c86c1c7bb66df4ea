"""Run signatures: an HMAC, with the team key, over the facts that make a run count.

With a team key configured, a run counts as complete (is reused, and its artifacts are
deserialized) only when it carries a signature that verifies with one of the keys. The
signature covers the run id and experiment (so it cannot be copied onto another run),
the identity, the task facts and parameters, the upstream run ids and every artifact's
checksum record: an artifact whose bytes differ from the signed checksum is never loaded.
Whoever can write to the store but does not hold the key cannot make a run count.

Pure: the store layer hands the facts in as a mapping of tag name to value.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence

VERSION = "v1"


def payload(run_id: str, experiment_id: str, facts: Mapping[str, str]) -> bytes:
    """The canonical bytes signed for one run: its id, experiment and signed tags."""
    document = {"run_id": run_id, "experiment_id": experiment_id, "facts": dict(facts)}
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign(key: bytes, data: bytes) -> str:
    """The signature tag value: version and HMAC-SHA256 hex digest."""
    return f"{VERSION}:{hmac.new(key, data, hashlib.sha256).hexdigest()}"


def verify(keys: Sequence[bytes], data: bytes, signature: str | None) -> bool:
    """The signature was made with one of `keys` over exactly `data`."""
    if not signature or not keys:
        return False
    version, _, digest = signature.partition(":")
    if version != VERSION:
        return False
    for key in keys:
        expected = hmac.new(key, data, hashlib.sha256).hexdigest()
        if hmac.compare_digest(expected, digest):
            return True
    return False

"""Which runs a process holding the team key trusts, and the signature a run gets.

With no key configured every run is trusted (behaviour as before signing existed). With
a key, a run is trusted only when its `luigiflow.signature` verifies with one of the keys
over the facts `schema.signed_facts` selects, bound to its run id and experiment.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from luigiflow import _settings
from luigiflow._core import signing
from luigiflow._store import schema
from luigiflow._store.records import RunRecord

SIGNED = "signed"  # verifies with a key held here
UNSIGNED = "unsigned"  # carries no signature
BAD = "badly signed"  # carries one that no key held here verifies
UNCHECKED = "signed (not verified: no key)"  # carries one; no key to check it with


def sign(run_id: str, experiment_id: str, tags: Mapping[str, str]) -> dict[str, str]:
    """The signature tag for a run with these tags ({} when no key is configured)."""
    keys = _settings.signing_keys()
    if not keys:
        return {}
    data = signing.payload(run_id, experiment_id, schema.signed_facts(tags))
    return {schema.SIGNATURE_TAG: signing.sign(keys[0], data)}


def status(run: RunRecord, keys: tuple[bytes, ...] | None = None) -> str:
    """SIGNED, UNSIGNED, BAD or (without keys) UNCHECKED."""
    keys = _settings.signing_keys() if keys is None else keys
    signature = run.data.tags.get(schema.SIGNATURE_TAG)
    if not signature:
        return UNSIGNED
    if not keys:
        return UNCHECKED
    data = signing.payload(
        run.info.run_id, run.info.experiment_id, schema.signed_facts(run.data.tags)
    )
    return SIGNED if signing.verify(keys, data, signature) else BAD


def trusted(run: RunRecord) -> bool:
    """The run may be reused and its artifacts loaded in this process."""
    keys = _settings.signing_keys()
    return not keys or status(run, keys) == SIGNED


def _checkpoint_payload(run_id: str, experiment_id: str, record: Mapping[str, Any]) -> bytes:
    body = {k: v for k, v in record.items() if k != "signature"}
    return signing.payload(run_id, experiment_id, {"checkpoint": json.dumps(body, sort_keys=True)})


def sign_checkpoint(run_id: str, experiment_id: str, record: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint record with, under a team key, its signature (it is unpickled later)."""
    keys = _settings.signing_keys()
    if not keys:
        return record
    data = _checkpoint_payload(run_id, experiment_id, record)
    return {**record, "signature": signing.sign(keys[0], data)}


def checkpoint_trusted(run: RunRecord, record: Mapping[str, Any]) -> bool:
    """Without a key every checkpoint; with one, only those signed with a key held here."""
    keys = _settings.signing_keys()
    if not keys:
        return True
    data = _checkpoint_payload(run.info.run_id, run.info.experiment_id, record)
    signature = record.get("signature")
    return signing.verify(keys, data, signature if isinstance(signature, str) else None)


def sign_lease(run_id: str, experiment_id: str, tags: Mapping[str, str]) -> dict[str, str]:
    """The lease signature tag for a RUNNING run ({} when no key is configured)."""
    keys = _settings.signing_keys()
    if not keys:
        return {}
    data = signing.payload(run_id, experiment_id, _lease_facts(tags))
    return {schema.LEASE_SIGNATURE_TAG: signing.sign(keys[0], data)}


def lease_trusted(run: RunRecord) -> bool:
    """The RUNNING run may hold its identity's lease here: without a key any run; with
    one, only a run whose lease signature verifies (a forged run never makes us wait)."""
    keys = _settings.signing_keys()
    if not keys:
        return True
    data = signing.payload(run.info.run_id, run.info.experiment_id, _lease_facts(run.data.tags))
    return signing.verify(keys, data, run.data.tags.get(schema.LEASE_SIGNATURE_TAG))


def _lease_facts(tags: Mapping[str, str]) -> dict[str, str]:
    return {k: tags.get(k, "") for k in schema.LEASE_SIGNED_TAGS}

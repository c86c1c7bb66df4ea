"""What MLflow accepts: a batch checked as MLflow's validators would check it (without
importing mlflow where it is plainly valid), and MLflow's own errors.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping, Sequence

# A strict subset of the keys MLflow accepts (its `[/\\w.\\- :]`, no path tricks) and
# of its length limits: a batch within them is stored by MLflow exactly as given.
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_./ -]{1,250}")
_MAX_PARAM_VALUE, _MAX_TAG_VALUE = 6000, 8000


def _plain_key(key: object) -> bool:
    if not isinstance(key, str) or not _PLAIN_KEY.fullmatch(key):
        return False
    normal = posixpath.normpath(key)
    return normal == key and normal != "." and not normal.startswith(("..", "/"))


def _plain_batch(
    metrics: Sequence[tuple[str, float, int, int]],
    params: Mapping[str, str],
    tags: Mapping[str, str],
) -> bool:
    """MLflow's validators would pass this batch unchanged: checked without them."""
    for key, value, timestamp, step in metrics:
        number = type(value) in (int, float)
        if not (_plain_key(key) and number and type(timestamp) is int and timestamp >= 0):
            return False
        if type(step) is not int:
            return False
    return all(
        _plain_key(k) and isinstance(v, str) and len(v) <= _MAX_PARAM_VALUE
        for k, v in params.items()
    ) and all(
        _plain_key(k) and isinstance(v, str) and len(v) <= _MAX_TAG_VALUE for k, v in tags.items()
    )


def validated_batch(
    metrics: Sequence[tuple[str, float, int, int]],
    params: Mapping[str, str],
    tags: Mapping[str, str],
) -> tuple[dict[str, str], dict[str, str]] | None:
    """Params and tags as MLflow's `log_batch` would store them (long tag values cut,
    with MLflow's warning), raising MLflow's own error for a bad key or value; None
    where this MLflow keeps its validators elsewhere.

    A batch of plain keys and values within MLflow's limits (luigiflow's own tags,
    parameter names, ordinary metric names) is checked here without importing mlflow;
    anything else goes through MLflow's validators, which say what is wrong."""
    if _plain_batch(metrics, params, tags):
        return dict(params), dict(tags)
    try:
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.utils.validation import (
            _validate_batch_log_data,
            _validate_param_keys_unique,
        )
    except ImportError:
        return None
    checked_params = [Param(k, v) for k, v in params.items()]
    _validate_param_keys_unique(checked_params)
    _, checked_params, checked_tags = _validate_batch_log_data(
        [Metric(k, v, ts, step) for k, v, ts, step in metrics],
        checked_params,
        [RunTag(k, v) for k, v in tags.items()],
    )
    return (
        {p.key: p.value for p in checked_params},
        {t.key: t.value for t in checked_tags},
    )


def not_found(message: str) -> Exception:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

    return MlflowException(message, RESOURCE_DOES_NOT_EXIST)


def invalid(message: str) -> Exception:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    return MlflowException(message, INVALID_PARAMETER_VALUE)


def is_inactive_experiment_error(exc: BaseException) -> bool:
    """MLflow refused to create a run in an experiment that is deleted."""
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException) and "must be in the 'active' state" in str(exc)

"""The scoring endpoint of `luigiflow serve`: MLflow's scoring server behind a strict front.

MLflow's app answers `/ping`, `/health`, `/version` and scores valid requests, so those
behave exactly as MLflow documents. `POST /invocations` passes through this front first:

- a body over the limit is answered 413 from its Content-Length, before it is read (the
  server then discards whatever the client still sends, so the client reads the 413);
  without a Content-Length, reading stops as soon as the limit is passed;
- the body is read in linear time (chunks joined once) and parsed once, off the event loop;
- every payload format MLflow accepts (`dataframe_split`, `dataframe_records`,
  `instances`, `inputs`, CSV, Parquet) is checked against the model's input columns:
  missing, unexpected and mistyped columns are a 400 naming them;
- every error body is written here, from fixed text and the request's own column names:
  never a stack trace, a file path or an exception class. Unexpected failures are logged
  on the server with their traceback and answered with a generic message.
"""

from __future__ import annotations

import asyncio
import collections
import io
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

_log = logging.getLogger(__name__)

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[Mapping[str, Any]]]
Send = Callable[[Mapping[str, Any]], Awaitable[None]]

JSON = "application/json"
CSV = "text/csv"
PARQUET = "application/vnd.apache.parquet"
FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
NUMERIC = {"integer", "long", "float", "double"}
SHOWN_NAMES = 20  # column names quoted in one message at most
SHOWN_NAME_CHARS = 60


class Problem(Exception):
    """A request the server rejects, with the status and the message the client reads."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def bad(message: str) -> Problem:
    return Problem(400, "BAD_REQUEST", message)


def _names(names: Iterable[Any]) -> str:
    shown = [str(n)[:SHOWN_NAME_CHARS] for n in names]
    more = len(shown) - SHOWN_NAMES
    return ", ".join(shown[:SHOWN_NAMES]) + (f" and {more} more" if more > 0 else "")


def _check_name_list(names: list[Any]) -> None:
    odd = [n for n in names if not isinstance(n, str)]
    if odd:
        raise bad(f"column names must be strings; got {_names(map(repr, odd))}")
    counts = collections.Counter(names)
    twice = sorted(n for n, count in counts.items() if count > 1)
    if twice:
        raise bad(f"column(s) given twice: {_names(twice)}")


class Columns:
    """The model's named input columns: type name and whether each is required."""

    def __init__(self, specs: dict[str, tuple[str, bool]]) -> None:
        self.specs = specs

    @classmethod
    def of(cls, schema: Any) -> Columns | None:
        """None when the model has no named-column schema (tensors, or no signature)."""
        if schema is None or not schema.has_input_names() or schema.is_tensor_spec():
            return None
        from mlflow.types import DataType

        specs = {}
        for spec in schema.inputs:
            kind = spec.type.name if isinstance(spec.type, DataType) else "other"
            specs[str(spec.name)] = (kind, bool(getattr(spec, "required", True)))
        return cls(specs)

    def expected(self) -> str:
        return ", ".join(f"{name} ({kind})" for name, (kind, _) in self.specs.items())

    def check_names(self, names: list[Any]) -> None:
        _check_name_list(names)
        given = set(names)
        missing = [n for n, (_, required) in self.specs.items() if required and n not in given]
        extra = [n for n in names if n not in self.specs]
        parts = []
        if missing:
            parts.append(f"missing column(s): {_names(missing)}")
        if extra:
            parts.append(f"unexpected column(s): {_names(extra)}")
        if parts:
            raise bad("; ".join(parts) + f" (the model takes exactly: {self.expected()})")

    def check_values(self, name: str, values: Iterable[Any]) -> None:
        """Each value is one scalar, and a number where the column is numeric."""
        kind = self.specs[name][0]
        if kind == "other":
            return
        for row, value in enumerate(values):
            if isinstance(value, list | dict | tuple):
                raise bad(f"column {name} (row {row}): expected one {kind} value, got a list")
            if kind in NUMERIC and not _numeric(value):
                shown = repr(value)[:SHOWN_NAME_CHARS]
                raise bad(f"column {name} (row {row}): expected a {kind} value, got {shown}")


def _numeric(value: Any) -> bool:
    """A number, a text holding one, or a missing value (None, NaN, an empty CSV cell)."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return True
        try:
            float(text)
        except ValueError:
            return False
        return True
    try:
        float(value)  # also NumPy scalars, from CSV and Parquet
    except (TypeError, ValueError):
        return value is None or _is_missing(value)
    return True


def _is_missing(value: Any) -> bool:
    import pandas as pd

    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _media_type(content_type: str | None) -> str:
    """The media type, when it is one MLflow scores; 415 otherwise (MLflow's own rules)."""
    if not content_type:
        raise Problem(415, "UNSUPPORTED_MEDIA_TYPE", _supported("no Content-Type header"))
    parts = [p.strip() for p in content_type.split(";")]
    media = parts[0].lower()
    params = dict(p.partition("=")[::2] for p in parts[1:] if p)
    if params.get("charset", "utf-8").strip('"').lower() != "utf-8":
        raise Problem(415, "UNSUPPORTED_MEDIA_TYPE", "only the utf-8 charset is supported")
    others = [k for k in params if k.lower() != "charset"]
    if others or media not in (JSON, CSV, PARQUET):
        shown = content_type[:SHOWN_NAME_CHARS]
        raise Problem(415, "UNSUPPORTED_MEDIA_TYPE", _supported(f"got Content-Type {shown}"))
    return media


def _supported(what: str) -> str:
    return f"{what}; send Content-Type {JSON}, {CSV} or {PARQUET}"


def _text(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise bad("the body is not UTF-8 text") from None


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(_text(body))
    except RecursionError:
        raise bad("the JSON body is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise bad(
            f"the body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None


def check_json(payload: Any, columns: Columns | None) -> None:
    """The JSON payload names exactly one format, and its columns are the model's."""
    listing = ", ".join(FORMATS)
    if not isinstance(payload, dict):
        raise bad(f"the body must be a JSON object with one of: {listing}")
    if columns is None:
        return  # a model without named columns: MLflow's own parsing applies
    keys = [k for k in FORMATS if k in payload]
    if len(keys) != 1:
        got = _names(payload) if payload else "no key"
        raise bad(f"the body must hold exactly one of: {listing} (got {got})")
    [key] = keys
    others = [k for k in payload if k not in (key, "params")]
    if others:
        raise bad(f"unexpected key(s) next to {key}: {_names(others)}")
    data = payload[key]
    if key == "dataframe_split":
        table = _split_table(data)
    elif key == "dataframe_records" or isinstance(data, list):
        table = _records_table(key, data)
    elif isinstance(data, dict):
        table = _columnar_table(key, data)
    else:
        raise bad(
            f"{key} must be a list of {{column: value}} rows or a {{column: [values]}} object"
        )
    columns.check_names(list(table))
    for name, values in table.items():
        columns.check_values(name, values)


def _split_table(data: Any) -> dict[Any, list[Any]]:
    shape = 'dataframe_split must be {"columns": [names], "data": [[row values], ...]}'
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise bad(shape)
    names = data.get("columns")
    if not isinstance(names, list):
        raise bad(shape)
    _check_name_list(names)
    if not data["data"]:
        raise bad("dataframe_split has no rows; send at least one")
    table: dict[Any, list[Any]] = {n: [] for n in names}
    for i, row in enumerate(data["data"]):
        if not isinstance(row, list) or len(row) != len(names):
            count = len(row) if isinstance(row, list) else "not a list of"
            raise bad(f"dataframe_split row {i} has {count} values for {len(names)} columns")
        for name, value in zip(names, row, strict=True):
            table[name].append(value)
    return table


def _records_table(key: str, rows: Any) -> dict[Any, list[Any]]:
    if not isinstance(rows, list) or not rows:
        raise bad(f"{key} must be a non-empty list of {{column: value}} rows")
    table: dict[Any, list[Any]] = {}
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise bad(f"{key} row {i} is not a {{column: value}} object")
        for name, value in row.items():
            table.setdefault(name, []).append(value)
    partial = [n for n, values in table.items() if len(values) != len(rows)]
    if partial:
        raise bad(f"{key}: column(s) missing from some rows: {_names(partial)}")
    return table


def _columnar_table(key: str, data: dict[Any, Any]) -> dict[Any, list[Any]]:
    table = {n: v if isinstance(v, list) else [v] for n, v in data.items()}
    lengths = {len(v) for v in table.values()}
    if len(lengths) > 1:
        sizes = _names(f"{n} ({len(v)})" for n, v in table.items())
        raise bad(f"{key}: the columns have different lengths: {sizes}")
    return table


def check_frame(frame: Any, columns: Columns | None) -> None:
    if columns is None:
        return
    columns.check_names(list(frame.columns))
    for name in frame.columns:
        series = frame[name]
        columns.check_values(str(name), series.tolist())


def parse_csv(body: bytes) -> Any:
    import pandas as pd

    text = _text(body)
    try:
        # Strings only: the types are checked against the model's columns afterwards.
        return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except Exception:
        raise bad(
            "the body is not a CSV table with a header row (as pandas.DataFrame.to_csv writes)"
        ) from None


def parse_parquet(body: bytes) -> Any:
    import pandas as pd

    try:
        return pd.read_parquet(io.BytesIO(body))
    except Exception:
        raise bad(
            "the body is not a Parquet table (as pandas.DataFrame.to_parquet writes)"
        ) from None


def checked(body: bytes, media: str, columns: Columns | None) -> Any:
    """The request data to hand to MLflow (the parsed JSON, or the raw bytes), once checked."""
    if not body.strip():
        raise bad('empty request body; send JSON such as {"dataframe_split": {...}}')
    if media == JSON:
        payload = parse_json(body)
        check_json(payload, columns)
        return payload
    frame = parse_csv(body) if media == CSV else parse_parquet(body)
    if frame.empty:
        raise bad("the table has no rows; send at least one")
    check_frame(frame, columns)
    return body


def _error(problem: Problem) -> bytes:
    return json.dumps({"error_code": problem.code, "message": problem.message}).encode()


async def _respond(send: Send, status: int, body: bytes, media: str = JSON) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", media.encode("latin-1")),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class ScoringApp:
    """ASGI app: MLflow's scoring app, with `POST /invocations` checked and scored here."""

    def __init__(self, model: Any, max_body_bytes: int, timeout_s: float) -> None:
        from mlflow.pyfunc import scoring_server

        self.model = model
        self.schema = model.metadata.get_input_schema()
        self.columns = Columns.of(self.schema)
        self.max_body_bytes = max_body_bytes
        self.timeout_s = timeout_s
        self.mlflow_app = scoring_server.init(model)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"].rstrip("/") == "/invocations"
        ):
            await self.mlflow_app(scope, receive, send)
            return
        try:
            status, body, media = await self.invocations(scope, receive)
        except Problem as problem:
            status, body, media = problem.status, _error(problem), JSON
        except _Disconnected:
            return
        except Exception:
            _log.exception("luigiflow serve: unexpected failure while scoring a request")
            status, media = 500, JSON
            body = _error(
                Problem(
                    500,
                    "INTERNAL_ERROR",
                    "the server failed to score this request; its log has the details",
                )
            )
        await _respond(send, status, body, media)

    async def invocations(self, scope: Scope, receive: Receive) -> tuple[int, bytes, str]:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        self._check_length(headers.get("content-length"))
        media = _media_type(headers.get("content-type"))
        body = await self._read_body(receive)
        data = await asyncio.to_thread(checked, body, media, self.columns)
        return await self._score(data, headers["content-type"])

    def _check_length(self, declared: str | None) -> None:
        if declared is None:
            return
        try:
            size = int(declared)
        except ValueError:
            raise bad("Content-Length is not a number") from None
        if size > self.max_body_bytes:
            raise self._too_large()

    def _too_large(self) -> Problem:
        limit = self.max_body_bytes / 2**20
        return Problem(
            413,
            "REQUEST_TOO_LARGE",
            f"the request body is larger than this server's limit of {limit:g} MB; "
            "send fewer rows per request (or start the server with a larger --max-body-mb)",
        )

    async def _read_body(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise self._too_large()
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _score(self, data: Any, content_type: str) -> tuple[int, bytes, str]:
        from mlflow.exceptions import MlflowException
        from mlflow.pyfunc import scoring_server

        try:
            result = await asyncio.wait_for(
                asyncio.to_thread(
                    scoring_server.invocations, data, content_type, self.model, self.schema
                ),
                self.timeout_s,
            )
        except TimeoutError:
            raise Problem(
                504, "TIMEOUT", f"scoring took longer than {self.timeout_s:g} s; send fewer rows"
            ) from None
        except MlflowException as exc:
            _log.warning("luigiflow serve: MLflow rejected a request: %s", str(exc)[:2000])
            expected = f" (expected columns: {self.columns.expected()})" if self.columns else ""
            raise bad(
                f"the model could not score these rows; check their values{expected}"
            ) from None
        if result.status != 200:
            _log.warning("luigiflow serve: MLflow answered %s: %s", result.status, result.response)
            raise bad("the model could not score this request")
        return 200, result.response.encode("utf-8"), result.mimetype


class _Disconnected(Exception):
    """The client went away before sending its whole body: nobody to answer."""

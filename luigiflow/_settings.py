"""Every environment variable luigiflow reads, parsed and validated in one place.

Values are read when asked for, not at import, so a test or a long-lived notebook
that changes the environment sees the change; a malformed value is a one-line
`LuigiflowError` naming the variable.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pathlib
import re
import secrets
import sys
import urllib.parse

from luigiflow._errors import ConfigError, LuigiflowError, TrackingError

TRACKING_URI = "MLFLOW_TRACKING_URI"
RECHECK_S = "LUIGIFLOW_RECHECK_S"
HEARTBEAT_S = "LUIGIFLOW_HEARTBEAT_S"
STALE_AFTER_S = "LUIGIFLOW_STALE_AFTER_S"
CHECKSUM_MAX_BYTES = "LUIGIFLOW_CHECKSUM_MAX_BYTES"
CACHE_DIR = "LUIGIFLOW_CACHE_DIR"
SYSTEM_METRICS = "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING"
HTTP_MAX_RETRIES = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
HTTP_BACKOFF_FACTOR = "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"
HTTP_BACKOFF_JITTER = "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER"
# MLflow's own defaults (7 retries, backoff factor 2) wait about 4 minutes before an
# unreachable server is reported; these give up after a few seconds (2 retries, backoff
# factor 1). Values the user set are kept.
HTTP_RETRY_DEFAULTS = {
    HTTP_MAX_RETRIES: "2",
    HTTP_BACKOFF_FACTOR: "1",
    HTTP_BACKOFF_JITTER: "0.5",
}
# MLflow 3.17's client downloads a proxied artifact from a presigned URL of the object
# store behind the server whenever the server offers one (an S3 --artifacts-destination
# does): clients that cannot reach that store failed every download.
PROXY_DOWNLOADS = "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD"
SIGNING_KEY = "LUIGIFLOW_SIGNING_KEY"
SIGNING_KEY_FILE = "LUIGIFLOW_SIGNING_KEY_FILE"
MIN_KEY_LENGTH = 16
UNSUPPORTED_PLATFORM = "LUIGIFLOW_UNSUPPORTED_PLATFORM"
OUTAGE_WINDOW_S = "LUIGIFLOW_OUTAGE_WINDOW"
# The retry variables luigiflow set itself (not the user), with the value it set: only
# those still holding it are widened to the outage window once the server has answered
# (a value the user sets later in the same process, e.g. a notebook, is theirs).
_ours: dict[str, str] = {}
_riding_out = [False]  # requests of this process span the outage window (forks inherit it)


UPGRADE_STORE = "LUIGIFLOW_UPGRADE_STORE"
# MLflow's own workspace switches (MLflow 3.10+), read as MLflow's client reads them.
WORKSPACES_ON = "MLFLOW_ENABLE_WORKSPACES"
WORKSPACE = "MLFLOW_WORKSPACE"
# A regular expression: parameter, setting and variable names it finds (re.search, any
# case) are secret too, besides luigiflow's own rules (see _core/redaction).
SECRET_PATTERN = "LUIGIFLOW_SECRET_PATTERN"
# Where a user's own identity key lives when no team key is set (in the cache folder).
IDENTITY_KEY_FILE = "identity.key"


def tracking_uri() -> str:
    """The tracking URI in force: `MLFLOW_TRACKING_URI` or `sqlite:///<cwd>/mlflow.db`."""
    uri = os.environ.get(TRACKING_URI)
    if uri:
        _check_tracking_uri(uri)
        return uri
    # Quoted as MLflow quotes a path (SQLAlchemy unquotes it): a folder named `proj%20x`,
    # or holding `?` or `#`, is that folder, not its percent-decoded neighbour.
    return "sqlite:///" + urllib.parse.quote(os.path.join(os.getcwd(), "mlflow.db"))


# Stores MLflow 3 tracks runs in (a `+driver` suffix is SQLAlchemy's, e.g. postgresql+psycopg2).
_STORE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks")


def _check_tracking_uri(uri: str) -> None:
    """One line for a URI that names no tracking store luigiflow can record runs in."""
    scheme = uri.partition(":")[0].lower() if "://" in uri or uri.startswith("databricks") else ""
    if scheme.split("+")[0] in _STORE_SCHEMES:
        return
    why = (
        "a folder or file:// URI is MLflow's file store, in maintenance mode since MLflow 3 "
        "(`mlflow migrate-filestore` moves one into a database)"
        if scheme in ("", "file")
        else f"{scheme!r} is not a tracking store scheme"
    )
    raise TrackingError(
        f"{TRACKING_URI}={uri!r}: {why}; use sqlite:///path/to/mlflow.db (embedded), "
        "http://host:port (an mlflow server) or postgresql://... (a database)"
    )


def seconds(name: str, default: float, positive: bool = False) -> float:
    """A duration in seconds from environment variable `name`, or `default`.

    `positive`: zero is refused too (an interval of 0 s would be a busy loop).
    """
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (value > 0 if positive else value >= 0):  # also rejects nan
        least = "a number of seconds above 0" if positive else "a number of seconds"
        raise LuigiflowError(f"{name}={raw!r} is not {least}; set e.g. {name}=1")
    return value


def recheck_interval() -> float:
    """Seconds between looks at other workers' runs (LUIGIFLOW_RECHECK_S, default 1)."""
    return seconds(RECHECK_S, 1.0)


def heartbeat_interval() -> float:
    """Seconds between heartbeats of a running task (LUIGIFLOW_HEARTBEAT_S, default 30)."""
    return seconds(HEARTBEAT_S, 30.0, positive=True)


def stale_after() -> float:
    """Seconds without heartbeat after which a RUNNING run is abandoned (default 10 beats)."""
    default = max(10 * heartbeat_interval(), 120.0)
    return seconds(STALE_AFTER_S, default, positive=True)


def cache_dir() -> pathlib.Path:
    """Where luigiflow keeps local caches (downloaded artifacts, file hashes)."""
    root = os.environ.get(CACHE_DIR) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "luigiflow"
    )
    return pathlib.Path(root)


def _check_cache_dir() -> None:
    raw = os.environ.get(CACHE_DIR)
    if not raw:
        return
    path = pathlib.Path(raw)
    # The folder may not exist yet; its nearest existing ancestor must be a folder.
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise LuigiflowError(
            f"{CACHE_DIR}={raw!r} is not a folder luigiflow can create ({existing} is a "
            f"file); set {CACHE_DIR} to a folder path, or unset it"
        )


def unsupported_platform_allowed() -> bool:
    """The user asked to try luigiflow on an operating system it refuses (Windows)."""
    return os.environ.get(UNSUPPORTED_PLATFORM) == "1"


def upgrade_store_allowed() -> bool:
    """The user asked a build to migrate an older store (`run --upgrade-store`)."""
    return os.environ.get(UPGRADE_STORE) == "1"


def mlflow_workspace() -> str | None:
    """The MLflow workspace every read and write is confined to; None: workspaces off.

    As MLflow's client: `MLFLOW_ENABLE_WORKSPACES` is true/false/1/0 (any case), and when
    it is on, `MLFLOW_WORKSPACE` (trimmed) must name the workspace.
    """
    raw = os.environ.get(WORKSPACES_ON)
    if raw is None:
        return None
    if raw.lower() not in ("true", "false", "1", "0"):
        raise TrackingError(f"{WORKSPACES_ON}={raw!r}: MLflow accepts true, false, 1 or 0")
    if raw.lower() in ("false", "0"):
        return None
    workspace = (os.environ.get(WORKSPACE) or "").strip()
    if not workspace:
        raise TrackingError(
            f"{WORKSPACES_ON} is on but no workspace is chosen: set {WORKSPACE}=<name> "
            "(MLflow's client refuses the store without one too)"
        )
    return workspace


def system_metrics_on() -> bool:
    """MLflow's own switch for system metrics (its start_run starts their monitor)."""
    return os.environ.get(SYSTEM_METRICS, "").lower() in ("true", "1")


# Variables that no longer do anything, with the one line said when one is set.
DEPRECATED = {
    CHECKSUM_MAX_BYTES: (
        "is deprecated and ignored: every artifact is now checksummed with BLAKE3 "
        "whatever its size; unset it"
    ),
}
_warned: set[str] = set()


def bound_http_retries() -> None:
    """Make MLflow's HTTP client give up on an unreachable server within seconds.

    MLflow reads these variables on every request, so they are set (when unset) before
    luigiflow's client makes its first one; they also apply to MLflow calls in user code.
    """
    for name, value in HTTP_RETRY_DEFAULTS.items():
        if name not in os.environ:
            os.environ[name] = value
            _ours[name] = value
            if name == HTTP_MAX_RETRIES:
                _riding_out[0] = False


def download_through_server() -> None:
    """Proxied artifacts (`--artifacts-destination`) are downloaded through the tracking
    server, as docs/team.md promises (clients need no object-store access or credentials),
    unless the user set `MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD` (true: straight from the
    object store, in parallel chunks, for clients that can reach it).

    Set in the environment, as MLflow reads it on every download: it also applies to
    MLflow calls in user code and in worker processes."""
    os.environ.setdefault(PROXY_DOWNLOADS, "false")


def riding_out() -> bool:
    """Requests of this process are retried for the outage window (`ride_out_outages`)."""
    return _riding_out[0]


def outage_window() -> float:
    """Seconds a tracking server that has answered may stay away (HTTP 503, reset
    connections, a restart) before a build gives up (LUIGIFLOW_OUTAGE_WINDOW, default 120;
    0: give up within seconds, as for a server that never answered)."""
    return seconds(OUTAGE_WINDOW_S, 120.0)


def ride_out_outages() -> None:
    """The server has answered: from now on a request is retried, with exponential backoff,
    for about `outage_window()` seconds before its failure counts.

    MLflow's client and luigiflow's reads retry through urllib3 (connection errors, resets,
    HTTP 408/429/5xx), sleeping factor * 2**(n - 1) seconds before the n-th retry (none
    before the first): with factor 1, n retries span 2**n - 2 seconds. Values the user set
    are kept; before the first answer a wrong URI still fails within seconds.
    """
    if not _is_ours(HTTP_MAX_RETRIES):
        return
    window = outage_window()
    if window <= 0:
        return
    _riding_out[0] = True
    retries = 2
    while 2**retries - 2 < window:
        retries += 1
    os.environ[HTTP_MAX_RETRIES] = _ours[HTTP_MAX_RETRIES] = str(retries)
    if _is_ours(HTTP_BACKOFF_FACTOR):
        os.environ[HTTP_BACKOFF_FACTOR] = _ours[HTTP_BACKOFF_FACTOR] = "1"


def _is_ours(name: str) -> bool:
    """Whether `name` holds the value luigiflow set (the user has not set it since)."""
    return name in _ours and os.environ.get(name) == _ours[name]


def validate() -> None:
    """Parse every variable now, so a malformed one stops a build before any run exists.

    Every problem is reported at once in one line; a deprecated variable that is set
    gets one line on stderr (once per process).
    """
    problems: list[LuigiflowError] = []
    checks = (
        signing_keys,
        recheck_interval,
        heartbeat_interval,
        stale_after,
        _check_cache_dir,
        mlflow_workspace,
        secret_pattern,
        outage_window,
    )
    for check in checks:
        try:
            check()
        except LuigiflowError as exc:
            problems.append(exc)
    if len(problems) == 1:
        raise problems[0]  # keeps its class (ConfigError for the signing key)
    if problems:
        raise LuigiflowError("; ".join(dict.fromkeys(str(p) for p in problems)))
    for name, why in DEPRECATED.items():
        if os.environ.get(name) is not None and name not in _warned:
            _warned.add(name)
            print(f"luigiflow: {name} {why}", file=sys.stderr)


_key_file_cache: dict[tuple[str, int, int], tuple[bytes, ...]] = {}


def signing_keys() -> tuple[bytes, ...]:
    """The team keys (first signs, any verifies); empty when none is configured.

    `LUIGIFLOW_SIGNING_KEY` holds comma-separated keys; `LUIGIFLOW_SIGNING_KEY_FILE` names a
    file holding them (commas or one per line). Errors never show a key.
    """
    raw = os.environ.get(SIGNING_KEY)
    path = os.environ.get(SIGNING_KEY_FILE)
    if raw and path:
        raise ConfigError(f"set {SIGNING_KEY} or {SIGNING_KEY_FILE}, not both")
    if path:
        return _keys_from_file(path)
    if raw:
        return _parse_keys(raw, SIGNING_KEY)
    return ()


def _keys_from_file(path: str) -> tuple[bytes, ...]:
    # Read once per version of the file: completion checks ask for the keys per run.
    try:
        st = os.stat(path)
        key = (path, st.st_mtime_ns, st.st_size)
        cached = _key_file_cache.get(key)
        if cached is not None:
            return cached
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{SIGNING_KEY_FILE}={path!r} cannot be read ({exc.__class__.__name__}: "
            f"{getattr(exc, 'strerror', None) or 'not UTF-8 text'}); point it at the team key file"
        ) from None
    keys = _parse_keys(text.replace("\n", ","), f"{SIGNING_KEY_FILE} ({path})")
    _key_file_cache.clear()
    _key_file_cache[key] = keys
    return keys


def _parse_keys(text: str, where: str) -> tuple[bytes, ...]:
    keys = [k.strip() for k in text.split(",") if k.strip()]
    if not keys:
        raise ConfigError(f"{where} holds no key; put one or more comma-separated keys in it")
    short = [i + 1 for i, k in enumerate(keys) if len(k) < MIN_KEY_LENGTH]
    if short:
        raise ConfigError(
            f"{where}: key number {', '.join(map(str, short))} is shorter than "
            f"{MIN_KEY_LENGTH} characters; make one with: "
            'python -c "import secrets; print(secrets.token_hex(32))"'
        )
    return tuple(k.encode("utf-8") for k in keys)


def signing_key_texts() -> list[str]:
    """The team keys as text, also when malformed (they are scrubbed from any text)."""
    values = []
    with contextlib.suppress(ConfigError):  # reported where the keys are used
        values += [k.decode("utf-8") for k in signing_keys()]
    for raw in (os.environ.get(SIGNING_KEY) or "").split(","):
        if raw.strip():
            values.append(raw.strip())
    return values


def secret_pattern() -> re.Pattern[str] | None:
    """The user's own rule for secret names (LUIGIFLOW_SECRET_PATTERN), or None."""
    raw = os.environ.get(SECRET_PATTERN)
    if not raw or not raw.strip():
        return None
    return _compile_pattern(raw)


@functools.lru_cache(maxsize=8)
def _compile_pattern(raw: str) -> re.Pattern[str]:
    # Cached: every parameter name of every task is checked against it.
    try:
        return re.compile(raw, re.IGNORECASE)
    except re.error as exc:
        raise ConfigError(
            f"{SECRET_PATTERN}={raw!r} is not a regular expression ({exc}); set it to "
            "one, e.g. {SECRET_PATTERN}='^(dsn|conn_str)$|_salt$'".replace(
                "{SECRET_PATTERN}", SECRET_PATTERN
            )
        ) from None


def identity_key() -> bytes:
    """The key the values of secret parameters enter identities with (HMAC).

    The team key when one is set, so every holder of it computes the same identities;
    otherwise this user's own key, made once in the cache folder. Either way it is not
    in the store, so the identity tag cannot be used to test guesses of a secret.
    """
    keys = signing_keys()
    if keys:
        return keys[0]
    path = cache_dir() / IDENTITY_KEY_FILE
    try:
        with contextlib.suppress(FileNotFoundError):
            return _read_identity_key(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{IDENTITY_KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(secrets.token_hex(32) + "\n")
        try:
            os.link(staging, path)  # fails when another process made it first: theirs counts
        except FileExistsError:
            pass
        finally:
            os.unlink(staging)
        return _read_identity_key(path)
    except OSError as exc:
        raise ConfigError(
            f"the identity key for secret parameters ({path}) cannot be read or made "
            f"({exc.strerror or type(exc).__name__}); set {CACHE_DIR} to a writable folder, "
            f"or set {SIGNING_KEY} (the team key is used instead)"
        ) from None


def _read_identity_key(path: pathlib.Path) -> bytes:
    key = path.read_text(encoding="utf-8").strip()
    if len(key) < MIN_KEY_LENGTH:
        raise ConfigError(
            f"{path} holds no identity key (damaged?); delete it and luigiflow makes a new "
            "one (tasks with secret parameters then run again once)"
        )
    return key.encode("utf-8")

"""What MLflow's basic auth costs per request: the same read, N times over one keep-alive
session (as luigiflow's reads send it), against an open `mlflow server`, the basic-auth app
as configured by default, and the basic-auth app with `auth_cache_ttl_seconds = 60` (its
password check cached per user, as docs/team.md recommends).

    python bench/auth_requests.py [--requests 40]

The basic-auth app checks the password's PBKDF2 hash on every request unless its cache is
on; a keep-alive connection saves only the TCP handshake, not that check.
"""

from __future__ import annotations

import argparse
import base64
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.servers import auth_request, mlflow_basic_auth_server, mlflow_server  # noqa: E402

USER = ("reader", "reader-password-1")


def per_request(url: str, count: int, login: tuple[str, str] | None) -> float:
    """Median seconds of one GET experiments/get-by-name over one keep-alive session."""
    import requests

    session = requests.Session()
    if login:
        pair = base64.standard_b64encode(f"{login[0]}:{login[1]}".encode()).decode()
        session.headers["Authorization"] = f"Basic {pair}"
    endpoint = f"{url}/api/2.0/mlflow/experiments/get-by-name"
    times = []
    for _ in range(count + 1):
        start = time.perf_counter()
        reply = session.get(endpoint, params={"experiment_name": "Default"}, timeout=60)
        times.append(time.perf_counter() - start)
        reply.raise_for_status()
    times = sorted(times[1:])  # the first one opens the connection
    return times[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=40)
    count = parser.parse_args().requests
    rows = []
    with tempfile.TemporaryDirectory(prefix="auth-bench-") as tmp:
        folder = Path(tmp)
        for name, options in (
            ("basic-auth", ""),
            ("basic-auth, cache 60 s", "auth_cache_ttl_seconds = 60\n"),
        ):
            sub = folder / name.replace(" ", "_").replace(",", "")
            sub.mkdir()
            with mlflow_basic_auth_server(sub, options) as url:
                auth_request(url, "users/create", {"username": USER[0], "password": USER[1]})
                rows.append((name, per_request(url, count, USER)))
        (folder / "open").mkdir()
        with mlflow_server(
            f"sqlite:///{folder / 'open' / 'server.db'}", folder / "open" / "a"
        ) as url:
            rows.append(("open server", per_request(url, count, None)))
    base = rows[-1][1]
    print(f"{'server':<34} {'s/request':>10} {'x open':>8}")
    for name, seconds in rows:
        print(f"{name:<34} {seconds:>10.4f} {seconds / base:>8.1f}")


if __name__ == "__main__":
    main()

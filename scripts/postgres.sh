#!/usr/bin/env bash
# A throwaway PostgreSQL server for tests and local team setups.
#   scripts/postgres.sh start PORT   -> prints "URI DATA_DIR" (installs Debian's postgresql if missing)
#   scripts/postgres.sh stop DATA_DIR
set -euo pipefail
find_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
case "${1:-}" in
  start)
    port="$2"
    bin="$(find_bin)"
    if [ -z "$bin" ]; then
      echo "installing Debian's postgresql..." >&2
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq >&2 && apt-get install -y -qq postgresql >&2
      bin="$(find_bin)"
    fi
    data="$(mktemp -d /tmp/luigiflow-pg.XXXXXX)"
    [ "$(id -u)" = 0 ] && chown postgres "$data"
    as_pg "$bin/initdb" -D "$data/db" -U postgres --auth=trust >/dev/null
    as_pg "$bin/pg_ctl" -D "$data/db" -l "$data/log" -w \
      -o "-p $port -k $data -c listen_addresses=127.0.0.1" start >/dev/null
    as_pg "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres mlflow
    # SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3; name the driver we install.
    echo "postgresql+psycopg2://postgres@127.0.0.1:$port/mlflow $data"
    ;;
  stop)
    data="$2"
    bin="$(find_bin)"
    as_pg "$bin/pg_ctl" -D "$data/db" -m immediate -w stop >/dev/null || true
    rm -rf "$data"
    ;;
  *) echo "usage: $0 start PORT | stop DATA_DIR" >&2; exit 2 ;;
esac

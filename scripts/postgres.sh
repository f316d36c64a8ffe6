#!/usr/bin/env bash
#! Makes sure a PostgreSQL server answers on 127.0.0.1:5432 for the tests: uses the machine's
#! running cluster, starts it if stopped, or installs and initialises one on a bare Debian.
#! Prints nothing on success but the line "postgres: ready".
set -euo pipefail
PGHOST=127.0.0.1
PGPORT=5432

ready() { command -v pg_isready >/dev/null && pg_isready -h "$PGHOST" -p "$PGPORT" -q; }

if ready; then echo "postgres: ready"; exit 0; fi

if [ -d /etc/postgresql ] && command -v pg_ctlcluster >/dev/null; then
  version="$(ls /etc/postgresql | sort -V | tail -n1)"
  echo "postgres: starting cluster $version/main" >&2
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
else
  echo "postgres: installing from Debian packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q postgresql >&2
  version="$(ls /etc/postgresql | sort -V | tail -n1)"
  # The Debian package creates and configures a cluster; start it (PostgreSQL refuses root).
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
fi

for _ in $(seq 1 60); do
  if ready; then
    # The tests connect as postgres over TCP without a password (trust on loopback, as here).
    echo "postgres: ready"; exit 0
  fi
  sleep 0.5
done
echo "postgres: not reachable on $PGHOST:$PGPORT" >&2
exit 1

#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers at 127.0.0.1:5432 for the tests that run the
# projections on PostgreSQL, and gives them a fresh database `crm_test`.
#
# - A server already there (a developer's, or the CI machine's) is used as it is; it must
#   let user `postgres` in from 127.0.0.1 without a password (trust), or set
#   CRM_TEST_POSTGRES_URL to a URL with a password instead.
# - Otherwise, as root (or with passwordless sudo) on Debian/Ubuntu, it installs Debian's `postgresql` package, starts
#   its cluster and lets `postgres` in from 127.0.0.1 by trust (a throwaway test server).
#
# Set CRM_TEST_POSTGRES_URL to use another server; this script then only resets the
# database named in that URL.
set -euo pipefail

url="${CRM_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/crm_test}"

port_open() {
  (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null
}

if [ -z "${CRM_TEST_POSTGRES_URL:-}" ] && ! port_open; then
  echo "setup-postgres: nothing answers on 127.0.0.1:5432; installing Debian's postgresql" >&2
  # As root, or through passwordless sudo.
  if [ "$(id -u)" = 0 ]; then
    as_root=(env) # not empty: bash before 4.4 treats an empty array as unset under set -u
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
  else
    as_root=(missing)
  fi
  if [ "${as_root[*]-}" = missing ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "setup-postgres: need root (or passwordless sudo) and apt-get to install PostgreSQL;" >&2
    echo "start a server on 127.0.0.1:5432 (user postgres, trust) or set CRM_TEST_POSTGRES_URL." >&2
    exit 1
  fi
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  # The newest installed server version, and its cluster (created if the package did not).
  version="$(ls /usr/lib/postgresql | sort -V | tail -1)"
  if [ ! -f "/etc/postgresql/$version/main/pg_hba.conf" ]; then
    "${as_root[@]}" pg_createcluster "$version" main >/dev/null
  fi
  hba="/etc/postgresql/$version/main/pg_hba.conf"
  # A throwaway test server: trust connections from this machine.
  "${as_root[@]}" sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+$/\1trust/' "$hba"
  # The package's install script may have started the cluster already (it does unless a
  # policy-rc.d forbids it): then only reload it, so it reads the trust rule. Everything
  # here writes to stderr: stdout is the URL the caller captures.
  if "${as_root[@]}" pg_ctlcluster "$version" main status >/dev/null 2>&1; then
    "${as_root[@]}" pg_ctlcluster "$version" main reload >&2
  else
    "${as_root[@]}" pg_ctlcluster "$version" main start >&2
  fi
  # Ready means accepting this script's login without a password, not only listening:
  # a reload is a signal the server acts on a moment later.
  ready=0
  for _ in $(seq 1 150); do
    if port_open && { ! command -v psql >/dev/null 2>&1 ||
      psql -qw "postgres://postgres@127.0.0.1:5432/postgres" -c 'select 1' >/dev/null 2>&1; }; then
      ready=1
      break
    fi
    sleep 0.2
  done
  if [ "$ready" != 1 ]; then
    echo "setup-postgres: PostgreSQL $version did not accept user postgres on 127.0.0.1:5432 by trust" >&2
    exit 1
  fi
fi

# A fresh test database: schemas of earlier runs go with the old one.
server="${url%/*}"
db="${url##*/}"
db="${db%%\?*}"
if command -v psql >/dev/null 2>&1; then
  # -w: never wait at a password prompt (a server that wants one needs the URL to carry it).
  # WITH (FORCE) needs PostgreSQL 13; older servers drop without it.
  psql -qw "$server/postgres" -v ON_ERROR_STOP=1 \
    -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 ||
    psql -qw "$server/postgres" -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS \"$db\"" >/dev/null
  psql -qw "$server/postgres" -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$db\"" >/dev/null
else
  # Without a client the tests create the database themselves; earlier runs' schemas stay.
  echo "setup-postgres: no psql; the tests will create $db if it is missing" >&2
fi
echo "$url"

#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers at 127.0.0.1:5432 for the tests that run the
# projections on PostgreSQL, and gives them a fresh database `crm_test`.
#
# - A server already there (a developer's, or the CI machine's) is used as it is; it must
#   let user `postgres` in from 127.0.0.1 without a password (trust), or set
#   CRM_TEST_POSTGRES_URL to a URL with a password instead.
# - Otherwise, as root on Debian/Ubuntu, it installs Debian's `postgresql` package, starts
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
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "setup-postgres: need root and apt-get to install PostgreSQL; start a server on" >&2
    echo "127.0.0.1:5432 (user postgres, trust) or set CRM_TEST_POSTGRES_URL." >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq postgresql >/dev/null
  version="$(ls /usr/lib/postgresql | sort -V | tail -1)"
  hba="/etc/postgresql/$version/main/pg_hba.conf"
  # A throwaway test server: trust connections from this machine.
  sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+$/\1trust/' "$hba"
  pg_ctlcluster "$version" main start || pg_ctlcluster "$version" main reload
  for _ in $(seq 1 50); do port_open && break; sleep 0.2; done
fi

# A fresh test database: schemas of earlier runs go with the old one.
server="${url%/*}"
db="${url##*/}"
db="${db%%\?*}"
if command -v psql >/dev/null 2>&1; then
  psql -q "$server/postgres" -v ON_ERROR_STOP=1 \
    -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" \
    -c "CREATE DATABASE $db" >/dev/null
else
  # Without a client the tests create the database themselves; earlier runs' schemas stay.
  echo "setup-postgres: no psql; the tests will create $db if it is missing" >&2
fi
echo "$url"

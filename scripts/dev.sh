#!/usr/bin/env bash
# Starts the whole system on embedded defaults: `crm dev` with its own pinned nats-server
# and SQLite in ./.crm. Extra arguments go to `crm dev` (see `crm dev --help`).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# A relative CRM_NATS_SERVER path is relative to where you ran this from.
case "${CRM_NATS_SERVER:-}" in
  /* | "") ;;
  */*) export CRM_NATS_SERVER="$PWD/$CRM_NATS_SERVER" ;;
esac
cd "$root"
# A nats-server of your own (CRM_NATS_SERVER, >= 2.11) is used as it is; otherwise the
# pinned one is fetched into .tools/ (Linux x86_64).
if [ -z "${CRM_NATS_SERVER:-}" ]; then
  bash scripts/setup-nats.sh
  export CRM_NATS_SERVER="$root/.tools/nats-server-2.12.8/nats-server"
fi
# The first run builds crm in release mode: several minutes on 2 cores, with cargo's
# progress shown; later runs start at once.
if [ ! -x target/release/crm ]; then
  echo "dev.sh: building crm (release) for the first time; this takes a few minutes" >&2
fi
exec cargo run --release --bin crm -- dev "$@"

#!/usr/bin/env bash
# Runs the whole test suite: installs the pinned nats-server if needed, makes sure a
# PostgreSQL server is there for the projection tests that run on both stores (see
# scripts/setup-postgres.sh), then every test of the workspace. Each test starts its own
# nats-server on a free port and uses its own PostgreSQL schemas.
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
CRM_TEST_POSTGRES_URL="$(bash scripts/setup-postgres.sh)"
export CRM_TEST_POSTGRES_URL
cargo test --workspace --locked "$@"

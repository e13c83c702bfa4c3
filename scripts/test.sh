#!/usr/bin/env bash
# Runs the whole test suite: installs the pinned nats-server if needed, then every test of
# the workspace. Each test starts its own nats-server on a free port.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup-nats.sh
export CRM_NATS_SERVER="$root/.tools/nats-server-2.12.8/nats-server"
cargo test --workspace --locked "$@"

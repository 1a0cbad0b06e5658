#!/usr/bin/env bash
# Installs Portkey's open-source AI gateway (npm `@portkey-ai/gateway`, pinned) that
# tests/portkey.rs routes through, into a folder cached outside the checkout, and prints the
# path of its server script (run with `node SCRIPT --port=N`). Idempotent: a second run with
# the same pinned version only checks the folder. .ci/run calls it; the test calls it too
# when SONDE_PORTKEY_SERVER is not set.
set -euo pipefail

PORTKEY_VERSION=1.15.2
DIR=${SONDE_PORTKEY_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sonde/portkey-$PORTKEY_VERSION}
SERVER="$DIR/node_modules/@portkey-ai/gateway/build/start-server.js"

mkdir -p "$(dirname "$DIR")"
exec 9> "$DIR.lock"
flock 9

if [ ! -f "$SERVER" ]; then
  echo "installing @portkey-ai/gateway@$PORTKEY_VERSION into $DIR" >&2
  mkdir -p "$DIR"
  npm install --prefix "$DIR" --no-audit --no-fund --silent "@portkey-ai/gateway@$PORTKEY_VERSION" >&2
fi
echo "$SERVER"

#!/usr/bin/env bash
# Installs the LiteLLM proxy the integration suite (tests/litellm.rs) runs against into a
# virtualenv cached outside the checkout, and prints the path of its `litellm` binary.
# Idempotent: a second run with the same pinned versions only checks the venv (well under a
# second). .ci/run calls it; the test calls it too when SONDE_LITELLM_BIN is not set.
set -euo pipefail

LITELLM_VERSION=1.108.7
PRISMA_VERSION=0.15.0
VENV=${SONDE_LITELLM_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/sonde/litellm-$LITELLM_VERSION}

# One install at a time: the suite's tests call this side by side on a fresh machine, and two
# pip runs into one venv break it.
mkdir -p "$(dirname "$VENV")"
exec 9> "$VENV.lock"
flock 9

if ! "$VENV/bin/python" -c "import litellm, prisma" > /dev/null 2>&1 \
   || [ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))' 2>/dev/null)" != "$LITELLM_VERSION" ]; then
  echo "installing litellm[proxy]==$LITELLM_VERSION and prisma==$PRISMA_VERSION into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "litellm[proxy]==$LITELLM_VERSION" "prisma==$PRISMA_VERSION" >&2
fi
echo "$VENV/bin/litellm"

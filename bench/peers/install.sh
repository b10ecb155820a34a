#!/usr/bin/env bash
# Install the peers the benchmark compares Aurora with, each into its own folder under
# bench/peers/.cache (never the project's venv): n8n 1.123.x from npm (2.x does not install
# here: a missing @n8n/agents version and a native Kafka module that does not build), and
# Prefect 3 into its own virtualenv. Safe to run again: what is there is kept.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${PEERS_CACHE:-$here/.cache}"
mkdir -p "$cache"
if [ ! -x "$cache/n8n/node_modules/.bin/n8n" ]; then
  command -v npm >/dev/null || { echo "npm is needed for n8n (apt-get install nodejs npm)" >&2; exit 1; }
  mkdir -p "$cache/n8n"
  # n8n's xlsx dependency points at the vendor's CDN, which is not reachable here: the registry's
  # own xlsx release stands in for it (n8n's spreadsheet node is not what the benchmark uses).
  # isolated-vm 6 needs Node 22's V8 headers; 5.0.4 builds on Debian's Node 20.
  echo '{"name":"n8n-peer","private":true,"overrides":{"xlsx":"npm:xlsx@0.18.5","isolated-vm":"5.0.4"}}' \
    > "$cache/n8n/package.json"
  (cd "$cache/n8n" && npm install --no-audit --no-fund --loglevel=error "n8n@1.123.x")
fi
if [ ! -e "$cache/n8n/node_modules/sqlite3/build/Release/node_sqlite3.node" ]; then
  # sqlite3's prebuilt binary comes from GitHub, which is not reachable here: build it
  (cd "$cache/n8n" && npm rebuild sqlite3 --build-from-source --loglevel=error)
fi
if [ ! -x "$cache/prefect/bin/prefect" ]; then
  python3 -m venv "$cache/prefect"
  "$cache/prefect/bin/pip" install --quiet "prefect>=3.4,<4"
fi
echo "peers installed under $cache"

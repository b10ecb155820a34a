#!/usr/bin/env bash
# The seed's federation helper, kept working: it calls the aurora CLI.
#   ./federation_helpers.sh register URL NAME TOKEN
#   ./federation_helpers.sh list
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
aurora="${AURORA_CLI:-}"
if [ -z "$aurora" ]; then
  if [ -x "$here/.venv/bin/aurora" ]; then aurora="$here/.venv/bin/aurora"; else aurora="aurora"; fi
fi
case "${1:-}" in
  register)
    [ $# -eq 4 ] || { echo "usage: $0 register URL NAME TOKEN" >&2; exit 2; }
    exec "$aurora" nodes register "$2" "$3" "$4" ;;
  list)
    exec "$aurora" nodes list ;;
  *)
    echo "usage: $0 register URL NAME TOKEN | list" >&2; exit 2 ;;
esac

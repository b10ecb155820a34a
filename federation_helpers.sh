#!/usr/bin/env bash
# The seed's federation helper, kept working: it calls the aurora CLI.
#   ./federation_helpers.sh register URL NAME TOKEN
#   ./federation_helpers.sh register URL NAME        (the token from $AURORA_PEER_TOKEN, or asked for)
#   ./federation_helpers.sh list
# The token goes to aurora in $AURORA_PEER_TOKEN, never on its command line, where every user of the
# machine could read it in ps for as long as it runs (this script's own arguments are gone at exec).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
aurora="${AURORA_CLI:-}"
if [ -z "$aurora" ]; then
  if [ -x "$here/.venv/bin/aurora" ]; then aurora="$here/.venv/bin/aurora"; else aurora="aurora"; fi
fi
case "${1:-}" in
  register)
    [ $# -eq 3 ] || [ $# -eq 4 ] || { echo "usage: $0 register URL NAME [TOKEN]" >&2; exit 2; }
    if [ $# -eq 4 ]; then export AURORA_PEER_TOKEN="$4"; fi
    exec "$aurora" nodes register "$2" "$3" ;;
  list)
    exec "$aurora" nodes list ;;
  *)
    echo "usage: $0 register URL NAME [TOKEN] | list" >&2; exit 2 ;;
esac

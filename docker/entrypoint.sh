#!/usr/bin/env bash
# Entry point: `docker run IMAGE <videossl args>`; `docker run IMAGE bash` gives a shell.
set -e
if [ "${1:-}" = "bash" ] || [ "${1:-}" = "sh" ] || [ "${1:-}" = "python" ]; then
  exec "$@"
fi
exec videossl "$@"

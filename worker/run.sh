#!/usr/bin/env sh
# Start one Aurora worker with the settings in the environment (see worker/README.md).
exec aurora worker "$@"

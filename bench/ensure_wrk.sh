#!/bin/sh
# Make sure the load generator is there: wrk from the distribution's packages.
exec sh "$(dirname "$0")/ensure_tool.sh" wrk wrk

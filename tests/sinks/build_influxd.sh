#!/usr/bin/env bash
# Build InfluxDB 1.8.3's influxd, the first release that serves InfluxDB 2's /api/v2/write (Debian's
# influxdb is 1.6, which does not), with `go install` from the Go module proxy: about 1.5 minutes once,
# then reused. Idempotent: a binary whose stamp names the same module version is kept as it is.
#
#   PYSTATSD_CACHE  cache directory (default ${XDG_CACHE_HOME:-~/.cache}/pystatsd, as in harness/paths.py:
#                   outside the clone, so a fresh clone on the same machine reuses it); the binary goes to
#                   $PYSTATSD_CACHE/influxdb-1.8.3/influxd, off the PATH, where it cannot shadow Debian's
set -euo pipefail

module="github.com/influxdata/influxdb/cmd/influxd@v1.8.3"
cache="${PYSTATSD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pystatsd}"
dir="$cache/influxdb-1.8.3"

source "$(dirname "${BASH_SOURCE[0]}")/cached_build.sh"
# -mod=mod: the 2020 module's go.sum predates what today's go checks; GOBIN puts the binary in the cache.
cached_build influxd "$dir" "$module" env GOBIN="$dir" GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod" go install "$module"

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
binary="$dir/influxd"
stamp="$dir/influxd.installed"

say() { echo "build_influxd: $*"; }
built() { [[ -x "$binary" && -f "$stamp" && "$(cat "$stamp")" == "$module" ]]; }

if built; then
    say "influxd 1.8.3 already built in $dir"
    exit 0
fi
mkdir -p "$dir"
# Two test runs starting together must not both build into the directory.
exec 9>"$dir/.lock"
flock 9
if built; then
    say "influxd 1.8.3 already built in $dir (by another run)"
    exit 0
fi
command -v go >/dev/null 2>&1 || { say "go is not installed: cannot build influxd 1.8.3"; exit 1; }
say "building $module (about 1.5 minutes, once)"
log="$dir/build.log"
# -mod=mod: the 2020 module's go.sum predates what today's go checks; GOBIN puts the binary in the cache.
if ! GOBIN="$dir" GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod" go install "$module" >"$log" 2>&1; then
    say "go install failed; its output follows"
    # Registry addresses are masked, as in the other install scripts.
    sed -E 's#[a-z]+://[^/[:space:]]+#<registry>#g' "$log"
    exit 1
fi
# go install writes the binary last: the stamp after it means a complete build.
echo "$module" >"$stamp"
say "built $binary"

#!/usr/bin/env bash
# Build the OpenTelemetry Collector the otlp sink tests run against (otelcol/ beside this script: the
# upstream OTLP receiver and file exporter, modules from the Go module proxy), once: about 3.5 minutes on
# 2 cores, then reused. Idempotent: a binary whose stamp holds the sources' hash is kept as it is.
#
#   PYSTATSD_CACHE  cache directory (default ${XDG_CACHE_HOME:-~/.cache}/pystatsd, as in harness/paths.py:
#                   outside the clone, so a fresh clone on the same machine reuses it); the binary goes to
#                   $PYSTATSD_CACHE/otelcol/otelcol
set -euo pipefail

src="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/otelcol"
cache="${PYSTATSD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pystatsd}"
dir="$cache/otelcol"
# The sources' hash: a change of a version in go.mod builds again.
sources="$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" | sha256sum | cut -d' ' -f1)"

source "$(dirname "${BASH_SOURCE[0]}")/cached_build.sh"
# -mod=readonly: go.mod and go.sum as committed, never rewritten by a build.
cached_build otelcol "$dir" "$sources" \
    env -C "$src" GOFLAGS="-mod=readonly -buildvcs=false" go build -trimpath -o "$dir/otelcol" .

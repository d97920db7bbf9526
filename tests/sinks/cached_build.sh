# Sourced by the build scripts beside it (build_influxd.sh, build_otelcol.sh): one rule for a program
# built once into the cache and reused while its stamp holds the same text.
#
#   cached_build LABEL DIR STAMP_TEXT COMMAND...
#
# runs COMMAND (which writes the program into DIR) unless DIR/LABEL.installed already holds STAMP_TEXT, under a
# lock on DIR so that two test runs starting together do not both build; its output is shown only if it
# fails, registry addresses masked. The stamp is written after COMMAND succeeded: a stamp means a
# complete build.

cached_build() {
    local label="$1" dir="$2" want="$3"
    shift 3
    local stamp="$dir/$label.installed"
    built_yet() { [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; }
    if built_yet; then
        echo "$label: already built in $dir"
        return
    fi
    mkdir -p "$dir"
    exec 9>"$dir/.lock"
    flock 9
    if built_yet; then
        echo "$label: already built in $dir (by another run)"
        return
    fi
    command -v go >/dev/null 2>&1 || { echo "$label: go is not installed: cannot build"; exit 1; }
    echo "$label: building into $dir (a few minutes, once)"
    if ! "$@" >"$dir/build.log" 2>&1; then
        echo "$label: the build failed; its output follows"
        sed -E 's#[a-z]+://[^/[:space:]]+#<registry>#g' "$dir/build.log"
        exit 1
    fi
    echo "$want" >"$stamp"
    echo "$label: built"
}

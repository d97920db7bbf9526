#!/usr/bin/env bash
# build_tree.sh TREE: stage what the packages install into the empty or missing directory TREE:
#   /opt/pystatsd/                   a virtualenv with pystatsd and every dependency (nothing is
#                                    fetched at install time), on the system's /usr/bin/python3
#   /opt/pystatsd/share/pystatsd/supervisord.conf   the template `pystatsd run` renders
#   /etc/pystatsd/pystatsd.conf      the config (etc/pystatsd.yaml)
#   /usr/lib/systemd/system/pystatsd.service
#   /usr/bin/pystatsd                -> /opt/pystatsd/bin/pystatsd
# Needs the repo's .venv (make install) for pip; PACKAGE_PYTHON picks another interpreter.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
tree=$(realpath -m "$1")
umask 022

[ -n "${PACKAGE_PYTHON:-}" ] || need_tool /usr/bin/python3 python3
python=$(readlink -f "${PACKAGE_PYTHON:-/usr/bin/python3}" || true)
if [ ! -x "$python" ] || [ "${python#/usr/bin/}" = "$python" ]; then
    # The packages depend on the distribution's interpreter, which lives in /usr/bin.
    echo "No Python in /usr/bin (PACKAGE_PYTHON=${PACKAGE_PYTHON:-/usr/bin/python3}): install python3" >&2
    exit 1
fi
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "$python is older than 3.11" >&2
    exit 1
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Build from a copy: setuptools writes build/ and *.egg-info beside the sources.
mkdir "$work/src"
cp -r "$repo/pyproject.toml" "$repo/README.md" "$repo/stages" "$repo/pystatsd" "$work/src/"
find "$work/src" -name __pycache__ -prune -exec rm -rf {} +

mkdir -p "$tree"
"$python" -m venv --without-pip "$tree$prefix"
"$repo/.venv/bin/python" -m pip --python "$tree$prefix/bin/python" install --quiet --disable-pip-version-check \
    --no-compile --no-warn-script-location --cache-dir "$repo/.cache/pip" "$work/src"
# A virtualenv names the directory it was made in; make it name the one it is installed in.
grep -rlF "$tree" "$tree$prefix/bin" "$tree$prefix/pyvenv.cfg" | xargs -r sed -i "s|$tree||g"
# Byte-compile now, as recorded at the installed paths: the service cannot write to /opt.
"$tree$prefix/bin/python" -m compileall -q -j 0 -s "$tree" -p / "$tree$prefix/lib"
if leftover=$(grep -rlF "$tree" "$tree$prefix"); then
    echo "The staging path is still named in: $leftover" >&2
    exit 1
fi

install -D -m 0644 "$repo/supervisord.conf" "$tree$prefix/share/pystatsd/supervisord.conf"
install -D -m 0644 "$repo/etc/pystatsd.yaml" "$tree/etc/pystatsd/pystatsd.conf"
install -D -m 0644 "$packaging/pystatsd.service" "$tree/usr/lib/systemd/system/pystatsd.service"
mkdir -p "$tree/usr/bin"
ln -s "$prefix/bin/pystatsd" "$tree/usr/bin/pystatsd"
chmod -R go-w,a+rX "$tree"

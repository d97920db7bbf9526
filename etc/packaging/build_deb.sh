#!/usr/bin/env bash
# build_deb.sh [DIST]: build DIST/pystatsd_<version>_<arch>.deb (DIST defaults to the repo's dist/).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
dist=$(realpath -m "${1:-$repo/dist}")
need_tool dpkg-deb dpkg

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tree="$work/tree"
bash "$packaging/build_tree.sh" "$tree"
version=$(package_version "$tree")
arch=$(dpkg --print-architecture)

mkdir -m 0755 "$tree/DEBIAN"
cat > "$tree/DEBIAN/control" <<CONTROL
Package: pystatsd
Version: $version
Architecture: $arch
Maintainer: ${PACKAGE_MAINTAINER:-pystatsd maintainers <root@localhost>}
Installed-Size: $(du -sk "$tree" | cut -f1)
Depends: $(python_version "$tree"), passwd
Section: net
Priority: optional
Description: tagged statsd daemon
 Receives statsd lines and the original pystatsd's JSON over UDP, aggregates them per
 interval under their tags and forwards the aggregates to Kafka, files or stdout.
 Self-contained: the daemon and its dependencies live in a virtualenv in $prefix.
CONTROL
echo /etc/pystatsd/pystatsd.conf > "$tree/DEBIAN/conffiles"
for script in postinst prerm postrm; do
    maintainer_script "$packaging/maintainer/deb/$script" > "$tree/DEBIAN/$script"
    chmod 0755 "$tree/DEBIAN/$script"
done

mkdir -p "$dist"
# gzip: quick to build, and every dpkg reads it.
dpkg-deb --root-owner-group -Zgzip --build "$tree" "$dist/pystatsd_${version}_${arch}.deb" >/dev/null
echo "$dist/pystatsd_${version}_${arch}.deb"

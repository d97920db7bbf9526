#!/usr/bin/env bash
# build_rpm.sh [DIST]: build DIST/pystatsd-<version>-1.<arch>.rpm (DIST defaults to the repo's dist/).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
dist=$(realpath -m "${1:-$repo/dist}")
need_tool rpmbuild rpm

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tree="$work/tree"
bash "$packaging/build_tree.sh" "$tree"
version=$(package_version "$tree")
arch=$(uname -m)
mkdir "$work/scripts"
for script in pre post preun postun; do
    maintainer_script "$packaging/maintainer/rpm/$script" > "$work/scripts/$script"
done

rpmbuild -bb --quiet --target "$arch" \
    --define "_topdir $work/rpmbuild" \
    --define "_rpmdir $work/out" \
    --define "pkg_version $version" \
    --define "pkg_python /usr/bin/$(python_version "$tree")" \
    --define "pkg_tree $tree" \
    --define "pkg_scripts $work/scripts" \
    "$packaging/pystatsd.spec"
mkdir -p "$dist"
mv "$work/out/$arch/pystatsd-$version-1.$arch.rpm" "$dist/"
echo "$dist/pystatsd-$version-1.$arch.rpm"

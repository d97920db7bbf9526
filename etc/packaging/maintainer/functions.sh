# Shared by every maintainer script: the build puts this file first in each of them.
# $root is where the package lives: "" normally; $DPKG_ROOT when dpkg installs into another root
# without chrooting (dpkg --root=DIR --force-script-chrootless), which the tests do.
root="${DPKG_ROOT:-}"
unit=pystatsd.service

# The unprivileged system user and group the service runs as: no home, no login shell.
add_user() {
    if [ -n "$root" ]; then
        grep -q '^pystatsd:' "$root/etc/passwd" 2>/dev/null && return 0
        set -- --prefix "$root"
    else
        getent passwd pystatsd >/dev/null && return 0
    fi
    useradd "$@" --system --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin --comment "pystatsd metrics daemon" pystatsd
}

# The config may hold a Kafka API key: readable by root and the service only.
own_config() {
    if [ -n "$root" ]; then
        gid=$(awk -F: '$1 == "pystatsd" { print $3 }' "$root/etc/group")
    else
        gid=$(getent group pystatsd | cut -d: -f3)
    fi
    chown "root:$gid" "$root/etc/pystatsd/pystatsd.conf"
    chmod 0640 "$root/etc/pystatsd/pystatsd.conf"
}

# True when systemd runs this machine (not in a chroot, a container without systemd or DPKG_ROOT).
systemd_running() {
    [ -z "$root" ] && [ -d /run/systemd/system ]
}

# Enable or disable the unit without a running systemd: systemctl edits the symlinks itself.
systemctl_offline() {
    if command -v systemctl >/dev/null 2>&1; then
        systemctl --root="${root:-/}" "$@" "$unit"
    fi
}

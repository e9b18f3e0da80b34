#!/usr/bin/env bash
# Install promtool, prometheus, alertmanager and amtool from Debian's packages, for the
# metrics-lint tests. Idempotent: returns at once when all four are already on PATH.
# On a booted machine the packages' postinst starts daemons on :9090 and :9093 (:9100 too for the
# recommended node exporter, not installed here); a policy-rc.d keeps them from starting, so
# whatever runs Prometheus here chooses its own ports. (In a container without systemd and with
# no runlevel, invoke-rc.d starts nothing anyway: measured on Debian 12.)
set -euo pipefail

TOOLS=(promtool prometheus alertmanager amtool)
PACKAGES=(prometheus prometheus-alertmanager)
POLICY=/usr/sbin/policy-rc.d

# Debian ships Alertmanager as /usr/bin/prometheus-alertmanager; give it its upstream name.
link_alertmanager() {
    if ! command -v alertmanager >/dev/null 2>&1 && [ -x /usr/bin/prometheus-alertmanager ]; then
        "${SUDO[@]}" ln -sf /usr/bin/prometheus-alertmanager /usr/local/bin/alertmanager
    fi
}

have_all() {
    local t
    for t in "${TOOLS[@]}"; do command -v "$t" >/dev/null 2>&1 || return 1; done
}

versions() {
    local t
    for t in "${TOOLS[@]}"; do printf '%-13s %s\n' "$t:" "$("$t" --version 2>&1 | head -n1)"; done
}

SUDO=()
if [ "$(id -u)" -ne 0 ]; then SUDO=(sudo); fi

# Fast path: nothing to install when all four are there (the packages may lack only the link).
if [ "$(id -u)" -eq 0 ] || command -v sudo >/dev/null 2>&1; then link_alertmanager; fi
if have_all; then
    versions
    exit 0
fi

if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
    echo "install-prometheus: not root and sudo not found; run as root" >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-prometheus: apt-get not found; install the Debian/Ubuntu packages" \
        "'${PACKAGES[*]}' by other means, or put ${TOOLS[*]} on PATH" >&2
    exit 1
fi

# policy-rc.d exit 101 = "action forbidden": invoke-rc.d and deb-systemd-invoke then do not
# start services (https://people.debian.org/~hmh/invokerc.d-policyrc.d-specification.txt).
# Only add one for the install when none exists, and remove only our own.
own_policy=0
cleanup() {
    if [ "$own_policy" -eq 1 ]; then "${SUDO[@]}" rm -f "$POLICY"; fi
}
trap cleanup EXIT
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$POLICY" >/dev/null
    "${SUDO[@]}" chmod 755 "$POLICY"
    own_policy=1
fi

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${PACKAGES[@]}"

link_alertmanager

# Under systemd the units are still enabled for the next boot: disable and stop them.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    "${SUDO[@]}" systemctl disable --now prometheus.service prometheus-alertmanager.service \
        >/dev/null 2>&1 || true
fi

if ! have_all; then
    echo "install-prometheus: installed ${PACKAGES[*]} but some of ${TOOLS[*]} is still" \
        "not on PATH" >&2
    exit 1
fi
versions

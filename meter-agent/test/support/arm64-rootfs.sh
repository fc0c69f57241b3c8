#!/usr/bin/env bash
# Prepares (once) a Debian trixie arm64 root filesystem for meter-agent/test/arm64-rootfs.test.ts
# and prints the path of its tarball:
#   meter-agent/test/support/arm64-rootfs.sh [--cache DIR] [--mirror URL] [--force]
# The tarball is cached (default ${XDG_CACHE_HOME:-~/.cache}/tre-arm64/trixie-arm64-<hash>.tar, the
# hash of the package list); a second run prints its path at once. It holds what a Raspberry Pi OS /
# Debian image has before the agent arrives: nodejs (trixie's Node 20), adduser, systemd (for
# systemctl enable), ca-certificates, and unattended-upgrades (which first-boot.sh would otherwise
# install from the mirror on every run).
# Needs mmdebstrap, qemu-user-static, binfmt-support and arch-test (`scripts/setup.sh arm64`) and
# a kernel that runs aarch64 binaries through qemu (binfmt_misc; `arch-test arm64` says "ok").
# As root mmdebstrap runs in root mode; otherwise in unshare mode (unprivileged user namespaces).
set -euo pipefail

cache="${XDG_CACHE_HOME:-$HOME/.cache}/tre-arm64"
mirror=""
force=0
while (( $# > 0 )); do
  case "$1" in
    --cache) cache="$2"; shift 2 ;;
    --mirror) mirror="$2"; shift 2 ;;
    --force) force=1; shift ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "arm64-rootfs.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

include=nodejs,adduser,passwd,mawk,systemd,ca-certificates,unattended-upgrades
tarball="$cache/trixie-arm64-$(printf '%s' "$include" | sha256sum | cut -c1-8).tar"
if [[ -s "$tarball" && $force -eq 0 ]]; then
  echo "$tarball"
  exit 0
fi

# This machine's Debian mirror (deb822 URIs: or one-line `deb URL`), not a security or third-party one.
if [[ -z "$mirror" ]]; then
  mirror="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null |
    grep -oE '^(URIs:[[:space:]]*|deb[[:space:]]+(\[[^]]*\][[:space:]]+)?)https?://[^[:space:]]+/debian/?([[:space:]]|$)' |
    grep -oE 'https?://[^[:space:]]+' | head -n1 || true)"
  mirror="${mirror:-http://deb.debian.org/debian}"
fi

for tool in mmdebstrap arch-test; do
  command -v "$tool" >/dev/null || { echo "arm64-rootfs.sh: $tool is missing: run scripts/setup.sh arm64" >&2; exit 1; }
done
if ! arch-test arm64 >/dev/null 2>&1; then
  echo "arm64-rootfs.sh: this machine cannot run arm64 binaries: install qemu-user-static binfmt-support (scripts/setup.sh arm64); in a container, mount binfmt_misc (mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; update-binfmts --enable qemu-aarch64)" >&2
  exit 1
fi

mode=unshare
(( EUID == 0 )) && mode=root
mkdir -p "$cache"
echo "arm64-rootfs.sh: mmdebstrap --mode=$mode --arch=arm64 trixie from $mirror" >&2
mmdebstrap --mode="$mode" --arch=arm64 --variant=apt \
  --include="$include" \
  --format=tar trixie "$tarball.part" "deb $mirror trixie main" >&2
mv "$tarball.part" "$tarball"
echo "$tarball"

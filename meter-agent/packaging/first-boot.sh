#!/bin/sh
# First boot of a household Pi made by `meter-agent image`: run as root by cloud-init (user-data's
# runcmd, or vendor-data in an image for Raspberry Pi Imager) from /boot/firmware/meter-agent/.
#
#   1. installs the agent's apt repository files when the seed has them (apt/), and unattended-upgrades
#   2. installs the agent's .deb (apt-get fetches nodejs)
#   3. installs agent.yaml, the policy and the regulator's files into /etc/meter-agent (root:meter-agent)
#   4. places the identity: the seed's device.key (0600, meter-agent), or enrolls with the one-time token
#   5. removes the key and the token from the boot partition (overwritten first)
#   6. enables and starts meter-agent
#
# Idempotent: run it again (sudo sh /boot/firmware/meter-agent/first-boot.sh) after a failure,
# e.g. no network for the enrollment. Deterministic: no clock, no randomness of its own.
# ROOT=/path/to/rootfs runs it against a root file system from outside (programs then run through
# IN_ROOT, by default `chroot $ROOT`); it runs unchanged inside a chroot. It never prints a key or token.
set -eu

ROOT="${ROOT:-}"
SEED="/boot/firmware/meter-agent"
ETC="/etc/meter-agent"
if [ -z "${IN_ROOT+set}" ]; then
  if [ -n "$ROOT" ]; then IN_ROOT="chroot $ROOT"; else IN_ROOT=""; fi
fi
ENROLL_ATTEMPTS="${ENROLL_ATTEMPTS:-20}"
export DEBIAN_FRONTEND=noninteractive
ENROLL_RETRY_SECONDS="${ENROLL_RETRY_SECONDS:-30}"

say() { echo "meter-agent first boot: $*"; }
fail() {
  say "$*" >&2
  exit 1
}
# Runs a program of the target system.
in_root() { $IN_ROOT "$@"; }
# KEY=value from seed.conf (read, never sourced).
conf() { sed -n "s/^$1=//p" "$ROOT$SEED/seed.conf" | head -n 1; }
# Numeric ids from the target's own passwd/group (not the host's, when ROOT is set).
uid_of() { awk -F: -v n="$1" '$1 == n { print $3; exit }' "$ROOT/etc/passwd"; }
gid_of() { awk -F: -v n="$1" '$1 == n { print $3; exit }' "$ROOT/etc/group"; }
# put SRC DEST MODE OWNER GROUP: copies unless identical, then sets mode and owner either way.
put() {
  if ! cmp -s "$1" "$ROOT$2"; then
    cp "$1" "$ROOT$2.new"
    mv "$ROOT$2.new" "$ROOT$2"
  fi
  chmod "$3" "$ROOT$2"
  chown "$4:$5" "$ROOT$2"
}
# Overwrites a secret on the FAT partition before removing it (FAT keeps deleted clusters).
scrub() {
  [ -f "$1" ] || return 0
  if command -v shred >/dev/null 2>&1; then shred -z -n 1 "$1"; fi
  rm -f "$1"
  sync
}

[ -f "$ROOT$SEED/seed.conf" ] || fail "$SEED/seed.conf is missing: this card was not made by meter-agent image"
METER_ID="$(conf METER_ID)"
IDENTITY="$(conf IDENTITY)"
case "$METER_ID" in
  "" | *[!a-z0-9._-]*) fail "seed.conf: METER_ID is missing or not a meter id" ;;
esac

# 1. The agent's apt repository (packaging/apt/), when the seed carries it.
extra=""
if [ -f "$ROOT$SEED/apt/meter-agent.sources" ]; then
  say "configuring the meter-agent apt repository"
  mkdir -p "$ROOT/etc/apt/sources.list.d"
  put "$ROOT$SEED/apt/meter-agent.sources" /etc/apt/sources.list.d/meter-agent.sources 0644 0 0
  for f in meter-agent-archive-keyring.gpg:/usr/share/keyrings 52meter-agent-unattended-upgrades:/etc/apt/apt.conf.d \
    meter-agent.pref:/etc/apt/preferences.d; do
    name="${f%%:*}"
    dir="${f#*:}"
    if [ -f "$ROOT$SEED/apt/$name" ]; then
      mkdir -p "$ROOT$dir"
      put "$ROOT$SEED/apt/$name" "$dir/$name" 0644 0 0
    fi
  done
  if [ "$(in_root dpkg-query -W -f '${Status}' unattended-upgrades 2>/dev/null || true)" != "install ok installed" ]; then
    extra="unattended-upgrades"
  fi
fi

# 2. The package (its postinst makes the meter-agent user; it starts nothing without agent.yaml).
deb="$(cd "$ROOT$SEED" && ls meter-agent_*_arm64.deb 2>/dev/null | sort -V | tail -n 1)"
[ -n "$deb" ] || fail "no meter-agent_*_arm64.deb in $SEED"
version="${deb#meter-agent_}"
version="${version%_arm64.deb}"
installed="$(in_root dpkg-query -W -f '${Version}' meter-agent 2>/dev/null || true)"
if [ "$installed" != "$version" ] || [ -n "$extra" ]; then
  say "installing $deb ${extra}"
  in_root apt-get update
  # The newest package in the seed, by name (apt-get does not expand a glob; the host shell would
  # expand it against the wrong root when ROOT is set).
  # shellcheck disable=SC2086 # $extra is one word or none
  in_root apt-get install -y "/boot/firmware/meter-agent/$deb" $extra
fi
AGENT_UID="$(uid_of meter-agent)"
AGENT_GID="$(gid_of meter-agent)"
[ -n "$AGENT_UID" ] && [ -n "$AGENT_GID" ] || fail "the package did not create the meter-agent user"

# 3. Configuration: readable by the agent, writable by root only.
mkdir -p "$ROOT$ETC"
chown "0:$AGENT_GID" "$ROOT$ETC"
chmod 0750 "$ROOT$ETC"
for src in "$ROOT$SEED"/etc/*; do
  [ -f "$src" ] || continue
  name="${src##*/}"
  case "$name" in
    *.crt | *.pem | *.jws) mode=0644 ;;
    *) mode=0640 ;;
  esac
  put "$src" "$ETC/$name" "$mode" 0 "$AGENT_GID"
done
[ -f "$ROOT$ETC/agent.yaml" ] || fail "$SEED/etc/agent.yaml is missing"

# 4. The identity.
case "$IDENTITY" in
  preprovisioned)
    if [ -f "$ROOT$SEED/device.key" ]; then
      say "installing the device key"
      put "$ROOT$SEED/device.key" "$ETC/device.key" 0600 "$AGENT_UID" "$AGENT_GID"
    fi
    [ -f "$ROOT$ETC/device.key" ] || fail "no device key in $SEED or $ETC"
    ;;
  enroll)
    if [ ! -f "$ROOT$ETC/device.crt" ] || [ ! -f "$ROOT$ETC/device.key" ]; then
      [ -f "$ROOT$SEED/enroll.token" ] || fail "no enrollment token in $SEED (already used?): ask for a new one (tre pki token --meter $METER_ID)"
      server="$(conf ENROLL_SERVER)"
      case "$server" in
        https://*) ;;
        *) fail "seed.conf: ENROLL_SERVER is not an https:// URL" ;;
      esac
      n=1
      while :; do
        rc=0
        in_root meter-agent provision enroll --server "$server" --token-file /boot/firmware/meter-agent/enroll.token \
          --meter "$METER_ID" --key /etc/meter-agent/device.key --cert /etc/meter-agent/device.crt --ca /etc/meter-agent/ca.crt || rc=$?
        [ "$rc" -ne 0 ] || break
        # 3: the service refused the token (used, expired, another meter's): retrying cannot help.
        [ "$rc" -ne 3 ] || fail "the enrollment service refused the token: ask for a new one (tre pki token --meter $METER_ID), put it in $SEED/enroll.token and run this script again"
        [ "$n" -lt "$ENROLL_ATTEMPTS" ] || fail "enrollment failed $n times; run this script again when $server is reachable"
        say "enrollment attempt $n failed; again in $ENROLL_RETRY_SECONDS s"
        n=$((n + 1))
        sleep "$ENROLL_RETRY_SECONDS"
      done
    fi
    chown "$AGENT_UID:$AGENT_GID" "$ROOT$ETC/device.key"
    chmod 0600 "$ROOT$ETC/device.key"
    chown "0:$AGENT_GID" "$ROOT$ETC/device.crt"
    chmod 0644 "$ROOT$ETC/device.crt"
    ;;
  *) fail "seed.conf: IDENTITY must be preprovisioned or enroll" ;;
esac

# 5. No secret stays on the boot partition (anyone holding the card can read FAT).
scrub "$ROOT$SEED/device.key"
scrub "$ROOT$SEED/enroll.token"

# 6. The service.
if [ -d "$ROOT/run/systemd/system" ]; then
  in_root systemctl enable --now meter-agent.service
else
  in_root systemctl enable meter-agent.service # in a chroot: starts on the next boot
fi
say "meter $METER_ID installed; meter-agent is enabled"

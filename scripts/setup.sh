#!/usr/bin/env bash
# Prepares a fresh Debian / Raspberry Pi OS machine for this repository:
# installs the Debian packages the stack needs (only the missing ones) and runs
# `npm ci` when node_modules is missing or older than package-lock.json.
#   scripts/setup.sh [demo|test|bench|arm64]   (default: test)
# arm64: what meter-agent/test/arm64-rootfs.test.ts needs (TRE_ARM64=1; not run by CI): a Debian
# trixie arm64 root built by mmdebstrap, run through qemu-user-static.
set -euo pipefail
cd "$(dirname "$0")/.."

purpose="${1:-test}"
# Runtime of the TRE and the agents: tpm2-tss for the TPM, swtpm as the laptop/CI TPM,
# a C++ toolchain because better-sqlite3-multiple-ciphers (the encrypted store) compiles from source when no prebuilt binary can be fetched.
packages=(libtss2-dev swtpm swtpm-tools tpm2-tools build-essential python3)
case "$purpose" in
  # nats-server: the shards' engine (tre cluster, npm run demo -- --shards N, the cluster tests).
  demo) packages+=(nats-server) ;;
  # mtools dosfstools fdisk e2fsprogs xz-utils cloud-init bmap-tools: meter-agent's image tests
  # (a Pi OS layout built without root, cloud-init schema on the user-data, bmaptool create).
  test) packages+=(nats-server mosquitto mosquitto-clients chromium file prometheus reprepro gnupg mtools dosfstools fdisk e2fsprogs xz-utils cloud-init bmap-tools) ;;
  bench) packages+=(nats-server mosquitto mosquitto-clients) ;;
  arm64) packages+=(reprepro gnupg mmdebstrap qemu-user-static binfmt-support arch-test) ;;
  *) echo "setup.sh: unknown purpose '$purpose' (use demo, test, bench or arm64)" >&2; exit 2 ;;
esac

node_major="$(node -p 'process.versions.node.split(".")[0]')"
if (( node_major < 20 )); then
  echo "setup.sh: Node.js 20 or newer is required (found $(node --version)); install it from your distribution or nodejs.org." >&2
  exit 1
fi

if command -v dpkg-query >/dev/null 2>&1; then
  missing=()
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if (( ${#missing[@]} > 0 )); then
    echo "setup.sh: installing Debian packages: ${missing[*]}"
    sudo_cmd=()
    if (( EUID != 0 )); then
      command -v sudo >/dev/null 2>&1 || { echo "setup.sh: need root or sudo to install ${missing[*]}" >&2; exit 1; }
      sudo_cmd=(sudo)
    fi
    if [[ " ${missing[*]} " == *" cloud-init "* && ! -e /etc/cloud/cloud-init.disabled ]]; then
      # Only `cloud-init schema` is wanted (the image tests): keep cloud-init from running at this machine's boot.
      echo "setup.sh: cloud-init is for validating Pi images here; disabling its boot services (/etc/cloud/cloud-init.disabled)"
      "${sudo_cmd[@]}" mkdir -p /etc/cloud
      "${sudo_cmd[@]}" touch /etc/cloud/cloud-init.disabled
    fi
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
else
  echo "setup.sh: not a Debian system; make sure these are installed: ${packages[*]}" >&2
fi

# arm64: the kernel hands aarch64 binaries to qemu through binfmt_misc (not always mounted in a container).
if [[ "$purpose" == arm64 ]] && ! arch-test arm64 >/dev/null 2>&1; then
  as_root=()
  (( EUID == 0 )) || as_root=(sudo)
  echo "setup.sh: enabling qemu-aarch64 in binfmt_misc"
  [[ -e /proc/sys/fs/binfmt_misc/status ]] || "${as_root[@]}" mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  "${as_root[@]}" update-binfmts --enable qemu-aarch64 || true
  arch-test arm64 >/dev/null 2>&1 || echo "setup.sh: this kernel still cannot run arm64 binaries (arch-test arm64)" >&2
fi

if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  echo "setup.sh: npm ci (compiles the encrypted SQLite build: a few minutes)"
  # JOBS=max lets node-gyp compile the binding and SQLite in parallel.
  JOBS="${JOBS:-max}" npm ci --no-audit --no-fund
fi

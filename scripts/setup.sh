#!/usr/bin/env bash
# Prepares a fresh Debian / Raspberry Pi OS machine for this repository:
# installs the Debian packages the stack needs (only the missing ones) and runs
# `npm ci` when node_modules is missing or older than package-lock.json.
#   scripts/setup.sh [demo|test|bench]   (default: test)
set -euo pipefail
cd "$(dirname "$0")/.."

purpose="${1:-test}"
# Runtime of the TRE and the agents: tpm2-tss for the TPM, swtpm as the laptop/CI TPM,
# a C++ toolchain because better-sqlite3-multiple-ciphers (the encrypted store) compiles from source when no prebuilt binary can be fetched.
packages=(libtss2-dev swtpm swtpm-tools tpm2-tools build-essential python3)
case "$purpose" in
  demo) ;;
  test) packages+=(mosquitto mosquitto-clients chromium file) ;;
  bench) packages+=(mosquitto mosquitto-clients) ;;
  *) echo "setup.sh: unknown purpose '$purpose' (use demo, test or bench)" >&2; exit 2 ;;
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
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
else
  echo "setup.sh: not a Debian system; make sure these are installed: ${packages[*]}" >&2
fi

if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  echo "setup.sh: npm ci (compiles the encrypted SQLite build: a few minutes)"
  # JOBS=max lets node-gyp compile the binding and SQLite in parallel.
  JOBS="${JOBS:-max}" npm ci --no-audit --no-fund
fi

#!/usr/bin/env bash
# Installs the Debian packages shmframe needs to build, test and run its demo.
# Idempotent: installs only what is missing (and runs `apt-get update` only then).
# Needs apt (Debian 12 / Ubuntu); uses sudo when not run as root.
set -euo pipefail

packages=(
    # The C toolchain Rust links with (rustup does not install one).
    gcc
    libc6-dev
    pkg-config
    libgstreamer1.0-dev
    libgstreamer-plugins-base1.0-dev
    gstreamer1.0-tools
    gstreamer1.0-plugins-base
    gstreamer1.0-plugins-good
    gstreamer1.0-plugins-bad
    python3-numpy
    # scripts/python.sh builds the Python package in a virtual environment.
    python3-venv
)

# Waits for another package manager (apt, unattended-upgrades) to release apt's locks.
source "$(dirname "${BASH_SOURCE[0]}")/apt-lock.sh"

missing=()
for pkg in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    if [[ "$status" != "install ok installed" ]]; then
        missing+=("$pkg")
    fi
done

if ((${#missing[@]} == 0)); then
    echo "setup: all required packages are installed"
else
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "setup: missing packages: ${missing[*]}" >&2
        echo "setup: apt-get not found; install the equivalents with your package manager" >&2
        exit 1
    fi
    sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        if ! command -v sudo >/dev/null 2>&1; then
            echo "setup: missing packages: ${missing[*]}; run this script as root or install sudo" >&2
            exit 1
        fi
        sudo=(sudo)
    fi
    export DEBIAN_FRONTEND=noninteractive
    echo "setup: installing missing packages: ${missing[*]}"
    wait_for_apt_locks
    # apt's own wait covers a package manager that starts between our check and apt-get.
    apt_wait=(-o "DPkg::Lock::Timeout=${lock_wait}")
    echo "+ apt-get update"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${apt_wait[@]}" update -q
    echo "+ apt-get install -y --no-install-recommends ${missing[*]}"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get "${apt_wait[@]}" install -y -q --no-install-recommends "${missing[@]}"
fi

# python3-numpy is numpy for Debian's own interpreter, the one the Python module's tests and
# docs use; a python3 found earlier on PATH (a virtualenv, pyenv) needs its own numpy.
if ! /usr/bin/python3 -c 'import numpy' 2>/dev/null; then
    echo "setup: /usr/bin/python3 cannot import numpy although python3-numpy is installed;" \
        "the Python tests (tests/python_interop.rs) cannot run" >&2
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found; install the Rust toolchain (https://rustup.rs) first" >&2
    exit 1
fi

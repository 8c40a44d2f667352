#!/usr/bin/env bash
# Builds the Python package (python/) into a virtual environment and runs its tests: lints the
# binding crate, installs the package with `maturin develop`, type-checks it, builds the
# GStreamer plugin for the interop tests, and runs `pytest python/tests`. Extra arguments go to pytest (e.g.
# `scripts/python.sh -k zero_copy`). The environment is $target_dir/pyenv (made once, from
# /usr/bin/python3, the interpreter scripts/setup.sh installs numpy and venv for, or from
# SHMFRAME_BASE_PYTHON). The Rust tests and the bench run Python from it (or SHMFRAME_PYTHON).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

target_dir=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p' || true)
if [[ -z "$target_dir" ]]; then
    target_dir=$(realpath -m "${CARGO_TARGET_DIR:-target}")
fi
venv="$target_dir/pyenv"
python=${SHMFRAME_BASE_PYTHON:-/usr/bin/python3}

if [[ ! -x "$venv/bin/python" ]]; then
    echo "+ $python -m venv $venv"
    "$python" -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import numpy, pytest, mypy" 2>/dev/null ||
    [[ ! -x "$venv/bin/maturin" ]]; then
    echo "+ pip install maturin numpy pytest mypy"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q "maturin>=1.9.4,<2" numpy pytest mypy
fi

# The binding crate is a workspace of its own (python/Cargo.toml says why); its build lives
# beside the plugin's. pyo3 is configured for the environment's interpreter in every step, so
# the steps share one build.
export PYO3_PYTHON="$venv/bin/python"
export VIRTUAL_ENV="$venv"
export PATH="$venv/bin:$PATH"
binding_target="$target_dir/python"

echo "+ cargo fmt --manifest-path python/Cargo.toml -- --check"
cargo fmt --manifest-path python/Cargo.toml -- --check
echo "+ cargo clippy --manifest-path python/Cargo.toml --all-targets -- -D warnings"
CARGO_TARGET_DIR="$binding_target" cargo clippy --manifest-path python/Cargo.toml --all-targets \
    -- -D warnings
echo "+ maturin develop --manifest-path python/Cargo.toml"
CARGO_TARGET_DIR="$binding_target" maturin develop --manifest-path python/Cargo.toml
# The package is typed (py.typed): its annotations and the compiled module's stubs must agree.
echo "+ mypy --strict python/shmframe"
(cd python && mypy --strict shmframe)
# The interop tests launch gst-launch-1.0 with the plugin built from this tree.
echo "+ cargo build (the plugin, for gst-launch-1.0)"
cargo build
export GST_PLUGIN_PATH="$target_dir/debug${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}"
echo "python: GST_PLUGIN_PATH=$GST_PLUGIN_PATH"

echo "+ pytest python/tests $*"
status=0
python -m pytest python/tests -p no:cacheprovider "$@" || status=$?
if ((status == 5)); then
    echo "python: pytest collected no tests" >&2
fi
exit "$status"

#!/usr/bin/env bash
# Builds the Python package (python/) into a virtual environment and runs its tests: checks the
# binding crate's formatting, installs the package with `maturin develop` (clippy lints the
# binding crate as it compiles), type-checks it, builds the GStreamer plugin for the interop
# tests, and runs `pytest python/tests`. Extra arguments go to pytest (e.g.
# `scripts/python.sh -k zero_copy`). The environment is $target_dir/pyenv (made once, from
# /usr/bin/python3, the interpreter scripts/setup.sh installs numpy and venv for, or from
# $SHMFRAME_BASE_PYTHON); its interpreter, with the compiled `shmframe` installed, is
# $target_dir/pyenv/bin/python.
#
# scripts/test.sh runs the two halves apart: `--build-only` (the environment, the package and
# its type check) while the Rust workspace builds, `--tests-only [pytest args]` beside the
# Rust tests, on the plugin test.sh built.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/build-env.sh

build=true
tests=true
case "${1:-}" in
--build-only)
    tests=false
    shift
    ;;
--tests-only)
    build=false
    shift
    ;;
esac

venv="$target_dir/pyenv"
export VIRTUAL_ENV="$venv"
export PATH="$venv/bin:$PATH"

if $build; then
    if [[ ! -x "$venv/bin/python" ]]; then
        base_python=${SHMFRAME_BASE_PYTHON:-/usr/bin/python3}
        echo "+ $base_python -m venv $venv"
        "$base_python" -m venv "$venv"
    fi
    if ! "$venv/bin/python" -c "import numpy, pytest, mypy" 2>/dev/null ||
        [[ ! -x "$venv/bin/maturin" ]]; then
        echo "+ pip install maturin numpy pytest mypy"
        "$venv/bin/python" -m pip install -q "maturin>=1.9.4,<2" numpy pytest mypy
    fi

    # The binding crate is a workspace of its own (python/Cargo.toml says why); its build lives
    # beside the plugin's, and pyo3 is configured for the environment's interpreter.
    export PYO3_PYTHON="$venv/bin/python"
    if $tests; then
        # Run whole (not from test.sh, which checks all formatting first).
        echo "+ cargo fmt --manifest-path python/Cargo.toml -- --check"
        cargo fmt --manifest-path python/Cargo.toml -- --check
    fi
    lint_while_building
    echo "+ maturin develop --manifest-path python/Cargo.toml (clippy -D warnings as it compiles)"
    CARGO_TARGET_DIR="$target_dir/python" maturin develop --manifest-path python/Cargo.toml
    # The package is typed (py.typed): its annotations and the compiled module's stubs must agree.
    echo "+ mypy --strict python/shmframe"
    (cd python && mypy --strict shmframe)
fi

if $tests; then
    if $build; then
        # The interop tests launch gst-launch-1.0 with the plugin built from this tree. Built
        # as scripts/test.sh builds it: `cargo build` alone would build the dependencies again
        # (without the features the dev-dependencies add).
        echo "+ cargo build --workspace --all-targets (the plugin, for gst-launch-1.0)"
        cargo build --workspace --all-targets
        export GST_PLUGIN_PATH="$target_dir/debug${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}"
    fi
    echo "python: GST_PLUGIN_PATH=${GST_PLUGIN_PATH:-}"
    echo "+ pytest python/tests $*"
    status=0
    python -m pytest python/tests -p no:cacheprovider "$@" || status=$?
    if ((status == 5)); then
        echo "python: pytest collected no tests" >&2
    fi
    exit "$status"
fi

# Sourced by scripts/test.sh and scripts/python.sh (run from the repository root): where cargo
# builds, and how both lint while they build.

# cargo's target directory: target/ here unless CARGO_TARGET_DIR (or a cargo config) says
# otherwise. Tests that launch gst-launch-1.0 load the freshly built cdylib from its debug/,
# and the Python package lives in its pyenv/.
target_dir=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p' || true)
if [[ -z "$target_dir" ]]; then
    target_dir=$(realpath -m "${CARGO_TARGET_DIR:-target}")
fi

# These scripts compile a change once and run it; incremental compilation (on by default for
# `dev`) writes caches that pay off only in an edit-compile loop (`cargo test -p ...`) and cost
# a fresh clone's build of our crates about 7% more CPU (80 s vs 86-89 s wall for them, two
# runs each).
export CARGO_INCREMENTAL=0

# Clippy lints our own crates while cargo compiles them, so a separate `cargo clippy` (which
# checks every dependency once more, in a build of its own) is not needed: cargo runs
# clippy-driver, clippy's rustc, for workspace members only (RUSTC_WORKSPACE_WRAPPER), the
# way `cargo clippy` does itself, and clippy-driver takes its arguments from CLIPPY_ARGS,
# separated as `cargo clippy` separates them. Dependencies are compiled by rustc as usual.
# Every cargo command of a run must see the same two variables, or cargo recompiles our
# crates to drop the lints again.
lint_while_building() {
    local driver
    driver=$(rustup which clippy-driver 2>/dev/null || command -v clippy-driver || true)
    if [[ -z "$driver" ]]; then
        echo "clippy-driver not found: install clippy (rustup component add clippy)" >&2
        return 1
    fi
    export RUSTC_WORKSPACE_WRAPPER="$driver"
    export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
}

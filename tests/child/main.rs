//! The child binary of the multi-process tests: `common::spawn_role` runs it with the name of
//! the spawning test file and a role; it runs that file's `child_entry`, which reads the role
//! and its arguments from the environment. Each test file is included here as a module for
//! its roles (its `#[test]` functions are not compiled into this binary), so a role lives next
//! to the tests that use it.
//!
//! Run without a role (as `cargo test` does, this being a test target without harness), it
//! says so and exits successfully: it has no tests of its own.

// Each test file declares its own `mod common;`, as it must to build as a test on its own, so
// the shared helpers are compiled once per included file here.
#![allow(clippy::duplicate_mod)]

// Everything the test files keep for their tests alone is unused here.
#[allow(dead_code, unused_imports)]
#[path = "../bad_input.rs"]
mod bad_input;
#[allow(dead_code, unused_imports)]
#[path = "../elements_multiprocess.rs"]
mod elements_multiprocess;
#[allow(dead_code, unused_imports)]
#[path = "../hostile_reader.rs"]
mod hostile_reader;
#[allow(dead_code, unused_imports)]
#[path = "../permissions.rs"]
mod permissions;
#[allow(dead_code, unused_imports)]
#[path = "../reader_crash_matrix.rs"]
mod reader_crash_matrix;
#[allow(dead_code, unused_imports)]
#[path = "../reader_memory.rs"]
mod reader_memory;
#[allow(dead_code, unused_imports)]
#[path = "../src.rs"]
mod src;
#[allow(dead_code, unused_imports)]
#[path = "../timestamps.rs"]
mod timestamps;
#[allow(dead_code, unused_imports)]
#[path = "../transport_multiprocess.rs"]
mod transport_multiprocess;

fn main() {
    let Ok(test_file) = std::env::var("SHMFRAME_ROLES_OF") else {
        println!(
            "child: runs the roles of the multi-process tests when they spawn it \
             (common::spawn_role); it has no tests of its own"
        );
        return;
    };
    match test_file.as_str() {
        "bad_input" => bad_input::child_entry(),
        "elements_multiprocess" => elements_multiprocess::child_entry(),
        "hostile_reader" => hostile_reader::child_entry(),
        "permissions" => permissions::child_entry(),
        "reader_crash_matrix" => reader_crash_matrix::child_entry(),
        "reader_memory" => reader_memory::child_entry(),
        "src" => src::child_entry(),
        "timestamps" => timestamps::child_entry(),
        "transport_multiprocess" => transport_multiprocess::child_entry(),
        other => panic!("no roles for test file {other}: add it to tests/child/main.rs"),
    }
}

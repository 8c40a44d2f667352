//! scripts/setup.sh waits for another package manager that holds apt's locks (a fresh machine
//! often runs unattended-upgrades at boot) instead of failing at once, and gives up with a
//! message saying what to do. The wait (scripts/apt-lock.sh) runs here against a lock file of
//! the test's own, held by this process.

mod common;

use common::ChildGuard;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A file locked by this process (flock: /proc/locks lists it like apt's fcntl locks).
struct HeldLock {
    path: std::path::PathBuf,
    file: Option<std::fs::File>,
}

impl HeldLock {
    fn new(test: &str) -> HeldLock {
        let path =
            std::env::temp_dir().join(format!("shmframe-{test}-{}.lock", std::process::id()));
        let file = std::fs::File::create(&path).unwrap();
        // SAFETY: flock on a descriptor we own.
        assert_eq!(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) }, 0);
        HeldLock {
            path,
            file: Some(file),
        }
    }

    fn release(&mut self) {
        self.file = None;
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        self.release();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// `wait_for_apt_locks` of scripts/apt-lock.sh on `lock` with a limit of `limit_s` seconds; it
/// prints DONE once the wait is over.
fn wait_for_lock(lock: &HeldLock, limit_s: u32) -> ChildGuard {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/apt-lock.sh");
    let child = Command::new("bash")
        .args([
            "-c",
            "set -euo pipefail; source \"$1\"; apt_lock_files=(\"$2\"); lock_wait=$3; \
             wait_for_apt_locks; echo DONE",
            "bash",
            script,
        ])
        .arg(&lock.path)
        .arg(limit_s.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    ChildGuard {
        child,
        label: "wait_for_apt_locks".into(),
    }
}

#[test]
fn setup_waits_for_a_package_manager_holding_apts_lock_and_goes_on_once_it_is_released() {
    let mut lock = HeldLock::new("apt-lock-released");
    let started = Instant::now();
    let mut waiting = wait_for_lock(&lock, 60);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        waiting.child.try_wait().unwrap().is_none(),
        "setup went on while the lock was held"
    );
    lock.release();
    let out = waiting.wait_ok(Duration::from_secs(20));
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert_eq!(
        out,
        format!(
            "setup: {} is held by another package manager (apt, unattended-upgrades?); waiting \
             up to 60 s for it (SHMFRAME_APT_LOCK_WAIT sets the limit)\nDONE\n",
            lock.path.display()
        )
    );
}

#[test]
fn setup_gives_up_on_a_lock_held_past_its_limit_and_says_what_to_do() {
    let lock = HeldLock::new("apt-lock-kept");
    let mut waiting = wait_for_lock(&lock, 4);
    let status = waiting
        .wait_timeout(Duration::from_secs(30))
        .expect("the wait ends at its limit");
    assert_eq!(status.code(), Some(1));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut waiting.child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(
        stderr,
        format!(
            "setup: {} is still held after 4 s; let the other apt or dpkg finish (or stop it), \
             then run scripts/setup.sh again\n",
            lock.path.display()
        )
    );
}

#[test]
fn setup_does_not_wait_when_no_lock_is_held() {
    let mut lock = HeldLock::new("apt-lock-free");
    lock.release();
    let started = Instant::now();
    let out = wait_for_lock(&lock, 60).wait_ok(Duration::from_secs(20));
    assert_eq!(out, "DONE\n");
    assert!(started.elapsed() < Duration::from_secs(2));
}

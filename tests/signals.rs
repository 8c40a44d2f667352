//! Graceful signals: a writer's `gst-launch-1.0` (with the built plugin) that gets SIGINT
//! (Ctrl-C, with or without `-e`) or SIGTERM leaves no segment, and no socket, behind in
//! /dev/shm.

mod common;

use common::{ShmName, gst_launch, wait_for};
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

/// Starts a live writer, waits until it has written frames, sends `signal`, and checks that
/// the process ended and its segment and socket are gone. Returns how the process ended.
fn writer_stopped_by(test: &str, signal: i32, eos_on_shutdown: bool) -> std::process::ExitStatus {
    let name = ShmName::new(test);
    let registry = std::env::temp_dir().join(format!("{}.registry", name.as_str()));
    let mut writer = gst_launch(
        &format!(
            "{} videotestsrc is-live=true ! video/x-raw,width=64,height=48,format=RGBA ! \
             shmframesink shm-name={}",
            if eos_on_shutdown { "-e" } else { "" },
            name.as_str()
        ),
        &registry,
    );
    assert!(
        wait_for(Duration::from_secs(30), || {
            gstshmframe::transport::inspect(&name).is_ok_and(|i| i.frames_written >= 3)
        }),
        "the writer is running and writing"
    );
    let session = gstshmframe::transport::inspect(&name)
        .unwrap()
        .writer_session;
    let socket = gstshmframe::transport::shm_dir().join(format!(".shmframe-sock-{session:016x}"));
    assert!(
        socket.exists(),
        "the writer listens at {}",
        socket.display()
    );
    writer.signal(signal);
    let status = writer.wait_timeout(Duration::from_secs(20));
    let _ = std::fs::remove_file(&registry);
    let status = status.unwrap_or_else(|| panic!("{test}: gst-launch-1.0 did not end"));
    assert!(
        !name.path().exists(),
        "{test}: {} is left behind ({status})",
        name.path().display()
    );
    assert!(
        !socket.exists(),
        "{test}: {} is left behind ({status})",
        socket.display()
    );
    status
}

#[test]
fn sigint_to_a_writers_gst_launch_leaves_no_segment() {
    let status = writer_stopped_by("sig-int", libc::SIGINT, false);
    assert_eq!(status.signal(), None, "gst-launch handles Ctrl-C: {status}");
}

#[test]
fn sigint_with_eos_on_shutdown_leaves_no_segment() {
    let status = writer_stopped_by("sig-int-eos", libc::SIGINT, true);
    assert_eq!(status.signal(), None, "gst-launch handles Ctrl-C: {status}");
}

#[test]
fn sigterm_to_a_writers_gst_launch_leaves_no_segment() {
    let status = writer_stopped_by("sig-term", libc::SIGTERM, false);
    assert_eq!(
        status.signal(),
        Some(libc::SIGTERM),
        "the segment is removed and the process still dies of SIGTERM"
    );
}

//! Removing a writer's segment when its process is terminated by SIGTERM.
//!
//! `gst-launch-1.0` handles SIGINT (Ctrl-C) by stopping the pipeline, which closes the writer
//! cleanly; SIGTERM, what `kill` and service managers send, kills it outright and would leave
//! the segment in /dev/shm until the next writer reclaims it. When SIGTERM still has its
//! default action, the first writer of a process installs a handler that unlinks every
//! registered segment that still is the writer's own file, then re-raises SIGTERM with the
//! default action, so the process still dies of SIGTERM. An application's own SIGTERM handler
//! is never replaced.
//!
//! An application that wants SIGTERM left alone altogether (it installs its handler later, or
//! manages signals in one place) opts out with [`disable_sigterm_handler`] or by setting
//! `SHMFRAME_NO_SIGTERM_HANDLER=1` in its environment; its segments then stay behind on
//! SIGTERM until the next writer of the name reclaims them.
//!
//! The handler only uses async-signal-safe calls (`stat`, `unlink`, `signal`, `raise`) and
//! reads fixed, pre-allocated slots; registering and unregistering never allocate in them.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// Set to anything but empty or `0`, shmframe installs no SIGTERM handler in the process.
pub const NO_SIGTERM_HANDLER_ENV: &str = "SHMFRAME_NO_SIGTERM_HANDLER";

const SLOTS: usize = 32;
const PATH_MAX: usize = 512;

const FREE: u32 = 0;
const BUSY: u32 = 1;
const READY: u32 = 2;

struct Slot {
    state: AtomicU32,
    dev: AtomicU64,
    ino: AtomicU64,
    /// NUL-terminated path; written only while the slot is BUSY.
    path: std::cell::UnsafeCell<[u8; PATH_MAX]>,
}

// SAFETY: `path` is written only by the thread that moved `state` FREE -> BUSY, and read (by the
// signal handler) only while `state` is READY, which that thread publishes with Release after
// writing.
unsafe impl Sync for Slot {}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Slot = Slot {
    state: AtomicU32::new(FREE),
    dev: AtomicU64::new(0),
    ino: AtomicU64::new(0),
    path: std::cell::UnsafeCell::new([0; PATH_MAX]),
};

static REGISTERED: [Slot; SLOTS] = [EMPTY; SLOTS];
static INSTALL: Once = Once::new();
/// Whether `INSTALL` did install `on_sigterm`.
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Keeps shmframe from handling SIGTERM in this process, like `SHMFRAME_NO_SIGTERM_HANDLER=1`:
/// no handler is installed by later writers, and one already installed is removed if it still
/// is SIGTERM's action (the default action is restored; a handler the application installed
/// since is left alone). Segments of writers in this process then stay behind when it is
/// terminated by SIGTERM, until the next writer of the name reclaims them.
pub fn disable_sigterm_handler() {
    INSTALL.call_once(|| {});
    if !INSTALLED.load(Ordering::Acquire) {
        return;
    }
    // SAFETY: sigaction with a null new action only reads the current one.
    let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
    let queried = unsafe { libc::sigaction(libc::SIGTERM, std::ptr::null(), &mut current) };
    if queried == 0 && current.sa_sigaction == on_sigterm as *const () as libc::sighandler_t {
        // SAFETY: restores the default action, which is what SIGTERM had before we installed.
        unsafe { libc::signal(libc::SIGTERM, libc::SIG_DFL) };
        INSTALLED.store(false, Ordering::Release);
    }
}

fn opted_out_by_environment() -> bool {
    std::env::var_os(NO_SIGTERM_HANDLER_ENV).is_some_and(|v| !v.is_empty() && v != "0")
}

/// Unlinks the segment at `path` (whose file is `dev`/`ino`) if the process gets SIGTERM,
/// until dropped. `None` if every slot is taken or the path is too long: the segment is then
/// simply not cleaned up on SIGTERM.
pub(crate) struct OnTerminate(usize);

impl OnTerminate {
    pub(crate) fn register(path: &Path, (dev, ino): (u64, u64)) -> Option<OnTerminate> {
        let c_path = CString::new(path.as_os_str().as_bytes()).ok()?;
        let bytes = c_path.as_bytes_with_nul();
        if bytes.len() > PATH_MAX {
            return None;
        }
        install_handler();
        let (index, slot) = REGISTERED.iter().enumerate().find(|(_, s)| {
            s.state
                .compare_exchange(FREE, BUSY, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        })?;
        // SAFETY: we own the slot (state BUSY); the handler does not read it in that state.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), slot.path.get() as *mut u8, bytes.len())
        };
        slot.dev.store(dev, Ordering::Relaxed);
        slot.ino.store(ino, Ordering::Relaxed);
        slot.state.store(READY, Ordering::Release);
        Some(OnTerminate(index))
    }
}

impl Drop for OnTerminate {
    fn drop(&mut self) {
        REGISTERED[self.0].state.store(FREE, Ordering::Release);
    }
}

fn install_handler() {
    INSTALL.call_once(|| {
        // SAFETY: sigaction with a null new action only reads the current one.
        let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
        let queried = unsafe { libc::sigaction(libc::SIGTERM, std::ptr::null(), &mut current) };
        if queried != 0 || current.sa_sigaction != libc::SIG_DFL || opted_out_by_environment() {
            return;
        }
        // SAFETY: all-zero is a valid sigaction; we set the handler and an empty mask.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = on_sigterm as *const () as libc::sighandler_t;
        // SAFETY: `action.sa_mask` is a valid sigset_t to initialise.
        unsafe { libc::sigemptyset(&mut action.sa_mask) };
        // SAFETY: installing a handler that only performs async-signal-safe operations.
        let installed = unsafe { libc::sigaction(libc::SIGTERM, &action, std::ptr::null_mut()) };
        INSTALLED.store(installed == 0, Ordering::Release);
    });
}

extern "C" fn on_sigterm(_signal: libc::c_int) {
    for slot in &REGISTERED {
        if slot.state.load(Ordering::Acquire) != READY {
            continue;
        }
        let path = slot.path.get() as *const libc::c_char;
        // SAFETY: the slot is READY, so `path` holds a NUL-terminated string; stat and unlink
        // are async-signal-safe. Only our own file is removed: the name may already belong to
        // a new writer.
        unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            if libc::stat(path, &mut st) == 0
                && st.st_dev == slot.dev.load(Ordering::Relaxed)
                && st.st_ino == slot.ino.load(Ordering::Relaxed)
            {
                libc::unlink(path);
            }
        }
    }
    // SAFETY: restoring the default action and re-raising are async-signal-safe; the process
    // then terminates by SIGTERM as it would have without us.
    unsafe {
        libc::signal(libc::SIGTERM, libc::SIG_DFL);
        libc::raise(libc::SIGTERM);
    }
}

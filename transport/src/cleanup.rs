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
//! walks a list of pre-allocated nodes: registering allocates a node only when every node is in
//! use (outside the handler), nodes are pushed with a compare-and-swap and never freed, so the
//! handler can follow the list at any moment, however many segments the process writes.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};

/// Set to anything but empty or `0`, shmframe installs no SIGTERM handler in the process.
pub const NO_SIGTERM_HANDLER_ENV: &str = "SHMFRAME_NO_SIGTERM_HANDLER";

const PATH_MAX: usize = 512;

const FREE: u32 = 0;
const BUSY: u32 = 1;
const READY: u32 = 2;

struct Node {
    state: AtomicU32,
    dev: AtomicU64,
    ino: AtomicU64,
    /// NUL-terminated path; written only while the node is BUSY.
    path: std::cell::UnsafeCell<[u8; PATH_MAX]>,
    /// The node pushed before this one; set before the node is published, then never changed.
    next: *const Node,
}

// SAFETY: `path` is written only by the thread that moved `state` FREE -> BUSY (or that made
// the node BUSY), and read (by the signal handler) only while `state` is READY, which that
// thread publishes with Release after writing. `next` is immutable once the node is shared.
unsafe impl Sync for Node {}

/// The most recently pushed node; the list only grows and nodes live for ever.
static HEAD: AtomicPtr<Node> = AtomicPtr::new(ptr::null_mut());
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

/// Every node of the list, newest first.
fn nodes() -> impl Iterator<Item = &'static Node> {
    // SAFETY: every pointer in the list comes from a leaked Box (see `claim_node`), so it is
    // valid for 'static; Acquire on HEAD pairs with the Release push, making `next` visible.
    let mut at = HEAD.load(Ordering::Acquire) as *const Node;
    std::iter::from_fn(move || {
        // SAFETY: see above.
        let node = unsafe { at.as_ref()? };
        at = node.next;
        Some(node)
    })
}

/// A node in state BUSY: a free one of the list, or a new one pushed onto it.
fn claim_node() -> &'static Node {
    if let Some(node) = nodes().find(|n| {
        n.state
            .compare_exchange(FREE, BUSY, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }) {
        return node;
    }
    let node = Box::into_raw(Box::new(Node {
        state: AtomicU32::new(BUSY),
        dev: AtomicU64::new(0),
        ino: AtomicU64::new(0),
        path: std::cell::UnsafeCell::new([0; PATH_MAX]),
        next: ptr::null(),
    }));
    let mut head = HEAD.load(Ordering::Relaxed);
    loop {
        // SAFETY: the node is not shared yet: we are its only user.
        unsafe { (*node).next = head };
        match HEAD.compare_exchange_weak(head, node, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => break,
            Err(current) => head = current,
        }
    }
    // SAFETY: leaked on purpose: the handler may walk the list at any time.
    unsafe { &*node }
}

/// Unlinks the segment at `path` (whose file is `dev`/`ino`) if the process gets SIGTERM,
/// until dropped. `None` if the path is too long: the segment is then simply not cleaned up
/// on SIGTERM.
pub(crate) struct OnTerminate(&'static Node);

impl OnTerminate {
    pub(crate) fn register(path: &Path, (dev, ino): (u64, u64)) -> Option<OnTerminate> {
        let c_path = CString::new(path.as_os_str().as_bytes()).ok()?;
        let bytes = c_path.as_bytes_with_nul();
        if bytes.len() > PATH_MAX {
            return None;
        }
        install_handler();
        let node = claim_node();
        // SAFETY: we own the node (state BUSY); the handler does not read it in that state.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), node.path.get() as *mut u8, bytes.len())
        };
        node.dev.store(dev, Ordering::Relaxed);
        node.ino.store(ino, Ordering::Relaxed);
        node.state.store(READY, Ordering::Release);
        Some(OnTerminate(node))
    }
}

impl Drop for OnTerminate {
    fn drop(&mut self) {
        self.0.state.store(FREE, Ordering::Release);
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
    for node in nodes() {
        if node.state.load(Ordering::Acquire) != READY {
            continue;
        }
        let path = node.path.get() as *const libc::c_char;
        // SAFETY: the node is READY, so `path` holds a NUL-terminated string; stat and unlink
        // are async-signal-safe. Only our own file is removed: the name may already belong to
        // a new writer.
        unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            if libc::stat(path, &mut st) == 0
                && st.st_dev == node.dev.load(Ordering::Relaxed)
                && st.st_ino == node.ino.load(Ordering::Relaxed)
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

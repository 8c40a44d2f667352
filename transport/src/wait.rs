//! The wake path's common parts: what a waiting thread can be woken through ([`Wake`]: a
//! reader's futex word in its control page, a writer's bells in its registry), the bound of one
//! wait, and the [`Interrupt`] that cuts a wait short from another thread (GStreamer's unlock).

use crate::sys;
use std::sync::atomic::{AtomicBool, Ordering, fence};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Upper bound of one wait while blocked, so liveness and stalls are re-checked.
pub(crate) const BLOCKED_WAIT_SLICE: Duration = Duration::from_millis(20);

/// Something a waiting thread sleeps on that can be woken: a reader's control page (its
/// wait for a frame) or a writer's registry (its wait for room or readers).
pub(crate) trait Wake: Send + Sync {
    fn wake(&self);
}

/// Lets another thread interrupt a wait (GStreamer's unlock): the waiter returns
/// `Error::Interrupted` promptly until [`Interrupt::clear`] is called.
#[derive(Clone)]
pub struct Interrupt {
    inner: Arc<InterruptInner>,
}

struct InterruptInner {
    flag: AtomicBool,
    target: Mutex<Option<Arc<dyn Wake>>>,
    sleep_lock: Mutex<()>,
    sleep_cv: Condvar,
    /// Readable while the flag is set, for waits on file descriptors; made on first use.
    wake_fd: std::sync::OnceLock<Option<std::os::fd::OwnedFd>>,
}

impl Default for Interrupt {
    fn default() -> Self {
        Self::new()
    }
}

impl Interrupt {
    pub fn new() -> Interrupt {
        Interrupt {
            inner: Arc::new(InterruptInner {
                flag: AtomicBool::new(false),
                target: Mutex::new(None),
                sleep_lock: Mutex::new(()),
                sleep_cv: Condvar::new(),
                wake_fd: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Interrupts the current wait and every later one until `clear`.
    pub fn interrupt(&self) {
        self.inner.flag.store(true, Ordering::SeqCst);
        // Waking the target makes a wait that is about to start return at once (a bumped futex
        // word, a rung bell), and ends one under way; other waiters just re-check and sleep.
        if let Some(target) = self.inner.target.lock().unwrap().as_ref() {
            target.wake();
        }
        let _guard = self.inner.sleep_lock.lock().unwrap();
        self.inner.sleep_cv.notify_all();
        // The fence pairs with the one in `wake_fd`: either the waiter sees the flag, or we
        // see its descriptor and make it readable.
        fence(Ordering::SeqCst);
        if let Some(Some(fd)) = self.inner.wake_fd.get() {
            sys::eventfd_signal(fd);
        }
    }

    pub fn clear(&self) {
        self.inner.flag.store(false, Ordering::SeqCst);
        if let Some(Some(fd)) = self.inner.wake_fd.get() {
            sys::eventfd_drain(fd);
        }
    }

    /// A descriptor that becomes readable when the wait is interrupted, for waits on file
    /// descriptors (`None` if the system has none to give). Check [`Self::is_set`] after
    /// getting it and before waiting.
    pub(crate) fn wake_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        let fd = self.inner.wake_fd.get_or_init(|| sys::eventfd().ok());
        fence(Ordering::SeqCst);
        fd.as_ref().map(|fd| fd.as_fd())
    }

    pub fn is_set(&self) -> bool {
        self.inner.flag.load(Ordering::SeqCst)
    }

    pub(crate) fn set_target(&self, target: Option<Arc<dyn Wake>>) {
        *self.inner.target.lock().unwrap() = target;
    }

    /// Sleeps up to `d` unless interrupted; returns false if interrupted. Used only where
    /// there is no shared word to wait on (no segment exists yet).
    pub fn sleep(&self, d: Duration) -> bool {
        let guard = self.inner.sleep_lock.lock().unwrap();
        if self.is_set() {
            return false;
        }
        let _ = self.inner.sleep_cv.wait_timeout(guard, d).unwrap();
        !self.is_set()
    }
}

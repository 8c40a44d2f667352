//! Thin wrappers over the Linux primitives the transport needs: futex wait/wake on a shared
//! word, the open-file-description (OFD) byte lock of the writer's liveness, CLOCK_MONOTONIC,
//! randomness. (The reader channel's sockets and memfds are in `sock`.)
//! Crate-private except [`monotonic_ns`] (the clock frame write times are stamped in; also at
//! the crate root) and [`last_level_cache_bytes`], which the plugin and its tests call.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// CLOCK_MONOTONIC in nanoseconds: the clock shared by every process on the machine, used for
/// frame write times, heartbeats and latency.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub(crate) fn realtime_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A non-zero random 64-bit value (session ids).
pub(crate) fn random_u64() -> u64 {
    loop {
        let mut v = 0u64;
        // SAFETY: the buffer is the 8 bytes of `v`, valid for writes.
        let n = unsafe { libc::getrandom(&mut v as *mut u64 as *mut libc::c_void, 8, 0) };
        if n == 8 && v != 0 {
            return v;
        }
    }
}

/// Start time of this process in clock ticks since boot (field 22 of /proc/self/stat): with the
/// pid it identifies a process even when pids are reused.
pub(crate) fn process_start_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may contain spaces and parentheses: fields resume after the
    // last ')'.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(19))
        .and_then(|f| f.parse().ok())
        .unwrap_or(0)
}

/// The size of the file system holding `file`, and the bytes an unprivileged process may still
/// allocate on it.
pub(crate) fn space(file: &File) -> io::Result<(u64, u64)> {
    // SAFETY: all-zero is a valid statvfs (plain integers), filled in by the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: the descriptor is open for the call and `st` is writable.
    if unsafe { libc::fstatvfs(file.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let block = st.f_frsize as u64;
    Ok((st.f_blocks as u64 * block, st.f_bavail as u64 * block))
}

/// Allocates the first `len` bytes of `file` for real. On tmpfs a sized file is sparse: its
/// pages are allocated when first written, and a write that finds the file system full
/// faults (SIGBUS) instead of failing. Allocating up front turns that into an error at
/// creation and spares the first pass through the ring its page allocation.
pub(crate) fn allocate(file: &File, len: u64) -> io::Result<()> {
    // SAFETY: the descriptor is open for the call; posix_fallocate touches no memory of ours.
    match unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len as libc::off_t) } {
        0 => Ok(()),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// Blocks while `*word == expected`, for at most `timeout`. Returns on a wake, a value change,
/// a signal or the timeout; callers re-check their condition in every case.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `word` points into a live shared mapping (or process memory) for the duration of
    // the call; FUTEX_WAIT (without FUTEX_PRIVATE_FLAG, since other processes wake it) only reads
    // the word. A relative timeout is what FUTEX_WAIT takes.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Wakes every process/thread waiting on `word`.
pub(crate) fn futex_wake_all(word: &AtomicU32) {
    // SAFETY: as for `futex_wait`; FUTEX_WAKE does not access the word's value.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// One futex word of a [`futex_wait_any`], with the value the caller last saw in it
/// (`struct futex_waitv`).
#[repr(C)]
pub(crate) struct WaitWord {
    val: u64,
    uaddr: u64,
    flags: u32,
    reserved: u32,
}

impl WaitWord {
    /// `word` as it is now. SeqCst: taken before the caller re-checks its condition, so a
    /// change made after that check (and woken) is one the wait sees.
    pub(crate) fn now(word: &AtomicU32) -> WaitWord {
        const FUTEX_32: u32 = 2;
        WaitWord {
            val: word.load(std::sync::atomic::Ordering::SeqCst) as u64,
            uaddr: word.as_ptr() as u64,
            flags: FUTEX_32,
            reserved: 0,
        }
    }

    /// The value it was taken with.
    pub(crate) fn value(&self) -> u32 {
        self.val as u32
    }
}

/// Kernels before 5.16 have no `futex_waitv`: seen once, remembered.
static NO_FUTEX_WAITV: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[cfg(test)]
thread_local! {
    static PRETEND_NO_FUTEX_WAITV: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Makes this thread wait as on a kernel without `futex_waitv`, so that tests cover that path.
#[cfg(test)]
pub(crate) fn pretend_futex_waitv_is_missing() {
    PRETEND_NO_FUTEX_WAITV.set(true);
}

fn futex_waitv_missing() -> bool {
    #[cfg(test)]
    if PRETEND_NO_FUTEX_WAITV.get() {
        return true;
    }
    NO_FUTEX_WAITV.load(std::sync::atomic::Ordering::Relaxed)
}

/// How long one wait on a kernel without `futex_waitv` sleeps at most: it sleeps on the first
/// word only and looks at the others this often.
pub(crate) const SINGLE_WORD_SLICE: Duration = Duration::from_millis(1);

/// Blocks while every word still holds the value it was taken with, for at most `timeout`:
/// returns when one of them is woken or changed, on a signal, or at the timeout (callers
/// re-check their condition in every case). Without `futex_waitv` (Linux < 5.16) it sleeps on
/// the first word, at most [`SINGLE_WORD_SLICE`]: put the likeliest word first.
///
/// The caller keeps every word's memory mapped until this returns.
pub(crate) fn futex_wait_any(words: &[WaitWord], timeout: Duration) {
    let Some(first) = words.first() else {
        std::thread::sleep(timeout);
        return;
    };
    if !futex_waitv_missing() {
        let deadline =
            monotonic_ns().saturating_add(timeout.as_nanos().min(u64::MAX as u128) as u64);
        let ts = libc::timespec {
            tv_sec: (deadline / 1_000_000_000) as libc::time_t,
            tv_nsec: (deadline % 1_000_000_000) as libc::c_long,
        };
        // SAFETY: `words` is an array of `struct futex_waitv` (at most 128: the registry waits
        // on 64 readers and a bell) whose addresses the caller keeps mapped; the kernel only
        // reads them. The timeout is absolute on CLOCK_MONOTONIC, as futex_waitv takes it.
        let r = unsafe {
            libc::syscall(
                libc::SYS_futex_waitv,
                words.as_ptr(),
                words.len() as libc::c_uint,
                0u32,
                &ts as *const libc::timespec,
                libc::CLOCK_MONOTONIC,
            )
        };
        if r >= 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ENOSYS) {
            return;
        }
        NO_FUTEX_WAITV.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    futex_wait_single(first, timeout.min(SINGLE_WORD_SLICE));
}

/// [`futex_wait_any`] on a kernel without `futex_waitv`: the first word only.
fn futex_wait_single(word: &WaitWord, timeout: Duration) {
    // SAFETY: the caller keeps the word mapped (see `futex_wait_any`); it is an aligned u32
    // that `WaitWord::now` took from an `AtomicU32`.
    let atomic = unsafe { AtomicU32::from_ptr(word.uaddr as *mut u32) };
    futex_wait(atomic, word.val as u32, timeout);
}

fn flock_struct(kind: libc::c_int, offset: u64) -> libc::flock {
    // SAFETY: flock is a plain C struct for which all-zero is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = offset as libc::off_t;
    fl.l_len = 1;
    fl
}

/// Takes an OFD lock on one byte without blocking. OFD locks belong to the open file
/// description, so the kernel drops them when the holding process dies, however it dies: that
/// is how writers and readers learn that a peer is gone.
pub(crate) fn try_lock_byte(file: &File, offset: u64, exclusive: bool) -> io::Result<bool> {
    let kind = if exclusive {
        libc::F_WRLCK
    } else {
        libc::F_RDLCK
    };
    let mut fl = flock_struct(kind, offset);
    // SAFETY: `fl` is a valid flock; the fd is open for the lifetime of `file`.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &mut fl) };
    if r == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EACCES) => Ok(false),
        _ => Err(err),
    }
}

/// Whether another open file description holds a lock on `offset` that would conflict with
/// `exclusive` (true: any lock; false: only a write lock). Does not take the lock.
pub(crate) fn byte_is_locked(file: &File, offset: u64, exclusive: bool) -> bool {
    let kind = if exclusive {
        libc::F_WRLCK
    } else {
        libc::F_RDLCK
    };
    let mut fl = flock_struct(kind, offset);
    // SAFETY: as for `try_lock_byte`; F_OFD_GETLK only writes into `fl`.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
    // If the query itself fails, report "locked": treating a peer as alive is the safe error.
    r != 0 || fl.l_type != libc::F_UNLCK as libc::c_short
}

/// Atomically renames `from` to `to`, failing with `AlreadyExists` if `to` exists.
pub(crate) fn rename_noreplace(from: &std::path::Path, to: &std::path::Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let from = std::ffi::CString::new(from.as_os_str().as_bytes())?;
    let to = std::ffi::CString::new(to.as_os_str().as_bytes())?;
    // SAFETY: both are valid NUL-terminated paths; AT_FDCWD with absolute paths.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Watches a directory for an entry of one name appearing (created, or renamed into place), so
/// that a reader waiting for its writer's segment notices it at once instead of at its next
/// poll of the name.
pub(crate) struct NameWatch {
    inotify: std::os::fd::OwnedFd,
    name: std::ffi::OsString,
}

impl NameWatch {
    /// Watches `path`'s directory for `path`'s name.
    pub(crate) fn new(path: &std::path::Path) -> io::Result<NameWatch> {
        use std::os::fd::FromRawFd;
        use std::os::unix::ffi::OsStrExt;
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        };
        let dir = std::ffi::CString::new(dir.as_os_str().as_bytes())?;
        // SAFETY: plain system call without pointers.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor nobody else owns.
        let inotify = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        // SAFETY: `dir` is a valid NUL-terminated path.
        let wd = unsafe {
            libc::inotify_add_watch(fd, dir.as_ptr(), libc::IN_CREATE | libc::IN_MOVED_TO)
        };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(NameWatch {
            inotify,
            name: name.to_os_string(),
        })
    }

    /// Waits up to `timeout` for the name to appear, or for `wake` to become readable. True if
    /// the name appeared (or events were lost and it may have); false on timeout or wake-up.
    /// Events for other names are consumed and ignored.
    pub(crate) fn wait(
        &self,
        timeout: Duration,
        wake: Option<std::os::fd::BorrowedFd<'_>>,
    ) -> bool {
        use std::os::unix::ffi::OsStrExt;
        let deadline = std::time::Instant::now() + timeout;
        // inotify_event is 16 bytes plus a NUL-padded name of at most NAME_MAX + 1 bytes.
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let poll_fd = |fd: std::os::fd::RawFd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // A negative descriptor is ignored by poll.
            let mut pfds = [
                poll_fd(self.inotify.as_raw_fd()),
                poll_fd(wake.as_ref().map_or(-1, |fd| fd.as_raw_fd())),
            ];
            let ms = left.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as libc::c_int;
            // SAFETY: two valid pollfds.
            if unsafe { libc::poll(pfds.as_mut_ptr(), 2, ms) } <= 0 || pfds[1].revents != 0 {
                return false;
            }
            // SAFETY: `buf` is writable for its length; the descriptor is non-blocking.
            let n =
                unsafe { libc::read(self.inotify.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            let mut at = 0usize;
            let head = std::mem::size_of::<libc::inotify_event>();
            while n > 0 && at + head <= n as usize {
                // SAFETY: the kernel wrote whole events: `head` bytes are in `buf` at `at`
                // (read unaligned: the buffer has byte alignment).
                let event: libc::inotify_event =
                    unsafe { std::ptr::read_unaligned(buf.as_ptr().add(at).cast()) };
                let name_end = (at + head + event.len as usize).min(n as usize);
                let name = &buf[at + head..name_end];
                let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
                if event.mask & libc::IN_Q_OVERFLOW != 0 || name == self.name.as_bytes() {
                    return true;
                }
                at = name_end;
            }
            if left.is_zero() {
                return false;
            }
        }
    }
}

/// A non-blocking eventfd (a counter another thread makes readable).
pub(crate) fn eventfd() -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain system call without pointers.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor nobody else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Makes an eventfd readable.
pub(crate) fn eventfd_signal(fd: &std::os::fd::OwnedFd) {
    let one: u64 = 1;
    // SAFETY: writes the 8 bytes of `one` to a descriptor we own; a full counter (EAGAIN)
    // is readable already.
    unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
}

/// Makes an eventfd unreadable again.
pub(crate) fn eventfd_drain(fd: &std::os::fd::OwnedFd) {
    let mut count: u64 = 0;
    // SAFETY: reads at most 8 bytes into `count`; non-blocking (EAGAIN when already drained).
    unsafe { libc::read(fd.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
}

/// The size of the largest CPU cache (the last level, shared by the cores), from sysfs;
/// 8 MiB when the kernel does not say.
pub fn last_level_cache_bytes() -> u64 {
    static SIZE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SIZE.get_or_init(|| {
        (0..8)
            .filter_map(|index| {
                let size = std::fs::read_to_string(format!(
                    "/sys/devices/system/cpu/cpu0/cache/index{index}/size"
                ))
                .ok()?;
                let size = size.trim();
                let (digits, unit) = size.split_at(size.find(|c: char| !c.is_ascii_digit())?);
                let scale = match unit {
                    "K" => 1 << 10,
                    "M" => 1 << 20,
                    "G" => 1 << 30,
                    _ => return None,
                };
                Some(digits.parse::<u64>().ok()? * scale)
            })
            .max()
            .unwrap_or(8 << 20)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_watch_wakes_for_its_name_only() {
        let dir = std::env::temp_dir().join(format!("shmframe-namewatch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let watched = dir.join("cam0");
        let watch = NameWatch::new(&watched).unwrap();
        std::fs::write(dir.join("cam1"), b"other").unwrap();
        assert!(!watch.wait(Duration::from_millis(50), None), "another name");
        // Renamed into place, as a writer publishes its segment.
        let writer = std::thread::spawn({
            let (tmp, watched) = (dir.join(".cam0-new"), watched.clone());
            move || {
                std::thread::sleep(Duration::from_millis(50));
                std::fs::write(&tmp, b"segment").unwrap();
                std::fs::rename(&tmp, &watched).unwrap();
            }
        });
        assert!(
            watch.wait(Duration::from_secs(20), None),
            "the name appeared"
        );
        // A wake-up descriptor that is readable ends the wait at once.
        let wake = eventfd().unwrap();
        eventfd_signal(&wake);
        let started = std::time::Instant::now();
        use std::os::fd::AsFd;
        assert!(!watch.wait(Duration::from_secs(20), Some(wake.as_fd())));
        assert!(started.elapsed() < Duration::from_secs(10));
        writer.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_wait_on_several_words_ends_when_any_of_them_is_woken() {
        use std::sync::Arc;
        use std::sync::atomic::Ordering;
        let words: Arc<[AtomicU32; 3]> = Arc::new(Default::default());
        let started = std::time::Instant::now();
        futex_wait_any(&[WaitWord::now(&words[0])], Duration::from_millis(30));
        assert!(
            started.elapsed() >= Duration::from_millis(25),
            "timed out, not sooner"
        );
        // A value changed before the wait: it returns at once.
        let seen: Vec<WaitWord> = words.iter().map(WaitWord::now).collect();
        words[2].fetch_add(1, Ordering::SeqCst);
        let started = std::time::Instant::now();
        futex_wait_any(&seen, Duration::from_secs(20));
        assert!(started.elapsed() < Duration::from_secs(10));
        // Woken through the last word while asleep on all three.
        let waker = std::thread::spawn({
            let words = words.clone();
            move || {
                std::thread::sleep(Duration::from_millis(50));
                words[2].fetch_add(1, Ordering::SeqCst);
                futex_wake_all(&words[2]);
            }
        });
        let seen: Vec<WaitWord> = words.iter().map(WaitWord::now).collect();
        let started = std::time::Instant::now();
        futex_wait_any(&seen, Duration::from_secs(20));
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "woken, not timed out"
        );
        waker.join().unwrap();
        // Without futex_waitv: the first word only, for a short slice at most.
        let started = std::time::Instant::now();
        futex_wait_single(&WaitWord::now(&words[1]), SINGLE_WORD_SLICE);
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn the_last_level_cache_has_a_plausible_size() {
        let size = last_level_cache_bytes();
        assert!((64 << 10..=4 << 30).contains(&size), "{size}");
    }
}

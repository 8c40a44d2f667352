//! The reader table, owned by the writer. Readers attach through the stream's socket: each
//! connection is one reader, handed a control page of its own (a sealed memfd, see
//! [`ControlPage`]); the connection closing is that reader leaving, however it leaves. The
//! writer keeps the truth about every reader (who it is, whether it is evicted) in its own
//! memory; what readers write in their pages is read, clamped, and affects only them.
//!
//! A [`ReaderLease`] is the reader's side: its connection and page, shared by the `Reader` and
//! every frame it pinned, so the pins the writer respects live until the last of them is gone.

use crate::error::Error;
use crate::layout::*;
use crate::segment::{Mapping, WriterMapping};
use crate::sock::{self, Received};
use crate::sys;
use crate::wait::Wake;
use memmap2::{MmapMut, MmapOptions};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a connection may take to say hello before the writer drops it.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections still to say hello that the writer keeps at once; a newer one pushes out the
/// oldest.
const MAX_PENDING: usize = 32;
/// Messages taken from one reader's connection per look at it: a reader sending without pause
/// costs the writer a bounded amount of work per look.
const MAX_MESSAGES_PER_LOOK: usize = 16;
/// How often the admission thread refreshes the reader table in the segment file and drops
/// connections that did not say hello in time.
const TICK: Duration = Duration::from_millis(100);
/// Pin words of the largest ring: the pin bitmaps are fixed arrays of this many words.
pub(crate) const MAX_PIN_WORDS: usize = (MAX_DEPTH + MAX_SPARE_SLOTS).div_ceil(64) as usize;

/// Changes in the reader table, reported by [`crate::Writer::take_reader_events`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReaderEvent {
    Attached {
        pid: u32,
        index: u32,
    },
    /// The reader detached cleanly, or its process died (`died`).
    Detached {
        pid: u32,
        index: u32,
        died: bool,
    },
    /// The reader blocked a `block` writer without advancing for longer than the reader
    /// timeout; it no longer counts for backpressure until it catches up.
    Evicted {
        pid: u32,
        index: u32,
    },
}

/// A control page mapped read-write (by the writer that made it, or the reader it was
/// handed to).
pub(crate) struct ControlMap {
    _file: std::fs::File,
    _map: MmapMut,
    base: *const u8,
    pin_words: u32,
}

// SAFETY: the pointer points into the mapping owned by this struct; the page is accessed only
// through atomics.
unsafe impl Send for ControlMap {}
// SAFETY: as above.
unsafe impl Sync for ControlMap {}

impl ControlMap {
    /// Maps a control page of exactly [`CONTROL_PAGE_LEN`] bytes that cannot shrink (whoever
    /// else holds it cannot make our accesses fault).
    pub(crate) fn map(file: std::fs::File, pin_words: u32) -> std::io::Result<ControlMap> {
        let len = file.metadata()?.len();
        if len != CONTROL_PAGE_LEN || !sock::sealed_against_shrinking(&file) {
            return Err(std::io::Error::other(format!(
                "a reader control page must be a memfd of {CONTROL_PAGE_LEN} bytes sealed \
                 against shrinking; got {len} bytes"
            )));
        }
        // SAFETY: a shared mapping of a sealed memfd of CONTROL_PAGE_LEN bytes: it cannot
        // shrink under the mapping, and its contents are accessed through atomics only.
        let mut map = unsafe {
            MmapOptions::new()
                .len(CONTROL_PAGE_LEN as usize)
                .map_mut(&file)?
        };
        Ok(ControlMap {
            base: map.as_mut_ptr(),
            _map: map,
            _file: file,
            pin_words,
        })
    }

    pub(crate) fn page(&self) -> &ControlPage {
        // SAFETY: the page is mapped for CONTROL_PAGE_LEN >= size_of::<ControlPage>() bytes,
        // page-aligned, and ControlPage is Plain (any bytes are a valid value).
        unsafe { &*(self.base as *const ControlPage) }
    }

    /// Pin word `w` (`w < pin_words`).
    pub(crate) fn pin_word(&self, w: u32) -> &AtomicU64 {
        assert!(w < self.pin_words);
        // SAFETY: CONTROL_PINS_OFFSET + 8 * pin_words <= CONTROL_PAGE_LEN (checked at compile
        // time for the largest ring), 8-byte aligned.
        unsafe {
            &*(self.base.add((CONTROL_PINS_OFFSET + w as u64 * 8) as usize) as *const AtomicU64)
        }
    }

    /// Wakes the reader if it sleeps on its page (or is about to).
    fn wake(&self) {
        let word = &self.page().wake_seq;
        word.fetch_add(1, Ordering::SeqCst);
        sys::futex_wake_all(word);
    }
}

/// What a waiting writer thread sleeps on (see [`Registry::arm`]): the registry's bell and
/// every attached reader's `progress_seq`, as they were before the thread last checked its
/// condition. Holds the readers' pages so they stay mapped while it sleeps on them; kept by
/// the thread between waits so that waiting allocates nothing.
#[derive(Default)]
pub(crate) struct WaitSet {
    words: Vec<sys::WaitWord>,
    pages: Vec<Arc<ControlMap>>,
}

impl WaitSet {
    /// Lets go of the pages once the wait is over (a reader that left is unmapped now, not at
    /// the next wait); keeps the room.
    pub(crate) fn clear(&mut self) {
        self.words.clear();
        self.pages.clear();
    }
}

fn pollin(fd: std::os::fd::RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// What the writer knows of one attached reader; its own memory, which no reader can reach.
struct Attached {
    pid: u32,
    uid: u32,
    session: u64,
    attached_ns: u64,
    socket: OwnedFd,
    /// Shared with the [`WaitSet`]s of writer threads sleeping on its `progress_seq`.
    page: Arc<ControlMap>,
    evicted: bool,
    evictions: u64,
    /// The reader said goodbye before its connection closed.
    said_bye: bool,
    /// Cursor seen at the last check, and since when it has not moved.
    cursor_seen: u64,
    progress_ns: u64,
    /// Since when the reader's pins have kept the same slots from the writer, as far as the
    /// checks saw, and which slots (a bit each).
    pins_in_the_way_since: Option<u64>,
    pins_in_the_way: [u64; MAX_PIN_WORDS],
}

impl Attached {
    /// The reader's cursor, clamped to what the writer published: a cursor past `head` is a
    /// reader that read everything.
    fn cursor(&self, head: u64) -> u64 {
        self.page.page().cursor.load(Ordering::SeqCst).min(head)
    }

    /// Whether it counts for backpressure (attached, not evicted, not closed).
    fn counts(&self) -> bool {
        !self.evicted && self.page.page().detaching.load(Ordering::SeqCst) == 0
    }
}

struct Pending {
    socket: OwnedFd,
    since: Instant,
}

struct Table {
    readers: Vec<Option<Attached>>,
    /// Bit `i` set while `readers[i]` is taken: the looks made for every frame (cursors, pins,
    /// sleepers) visit the attached readers only, not all 64 entries.
    taken: u64,
    pending: Vec<Pending>,
    events: Vec<ReaderEvent>,
    /// When the reader table in the segment file was last refreshed.
    mirrored: Instant,
}

impl Table {
    /// The attached readers (evicted and detaching ones included).
    fn attached(&self) -> impl Iterator<Item = &Attached> {
        let mut bits = self.taken;
        std::iter::from_fn(move || {
            let index = bits.trailing_zeros() as usize;
            bits &= bits.checked_sub(1)?;
            Some(index)
        })
        .filter_map(|index| self.readers[index].as_ref())
    }

    fn insert(&mut self, index: usize, reader: Attached) {
        self.readers[index] = Some(reader);
        self.taken |= 1 << index;
    }

    fn remove(&mut self, index: usize) -> Option<Attached> {
        self.taken &= !(1 << index);
        self.readers[index].take()
    }
}

/// The writer's reader table and the stream's socket, shared by the writer, its lenders and
/// its admission thread.
pub(crate) struct Registry {
    map: Arc<WriterMapping>,
    listener: OwnedFd,
    pub(crate) socket_path: PathBuf,
    table: Mutex<Table>,
    /// Bumped and woken when something a waiting writer thread waits for may have changed
    /// other than a reader's progress (a reader attached or left, a slot was given back, an
    /// interrupt): see [`Self::arm`].
    bell: AtomicU32,
    /// Ends the admission thread.
    stop: AtomicBool,
    stop_fd: OwnedFd,
}

impl Registry {
    /// Binds the stream's socket at `socket_path` with mode `perms` (connecting needs write
    /// permission on it, so `perms` decides who may attach), before the segment is visible.
    pub(crate) fn listen(socket_path: &std::path::Path, perms: u32) -> Result<OwnedFd, Error> {
        // A socket left at this name can only be one of this writer's session (a random
        // 64-bit id), by a process that died before removing it.
        if std::fs::symlink_metadata(socket_path).is_ok_and(|m| {
            use std::os::unix::fs::FileTypeExt;
            m.file_type().is_socket()
        }) {
            let _ = std::fs::remove_file(socket_path);
        }
        sock::listen(socket_path, perms)
            .map_err(|e| Error::io(format!("listen on {}", socket_path.display()), e))
    }

    pub(crate) fn new(
        map: Arc<WriterMapping>,
        listener: OwnedFd,
        socket_path: PathBuf,
    ) -> Result<Arc<Registry>, Error> {
        let max = map.geo.max_readers as usize;
        Ok(Arc::new(Registry {
            map,
            listener,
            socket_path,
            table: Mutex::new(Table {
                readers: (0..max).map(|_| None).collect(),
                taken: 0,
                pending: Vec::new(),
                events: Vec::new(),
                mirrored: Instant::now(),
            }),
            bell: AtomicU32::new(0),
            stop: AtomicBool::new(false),
            stop_fd: sys::eventfd().map_err(|e| Error::io("eventfd", e))?,
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes every writer thread waiting for room or readers.
    pub(crate) fn kick_space(&self) {
        self.bell.fetch_add(1, Ordering::SeqCst);
        sys::futex_wake_all(&self.bell);
    }

    /// Takes what a writer thread about to wait will sleep on: the bell and every attached
    /// reader's `progress_seq`, the reader with the smallest cursor first (the one a full
    /// ring waits for, and the only one a kernel without `futex_waitv` sleeps on). Call it
    /// before checking the condition waited for, with `writer_waiting` raised: a reader that
    /// changes the condition after the check bumps its word (it sees `writer_waiting`; SeqCst
    /// on both sides), so [`Self::sleep`] returns. A reader's connection hanging up reaches the
    /// sleeper through the admission thread, which frees the reader and rings the bell.
    pub(crate) fn arm(&self, set: &mut WaitSet) {
        set.clear();
        let head = self.map.header().head.load(Ordering::Relaxed);
        let mut slowest = None;
        for r in self.lock().attached() {
            let cursor = r.cursor(head);
            if r.counts() && slowest.is_none_or(|(_, c)| cursor < c) {
                slowest = Some((set.pages.len(), cursor));
            }
            let page = r.page.page();
            let word = sys::WaitWord::now(&page.progress_seq);
            page.progress_armed.store(word.value(), Ordering::SeqCst);
            set.words.push(word);
            set.pages.push(r.page.clone());
        }
        if let Some((i, _)) = slowest {
            set.words.swap(0, i);
        }
        set.words.push(sys::WaitWord::now(&self.bell));
    }

    /// Sleeps up to `timeout` unless a word of `set` changed since [`Self::arm`] took it, or
    /// changes meanwhile (see there). The caller re-checks its condition in every case.
    pub(crate) fn sleep(&self, set: &WaitSet, timeout: Duration) {
        sys::futex_wait_any(&set.words, timeout);
    }

    /// Runs the admission thread: it answers connecting readers and notices leaving ones at
    /// once, whatever the writer does (publishing, blocked, idle between frames).
    pub(crate) fn spawn_admission(self: &Arc<Self>) -> std::thread::JoinHandle<()> {
        let registry = self.clone();
        std::thread::Builder::new()
            .name("shmframe-admit".into())
            .spawn(move || {
                let mut fds = Vec::new();
                while !registry.stop.load(Ordering::Acquire) {
                    registry.wait_for_activity(&mut fds, TICK);
                    if registry.service() {
                        // A reader sends without pause: look again a little later, so that
                        // it costs the writer's threads no more than a re-check now and then.
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            })
            .expect("spawn the reader admission thread")
    }

    /// Stops the admission thread (joined by the caller) and removes the socket.
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        sys::eventfd_signal(&self.stop_fd);
        let _ = std::fs::remove_file(&self.socket_path);
    }

    /// Waits up to `timeout` until the listener or a connection has something, or `stop`.
    /// A hint only: `service` looks at every descriptor again.
    fn wait_for_activity(&self, fds: &mut Vec<libc::pollfd>, timeout: Duration) {
        fds.clear();
        fds.push(pollin(self.stop_fd.as_raw_fd()));
        fds.push(pollin(self.listener.as_raw_fd()));
        {
            let table = self.lock();
            fds.extend(table.pending.iter().map(|p| pollin(p.socket.as_raw_fd())));
            // Readers for their hang-up only (always reported): they send nothing else but
            // their goodbye, read when the connection closes.
            fds.extend(table.attached().map(|r| libc::pollfd {
                fd: r.socket.as_raw_fd(),
                events: 0,
                revents: 0,
            }));
        }
        // Descriptors may be closed by `service` in another thread meanwhile: the wait then
        // ends early or at the timeout, and `service` re-examines everything under the lock.
        sock::poll(fds, timeout);
    }

    /// Takes in new connections, answers hellos, drops silent connections, notices readers
    /// that left or sent a byte, and refreshes the reader table in the segment file. Never
    /// waits: every socket call is non-blocking and every loop is bounded. True if a reader
    /// had more messages queued than one look takes.
    pub(crate) fn service(&self) -> bool {
        let mut table = self.lock();
        let mut changed = false;
        let mut flooded = false;
        // Readers: bytes mean "look again"; end of file means gone.
        for index in 0..table.readers.len() {
            let Some(reader) = table.readers[index].as_mut() else {
                continue;
            };
            let mut gone = false;
            let mut buf = [0u8; 16];
            let mut taken = 0;
            while !gone {
                if taken == MAX_MESSAGES_PER_LOOK {
                    flooded = true;
                    break;
                }
                match sock::recv(reader.socket.as_fd(), &mut buf) {
                    Received::Message(n) => {
                        taken += 1;
                        changed = true;
                        reader.said_bye |= n >= 1 && buf[0] == MSG_BYE;
                    }
                    Received::Nothing => break,
                    Received::Closed => gone = true,
                }
            }
            if gone {
                let reader = table.remove(index).expect("checked above");
                table.events.push(ReaderEvent::Detached {
                    pid: reader.pid,
                    index: index as u32,
                    died: !reader.said_bye,
                });
                self.clear_mirror(index as u32);
                changed = true;
            }
        }
        // Connections that said nothing in time are dropped.
        table
            .pending
            .retain(|p| p.since.elapsed() < HANDSHAKE_TIMEOUT);
        changed |= self.answer_hellos(&mut table);
        // New connections, a bounded number per look.
        for _ in 0..MAX_PENDING {
            match sock::accept(self.listener.as_fd()) {
                Ok(Some(socket)) => {
                    if table.pending.len() >= MAX_PENDING {
                        table.pending.remove(0);
                    }
                    table.pending.push(Pending {
                        socket,
                        since: Instant::now(),
                    });
                }
                Ok(None) | Err(_) => break,
            }
        }
        // A new connection's hello may be there already: answered in this look, not the next.
        changed |= self.answer_hellos(&mut table);
        // At least once per tick of the admission thread (which looks at least every TICK),
        // whatever else calls this meanwhile.
        if changed || table.mirrored.elapsed() >= TICK / 2 {
            self.refresh_mirror(&mut table);
        }
        drop(table);
        if changed {
            self.kick_space();
        }
        flooded
    }

    /// Answers the connections that said something (the first message is the hello) and
    /// forgets those that closed. True if a reader attached.
    fn answer_hellos(&self, table: &mut Table) -> bool {
        let mut attached = false;
        let mut k = 0;
        while k < table.pending.len() {
            // One byte more than a hello: a longer message is not one.
            let mut buf = [0u8; HELLO_LEN + 1];
            match sock::recv(table.pending[k].socket.as_fd(), &mut buf) {
                Received::Nothing => k += 1,
                Received::Closed => {
                    table.pending.swap_remove(k);
                }
                Received::Message(n) => {
                    let pending = table.pending.swap_remove(k);
                    attached |= self.admit(table, pending.socket, &buf[..n]);
                }
            }
        }
        attached
    }

    /// Answers a hello: a table entry and a control page for a well-formed one, a refusal
    /// otherwise. True if a reader attached.
    fn admit(&self, table: &mut Table, socket: OwnedFd, hello: &[u8]) -> bool {
        let refuse = |status| {
            let reply = Reply {
                status,
                index: 0,
                page_len: 0,
                cursor: 0,
            };
            let _ = sock::send(socket.as_fd(), &reply.encode());
        };
        let header = self.map.header();
        let Some(hello) =
            Hello::decode(hello).filter(|h| h.writer_session == header.writer_session)
        else {
            refuse(reply_status::REFUSED);
            return false;
        };
        let Ok((pid, uid)) = sock::peer_cred(socket.as_fd()) else {
            refuse(reply_status::REFUSED);
            return false;
        };
        let Some(index) = table.readers.iter().position(Option::is_none) else {
            refuse(reply_status::TABLE_FULL);
            return false;
        };
        let page = match sock::sealed_memfd(CONTROL_PAGE_LEN)
            .and_then(|file| ControlMap::map(file, self.map.geo.pin_words))
        {
            Ok(page) => Arc::new(page),
            Err(_) => {
                refuse(reply_status::REFUSED);
                return false;
            }
        };
        let head = header.head.load(Ordering::SeqCst);
        let tail = crate::frame::oldest_held(&self.map, head);
        let cursor = if hello.oldest {
            tail
        } else {
            head.saturating_sub(1).max(tail)
        };
        let now = sys::monotonic_ns();
        let p = page.page();
        p.state.store(reader_state::ACTIVE, Ordering::Relaxed);
        p.cursor.store(cursor, Ordering::Relaxed);
        p.heartbeat_ns.store(now, Ordering::Relaxed);
        let reply = Reply {
            status: reply_status::OK,
            index: index as u32,
            page_len: CONTROL_PAGE_LEN as u32,
            cursor,
        };
        let reader = Attached {
            pid,
            uid,
            session: hello.session,
            attached_ns: now,
            socket,
            page,
            evicted: false,
            evictions: 0,
            said_bye: false,
            cursor_seen: cursor,
            progress_ns: now,
            pins_in_the_way_since: None,
            pins_in_the_way: [0; MAX_PIN_WORDS],
        };
        // Listed before it is answered: a reader that attached is in the table observers see.
        self.write_mirror_entry(index as u32, &reader, head);
        // SeqCst: the page's initial values are stored before the reader can see the page.
        std::sync::atomic::fence(Ordering::SeqCst);
        if sock::send_with_fd(
            reader.socket.as_fd(),
            &reply.encode(),
            reader.page._file.as_fd(),
        )
        .is_err()
        {
            self.clear_mirror(index as u32);
            return false;
        }
        table.insert(index, reader);
        table.events.push(ReaderEvent::Attached {
            pid,
            index: index as u32,
        });
        true
    }

    fn clear_mirror(&self, index: u32) {
        let m = self.map.mirror_entry(index);
        m.state.store(reader_state::FREE, Ordering::Relaxed);
        m.pid.store(0, Ordering::Release);
    }

    /// Copies what the writer knows of each reader into the segment file's reader table.
    fn refresh_mirror(&self, table: &mut Table) {
        table.mirrored = Instant::now();
        let head = self.map.header().head.load(Ordering::Acquire);
        for (index, reader) in table.readers.iter().enumerate() {
            let index = index as u32;
            let Some(r) = reader
                .as_ref()
                .filter(|r| r.page.page().detaching.load(Ordering::Relaxed) == 0)
            else {
                self.clear_mirror(index);
                continue;
            };
            self.write_mirror_entry(index, r, head);
        }
    }

    fn write_mirror_entry(&self, index: u32, r: &Attached, head: u64) {
        let m = self.map.mirror_entry(index);
        let p = r.page.page();
        let pinned: u32 = (0..self.map.geo.pin_words)
            .map(|w| r.page.pin_word(w).load(Ordering::Relaxed).count_ones())
            .sum();
        m.uid.store(r.uid, Ordering::Relaxed);
        let state = if r.evicted {
            reader_state::EVICTED
        } else {
            reader_state::ACTIVE
        };
        m.state.store(state, Ordering::Relaxed);
        m.pinned_slots
            .store(pinned.min(self.map.geo.slot_count), Ordering::Relaxed);
        m.session.store(r.session, Ordering::Relaxed);
        m.heartbeat_ns
            .store(p.heartbeat_ns.load(Ordering::Relaxed), Ordering::Relaxed);
        m.cursor.store(r.cursor(head), Ordering::Relaxed);
        m.frames_read
            .store(p.frames_read.load(Ordering::Relaxed), Ordering::Relaxed);
        m.frames_missed
            .store(p.frames_missed.load(Ordering::Relaxed), Ordering::Relaxed);
        m.attached_ns.store(r.attached_ns, Ordering::Relaxed);
        m.evictions.store(r.evictions, Ordering::Relaxed);
        m.pid.store(r.pid, Ordering::Release);
    }

    /// Brings the reader table in the segment file up to date now, for a snapshot of it.
    pub(crate) fn refresh(&self) {
        self.service();
        self.refresh_mirror(&mut self.lock());
    }

    pub(crate) fn take_events(&self) -> Vec<ReaderEvent> {
        std::mem::take(&mut self.lock().events)
    }

    /// Readers attached and not closed (evicted ones included: they still read).
    pub(crate) fn attached(&self) -> usize {
        self.lock()
            .attached()
            .filter(|r| r.page.page().detaching.load(Ordering::SeqCst) == 0)
            .count()
    }

    /// The smallest cursor among readers that count for backpressure, if any, not below
    /// `floor`. SeqCst pairs with the reader's cursor store and its load of `writer_waiting`.
    pub(crate) fn slowest_cursor(&self, head: u64, floor: u64) -> Option<u64> {
        self.lock()
            .attached()
            .filter(|r| r.counts())
            .map(|r| r.cursor(head).max(floor))
            .min()
    }

    /// Whether every attached reader has read up to `head` (or closed).
    pub(crate) fn all_read_up_to(&self, head: u64) -> bool {
        self.slowest_cursor(head, 0).is_none_or(|c| c >= head)
    }

    /// Every slot pinned by a reader whose pins count (not evicted), one bit per slot. SeqCst
    /// loads: the writer pairs them with its marking of a slot before it checks pins.
    pub(crate) fn pinned_mask(&self) -> [u64; MAX_PIN_WORDS] {
        let mut mask = [0u64; MAX_PIN_WORDS];
        let table = self.lock();
        for r in table.attached().filter(|r| !r.evicted) {
            for (w, bits) in mask
                .iter_mut()
                .enumerate()
                .take(self.map.geo.pin_words as usize)
            {
                *bits |= r.page.pin_word(w as u32).load(Ordering::SeqCst);
            }
        }
        // Readers weigh their own pins against everyone's (`Reader::may_pin`). Stored only
        // when it changed: this runs for every frame, and a store would take the cache line
        // from every reader that looks at it.
        for (w, bits) in mask
            .iter()
            .enumerate()
            .take(self.map.geo.pin_words as usize)
        {
            let union = self.map.pinned_union(w as u32);
            if union.load(Ordering::Relaxed) != *bits {
                union.store(*bits, Ordering::Release);
            }
        }
        mask
    }

    /// Whether a reader whose pins count (not evicted) pins `slot`: [`Self::pinned_mask`] for
    /// one slot (SeqCst loads, for the same pairing).
    pub(crate) fn slot_pinned(&self, slot: u32) -> bool {
        let (word, bit) = (slot / 64, 1u64 << (slot % 64));
        self.lock()
            .attached()
            .filter(|r| !r.evicted)
            .any(|r| r.page.pin_word(word).load(Ordering::SeqCst) & bit != 0)
    }

    /// Wakes the readers that sleep waiting for a frame. The writer stored `head` (SeqCst)
    /// before; a reader stores `sleeping` (SeqCst) before re-checking `head`: either it sees
    /// the new frame, or we see it sleeping and wake it. Clearing `sleeping` as we wake it
    /// spares the frames published before it runs a wake each: it sets it again before it
    /// sleeps again.
    pub(crate) fn wake_sleepers(&self) {
        for r in self.lock().attached() {
            let sleeping = &r.page.page().sleeping;
            if sleeping.load(Ordering::SeqCst) != 0 && sleeping.swap(0, Ordering::SeqCst) != 0 {
                r.page.wake();
            }
        }
    }

    /// Wakes every reader (the stream's state changed).
    pub(crate) fn wake_all(&self) {
        for r in self.lock().attached() {
            r.page.wake();
        }
    }

    /// Notices readers that left, then, when the writer is `held_up` (it cannot go on: it
    /// waits for room or a slot, or would drop the frame), evicts the readers that hold it up
    /// without advancing for longer than the reader timeout: those whose cursor keeps it from a
    /// frame they have not read (not under drop-oldest, which overwrites instead), and those
    /// whose pins keep it from a slot it could otherwise take (`takeable`), also when they
    /// say they are closing (their pins count until released). Where the writer overwrites
    /// unread frames, a reader pinning more than
    /// [`crate::layout::Geometry::pins_a_reader_may_hold`] is evicted at once when its pins
    /// are in the way. An evicted reader's cursor and pins no longer count until it rejoins
    /// (acknowledges the eviction) holding no more than that.
    pub(crate) fn check_readers(
        &self,
        held_up: bool,
        reader_timeout_ns: u64,
        takeable: impl Fn(usize) -> bool,
    ) {
        self.service();
        let now = sys::monotonic_ns();
        let header = self.map.header();
        let head = header.head.load(Ordering::Relaxed);
        let depth = self.map.geo.depth as u64;
        let floor = header.clear_floor.load(Ordering::Relaxed);
        let slot_count = self.map.geo.slot_count as usize;
        let pins_a_reader_may_hold = self.map.geo.pins_a_reader_may_hold();
        let overwrites_unread_frames = self.map.geo.overwrites_unread_frames();
        let mut table = self.lock();
        let Table {
            readers, events, ..
        } = &mut *table;
        for (index, reader) in readers.iter_mut().enumerate() {
            let Some(r) = reader.as_mut() else {
                continue;
            };
            let page = r.page.page();
            // One look at each pin word: the reader may change them at any time.
            let mut pinned_slots = 0u32;
            let mut in_the_way = [0u64; MAX_PIN_WORDS];
            for (w, in_the_way) in in_the_way
                .iter_mut()
                .enumerate()
                .take(self.map.geo.pin_words as usize)
            {
                let mut bits = r.page.pin_word(w as u32).load(Ordering::SeqCst);
                while bits != 0 {
                    let bit = bits.trailing_zeros();
                    bits &= bits - 1;
                    let slot = w * 64 + bit as usize;
                    if slot < slot_count {
                        pinned_slots += 1;
                        if takeable(slot) {
                            *in_the_way |= 1 << bit;
                        }
                    }
                }
            }
            let pins_in_the_way = in_the_way.iter().any(|&bits| bits != 0);
            let pins_more_than_given = pinned_slots > pins_a_reader_may_hold;
            if r.evicted
                && page.rejoined.load(Ordering::Acquire) >= r.evictions
                && !pins_more_than_given
            {
                // It skipped to the oldest frame held: it counts again from where it is.
                r.evicted = false;
                page.state.store(reader_state::ACTIVE, Ordering::Release);
                r.progress_ns = now;
            }
            let cursor = r.cursor(head);
            if cursor != r.cursor_seen {
                r.cursor_seen = cursor;
                r.progress_ns = now;
            }
            // The stall is timed on the same slots: a reader whose pins move on (the last
            // buffer a sink keeps, replaced by the next) is not holding the writer, however
            // often some pin of it is in the way when the writer looks.
            if in_the_way != r.pins_in_the_way {
                r.pins_in_the_way = in_the_way;
                r.pins_in_the_way_since = None;
            }
            r.pins_in_the_way_since =
                pins_in_the_way.then(|| r.pins_in_the_way_since.unwrap_or(now));
            if !held_up || r.evicted {
                continue;
            }
            let timed_out = |since: u64| now.saturating_sub(since) > reader_timeout_ns;
            let behind = r.counts()
                && !overwrites_unread_frames
                && head >= depth
                && cursor.max(floor) <= head - depth;
            let stalled_behind = behind && timed_out(r.progress_ns);
            let stalled_pinning = r.pins_in_the_way_since.is_some_and(timed_out)
                || (pins_in_the_way && pins_more_than_given && overwrites_unread_frames);
            if stalled_behind || stalled_pinning {
                r.evicted = true;
                r.evictions += 1;
                page.evictions.store(r.evictions, Ordering::Relaxed);
                page.state.store(reader_state::EVICTED, Ordering::Release);
                header.readers_evicted.fetch_add(1, Ordering::Relaxed);
                events.push(ReaderEvent::Evicted {
                    pid: r.pid,
                    index: index as u32,
                });
            }
        }
        self.refresh_mirror(&mut table);
    }

    /// The writer starts waiting at `now`: no reader has stalled it for longer than that.
    pub(crate) fn hold_up_starts(&self, now: u64) {
        for r in self.lock().readers.iter_mut().flatten() {
            r.progress_ns = r.progress_ns.max(now);
        }
    }

    /// Closes every reader's connection (the writer is closing): readers see it hang up.
    pub(crate) fn disconnect_all(&self) {
        let mut table = self.lock();
        table.pending.clear();
        for index in 0..table.readers.len() {
            if table.remove(index).is_some() {
                self.clear_mirror(index as u32);
            }
        }
    }
}

impl Wake for Registry {
    fn wake(&self) {
        self.kick_space();
    }
}

/// A reader's connection and control page, shared by the `Reader` and every frame it pinned:
/// the connection (and so the pins the writer respects) lives until the last of them is
/// dropped, so a buffer that outlives its reader is never overwritten under it.
pub(crate) struct ReaderLease {
    pub(crate) map: Arc<Mapping>,
    pub(crate) control: ControlMap,
    socket: OwnedFd,
    /// Per-slot pin counts; the shared bit is set while a count is non-zero.
    counts: Vec<AtomicU32>,
    pub(crate) held: AtomicU32,
    /// One per slot, made once: what a raw pin token points to (see [`crate::PinnedFrame::into_raw`]),
    /// so handing a pin to C code allocates nothing per frame.
    pub(crate) records: Box<[PinRecord]>,
}

/// The target of a raw pin token: which lease and which slot to release.
pub(crate) struct PinRecord {
    /// The lease this record lives in (the value `Arc::into_raw` returns for it).
    pub(crate) lease: *const ReaderLease,
    pub(crate) slot: u32,
}

// SAFETY: `lease` is only dereferenced by `PinnedFrame::release_raw`, which owns a strong
// reference to that lease (leaked by `into_raw`), from any thread: the lease is Send + Sync.
unsafe impl Send for PinRecord {}
// SAFETY: as above; a shared &PinRecord only reads plain fields.
unsafe impl Sync for PinRecord {}

impl ReaderLease {
    pub(crate) fn new(map: Arc<Mapping>, control: ControlMap, socket: OwnedFd) -> Arc<ReaderLease> {
        let slot_count = map.geo.slot_count;
        Arc::new_cyclic(|weak| ReaderLease {
            counts: (0..slot_count).map(|_| AtomicU32::new(0)).collect(),
            held: AtomicU32::new(0),
            records: (0..slot_count)
                .map(|slot| PinRecord {
                    lease: weak.as_ptr(),
                    slot,
                })
                .collect(),
            map,
            control,
            socket,
        })
    }

    pub(crate) fn page(&self) -> &ControlPage {
        self.control.page()
    }

    /// Tells the writer's waiting threads, if any, that this reader moved on: they sleep on
    /// its `progress_seq` (see [`Registry::arm`]).
    pub(crate) fn nudge_writer(&self) {
        // SeqCst pairs with the writer's increment of writer_waiting before it takes the word
        // and re-checks: either it sees what changed, or we see it waiting and wake it.
        // A wake since the waiting thread last took the word ends its sleep already: one per
        // sleep, however many frames this reader reads before the thread runs.
        let page = self.page();
        if self.map.header().writer_waiting.load(Ordering::SeqCst) != 0
            && page.progress_armed.load(Ordering::SeqCst)
                == page.progress_seq.load(Ordering::SeqCst)
        {
            page.progress_seq.fetch_add(1, Ordering::SeqCst);
            sys::futex_wake_all(&page.progress_seq);
        }
    }

    pub(crate) fn add(&self, slot: u32) {
        self.held.fetch_add(1, Ordering::SeqCst);
        if self.counts[slot as usize].fetch_add(1, Ordering::SeqCst) == 0 {
            self.control
                .pin_word(slot / 64)
                .fetch_or(1 << (slot % 64), Ordering::SeqCst);
        }
    }

    pub(crate) fn remove(&self, slot: u32) {
        self.held.fetch_sub(1, Ordering::SeqCst);
        if self.counts[slot as usize].fetch_sub(1, Ordering::SeqCst) == 1 {
            self.control
                .pin_word(slot / 64)
                .fetch_and(!(1 << (slot % 64)), Ordering::SeqCst);
            self.nudge_writer();
        }
    }
}

impl Wake for ReaderLease {
    /// The reader's own interrupt: wakes its wait for a frame.
    fn wake(&self) {
        self.control.wake();
    }
}

impl Drop for ReaderLease {
    /// Leaves the table: the writer frees the entry and its pins when the connection closes.
    fn drop(&mut self) {
        for w in 0..self.map.geo.pin_words {
            self.control.pin_word(w).store(0, Ordering::Relaxed);
        }
        let _ = sock::send(self.socket.as_fd(), &[MSG_BYE]);
    }
}

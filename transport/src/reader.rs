//! The reading side: any number per segment, each with its own cursor. A reader maps the
//! segment read-only and attaches through the writer's socket, which hands it its control page
//! (see `registry`); it writes nothing else.

use crate::caps;
use crate::error::Error;
use crate::frame::{
    FrameInfo, SlotView, TryRead, checked_head, locate, oldest_held, read_held, try_read,
};
use crate::layout::*;
use crate::observer::SegmentInfo;
use crate::registry::{ControlMap, PinRecord, ReaderLease};
use crate::segment::{self, Mapping};
use crate::sock;
use crate::sys;
use crate::types::{Layout, StartPosition, StreamState};
use crate::wait::Interrupt;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};
use std::time::{Duration, Instant};

/// Longest single sleep while waiting for a frame: the writer's liveness is re-checked at
/// least this often, and the heartbeat refreshed.
const FRAME_WAIT_SLICE: Duration = Duration::from_millis(100);

/// How long a reader waits for its writer to answer its hello: the writer answers from a
/// thread of its own within milliseconds; this bounds a writer that hangs.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(5);

/// Default of [`ReaderOptions::spin`]: a few frames' time of a small-frame stream going as fast
/// as it can (one frame every 5-10 µs), far below any paced stream's frame interval.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(50);

/// How long a poll for the head spins on the CPU before it yields the CPU between checks, so
/// that a long poll leaves a busy core to threads that have work (the writer among them).
const SPIN_BEFORE_YIELD: Duration = Duration::from_micros(20);

#[derive(Clone, Debug)]
pub struct ReaderOptions {
    pub start: StartPosition,
    /// The user the writer must run as (the owner of the segment file), or `None` for whoever
    /// the segment's permissions let this process read: a reader that may read other users'
    /// segments (root) then does not silently follow another user's stream.
    pub writer_uid: Option<u32>,
    /// How long the reader polls for the next frame before it sleeps, when its last wait for a
    /// frame was at least this short (frames are coming close together). A reader that polls
    /// is awake when the frame comes, so the writer needn't wake it. A paced stream's reader
    /// waits longer than this between frames and never polls. Zero: never poll.
    pub spin: Duration,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        ReaderOptions {
            start: StartPosition::default(),
            writer_uid: None,
            spin: DEFAULT_SPIN,
        }
    }
}

/// The result of waiting for the next frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadResult {
    Frame(FrameInfo),
    /// The writer ended the stream and every frame was read.
    Eos,
    /// The writer closed the segment or died; open the name again to follow a new writer.
    WriterGone {
        clean: bool,
    },
    Timeout,
}

pub struct Reader {
    map: Arc<Mapping>,
    session: u64,
    cursor: u64,
    frames_read: u64,
    frames_missed: u64,
    missed_since_last: u64,
    interrupt: Interrupt,
    lease: Arc<ReaderLease>,
    last_liveness_check: Instant,
    spin: Duration,
    /// How long the last wait for a frame lasted (zero: the frame was already there).
    last_wait: Duration,
}

impl Reader {
    /// Attaches to the segment named `name`.
    pub fn open(name: &str, opts: &ReaderOptions) -> Result<Reader, Error> {
        Self::open_with_interrupt(name, opts, Interrupt::new())
    }

    pub fn open_with_interrupt(
        name: &str,
        opts: &ReaderOptions,
        interrupt: Interrupt,
    ) -> Result<Reader, Error> {
        let map = Arc::new(segment::open(name, true)?);
        if let Some(expected) = opts.writer_uid {
            let found = map.owner_uid();
            if found != expected {
                return Err(Error::WrongWriter {
                    path: map.path.display().to_string(),
                    expected,
                    found,
                });
            }
        }
        // Checked before attaching too, so a corrupt segment costs the writer nothing.
        checked_head(&map)?;
        let session = sys::random_u64();
        let (socket, control, reply) = attach(&map, name, opts, session, &interrupt)?;
        let head = checked_head(&map)?;
        let cursor = reply.cursor.min(head);
        let lease = ReaderLease::new(map.clone(), control, socket);
        interrupt.set_target(Some(lease.clone()));
        Ok(Reader {
            lease,
            map,
            session,
            cursor,
            frames_read: 0,
            frames_missed: 0,
            missed_since_last: 0,
            interrupt,
            last_liveness_check: Instant::now(),
            spin: opts.spin,
            last_wait: Duration::MAX,
        })
    }

    pub fn interrupt_handle(&self) -> Interrupt {
        self.interrupt.clone()
    }

    /// This reader's random session id (distinguishes it from an earlier reader in the same
    /// table entry).
    pub fn session(&self) -> u64 {
        self.session
    }

    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    pub fn frames_read(&self) -> u64 {
        self.frames_read
    }

    pub fn frames_missed(&self) -> u64 {
        self.frames_missed
    }

    /// How many times the writer evicted this reader for stalling it.
    pub fn evictions(&self) -> u64 {
        self.entry().evictions.load(Ordering::Relaxed)
    }

    pub fn writer_pid(&self) -> u32 {
        self.map.header().writer_pid
    }

    pub fn writer_session(&self) -> u64 {
        self.map.header().writer_session
    }

    /// The writer process's start time (with its pid, tells a reused pid from the same process).
    pub fn writer_start_ticks(&self) -> u64 {
        self.map.header().writer_start_ticks
    }

    /// The user the writer runs as (the owner of the segment file), so that a reader allowed
    /// to read another user's segment (root, or through `perms`) can tell whose frames they are.
    pub fn writer_uid(&self) -> u32 {
        self.map.owner_uid()
    }

    pub fn writer_alive(&self) -> bool {
        self.map.writer_alive()
    }

    /// Frames published so far: the number of the next frame.
    pub fn head(&self) -> u64 {
        self.map.header().head.load(Ordering::Acquire)
    }

    pub fn layout(&self) -> Layout {
        self.map.geo.layout
    }

    pub fn geometry(&self) -> &crate::layout::Geometry {
        &self.map.geo
    }

    pub fn stream_state(&self) -> StreamState {
        self.map.stream_state()
    }

    pub(crate) fn file_id(&self) -> (u64, u64) {
        self.map.file_id
    }

    /// The writer's current caps generation (0: no caps announced yet).
    pub fn current_caps_gen(&self) -> u64 {
        self.map.header().caps_gen.load(Ordering::Acquire)
    }

    /// The caps string of generation `gen`, if still held in the header's caps history.
    pub fn caps(&self, gen_: u64) -> Result<Option<String>, Error> {
        caps::read_caps(&self.map, gen_)
    }

    pub fn info(&self) -> SegmentInfo {
        self.map.info()
    }

    /// This reader's control page.
    fn entry(&self) -> &ControlPage {
        self.lease.page()
    }

    fn skip_to(&mut self, target: u64) {
        if target > self.cursor {
            // Saturating: `target` derives from shared memory a hostile writer controls.
            let n = target - self.cursor;
            self.frames_missed = self.frames_missed.saturating_add(n);
            self.missed_since_last = self.missed_since_last.saturating_add(n);
            self.cursor = target;
        }
    }

    fn publish_progress(&self) {
        let e = self.entry();
        e.frames_read.store(self.frames_read, Ordering::Relaxed);
        e.frames_missed.store(self.frames_missed, Ordering::Relaxed);
        e.heartbeat_ns.store(sys::monotonic_ns(), Ordering::Relaxed);
        // SeqCst pairs with the writer's SeqCst store of writer_waiting and cursor loads.
        e.cursor.store(self.cursor, Ordering::SeqCst);
        self.lease.nudge_writer();
    }

    /// An evicted reader rejoins at the oldest frame still held, counting what it lost, and
    /// tells the writer so: the writer counts it again once it sees the acknowledgement.
    fn rejoin_if_evicted(&mut self) -> Result<(), Error> {
        let lease = self.lease.clone();
        let page = lease.page();
        let evictions = page.evictions.load(Ordering::Acquire);
        if page.state.load(Ordering::Acquire) == reader_state::EVICTED
            && evictions > page.rejoined.load(Ordering::Relaxed)
        {
            let head = checked_head(&self.map)?;
            self.skip_to(oldest_held(&self.map, head));
            page.cursor.store(self.cursor, Ordering::SeqCst);
            page.rejoined.store(evictions, Ordering::Release);
            lease.nudge_writer();
        }
        Ok(())
    }

    /// Waits up to `timeout` for the next frame and copies it out through `copy`, which is
    /// called with the frame's metadata and a view of its slot; `copy` may be called more than
    /// once if the writer overwrote the frame meanwhile (the stale copy is discarded).
    ///
    /// Where the writer overwrites frames readers have not read (drop-oldest, double), the
    /// frame is pinned while it is copied when a pin is affordable ([`may_pin_to_copy`]):
    /// otherwise a reader that copies a frame more slowly than the writer writes one, reading
    /// in order, would start each copy on the oldest frame, the very one the writer overwrites
    /// next, and discard nearly every copy. Under block and drop-newest the writer leaves
    /// unread frames alone, so the frame at the cursor is never overwritten and nothing is
    /// pinned.
    pub fn read_next(
        &mut self,
        timeout: Duration,
        mut copy: impl FnMut(&FrameInfo, &SlotView),
    ) -> Result<ReadResult, Error> {
        let lease = self.lease.clone();
        let (result, _) = self.next_with(timeout, |map, n| {
            if map.geo.overwrites_unread_frames() && may_pin_to_copy(&lease) {
                let Some(pinned) = ReaderLease::pin(&lease, n)? else {
                    return Ok(None);
                };
                copy(&pinned.info, &pinned.view());
                // Evicted meanwhile (the pin no longer honoured) and overwritten: discarded.
                fence(Ordering::Acquire);
                return Ok(pinned.intact().then_some((pinned.info, ())));
            }
            Ok(match try_read(map, n, &mut copy)? {
                TryRead::Got(info) => Some((info, ())),
                TryRead::Gone => None,
            })
        })?;
        Ok(result)
    }

    /// Like [`Reader::read_next`], but instead of copying, pins the frame in place and stores
    /// it in `out` (zero-copy). The frame's slot stays untouched until the pin is dropped.
    pub fn pin_next(
        &mut self,
        timeout: Duration,
        out: &mut Option<PinnedFrame>,
    ) -> Result<ReadResult, Error> {
        let lease = self.lease.clone();
        let (result, pinned) = self.next_with(timeout, |_, n| {
            Ok(ReaderLease::pin(&lease, n)?.map(|p| (p.info, p)))
        })?;
        *out = pinned;
        Ok(result)
    }

    /// The read loop shared by copying and pinning: `take` tries to obtain frame `n` and
    /// returns None if the writer overwrote it.
    fn next_with<T>(
        &mut self,
        timeout: Duration,
        mut take: impl FnMut(&Mapping, u64) -> Result<Option<(FrameInfo, T)>, Error>,
    ) -> Result<(ReadResult, Option<T>), Error> {
        let deadline = Instant::now() + timeout;
        let mut waiting_since: Option<Instant> = None;
        loop {
            if self.interrupt.is_set() {
                return Err(Error::Interrupted);
            }
            self.rejoin_if_evicted()?;
            let head = checked_head(&self.map)?;
            let mut tail = oldest_held(&self.map, head);
            if self.map.geo.layout == Layout::Double && head > 0 {
                // Latest-frame semantics: always the newest complete frame.
                tail = tail.max(head - 1);
            }
            self.skip_to(tail);
            if self.cursor < head {
                match take(&self.map, self.cursor)? {
                    Some((mut info, taken)) => {
                        info.missed_before = self.missed_since_last;
                        self.missed_since_last = 0;
                        self.frames_read += 1;
                        self.cursor += 1;
                        self.last_wait = waiting_since.map_or(Duration::ZERO, |t| t.elapsed());
                        self.publish_progress();
                        return Ok((ReadResult::Frame(info), Some(taken)));
                    }
                    None => {
                        self.skip_to(self.cursor + 1);
                        continue;
                    }
                }
            }
            // Everything written so far has been read.
            self.publish_progress();
            let end = match self.map.stream_state() {
                StreamState::Eos => Some(ReadResult::Eos),
                StreamState::Closed => Some(ReadResult::WriterGone { clean: true }),
                _ if self.last_liveness_check.elapsed() >= FRAME_WAIT_SLICE => {
                    self.last_liveness_check = Instant::now();
                    (!self.map.writer_alive()).then_some(ReadResult::WriterGone { clean: false })
                }
                _ => None,
            };
            if let Some(end) = end {
                // The writer changes the state (or dies) only after its last head store: if
                // head moved since we loaded it, frames published just before the end are
                // still to be read.
                if self.map.header().head.load(Ordering::SeqCst) != head {
                    continue;
                }
                return Ok((end, None));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok((ReadResult::Timeout, None));
            }
            // Frames coming close together: the next is likely due within the spin, and found
            // by polling, the writer has no sleeper to wake.
            let first_wait = waiting_since.is_none();
            waiting_since.get_or_insert(now);
            if first_wait
                && self.last_wait <= self.spin
                && self.poll_head(head, self.spin.min(deadline - now))
            {
                continue;
            }
            self.wait_for_frame(head, (deadline - now).min(FRAME_WAIT_SLICE));
        }
    }

    /// Polls the header for up to `limit` until the head moves past `seen_head` or something
    /// else calls for the read loop's attention (the stream's state changed, an interrupt);
    /// true if it did. Readers only read here: a hostile writer can make a reader poll for as
    /// long as the reader chose and no longer.
    fn poll_head(&self, seen_head: u64, limit: Duration) -> bool {
        let h = self.map.header();
        let started = Instant::now();
        let mut polls = 0u32;
        loop {
            // Acquire: the frame the new head counts is complete for us (the read loop
            // re-loads the head with its own ordering anyway).
            if h.head.load(Ordering::Acquire) != seen_head || self.interrupt.is_set() {
                return true;
            }
            polls = polls.wrapping_add(1);
            // Reading the clock costs more than a load: look at it every few polls.
            if polls.is_multiple_of(64) {
                let state = h.stream_state.load(Ordering::Acquire);
                if !matches!(state, stream_state::STARTING | stream_state::RUNNING) {
                    return true;
                }
                let spent = started.elapsed();
                if spent >= limit {
                    return false;
                }
                if spent >= SPIN_BEFORE_YIELD {
                    std::thread::yield_now();
                }
            }
            std::hint::spin_loop();
        }
    }

    fn wait_for_frame(&self, seen_head: u64, max: Duration) {
        let page = self.lease.page();
        let h = self.map.header();
        let seq = page.wake_seq.load(Ordering::SeqCst);
        page.sleeping.store(1, Ordering::SeqCst);
        // Re-check after announcing ourselves: the writer's SeqCst head store and its load of
        // `sleeping` order against this, so a frame published now is never slept through.
        let state = h.stream_state.load(Ordering::SeqCst);
        let live = matches!(state, stream_state::STARTING | stream_state::RUNNING);
        if live && h.head.load(Ordering::SeqCst) == seen_head && !self.interrupt.is_set() {
            sys::futex_wait(&page.wake_seq, seq, max);
        }
        page.sleeping.store(0, Ordering::Relaxed);
        page.heartbeat_ns
            .store(sys::monotonic_ns(), Ordering::Relaxed);
    }

    /// Copies frame `n` if the segment still holds it; the cursor does not move.
    pub fn read_frame(
        &mut self,
        n: u64,
        copy: impl FnMut(&FrameInfo, &SlotView),
    ) -> Result<Option<FrameInfo>, Error> {
        read_held(&self.map, n, copy)
    }

    /// Pins frame `n` in place (zero-copy): the writer will not reuse its slot until the
    /// returned [`PinnedFrame`] is dropped. `Ok(None)` if the frame is no longer held.
    pub fn pin(&self, n: u64) -> Result<Option<PinnedFrame>, Error> {
        ReaderLease::pin(&self.lease, n)
    }

    /// Frames this reader currently holds pinned (zero-copy buffers not yet released).
    pub fn pins_held(&self) -> u32 {
        self.lease.held.load(Ordering::SeqCst)
    }

    /// How many frames the readers together may keep pinned without ever holding up the
    /// writer: [`crate::layout::Geometry::pin_budget`]; [`Self::may_pin`] keeps to it.
    pub fn pin_budget(&self) -> u32 {
        self.map.geo.pin_budget()
    }

    /// Whether this reader may pin one more frame. Three bounds, none of which readers that
    /// release their frames promptly ever reach: this reader holds fewer than
    /// [`Self::pin_budget`] frames (a downstream that queues buffers gets copies beyond that);
    /// the slots pinned by all readers together (a slot pinned by several counts once) that
    /// hold frames the ring has moved past stay below the same budget (a pin on a frame still
    /// in the ring costs the writer nothing yet; one on an older frame holds a slot it would
    /// reuse), so that a few readers keeping their share (stopped processes) cannot pin every
    /// slot between them; and one slot at least stays unpinned, since the writer comes round
    /// to every pinned slot and under drop-oldest must then overwrite another.
    pub fn may_pin(&self) -> bool {
        let census = PinCensus::of(&self.lease);
        self.pins_held() < self.pin_budget()
            && census.held_back < self.pin_budget()
            && census.leaves_a_slot_unpinned()
    }
}

/// The slots pinned by all readers together, as the writer last summed them up with this
/// reader's own pins as of now.
struct PinCensus {
    /// Pinned slots whose frames the ring has moved past (slots the writer would reuse).
    held_back: u32,
    pinned_slots: u32,
    slot_count: u32,
}

impl PinCensus {
    fn of(lease: &ReaderLease) -> PinCensus {
        let map = &lease.map;
        let geo = &map.geo;
        let keep_from = geo.keep_from(map.header().head.load(Ordering::Acquire));
        let (mut held_back, mut pinned_slots) = (0, 0);
        for w in 0..geo.pin_words {
            // The writer's union of every reader's pins, with ours as of now.
            let mut pinned = map.pinned_union(w).load(Ordering::Acquire)
                | lease.control.pin_word(w).load(Ordering::Acquire);
            pinned_slots += pinned.count_ones();
            while pinned != 0 {
                let slot = w * 64 + pinned.trailing_zeros();
                pinned &= pinned - 1;
                // A pinned slot's descriptor is stable (the writer does not touch it).
                if slot < geo.slot_count && map.desc(slot).frame.load(Ordering::Acquire) < keep_from
                {
                    held_back += 1;
                }
            }
        }
        PinCensus {
            held_back,
            pinned_slots,
            slot_count: geo.slot_count,
        }
    }

    /// However new the pinned frames are now, the writer comes round to their slots; under
    /// drop-oldest (and double) it then overwrites the oldest unpinned frame instead, so at
    /// least one slot must stay unpinned after one more pin.
    fn leaves_a_slot_unpinned(&self) -> bool {
        self.pinned_slots + 1 < self.slot_count
    }
}

/// Whether a copy may pin its frame while it copies (see [`Reader::read_next`]): a pin that
/// lasts one copy holds nothing back for long, so only the bound every pin keeps applies.
fn may_pin_to_copy(lease: &ReaderLease) -> bool {
    PinCensus::of(lease).leaves_a_slot_unpinned()
}

/// Connects to the writer of `map` and says hello: the writer answers with this reader's
/// table entry, its first frame and its control page. Every wait is bounded, and ends early
/// with `Error::Interrupted` when `interrupt` is set.
fn attach(
    map: &Mapping,
    name: &str,
    opts: &ReaderOptions,
    session: u64,
    interrupt: &Interrupt,
) -> Result<(OwnedFd, ControlMap, Reply), Error> {
    let dir = map.path.parent().unwrap_or(std::path::Path::new("/"));
    let path = socket_path(dir, map.header().writer_session);
    let shown = path.display().to_string();
    let gone = || Error::WriterGone {
        name: name.to_string(),
    };
    let deadline = Instant::now() + HANDSHAKE_LIMIT;
    // A writer drops a connection that took longer than its handshake timeout to say hello (a
    // reader descheduled between its connect and its hello, on a loaded machine): connect
    // again, within the same limit.
    loop {
        let socket = loop {
            match sock::connect(&path) {
                Ok(socket) => break socket,
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    // The segment is readable (observers may look), its socket not writable.
                    return Err(Error::PermissionDenied {
                        path: map.path.display().to_string(),
                        detail: format!("connecting to its socket {shown}: {e}"),
                    });
                }
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EAGAIN | libc::ENOENT | libc::ECONNREFUSED)
                    ) =>
                {
                    if !map.writer_alive() || map.stream_state() == StreamState::Closed {
                        return Err(gone());
                    }
                    if Instant::now() >= deadline {
                        return Err(Error::io(format!("connect to {shown}"), e));
                    }
                    if !interrupt.sleep(Duration::from_millis(2)) {
                        return Err(Error::Interrupted);
                    }
                }
                Err(e) => return Err(Error::io(format!("connect to {shown}"), e)),
            }
        };
        // Only the writer that owns the segment file may answer for it.
        let (_, peer_uid) = sock::peer_cred(socket.as_fd())
            .map_err(|e| Error::io(format!("SO_PEERCRED on {shown}"), e))?;
        let owner = map.owner_uid();
        if peer_uid != owner {
            return Err(Error::io(
                format!("attach to {shown}"),
                std::io::Error::other(format!(
                    "the socket is served by uid {peer_uid}, but the segment belongs to uid {owner}: \
                 refusing a stream another user may have put in its way"
                )),
            ));
        }
        let hello = Hello {
            pid: std::process::id(),
            oldest: opts.start == StartPosition::Oldest,
            session,
            writer_session: map.header().writer_session,
        };
        if !sock::send(socket.as_fd(), &hello.encode())
            .map_err(|e| Error::io(format!("send to {shown}"), e))?
        {
            return Err(Error::io(
                format!("send to {shown}"),
                std::io::Error::from(std::io::ErrorKind::WouldBlock),
            ));
        }
        let mut buf = [0u8; REPLY_LEN + 1];
        let left = deadline.saturating_duration_since(Instant::now());
        // Got before the flag is checked (see `Interrupt::wake_fd`): an interrupt from now on
        // makes the descriptor readable and ends the wait.
        let wake = interrupt.wake_fd();
        if interrupt.is_set() {
            return Err(Error::Interrupted);
        }
        let (n, passed) =
            sock::recv_with_fd(socket.as_fd(), &mut buf, left, wake).map_err(|e| {
                if e.kind() == std::io::ErrorKind::Interrupted {
                    return Error::Interrupted;
                }
                Error::io(
                    format!("wait for the writer's answer on {shown} (it hangs or is overloaded)"),
                    e,
                )
            })?;
        let Some(reply) = Reply::decode(&buf[..n]) else {
            if n == 0 && (!map.writer_alive() || map.stream_state() == StreamState::Closed) {
                return Err(gone());
            }
            if n == 0 && Instant::now() < deadline {
                continue;
            }
            return Err(Error::io(
                format!("attach to {shown}"),
                std::io::Error::other(format!("the writer's answer is malformed ({n} bytes)")),
            ));
        };
        match reply.status {
            reply_status::OK => {}
            reply_status::TABLE_FULL => {
                return Err(Error::TooManyReaders {
                    name: name.to_string(),
                    max: map.geo.max_readers,
                });
            }
            status => {
                return Err(Error::io(
                    format!("attach to {shown}"),
                    std::io::Error::other(format!(
                        "the writer refused this reader (status {status})"
                    )),
                ));
            }
        }
        let malformed = |what: &str| {
            Error::io(
                format!("attach to {shown}"),
                std::io::Error::other(format!("the writer's answer is malformed: {what}")),
            )
        };
        if reply.index >= map.geo.max_readers || reply.page_len as u64 != CONTROL_PAGE_LEN {
            return Err(malformed("entry or page size out of range"));
        }
        let page = passed.ok_or_else(|| malformed("no control page"))?;
        let control = ControlMap::map(std::fs::File::from(page), map.geo.pin_words)
            .map_err(|e| Error::io(format!("map the control page from {shown}"), e))?;
        return Ok((socket, control, reply));
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.interrupt.set_target(None);
        // Stop counting for backpressure now; the entry itself is freed by the writer once the
        // lease (and with it the connection) is gone, when no pinned frame refers to it any
        // more (at once if there is none).
        self.entry().detaching.store(1, Ordering::SeqCst);
        self.lease.nudge_writer();
    }
}

/// Pinning stays with the reader: it makes the [`PinnedFrame`]s that keep a lease alive.
impl ReaderLease {
    fn pin(lease: &Arc<ReaderLease>, n: u64) -> Result<Option<PinnedFrame>, Error> {
        let Some((slot, s1, info)) = locate(&lease.map, n)? else {
            return Ok(None);
        };
        lease.add(slot);
        // SeqCst load after our SeqCst pin: pairs with the writer marking the slot (SeqCst)
        // before checking pins.
        if lease.map.desc(slot).seq.load(Ordering::SeqCst) != s1 {
            lease.remove(slot);
            return Ok(None);
        }
        Ok(Some(PinnedFrame {
            lease: lease.clone(),
            slot,
            seq: s1,
            info,
        }))
    }
}

/// A frame held in place in shared memory; the writer leaves its slot alone until this is
/// dropped. Can be sent to and dropped on any thread, also after its `Reader` is gone.
pub struct PinnedFrame {
    lease: Arc<ReaderLease>,
    slot: u32,
    /// The slot's sequence word when it was pinned.
    seq: u64,
    info: FrameInfo,
}

impl PinnedFrame {
    pub fn info(&self) -> &FrameInfo {
        &self.info
    }

    /// Whether the slot still holds this frame as it was pinned. False only once the writer
    /// evicted the reader for holding it up for longer than the reader timeout (from then on
    /// it no longer honours the reader's pins) and wrote the slot again: the bytes are then no
    /// longer this frame's, and must not be handed on as if they were.
    pub fn intact(&self) -> bool {
        // Acquire pairs with the writer's Release of the sequence word when it rewrote it.
        self.lease.map.desc(self.slot).seq.load(Ordering::Acquire) == self.seq
    }

    /// The frame's bytes as a [`SlotView`], for a copy made under the pin.
    fn view(&self) -> SlotView {
        SlotView {
            ptr: self.lease.map.slot_ptr(self.slot),
            len: self.info.size as usize,
        }
    }

    /// The frame's bytes, read-only (mapped read-only in this process). They stay this
    /// frame's while the pin is honoured; see [`Self::intact`].
    pub fn data(&self) -> &[u8] {
        // SAFETY: size <= slot_capacity was checked when the frame was located, and the slot
        // stays mapped (read-only) while the lease lives. The slot is pinned, so the writer
        // leaves it alone unless it evicted this reader; then the bytes may change under the
        // borrow, as shared memory another process writes can: they are only ever read, and
        // readers check `intact` before handing them on.
        unsafe {
            std::slice::from_raw_parts(self.lease.map.slot_ptr(self.slot), self.info.size as usize)
        }
    }
}

impl PinnedFrame {
    /// Turns the pin into a raw token for C code (e.g. a `GstMemory`'s destroy notify): the
    /// slot stays pinned until [`PinnedFrame::release_raw`] is called with the token, exactly
    /// once. Allocates nothing: the token points to a record made when the reader attached.
    pub fn into_raw(self) -> *const std::ffi::c_void {
        let this = std::mem::ManuallyDrop::new(self);
        let record: *const PinRecord = &this.lease.records[this.slot as usize];
        // SAFETY: `this` is never dropped, so its strong reference moves into the token once.
        let lease = unsafe { std::ptr::read(&this.lease) };
        let leaked = Arc::into_raw(lease);
        debug_assert_eq!(leaked, this.lease.records[this.slot as usize].lease);
        record as *const std::ffi::c_void
    }

    /// Releases a pin given away by [`PinnedFrame::into_raw`].
    ///
    /// # Safety
    /// `token` was returned by `into_raw` and is not used again afterwards.
    pub unsafe fn release_raw(token: *const std::ffi::c_void) {
        // SAFETY: the caller guarantees the token came from into_raw, whose strong reference
        // keeps the lease (and so the record inside it) alive until the Arc rebuilt here drops.
        let (lease, slot) = unsafe {
            let record = &*(token as *const PinRecord);
            (Arc::from_raw(record.lease), record.slot)
        };
        lease.remove(slot);
    }
}

impl AsRef<[u8]> for PinnedFrame {
    fn as_ref(&self) -> &[u8] {
        self.data()
    }
}

impl Drop for PinnedFrame {
    fn drop(&mut self) {
        self.lease.remove(self.slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Backpressure, FrameMeta, Writer, WriterConfig};

    /// Removes the segment even if the test fails before the writer is dropped.
    struct Cleanup(String);

    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(crate::shm_dir().join(&self.0));
        }
    }

    #[test]
    fn a_raw_pin_token_holds_its_slot_after_the_reader_is_gone_until_released() {
        let name = format!("shmframe-unit-pin-token-{}", std::process::id());
        let _cleanup = Cleanup(name.clone());
        let mut config = WriterConfig::new(&name, 64);
        config.depth = 2;
        config.spare_slots = 1;
        config.backpressure = Backpressure::DropOldest;
        let mut writer = Writer::create(&config).unwrap();
        let mut reader = Reader::open(
            &name,
            &ReaderOptions {
                start: StartPosition::Oldest,
                ..Default::default()
            },
        )
        .unwrap();
        writer.write(&FrameMeta::default(), &[7u8; 64]).unwrap();
        let mut pinned = None;
        let read = reader
            .pin_next(Duration::from_secs(5), &mut pinned)
            .unwrap();
        assert!(matches!(read, ReadResult::Frame(info) if info.number == 0));
        let pinned = pinned.unwrap();
        let (ptr, len) = (pinned.data().as_ptr(), pinned.data().len());
        let token = pinned.into_raw();
        assert_eq!(reader.pins_held(), 1);
        drop(reader);

        // SAFETY: the slot stays mapped while the token holds the lease (and its mapping).
        let frame = || unsafe { std::slice::from_raw_parts(ptr, len) }.to_vec();
        for i in 1..=6u8 {
            writer.write(&FrameMeta::default(), &[i; 64]).unwrap();
        }
        assert_eq!(frame(), vec![7u8; 64], "a pinned slot was overwritten");

        // SAFETY: the token came from into_raw and is not used again.
        unsafe { PinnedFrame::release_raw(token) };
        let mapping = segment::open_read_only(&name).unwrap();
        for i in 10..=13u8 {
            writer.write(&FrameMeta::default(), &[i; 64]).unwrap();
        }
        // The slot was reused once released: read it through a mapping of our own.
        let held: Vec<u8> = (0..mapping.geo.slot_count)
            .map(|slot| {
                // SAFETY: slot < slot_count; the first byte of a mapped slot.
                unsafe { *mapping.slot_ptr(slot) }
            })
            .collect();
        assert!(
            !held.contains(&7),
            "slots still hold frame 0 after release: {held:?}"
        );
    }

    /// On kernels before 5.16 a writer waiting for room sleeps on its slowest reader's word
    /// alone, a millisecond at a time: every frame still arrives, in order and intact, and a
    /// reader's progress still wakes the writer (the whole run is bounded far below what 20 ms
    /// per wait, the slice, would take). The writer waits in this test's thread, for which the
    /// system call is pretended missing.
    #[test]
    fn a_blocked_writer_without_futex_waitv_still_gets_every_frame_through() {
        crate::sys::pretend_futex_waitv_is_missing();
        let name = format!("shmframe-unit-no-waitv-{}", std::process::id());
        let _cleanup = Cleanup(name.clone());
        let mut config = WriterConfig::new(&name, 4096);
        config.depth = 2;
        config.spare_slots = 0;
        config.backpressure = Backpressure::Block;
        let mut writer = Writer::create(&config).unwrap();
        let options = ReaderOptions {
            start: StartPosition::Oldest,
            ..Default::default()
        };
        // Two readers, so that the writer waits on more than one word.
        let readers: Vec<Reader> = (0..2)
            .map(|_| Reader::open(&name, &options).unwrap())
            .collect();
        const FRAMES: u64 = 400;
        let started = Instant::now();
        let threads: Vec<_> = readers
            .into_iter()
            .enumerate()
            .map(|(r, mut reader)| {
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    let mut buf = vec![0u8; 4096];
                    while got.len() < FRAMES as usize {
                        let read = reader
                            .read_next(Duration::from_secs(10), |_, view| {
                                view.copy_to(&mut buf[..view.len()])
                            })
                            .unwrap();
                        let ReadResult::Frame(info) = read else {
                            panic!("reader {r}: {read:?} after {} frames", got.len());
                        };
                        let expected = (info.number % 251) as u8;
                        assert!(buf.iter().all(|&b| b == expected), "frame {}", info.number);
                        got.push(info.number);
                        if info.number % 50 == 0 {
                            // The writer fills the ring and waits for this reader.
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    }
                    got
                })
            })
            .collect();
        for n in 0..FRAMES {
            writer
                .write(&FrameMeta::default(), &[(n % 251) as u8; 4096])
                .unwrap();
        }
        for t in threads {
            assert_eq!(t.join().unwrap(), (0..FRAMES).collect::<Vec<_>>());
        }
        let elapsed = started.elapsed();
        // 400 frames through a ring of 2 wait about 200 times: 20 ms each would be 4 s.
        assert!(
            elapsed < Duration::from_secs(3),
            "{FRAMES} frames took {elapsed:?}: progress did not wake the writer"
        );
    }
}

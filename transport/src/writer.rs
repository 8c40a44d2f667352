//! The writing side: one per segment.

use crate::caps;
use crate::cleanup::OnTerminate;
use crate::copy::{self, copy_frame};
use crate::error::Error;
use crate::layout::*;
use crate::name::shm_dir;
use crate::observer::{Observer, SegmentInfo};
use crate::registry::{ReaderEvent, Registry, WaitSet};
use crate::segment::{self, NewSegment, WriterMapping};
use crate::slots::{Lender, Slots, holder};
use crate::sys;
use crate::types::{Backpressure, DEFAULT_READER_TIMEOUT, Layout};
use crate::wait::{BLOCKED_WAIT_SLICE, Interrupt};
use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};
use std::time::{Duration, Instant};

/// How often the writer checks reader liveness when it is not blocked.
const HOUSEKEEPING_INTERVAL_NS: u64 = 100_000_000;
/// Shortest time a writer keeps its name after EOS: more than two polls of a waiting reader.
const EOS_MIN_LINGER: Duration = Duration::from_millis(50);

#[derive(Clone, Debug)]
pub struct WriterConfig {
    pub name: String,
    pub layout: Layout,
    /// Ring slots (ignored by `double`, which always has 2).
    pub depth: u32,
    /// Slots beyond `depth` for leases (zero-copy pools and reader pins).
    pub spare_slots: u32,
    pub backpressure: Backpressure,
    /// Largest frame in bytes a slot must hold.
    pub slot_size: u64,
    /// File mode of the segment (default 0o600: only the same user may attach).
    pub perms: u32,
    pub reader_timeout: Duration,
    /// Readers to wait for before the first frame is published (0: none). Started before
    /// the writer and attached while it waits, they get every frame under `block`.
    pub wait_for_readers: u32,
    /// How long that wait may take (`None`: until interrupted). When it runs out, the write
    /// that waited fails once with [`Error::ReadersMissing`] and later ones publish.
    pub wait_for_readers_timeout: Option<Duration>,
    /// Caps the segment is created with: a reader that attaches finds them from the start,
    /// with no moment when the segment exists without them. Later ones: [`Writer::set_caps`].
    pub caps: Option<String>,
}

impl WriterConfig {
    pub fn new(name: &str, slot_size: u64) -> WriterConfig {
        WriterConfig {
            name: name.to_string(),
            layout: Layout::Ring,
            depth: 4,
            spare_slots: 0,
            backpressure: Backpressure::DropOldest,
            slot_size,
            perms: 0o600,
            reader_timeout: DEFAULT_READER_TIMEOUT,
            wait_for_readers: 0,
            wait_for_readers_timeout: None,
            caps: None,
        }
    }

    /// How many slots a segment of this configuration has, whatever its frame size (the
    /// ring's, 2 under `double`, and the spare ones): known before the segment exists, e.g.
    /// to size a pool of lent slots. Errors as [`Writer::create`] would for this depth.
    pub fn slot_count(&self) -> Result<u32, Error> {
        Geometry::compute(
            self.layout,
            self.depth,
            self.spare_slots,
            self.backpressure,
            1,
        )
        .map(|geo| geo.slot_count)
    }
}

/// Timing and flags of one frame. Times are nanoseconds; `None` is "unknown".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameMeta {
    pub pts: Option<u64>,
    pub dts: Option<u64>,
    pub duration: Option<u64>,
    pub flags: u32,
}

/// What happened to a frame handed to the writer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Published as frame `frame`; the ring had room.
    Written { frame: u64 },
    /// The ring was full under `block`: the writer waited (evicting stalled or dead readers
    /// if needed), then published.
    WrittenAfterWait { frame: u64, waited: Duration },
    /// The ring was full under `drop-oldest`: published, overwriting a frame some reader had
    /// not read yet (that reader counts it as missed).
    OverwroteOldest { frame: u64 },
    /// The ring was full under `drop-newest`, or every slot was pinned: the frame was dropped
    /// and counted in `frames_dropped`.
    Dropped,
}

impl WriteOutcome {
    pub fn frame(&self) -> Option<u64> {
        match *self {
            WriteOutcome::Written { frame }
            | WriteOutcome::WrittenAfterWait { frame, .. }
            | WriteOutcome::OverwroteOldest { frame } => Some(frame),
            WriteOutcome::Dropped => None,
        }
    }

    /// Whether the ring was full when this frame arrived.
    pub fn was_full(&self) -> bool {
        !matches!(self, WriteOutcome::Written { .. })
    }
}

/// A slot held by the writer while it is being filled. Publish or release it.
#[derive(Debug)]
#[must_use = "a lease holds a slot until it is published or released"]
pub struct SlotLease {
    slot: u32,
    session: u64,
}

impl SlotLease {
    pub fn slot(&self) -> u32 {
        self.slot
    }
}

/// What [`Writer::make_room`] decided for a frame.
#[derive(Clone, Copy, Debug)]
struct Room {
    /// The frame's number (the head when room was made).
    frame: u64,
    /// The ring was full when the frame arrived.
    full: bool,
    /// How long the writer waited for a full ring to have room (block).
    waited_for_full: Option<Duration>,
}

pub struct Writer {
    map: Arc<WriterMapping>,
    name: String,
    session: u64,
    reader_timeout_ns: u64,
    slots: Arc<Slots>,
    /// The reader table and the stream's socket.
    registry: Arc<Registry>,
    /// Answers connecting readers and notices leaving ones while the writer does anything else.
    admission: Option<std::thread::JoinHandle<()>>,
    last_housekeeping_ns: u64,
    interrupt: Interrupt,
    /// What `acquire` decided for the frame its lease is for, taken by the `publish` of it.
    room: Option<Room>,
    /// The head at which a wait for a full ring was interrupted, and when that wait began: the
    /// frame made again after `Interrupted` (an unlock, the Python binding's slices) is the
    /// same full-ring event, and its wait goes on from then.
    full_wait_interrupted_at: Option<(u64, Instant)>,
    /// What a wait sleeps on, kept so that waiting allocates nothing.
    wait_set: WaitSet,
    /// Readers still to wait for before the first frame (0 once the wait is over).
    readers_awaited: usize,
    readers_wait_timeout: Option<Duration>,
    unlinked: bool,
    /// Removes the socket if the process is terminated by SIGTERM (see `cleanup`); the
    /// segment's own lives in its mapping.
    _socket_on_terminate: Option<OnTerminate>,
}

impl Writer {
    /// Creates the segment. Fails if the name is invalid, if a live writer holds it (naming
    /// its pid), or if a foreign file is in the way (left untouched).
    pub fn create(cfg: &WriterConfig) -> Result<Writer, Error> {
        Self::create_as(cfg, sys::random_u64())
    }

    /// Closes this writer's segment and creates a new one with `cfg` (for frames its slots
    /// cannot hold) under the same writer identity: pid, start time and session stay, so
    /// readers that follow the name see the same writer renegotiating, not a restart.
    pub fn replace(self, cfg: &WriterConfig) -> Result<Writer, Error> {
        let session = self.session;
        self.close();
        Self::create_as(cfg, session)
    }

    fn create_as(cfg: &WriterConfig, session: u64) -> Result<Writer, Error> {
        if cfg.perms & !0o777 != 0 || cfg.perms & 0o600 != 0o600 {
            return Err(Error::InvalidConfig(format!(
                "perms {:o} must be an octal file mode of at most 0777 that includes 0600 (the \
                 writer and its readers need read and write access)",
                cfg.perms
            )));
        }
        let backpressure = match cfg.layout {
            Layout::Double => Backpressure::DropOldest,
            Layout::Ring => cfg.backpressure,
        };
        let geo = crate::layout::Geometry::compute(
            cfg.layout,
            cfg.depth,
            cfg.spare_slots,
            backpressure,
            cfg.slot_size,
        )?;
        let reader_timeout_ns = cfg.reader_timeout.as_nanos().min(u64::MAX as u128) as u64;
        crate::name::validate_name(&cfg.name)?;
        if let Some(caps) = &cfg.caps {
            caps::check_len(caps)?;
        }
        // The socket first: once the segment is visible under its name, readers find the
        // socket its header names.
        let socket_path = socket_path(&shm_dir(), session);
        let listener = Registry::listen(&socket_path, cfg.perms)?;
        let socket_id = std::fs::symlink_metadata(&socket_path)
            .map(|m| {
                use std::os::unix::fs::MetadataExt;
                (m.dev(), m.ino())
            })
            .unwrap_or_default();
        // Now, not once the writer is complete: a SIGTERM meanwhile must not leave the socket.
        let socket_on_terminate = OnTerminate::register(&socket_path, socket_id);
        let created = segment::create(&NewSegment {
            name: &cfg.name,
            geo: geo.clone(),
            perms: cfg.perms,
            session,
            reader_timeout_ns,
            caps: cfg.caps.as_deref(),
        })
        .and_then(|map| {
            let map = Arc::new(map);
            Ok((
                map.clone(),
                Registry::new(map, listener, socket_path.clone())?,
            ))
        });
        let (map, registry) = match created {
            Ok(v) => v,
            Err(e) => {
                let _ = std::fs::remove_file(&socket_path);
                return Err(e);
            }
        };
        let interrupt = Interrupt::new();
        interrupt.set_target(Some(registry.clone()));
        Ok(Writer {
            name: cfg.name.clone(),
            session,
            reader_timeout_ns,
            slots: Arc::new(Slots::new(map.clone(), registry.clone())),
            admission: Some(registry.spawn_admission()),
            registry,
            last_housekeeping_ns: 0,
            interrupt,
            room: None,
            full_wait_interrupted_at: None,
            wait_set: WaitSet::default(),
            readers_awaited: cfg.wait_for_readers as usize,
            readers_wait_timeout: cfg.wait_for_readers_timeout,
            unlinked: false,
            _socket_on_terminate: socket_on_terminate,
            map,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn session(&self) -> u64 {
        self.session
    }

    /// The policy in force (`double` always behaves as `drop-oldest`).
    pub fn backpressure(&self) -> Backpressure {
        self.map.geo.backpressure
    }

    pub fn reader_timeout(&self) -> Duration {
        Duration::from_nanos(self.reader_timeout_ns)
    }

    pub fn slot_capacity(&self) -> u64 {
        self.map.geo.slot_capacity
    }

    pub fn geometry(&self) -> &crate::layout::Geometry {
        &self.map.geo
    }

    /// A handle another thread can use to interrupt a blocked write (element unlock).
    pub fn interrupt_handle(&self) -> Interrupt {
        self.interrupt.clone()
    }

    /// Announces the stream's caps; frames written from now on carry the new generation.
    pub fn set_caps(&mut self, caps: &str) -> Result<u64, Error> {
        caps::check_len(caps)?;
        let gen_ = self.map.header().caps_gen.load(Ordering::Relaxed) + 1;
        caps::write_caps(&self.map, gen_, caps);
        Ok(gen_)
    }

    pub fn caps_gen(&self) -> u64 {
        self.map.header().caps_gen.load(Ordering::Relaxed)
    }

    /// Copies one frame in and publishes it.
    pub fn write(&mut self, meta: &FrameMeta, data: &[u8]) -> Result<WriteOutcome, Error> {
        let cold = self.slots_are_cold(data.len() as u64);
        self.write_with(meta, data.len() as u64, |slot| {
            copy_frame(&mut slot[..data.len()], data, cold)
        })
    }

    /// Whether the slot a frame of `size` bytes goes to is out of cache (its ring is larger
    /// than the last-level cache, or the writer published nothing for a while): then
    /// [`copy_frame`] with `cold` streams the frame in (see `copy`).
    pub fn slots_are_cold(&self, size: u64) -> bool {
        // The heartbeat is stamped when the segment is made and by every publish, nowhere
        // else: it is when the writer last published a frame.
        let last_frame_ns = self.map.header().heartbeat_ns.load(Ordering::Relaxed);
        let idle_ns = sys::monotonic_ns().saturating_sub(last_frame_ns);
        copy::slots_are_cold(size, self.slots.count(), idle_ns)
    }

    /// Publishes a frame of `size` bytes that `fill` writes into the slot.
    pub fn write_with(
        &mut self,
        meta: &FrameMeta,
        size: u64,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<WriteOutcome, Error> {
        // Before waiting for a slot that could never take the frame.
        self.check_fits(size)?;
        let Some(lease) = self.acquire()? else {
            return Ok(WriteOutcome::Dropped);
        };
        fill(&mut self.slot_mut(&lease)[..size as usize]);
        self.publish(lease, meta, size)
    }

    /// Whether a frame of `size` bytes fits a slot.
    fn check_fits(&self, size: u64) -> Result<(), Error> {
        let capacity = self.map.geo.slot_capacity;
        if size > capacity {
            return Err(Error::FrameTooLarge { size, capacity });
        }
        Ok(())
    }

    /// The memory of a leased slot.
    pub fn slot_mut(&mut self, lease: &SlotLease) -> &mut [u8] {
        assert_eq!(lease.session, self.session, "lease from another writer");
        // SAFETY: the slot is leased to this writer (no reader reads it: its seq word is odd and
        // no index entry refers to it), the mapping is writable, and the returned borrow is tied
        // to `&mut self`, so no second view of the slot exists in this process.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.map.slot_ptr_mut(lease.slot),
                self.map.geo.slot_capacity as usize,
            )
        }
    }

    fn head(&self) -> u64 {
        self.map.header().head.load(Ordering::Relaxed)
    }

    fn slowest_cursor(&self) -> Option<u64> {
        self.slots.slowest_cursor()
    }

    /// Whether publishing frame `n` would overwrite a frame a counted reader has not read.
    fn ring_full_for(&self, n: u64) -> bool {
        let depth = self.map.geo.depth as u64;
        n >= depth && self.slowest_cursor().is_some_and(|c| c <= n - depth)
    }

    /// Whether frame `n` finds the ring full. Every frame handed to the writer passes here,
    /// copied ([`Self::acquire`]) or drawn in a lent slot ([`Self::publish_lent`]), so this is
    /// where reader liveness is re-checked on a period: a dead reader's entry and pins are freed
    /// within `HOUSEKEEPING_INTERVAL_NS` on every path. Under drop-newest a full ring drops the
    /// incoming frame; a reader that stopped advancing (stopped, hung) must not make every later
    /// frame drop for all readers, so it is evicted after the reader timeout, as under block.
    fn full_on_arrival(&mut self, n: u64, now_ns: u64) -> bool {
        self.housekeeping_if_due(now_ns);
        let full = self.ring_full_for(n);
        if full && self.backpressure() == Backpressure::DropNewest {
            self.check_readers(true);
            return self.ring_full_for(n);
        }
        full
    }

    /// True when the slowest live reader is `depth` frames behind.
    pub fn is_full(&self) -> bool {
        self.ring_full_for(self.head())
    }

    /// See [`Slots::free_slot`]; only `drop-oldest` sacrifices a frame of the window.
    fn free_slot(&self, n: u64) -> Option<u32> {
        self.slots
            .free_slot(n, self.backpressure() == Backpressure::DropOldest)
    }

    /// Makes room for the next frame: the one place where backpressure is decided, for every
    /// frame handed to the writer (copied into a leased slot, or drawn in a lent one). A ring
    /// full on arrival (counted once) drops the frame under drop-newest, is waited for under
    /// block, and is overwritten under drop-oldest. `take` gets what else the frame needs at the
    /// head it is given (a free slot, for a lease); when it gets nothing, block waits for it,
    /// and the other policies evict the readers whose pins hold the writer up for longer than
    /// the reader timeout (their pins stop counting) and try once more. `Ok(None)`: the frame
    /// is dropped (counted). `now_ns`: CLOCK_MONOTONIC as the frame arrived.
    fn make_room<T>(
        &mut self,
        now_ns: u64,
        mut take: impl FnMut(&Self, u64) -> Option<T>,
    ) -> Result<Option<(Room, T)>, Error> {
        let n = self.head();
        let full = self.full_on_arrival(n, now_ns);
        let policy = self.backpressure();
        let resumed_wait = self
            .full_wait_interrupted_at
            .take()
            .and_then(|(at, since)| (at == n).then_some(since));
        if full && resumed_wait.is_none() {
            self.count_full();
        }
        if full && policy == Backpressure::DropNewest {
            self.count_drop();
            return Ok(None);
        }
        if full && policy == Backpressure::Block {
            let started = resumed_wait.unwrap_or_else(Instant::now);
            let waited = self.wait_until(|w| {
                let n = w.head();
                if w.ring_full_for(n) { None } else { take(w, n) }
            });
            if matches!(waited, Err(Error::Interrupted)) {
                self.full_wait_interrupted_at = Some((n, started));
            }
            let taken = waited?;
            let room = Room {
                frame: self.head(),
                full,
                waited_for_full: Some(started.elapsed()),
            };
            return Ok(Some((room, taken)));
        }
        let room = |frame| Room {
            frame,
            full,
            waited_for_full: None,
        };
        if let Some(taken) = take(self, n) {
            return Ok(Some((room(n), taken)));
        }
        if policy == Backpressure::Block {
            // Every slot is leased or pinned: wait for a release.
            let taken = self.wait_until(|w| take(w, w.head()))?;
            return Ok(Some((room(self.head()), taken)));
        }
        self.check_readers(true);
        match take(self, n) {
            Some(taken) => Ok(Some((room(n), taken))),
            None => {
                self.count_drop();
                Ok(None)
            }
        }
    }

    /// Leases a slot for the next frame. Under `block` this waits until the ring has room;
    /// under `drop-newest` a full ring gives `Ok(None)` (the frame is counted as dropped).
    pub fn acquire(&mut self) -> Result<Option<SlotLease>, Error> {
        let claimed = self.make_room(sys::monotonic_ns(), |w, n| {
            // A lender taking the chosen slot at the same moment, or a reader pinning it,
            // makes the claim fail; another slot may still be free.
            for _ in 0..w.slots.count() {
                let slot = w.free_slot(n)?;
                if w.slots.claim(slot, holder::WRITER) {
                    return Some(slot);
                }
            }
            None
        })?;
        let Some((room, slot)) = claimed else {
            return Ok(None);
        };
        self.room = Some(room);
        Ok(Some(SlotLease {
            slot,
            session: self.session,
        }))
    }

    /// Lends a free slot to be filled outside the writer (from another thread or by another
    /// element) and published later with [`Self::publish_lent`]. Never waits and never
    /// overwrites a frame of the ring: `None` when no slot is free right now, or when as many
    /// slots as there are beyond `depth` are lent and not holding a frame of the ring once the
    /// next frame is published (being filled, or published and held after their frame left the
    /// ring; the newest frame, which a sink keeps until it renders the next, never counts).
    /// That bound leaves frames copied in a slot of their own when the borrowers keep theirs
    /// only briefly. The
    /// slot stays out of the writer's hands, also after it is published, until
    /// [`Lender::give_back`]. [`Lender::lend`] does the same from any thread.
    pub fn lend(&mut self) -> Option<u32> {
        self.slots.lend()
    }

    /// The handle that gives lent slots back and reaches their memory.
    pub fn lender(&self) -> Lender {
        Lender {
            slots: self.slots.clone(),
        }
    }

    /// The lent, not yet published slot whose memory starts at `ptr`, if there is one.
    pub fn lent_slot_at(&self, ptr: *const u8) -> Option<u32> {
        let offset = (ptr as usize).checked_sub(self.map.slot_ptr(0) as usize)?;
        let slot = offset as u64 / self.map.geo.slot_stride.max(1);
        (slot < self.slots.count() as u64
            && std::ptr::eq(self.map.slot_ptr(slot as u32), ptr)
            && self.slots.held(slot as usize) == holder::FILLING)
            .then_some(slot as u32)
    }

    /// Publishes the lent slot `slot`, filled with `size` bytes, as the next frame, under the
    /// same backpressure rules as [`Self::publish`]. The slot stays lent (readable, never
    /// reused) until it is given back; a frame that was dropped leaves it lent and unpublished.
    ///
    /// Panics if `slot` is not lent and unpublished.
    pub fn publish_lent(
        &mut self,
        slot: u32,
        meta: &FrameMeta,
        size: u64,
    ) -> Result<WriteOutcome, Error> {
        assert_eq!(
            self.slots.held(slot as usize),
            holder::FILLING,
            "slot {slot} is not lent or already published"
        );
        let outcome = self.publish_slot(slot, meta, size)?;
        if outcome.frame().is_some() {
            self.slots.holder[slot as usize].store(holder::PUBLISHED, Ordering::SeqCst);
        }
        Ok(outcome)
    }

    /// Gives a lease back without publishing (the frame is not counted as written).
    pub fn release(&mut self, lease: SlotLease) {
        assert_eq!(lease.session, self.session, "lease from another writer");
        self.slots.unpublish(lease.slot);
        self.slots.holder[lease.slot as usize].store(holder::FREE, Ordering::SeqCst);
        self.room = None;
    }

    /// When the wait for room that last ended in `Interrupted` began, while the frame it was
    /// for is still the next one: made again, that frame resumes the same wait.
    pub fn interrupted_wait_began(&self) -> Option<Instant> {
        self.full_wait_interrupted_at
            .filter(|&(at, _)| at == self.head())
            .map(|(_, began)| began)
    }

    /// Publishes a leased slot holding `size` bytes as the next frame.
    pub fn publish(
        &mut self,
        lease: SlotLease,
        meta: &FrameMeta,
        size: u64,
    ) -> Result<WriteOutcome, Error> {
        assert_eq!(lease.session, self.session, "lease from another writer");
        match self.publish_slot(lease.slot, meta, size) {
            Ok(outcome) if outcome.frame().is_some() => {
                self.slots.holder[lease.slot as usize].store(holder::FREE, Ordering::SeqCst);
                Ok(outcome)
            }
            result => {
                self.release(lease);
                result
            }
        }
    }

    /// Publishes `slot` (held by the writer or lent, filled) as the next frame, waiting for
    /// room under `block`. On `Dropped` or an error the slot is left as it was.
    fn publish_slot(
        &mut self,
        slot: u32,
        meta: &FrameMeta,
        size: u64,
    ) -> Result<WriteOutcome, Error> {
        self.check_fits(size)?;
        self.await_readers()?;
        // One clock read per frame unless it waits: the frame's write time, and the time
        // housekeeping is due by (clock reads are a noticeable part of a small frame's cost).
        let arrived_ns = sys::monotonic_ns();
        // A leased slot had its room made when it was acquired; a lent one has it made now.
        let head = self.head();
        let room = match self.room.take().filter(|room| room.frame == head) {
            Some(room) => room,
            None => match self.make_room(arrived_ns, |_, _| Some(()))? {
                Some((room, ())) => room,
                None => return Ok(WriteOutcome::Dropped),
            },
        };
        let n = room.frame;
        let desc = self.map.desc(slot);
        let opt = |v: Option<u64>| v.unwrap_or(NO_TIME);
        desc.frame.store(n, Ordering::Relaxed);
        desc.pts.store(opt(meta.pts), Ordering::Relaxed);
        desc.dts.store(opt(meta.dts), Ordering::Relaxed);
        desc.duration.store(opt(meta.duration), Ordering::Relaxed);
        desc.size.store(size, Ordering::Relaxed);
        desc.flags.store(meta.flags as u64, Ordering::Relaxed);
        desc.caps_gen.store(self.caps_gen(), Ordering::Relaxed);
        let now = match room.waited_for_full {
            Some(_) => sys::monotonic_ns(),
            None => arrived_ns,
        };
        desc.write_time_ns.store(now, Ordering::Relaxed);
        let seq = desc.seq.load(Ordering::Relaxed);
        // Even again: the slot's contents and fields above are complete (Release publishes them
        // to any reader that Acquire-loads this word).
        desc.seq.store((seq | 1) + 1, Ordering::Release);
        fence(Ordering::Release);
        self.map
            .index(n)
            .store(index_entry(n, slot), Ordering::Release);
        self.slots.set_frame(slot as usize, Some(n));
        let full_after = self.ring_full_for(n + 1);
        let h = self.map.header();
        // The header's live fields share a cache line with `head`, which a spinning reader
        // keeps loading: stored together, just before `head`, the line moves to this core once
        // per frame rather than once per store. The writer alone writes these counters, so a
        // plain store does what a (locked) fetch_add would.
        h.heartbeat_ns.store(now, Ordering::Relaxed);
        let written = h.frames_written.load(Ordering::Relaxed);
        h.frames_written.store(written + 1, Ordering::Relaxed);
        h.full.store(full_after as u32, Ordering::Relaxed);
        if h.stream_state.load(Ordering::Relaxed) != stream_state::RUNNING {
            h.stream_state
                .store(stream_state::RUNNING, Ordering::Release);
        }
        // SeqCst store pairs with the reader's SeqCst store of `sleeping` in its page: either
        // the reader sees the new head before sleeping, or we see it sleeping and wake it.
        h.head.store(n + 1, Ordering::SeqCst);
        self.registry.wake_sleepers();
        Ok(match self.backpressure() {
            Backpressure::Block if room.full => WriteOutcome::WrittenAfterWait {
                frame: n,
                waited: room.waited_for_full.unwrap_or_default(),
            },
            Backpressure::DropOldest if room.full => WriteOutcome::OverwroteOldest { frame: n },
            _ => WriteOutcome::Written { frame: n },
        })
    }

    fn count_full(&self) {
        let h = self.map.header();
        h.full_events.fetch_add(1, Ordering::Relaxed);
        h.full.store(1, Ordering::Relaxed);
    }

    fn count_drop(&self) {
        self.map
            .header()
            .frames_dropped
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Readers attached (and not closed).
    fn attached_readers(&self) -> usize {
        self.registry.attached()
    }

    /// Until the wait of [`WriterConfig::wait_for_readers`] is over (see
    /// [`Self::await_readers`]): (readers wanted, readers attached now).
    pub fn awaiting_readers(&self) -> Option<(usize, usize)> {
        (self.readers_awaited > 0).then(|| (self.readers_awaited, self.attached_readers()))
    }

    /// Performs the wait of [`WriterConfig::wait_for_readers`] unless it is over: returns once
    /// the readers are attached; fails with `Interrupted` (the wait goes on at the next call),
    /// or once with `ReadersMissing` when the timeout ran out (it is over then). Publishing
    /// calls this before the first frame; call it earlier to wait before filling a frame.
    pub fn await_readers(&mut self) -> Result<(), Error> {
        let wanted = self.readers_awaited;
        if wanted == 0 {
            return Ok(());
        }
        let started = Instant::now();
        let all_attached = self.wait_for_readers(wanted, self.readers_wait_timeout)?;
        self.readers_awaited = 0;
        if all_attached {
            return Ok(());
        }
        Err(Error::ReadersMissing {
            name: self.name.clone(),
            wanted,
            attached: self.attached_readers(),
            waited: started.elapsed(),
        })
    }

    /// Waits until at least `count` live readers are attached, as a full ring waits (futex,
    /// woken by each attaching reader, in bounded slices; interruptible), for at most
    /// `timeout` (`None`: until interrupted). `Ok(false)`: the timeout ran out.
    pub fn wait_for_readers(
        &mut self,
        count: usize,
        timeout: Option<Duration>,
    ) -> Result<bool, Error> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let attached =
            self.wait_within(deadline, |w| (w.attached_readers() >= count).then_some(()))?;
        Ok(attached.is_some())
    }

    /// Blocks until `ready` gives a value, re-checking reader liveness and stalls every slice.
    fn wait_until<T>(&mut self, ready: impl FnMut(&Self) -> Option<T>) -> Result<T, Error> {
        self.wait_within(None, ready)
            .map(|v| v.expect("a wait without deadline ends only with a value"))
    }

    /// [`Self::wait_until`] up to `deadline` (`Ok(None)` once it passed).
    fn wait_within<T>(
        &mut self,
        deadline: Option<Instant>,
        mut ready: impl FnMut(&Self) -> Option<T>,
    ) -> Result<Option<T>, Error> {
        let map = self.map.clone();
        let registry = self.registry.clone();
        let waiting = &map.header().writer_waiting;
        let mut set = std::mem::take(&mut self.wait_set);
        // A reader's stall is timed from when it started holding the writer up, at the
        // earliest from the start of this wait.
        registry.hold_up_starts(sys::monotonic_ns());
        // A count, not a flag: a lender of this writer may be waiting in another thread too.
        // SeqCst pairs with a reader's cursor store (or unpin) and its load of this count.
        waiting.fetch_add(1, Ordering::SeqCst);
        let result = loop {
            // Before the check: what changes after it ends the sleep below.
            registry.arm(&mut set);
            if let Some(v) = ready(self) {
                break Ok(Some(v));
            }
            if self.interrupt.is_set() {
                break Err(Error::Interrupted);
            }
            // Stalls are re-checked every slice of waiting, not on every entry into a wait (a
            // ring full again after each frame would pay for a look at every reader per
            // frame): a wake-up by a reader's progress needs only the re-check of `ready`.
            let since_check = sys::monotonic_ns().saturating_sub(self.last_housekeeping_ns);
            if since_check >= BLOCKED_WAIT_SLICE.as_nanos() as u64 {
                self.check_readers(true);
                if let Some(v) = ready(self) {
                    break Ok(Some(v));
                }
            }
            let slice = match deadline {
                None => BLOCKED_WAIT_SLICE,
                Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left.min(BLOCKED_WAIT_SLICE),
                    _ => break Ok(None),
                },
            };
            registry.sleep(&set, slice);
        };
        waiting.fetch_sub(1, Ordering::SeqCst);
        set.clear();
        self.wait_set = set;
        result
    }

    fn housekeeping_if_due(&mut self, now_ns: u64) {
        if now_ns.saturating_sub(self.last_housekeeping_ns) >= HOUSEKEEPING_INTERVAL_NS {
            self.check_readers(false);
        }
    }

    /// Checks reader liveness now and records attach/detach events.
    pub fn poll_readers(&mut self) {
        self.check_readers(false);
    }

    /// Reader table changes since the last call.
    pub fn take_reader_events(&mut self) -> Vec<ReaderEvent> {
        self.registry.take_events()
    }

    /// Notices readers that left and, when `held_up`, evicts those that hold the writer up
    /// for longer than the reader timeout (see [`Registry::check_readers`]).
    fn check_readers(&mut self, held_up: bool) {
        self.last_housekeeping_ns = sys::monotonic_ns();
        let keep_from = self.map.geo.keep_from(self.head());
        let slots = &self.slots;
        self.registry
            .check_readers(held_up, self.reader_timeout_ns, |slot| {
                slots.takeable_but_for_pins(slot, keep_from)
            });
    }

    /// Empties the depot: every reader skips to the next frame written (counting the skipped
    /// frames as missed).
    pub fn clear(&mut self) {
        let h = self.map.header();
        h.clear_floor
            .store(h.head.load(Ordering::Relaxed), Ordering::SeqCst);
        h.full.store(0, Ordering::Relaxed);
        self.registry.wake_all();
    }

    /// Marks the end of the stream: readers get EOS once they have read every frame.
    pub fn end_of_stream(&mut self) {
        self.set_state(stream_state::EOS);
    }

    fn set_state(&self, state: u32) {
        self.map
            .header()
            .stream_state
            .store(state, Ordering::SeqCst);
        self.registry.wake_all();
    }

    /// A read-only view sharing this writer's mapping (statistics while a write blocks).
    pub fn observer(&self) -> Observer {
        Observer::from_mapping(self.map.shared())
    }

    /// Frames published, dropped, full events, evictions, and the readers as of now.
    pub fn info(&self) -> SegmentInfo {
        self.registry.refresh();
        self.map.info()
    }

    pub fn frames_written(&self) -> u64 {
        self.map.header().frames_written.load(Ordering::Relaxed)
    }

    pub fn frames_dropped(&self) -> u64 {
        self.map.header().frames_dropped.load(Ordering::Relaxed)
    }

    /// Readers currently attached (including evicted ones, which still read).
    pub fn reader_count(&self) -> usize {
        self.registry.service();
        self.attached_readers()
    }

    /// Marks the stream closed and removes the name (if it still names our segment). Dropping
    /// the writer does the same.
    pub fn close(mut self) {
        self.shutdown();
    }

    /// After EOS, keeps the name a little: long enough for a reader that is waiting for this
    /// writer to find it (woken when the name appears, or by its 20 ms poll), and until every
    /// attached reader has read to the end, bounded by the reader timeout. A writer whose whole stream takes a few
    /// milliseconds still reaches a reader that was started first.
    fn linger_after_eos(&mut self) {
        let started = Instant::now();
        let limit = Duration::from_nanos(self.reader_timeout_ns).max(EOS_MIN_LINGER);
        let map = self.map.clone();
        let waiting = &map.header().writer_waiting;
        let mut set = std::mem::take(&mut self.wait_set);
        waiting.fetch_add(1, Ordering::SeqCst);
        loop {
            self.registry.service();
            self.registry.arm(&mut set);
            let all_drained = self.registry.all_read_up_to(self.head());
            let elapsed = started.elapsed();
            if (all_drained && elapsed >= EOS_MIN_LINGER) || elapsed >= limit {
                break;
            }
            let wait = if all_drained {
                EOS_MIN_LINGER - elapsed
            } else {
                BLOCKED_WAIT_SLICE
            };
            self.registry.sleep(&set, wait);
        }
        waiting.fetch_sub(1, Ordering::SeqCst);
        set.clear();
        self.wait_set = set;
    }

    fn shutdown(&mut self) {
        if self.unlinked {
            return;
        }
        self.unlinked = true;
        if self.map.header().stream_state.load(Ordering::Relaxed) == stream_state::EOS {
            self.linger_after_eos();
        }
        // Remove the name first, so no reader attaches to a segment that is closing.
        if self.map.path_still_ours() {
            let _ = std::fs::remove_file(&self.map.path);
        }
        // After EOS the state stays EOS: a reader still draining the ring must end with EOS,
        // not mistake the shutdown for a writer that went away mid-stream.
        if self.map.header().stream_state.load(Ordering::Relaxed) != stream_state::EOS {
            self.set_state(stream_state::CLOSED);
        }
        // Then the socket: readers still attached see their connection hang up.
        self.registry.stop();
        if let Some(admission) = self.admission.take() {
            let _ = admission.join();
        }
        self.registry.disconnect_all();
        self.registry.kick_space();
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

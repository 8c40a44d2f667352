//! The reading side: any number per segment, each with its own cursor.

use crate::caps;
use crate::error::Error;
use crate::frame::{
    FrameInfo, SlotView, TryRead, checked_head, locate, oldest_held, read_held, try_read,
};
use crate::layout::*;
use crate::observer::SegmentInfo;
use crate::registry::{PinRecord, ReaderLease, claim_entry};
use crate::segment::{self, Mapping};
use crate::sys;
use crate::types::{Backpressure, Layout, StartPosition, StreamState};
use crate::wait::{Interrupt, WaitWord};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Longest single sleep while waiting for a frame: the writer's liveness is re-checked at
/// least this often, and the heartbeat refreshed.
const FRAME_WAIT_SLICE: Duration = Duration::from_millis(100);

#[derive(Clone, Debug, Default)]
pub struct ReaderOptions {
    pub start: StartPosition,
    /// The only user whose segment this reader accepts (None: any user the segment's
    /// permissions admit), so that a reader allowed to read other users' segments (root, or
    /// through `perms`) does not silently follow someone else's writer.
    pub writer_uid: Option<u32>,
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
    index: u32,
    session: u64,
    cursor: u64,
    frames_read: u64,
    frames_missed: u64,
    missed_since_last: u64,
    interrupt: Interrupt,
    lease: Arc<ReaderLease>,
    last_liveness_check: Instant,
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
        let map = Arc::new(segment::open(name)?);
        if let Some(expected) = opts.writer_uid
            && map.owner_uid() != expected
        {
            return Err(Error::WrongWriter {
                path: map.path.display().to_string(),
                expected,
                found: map.owner_uid(),
            });
        }
        // Checked before an entry is claimed too, so a corrupt segment costs no entry.
        checked_head(&map)?;
        let session = sys::random_u64();
        let pid = std::process::id();
        let index = claim_entry(&map, pid).ok_or_else(|| Error::TooManyReaders {
            name: name.to_string(),
            max: map.geo.max_readers,
        })?;
        let head = checked_head(&map)?;
        let tail = oldest_held(&map, head);
        let cursor = match opts.start {
            StartPosition::Oldest => tail,
            StartPosition::Newest => head.saturating_sub(1).max(tail),
        };
        let e = map.reader_entry(index);
        let now = sys::monotonic_ns();
        e.session.store(session, Ordering::Relaxed);
        e.heartbeat_ns.store(now, Ordering::Relaxed);
        e.attached_ns.store(now, Ordering::Relaxed);
        e.cursor.store(cursor, Ordering::Relaxed);
        e.frames_read.store(0, Ordering::Relaxed);
        e.frames_missed.store(0, Ordering::Relaxed);
        e.state.store(reader_state::ACTIVE, Ordering::SeqCst);
        // A writer waiting for readers counts itself in writer_waiting before counting the
        // table (SeqCst on both sides): either it sees this entry or we see it and wake it.
        if map.control().writer_waiting.load(Ordering::SeqCst) != 0 {
            map.kick(WaitWord::Space);
        }
        interrupt.set_target(Some((map.clone(), WaitWord::Frame)));
        Ok(Reader {
            lease: ReaderLease::new(map.clone(), index),
            map,
            index,
            session,
            cursor,
            frames_read: 0,
            frames_missed: 0,
            missed_since_last: 0,
            interrupt,
            last_liveness_check: Instant::now(),
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
        self.map
            .reader_entry(self.index)
            .evictions
            .load(Ordering::Relaxed)
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

    fn entry(&self) -> &ReaderEntry {
        self.map.reader_entry(self.index)
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
        if self.map.control().writer_waiting.load(Ordering::SeqCst) != 0 {
            self.map.kick(WaitWord::Space);
        }
    }

    /// An evicted reader rejoins at the oldest frame still held, counting what it lost.
    fn rejoin_if_evicted(&mut self) -> Result<(), Error> {
        let map = self.map.clone();
        let e = map.reader_entry(self.index);
        if e.state.load(Ordering::Acquire) == reader_state::EVICTED {
            let head = checked_head(&map)?;
            self.skip_to(oldest_held(&map, head));
            e.cursor.store(self.cursor, Ordering::SeqCst);
            let _ = e.state.compare_exchange(
                reader_state::EVICTED,
                reader_state::ACTIVE,
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
        Ok(())
    }

    /// Waits up to `timeout` for the next frame and copies it out through `copy`, which is
    /// called with the frame's metadata and a view of its slot; `copy` may be called more than
    /// once if the writer overwrote the frame meanwhile (the stale copy is discarded).
    pub fn read_next(
        &mut self,
        timeout: Duration,
        mut copy: impl FnMut(&FrameInfo, &SlotView),
    ) -> Result<ReadResult, Error> {
        let (result, _) = self.next_with(timeout, |map, n| {
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
            self.wait_for_frame(head, (deadline - now).min(FRAME_WAIT_SLICE));
        }
    }

    fn wait_for_frame(&self, seen_head: u64, max: Duration) {
        let ctrl = self.map.control();
        let h = self.map.header();
        let seq = ctrl.frame_seq.load(Ordering::SeqCst);
        ctrl.frame_waiters.fetch_add(1, Ordering::SeqCst);
        // Re-check after announcing ourselves: the writer's SeqCst head store and its load of
        // frame_waiters order against this, so a frame published now is never slept through.
        let state = h.stream_state.load(Ordering::SeqCst);
        let live = matches!(state, stream_state::STARTING | stream_state::RUNNING);
        if live && h.head.load(Ordering::SeqCst) == seen_head && !self.interrupt.is_set() {
            sys::futex_wait(&ctrl.frame_seq, seq, max);
        }
        ctrl.frame_waiters.fetch_sub(1, Ordering::SeqCst);
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
    /// writer, however long they are kept: the writer's spare slots (see [`Self::may_pin`]). Without `block` one more is harmless too,
    /// since the writer never waits for pins then (drop-oldest overwrites the oldest unpinned
    /// frame, drop-newest drops the incoming one).
    pub fn pin_budget(&self) -> u32 {
        let geo = &self.map.geo;
        let spare = geo.slot_count - geo.depth;
        if geo.backpressure == Backpressure::Block {
            spare
        } else {
            spare.max(1)
        }
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
        let geo = &self.map.geo;
        let head = self.map.header().head.load(Ordering::Acquire);
        let keep_from = geo.keep_from(head);
        let (mut held_back, mut pinned_slots) = (0, 0);
        for w in 0..geo.pin_words {
            let mut pinned = self.map.pinned_bits(w);
            pinned_slots += pinned.count_ones();
            while pinned != 0 {
                let slot = w * 64 + pinned.trailing_zeros();
                pinned &= pinned - 1;
                // A pinned slot's descriptor is stable (the writer does not touch it).
                if slot < geo.slot_count
                    && self.map.desc(slot).frame.load(Ordering::Acquire) < keep_from
                {
                    held_back += 1;
                }
            }
        }
        // However new the pinned frames are now, the writer comes round to their slots; under
        // drop-oldest (and double) it then overwrites the oldest unpinned frame instead, so at
        // least one slot must stay unpinned.
        self.pins_held() < self.pin_budget()
            && held_back < self.pin_budget()
            && pinned_slots + 1 < geo.slot_count
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.interrupt.set_target(None);
        // Stop counting for backpressure now; the entry itself is freed by the lease once no
        // pinned frame refers to it any more (at once if there is none).
        self.entry()
            .state
            .store(reader_state::CLAIMING, Ordering::Release);
        self.map.kick(WaitWord::Space);
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
    use crate::{FrameMeta, Writer, WriterConfig};

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
}

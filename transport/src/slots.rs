//! Who holds each slot: the writer filling one, a borrower filling a lent one, a published
//! frame still lent, or nobody; which frame each holds; which slot may be taken for the next
//! frame given readers' cursors and pins. Shared by the [`crate::Writer`] and its [`Lender`]s.

use crate::registry::{MAX_PIN_WORDS, Registry, WaitSet};
use crate::segment::WriterMapping;
use crate::types::{Backpressure, Layout};
use crate::wait::BLOCKED_WAIT_SLICE;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Who holds a slot.
pub(crate) mod holder {
    /// Nobody: the writer may claim it for a frame (unless a reader pinned it).
    pub const FREE: u8 = 0;
    /// The writer, filling it for `Writer::write` (a [`crate::SlotLease`]).
    pub const WRITER: u8 = 1;
    /// Lent and not published yet: its borrower may fill it.
    pub const FILLING: u8 = 2;
    /// Lent, published as a frame and still held: readable, never reused until given back.
    pub const PUBLISHED: u8 = 3;
}

/// No frame in the slot.
pub(crate) const NO_FRAME: u64 = u64::MAX;

/// Who holds each slot of a segment and which frame it holds, shared by the writer and its
/// [`Lender`]s so that slots can be lent and given back from any thread, also while the writer
/// waits for room. A slot changes hands only by a compare-and-swap of its holder from `FREE`,
/// so the writer and a lender never claim the same slot.
pub(crate) struct Slots {
    pub(crate) map: Arc<WriterMapping>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) holder: Box<[AtomicU8]>,
    /// The frame each slot holds (`NO_FRAME`): written only by the slot's holder, read by
    /// whoever looks for a free slot.
    frame: Box<[AtomicU64]>,
}

impl Slots {
    pub(crate) fn new(map: Arc<WriterMapping>, registry: Arc<Registry>) -> Slots {
        let slot_count = map.geo.slot_count;
        Slots {
            map,
            registry,
            holder: (0..slot_count)
                .map(|_| AtomicU8::new(holder::FREE))
                .collect(),
            frame: (0..slot_count).map(|_| AtomicU64::new(NO_FRAME)).collect(),
        }
    }

    pub(crate) fn count(&self) -> usize {
        self.holder.len()
    }

    pub(crate) fn frame(&self, slot: usize) -> Option<u64> {
        let f = self.frame[slot].load(Ordering::Acquire);
        (f != NO_FRAME).then_some(f)
    }

    pub(crate) fn set_frame(&self, slot: usize, frame: Option<u64>) {
        self.frame[slot].store(frame.unwrap_or(NO_FRAME), Ordering::Release);
    }

    pub(crate) fn held(&self, slot: usize) -> u8 {
        // SeqCst pairs with `Lender::give_back` (see there).
        self.holder[slot].load(Ordering::SeqCst)
    }

    pub(crate) fn head(&self) -> u64 {
        self.map.header().head.load(Ordering::Acquire)
    }

    /// The smallest cursor among readers that count for backpressure, if any.
    pub(crate) fn slowest_cursor(&self) -> Option<u64> {
        if self.map.geo.layout == Layout::Double {
            return None;
        }
        let floor = self.map.header().clear_floor.load(Ordering::Relaxed);
        self.registry.slowest_cursor(self.head(), floor)
    }

    /// Whether slot `slot` could be taken for the next frame but for pins: not lent, and
    /// holding no frame or one older than `keep_from` (gone from the ring).
    pub(crate) fn takeable_but_for_pins(&self, slot: usize, keep_from: u64) -> bool {
        slot < self.count()
            && self.held(slot) == holder::FREE
            && self.frame(slot).is_none_or(|f| f < keep_from)
    }

    pub(crate) fn pinned(&self, slot: u32) -> bool {
        self.registry.slot_pinned(slot)
    }

    /// A slot that may be overwritten for frame `n`: held by nobody, not pinned, and not
    /// holding a frame that stays in the ring after `n` is published. Under `block`, also not
    /// holding a frame some counted reader still has to read. `may_sacrifice`: whether the
    /// oldest unpinned frame of the window may be taken when nothing else is free.
    pub(crate) fn free_slot(&self, n: u64, may_sacrifice: bool) -> Option<u32> {
        let keep_from = self.map.geo.keep_from(n);
        let slowest = match self.map.geo.backpressure {
            Backpressure::Block => self.slowest_cursor(),
            _ => None,
        };
        let oldest_first = |s: &usize| self.frame(*s).map_or(0, |f| f + 1);
        let pins = self.registry.pinned_mask();
        let pinned = |s: usize| is_pinned(&pins, s as u32);
        // Prefer the slot holding the oldest frame: it is the one leaving the ring; if a
        // reader pinned that one, the first candidate not pinned. One pass, for every frame.
        let (mut oldest, mut first_unpinned) = (None::<(u64, usize)>, None);
        for s in 0..self.count() {
            if self.held(s) != holder::FREE {
                continue;
            }
            let frame = self.frame(s);
            if frame.is_some_and(|f| f >= keep_from || slowest.is_some_and(|c| c <= f)) {
                continue;
            }
            let age = frame.map_or(0, |f| f + 1);
            if oldest.is_none_or(|(oldest_age, _)| age < oldest_age) {
                oldest = Some((age, s));
            }
            if first_unpinned.is_none() && !pinned(s) {
                first_unpinned = Some(s);
            }
        }
        let free = oldest
            .map(|(_, s)| s)
            .filter(|&s| !pinned(s))
            .or(first_unpinned);
        // Pins (zero-copy readers holding frames) can leave no slot outside the window. Under
        // drop-oldest (and double) the oldest unpinned frame of the window is sacrificed, as a
        // shorter ring would; readers detect it and count it missed. Block waits instead.
        let sacrifice = || {
            may_sacrifice
                .then(|| {
                    (0..self.count())
                        .filter(|&s| self.held(s) == holder::FREE && !pinned(s))
                        .min_by_key(oldest_first)
                })
                .flatten()
        };
        free.or_else(sacrifice).map(|s| s as u32)
    }

    /// Takes a free slot for `who`, marking it as being written, unless someone else took it
    /// or a reader pinned it meanwhile.
    pub(crate) fn claim(&self, slot: u32, who: u8) -> bool {
        if self.holder[slot as usize]
            .compare_exchange(holder::FREE, who, Ordering::SeqCst, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        // Mark the slot as being written before touching it, then re-check pins: a reader
        // pins by setting its bit and then checking this word, so with SeqCst on both sides
        // at least one of us sees the other.
        let desc = self.map.desc(slot);
        let seq = desc.seq.load(Ordering::Relaxed);
        desc.seq.store(seq | 1, Ordering::SeqCst);
        if self.pinned(slot) {
            desc.seq.fetch_add(1, Ordering::SeqCst);
            self.holder[slot as usize].store(holder::FREE, Ordering::SeqCst);
            return false;
        }
        self.set_frame(slot as usize, None);
        true
    }

    /// Empties a filled slot that is not published (a lease released, a loan given back
    /// unused): its descriptor names no frame, and its seq word moves on from "being written".
    /// Only the slot's holder calls this, before it frees the slot with a SeqCst store or
    /// exchange of its holder, so no new claim of the slot can come before these stores.
    pub(crate) fn unpublish(&self, slot: u32) {
        let desc = self.map.desc(slot);
        desc.frame.store(NO_FRAME, Ordering::Relaxed);
        desc.seq.fetch_add(1, Ordering::Release);
    }

    /// See [`Writer::lend`].
    pub(crate) fn lend(&self) -> Option<u32> {
        let beyond_depth = self.count() - self.map.geo.depth as usize;
        // Slots that are lent, and hold no frame of the ring once the next frame is published
        // (the bound keeps a slot for a frame copied by the writer). The newest frame is not
        // counted, although at depth 1 it leaves the ring then: a sink keeps it (basesink's
        // last sample) while upstream asks for the next frame's buffer, and lets it go before
        // the next frame is rendered. Counted, the one spare slot of depth 1 could never be
        // lent: every frame copied, or under `block` an acquire waiting for a slot only its
        // own frame frees.
        let head = self.head();
        let in_ring_from = self.map.geo.keep_from(head).min(head.saturating_sub(1));
        let lent_outside_ring = (0..self.count())
            .filter(|&s| match self.held(s) {
                holder::FILLING => true,
                holder::PUBLISHED => self.frame(s).is_none_or(|f| f < in_ring_from),
                _ => false,
            })
            .count();
        if lent_outside_ring >= beyond_depth {
            return None;
        }
        // Someone taking the chosen slot at the same moment makes `claim` fail; another slot
        // may still be free.
        for _ in 0..self.count() {
            let slot = self.free_slot(self.head(), false)?;
            if self.claim(slot, holder::FILLING) {
                return Some(slot);
            }
        }
        None
    }
}

fn is_pinned(mask: &[u64; MAX_PIN_WORDS], slot: u32) -> bool {
    mask.get(slot as usize / 64)
        .is_some_and(|bits| bits & (1 << (slot % 64)) != 0)
}

/// Lends slots of a writer and takes them back, from any thread and without the writer
/// (a GStreamer buffer pool hands out buffers in upstream's thread, and frees memory wherever
/// the last reference to it is dropped), and reaches the memory of lent slots. Keeps the
/// segment mapped while it lives.
#[derive(Clone)]
pub struct Lender {
    pub(crate) slots: Arc<Slots>,
}

impl Lender {
    /// Lends a free slot, as [`Writer::lend`] does, without the writer.
    pub fn lend(&self) -> Option<u32> {
        self.slots.lend()
    }

    /// [`Self::lend`], waiting up to `timeout` for a slot to become free (readers moving on,
    /// a slot given back) unless `cancelled()` says to stop; see [`Self::wake_waiters`].
    pub fn lend_within(&self, timeout: Duration, cancelled: impl Fn() -> bool) -> Option<u32> {
        if let Some(slot) = self.lend() {
            return Some(slot);
        }
        let waiting = &self.slots.map.header().writer_waiting;
        let registry = &self.slots.registry;
        let deadline = Instant::now() + timeout;
        let mut set = WaitSet::default();
        // Counted as a waiting writer: readers then wake it when they move on.
        waiting.fetch_add(1, Ordering::SeqCst);
        let lent = loop {
            // Before the check: what changes after it ends the sleep below.
            registry.arm(&mut set);
            if let Some(slot) = self.lend() {
                break Some(slot);
            }
            let now = Instant::now();
            if cancelled() || now >= deadline {
                break None;
            }
            registry.sleep(&set, (deadline - now).min(BLOCKED_WAIT_SLICE));
        };
        waiting.fetch_sub(1, Ordering::SeqCst);
        lent
    }

    /// Wakes every thread waiting for space (a `lend_within` about to be cancelled).
    pub fn wake_waiters(&self) {
        self.slots.registry.kick_space();
    }

    /// Where slot `slot` starts; `slot_capacity()` bytes are mapped there for as long as this
    /// lender (or a clone of it) lives. Writing them is only sound while the slot is lent to
    /// the caller and not published.
    pub fn slot_ptr(&self, slot: u32) -> *mut u8 {
        self.slots.map.slot_ptr_mut(slot)
    }

    pub fn slot_capacity(&self) -> u64 {
        self.slots.map.geo.slot_capacity
    }

    pub fn slot_count(&self) -> u32 {
        self.slots.count() as u32
    }

    /// Ends the loan of `slot`. A slot never published is emptied (readers never saw it and
    /// never will); a published one stays in the ring as the frame it holds. Giving back a
    /// slot that is not lent does nothing.
    pub fn give_back(&self, slot: u32) {
        let Some(held) = self.slots.holder.get(slot as usize) else {
            return;
        };
        let map = &self.slots.map;
        if held.load(Ordering::SeqCst) == holder::FILLING {
            // Nobody else touches a lent slot's descriptor, and the borrower has stopped
            // writing (it is giving the slot back); the stores happen before the slot can be
            // claimed again, which needs the SeqCst exchange below.
            self.slots.unpublish(slot);
        }
        let returned = [holder::FILLING, holder::PUBLISHED]
            .into_iter()
            .any(|from| {
                held.compare_exchange(from, holder::FREE, Ordering::SeqCst, Ordering::Relaxed)
                    .is_ok()
            });
        // SeqCst pairs with the writer's store of writer_waiting before it re-checks for a
        // free slot: either it sees this slot free, or we see it waiting and wake it.
        if returned && map.header().writer_waiting.load(Ordering::SeqCst) != 0 {
            self.slots.registry.kick_space();
        }
    }

    /// Whether `lender` lends the slots of the same writer as this one.
    pub fn same_as(&self, lender: &Lender) -> bool {
        Arc::ptr_eq(&self.slots, &lender.slots)
    }
}

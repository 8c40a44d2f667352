//! The reader table: a reader claims an entry (its lock byte, then its pid), and an entry
//! whose process died is freed by whoever finds it, writer or reader; a [`ReaderLease`] holds
//! an entry and its pins until the reader and every frame it pinned are gone.

use crate::layout::*;
use crate::segment::Mapping;
use crate::sys;
use crate::wait::WaitWord;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// Claims a free reader entry: lock its byte first, then compare-and-swap the pid in, so an
/// entry with a pid always has a lock while its process lives. An entry left by a dead reader
/// is freed on the way, so dead readers never lock new ones out, whatever the writer does
/// (busy, idle or stopped).
pub(crate) fn claim_entry(map: &Mapping, pid: u32) -> Option<u32> {
    for i in 0..map.geo.max_readers {
        let e = map.reader_entry(i);
        if e.pid.load(Ordering::Acquire) != 0 && free_if_dead(map, i).is_none() {
            continue;
        }
        let lock = READER_LOCK_BASE + i as u64;
        if !sys::try_lock_byte(&map.file, lock, false).unwrap_or(false) {
            continue;
        }
        // No store before the CAS: readers lock the byte shared, so another reader may be
        // claiming the same entry now, and a store here could land on its entry after it won
        // (an attached reader left `claiming`, uncounted by the writer). A free entry is
        // `claiming` already: whoever freed it stored that before `pid = 0`.
        if e.pid
            .compare_exchange(0, pid, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            map.control().readers_hwm.fetch_max(i + 1, Ordering::AcqRel);
            return Some(i);
        }
        sys::unlock_byte(&map.file, lock);
    }
    None
}

/// Frees reader entry `i` if the process that claimed it is gone (the kernel dropped its lock)
/// and returns that process's pid. The entry's lock byte is taken exclusively meanwhile: it
/// conflicts with a live holder's lock and with every claimer's (a claimer locks the byte before
/// its compare-and-swap), so the entry is never one that a live reader holds or is claiming,
/// and the writer and readers looking for an entry may all free entries at once.
pub(crate) fn free_if_dead(map: &Mapping, i: u32) -> Option<u32> {
    let e = map.reader_entry(i);
    if e.pid.load(Ordering::Acquire) == 0 {
        return None;
    }
    let lock = READER_LOCK_BASE + i as u64;
    if !sys::try_lock_byte(&map.file, lock, true).unwrap_or(false) {
        return None;
    }
    // Read again under the lock: the reader may have detached (and unlocked) meanwhile.
    let pid = e.pid.load(Ordering::Acquire);
    if pid != 0 {
        for w in 0..map.geo.pin_words {
            map.pin_word(i, w).store(0, Ordering::Relaxed);
        }
        e.state.store(reader_state::CLAIMING, Ordering::Relaxed);
        e.session.store(0, Ordering::Relaxed);
        // Release: a claimer that sees pid 0 sees the entry free (claiming, no pins).
        e.pid.store(0, Ordering::Release);
    }
    sys::unlock_byte(&map.file, lock);
    (pid != 0).then_some(pid)
}

/// A reader's table entry and lock, shared by the `Reader` and every frame it pinned: the entry
/// (and so the pins the writer respects) lives until the last of them is dropped, so a buffer
/// that outlives its reader is never overwritten under it.
pub(crate) struct ReaderLease {
    pub(crate) map: Arc<Mapping>,
    index: u32,
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
    pub(crate) fn new(map: Arc<Mapping>, index: u32) -> Arc<ReaderLease> {
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
            index,
        })
    }

    pub(crate) fn add(&self, slot: u32) {
        self.held.fetch_add(1, Ordering::SeqCst);
        if self.counts[slot as usize].fetch_add(1, Ordering::SeqCst) == 0 {
            self.map
                .pin_word(self.index, slot / 64)
                .fetch_or(1 << (slot % 64), Ordering::SeqCst);
        }
    }

    pub(crate) fn remove(&self, slot: u32) {
        self.held.fetch_sub(1, Ordering::SeqCst);
        if self.counts[slot as usize].fetch_sub(1, Ordering::SeqCst) == 1 {
            self.map
                .pin_word(self.index, slot / 64)
                .fetch_and(!(1 << (slot % 64)), Ordering::SeqCst);
            if self.map.control().writer_waiting.load(Ordering::SeqCst) != 0 {
                self.map.kick(WaitWord::Space);
            }
        }
    }
}

impl Drop for ReaderLease {
    /// Frees the table entry: pins, state, pid, then the lock.
    fn drop(&mut self) {
        let e = self.map.reader_entry(self.index);
        for w in 0..self.map.geo.pin_words {
            self.map.pin_word(self.index, w).store(0, Ordering::Relaxed);
        }
        e.state.store(reader_state::CLAIMING, Ordering::Release);
        e.session.store(0, Ordering::Release);
        e.pid.store(0, Ordering::Release);
        sys::unlock_byte(&self.map.file, READER_LOCK_BASE + self.index as u64);
        self.map.kick(WaitWord::Space);
    }
}

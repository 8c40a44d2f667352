//! The reader table: a reader claims an entry (its lock byte, then its pid), and an entry
//! whose process died is freed by whoever finds it, writer or reader.

use crate::layout::*;
use crate::segment::Mapping;
use crate::sys;
use std::sync::atomic::Ordering;

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

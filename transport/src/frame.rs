//! A frame in the segment: its metadata ([`FrameInfo`]), its bytes while being copied
//! ([`SlotView`]), and how a held frame is found (`locate`) and read under the slot's seqlock
//! (`try_read`, `read_held`). Shared by readers, pins and observers.

use crate::error::Error;
use crate::layout::*;
use crate::segment::Mapping;
use std::sync::atomic::{Ordering, fence};

/// Metadata of a frame read from the segment. Times in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameInfo {
    pub number: u64,
    pub pts: Option<u64>,
    pub dts: Option<u64>,
    pub duration: Option<u64>,
    pub flags: u32,
    pub size: u64,
    pub caps_gen: u64,
    /// The writer's CLOCK_MONOTONIC time when it published the frame.
    pub write_time_ns: u64,
    /// Frames this reader missed between the previous frame it read and this one.
    pub missed_before: u64,
}

/// The bytes of a slot as they were while being copied. Only a copy validated by the seqlock
/// or made under a pin that was honoured throughout (the read returning `Frame`) may be trusted; the view itself offers no borrowing access.
pub struct SlotView {
    pub(crate) ptr: *const u8,
    pub(crate) len: usize,
}

impl SlotView {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies the slot into `dst` (which must be `len()` bytes).
    pub fn copy_to(&self, dst: &mut [u8]) {
        assert_eq!(dst.len(), self.len, "destination size");
        // SAFETY: ptr..ptr+len lies inside a mapped slot (len <= slot_capacity was checked).
        // The writer may be overwriting it concurrently: in that case the bytes are garbage and
        // the caller's read is discarded by the seqlock check, never returned.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr, dst.as_mut_ptr(), self.len) };
    }
}

pub(crate) enum TryRead {
    Got(FrameInfo),
    /// The frame is no longer in its slot (overwritten, or being overwritten).
    Gone,
}

/// Random access: copies frame `n` if the ring still holds it.
pub(crate) fn read_held(
    map: &Mapping,
    n: u64,
    mut copy: impl FnMut(&FrameInfo, &SlotView),
) -> Result<Option<FrameInfo>, Error> {
    let head = checked_head(map)?;
    if n >= head || n < oldest_held(map, head) {
        return Ok(None);
    }
    Ok(match try_read(map, n, &mut copy)? {
        TryRead::Got(info) => Some(info),
        TryRead::Gone => None,
    })
}

/// The writer's head counter, or a corrupt-segment error when it is outside its range
/// ([`HEAD_LIMIT`]): frames past it cannot be named by the index, so a reader would otherwise
/// discard every frame and wait for ever without saying why.
pub(crate) fn checked_head(map: &Mapping) -> Result<u64, Error> {
    let head = map.header().head.load(Ordering::Acquire);
    if head >= HEAD_LIMIT {
        return Err(Error::Corrupt {
            field: "head".into(),
            expected: format!("a frame count below 2^48 ({HEAD_LIMIT})"),
            found: head,
        });
    }
    Ok(head)
}

/// Frame numbers below this are gone from the ring (or cleared).
pub(crate) fn oldest_held(map: &Mapping, head: u64) -> u64 {
    let floor = map.header().clear_floor.load(Ordering::Acquire);
    head.saturating_sub(map.geo.depth as u64)
        .max(floor)
        .min(head)
}

/// Locates frame `n`: its slot and a consistent snapshot of the descriptor, with the seq
/// word observed. Gone if the index or the slot no longer holds `n`.
pub(crate) fn locate(map: &Mapping, n: u64) -> Result<Option<(u32, u64, FrameInfo)>, Error> {
    let entry = map.index(n).load(Ordering::Acquire);
    let Some((frame, slot)) = split_index_entry(entry) else {
        return Ok(None);
    };
    if frame != n {
        return Ok(None);
    }
    let slot = map.geo.check_slot(slot)?;
    let d = map.desc(slot);
    let s1 = d.seq.load(Ordering::Acquire);
    if s1 % 2 == 1 {
        return Ok(None);
    }
    let time = |v: u64| (v != NO_TIME).then_some(v);
    let info = FrameInfo {
        number: d.frame.load(Ordering::Relaxed),
        pts: time(d.pts.load(Ordering::Relaxed)),
        dts: time(d.dts.load(Ordering::Relaxed)),
        duration: time(d.duration.load(Ordering::Relaxed)),
        flags: d.flags.load(Ordering::Relaxed) as u32,
        size: d.size.load(Ordering::Relaxed),
        caps_gen: d.caps_gen.load(Ordering::Relaxed),
        write_time_ns: d.write_time_ns.load(Ordering::Relaxed),
        missed_before: 0,
    };
    if info.number != n {
        return Ok(None);
    }
    if info.size > map.geo.slot_capacity {
        fence(Ordering::Acquire);
        if d.seq.load(Ordering::Relaxed) == s1 {
            return Err(Error::Corrupt {
                field: "slot size".into(),
                expected: format!("0..={}", map.geo.slot_capacity),
                found: info.size,
            });
        }
        return Ok(None);
    }
    Ok(Some((slot, s1, info)))
}

pub(crate) fn try_read(
    map: &Mapping,
    n: u64,
    copy: &mut impl FnMut(&FrameInfo, &SlotView),
) -> Result<TryRead, Error> {
    let Some((slot, s1, info)) = locate(map, n)? else {
        return Ok(TryRead::Gone);
    };
    let view = SlotView {
        ptr: map.slot_ptr(slot),
        len: info.size as usize,
    };
    copy(&info, &view);
    // Seqlock validation: if the writer touched the slot while we copied, the copy is
    // discarded. The fence keeps the copy's loads before the re-check.
    fence(Ordering::Acquire);
    if map.desc(slot).seq.load(Ordering::Relaxed) != s1 {
        return Ok(TryRead::Gone);
    }
    Ok(TryRead::Got(info))
}

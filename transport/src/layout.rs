//! The segment's byte map. Native endianness and alignment: a segment is shared between
//! processes of one machine only. docs/LAYOUT.md mirrors this file for non-Rust readers.
//!
//! ```text
//! 0                header page: Header (geometry, identity, live counters)
//! CAPS_OFFSET      caps table: CAPS_ENTRIES x CapsEntry (a small history of caps strings)
//! control_offset   control region, the only part readers map writable:
//!                    ControlHeader (futex words), ReaderEntry x max_readers,
//!                    pin bitmaps (max_readers x pin_words u64)
//! index_offset     ring index: depth x u64 (frame number + 1) << 16 | slot
//!                  slot descriptors: slot_count x SlotDesc
//! data_offset      slot data: slot_count x slot_stride (page-aligned)
//! ```

use crate::error::Error;
use crate::types::{Backpressure, Layout, StreamState};
use std::mem::{offset_of, size_of};
use std::sync::atomic::{AtomicU32, AtomicU64};

pub const MAGIC: [u8; 8] = *b"SHMFRAME";
pub const LAYOUT_VERSION: u32 = 1;
pub const PAGE: u64 = 4096;

pub const MAX_DEPTH: u32 = 1024;
pub const MAX_SPARE_SLOTS: u32 = 64;
pub const MAX_READERS: u32 = 64;
/// Largest slot: 256 MiB, far above 8K RGBA 16-bit.
pub const MAX_SLOT_CAPACITY: u64 = 256 << 20;

pub const CAPS_OFFSET: u64 = 1024;
pub const CAPS_ENTRIES: u64 = 4;
pub const CAPS_ENTRY_SIZE: u64 = 1792;
pub const CAPS_CAPACITY: usize = (CAPS_ENTRY_SIZE as usize) - size_of::<CapsEntryHead>();
/// Header page plus caps table.
pub const HEADER_REGION: u64 = CAPS_OFFSET + CAPS_ENTRIES * CAPS_ENTRY_SIZE;

pub const READER_ENTRY_SIZE: u64 = 128;
pub const SLOT_DESC_SIZE: u64 = 128;
pub const CONTROL_HEADER_SIZE: u64 = 64;

/// Byte offset of the writer's OFD lock; reader `i` locks `READER_LOCK_BASE + i`.
pub const WRITER_LOCK_BYTE: u64 = 0;
pub const READER_LOCK_BASE: u64 = 1;

/// The head counter (frames published) stays below this: an index entry keeps 48 bits for
/// `frame + 1`. No writer gets there (2^48 frames are 8,900 years at 1,000 fps), so a reader
/// finding a head at or above it is looking at a corrupt segment.
pub const HEAD_LIMIT: u64 = 1 << 48;

/// Index entry value meaning "no frame".
pub const INDEX_EMPTY: u64 = 0;
pub const NO_TIME: u64 = u64::MAX;

pub mod stream_state {
    pub const STARTING: u32 = 0;
    pub const RUNNING: u32 = 1;
    pub const EOS: u32 = 2;
    pub const CLOSED: u32 = 3;
}

impl StreamState {
    /// Decodes the header's `stream_state` word; it lives beside the codes it reads.
    pub(crate) fn from_code(code: u32) -> StreamState {
        match code {
            stream_state::STARTING => StreamState::Starting,
            stream_state::RUNNING => StreamState::Running,
            stream_state::EOS => StreamState::Eos,
            _ => StreamState::Closed,
        }
    }
}

pub mod reader_state {
    pub const CLAIMING: u32 = 0;
    pub const ACTIVE: u32 = 1;
    pub const EVICTED: u32 = 2;
}

/// Immutable after creation (written before the file becomes visible under its name), except
/// the atomics at the end which the writer updates live.
#[repr(C)]
pub struct Header {
    pub magic: [u8; 8],
    pub version: u32,
    pub layout: u32,
    pub depth: u32,
    pub slot_count: u32,
    pub backpressure: u32,
    pub max_readers: u32,
    pub pin_words: u32,
    pub writer_pid: u32,
    pub control_offset: u64,
    pub control_len: u64,
    pub index_offset: u64,
    pub desc_offset: u64,
    pub data_offset: u64,
    pub slot_stride: u64,
    pub slot_capacity: u64,
    pub total_len: u64,
    pub writer_start_ticks: u64,
    pub writer_session: u64,
    pub created_realtime_ns: u64,
    pub reader_timeout_ns: u64,
    // Live fields.
    pub stream_state: AtomicU32,
    pub full: AtomicU32,
    pub heartbeat_ns: AtomicU64,
    /// Number of frames published; the next frame's number.
    pub head: AtomicU64,
    /// Frames below this number were cleared: readers skip them.
    pub clear_floor: AtomicU64,
    pub caps_gen: AtomicU64,
    pub frames_written: AtomicU64,
    pub frames_dropped: AtomicU64,
    pub full_events: AtomicU64,
    pub readers_evicted: AtomicU64,
}

#[repr(C)]
pub struct CapsEntryHead {
    /// Seqlock word: odd while the writer rewrites this entry.
    pub seq: AtomicU64,
    pub generation: AtomicU64,
    pub len: AtomicU64,
}

#[repr(C)]
pub struct ControlHeader {
    /// Bumped by the writer when it publishes a frame or changes stream state while readers
    /// wait; readers futex-wait on it. A reader bumps it too, to interrupt its own wait.
    pub frame_seq: AtomicU32,
    pub frame_waiters: AtomicU32,
    /// Bumped by readers when they advance while the writer waits for space.
    pub space_seq: AtomicU32,
    pub writer_waiting: AtomicU32,
    /// One past the highest reader entry ever claimed: the writer scans no further.
    pub readers_hwm: AtomicU32,
}

#[repr(C)]
pub struct ReaderEntry {
    /// 0 when the entry is free; claimed by compare-and-swap to the reader's pid.
    pub pid: AtomicU32,
    pub state: AtomicU32,
    pub session: AtomicU64,
    pub heartbeat_ns: AtomicU64,
    /// The next frame number this reader will read.
    pub cursor: AtomicU64,
    pub frames_read: AtomicU64,
    pub frames_missed: AtomicU64,
    pub attached_ns: AtomicU64,
    /// Incremented by the writer when it evicts this reader.
    pub evictions: AtomicU64,
}

/// Types the segment's bytes may be viewed as in place: `repr(C)` or primitive, made only of
/// integers, byte arrays and atomic integers, so that every bit pattern is a valid value
/// (another process may have written anything there).
///
/// # Safety
///
/// Implement only for such types: `Mapping` hands out `&T` for any suitably placed bytes of
/// the segment.
pub(crate) unsafe trait Plain {}

// SAFETY: atomic integers are valid for every bit pattern.
unsafe impl Plain for AtomicU32 {}
// SAFETY: as above.
unsafe impl Plain for AtomicU64 {}
// SAFETY: repr(C), byte arrays, integers and atomic integers only.
unsafe impl Plain for Header {}
// SAFETY: as above.
unsafe impl Plain for CapsEntryHead {}
// SAFETY: as above.
unsafe impl Plain for ControlHeader {}
// SAFETY: as above.
unsafe impl Plain for ReaderEntry {}
// SAFETY: as above.
unsafe impl Plain for SlotDesc {}

#[repr(C)]
pub struct SlotDesc {
    /// Seqlock word: odd while the writer fills the slot.
    pub seq: AtomicU64,
    pub frame: AtomicU64,
    pub pts: AtomicU64,
    pub dts: AtomicU64,
    pub duration: AtomicU64,
    pub size: AtomicU64,
    pub write_time_ns: AtomicU64,
    pub caps_gen: AtomicU64,
    pub flags: AtomicU64,
}

const _: () = {
    assert!(size_of::<Header>() as u64 <= CAPS_OFFSET);
    assert!(size_of::<ControlHeader>() as u64 <= CONTROL_HEADER_SIZE);
    assert!(size_of::<ReaderEntry>() as u64 <= READER_ENTRY_SIZE);
    assert!(size_of::<SlotDesc>() as u64 <= SLOT_DESC_SIZE);
    assert!(HEADER_REGION.is_multiple_of(PAGE));
};

pub fn index_entry(frame: u64, slot: u32) -> u64 {
    ((frame + 1) << 16) | slot as u64
}

/// (frame, slot) of a non-empty index entry.
pub fn split_index_entry(v: u64) -> Option<(u64, u32)> {
    if v == INDEX_EMPTY {
        return None;
    }
    // `v >> 16 == 0` with low bits set is never written by a writer: treat it as empty too.
    (v >> 16)
        .checked_sub(1)
        .map(|frame| (frame, (v & 0xffff) as u32))
}

pub fn page_round(n: u64) -> Option<u64> {
    n.checked_add(PAGE - 1).map(|v| v & !(PAGE - 1))
}

/// Every offset and size a process needs to address a segment, computed by the writer or
/// parsed and checked by a reader. Holding one means the mapping of `total_len` bytes covers
/// every region named here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub layout: Layout,
    pub depth: u32,
    pub slot_count: u32,
    pub backpressure: Backpressure,
    pub max_readers: u32,
    pub pin_words: u32,
    pub control_offset: u64,
    pub control_len: u64,
    pub index_offset: u64,
    pub desc_offset: u64,
    pub data_offset: u64,
    pub slot_stride: u64,
    pub slot_capacity: u64,
    pub total_len: u64,
}

impl Geometry {
    /// The geometry a writer creates. Errors name the offending value and its range.
    pub fn compute(
        layout: Layout,
        depth: u32,
        spare_slots: u32,
        backpressure: Backpressure,
        slot_capacity: u64,
    ) -> Result<Geometry, Error> {
        let depth = match layout {
            Layout::Double => 2,
            Layout::Ring => depth,
        };
        if !(1..=MAX_DEPTH).contains(&depth) {
            return Err(Error::InvalidConfig(format!(
                "depth {depth} is out of range: expected 1..={MAX_DEPTH}"
            )));
        }
        if spare_slots > MAX_SPARE_SLOTS {
            return Err(Error::InvalidConfig(format!(
                "spare slots {spare_slots} is out of range: expected 0..={MAX_SPARE_SLOTS}"
            )));
        }
        if !(1..=MAX_SLOT_CAPACITY).contains(&slot_capacity) {
            return Err(Error::InvalidConfig(format!(
                "slot size {slot_capacity} bytes is out of range: expected 1..={MAX_SLOT_CAPACITY}"
            )));
        }
        let slot_count = depth + spare_slots;
        let max_readers = MAX_READERS;
        let pin_words = slot_count.div_ceil(64);
        let control_offset = HEADER_REGION;
        let control_len = page_round(
            CONTROL_HEADER_SIZE
                + max_readers as u64 * READER_ENTRY_SIZE
                + max_readers as u64 * pin_words as u64 * 8,
        )
        .expect("small");
        let index_offset = control_offset + control_len;
        let desc_offset = index_offset + depth as u64 * 8;
        let data_offset = page_round(desc_offset + slot_count as u64 * SLOT_DESC_SIZE).unwrap();
        let slot_stride = page_round(slot_capacity).unwrap();
        let total_len = data_offset
            .checked_add(slot_stride.checked_mul(slot_count as u64).unwrap())
            .unwrap();
        Ok(Geometry {
            layout,
            depth,
            slot_count,
            backpressure,
            max_readers,
            pin_words,
            control_offset,
            control_len,
            index_offset,
            desc_offset,
            data_offset,
            slot_stride,
            slot_capacity,
            total_len,
        })
    }

    /// Parses and checks a header read from an untrusted file of `file_len` bytes. `bytes` is
    /// the start of the file (fewer bytes than a header means a truncated file). Every number is
    /// checked against the others and against `file_len` before anything is derived from it.
    pub fn parse(bytes: &[u8], file_len: u64) -> Result<Geometry, Error> {
        let magic_len = MAGIC.len();
        if bytes.len() < magic_len || bytes[..magic_len] != MAGIC {
            if bytes.len() < magic_len && MAGIC.starts_with(bytes) {
                return Err(Error::Truncated {
                    what: "header".into(),
                    expected: HEADER_REGION,
                    found: bytes.len() as u64,
                });
            }
            return Err(Error::ForeignFile {
                path: String::new(),
            });
        }
        let u32_at = |off: usize| -> Option<u32> {
            bytes
                .get(off..off + 4)
                .map(|b| u32::from_ne_bytes(b.try_into().unwrap()))
        };
        let u64_at = |off: usize| -> Option<u64> {
            bytes
                .get(off..off + 8)
                .map(|b| u64::from_ne_bytes(b.try_into().unwrap()))
        };
        let truncated = |found: u64| Error::Truncated {
            what: "header".into(),
            expected: HEADER_REGION,
            found,
        };
        let version = u32_at(offset_of!(Header, version)).ok_or(truncated(bytes.len() as u64))?;
        if version != LAYOUT_VERSION {
            return Err(Error::VersionMismatch {
                expected: LAYOUT_VERSION,
                found: version,
            });
        }
        if (bytes.len() as u64) < HEADER_REGION || file_len < HEADER_REGION {
            return Err(truncated((bytes.len() as u64).min(file_len)));
        }
        let f32 = |off: usize| u32_at(off).unwrap();
        let f64_ = |off: usize| u64_at(off).unwrap();
        let corrupt = |field: &str, expected: String, found: u64| Error::Corrupt {
            field: field.to_string(),
            expected,
            found,
        };

        let layout = match f32(offset_of!(Header, layout)) {
            1 => Layout::Double,
            2 => Layout::Ring,
            v => return Err(corrupt("layout", "1 (double) or 2 (ring)".into(), v as u64)),
        };
        let depth = f32(offset_of!(Header, depth));
        if !(1..=MAX_DEPTH).contains(&depth) || (layout == Layout::Double && depth != 2) {
            return Err(corrupt(
                "depth",
                format!("1..={MAX_DEPTH} (2 for double)"),
                depth as u64,
            ));
        }
        let slot_count = f32(offset_of!(Header, slot_count));
        if slot_count < depth || slot_count > depth + MAX_SPARE_SLOTS {
            return Err(corrupt(
                "slot_count",
                format!("{depth}..={}", depth + MAX_SPARE_SLOTS),
                slot_count as u64,
            ));
        }
        let backpressure = f32(offset_of!(Header, backpressure));
        if backpressure > 2 {
            return Err(corrupt("backpressure", "0..=2".into(), backpressure as u64));
        }
        let max_readers = f32(offset_of!(Header, max_readers));
        if max_readers != MAX_READERS {
            return Err(corrupt(
                "max_readers",
                MAX_READERS.to_string(),
                max_readers as u64,
            ));
        }
        let pin_words = f32(offset_of!(Header, pin_words));
        if pin_words != slot_count.div_ceil(64) {
            return Err(corrupt(
                "pin_words",
                slot_count.div_ceil(64).to_string(),
                pin_words as u64,
            ));
        }
        let slot_capacity = f64_(offset_of!(Header, slot_capacity));
        if !(1..=MAX_SLOT_CAPACITY).contains(&slot_capacity) {
            return Err(corrupt(
                "slot_capacity",
                format!("1..={MAX_SLOT_CAPACITY}"),
                slot_capacity,
            ));
        }
        // Recompute the whole map from the validated numbers and require the stored offsets to
        // match it: no stored offset is ever used unless it equals a value derived from bounded
        // inputs with checked arithmetic.
        let bp = Backpressure::from_code(backpressure);
        let expected = Geometry::compute(layout, depth, slot_count - depth, bp, slot_capacity)?;
        for (field, off, want) in [
            (
                "control_offset",
                offset_of!(Header, control_offset),
                expected.control_offset,
            ),
            (
                "control_len",
                offset_of!(Header, control_len),
                expected.control_len,
            ),
            (
                "index_offset",
                offset_of!(Header, index_offset),
                expected.index_offset,
            ),
            (
                "desc_offset",
                offset_of!(Header, desc_offset),
                expected.desc_offset,
            ),
            (
                "data_offset",
                offset_of!(Header, data_offset),
                expected.data_offset,
            ),
            (
                "slot_stride",
                offset_of!(Header, slot_stride),
                expected.slot_stride,
            ),
            (
                "total_len",
                offset_of!(Header, total_len),
                expected.total_len,
            ),
        ] {
            let found = f64_(off);
            if found != want {
                return Err(corrupt(field, want.to_string(), found));
            }
        }
        if file_len < expected.total_len {
            return Err(Error::Truncated {
                what: "segment".into(),
                expected: expected.total_len,
                found: file_len,
            });
        }
        Ok(expected)
    }

    /// Number of slots whose index lies in `0..slot_count`; used to bounds-check a slot number
    /// read from shared memory.
    pub fn check_slot(&self, slot: u32) -> Result<u32, Error> {
        if slot < self.slot_count {
            Ok(slot)
        } else {
            Err(Error::Corrupt {
                field: "index slot".into(),
                expected: format!("0..{}", self.slot_count),
                found: slot as u64,
            })
        }
    }

    pub fn reader_entry_offset(&self, i: u32) -> u64 {
        self.control_offset + CONTROL_HEADER_SIZE + i as u64 * READER_ENTRY_SIZE
    }

    pub fn pin_word_offset(&self, reader: u32, word: u32) -> u64 {
        self.control_offset
            + CONTROL_HEADER_SIZE
            + self.max_readers as u64 * READER_ENTRY_SIZE
            + (reader as u64 * self.pin_words as u64 + word as u64) * 8
    }

    pub fn desc_offset_of(&self, slot: u32) -> u64 {
        self.desc_offset + slot as u64 * SLOT_DESC_SIZE
    }

    /// The oldest frame the ring still holds once frame `n` is published: frames below it
    /// have left the ring, and their slots may be reused.
    pub fn keep_from(&self, n: u64) -> u64 {
        (n + 1).saturating_sub(self.depth as u64)
    }

    pub fn slot_data_offset(&self, slot: u32) -> u64 {
        self.data_offset + slot as u64 * self.slot_stride
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_are_page_aligned_and_ordered() {
        for (layout, depth, spare, cap) in [
            (Layout::Ring, 1, 0, 1),
            (Layout::Ring, 4, 2, 1920 * 1080 * 4),
            (Layout::Ring, MAX_DEPTH, MAX_SPARE_SLOTS, 64),
            (Layout::Double, 7, 1, 300_000),
        ] {
            let g = Geometry::compute(layout, depth, spare, Backpressure::Block, cap).unwrap();
            assert_eq!(g.control_offset % PAGE, 0);
            assert_eq!(g.index_offset % PAGE, 0);
            assert_eq!(g.data_offset % PAGE, 0);
            assert_eq!(g.slot_stride % PAGE, 0);
            assert!(g.slot_stride >= cap);
            assert!(g.desc_offset_of(g.slot_count) <= g.data_offset);
            assert!(g.pin_word_offset(g.max_readers, 0) <= g.index_offset);
            assert_eq!(
                g.total_len,
                g.data_offset + g.slot_count as u64 * g.slot_stride
            );
            if layout == Layout::Double {
                assert_eq!(g.depth, 2);
            }
        }
    }

    #[test]
    fn segment_size_is_header_plus_slots() {
        let g =
            Geometry::compute(Layout::Ring, 4, 0, Backpressure::Block, 1920 * 1080 * 4).unwrap();
        // Header, caps, control, index and descriptors fit in a few pages; the rest is slots.
        assert_eq!(g.total_len - 4 * g.slot_stride, g.data_offset);
        assert!(g.data_offset <= 8 * PAGE, "{}", g.data_offset);
    }

    #[test]
    fn compute_refuses_out_of_range_values() {
        let e = Geometry::compute(Layout::Ring, 0, 0, Backpressure::Block, 10).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid configuration: depth 0 is out of range: expected 1..=1024"
        );
        assert!(Geometry::compute(Layout::Ring, 1025, 0, Backpressure::Block, 10).is_err());
        assert!(Geometry::compute(Layout::Ring, 4, 65, Backpressure::Block, 10).is_err());
        assert!(Geometry::compute(Layout::Ring, 4, 0, Backpressure::Block, 0).is_err());
        assert!(
            Geometry::compute(
                Layout::Ring,
                4,
                0,
                Backpressure::Block,
                MAX_SLOT_CAPACITY + 1
            )
            .is_err()
        );
    }

    /// docs/LAYOUT.md documents these offsets for non-Rust readers: keep both in step.
    #[test]
    fn offsets_match_the_documented_layout() {
        let header = [
            (offset_of!(Header, magic), 0),
            (offset_of!(Header, version), 8),
            (offset_of!(Header, layout), 12),
            (offset_of!(Header, depth), 16),
            (offset_of!(Header, slot_count), 20),
            (offset_of!(Header, backpressure), 24),
            (offset_of!(Header, max_readers), 28),
            (offset_of!(Header, pin_words), 32),
            (offset_of!(Header, writer_pid), 36),
            (offset_of!(Header, control_offset), 40),
            (offset_of!(Header, control_len), 48),
            (offset_of!(Header, index_offset), 56),
            (offset_of!(Header, desc_offset), 64),
            (offset_of!(Header, data_offset), 72),
            (offset_of!(Header, slot_stride), 80),
            (offset_of!(Header, slot_capacity), 88),
            (offset_of!(Header, total_len), 96),
            (offset_of!(Header, writer_start_ticks), 104),
            (offset_of!(Header, writer_session), 112),
            (offset_of!(Header, created_realtime_ns), 120),
            (offset_of!(Header, reader_timeout_ns), 128),
            (offset_of!(Header, stream_state), 136),
            (offset_of!(Header, full), 140),
            (offset_of!(Header, heartbeat_ns), 144),
            (offset_of!(Header, head), 152),
            (offset_of!(Header, clear_floor), 160),
            (offset_of!(Header, caps_gen), 168),
            (offset_of!(Header, frames_written), 176),
            (offset_of!(Header, frames_dropped), 184),
            (offset_of!(Header, full_events), 192),
            (offset_of!(Header, readers_evicted), 200),
        ];
        for (i, (actual, documented)) in header.iter().enumerate() {
            assert_eq!(actual, documented, "header field #{i}");
        }
        assert_eq!(size_of::<Header>(), 208);
        assert_eq!(size_of::<CapsEntryHead>(), 24);
        assert_eq!(CAPS_CAPACITY, 1768);
        assert_eq!(offset_of!(ControlHeader, readers_hwm), 16);
        for (actual, documented) in [
            (offset_of!(ReaderEntry, pid), 0),
            (offset_of!(ReaderEntry, state), 4),
            (offset_of!(ReaderEntry, session), 8),
            (offset_of!(ReaderEntry, heartbeat_ns), 16),
            (offset_of!(ReaderEntry, cursor), 24),
            (offset_of!(ReaderEntry, frames_read), 32),
            (offset_of!(ReaderEntry, frames_missed), 40),
            (offset_of!(ReaderEntry, attached_ns), 48),
            (offset_of!(ReaderEntry, evictions), 56),
            (offset_of!(SlotDesc, seq), 0),
            (offset_of!(SlotDesc, frame), 8),
            (offset_of!(SlotDesc, pts), 16),
            (offset_of!(SlotDesc, dts), 24),
            (offset_of!(SlotDesc, duration), 32),
            (offset_of!(SlotDesc, size), 40),
            (offset_of!(SlotDesc, write_time_ns), 48),
            (offset_of!(SlotDesc, caps_gen), 56),
            (offset_of!(SlotDesc, flags), 64),
        ] {
            assert_eq!(actual, documented);
        }
    }

    #[test]
    fn index_entries_round_trip() {
        assert_eq!(split_index_entry(INDEX_EMPTY), None);
        assert_eq!(split_index_entry(5), None, "slot bits without a frame");
        for (f, s) in [(0, 0), (1, 5), ((1 << 47) - 2, 1087)] {
            assert_eq!(split_index_entry(index_entry(f, s)), Some((f, s)));
        }
    }
}

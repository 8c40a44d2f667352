//! The segment's byte map. Native endianness and alignment: a segment is shared between
//! processes of one machine only. docs/LAYOUT.md mirrors this file for non-Rust readers.
//!
//! ```text
//! 0                header page: Header (geometry, identity, live counters)
//! CAPS_OFFSET      caps table: CAPS_ENTRIES x CapsEntry (a small history of caps strings)
//! readers_offset   reader table: MirrorEntry x max_readers, the writer's copy of what it
//!                  knows of each attached reader (for observers; readers write nothing here),
//!                  then the union of all readers' pins (u64 per 64 slots)
//! index_offset     ring index: depth x u64 (frame number + 1) << 16 | slot
//!                  slot descriptors: slot_count x SlotDesc
//! data_offset      slot data: slot_count x slot_stride (page-aligned)
//! ```
//!
//! Nothing in this file is writable by readers: the file is the writer's alone. Each reader
//! writes only its own control page ([`ControlPage`]), a sealed memfd the writer created and
//! handed over the stream's socket (see `registry`).

use crate::error::Error;
use crate::types::{Backpressure, Layout, StreamState};
use std::mem::{offset_of, size_of};
use std::sync::atomic::{AtomicU32, AtomicU64};

pub const MAGIC: [u8; 8] = *b"SHMFRAME";
pub const LAYOUT_VERSION: u32 = 3;
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

pub const MIRROR_ENTRY_SIZE: u64 = 128;
pub const SLOT_DESC_SIZE: u64 = 128;

/// Byte offset of the writer's OFD lock: held while the writer lives.
pub const WRITER_LOCK_BYTE: u64 = 0;

/// Size of a reader's control page (a sealed memfd, see [`ControlPage`]).
pub const CONTROL_PAGE_LEN: u64 = PAGE;
/// Offset of the pin bitmap in a control page.
pub const CONTROL_PINS_OFFSET: u64 = 128;

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

/// A reader's state as the writer records it (control page and reader table).
pub mod reader_state {
    /// Reader table only: no reader in this entry.
    pub const FREE: u32 = 0;
    pub const ACTIVE: u32 = 1;
    /// The reader held the writer up for longer than the reader timeout: neither its cursor
    /// nor its pins count until it rejoins.
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
    pub readers_offset: u64,
    pub readers_len: u64,
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
    /// Threads of the writer waiting for room or readers: while non-zero, a reader that moves
    /// its cursor or drops a pin sends one byte on its socket to wake the writer.
    pub writer_waiting: AtomicU32,
}

#[repr(C)]
pub struct CapsEntryHead {
    /// Seqlock word: odd while the writer rewrites this entry.
    pub seq: AtomicU64,
    pub generation: AtomicU64,
    pub len: AtomicU64,
}

/// A reader's control page: a memfd of [`CONTROL_PAGE_LEN`] bytes the writer creates, seals
/// against shrinking and growing, and passes to that reader alone; both map it read-write.
/// Written by the reader except where noted. The writer trusts nothing it reads here: every
/// value is clamped or checked, and what a reader writes affects only that reader.
#[repr(C)]
pub struct ControlPage {
    /// The word the reader futex-waits on for a frame; the writer bumps it and wakes the
    /// reader when `sleeping` says it sleeps, and so does the reader's own interrupt.
    pub wake_seq: AtomicU32,
    /// Non-zero while the reader is about to sleep or sleeps on `wake_seq`; the writer clears
    /// it as it wakes the reader.
    pub sleeping: AtomicU32,
    /// Written by the writer: [`reader_state::ACTIVE`] or [`reader_state::EVICTED`].
    pub state: AtomicU32,
    /// Non-zero once the reader is closed but frames it pinned are still held: its cursor no
    /// longer counts, its pins do.
    pub detaching: AtomicU32,
    /// The next frame number this reader will read.
    pub cursor: AtomicU64,
    pub frames_read: AtomicU64,
    pub frames_missed: AtomicU64,
    /// The reader's CLOCK_MONOTONIC at its last read or wait slice.
    pub heartbeat_ns: AtomicU64,
    /// Written by the writer: times it evicted this reader.
    pub evictions: AtomicU64,
    /// The `evictions` count the reader has rejoined after (it skipped to the oldest frame
    /// held): the writer counts an evicted reader again once this reaches its count.
    pub rejoined: AtomicU64,
    /// The word the writer's waiting threads futex-wait on (with every other reader's): the
    /// reader bumps it and wakes them after it moves its cursor, drops a pin or rejoins,
    /// while the header's `writer_waiting` says someone waits.
    pub progress_seq: AtomicU32,
    /// Written by the writer: the value of `progress_seq` its latest waiting thread took
    /// before it checked its condition. While the two differ the reader already woke it
    /// since, and needs not wake it again.
    pub progress_armed: AtomicU32,
}

/// The writer's copy of one reader's state in the segment file, for observers.
#[repr(C)]
pub struct MirrorEntry {
    /// 0 when the entry is free.
    pub pid: AtomicU32,
    pub state: AtomicU32,
    /// The reader's user (from the socket's peer credentials).
    pub uid: AtomicU32,
    pub pinned_slots: AtomicU32,
    pub session: AtomicU64,
    pub heartbeat_ns: AtomicU64,
    pub cursor: AtomicU64,
    pub frames_read: AtomicU64,
    pub frames_missed: AtomicU64,
    pub attached_ns: AtomicU64,
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
unsafe impl Plain for ControlPage {}
// SAFETY: as above.
unsafe impl Plain for MirrorEntry {}
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
    assert!(size_of::<ControlPage>() as u64 <= CONTROL_PINS_OFFSET);
    assert!(
        CONTROL_PINS_OFFSET + 8 * (MAX_DEPTH + MAX_SPARE_SLOTS).div_ceil(64) as u64
            <= CONTROL_PAGE_LEN
    );
    assert!(size_of::<MirrorEntry>() as u64 <= MIRROR_ENTRY_SIZE);
    assert!(size_of::<SlotDesc>() as u64 <= SLOT_DESC_SIZE);
    assert!(HEADER_REGION.is_multiple_of(PAGE));
};

/// Both messages of the handshake have one shape, [`MESSAGE_LEN`] bytes: a 4-byte magic +0,
/// three `u32` words +4, +8, +12 and two `u64` words +16, +24, native-endian.
const MESSAGE_LEN: usize = 32;
/// The reader's hello, the first message on its connection ([`HELLO_LEN`] bytes):
/// magic `SFRH` +0, `u32 version` +4, `u32 pid` +8 (informational: the writer uses the
/// socket's peer credentials), `u32 start` +12 (0 newest, 1 oldest), `u64 session` +16,
/// `u64 writer_session` +24 (of the segment the reader validated).
pub const HELLO_MAGIC: [u8; 4] = *b"SFRH";
pub const HELLO_LEN: usize = MESSAGE_LEN;
/// The writer's reply ([`REPLY_LEN`] bytes, with the control page's descriptor when `status`
/// is [`reply_status::OK`]): magic `SFRR` +0, `u32 status` +4, `u32 index` +8 (the reader's
/// table entry), `u32 page_len` +12, `u64 cursor` +16 (the first frame to read), `u64 0` +24.
pub const REPLY_MAGIC: [u8; 4] = *b"SFRR";
pub const REPLY_LEN: usize = MESSAGE_LEN;

pub mod reply_status {
    pub const OK: u32 = 0;
    pub const TABLE_FULL: u32 = 1;
    /// A malformed hello, or one for another segment of this writer.
    pub const REFUSED: u32 = 2;
}

/// One byte a reader sends before it closes its connection: a clean detach.
pub const MSG_BYE: u8 = 2;

/// A handshake message (see [`MESSAGE_LEN`]).
fn encode_message(magic: [u8; 4], words: [u32; 3], longs: [u64; 2]) -> [u8; MESSAGE_LEN] {
    let mut b = [0u8; MESSAGE_LEN];
    b[0..4].copy_from_slice(&magic);
    for (at, word) in (4..).step_by(4).zip(words) {
        b[at..at + 4].copy_from_slice(&word.to_ne_bytes());
    }
    for (at, long) in (16..).step_by(8).zip(longs) {
        b[at..at + 8].copy_from_slice(&long.to_ne_bytes());
    }
    b
}

/// The words of `b` if it is exactly a handshake message with `magic`.
fn decode_message(b: &[u8], magic: [u8; 4]) -> Option<([u32; 3], [u64; 2])> {
    if b.len() != MESSAGE_LEN || b[0..4] != magic {
        return None;
    }
    let u32_at = |at: usize| u32::from_ne_bytes(b[at..at + 4].try_into().unwrap());
    let u64_at = |at: usize| u64::from_ne_bytes(b[at..at + 8].try_into().unwrap());
    Some(([u32_at(4), u32_at(8), u32_at(12)], [u64_at(16), u64_at(24)]))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    pub pid: u32,
    pub oldest: bool,
    pub session: u64,
    pub writer_session: u64,
}

impl Hello {
    pub fn encode(&self) -> [u8; HELLO_LEN] {
        encode_message(
            HELLO_MAGIC,
            [LAYOUT_VERSION, self.pid, self.oldest as u32],
            [self.session, self.writer_session],
        )
    }

    /// `None` unless `b` is exactly a well-formed hello of this version.
    pub fn decode(b: &[u8]) -> Option<Hello> {
        let ([version, pid, start], [session, writer_session]) = decode_message(b, HELLO_MAGIC)?;
        (version == LAYOUT_VERSION && start <= 1).then_some(Hello {
            pid,
            oldest: start == 1,
            session,
            writer_session,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u32,
    pub index: u32,
    pub page_len: u32,
    pub cursor: u64,
}

impl Reply {
    pub fn encode(&self) -> [u8; REPLY_LEN] {
        encode_message(
            REPLY_MAGIC,
            [self.status, self.index, self.page_len],
            [self.cursor, 0],
        )
    }

    pub fn decode(b: &[u8]) -> Option<Reply> {
        let ([status, index, page_len], [cursor, _]) = decode_message(b, REPLY_MAGIC)?;
        Some(Reply {
            status,
            index,
            page_len,
            cursor,
        })
    }
}

/// The stream's socket, named after the writer's session so that its path is short whatever
/// the stream's name, and unique per writer instance.
pub fn socket_path(dir: &std::path::Path, writer_session: u64) -> std::path::PathBuf {
    dir.join(format!("{SOCKET_PREFIX}{writer_session:016x}"))
}

pub const SOCKET_PREFIX: &str = ".shmframe-sock-";

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
    pub readers_offset: u64,
    pub readers_len: u64,
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
        let readers_offset = HEADER_REGION;
        let readers_len = page_round(
            max_readers as u64 * MIRROR_ENTRY_SIZE
                + (MAX_DEPTH + MAX_SPARE_SLOTS).div_ceil(64) as u64 * 8,
        )
        .expect("small");
        let index_offset = readers_offset + readers_len;
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
            readers_offset,
            readers_len,
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
        // Each stored offset beside the one computed, under its field's name.
        macro_rules! stored_and_expected {
            ($($field:ident),+) => {
                [$((stringify!($field), offset_of!(Header, $field), expected.$field)),+]
            };
        }
        for (field, off, want) in stored_and_expected!(
            readers_offset,
            readers_len,
            index_offset,
            desc_offset,
            data_offset,
            slot_stride,
            total_len
        ) {
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

    pub fn mirror_entry_offset(&self, i: u32) -> u64 {
        self.readers_offset + i as u64 * MIRROR_ENTRY_SIZE
    }

    /// Word `w` of the union of every reader's pins, as the writer last computed it.
    pub fn pinned_union_offset(&self, w: u32) -> u64 {
        self.mirror_entry_offset(self.max_readers) + w as u64 * 8
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

    /// How many frames the readers together may keep pinned without ever holding up the
    /// writer, however long they are kept: the spare slots. Without `block` one more is
    /// harmless too, since the writer never waits for pins then (drop-oldest overwrites the
    /// oldest unpinned frame, drop-newest drops the incoming one).
    pub fn pin_budget(&self) -> u32 {
        let spare = self.slot_count - self.depth;
        if self.backpressure == Backpressure::Block {
            spare
        } else {
            spare.max(1)
        }
    }

    /// The most slots one reader that keeps to [`Self::pin_budget`] ever pins at once: the
    /// budget, and where the writer overwrites unread frames, one more for the frame it is
    /// copying; never every slot. An evicted reader holding more is not taken back (its pins
    /// would hold the writer up again at once), and where the writer overwrites unread frames
    /// (drop-oldest, double) one holding more when the writer finds no slot is evicted at once:
    /// it holds more than it was given (a hostile reader, or a forced zero-copy one whose
    /// downstream keeps buffers), and waiting for the reader timeout would drop every frame
    /// meanwhile, for every reader.
    pub fn pins_a_reader_may_hold(&self) -> u32 {
        let copy_pin = self.overwrites_unread_frames() as u32;
        (self.pin_budget() + copy_pin).min(self.slot_count - 1)
    }

    /// Whether the writer overwrites frames readers have not read rather than waiting for them
    /// or dropping the new frame: drop-oldest, and double (whose policy is drop-oldest).
    pub fn overwrites_unread_frames(&self) -> bool {
        self.backpressure == Backpressure::DropOldest
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
            assert_eq!(g.readers_offset % PAGE, 0);
            assert_eq!(g.index_offset % PAGE, 0);
            assert_eq!(g.data_offset % PAGE, 0);
            assert_eq!(g.slot_stride % PAGE, 0);
            assert!(g.slot_stride >= cap);
            assert!(g.desc_offset_of(g.slot_count) <= g.data_offset);
            assert!(g.mirror_entry_offset(g.max_readers) <= g.index_offset);
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
            (offset_of!(Header, readers_offset), 40),
            (offset_of!(Header, readers_len), 48),
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
            (offset_of!(Header, writer_waiting), 208),
        ];
        for (i, (actual, documented)) in header.iter().enumerate() {
            assert_eq!(actual, documented, "header field #{i}");
        }
        assert_eq!(size_of::<Header>(), 216);
        assert_eq!(size_of::<CapsEntryHead>(), 24);
        assert_eq!(CAPS_CAPACITY, 1768);
        for (actual, documented) in [
            (offset_of!(MirrorEntry, pid), 0),
            (offset_of!(MirrorEntry, state), 4),
            (offset_of!(MirrorEntry, uid), 8),
            (offset_of!(MirrorEntry, pinned_slots), 12),
            (offset_of!(MirrorEntry, session), 16),
            (offset_of!(MirrorEntry, heartbeat_ns), 24),
            (offset_of!(MirrorEntry, cursor), 32),
            (offset_of!(MirrorEntry, frames_read), 40),
            (offset_of!(MirrorEntry, frames_missed), 48),
            (offset_of!(MirrorEntry, attached_ns), 56),
            (offset_of!(MirrorEntry, evictions), 64),
            (offset_of!(ControlPage, wake_seq), 0),
            (offset_of!(ControlPage, sleeping), 4),
            (offset_of!(ControlPage, state), 8),
            (offset_of!(ControlPage, detaching), 12),
            (offset_of!(ControlPage, cursor), 16),
            (offset_of!(ControlPage, frames_read), 24),
            (offset_of!(ControlPage, frames_missed), 32),
            (offset_of!(ControlPage, heartbeat_ns), 40),
            (offset_of!(ControlPage, evictions), 48),
            (offset_of!(ControlPage, rejoined), 56),
            (offset_of!(ControlPage, progress_seq), 64),
            (offset_of!(ControlPage, progress_armed), 68),
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

    /// docs/LAYOUT.md documents the handshake for non-Rust readers: keep both in step.
    #[test]
    fn handshake_messages_round_trip_at_the_documented_offsets() {
        let hello = Hello {
            pid: 7,
            oldest: true,
            session: 0x1122_3344_5566_7788,
            writer_session: 9,
        };
        let b = hello.encode();
        assert_eq!(&b[0..4], b"SFRH");
        assert_eq!(b[4..8], LAYOUT_VERSION.to_ne_bytes());
        assert_eq!(b[8..12], 7u32.to_ne_bytes());
        assert_eq!(b[12..16], 1u32.to_ne_bytes());
        assert_eq!(b[16..24], hello.session.to_ne_bytes());
        assert_eq!(b[24..32], 9u64.to_ne_bytes());
        assert_eq!(Hello::decode(&b), Some(hello));
        assert_eq!(Hello::decode(&b[..31]), None, "too short");
        let mut other_version = b;
        other_version[4] ^= 1;
        assert_eq!(Hello::decode(&other_version), None);
        assert_eq!(Reply::decode(&b), None, "a hello is no reply");

        let reply = Reply {
            status: reply_status::TABLE_FULL,
            index: 3,
            page_len: 4096,
            cursor: 42,
        };
        let b = reply.encode();
        assert_eq!(&b[0..4], b"SFRR");
        assert_eq!(b[4..8], reply_status::TABLE_FULL.to_ne_bytes());
        assert_eq!(b[8..12], 3u32.to_ne_bytes());
        assert_eq!(b[12..16], 4096u32.to_ne_bytes());
        assert_eq!(b[16..24], 42u64.to_ne_bytes());
        assert_eq!(b[24..32], [0; 8]);
        assert_eq!(Reply::decode(&b), Some(reply));
        assert_eq!(Hello::decode(&b), None, "a reply is no hello");
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

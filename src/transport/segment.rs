//! Creating, opening and mapping segments.

use super::layout::*;
use super::name::{segment_path, shm_dir};
use super::{Backpressure, Error, Layout, StreamState, sys};
use memmap2::{Mmap, MmapMut, MmapOptions};
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

enum WholeMap {
    ReadOnly(#[allow(dead_code)] Mmap),
    ReadWrite(#[allow(dead_code)] MmapMut),
}

/// A mapped segment. The writer maps the whole file read-write; a reader maps it read-only
/// and maps only the control region a second time, read-write, for its own table entry.
pub(crate) struct Mapping {
    pub file: File,
    pub path: PathBuf,
    pub geo: Geometry,
    /// Device and inode of the mapped file: a name can be re-created by a new writer.
    pub file_id: (u64, u64),
    base: *mut u8,
    ctrl: *mut u8,
    writable: bool,
    _whole: WholeMap,
    _ctrl: Option<MmapMut>,
}

// SAFETY: the raw pointers point into mappings owned by this struct, which live as long as it
// does; everything shared through them is accessed with atomics or through the seqlock protocol.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// SAFETY (for all accessors below): `Geometry` guarantees every region lies inside the
    /// `total_len` bytes mapped at `base`, offsets of atomics are 8-byte aligned (regions are
    /// page-aligned, entries are multiples of 8 bytes), and the pointer stays valid while
    /// `self` lives. Atomics in a reader's read-only mapping are only ever loaded (x86_64 and
    /// aarch64 implement 32/64-bit atomic loads as plain loads, which read-only pages allow).
    fn at<T>(&self, offset: u64) -> &T {
        debug_assert!(offset + std::mem::size_of::<T>() as u64 <= self.geo.total_len);
        // SAFETY: see above.
        unsafe { &*(self.base.add(offset as usize) as *const T) }
    }

    pub fn header(&self) -> &Header {
        self.at(0)
    }

    pub fn control(&self) -> &ControlHeader {
        self.ctrl_at(0)
    }

    /// Control region through its writable mapping (readers write their entries here).
    fn ctrl_at<T>(&self, offset_in_control: u64) -> &T {
        debug_assert!(offset_in_control + std::mem::size_of::<T>() as u64 <= self.geo.control_len);
        // SAFETY: see `at`; `ctrl` maps `control_len` bytes read-write.
        unsafe { &*(self.ctrl.add(offset_in_control as usize) as *const T) }
    }

    pub fn reader_entry(&self, i: u32) -> &ReaderEntry {
        self.ctrl_at(self.geo.reader_entry_offset(i) - self.geo.control_offset)
    }

    pub fn pin_word(&self, reader: u32, word: u32) -> &AtomicU64 {
        self.ctrl_at(self.geo.pin_word_offset(reader, word) - self.geo.control_offset)
    }

    /// One past the highest reader entry ever used (bounded by the table's size).
    pub fn readers_hwm(&self) -> u32 {
        self.control()
            .readers_hwm
            .load(Ordering::Acquire)
            .min(self.geo.max_readers)
    }

    /// Pin word `word` of every live reader together: bit `s % 64` is set when some reader
    /// pins slot `s`. An evicted reader's pins do not count: it held the writer up for longer
    /// than the reader timeout (its frames may be overwritten under it). SeqCst loads: the
    /// writer pairs them with its marking of a slot before it checks pins (see `Writer::acquire`).
    pub fn pinned_bits(&self, word: u32) -> u64 {
        (0..self.readers_hwm())
            .filter(|&r| {
                let e = self.reader_entry(r);
                e.pid.load(Ordering::SeqCst) != 0
                    && e.state.load(Ordering::SeqCst) != reader_state::EVICTED
            })
            .fold(0, |bits, r| {
                bits | self.pin_word(r, word).load(Ordering::SeqCst)
            })
    }

    pub fn index(&self, frame: u64) -> &AtomicU64 {
        self.at(self.geo.index_offset + (frame % self.geo.depth as u64) * 8)
    }

    pub fn desc(&self, slot: u32) -> &SlotDesc {
        self.at(self.geo.desc_offset_of(slot))
    }

    pub fn caps_head(&self, entry: u64) -> &CapsEntryHead {
        self.at(CAPS_OFFSET + (entry % CAPS_ENTRIES) * CAPS_ENTRY_SIZE)
    }

    pub fn caps_bytes_ptr(&self, entry: u64) -> *mut u8 {
        let off = CAPS_OFFSET
            + (entry % CAPS_ENTRIES) * CAPS_ENTRY_SIZE
            + std::mem::size_of::<CapsEntryHead>() as u64;
        // SAFETY: inside the header region, which every mapping covers.
        unsafe { self.base.add(off as usize) }
    }

    pub fn slot_ptr(&self, slot: u32) -> *mut u8 {
        assert!(slot < self.geo.slot_count);
        // SAFETY: slot < slot_count, so the slot lies inside the mapping.
        unsafe { self.base.add(self.geo.slot_data_offset(slot) as usize) }
    }

    pub fn is_writable(&self) -> bool {
        self.writable
    }

    pub fn stream_state(&self) -> StreamState {
        StreamState::from_code(self.header().stream_state.load(Ordering::Acquire))
    }

    /// Whether a live process holds the writer lock of this segment.
    pub fn writer_alive(&self) -> bool {
        sys::byte_is_locked(&self.file, WRITER_LOCK_BYTE, false)
    }

    /// Whether the path still names the file this mapping was made from.
    pub fn path_still_ours(&self) -> bool {
        std::fs::metadata(&self.path)
            .map(|m| (m.dev(), m.ino()) == self.file_id)
            .unwrap_or(false)
    }

    fn map(file: File, path: PathBuf, geo: Geometry, writable: bool) -> Result<Mapping, Error> {
        let meta = file
            .metadata()
            .map_err(|e| Error::io(format!("stat {}", path.display()), e))?;
        let file_id = (meta.dev(), meta.ino());
        let map_err = |e| Error::io(format!("mmap {}", path.display()), e);
        // Both mappings are populated: the page tables for every slot are made here, once,
        // instead of by faults on the first frame each slot holds (measured: a 1.2 MB slot
        // took up to 1.5 ms to fault in, the whole p99 latency at 640x480).
        let (whole, ctrl_map, base, ctrl) = if writable {
            // SAFETY: mapping a file we just sized; concurrent modification by other processes
            // is the point of shared memory and is handled by the atomics/seqlock protocol.
            let mut m = unsafe {
                MmapOptions::new()
                    .len(geo.total_len as usize)
                    .populate()
                    .map_mut(&file)
                    .map_err(map_err)?
            };
            let base = m.as_mut_ptr();
            // SAFETY: control_offset < total_len (Geometry invariant).
            let ctrl = unsafe { base.add(geo.control_offset as usize) };
            (WholeMap::ReadWrite(m), None, base, ctrl)
        } else {
            // SAFETY: as above; this mapping is read-only, so frame data and the header cannot
            // be modified through it.
            let m = unsafe {
                MmapOptions::new()
                    .len(geo.total_len as usize)
                    .populate()
                    .map(&file)
                    .map_err(map_err)?
            };
            // SAFETY: the control region is page-aligned and inside the file (Geometry).
            let mut c = unsafe {
                MmapOptions::new()
                    .offset(geo.control_offset)
                    .len(geo.control_len as usize)
                    .map_mut(&file)
                    .map_err(map_err)?
            };
            let base = m.as_ptr() as *mut u8;
            let ctrl = c.as_mut_ptr();
            (WholeMap::ReadOnly(m), Some(c), base, ctrl)
        };
        Ok(Mapping {
            file,
            path,
            geo,
            file_id,
            base,
            ctrl,
            writable,
            _whole: whole,
            _ctrl: ctrl_map,
        })
    }
}

/// Identity and parameters the writer stamps into a new header.
pub(crate) struct NewSegment<'a> {
    pub name: &'a str,
    pub geo: Geometry,
    pub perms: u32,
    pub session: u64,
    pub reader_timeout_ns: u64,
}

fn open_error(path: &Path, e: std::io::Error, name: &str) -> Error {
    match e.kind() {
        ErrorKind::NotFound => Error::NotFound {
            name: name.to_string(),
        },
        ErrorKind::PermissionDenied => Error::PermissionDenied {
            path: path.display().to_string(),
            detail: e.to_string(),
        },
        _ => Error::io(format!("open {}", path.display()), e),
    }
}

/// Reads up to the header region of a file without mapping it.
fn read_header_bytes(file: &File, path: &Path) -> Result<(Vec<u8>, u64), Error> {
    let len = file
        .metadata()
        .map_err(|e| Error::io(format!("stat {}", path.display()), e))?
        .len();
    let mut buf = vec![0u8; len.min(HEADER_REGION) as usize];
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
        }
    }
    buf.truncate(filled);
    Ok((buf, len))
}

/// Creates a segment under `spec.name`, initialised by `init` before anyone can see it: it is
/// built under a temporary name and renamed into place, so a reader never maps a half-written
/// header. An existing segment whose writer is alive is refused; one whose writer died is
/// replaced; anything else at the path is left untouched.
pub(crate) fn create(spec: &NewSegment) -> Result<Mapping, Error> {
    let path = segment_path(spec.name)?;
    for _attempt in 0..8 {
        let (tmp_path, mapping) = build_fresh(spec, &path)?;
        match sys::rename_noreplace(&tmp_path, &path) {
            Ok(()) => return Ok(mapping),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => {
                let _ = std::fs::remove_file(&tmp_path);
                return Err(Error::io(format!("rename into {}", path.display()), e));
            }
        }
        // Something is at the path. Find out what, without modifying it.
        let outcome = reclaim_if_stale(&path, spec.name, &tmp_path);
        match outcome {
            Ok(true) => return Ok(mapping),
            Ok(false) => {
                let _ = std::fs::remove_file(&tmp_path);
                continue;
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp_path);
                return Err(e);
            }
        }
    }
    Err(Error::io(
        format!("create {}", path.display()),
        std::io::Error::other("the name kept changing under us; retried 8 times"),
    ))
}

/// Ok(true): the stale segment at `path` was replaced by `tmp_path`. Ok(false): the path
/// changed meanwhile, retry.
fn reclaim_if_stale(path: &Path, name: &str, tmp_path: &Path) -> Result<bool, Error> {
    let existing = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(open_error(path, e, name)),
    };
    let (bytes, _len) = read_header_bytes(&existing, path)?;
    if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
        return Err(Error::ForeignFile {
            path: path.display().to_string(),
        });
    }
    let holder_pid = || {
        let off = std::mem::offset_of!(Header, writer_pid);
        bytes
            .get(off..off + 4)
            .map(|b| u32::from_ne_bytes(b.try_into().unwrap()))
            .unwrap_or(0)
    };
    if !sys::try_lock_byte(&existing, WRITER_LOCK_BYTE, true)
        .map_err(|e| Error::io(format!("lock {}", path.display()), e))?
    {
        return Err(Error::WriterExists {
            name: name.to_string(),
            pid: holder_pid(),
        });
    }
    // We hold the dead writer's lock. Make sure the path still names this very file (another
    // writer may have replaced it between our open and our lock) before replacing it.
    let ours = existing.metadata().map(|m| (m.dev(), m.ino())).ok();
    let at_path = std::fs::metadata(path).map(|m| (m.dev(), m.ino())).ok();
    if ours.is_none() || ours != at_path {
        return Ok(false);
    }
    std::fs::rename(tmp_path, path)
        .map_err(|e| Error::io(format!("replace stale {}", path.display()), e))?;
    Ok(true)
}

fn build_fresh(spec: &NewSegment, path: &Path) -> Result<(PathBuf, Mapping), Error> {
    let tmp_path = shm_dir().join(format!(
        ".shmframe-new-{}-{}-{:x}",
        spec.name,
        std::process::id(),
        sys::random_u64()
    ));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(spec.perms)
        .open(&tmp_path)
        .map_err(|e| open_error(&tmp_path, e, spec.name))?;
    let result = (|| {
        // The umask may have narrowed the mode; `perms` is what the user asked for.
        file.set_permissions(std::fs::Permissions::from_mode(spec.perms))
            .map_err(|e| Error::io(format!("chmod {}", tmp_path.display()), e))?;
        file.set_len(spec.geo.total_len)
            .map_err(|e| Error::io(format!("size {}", tmp_path.display()), e))?;
        reserve(&file, &tmp_path, spec.geo.total_len)?;
        if !sys::try_lock_byte(&file, WRITER_LOCK_BYTE, true)
            .map_err(|e| Error::io(format!("lock {}", tmp_path.display()), e))?
        {
            return Err(Error::io(
                "lock new segment",
                std::io::Error::other("fresh file already locked"),
            ));
        }
        let mut mapping = Mapping::map(file, path.to_path_buf(), spec.geo.clone(), true)?;
        init_header(&mapping, spec);
        // The mapping was made from the temporary path; record the final one for unlinking.
        mapping.path = path.to_path_buf();
        Ok(mapping)
    })();
    match result {
        Ok(m) => Ok((tmp_path, m)),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp_path);
            Err(e)
        }
    }
}

/// Allocates the whole segment, or says how much room it needs where.
fn reserve(file: &File, path: &Path, needed: u64) -> Result<(), Error> {
    let available = |file: &File| {
        sys::available_bytes(file).map_err(|e| Error::io(format!("statvfs {}", path.display()), e))
    };
    let no_space = |available| Error::NoSpace {
        dir: shm_dir().display().to_string(),
        needed,
        available,
    };
    // Checked first so that a segment that cannot fit is refused without filling the file
    // system (and the memory behind it) on the way.
    let before = available(file)?;
    if needed > before {
        return Err(no_space(before));
    }
    match sys::allocate(file, needed) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => Err(no_space(available(file)?)),
        Err(e) => Err(Error::io(format!("allocate {}", path.display()), e)),
    }
}

fn init_header(m: &Mapping, spec: &NewSegment) {
    let g = &spec.geo;
    let h = m.base as *mut Header;
    let pid = std::process::id();
    // SAFETY: the file is fresh, private to us until renamed into place, mapped read-write and
    // at least HEADER_REGION long; nobody else can observe these plain writes. The file is zero
    // filled, which is a valid initial value for every atomic.
    unsafe {
        (*h).magic = MAGIC;
        (*h).version = LAYOUT_VERSION;
        (*h).layout = match g.layout {
            Layout::Double => 1,
            Layout::Ring => 2,
        };
        (*h).depth = g.depth;
        (*h).slot_count = g.slot_count;
        (*h).backpressure = g.backpressure;
        (*h).max_readers = g.max_readers;
        (*h).pin_words = g.pin_words;
        (*h).writer_pid = pid;
        (*h).control_offset = g.control_offset;
        (*h).control_len = g.control_len;
        (*h).index_offset = g.index_offset;
        (*h).desc_offset = g.desc_offset;
        (*h).data_offset = g.data_offset;
        (*h).slot_stride = g.slot_stride;
        (*h).slot_capacity = g.slot_capacity;
        (*h).total_len = g.total_len;
        (*h).writer_start_ticks = sys::process_start_ticks(pid);
        (*h).writer_session = spec.session;
        (*h).created_realtime_ns = sys::realtime_ns();
        (*h).reader_timeout_ns = spec.reader_timeout_ns;
    }
    m.header()
        .heartbeat_ns
        .store(sys::monotonic_ns(), Ordering::Relaxed);
}

/// Opens an existing segment as a reader: validates the header from a plain read before
/// mapping anything, then maps data read-only and the control region read-write.
pub(crate) fn open(name: &str) -> Result<Mapping, Error> {
    let path = segment_path(name)?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| open_error(&path, e, name))?;
    let (bytes, len) = read_header_bytes(&file, &path)?;
    let geo = Geometry::parse(&bytes, len).map_err(|e| match e {
        Error::Foreign => Error::ForeignFile {
            path: path.display().to_string(),
        },
        e => e,
    })?;
    Mapping::map(file, path, geo, false)
}

/// A snapshot of a segment for inspection and statistics.
#[derive(Clone, Debug)]
pub struct SegmentInfo {
    pub path: PathBuf,
    pub layout: Layout,
    pub depth: u32,
    pub slot_count: u32,
    pub slot_capacity: u64,
    pub total_len: u64,
    pub backpressure: Backpressure,
    pub writer_pid: u32,
    pub writer_session: u64,
    pub writer_alive: bool,
    pub state: StreamState,
    pub caps: Option<String>,
    pub head: u64,
    pub frames_written: u64,
    pub frames_dropped: u64,
    pub full_events: u64,
    pub readers_evicted: u64,
    pub readers: Vec<ReaderInfo>,
}

#[derive(Clone, Debug)]
pub struct ReaderInfo {
    pub index: u32,
    pub pid: u32,
    pub cursor: u64,
    pub lag: u64,
    pub frames_read: u64,
    pub frames_missed: u64,
    pub heartbeat_age_ns: u64,
    pub evicted: bool,
    /// Slots this reader holds pinned (zero-copy buffers downstream).
    pub pinned_slots: u32,
}

impl Mapping {
    pub(crate) fn info(&self) -> SegmentInfo {
        let h = self.header();
        let head = h.head.load(Ordering::Acquire);
        let now = sys::monotonic_ns();
        let readers = (0..self.readers_hwm())
            .filter_map(|i| {
                let e = self.reader_entry(i);
                let pid = e.pid.load(Ordering::Acquire);
                let state = e.state.load(Ordering::Acquire);
                (pid != 0 && state != reader_state::CLAIMING).then(|| {
                    let cursor = e.cursor.load(Ordering::Acquire);
                    ReaderInfo {
                        index: i,
                        pid,
                        cursor,
                        lag: head.saturating_sub(cursor),
                        frames_read: e.frames_read.load(Ordering::Relaxed),
                        frames_missed: e.frames_missed.load(Ordering::Relaxed),
                        heartbeat_age_ns: now
                            .saturating_sub(e.heartbeat_ns.load(Ordering::Relaxed)),
                        evicted: state == reader_state::EVICTED,
                        pinned_slots: (0..self.geo.pin_words)
                            .map(|w| self.pin_word(i, w).load(Ordering::Relaxed).count_ones())
                            .sum(),
                    }
                })
            })
            .collect();
        SegmentInfo {
            path: self.path.clone(),
            layout: self.geo.layout,
            depth: self.geo.depth,
            slot_count: self.geo.slot_count,
            slot_capacity: self.geo.slot_capacity,
            total_len: self.geo.total_len,
            backpressure: Backpressure::from_code(self.geo.backpressure),
            writer_pid: h.writer_pid,
            writer_session: h.writer_session,
            writer_alive: self.writer_alive(),
            state: self.stream_state(),
            caps: read_caps(self, h.caps_gen.load(Ordering::Acquire))
                .ok()
                .flatten(),
            head,
            frames_written: h.frames_written.load(Ordering::Relaxed),
            frames_dropped: h.frames_dropped.load(Ordering::Relaxed),
            full_events: h.full_events.load(Ordering::Relaxed),
            readers_evicted: h.readers_evicted.load(Ordering::Relaxed),
            readers,
        }
    }
}

/// Reads the caps string of generation `gen` from the caps table. Ok(None) when that
/// generation was already replaced (only the last CAPS_ENTRIES generations are kept) or when
/// no caps were ever set.
pub(crate) fn read_caps(m: &Mapping, gen_: u64) -> Result<Option<String>, Error> {
    if gen_ == 0 {
        return Ok(None);
    }
    let head = m.caps_head(gen_);
    for _ in 0..100 {
        let s1 = head.seq.load(Ordering::Acquire);
        if s1 % 2 == 1 {
            std::thread::yield_now();
            continue;
        }
        let stored_gen = head.generation.load(Ordering::Relaxed);
        let len = head.len.load(Ordering::Relaxed);
        if len > CAPS_CAPACITY as u64 {
            if head.seq.load(Ordering::Acquire) == s1 {
                return Err(Error::Corrupt {
                    field: "caps length".into(),
                    expected: format!("0..={CAPS_CAPACITY}"),
                    found: len,
                });
            }
            continue;
        }
        let mut buf = vec![0u8; len as usize];
        // SAFETY: len <= CAPS_CAPACITY, so the copy stays inside this caps entry. The bytes may
        // change while we copy; the sequence check below discards such a copy.
        unsafe {
            std::ptr::copy_nonoverlapping(m.caps_bytes_ptr(gen_), buf.as_mut_ptr(), buf.len())
        };
        std::sync::atomic::fence(Ordering::Acquire);
        if head.seq.load(Ordering::Relaxed) != s1 {
            continue;
        }
        if stored_gen != gen_ {
            return Ok(None);
        }
        return String::from_utf8(buf)
            .map(Some)
            .map_err(|_| Error::Corrupt {
                field: "caps string".into(),
                expected: "UTF-8 text".into(),
                found: len,
            });
    }
    Ok(None)
}

/// Writes caps generation `gen` (writer only).
pub(crate) fn write_caps(m: &Mapping, gen_: u64, caps: &str) {
    debug_assert!(m.is_writable() && caps.len() <= CAPS_CAPACITY);
    let head = m.caps_head(gen_);
    let s = head.seq.load(Ordering::Relaxed);
    head.seq.store(s + 1, Ordering::Relaxed);
    std::sync::atomic::fence(Ordering::Release);
    // SAFETY: the writer's mapping is writable and caps.len() <= CAPS_CAPACITY.
    unsafe {
        std::ptr::copy_nonoverlapping(caps.as_ptr(), m.caps_bytes_ptr(gen_), caps.len());
    }
    head.len.store(caps.len() as u64, Ordering::Relaxed);
    head.generation.store(gen_, Ordering::Relaxed);
    head.seq.store(s + 2, Ordering::Release);
    m.header().caps_gen.store(gen_, Ordering::Release);
}

/// Maps a segment read-only (header, control region and data): for observers, which claim no
/// reader entry and write nothing.
pub(crate) fn open_read_only(name: &str) -> Result<Mapping, Error> {
    let path = segment_path(name)?;
    let file = File::open(&path).map_err(|e| open_error(&path, e, name))?;
    let (bytes, len) = read_header_bytes(&file, &path)?;
    let geo = Geometry::parse(&bytes, len).map_err(|e| match e {
        Error::Foreign => Error::ForeignFile {
            path: path.display().to_string(),
        },
        e => e,
    })?;
    // SAFETY: read-only mapping of a validated file of at least total_len bytes.
    let m = unsafe {
        MmapOptions::new()
            .len(geo.total_len as usize)
            .map(&file)
            .map_err(|e| Error::io(format!("mmap {}", path.display()), e))?
    };
    let meta = file
        .metadata()
        .map_err(|e| Error::io(format!("stat {}", path.display()), e))?;
    let base = m.as_ptr() as *mut u8;
    Ok(Mapping {
        file_id: (meta.dev(), meta.ino()),
        file,
        path,
        // SAFETY: control_offset < total_len. Observers only load through it.
        ctrl: unsafe { base.add(geo.control_offset as usize) },
        geo,
        base,
        writable: false,
        _whole: WholeMap::ReadOnly(m),
        _ctrl: None,
    })
}

/// A snapshot of the segment named `name`, taken without attaching.
pub fn inspect(name: &str) -> Result<SegmentInfo, Error> {
    Ok(open_read_only(name)?.info())
}

/// Shared words of the control region a thread can futex-wait on.
#[derive(Clone, Copy, Debug)]
pub(crate) enum WaitWord {
    Frame,
    Space,
}

impl Mapping {
    pub(crate) fn wait_word(&self, w: WaitWord) -> &AtomicU32 {
        match w {
            WaitWord::Frame => &self.control().frame_seq,
            WaitWord::Space => &self.control().space_seq,
        }
    }

    /// Bumps a wait word and wakes everyone waiting on it.
    pub(crate) fn kick(&self, w: WaitWord) {
        let word = self.wait_word(w);
        word.fetch_add(1, Ordering::SeqCst);
        sys::futex_wake_all(word);
    }
}

//! Creating, opening and mapping segments.

use crate::error::Error;
use crate::layout::*;
use crate::name::{segment_path, shm_dir};
use crate::sys;
use crate::types::{Layout, StreamState};
use memmap2::{Mmap, MmapMut, MmapOptions};
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Whether a `T` at `offset` lies inside `len` mapped bytes and is aligned (mappings are
/// page-aligned, so alignment within them is alignment in memory).
fn fits<T>(offset: u64, len: u64) -> bool {
    offset.is_multiple_of(std::mem::align_of::<T>() as u64)
        && offset
            .checked_add(std::mem::size_of::<T>() as u64)
            .is_some_and(|end| end <= len)
}

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
    /// Checked in release builds too: a `T` outside the mapping or misaligned would be
    /// undefined behaviour, and `T: Plain` makes any bytes inside it a valid `T`.
    fn at<T: Plain>(&self, offset: u64) -> &T {
        assert!(
            fits::<T>(offset, self.geo.total_len),
            "segment offset {offset} out of place"
        );
        // SAFETY: see above; the assertion keeps `T` inside the mapping and aligned.
        unsafe { &*(self.base.add(offset as usize) as *const T) }
    }

    pub fn header(&self) -> &Header {
        self.at(0)
    }

    pub fn control(&self) -> &ControlHeader {
        self.ctrl_at(0)
    }

    /// Control region through its writable mapping (readers write their entries here).
    fn ctrl_at<T: Plain>(&self, offset_in_control: u64) -> &T {
        assert!(
            fits::<T>(offset_in_control, self.geo.control_len),
            "control offset {offset_in_control} out of place"
        );
        // SAFETY: see `at`; `ctrl` maps `control_len` bytes read-write (page-aligned).
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

    /// The user owning the segment file: the user its writer runs as (the writer creates the
    /// file; nobody else can hand it to another user but root). `u32::MAX` ((uid_t) -1, "no
    /// user") if the file cannot be examined.
    pub fn owner_uid(&self) -> u32 {
        self.file.metadata().map_or(u32::MAX, |m| m.uid())
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

/// What a file of type `file_type` at `path` is, in words, for errors about things that are
/// not segments.
fn describe(path: &Path, file_type: std::fs::FileType) -> String {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_dir() {
        "a directory".into()
    } else if file_type.is_symlink() {
        match std::fs::read_link(path) {
            Ok(target) if std::fs::metadata(path).is_err() => format!(
                "a symbolic link to {} (which does not exist)",
                target.display()
            ),
            Ok(target) => format!("a symbolic link to {}", target.display()),
            Err(_) => "a symbolic link".into(),
        }
    } else if file_type.is_fifo() {
        "a FIFO (named pipe)".into()
    } else if file_type.is_socket() {
        "a socket".into()
    } else if file_type.is_char_device() {
        "a character device".into()
    } else if file_type.is_block_device() {
        "a block device".into()
    } else {
        "not a regular file".into()
    }
}

/// Opens the file at a segment path, read-write if `write`, without ever blocking or following
/// a symbolic link, and refuses anything but a regular file: opening a FIFO waits for a peer
/// for ever, a device or a socket is not shared memory, and a segment is never a link. The
/// type is checked before opening (opening some devices has effects) and again on the open
/// descriptor (the path may have changed in between).
fn open_segment_file(path: &Path, name: &str, write: bool) -> Result<File, Error> {
    let not_a_file = |file_type| Error::NotAFile {
        path: path.display().to_string(),
        what: describe(path, file_type),
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_file() => return Err(not_a_file(meta.file_type())),
        Ok(_) => {}
        Err(e) => return Err(open_error(path, e, name)),
    }
    let file = OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| match std::fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_file() => not_a_file(meta.file_type()),
            _ => open_error(path, e, name),
        })?;
    let meta = file
        .metadata()
        .map_err(|e| Error::io(format!("stat {}", path.display()), e))?;
    if !meta.file_type().is_file() {
        return Err(not_a_file(meta.file_type()));
    }
    Ok(file)
}

/// Refuses a segment file with holes. Every page of a reader's mapping is populated when it
/// attaches: a hole would be allocated then, by the reader, filling the shm file system until
/// the mapping faults (SIGBUS). A writer allocates its whole segment before publishing it, so
/// only a broken or hostile writer leaves holes.
fn refuse_sparse(file: &File, path: &Path) -> Result<(), Error> {
    let meta = file
        .metadata()
        .map_err(|e| Error::io(format!("stat {}", path.display()), e))?;
    let allocated = meta.blocks() * 512;
    if allocated < meta.len() {
        return Err(Error::Sparse {
            path: path.display().to_string(),
            size: meta.len(),
            allocated,
        });
    }
    Ok(())
}

/// Parses the header of an opened segment file (a foreign file is named by its path) and
/// refuses a file with holes, all before anything is mapped.
fn validated_geometry(file: &File, path: &Path) -> Result<Geometry, Error> {
    let (bytes, len) = read_header_bytes(file, path)?;
    let geo = Geometry::parse(&bytes, len).map_err(|e| match e {
        Error::ForeignFile { .. } => Error::ForeignFile {
            path: path.display().to_string(),
        },
        e => e,
    })?;
    refuse_sparse(file, path)?;
    Ok(geo)
}

/// The uid of the owner of `path` if it is not this process's, else `None`.
fn other_owner(path: &Path) -> Option<(u32, u32)> {
    let owner = std::fs::symlink_metadata(path).ok()?.uid();
    // SAFETY: geteuid has no preconditions.
    let user = unsafe { libc::geteuid() };
    (owner != user).then_some((owner, user))
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

/// Prefix of the temporary files segments are built in (followed by name, pid and a random
/// number).
const TEMP_PREFIX: &str = ".shmframe-new-";

/// Creates a segment under `spec.name`, initialised by `init` before anyone can see it: it is
/// built under a temporary name and renamed into place, so a reader never maps a half-written
/// header. An existing segment whose writer is alive is refused; one whose writer died is
/// replaced; anything else at the path is left untouched. Temporary files of writers that died
/// while creating a segment are removed first.
pub(crate) fn create(spec: &NewSegment) -> Result<Mapping, Error> {
    let path = segment_path(spec.name)?;
    reclaim_orphaned_temp_files();
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
    let existing = match open_segment_file(path, name, true) {
        Ok(f) => f,
        Err(Error::NotFound { .. }) => return Ok(false),
        Err(Error::PermissionDenied { .. }) if other_owner(path).is_some() => {
            return Err(not_ours(path, name));
        }
        Err(e) => return Err(e),
    };
    let holder_pid = segment_holder(&existing, path)?;
    if !sys::try_lock_byte(&existing, WRITER_LOCK_BYTE, true)
        .map_err(|e| Error::io(format!("lock {}", path.display()), e))?
    {
        return Err(Error::WriterExists {
            name: name.to_string(),
            pid: holder_pid,
        });
    }
    // We hold the dead writer's lock. Make sure the path still names this very file (another
    // writer may have replaced it between our open and our lock) before replacing it.
    if !still_named(&existing, path) {
        return Ok(false);
    }
    match std::fs::rename(tmp_path, path) {
        Ok(()) => Ok(true),
        // The shm directory is sticky: only a file's owner (or root) may replace it.
        Err(e) if e.kind() == ErrorKind::PermissionDenied && other_owner(path).is_some() => {
            let (owner, user) = other_owner(path).unwrap_or_default();
            Err(Error::NotReplaceable {
                path: path.display().to_string(),
                owner,
                user,
                stale: true,
            })
        }
        Err(e) => Err(Error::io(format!("replace stale {}", path.display()), e)),
    }
}

/// The pid a segment file's header names as its writer; a file that is not a segment is
/// refused.
fn segment_holder(file: &File, path: &Path) -> Result<u32, Error> {
    let (bytes, _len) = read_header_bytes(file, path)?;
    if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
        return Err(Error::ForeignFile {
            path: path.display().to_string(),
        });
    }
    let off = std::mem::offset_of!(Header, writer_pid);
    Ok(bytes
        .get(off..off + 4)
        .map(|b| u32::from_ne_bytes(b.try_into().unwrap()))
        .unwrap_or(0))
}

/// Why a writer cannot take over another user's file at `path` that it may not open for
/// writing: a live writer holds it, it is not a segment, or it may not be replaced. Reading
/// it, if allowed, tells which.
fn not_ours(path: &Path, name: &str) -> Error {
    let (owner, user) = other_owner(path).unwrap_or_default();
    let readable = open_segment_file(path, name, false);
    let stale = match &readable {
        Ok(file) => match segment_holder(file, path) {
            Err(e) => return e,
            Ok(pid) if sys::byte_is_locked(file, WRITER_LOCK_BYTE, false) => {
                return Error::WriterExists {
                    name: name.to_string(),
                    pid,
                };
            }
            Ok(_) => true,
        },
        Err(_) => false,
    };
    Error::NotReplaceable {
        path: path.display().to_string(),
        owner,
        user,
        stale,
    }
}

/// Refuses, without creating or changing anything, a name a writer could not take now: one
/// held by a live writer (naming its pid), or taken by something a writer leaves untouched or
/// may not replace. A segment left by a dead writer is no obstacle: creating reclaims it.
pub fn check_name_for_writer(name: &str) -> Result<(), Error> {
    let path = segment_path(name)?;
    match open_read_only(name) {
        Ok(m) if m.writer_alive() => Err(Error::WriterExists {
            name: name.to_string(),
            pid: m.header().writer_pid,
        }),
        Err(e @ (Error::ForeignFile { .. } | Error::NotAFile { .. })) => Err(e),
        Err(e @ Error::PermissionDenied { .. }) => match other_owner(&path) {
            Some(_) => Err(not_ours(&path, name)),
            None => Err(e),
        },
        // Nothing there, or something `create` deals with or explains.
        _ => Ok(()),
    }
}

/// Whether `path` still names the open `file`.
fn still_named(file: &File, path: &Path) -> bool {
    let ours = file.metadata().map(|m| (m.dev(), m.ino())).ok();
    let at_path = std::fs::symlink_metadata(path)
        .map(|m| (m.dev(), m.ino()))
        .ok();
    ours.is_some() && ours == at_path
}

/// Removes the temporary files of writers that died while building a segment (of any name).
/// A builder holds the writer lock of its temporary file from the moment the file exists
/// until it is renamed into place (see `build_fresh`), and the kernel drops that lock when
/// the builder dies, however it dies: a temporary file whose lock we can take has no live
/// builder. Files we may not open (another user's) are left alone.
fn reclaim_orphaned_temp_files() {
    let Ok(dir) = std::fs::read_dir(shm_dir()) else {
        return;
    };
    for entry in dir.flatten() {
        if !entry
            .file_name()
            .as_encoded_bytes()
            .starts_with(TEMP_PREFIX.as_bytes())
        {
            continue;
        }
        let path = entry.path();
        let Ok(file) = open_segment_file(&path, "", true) else {
            continue;
        };
        if sys::try_lock_byte(&file, WRITER_LOCK_BYTE, true).unwrap_or(false)
            && still_named(&file, &path)
        {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// A new temporary file, holding its writer lock: that lock is what tells other writers that
/// its builder is alive (see `reclaim_orphaned_temp_files`).
fn new_temp_file(spec: &NewSegment) -> Result<(PathBuf, File), Error> {
    for _attempt in 0..8 {
        let tmp_path = shm_dir().join(format!(
            "{TEMP_PREFIX}{}-{}-{:x}",
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
        // Another writer may have taken the file for an orphan in the instant before our lock
        // (and removed it): then start over with a new one.
        let locked = sys::try_lock_byte(&file, WRITER_LOCK_BYTE, true)
            .map_err(|e| Error::io(format!("lock {}", tmp_path.display()), e))?;
        if locked && still_named(&file, &tmp_path) {
            return Ok((tmp_path, file));
        }
        if still_named(&file, &tmp_path) {
            let _ = std::fs::remove_file(&tmp_path);
        }
    }
    Err(Error::io(
        "create a temporary segment file",
        std::io::Error::other("it was taken away 8 times in a row"),
    ))
}

fn build_fresh(spec: &NewSegment, path: &Path) -> Result<(PathBuf, Mapping), Error> {
    let (tmp_path, file) = new_temp_file(spec)?;
    let result = (|| {
        // The umask may have narrowed the mode; `perms` is what the user asked for.
        file.set_permissions(std::fs::Permissions::from_mode(spec.perms))
            .map_err(|e| Error::io(format!("chmod {}", tmp_path.display()), e))?;
        file.set_len(spec.geo.total_len)
            .map_err(|e| Error::io(format!("size {}", tmp_path.display()), e))?;
        reserve(&file, &tmp_path, spec.geo.total_len)?;
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

/// How long racing allocations are retried while the room they need is free.
const ALLOCATION_RACE_LIMIT: Duration = Duration::from_secs(5);

/// Allocates the whole segment, or says how much room it needs where. The allocation decides:
/// the free space measured before it can be taken by another writer meanwhile, or be freed.
fn reserve(file: &File, path: &Path, needed: u64) -> Result<(), Error> {
    let space = |file: &File| {
        sys::space(file).map_err(|e| Error::io(format!("statvfs {}", path.display()), e))
    };
    let dir = shm_dir().display().to_string();
    let no_space = |available| Error::NoSpace {
        dir: dir.clone(),
        needed,
        available,
    };
    // A segment larger than the whole file system is refused without trying, which would
    // fill the file system (and the memory behind it) on the way.
    let (size, available) = space(file)?;
    if needed > size {
        return Err(no_space(available));
    }
    let deadline = Instant::now() + ALLOCATION_RACE_LIMIT;
    loop {
        match sys::allocate(file, needed) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {}
            Err(e) => return Err(Error::io(format!("allocate {}", path.display()), e)),
        }
        // The room this segment could have now: what is free plus what the failed allocation
        // still holds (tmpfs gives it back, other file systems may not).
        let held = file.metadata().map_or(0, |m| m.blocks() * 512);
        let room = space(file)?.1 + held;
        if room < needed {
            return Err(no_space(room));
        }
        // Enough room after all: another allocation was under way at the same moment (two of
        // them can each take part of the room and both fail). Try again after a random pause,
        // so that the racers do not meet again.
        if Instant::now() >= deadline {
            return Err(Error::io(
                format!("allocate {}", path.display()),
                std::io::Error::other(format!(
                    "no space left although {room} bytes are free now: other processes kept \
                     allocating in {dir} for {ALLOCATION_RACE_LIMIT:?}; try again"
                )),
            ));
        }
        std::thread::sleep(Duration::from_micros(1000 + sys::random_u64() % 20_000));
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
        (*h).backpressure = g.backpressure.code();
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
    let file = open_segment_file(&path, name, true)?;
    let geo = validated_geometry(&file, &path)?;
    Mapping::map(file, path, geo, false)
}

/// Maps a segment read-only (header, control region and data): for observers, which claim no
/// reader entry and write nothing.
pub(crate) fn open_read_only(name: &str) -> Result<Mapping, Error> {
    let path = segment_path(name)?;
    let file = open_segment_file(&path, name, false)?;
    let geo = validated_geometry(&file, &path)?;
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

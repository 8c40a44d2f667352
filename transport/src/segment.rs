//! Creating, opening and mapping segments.

use crate::cleanup::OnTerminate;
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
use std::sync::Arc;
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

/// The mapping behind a [`Mapping`]: read-only for readers and observers, writable only for
/// the writer (see [`WriterMapping`]).
enum WholeMap {
    ReadOnly(#[allow(dead_code)] Mmap),
    ReadWrite(#[allow(dead_code)] MmapMut),
}

/// A mapped segment, as readers and observers see it: every accessor gives shared references
/// or `*const` pointers. Only a [`WriterMapping`] (the writer's, mapped read-write from a
/// file it created) reaches the bytes for writing; a reader's mapping is read-only in the
/// kernel as well (its descriptor is `O_RDONLY`).
pub(crate) struct Mapping {
    pub file: File,
    pub path: PathBuf,
    pub geo: Geometry,
    /// Device and inode of the mapped file: a name can be re-created by a new writer.
    pub file_id: (u64, u64),
    base: *const u8,
    _whole: WholeMap,
}

// SAFETY: the raw pointer points into the mapping owned by this struct, which lives as long as
// it does; everything shared through it is accessed with atomics or through the seqlock protocol.
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

    /// The writer's copy of reader `i`'s state (`i < max_readers`).
    pub fn mirror_entry(&self, i: u32) -> &MirrorEntry {
        assert!(i < self.geo.max_readers);
        self.at(self.geo.mirror_entry_offset(i))
    }

    /// Word `w` of the union of every counted reader's pins, as the writer last saw them.
    pub fn pinned_union(&self, w: u32) -> &AtomicU64 {
        assert!(w < self.geo.pin_words);
        self.at(self.geo.pinned_union_offset(w))
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

    fn caps_bytes_offset(entry: u64) -> u64 {
        CAPS_OFFSET
            + (entry % CAPS_ENTRIES) * CAPS_ENTRY_SIZE
            + std::mem::size_of::<CapsEntryHead>() as u64
    }

    pub fn caps_bytes_ptr(&self, entry: u64) -> *const u8 {
        // SAFETY: inside the header region, which every mapping covers.
        unsafe { self.base.add(Self::caps_bytes_offset(entry) as usize) }
    }

    pub fn slot_ptr(&self, slot: u32) -> *const u8 {
        assert!(slot < self.geo.slot_count);
        // SAFETY: slot < slot_count, so the slot lies inside the mapping.
        unsafe { self.base.add(self.geo.slot_data_offset(slot) as usize) }
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

    /// Maps a validated segment file read-only (`populate`: make every page table entry now,
    /// for readers; an observer looks at a few pages only).
    fn map_read_only(
        file: File,
        path: PathBuf,
        geo: Geometry,
        populate: bool,
    ) -> Result<Mapping, Error> {
        let file_id = file_id(&file, &path)?;
        let mut options = MmapOptions::new();
        options.len(geo.total_len as usize);
        if populate {
            options.populate();
        }
        // SAFETY: a read-only mapping of a validated file of at least total_len bytes, opened
        // read-only: neither we nor anyone through this mapping can change it, and readers
        // only read what the writer publishes through the atomics/seqlock protocol.
        let m = unsafe {
            options
                .map(&file)
                .map_err(|e| Error::io(format!("mmap {}", path.display()), e))?
        };
        Ok(Mapping {
            file,
            path,
            geo,
            file_id,
            base: m.as_ptr(),
            _whole: WholeMap::ReadOnly(m),
        })
    }
}

fn file_id(file: &File, path: &Path) -> Result<(u64, u64), Error> {
    let meta = file
        .metadata()
        .map_err(|e| Error::io(format!("stat {}", path.display()), e))?;
    Ok((meta.dev(), meta.ino()))
}

/// The writer's mapping of its own segment, read-write: the only way to the segment's bytes
/// for writing. Everything a reader may do with a [`Mapping`] it does through `Deref`.
pub(crate) struct WriterMapping {
    map: Arc<Mapping>,
    /// Removes the segment if the process gets SIGTERM, from before it is given its name.
    _on_terminate: Option<OnTerminate>,
}

impl std::ops::Deref for WriterMapping {
    type Target = Mapping;
    fn deref(&self) -> &Mapping {
        &self.map
    }
}

impl WriterMapping {
    fn map(file: File, path: PathBuf, geo: Geometry) -> Result<WriterMapping, Error> {
        let file_id = file_id(&file, &path)?;
        // The mapping is populated: the page tables for every slot are made here, once,
        // instead of by faults on the first frame each slot holds (measured: a 1.2 MB slot
        // took up to 1.5 ms to fault in, the whole p99 latency at 640x480).
        // SAFETY: mapping a file we just sized and allocated, which only we may write
        // (readers open it read-only); concurrent reading by other processes is the point of
        // shared memory and is handled by the atomics/seqlock protocol.
        let mut m = unsafe {
            MmapOptions::new()
                .len(geo.total_len as usize)
                .populate()
                .map_mut(&file)
                .map_err(|e| Error::io(format!("mmap {}", path.display()), e))?
        };
        Ok(WriterMapping {
            map: Arc::new(Mapping {
                file,
                path,
                geo,
                file_id,
                base: m.as_mut_ptr(),
                _whole: WholeMap::ReadWrite(m),
            }),
            _on_terminate: None,
        })
    }

    /// The read-only view of this mapping, for observers sharing it.
    pub fn shared(&self) -> Arc<Mapping> {
        self.map.clone()
    }

    fn base_mut(&self) -> *mut u8 {
        // The base of a writable mapping (`WriterMapping::map`).
        self.map.base as *mut u8
    }

    /// Where the caps string of `entry` is written.
    pub fn caps_bytes_mut(&self, entry: u64) -> *mut u8 {
        // SAFETY: inside the header region, which the mapping covers.
        unsafe {
            self.base_mut()
                .add(Mapping::caps_bytes_offset(entry) as usize)
        }
    }

    /// Where slot `slot`'s data is written.
    pub fn slot_ptr_mut(&self, slot: u32) -> *mut u8 {
        self.map.slot_ptr(slot) as *mut u8
    }
}

/// Identity and parameters the writer stamps into a new header.
pub(crate) struct NewSegment<'a> {
    pub name: &'a str,
    pub geo: Geometry,
    pub perms: u32,
    pub session: u64,
    pub reader_timeout_ns: u64,
    /// Written as caps generation 1 before the segment is given its name.
    pub caps: Option<&'a str>,
}

impl NewSegment<'_> {
    /// The data file's mode: `perms` without write permission for group and others, who read
    /// it only. (Who may attach is decided by `perms` on the socket: connecting needs write
    /// permission there.)
    pub fn data_mode(&self) -> u32 {
        self.perms & !0o022
    }
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
pub(crate) fn create(spec: &NewSegment) -> Result<WriterMapping, Error> {
    let path = segment_path(spec.name)?;
    reclaim_orphaned_temp_files();
    for _attempt in 0..8 {
        let (tmp_path, mut mapping) = build_fresh(spec, &path)?;
        // Before the segment gets its name: a SIGTERM right after the rename must not leave
        // it behind. The handler removes only this file, so nothing else the path may hold
        // until then is at risk.
        mapping._on_terminate = OnTerminate::register(&path, mapping.file_id);
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
    let stale_socket = stale_writer_socket(&existing, path);
    match std::fs::rename(tmp_path, path) {
        Ok(()) => {
            // The dead writer's socket goes with its segment. Only a socket is removed: the
            // name is derived from a header field, which anyone who wrote the file chose.
            if let Some(socket) = stale_socket
                && std::fs::symlink_metadata(&socket).is_ok_and(|m| {
                    use std::os::unix::fs::FileTypeExt;
                    m.file_type().is_socket()
                })
            {
                let _ = std::fs::remove_file(socket);
            }
            Ok(true)
        }
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

/// The socket path of the writer that made the segment file `file`.
fn stale_writer_socket(file: &File, path: &Path) -> Option<PathBuf> {
    let (bytes, _len) = read_header_bytes(file, path).ok()?;
    let off = std::mem::offset_of!(Header, writer_session);
    let session = u64::from_ne_bytes(bytes.get(off..off + 8)?.try_into().ok()?);
    (session != 0).then(|| socket_path(&shm_dir(), session))
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
        let file_name = entry.file_name();
        if file_name
            .as_encoded_bytes()
            .starts_with(SOCKET_PREFIX.as_bytes())
        {
            reclaim_if_orphaned_socket(&entry.path());
            continue;
        }
        if !file_name
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

/// How old a stream socket must be before a refused connection proves its writer dead: a
/// writer listens microseconds after it binds.
const SOCKET_ORPHAN_AGE: Duration = Duration::from_secs(5);

/// Removes a stream socket nobody listens on any more: its writer died before removing it
/// (killed while it built its segment, or its segment was removed by hand), so no later
/// writer of its segment's name comes across it.
fn reclaim_if_orphaned_socket(path: &Path) {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    let age = meta.modified().ok().and_then(|t| t.elapsed().ok());
    if !meta.file_type().is_socket() || age.is_none_or(|age| age < SOCKET_ORPHAN_AGE) {
        return;
    }
    if let Err(e) = crate::sock::connect(path)
        && e.raw_os_error() == Some(libc::ECONNREFUSED)
    {
        let _ = std::fs::remove_file(path);
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
            .mode(spec.data_mode())
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

fn build_fresh(spec: &NewSegment, path: &Path) -> Result<(PathBuf, WriterMapping), Error> {
    let (tmp_path, file) = new_temp_file(spec)?;
    let result = (|| {
        // The umask may have narrowed the mode; `perms` is what the user asked for.
        file.set_permissions(std::fs::Permissions::from_mode(spec.data_mode()))
            .map_err(|e| Error::io(format!("chmod {}", tmp_path.display()), e))?;
        file.set_len(spec.geo.total_len)
            .map_err(|e| Error::io(format!("size {}", tmp_path.display()), e))?;
        reserve(&file, &tmp_path, spec.geo.total_len)?;
        // The final path, for unlinking: the file is renamed there once built.
        let mapping = WriterMapping::map(file, path.to_path_buf(), spec.geo.clone())?;
        init_header(&mapping, spec);
        if let Some(caps) = spec.caps {
            crate::caps::write_caps(&mapping, 1, caps);
        }
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

fn init_header(m: &WriterMapping, spec: &NewSegment) {
    let g = &spec.geo;
    let h = m.base_mut() as *mut Header;
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
        (*h).readers_offset = g.readers_offset;
        (*h).readers_len = g.readers_len;
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

/// Opens an existing segment read-only: validates the header from a plain read before mapping
/// anything. Readers (`populate`) and observers use the same descriptor and mapping; neither
/// can write, truncate or map the file writable.
pub(crate) fn open(name: &str, populate: bool) -> Result<Mapping, Error> {
    let path = segment_path(name)?;
    let file = open_segment_file(&path, name, false)?;
    let geo = validated_geometry(&file, &path)?;
    Mapping::map_read_only(file, path, geo, populate)
}

/// A read-only mapping for observers, which attach to nothing.
pub(crate) fn open_read_only(name: &str) -> Result<Mapping, Error> {
    open(name, false)
}

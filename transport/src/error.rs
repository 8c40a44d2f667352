//! Everything that can go wrong in the transport, each with enough context to act on.

use std::fmt;

/// Everything that can go wrong, each with enough context to act on.
#[derive(Debug)]
pub enum Error {
    InvalidName {
        name: String,
        why: String,
    },
    InvalidConfig(String),
    /// No segment exists under that name (yet).
    NotFound {
        name: String,
    },
    /// A live writer holds the name.
    WriterExists {
        name: String,
        pid: u32,
    },
    /// A file exists at the path but is not a shmframe segment; it was left untouched.
    ForeignFile {
        /// Empty from [`Geometry::parse`](crate::Geometry::parse), which sees bytes, not a
        /// file; opening a segment names its file.
        path: String,
    },
    /// Something other than a regular file is at the path (a directory, a FIFO, a symbolic
    /// link...): `what` says which. It was left untouched.
    NotAFile {
        path: String,
        what: String,
    },
    /// Another user's file at the path that this process may not take over.
    NotReplaceable {
        path: String,
        owner: u32,
        user: u32,
        /// Whether its writer is known to be gone (else: it could not even be checked).
        stale: bool,
    },
    /// A segment file of which only `allocated` of its `size` bytes are backed by memory.
    Sparse {
        path: String,
        size: u64,
        allocated: u64,
    },
    VersionMismatch {
        expected: u32,
        found: u32,
    },
    Truncated {
        what: String,
        expected: u64,
        found: u64,
    },
    Corrupt {
        field: String,
        expected: String,
        found: u64,
    },
    PermissionDenied {
        path: String,
        detail: String,
    },
    /// The segment belongs to (was made by a writer running as) another user than the one
    /// the reader requires (`ReaderOptions::writer_uid`).
    WrongWriter {
        path: String,
        expected: u32,
        found: u32,
    },
    TooManyReaders {
        name: String,
        max: u32,
    },
    FrameTooLarge {
        size: u64,
        capacity: u64,
    },
    CapsTooLong {
        len: usize,
        max: usize,
    },
    /// The shm file system has less room than the segment needs.
    NoSpace {
        dir: String,
        needed: u64,
        available: u64,
    },
    /// The segment's writer is gone (its socket no longer answers): a new writer will
    /// replace the segment.
    WriterGone {
        name: String,
    },
    /// The wait was interrupted from another thread (element unlock/flush).
    Interrupted,
    /// The writer waited for `wanted` readers before its first frame (see
    /// [`WriterConfig::wait_for_readers`]) and only `attached` came within `waited`.
    ReadersMissing {
        name: String,
        wanted: usize,
        attached: usize,
        waited: std::time::Duration,
    },
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidName { name, why } => write!(f, "invalid shm-name {name:?}: {why}"),
            Error::InvalidConfig(why) => write!(f, "invalid configuration: {why}"),
            Error::NotFound { name } => write!(
                f,
                "no shmframe segment named {name:?} exists (is its writer running?)"
            ),
            Error::WriterExists { name, pid } => write!(
                f,
                "shm-name {name:?} is already used by a live writer (pid {pid}); stop it or \
                 choose another shm-name"
            ),
            Error::ForeignFile { path } => write!(
                f,
                "{path} exists and is not a shmframe segment; it was left untouched: remove it \
                 or choose another shm-name"
            ),
            Error::NotAFile { path, what } => write!(
                f,
                "{path} is {what}, not a shmframe segment (segments are regular files); it was \
                 left untouched: remove it or choose another shm-name"
            ),
            Error::NotReplaceable {
                path,
                owner,
                user,
                stale: true,
            } => write!(
                f,
                "{path} was left by a writer that is gone, but it belongs to uid {owner} and \
                 this process (uid {user}) may not replace it: remove it as uid {owner} or root \
                 (rm {path}), or choose another shm-name"
            ),
            Error::NotReplaceable {
                path,
                owner,
                user,
                stale: false,
            } => write!(
                f,
                "{path} belongs to uid {owner} and this process (uid {user}) may not open it to \
                 check whether its writer is alive: if that writer is gone, remove it as uid \
                 {owner} or root (rm {path}); otherwise choose another shm-name"
            ),
            Error::Sparse {
                path,
                size,
                allocated,
            } => write!(
                f,
                "{path} is not fully allocated: the file has {size} bytes but only {allocated} \
                 of them are backed by memory, and mapping it would fill the shm file system \
                 (a shmframe writer allocates its whole segment before publishing it): remove \
                 the file and restart the writer"
            ),
            Error::VersionMismatch { expected, found } => write!(
                f,
                "segment layout version {found} is not supported by this build (expects \
                 version {expected}); use the same shmframe version for writer and readers"
            ),
            Error::Truncated {
                what,
                expected,
                found,
            } => write!(
                f,
                "truncated segment: {what} needs {expected} bytes, the file has {found}; a \
                 shmframe writer never leaves a segment cut short: remove the file and restart \
                 the writer"
            ),
            Error::Corrupt {
                field,
                expected,
                found,
            } => write!(
                f,
                "corrupt segment header: field {field} expected {expected}, found {found}; the \
                 segment was damaged or not written by shmframe: remove the file and restart \
                 the writer"
            ),
            Error::PermissionDenied { path, detail } => write!(
                f,
                "permission denied on {path}: {detail}; a reader needs read and write access, \
                 which the writer's perms property grants (default 0600: the writer's user \
                 only): run the reader as that user, or start the writer with perms=0660 (its \
                 group) or perms=0666 (everyone)"
            ),
            Error::WrongWriter {
                path,
                expected,
                found,
            } => write!(
                f,
                "{path} belongs to uid {found}, but this reader accepts only a writer running \
                 as uid {expected}: start the writer as uid {expected}, or set the reader's writer uid to \
                 {found} (or unset it: any user the segment's permissions admit)"
            ),
            Error::TooManyReaders { name, max } => write!(
                f,
                "segment {name:?} already has the maximum of {max} readers attached"
            ),
            Error::FrameTooLarge { size, capacity } => write!(
                f,
                "frame of {size} bytes does not fit a slot of {capacity} bytes; create the \
                 writer with a slot size of at least {size} bytes"
            ),
            Error::CapsTooLong { len, max } => write!(
                f,
                "caps string of {len} bytes exceeds the header's {max}-byte caps area"
            ),
            Error::NoSpace {
                dir,
                needed,
                available,
            } => write!(
                f,
                "the segment needs {needed} bytes ({} MiB) but {dir} has {available} bytes \
                 ({} MiB) free; lower depth or the frame size, remove segments no longer used, \
                 or give {dir} more room (Docker: --shm-size)",
                needed.div_ceil(1 << 20),
                available >> 20
            ),
            Error::WriterGone { name } => write!(
                f,
                "the writer of shm-name {name:?} is gone (its segment is stale); a new writer \
                 of that name replaces it"
            ),
            Error::Interrupted => write!(f, "wait interrupted"),
            Error::ReadersMissing {
                name,
                wanted,
                attached,
                waited,
            } => write!(
                f,
                "only {attached} of the {wanted} readers waited for attached to shm-name \
                 {name:?} within {} ms; the writer publishes from now on without waiting for \
                 the others: start the readers first, or wait longer",
                waited.as_millis()
            ),
            Error::Io { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

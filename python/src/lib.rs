//! `shmframe._native`: the transport's reader and writer for Python. The package around it
//! (`python/shmframe/`) shapes frames into numpy arrays from the caps; this module moves bytes,
//! waits with the GIL released, and turns transport errors into the package's exceptions.
//!
//! Frames reach Python without a copy through the buffer protocol: a copied frame is a buffer
//! owned here ([`FrameBuffer`]), a zero-copy frame a pinned slot ([`PinnedBuffer`]) and a frame
//! drawn in place a writer slot ([`SlotBuffer`]). numpy wraps them with `np.frombuffer`, and the
//! array keeps the object (and so the pin, or the mapping) alive until it is collected.

use pyo3::exceptions::{PyBufferError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use pyo3::{PyTraverseError, ffi};
use shmframe_transport as transport;
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use transport::{
    Backpressure, FrameInfo, FrameMeta, Layout, ReadResult, ReaderOptions, SlotLease,
    StartPosition, StreamState, WriterConfig,
};

/// Longest time the GIL stays released in one wait: signals (Ctrl-C) are handled this often.
const WAIT_SLICE: Duration = Duration::from_millis(100);
/// How often a reader created with `wait` looks for its segment (and a live writer) again.
const ATTACH_POLL: Duration = Duration::from_millis(20);

/// The exception class `class` of the package (`shmframe._errors`), made with `message` and
/// given the attributes `fields` sets.
fn shm_error(
    py: Python<'_>,
    class: &str,
    message: &str,
    fields: impl FnOnce(&Bound<'_, PyAny>) -> PyResult<()>,
) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let exc = py
            .import("shmframe._errors")?
            .getattr(class)?
            .call1((message,))?;
        fields(&exc)?;
        Ok(PyErr::from_value(exc))
    };
    build().unwrap_or_else(|failed| failed)
}

/// The package exception for a transport error; its text is the error's Display.
fn to_py(py: Python<'_>, err: transport::Error) -> PyErr {
    use transport::Error as E;
    let msg = err.to_string();
    let none = |_: &Bound<'_, PyAny>| Ok(());
    match err {
        E::InvalidName { name, .. } => {
            shm_error(py, "InvalidName", &msg, |e| e.setattr("name", name))
        }
        E::InvalidConfig(_) | E::FrameTooLarge { .. } | E::CapsTooLong { .. } => {
            shm_error(py, "InvalidConfig", &msg, none)
        }
        E::NotFound { name } => shm_error(py, "SegmentNotFound", &msg, |e| e.setattr("name", name)),
        E::WriterExists { name, pid } => shm_error(py, "WriterExists", &msg, |e| {
            e.setattr("name", name)?;
            e.setattr("pid", pid)
        }),
        E::ForeignFile { path } => shm_error(py, "ForeignFile", &msg, |e| e.setattr("path", path)),
        E::NotAFile { path, what } => shm_error(py, "NotAFile", &msg, |e| {
            e.setattr("path", path)?;
            e.setattr("what", what)
        }),
        E::NotReplaceable {
            path,
            owner,
            user,
            stale,
        } => shm_error(py, "NotReplaceable", &msg, |e| {
            e.setattr("path", path)?;
            e.setattr("owner", owner)?;
            e.setattr("user", user)?;
            e.setattr("stale", stale)
        }),
        E::Sparse {
            path,
            size,
            allocated,
        } => shm_error(py, "SparseSegment", &msg, |e| {
            e.setattr("path", path)?;
            e.setattr("size", size)?;
            e.setattr("allocated", allocated)
        }),
        E::VersionMismatch { expected, found } => shm_error(py, "VersionMismatch", &msg, |e| {
            e.setattr("expected", expected)?;
            e.setattr("found", found)
        }),
        E::Truncated {
            what,
            expected,
            found,
        } => shm_error(py, "TruncatedSegment", &msg, |e| {
            e.setattr("field", what)?;
            e.setattr("expected", expected)?;
            e.setattr("found", found)
        }),
        E::Corrupt {
            field,
            expected,
            found,
        } => shm_error(py, "CorruptSegment", &msg, |e| {
            e.setattr("field", field)?;
            e.setattr("expected", expected)?;
            e.setattr("found", found)
        }),
        E::PermissionDenied { path, .. } => {
            shm_error(py, "PermissionDenied", &msg, |e| e.setattr("path", path))
        }
        E::WrongWriter {
            path,
            expected,
            found,
        } => shm_error(py, "WrongWriter", &msg, |e| {
            e.setattr("path", path)?;
            e.setattr("expected", expected)?;
            e.setattr("found", found)
        }),
        E::TooManyReaders { name, max } => shm_error(py, "TooManyReaders", &msg, |e| {
            e.setattr("name", name)?;
            e.setattr("max", max)
        }),
        E::NoSpace {
            dir,
            needed,
            available,
        } => shm_error(py, "NoSpace", &msg, |e| {
            e.setattr("directory", dir)?;
            e.setattr("needed", needed)?;
            e.setattr("available", available)
        }),
        E::ReadersMissing {
            name,
            wanted,
            attached,
            ..
        } => shm_error(py, "ReadersMissing", &msg, |e| {
            e.setattr("name", name)?;
            e.setattr("wanted", wanted)?;
            e.setattr("attached", attached)
        }),
        E::WriterGone { .. } => shm_error(py, "WriterGone", &msg, |e| {
            e.setattr("pid", py.None())?;
            e.setattr("clean", false)
        }),
        E::Interrupted | E::Io { .. } => shm_error(py, "ShmFrameError", &msg, none),
    }
}

fn writer_gone(py: Python<'_>, pid: u32, clean: bool) -> PyErr {
    let how = if clean { "closed the segment" } else { "died" };
    shm_error(
        py,
        "WriterGone",
        &format!("the writer (pid {pid}) {how}"),
        |e| {
            e.setattr("pid", pid)?;
            e.setattr("clean", clean)
        },
    )
}

fn closed(py: Python<'_>, what: &str) -> PyErr {
    shm_error(
        py,
        "ShmFrameError",
        &format!("{what} is closed"),
        |_| Ok(()),
    )
}

/// A timeout in seconds (`None`: forever) as a deadline.
fn deadline_after(timeout: Option<f64>) -> PyResult<Option<Instant>> {
    match timeout {
        None => Ok(None),
        Some(t) if t.is_nan() || t < 0.0 => Err(PyValueError::new_err(format!(
            "timeout must be None or at least 0 seconds, got {t}"
        ))),
        Some(t) => Ok(Some(
            Instant::now() + Duration::try_from_secs_f64(t).unwrap_or(Duration::MAX / 4),
        )),
    }
}

/// [`transport::Reader::open`], with signal handlers run every slice while it waits: the
/// handshake with a writer that does not answer (stopped, hung) lasts up to 5 s, and Ctrl-C
/// must not wait for it. The open runs in a thread of its own, interrupted when a handler
/// raises; the outer `Err` is that exception.
fn open_reader(
    py: Python<'_>,
    name: &str,
    opts: &ReaderOptions,
) -> PyResult<Result<transport::Reader, transport::Error>> {
    let interrupt = transport::Interrupt::new();
    std::thread::scope(|scope| {
        let (done, mut opened) = std::sync::mpsc::sync_channel(1);
        let opening = interrupt.clone();
        scope.spawn(move || {
            let _ = done.send(transport::Reader::open_with_interrupt(name, opts, opening));
        });
        loop {
            // The receiver goes along (it may not be shared with the detached closure).
            let received;
            (received, opened) = py.detach(move || (opened.recv_timeout(WAIT_SLICE), opened));
            match received {
                Ok(result) => return Ok(result),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(PyRuntimeError::new_err(
                        "the thread opening the reader died",
                    ));
                }
            }
            if let Err(raised) = py.check_signals() {
                // The open ends within a poll of the interrupt; the scope waits for it.
                interrupt.interrupt();
                return Err(raised);
            }
        }
    })
}

/// What is left of the wait until `deadline`, at most one slice (so signals are handled).
fn next_slice(deadline: Option<Instant>) -> Duration {
    deadline.map_or(WAIT_SLICE, |d| {
        d.saturating_duration_since(Instant::now()).min(WAIT_SLICE)
    })
}

fn expired(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

/// Fills `view` with `len` bytes at `buf`, exported by `owner`.
///
/// # Safety
/// `view` comes from the interpreter's buffer request, and `buf..buf+len` stays valid (and, if
/// `writable`, writable) for as long as `owner` lives: the view holds a reference to it.
unsafe fn export(
    owner: &Bound<'_, PyAny>,
    view: *mut ffi::Py_buffer,
    flags: c_int,
    buf: *mut u8,
    len: usize,
    writable: bool,
) -> PyResult<()> {
    let len = isize::try_from(len).map_err(|_| PyBufferError::new_err("frame too large"))?;
    // SAFETY: PyBuffer_FillInfo fills every field of `view` (format "B", one dimension of `len`
    // bytes), takes a reference to `owner`, and refuses a writable request for a read-only
    // buffer with BufferError.
    let rc = unsafe {
        ffi::PyBuffer_FillInfo(
            view,
            owner.as_ptr(),
            buf as *mut c_void,
            len,
            c_int::from(!writable),
            flags,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(PyErr::fetch(owner.py()))
    }
}

/// Buffers of copied frames whose arrays were collected, kept for the next copies of the same
/// reader: a fresh allocation of a large frame costs a page fault per 4 KiB page at every
/// frame (a 1080p RGBA frame: 2,025 faults), about as much as the copy itself.
#[derive(Default)]
struct BufferPool {
    free: std::sync::Mutex<Vec<Box<[u8]>>>,
}

/// How many collected buffers a reader keeps (a consumer that holds a few frames at a time
/// needs no more).
const POOLED_BUFFERS: usize = 4;

impl BufferPool {
    /// A buffer of `len` bytes: a pooled one (its old content is about to be overwritten) or
    /// a new one, zeroed.
    fn take(&self, len: usize) -> Box<[u8]> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(buffer) = free.pop() {
            if buffer.len() == len {
                return buffer;
            }
        }
        drop(free);
        vec![0u8; len].into_boxed_slice()
    }

    fn give_back(&self, buffer: Box<[u8]>) {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < POOLED_BUFFERS {
            free.push(buffer);
        }
    }
}

/// A frame copied out of a slot: a writable buffer of its bytes, owned by Python; back to its
/// reader's pool when collected.
#[pyclass(module = "shmframe._native", frozen)]
struct FrameBuffer {
    /// The bytes, from `Box::into_raw`: Python writes them through the buffer protocol, which
    /// a `Box` reached through `&self` would not permit.
    data: *mut [u8],
    pool: std::sync::Arc<BufferPool>,
}

// SAFETY: the bytes are owned by this object alone; Python code reaches them only through the
// buffer protocol (numpy arrays, with the usual rules of a shared bytearray), Rust only hands
// them back to the pool on drop, when no export is left.
unsafe impl Send for FrameBuffer {}
// SAFETY: as above: no Rust code reads or writes the bytes through `&self`.
unsafe impl Sync for FrameBuffer {}

impl FrameBuffer {
    fn new(bytes: Box<[u8]>, pool: std::sync::Arc<BufferPool>) -> FrameBuffer {
        FrameBuffer {
            data: Box::into_raw(bytes),
            pool,
        }
    }
}

impl Drop for FrameBuffer {
    fn drop(&mut self) {
        // SAFETY: `data` came from Box::into_raw and is taken back once, here; every buffer
        // export held a reference to this object, so none is left.
        let bytes = unsafe { Box::from_raw(self.data) };
        self.pool.give_back(bytes);
    }
}

#[pymethods]
impl FrameBuffer {
    /// # Safety
    /// Called by the interpreter only, with a view to fill.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        let data = slf.get().data;
        // SAFETY: the bytes live, unmoved, as long as the object, which the view references.
        unsafe { export(slf.as_any(), view, flags, data as *mut u8, data.len(), true) }
    }

    fn __len__(&self) -> usize {
        self.data.len()
    }
}

/// A frame pinned in its slot: a read-only buffer over shared memory. The writer leaves the slot
/// alone until this object (and every array made from it) is garbage-collected.
#[pyclass(module = "shmframe._native", frozen)]
struct PinnedBuffer {
    frame: transport::PinnedFrame,
}

#[pymethods]
impl PinnedBuffer {
    /// # Safety
    /// Called by the interpreter only, with a view to fill.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        let data = slf.get().frame.data();
        // SAFETY: the pinned frame keeps its reader's mapping (and the pin) until the object is
        // dropped; the export is read-only (the data is mapped read-only in this process).
        unsafe {
            export(
                slf.as_any(),
                view,
                flags,
                data.as_ptr() as *mut u8,
                data.len(),
                false,
            )
        }
    }

    fn __len__(&self) -> usize {
        self.frame.data().len()
    }
}

/// The slot a writer leased for `Writer.frame()`: a writable buffer over shared memory, exported
/// only until the frame is published or discarded.
#[pyclass(module = "shmframe._native", frozen)]
struct SlotBuffer {
    /// Keeps the segment mapped for as long as an array refers to the slot.
    _lender: transport::Lender,
    /// The slot's address (a pointer is not `Send`); `len` bytes are mapped there.
    addr: usize,
    len: usize,
    open: std::sync::atomic::AtomicBool,
}

#[pymethods]
impl SlotBuffer {
    /// # Safety
    /// Called by the interpreter only, with a view to fill.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        let this = slf.get();
        if !this.open.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(PyBufferError::new_err(
                "the frame was published or discarded: its slot can no longer be written",
            ));
        }
        // SAFETY: the lender keeps the mapping while this object lives; the slot is leased to
        // the writer (its seq word odd, no index entry refers to it) until it is published, and
        // the package hands the array to one `with writer.frame()` block only.
        unsafe {
            export(
                slf.as_any(),
                view,
                flags,
                this.addr as *mut u8,
                this.len,
                true,
            )
        }
    }

    fn __len__(&self) -> usize {
        self.len
    }
}

/// The metadata of a frame as a tuple: `(number, pts, dts, duration, flags, size, caps_gen,
/// write_time_ns, missed_before)`.
type InfoTuple = (
    u64,
    Option<u64>,
    Option<u64>,
    Option<u64>,
    u32,
    u64,
    u64,
    u64,
    u64,
);

fn info_tuple(i: &FrameInfo) -> InfoTuple {
    (
        i.number,
        i.pts,
        i.dts,
        i.duration,
        i.flags,
        i.size,
        i.caps_gen,
        i.write_time_ns,
        i.missed_before,
    )
}

/// A reader attached to one segment (see the package's `Reader`).
#[pyclass(module = "shmframe._native")]
struct Reader {
    name: String,
    inner: Option<transport::Reader>,
    /// Buffers of copied frames, reused.
    pool: std::sync::Arc<BufferPool>,
}

impl Reader {
    fn open(&self, py: Python<'_>) -> PyResult<&transport::Reader> {
        self.inner.as_ref().ok_or_else(|| closed(py, "reader"))
    }
}

#[pymethods]
impl Reader {
    /// Attaches to `name`; with `wait` seconds, waits that long for the segment and a live
    /// writer to appear. With `writer_uid`, only a segment of that user is accepted.
    #[new]
    #[pyo3(signature = (name, start = "newest", wait = 0.0, writer_uid = None))]
    fn new(
        py: Python<'_>,
        name: &str,
        start: &str,
        wait: f64,
        writer_uid: Option<u32>,
    ) -> PyResult<Reader> {
        let start = match start {
            "newest" => StartPosition::Newest,
            "oldest" => StartPosition::Oldest,
            other => {
                return Err(PyValueError::new_err(format!(
                    "start must be 'newest' or 'oldest', got {other:?}"
                )));
            }
        };
        let mut opts = ReaderOptions {
            start,
            writer_uid,
            ..Default::default()
        };
        let deadline = deadline_after(Some(wait))?;
        loop {
            let err = match open_reader(py, name, &opts)? {
                Ok(reader) if reader.writer_alive() => {
                    return Ok(Reader {
                        name: name.to_string(),
                        inner: Some(reader),
                        pool: Default::default(),
                    });
                }
                Ok(reader) => writer_gone(
                    py,
                    reader.writer_pid(),
                    reader.stream_state() == StreamState::Closed,
                ),
                Err(
                    e @ (transport::Error::NotFound { .. } | transport::Error::WriterGone { .. }),
                ) => to_py(py, e),
                Err(e) => return Err(to_py(py, e)),
            };
            if expired(deadline) {
                return Err(err);
            }
            // A reader that waited for its writer starts at the oldest frame still held
            // whatever `start` says (as shmframesrc): the writer began after it, so nothing
            // that writer published is skipped.
            opts.start = StartPosition::Oldest;
            py.detach(|| std::thread::sleep(next_slice(deadline).min(ATTACH_POLL)));
            py.check_signals()?;
        }
    }

    /// Waits up to `timeout` seconds (None: forever) for the next frame. Returns `(info, buffer)`
    /// with `info` an [`InfoTuple`] and `buffer` a `FrameBuffer` (`copy`) or a `PinnedBuffer`,
    /// or None on timeout. Raises `EndOfStream` or `WriterGone`.
    #[pyo3(signature = (timeout = None, copy = true))]
    fn read(
        &mut self,
        py: Python<'_>,
        timeout: Option<f64>,
        copy: bool,
    ) -> PyResult<Option<(InfoTuple, Py<PyAny>)>> {
        let deadline = deadline_after(timeout)?;
        let name = &self.name;
        let reader = self.inner.as_mut().ok_or_else(|| closed(py, "reader"))?;
        let pool = &self.pool;
        loop {
            let slice = next_slice(deadline);
            let mut copied: Option<Box<[u8]>> = None;
            let mut pinned = None;
            let result = py
                .detach(|| {
                    if copy {
                        reader.read_next(slice, |_, view| {
                            // Called again if the writer overwrote the frame meanwhile: the
                            // buffer is reused.
                            let buffer = match copied.take() {
                                Some(b) if b.len() == view.len() => b,
                                _ => pool.take(view.len()),
                            };
                            view.copy_to(copied.insert(buffer));
                        })
                    } else {
                        reader.pin_next(slice, &mut pinned)
                    }
                })
                .map_err(|e| to_py(py, e))?;
            match result {
                ReadResult::Frame(info) => {
                    let buffer = match (pinned, copied) {
                        (Some(frame), _) => Py::new(py, PinnedBuffer { frame })?.into_any(),
                        (None, Some(bytes)) => {
                            Py::new(py, FrameBuffer::new(bytes, self.pool.clone()))?.into_any()
                        }
                        (None, None) => {
                            Py::new(py, FrameBuffer::new(Box::default(), self.pool.clone()))?
                                .into_any()
                        }
                    };
                    return Ok(Some((info_tuple(&info), buffer)));
                }
                ReadResult::Eos => {
                    let quoted = PyString::new(py, name).repr()?;
                    let message = format!(
                        "end of stream on {quoted} after {} frames",
                        reader.frames_read()
                    );
                    return Err(shm_error(py, "EndOfStream", &message, |_| Ok(())));
                }
                ReadResult::WriterGone { clean } => {
                    return Err(writer_gone(py, reader.writer_pid(), clean));
                }
                ReadResult::Timeout => {
                    py.check_signals()?;
                    if expired(deadline) {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// The caps string of generation `caps_gen`, if the header still holds it.
    fn caps_of(&self, py: Python<'_>, caps_gen: u64) -> PyResult<Option<String>> {
        self.open(py)?.caps(caps_gen).map_err(|e| to_py(py, e))
    }

    /// The writer's current caps string (None before it announced any).
    #[getter]
    fn caps(&self, py: Python<'_>) -> PyResult<Option<String>> {
        let reader = self.open(py)?;
        reader
            .caps(reader.current_caps_gen())
            .map_err(|e| to_py(py, e))
    }

    #[getter]
    fn layout(&self, py: Python<'_>) -> PyResult<&'static str> {
        Ok(layout_name(self.open(py)?.layout()))
    }

    #[getter]
    fn depth(&self, py: Python<'_>) -> PyResult<u32> {
        Ok(self.open(py)?.geometry().depth)
    }

    /// The segment's geometry (see the package's `Geometry`).
    #[getter]
    fn geometry(&self, py: Python<'_>) -> PyResult<GeometryTuple> {
        Ok(geometry_tuple(self.open(py)?.geometry()))
    }

    #[getter]
    fn frames_read(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.open(py)?.frames_read())
    }

    #[getter]
    fn frames_missed(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.open(py)?.frames_missed())
    }

    #[getter]
    fn evictions(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.open(py)?.evictions())
    }

    #[getter]
    fn cursor(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.open(py)?.cursor())
    }

    #[getter]
    fn session(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.open(py)?.session())
    }

    #[getter]
    fn writer_pid(&self, py: Python<'_>) -> PyResult<u32> {
        Ok(self.open(py)?.writer_pid())
    }

    #[getter]
    fn writer_session(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.open(py)?.writer_session())
    }

    #[getter]
    fn writer_alive(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self.open(py)?.writer_alive())
    }

    #[getter]
    fn stream_state(&self, py: Python<'_>) -> PyResult<&'static str> {
        Ok(match self.open(py)?.stream_state() {
            StreamState::Starting => "starting",
            StreamState::Running => "running",
            StreamState::Eos => "eos",
            StreamState::Closed => "closed",
        })
    }

    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_none()
    }

    /// Detaches. Frames still pinned by arrays keep the reader's table entry (and their slots)
    /// until those arrays are collected.
    fn close(&mut self) {
        self.inner = None;
    }
}

/// The fields of the package's `Geometry`, in its order: layout, depth, slot_count,
/// spare_slots, backpressure, slot_capacity, slot_stride, max_readers, segment_size.
type GeometryTuple = (
    &'static str,
    u32,
    u32,
    u32,
    &'static str,
    u64,
    u64,
    u32,
    u64,
);

fn geometry_tuple(geo: &transport::Geometry) -> GeometryTuple {
    (
        layout_name(geo.layout),
        geo.depth,
        geo.slot_count,
        geo.slot_count - geo.depth,
        backpressure_name(geo.backpressure),
        geo.slot_capacity,
        geo.slot_stride,
        geo.max_readers,
        geo.total_len,
    )
}

fn backpressure_name(backpressure: Backpressure) -> &'static str {
    match backpressure {
        Backpressure::Block => "block",
        Backpressure::DropOldest => "drop-oldest",
        Backpressure::DropNewest => "drop-newest",
    }
}

fn layout_name(layout: Layout) -> &'static str {
    match layout {
        Layout::Double => "double",
        Layout::Ring => "ring",
    }
}

/// Cuts the writer's blocking calls (a `block` ring that stays full, the wait for readers)
/// into slices, so that the thread waiting in one handles its signals (Ctrl-C) between them:
/// a thread of its own interrupts a call that has lasted one [`WAIT_SLICE`] or more, and
/// [`Writer::blocking`] checks for signals and makes the call again. A call costs two atomic
/// increments; the thread wakes 10 times a second while its writer lives.
struct SliceTimer {
    shared: std::sync::Arc<SliceShared>,
}

struct SliceShared {
    /// Bumped when a call starts and when it ends: odd while one is in progress.
    calls: AtomicU64,
    interrupt: transport::Interrupt,
}

impl SliceTimer {
    fn start(interrupt: transport::Interrupt) -> PyResult<SliceTimer> {
        let shared = std::sync::Arc::new(SliceShared {
            calls: AtomicU64::new(0),
            interrupt,
        });
        let watched = std::sync::Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("shmframe-slices".into())
            .spawn(move || {
                // Ends within a slice of the writer's end (the weak reference dies with it).
                while let Some(seen) = watched.upgrade().map(|s| s.calls.load(Ordering::SeqCst)) {
                    std::thread::sleep(WAIT_SLICE);
                    let Some(shared) = watched.upgrade() else {
                        return;
                    };
                    if seen % 2 == 1 && shared.calls.load(Ordering::SeqCst) == seen {
                        shared.interrupt.interrupt();
                    }
                }
            })
            .map_err(|e| {
                PyRuntimeError::new_err(format!("cannot start the writer's signal timer: {e}"))
            })?;
        Ok(SliceTimer { shared })
    }

    /// Runs `call` as one timed call.
    fn time<T>(&self, call: impl FnOnce() -> T) -> T {
        self.shared.calls.fetch_add(1, Ordering::SeqCst);
        let result = call();
        self.shared.calls.fetch_add(1, Ordering::SeqCst);
        result
    }
}

/// A writer owning one segment (see the package's `Writer`).
#[pyclass(module = "shmframe._native")]
struct Writer {
    inner: Option<transport::Writer>,
    /// The slot `Writer.frame()` is drawing into, and the buffer exported over it.
    leased: Option<(SlotLease, Py<SlotBuffer>)>,
    /// Started by the first call that may block.
    slices: Option<SliceTimer>,
}

impl Writer {
    fn open(&self, py: Python<'_>) -> PyResult<&transport::Writer> {
        self.inner.as_ref().ok_or_else(|| closed(py, "writer"))
    }

    fn open_mut(&mut self, py: Python<'_>) -> PyResult<&mut transport::Writer> {
        self.inner.as_mut().ok_or_else(|| closed(py, "writer"))
    }

    /// Runs `call` on the writer with the GIL released, made again after each slice in which
    /// it blocked, until it returns; between slices, signal handlers run (Ctrl-C raises
    /// KeyboardInterrupt here). `call` must be one that can be made again after
    /// `Error::Interrupted` (each of the transport's blocking calls can).
    fn blocking<T: Send>(
        &mut self,
        py: Python<'_>,
        mut call: impl FnMut(&mut transport::Writer) -> Result<T, transport::Error> + Send,
    ) -> PyResult<T> {
        let writer = self.inner.as_mut().ok_or_else(|| closed(py, "writer"))?;
        let slices = match &mut self.slices {
            Some(slices) => slices,
            empty => empty.insert(SliceTimer::start(writer.interrupt_handle())?),
        };
        loop {
            match py.detach(|| slices.time(|| call(writer))) {
                Err(transport::Error::Interrupted) => {
                    slices.shared.interrupt.clear();
                    py.check_signals()?;
                }
                result => return result.map_err(|e| to_py(py, e)),
            }
        }
    }

    fn refuse_while_leased(&self, py: Python<'_>) -> PyResult<()> {
        if self.leased.is_some() {
            return Err(shm_error(
                py,
                "ShmFrameError",
                "a frame from writer.frame() is still being drawn: leave its with block first",
                |_| Ok(()),
            ));
        }
        Ok(())
    }

    /// Ends the lease of `Writer.frame()`: no new array may be made over the slot. Returns the
    /// lease and the frame size it was made for.
    fn take_lease(&mut self, py: Python<'_>) -> PyResult<(SlotLease, u64)> {
        let (lease, buffer) = self.leased.take().ok_or_else(|| {
            shm_error(
                py,
                "ShmFrameError",
                "no frame is being drawn: call writer.frame() first",
                |_| Ok(()),
            )
        })?;
        buffer
            .get()
            .open
            .store(false, std::sync::atomic::Ordering::Relaxed);
        Ok((lease, buffer.get().len as u64))
    }
}

impl Drop for Writer {
    /// A writer collected without `close()` closes here, and after EOS that waits for attached
    /// readers to read to the end (up to the reader timeout): without holding the GIL.
    fn drop(&mut self) {
        let mut writer = self.inner.take();
        // (A slot leased for `frame()` needs no release: the segment is closing.)
        Python::try_attach(|py| {
            let writer = writer.take();
            py.detach(move || drop(writer));
        });
        // The interpreter is shutting down: close with it as it is.
        drop(writer);
    }
}

fn frame_meta(pts: Option<u64>, duration: Option<u64>, flags: u32) -> FrameMeta {
    FrameMeta {
        pts,
        dts: None,
        duration,
        flags,
    }
}

#[pymethods]
impl Writer {
    /// Creates segment `name` with slots of `slot_size` bytes.
    /// `wait_for_readers`: the first frame waits until this many readers are attached, for at
    /// most `wait_for_readers_timeout` seconds (None: for ever). `caps`: written into the
    /// segment before it appears, so no reader finds it without them.
    #[new]
    #[pyo3(signature = (name, slot_size, layout = "ring", depth = 4,
        backpressure = "drop-oldest", perms = 0o600, spare_slots = 0, reader_timeout = 1.0,
        wait_for_readers = 0, wait_for_readers_timeout = None, caps = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        name: &str,
        slot_size: u64,
        layout: &str,
        depth: u32,
        backpressure: &str,
        perms: u32,
        spare_slots: u32,
        reader_timeout: f64,
        wait_for_readers: u32,
        wait_for_readers_timeout: Option<f64>,
        caps: Option<String>,
    ) -> PyResult<Writer> {
        let mut cfg = WriterConfig::new(name, slot_size);
        cfg.caps = caps;
        cfg.layout = match layout {
            "ring" => Layout::Ring,
            "double" => Layout::Double,
            other => {
                return Err(PyValueError::new_err(format!(
                    "layout must be 'ring' or 'double', got {other:?}"
                )));
            }
        };
        cfg.backpressure = match backpressure {
            "block" => Backpressure::Block,
            "drop-oldest" => Backpressure::DropOldest,
            "drop-newest" => Backpressure::DropNewest,
            other => {
                return Err(PyValueError::new_err(format!(
                    "backpressure must be one of block, drop-oldest, drop-newest, got {other:?}"
                )));
            }
        };
        cfg.depth = depth;
        cfg.perms = perms;
        cfg.spare_slots = spare_slots;
        cfg.reader_timeout = Duration::try_from_secs_f64(reader_timeout).map_err(|_| {
            PyValueError::new_err(format!(
                "reader_timeout must be a positive number of seconds, got {reader_timeout}"
            ))
        })?;
        cfg.wait_for_readers = wait_for_readers;
        cfg.wait_for_readers_timeout = match wait_for_readers_timeout {
            None => None,
            Some(t) => Some(Duration::try_from_secs_f64(t).map_err(|_| {
                PyValueError::new_err(format!(
                    "wait_for_readers_timeout must be None or at least 0 seconds, got {t}"
                ))
            })?),
        };
        let writer = py
            .detach(|| transport::Writer::create(&cfg))
            .map_err(|e| to_py(py, e))?;
        Ok(Writer {
            inner: Some(writer),
            leased: None,
            slices: None,
        })
    }

    /// Announces the caps string frames are described by.
    fn set_caps(&mut self, py: Python<'_>, caps: &str) -> PyResult<u64> {
        self.open_mut(py)?.set_caps(caps).map_err(|e| to_py(py, e))
    }

    /// Copies the contiguous bytes of `data` into a slot and publishes them as the next frame.
    /// Returns its number, or None if it was dropped. Waits (GIL released) under `block`.
    #[pyo3(signature = (data, pts = None, duration = None, flags = 0))]
    fn write(
        &mut self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        pts: Option<u64>,
        duration: Option<u64>,
        flags: u32,
    ) -> PyResult<Option<u64>> {
        self.refuse_while_leased(py)?;
        let buffer = pyo3::buffer::PyBuffer::<u8>::get(data)?;
        if !buffer.is_c_contiguous() {
            return Err(PyValueError::new_err(
                "the frame's bytes must be contiguous (np.ascontiguousarray)",
            ));
        }
        // SAFETY: the buffer stays exported (so its memory valid and unmoved) until `buffer` is
        // dropped after the write. Another Python thread writing the array meanwhile would make
        // the frame's content torn, as it would any numpy copy made without the GIL.
        let bytes = unsafe {
            std::slice::from_raw_parts(buffer.buf_ptr() as *const u8, buffer.len_bytes())
        };
        let meta = frame_meta(pts, duration, flags);
        let outcome = self.blocking(py, |writer| writer.write(&meta, bytes))?;
        drop(buffer);
        Ok(outcome.frame())
    }

    /// Leases a slot for a frame of `size` bytes drawn in place (waiting, GIL released, under
    /// `block`). Returns its buffer, or None if the frame is dropped (drop-newest, full ring).
    fn lease(&mut self, py: Python<'_>, size: usize) -> PyResult<Option<Py<SlotBuffer>>> {
        self.refuse_while_leased(py)?;
        let writer = self.open_mut(py)?;
        if size as u64 > writer.slot_capacity() {
            let err = transport::Error::FrameTooLarge {
                size: size as u64,
                capacity: writer.slot_capacity(),
            };
            return Err(to_py(py, err));
        }
        // The wait for readers first: publishing would wait for them otherwise, and an
        // interrupted publish gives the drawn frame up.
        let acquired = self.blocking(py, |writer| {
            writer.await_readers()?;
            writer.acquire()
        })?;
        let Some(lease) = acquired else {
            return Ok(None);
        };
        let writer = self.open_mut(py)?;
        let addr = writer.slot_mut(&lease).as_mut_ptr() as usize;
        let buffer = Py::new(
            py,
            SlotBuffer {
                _lender: writer.lender(),
                addr,
                len: size,
                open: std::sync::atomic::AtomicBool::new(true),
            },
        )?;
        self.leased = Some((lease, buffer.clone_ref(py)));
        Ok(Some(buffer))
    }

    /// Performs the wait of `wait_for_readers` unless it is over (GIL released, Ctrl-C
    /// honoured); raises `ReadersMissing` once when its timeout runs out.
    fn await_readers(&mut self, py: Python<'_>) -> PyResult<()> {
        self.blocking(py, |writer| writer.await_readers())
    }

    /// Publishes the leased slot as the next frame (see `lease`); returns its number or None.
    #[pyo3(signature = (pts = None, duration = None, flags = 0))]
    fn publish(
        &mut self,
        py: Python<'_>,
        pts: Option<u64>,
        duration: Option<u64>,
        flags: u32,
    ) -> PyResult<Option<u64>> {
        let (lease, size) = self.take_lease(py)?;
        let meta = frame_meta(pts, duration, flags);
        let writer = self.open_mut(py)?;
        let outcome = py
            .detach(|| writer.publish(lease, &meta, size))
            .map_err(|e| to_py(py, e))?;
        Ok(outcome.frame())
    }

    /// Gives the leased slot back unpublished.
    fn discard(&mut self, py: Python<'_>) -> PyResult<()> {
        let (lease, _) = self.take_lease(py)?;
        self.open_mut(py)?.release(lease);
        Ok(())
    }

    /// Makes every reader skip what the ring holds.
    fn clear(&mut self, py: Python<'_>) -> PyResult<()> {
        self.open_mut(py)?.clear();
        Ok(())
    }

    fn end_of_stream(&mut self, py: Python<'_>) -> PyResult<()> {
        self.open_mut(py)?.end_of_stream();
        Ok(())
    }

    /// Readers attached now (after a liveness check).
    fn reader_count(&mut self, py: Python<'_>) -> PyResult<usize> {
        let writer = self.open_mut(py)?;
        writer.poll_readers();
        Ok(writer.reader_count())
    }

    /// The readers attached now, as dicts: `index` (table entry), `pid`, `cursor`, `lag`, `frames_read`,
    /// `frames_missed`, `evicted`, `pinned_slots` (slots it holds pinned).
    fn readers<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        self.open(py)?
            .info()
            .readers
            .iter()
            .map(|r| {
                let d = PyDict::new(py);
                d.set_item("index", r.index)?;
                d.set_item("pid", r.pid)?;
                d.set_item("cursor", r.cursor)?;
                d.set_item("lag", r.lag)?;
                d.set_item("frames_read", r.frames_read)?;
                d.set_item("frames_missed", r.frames_missed)?;
                d.set_item("evicted", r.evicted)?;
                d.set_item("pinned_slots", r.pinned_slots)?;
                Ok(d)
            })
            .collect()
    }

    /// Waits up to `timeout` seconds (None: forever) until `count` readers are attached.
    #[pyo3(signature = (count = 1, timeout = None))]
    fn wait_for_readers(
        &mut self,
        py: Python<'_>,
        count: usize,
        timeout: Option<f64>,
    ) -> PyResult<bool> {
        let deadline = deadline_after(timeout)?;
        let observer = self.open(py)?.observer();
        let interrupt = transport::Interrupt::new();
        loop {
            let slice = next_slice(deadline);
            if py.detach(|| observer.wait_for_readers(count, slice, &interrupt)) {
                return Ok(true);
            }
            py.check_signals()?;
            if expired(deadline) {
                return Ok(false);
            }
        }
    }

    #[getter]
    fn frames_written(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.open(py)?.frames_written())
    }

    #[getter]
    fn frames_dropped(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.open(py)?.frames_dropped())
    }

    #[getter]
    fn full_events(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.open(py)?.info().full_events)
    }

    #[getter]
    fn readers_evicted(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.open(py)?.info().readers_evicted)
    }

    /// Frames published so far: the number of the next frame.
    #[getter]
    fn head(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.open(py)?.info().head)
    }

    #[getter]
    fn slot_capacity(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.open(py)?.slot_capacity())
    }

    /// The segment's geometry (see the package's `Geometry`).
    #[getter]
    fn geometry(&self, py: Python<'_>) -> PyResult<GeometryTuple> {
        Ok(geometry_tuple(self.open(py)?.geometry()))
    }

    #[getter]
    fn session(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.open(py)?.session())
    }

    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_none()
    }

    /// Marks the stream closed (unless EOS was sent) and removes the name. After EOS, first
    /// waits (GIL released) until attached readers have read to the end, bounded by the reader
    /// timeout.
    fn close(&mut self, py: Python<'_>) -> PyResult<()> {
        if self.leased.is_some() {
            let (lease, _) = self.take_lease(py)?;
            if let Some(writer) = self.inner.as_mut() {
                writer.release(lease);
            }
        }
        if let Some(writer) = self.inner.take() {
            // A slice that ended as its call returned may have left the interrupt set: it
            // would cut the wait for readers to drain after EOS short.
            writer.interrupt_handle().clear();
            py.detach(|| writer.close());
        }
        Ok(())
    }

    fn __traverse__(&self, visit: pyo3::PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some((_, buffer)) = &self.leased {
            visit.call(buffer)?;
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        self.leased = None;
    }
}

/// Where segment `name` lives (`/dev/shm/<name>`, or under `SHMFRAME_DIR`); raises
/// `InvalidName` for a name the transport refuses.
#[pyfunction]
fn segment_path(py: Python<'_>, name: &str) -> PyResult<String> {
    let path = transport::segment_path(name).map_err(|e| to_py(py, e))?;
    Ok(path.to_string_lossy().into_owned())
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(segment_path, m)?)?;
    m.add("LAYOUT_VERSION", transport::LAYOUT_VERSION)?;
    m.add("MAX_DEPTH", transport::MAX_DEPTH)?;
    m.add("MAX_SPARE_SLOTS", transport::MAX_SPARE_SLOTS)?;
    m.add("MAX_READERS", transport::MAX_READERS)?;
    m.add("MAX_SLOT_CAPACITY", transport::MAX_SLOT_CAPACITY)?;
    m.add("MAX_NAME_LEN", transport::MAX_NAME_LEN)?;
    // How this module was compiled: a debug build is many times slower (the bench says so).
    m.add(
        "BUILD_PROFILE",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    )?;
    m.add_class::<Reader>()?;
    m.add_class::<Writer>()?;
    m.add_class::<FrameBuffer>()?;
    m.add_class::<PinnedBuffer>()?;
    m.add_class::<SlotBuffer>()?;
    Ok(())
}

//! The frame transport: a shared-memory segment in /dev/shm through which one writer process
//! hands video frames to any number of reader processes. Nothing here knows GStreamer; the
//! elements are thin layers over [`Writer`] and [`Subscriber`] / [`Reader`].
//!
//! * [`Writer::create`] makes a segment (exclusive per name; a dead writer's segment is
//!   reclaimed, a live one is refused naming its pid, a foreign file is left untouched).
//! * [`Reader::open`] attaches to an existing segment, validating every header field first.
//! * [`Subscriber`] is a reader that waits for a writer, follows writer restarts and reports
//!   what happened; it is what `shmframesrc` uses.
//!
//! Trust: the segment file is the writer's alone; readers open it read-only. Each reader
//! attaches over the stream's Unix socket and writes only its own control page, a sealed memfd
//! the writer hands it (see docs/LAYOUT.md). Synchronisation: frames are published through a
//! per-slot seqlock and a ring index; a reader waits on a futex word in its control page, which
//! the writer wakes only when the reader sleeps. The writer's liveness is an OFD byte lock the
//! kernel drops when it dies; a reader's is its connection.

mod caps;
mod cleanup;
mod copy;
mod error;
mod frame;
mod layout;
mod name;
mod observer;
mod reader;
mod registry;
mod segment;
mod slots;
mod sock;
mod subscriber;
mod sys;
mod types;
mod wait;
mod writer;

pub use cleanup::{NO_SIGTERM_HANDLER_ENV, disable_sigterm_handler};
pub use copy::{copy_frame, copy_rows};
pub use error::Error;
pub use frame::{FrameInfo, SlotView};
pub use layout::{
    Geometry, LAYOUT_VERSION, MAX_DEPTH, MAX_READERS, MAX_SLOT_CAPACITY, MAX_SPARE_SLOTS,
    socket_path,
};
pub use name::{MAX_NAME_LEN, segment_path, shm_dir, validate_name};
pub use observer::{Observer, ReaderInfo, SegmentInfo, inspect};
pub use reader::{PinnedFrame, ReadResult, Reader, ReaderOptions};
pub use registry::ReaderEvent;
pub use segment::check_name_for_writer;
pub use slots::Lender;
pub use subscriber::{Subscriber, SubscriberEvent};
pub use sys::{last_level_cache_bytes, monotonic_ns};
pub use types::{Backpressure, DEFAULT_READER_TIMEOUT, Layout, StartPosition, StreamState};
pub use wait::Interrupt;
pub use writer::{FrameMeta, SlotLease, WriteOutcome, Writer, WriterConfig};

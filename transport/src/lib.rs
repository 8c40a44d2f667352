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
//! Synchronisation: frames are published through a per-slot seqlock and a ring index; waiting
//! is a futex on a word in the shared control region, so a reader that is already awake costs
//! the writer no system call. Liveness of writer and readers is an OFD byte lock that the kernel
//! drops when the holder dies.

mod caps;
mod cleanup;
mod error;
mod frame;
mod layout;
mod name;
mod observer;
mod reader;
mod registry;
mod segment;
mod slots;
mod subscriber;
mod sys;
mod types;
mod wait;
mod writer;

pub use cleanup::{NO_SIGTERM_HANDLER_ENV, disable_sigterm_handler};
pub use error::Error;
pub use frame::{FrameInfo, SlotView};
pub use layout::{
    Geometry, LAYOUT_VERSION, MAX_DEPTH, MAX_READERS, MAX_SLOT_CAPACITY, MAX_SPARE_SLOTS,
};
pub use name::{MAX_NAME_LEN, segment_path, shm_dir, validate_name};
pub use observer::{Observer, ReaderInfo, SegmentInfo, inspect};
pub use reader::{PinnedFrame, ReadResult, Reader, ReaderOptions};
pub use segment::check_name_for_writer;
pub use slots::Lender;
pub use subscriber::{Subscriber, SubscriberEvent};
pub use sys::{last_level_cache_bytes, monotonic_ns};
pub use types::{Backpressure, DEFAULT_READER_TIMEOUT, Layout, StartPosition, StreamState};
pub use wait::Interrupt;
pub use writer::{
    FrameMeta, ReaderEvent, SlotLease, WriteOutcome, Writer, WriterConfig, copy_frame,
};

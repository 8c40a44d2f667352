//! `shmframesink`: publishes raw video frames, with their caps and timestamps, in a POSIX
//! shared-memory segment (`/dev/shm/<shm-name>`) that any number of `shmframesrc` elements, or
//! other programs using the transport, read from in other processes.
//!
//! The segment is a `ring` ("depot") of `depth` numbered frames that every reader reads in
//! order, or a `double` buffer with latest-frame semantics. When the slowest reader is `depth`
//! frames behind, `backpressure` decides: `block` (wait; a stalled reader is evicted after
//! `reader-timeout`), `drop-oldest` (overwrite; the reader counts what it missed) or
//! `drop-newest` (the incoming frame is dropped and counted).
//!
//! Every frame is written packed in the default GstVideoInfo layout of its caps, whatever
//! strides upstream used (GstVideoMeta is honoured). The caps string travels in the segment
//! header; a caps change that no longer fits the slots recreates the segment, and readers
//! follow (an element message `shmframe-segment-recreated` says so). Timestamps are stored as
//! CLOCK_MONOTONIC times so readers in other pipelines can map them to their running time.
//!
//! Upstream may write frames straight into shared memory: the sink proposes a buffer pool
//! whose buffers are slots of the segment, and publishes such a buffer without copying it. A
//! slot stays out of rotation while anything in the process still references its memory. Other
//! buffers (a camera's own memory, custom strides, a pool buffer pushed a second time) are
//! copied. At most `spare-slots` pool buffers are slots at a time; beyond that the pool hands out
//! ordinary memory rather than waiting.
//!
//! With `shape` (`WIDTHxHEIGHT` or `WIDTHxHEIGHT:FORMAT`) set, the sink pad only accepts that
//! geometry and the segment is created when the element starts, before any caps arrive, so
//! readers can attach early. Without it, the segment appears with the first caps.
//!
//! Signals: `reader-attached` / `reader-detached` (reader pid), `backpressure` (outcome, frames
//! dropped so far, earlier full events it stands for) and the action signal `clear`, which
//! empties the depot. Each event is also posted on the bus as an element message
//! (`shmframe-reader-attached`, `shmframe-reader-detached`, `shmframe-backpressure`, plus
//! `shmframe-reader-evicted`). A full ring is announced at most once per 100 ms: the events in
//! between are counted in the next announcement's `suppressed`, so a writer outrunning its
//! readers neither floods the bus nor allocates per frame.
//! The read-only `stats` property is a `shmframesink-stats` structure with `frames-written`,
//! `frames-in-place`, `frames-dropped`, `readers`, `full-events`, `readers-evicted`, `caps` and
//! `slot-size`.
//!
//! End of stream reaches every reader as EOS; stopping the element removes the segment.
//!
//! Like any sink, `shmframesink` waits for each frame's time on the clock (`sync=true`), so a
//! non-live source is published at its frame rate and readers started first see the whole
//! stream. Set `sync=false` to publish frames as soon as they arrive: less latency
//! from a live camera, or a lossless hand-off (`backpressure=block`) as fast as the readers go.
//!
//! ## Example
//!
//! The writer:
//!
//! ```text
//! gst-launch-1.0 videotestsrc is-live=true ! video/x-raw,width=640,height=480 ! shmframesink shm-name=cam0
//! ```
//!
//! Any number of readers, in other terminals:
//!
//! ```text
//! gst-launch-1.0 shmframesrc shm-name=cam0 ! videoconvert ! autovideosink
//! ```
//!
//! Lossless hand-off to a recorder (the writer waits for the slowest reader):
//!
//! ```text
//! gst-launch-1.0 videotestsrc num-buffers=300 ! video/x-raw,width=640,height=480 ! shmframesink shm-name=rec depth=16 backpressure=block
//! ```

use gst::glib;
use gst::prelude::*;

mod imp;
mod input;
mod notices;
mod pool;
mod settings;
mod stats;

glib::wrapper! {
    pub struct ShmFrameSink(ObjectSubclass<imp::ShmFrameSink>)
        @extends gst_base::BaseSink, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "shmframesink",
        gst::Rank::NONE,
        ShmFrameSink::static_type(),
    )
}

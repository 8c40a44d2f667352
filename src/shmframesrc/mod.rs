//! `shmframesrc`: a live source reading the raw video frames a `shmframesink` (or any program
//! using the transport's writer) publishes in a POSIX shared-memory segment.
//!
//! The writer's caps travel in the segment's header, so no capsfilter is needed; the source
//! renegotiates when the writer's caps change. It may be started before the writer and waits
//! for it; when the writer stops or crashes it waits for the next one and follows it (posting
//! `shmframe-writer-lost` / `shmframe-writer-attached` element messages and a warning on a
//! restart). The writer's end of stream becomes EOS downstream.
//!
//! Buffers carry the writer's frame number in `offset` (`offset-end` = number + 1) and are
//! flagged DISCONT after missed frames or a writer change. Timestamps follow the writer's, mapped
//! into this pipeline's running time through the shared monotonic clock
//! (`timestamp-mode=writer`), or are taken on arrival (`timestamp-mode=arrival`).
//!
//! The action signal `get-frame` (frame number) returns a `GstSample` of a frame the writer
//! still holds, or `NULL`, without disturbing the stream.
//!
//! ## Example
//!
//! In one terminal, the writer:
//!
//! ```text
//! gst-launch-1.0 videotestsrc is-live=true ! video/x-raw,width=640,height=480 ! shmframesink shm-name=cam0
//! ```
//!
//! In another, any number of readers (each may be started first):
//!
//! ```text
//! gst-launch-1.0 shmframesrc shm-name=cam0 ! videoconvert ! autovideosink
//! ```

use gst::glib;
use gst::prelude::*;

mod buffer;
mod imp;
mod settings;
mod timeline;

glib::wrapper! {
    pub struct ShmFrameSrc(ObjectSubclass<imp::ShmFrameSrc>)
        @extends gst_base::PushSrc, gst_base::BaseSrc, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "shmframesrc",
        gst::Rank::NONE,
        ShmFrameSrc::static_type(),
    )
}

//! The src's properties: their specs, the values set on them, and their validation.

use gst::glib;
use gst::prelude::*;

use super::imp::CAT;
use crate::properties::{self, same_variants};
use crate::shape::{Shape, ShapeSetting};
use crate::transport;

const DEFAULT_START: StartPosition = StartPosition::Newest;
const DEFAULT_TIMEOUT_MS: u64 = 5000;
const DEFAULT_TIMESTAMP_MODE: TimestampMode = TimestampMode::Writer;
const DEFAULT_COPY_MODE: CopyMode = CopyMode::Auto;
/// `writer-uid`: any writer the segment's permissions admit.
const ANY_WRITER_UID: i64 = -1;

/// Where a new reader begins in the writer's depot (the `start` property).
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstShmFrameSrcStart")]
pub enum StartPosition {
    #[enum_value(
        name = "Newest: begin with the newest frame the writer holds",
        nick = "newest"
    )]
    Newest = 0,
    #[enum_value(
        name = "Oldest: begin with the oldest frame still held in the depot",
        nick = "oldest"
    )]
    Oldest = 1,
}

same_variants!(StartPosition, transport::StartPosition, [Newest, Oldest]);

/// How output buffers are timestamped (the `timestamp-mode` property).
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstShmFrameSrcTimestampMode")]
pub enum TimestampMode {
    #[enum_value(
        name = "Writer: the writer's timestamps, mapped into this pipeline's running time \
                through the shared monotonic clock",
        nick = "writer"
    )]
    Writer = 0,
    #[enum_value(
        name = "Arrival: the running time at which this source pushes the frame",
        nick = "arrival"
    )]
    Arrival = 1,
}

/// Whether output buffers copy the frame or wrap the shared memory (the `copy-mode` property).
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstShmFrameSrcCopyMode")]
pub enum CopyMode {
    #[enum_value(
        name = "Auto: zero-copy while the readers together hold fewer frames than the writer's \
                spare slots, copies beyond that so buffering downstreams never hold up the writer",
        nick = "auto"
    )]
    Auto = 0,
    #[enum_value(
        name = "Copy: every frame is copied into a buffer of our own",
        nick = "copy"
    )]
    Copy = 1,
    #[enum_value(
        name = "Zero-copy: every buffer wraps the frame in shared memory, read-only, and keeps \
                the writer off its slot until released",
        nick = "zero-copy"
    )]
    ZeroCopy = 2,
}

#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub(super) shm_name: Option<String>,
    pub(super) shape: ShapeSetting,
    pub(super) start: StartPosition,
    pub(super) timeout_ms: u64,
    pub(super) timestamp_mode: TimestampMode,
    pub(super) copy_mode: CopyMode,
    pub(super) writer_uid: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            shm_name: None,
            shape: ShapeSetting::default(),
            start: DEFAULT_START,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            timestamp_mode: DEFAULT_TIMESTAMP_MODE,
            copy_mode: DEFAULT_COPY_MODE,
            writer_uid: ANY_WRITER_UID,
        }
    }
}

impl Settings {
    /// Sets the property `name`; `element` names the src in the log.
    pub(super) fn set(&mut self, element: &super::ShmFrameSrc, name: &str, value: &glib::Value) {
        match name {
            "shm-name" => self.shm_name = properties::shm_name_from(value, *CAT, element),
            "shape" => properties::set_shape(&mut self.shape, value, *CAT, element),
            "start" => self.start = value.get().expect("type checked upstream"),
            "timeout" => self.timeout_ms = value.get().expect("type checked upstream"),
            "copy-mode" => self.copy_mode = value.get().expect("type checked upstream"),
            "timestamp-mode" => self.timestamp_mode = value.get().expect("type checked upstream"),
            "writer-uid" => self.writer_uid = value.get().expect("type checked upstream"),
            other => unimplemented!("property {other}"),
        }
    }

    /// The value of the settable property `name`.
    pub(super) fn get(&self, name: &str) -> glib::Value {
        match name {
            "shm-name" => self.shm_name.to_value(),
            "shape" => self.shape.shape().map(|s| s.to_string()).to_value(),
            "start" => self.start.to_value(),
            "timeout" => self.timeout_ms.to_value(),
            "timestamp-mode" => self.timestamp_mode.to_value(),
            "copy-mode" => self.copy_mode.to_value(),
            "writer-uid" => self.writer_uid.to_value(),
            other => unimplemented!("property {other}"),
        }
    }

    /// The segment name and expected shape of valid settings, or the error that refuses them.
    pub(super) fn checked(&self) -> Result<(String, Option<Shape>), gst::ErrorMessage> {
        properties::checked(
            self.shm_name.as_deref(),
            &self.shape,
            "set it to the name the writer uses, e.g. shmframesrc shm-name=cam0",
        )
    }

    /// The user whose segment alone the reader accepts (None: any).
    pub(super) fn writer_uid(&self) -> Option<u32> {
        u32::try_from(self.writer_uid).ok()
    }
}

/// The src's property specs (the README's element reference has the details).
pub(super) fn properties() -> Vec<glib::ParamSpec> {
    vec![
        properties::shm_name_spec(
            "Name of the segment in /dev/shm to read, as given to the writer (required)",
        ),
        properties::shape_spec(
            "Expected shape",
            "WIDTHxHEIGHT or WIDTHxHEIGHT:FORMAT the writer's stream must have (empty: any)",
        ),
        glib::ParamSpecEnum::builder_with_default("start", DEFAULT_START)
            .nick("Start position")
            .blurb("Where a new reader begins in the writer's depot")
            .doc_show_default()
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt64::builder("timeout")
            .nick("Wait warning timeout (ms)")
            .blurb(
                "Milliseconds to wait for a writer or a frame before posting a warning, while \
                 waiting goes on (0: never warn)",
            )
            .minimum(0)
            .maximum(u64::MAX)
            .default_value(DEFAULT_TIMEOUT_MS)
            .doc_show_default()
            .mutable_ready()
            .build(),
        glib::ParamSpecEnum::builder_with_default("timestamp-mode", DEFAULT_TIMESTAMP_MODE)
            .nick("Timestamp mode")
            .blurb("How output buffers are timestamped")
            .doc_show_default()
            .mutable_ready()
            .build(),
        glib::ParamSpecEnum::builder_with_default("copy-mode", DEFAULT_COPY_MODE)
            .nick("Copy mode")
            .blurb("Copy frames out of shared memory, or push read-only buffers wrapping them")
            .doc_show_default()
            .mutable_ready()
            .build(),
        glib::ParamSpecInt64::builder("writer-uid")
            .nick("Writer user id")
            .blurb(
                "Read only a segment whose writer runs as this uid, an error otherwise \
                 (-1: any user the segment's permissions admit)",
            )
            .minimum(ANY_WRITER_UID)
            .maximum(i64::from(u32::MAX))
            .default_value(ANY_WRITER_UID)
            .doc_show_default()
            .mutable_ready()
            .build(),
        properties::stats_spec(
            "shmframesrc-stats: frames-read, frames-missed, latency-mean, latency-max, \
             writer-pid, writer-uid, writer-restarts, evictions, frames-overwritten",
        ),
    ]
}

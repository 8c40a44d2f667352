//! The sink's properties: their specs, the values set on them, and the writer configuration
//! they make. Defaults are the transport's (`WriterConfig::new`), except where the element
//! chooses otherwise (`spare-slots`).

use gst::glib;
use gst::prelude::*;

use std::sync::LazyLock;
use std::time::Duration;

use super::imp::CAT;
use crate::properties::{self, same_variants};
use crate::shape::{Shape, ShapeSetting};
use crate::transport::{self, WriterConfig};

/// The transport's defaults, which every property but `spare-slots` starts from.
static TRANSPORT_DEFAULTS: LazyLock<WriterConfig> = LazyLock::new(|| WriterConfig::new("", 0));

const DEFAULT_READER_TIMEOUT_MS: u64 = transport::DEFAULT_READER_TIMEOUT.as_millis() as u64;
/// Two slots beyond the ring by default (the transport's own default is none): enough for
/// a zero-copy reader and upstream's pool to hold a frame each without holding up the writer.
const DEFAULT_SPARE_SLOTS: u32 = 2;
/// Longest reader timeout accepted (about 49 days): beyond that "never" is meant anyway.
const MAX_READER_TIMEOUT_MS: u64 = u32::MAX as u64;

/// How frames are kept in the segment (the `layout` property).
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstShmFrameLayout")]
pub enum ShmFrameLayout {
    #[enum_value(
        name = "Double: two slots, readers always take the newest frame, the writer never waits",
        nick = "double"
    )]
    Double = 0,
    #[enum_value(
        name = "Ring: a depot of `depth` numbered frames that every reader reads in order",
        nick = "ring"
    )]
    Ring = 1,
}

same_variants!(ShmFrameLayout, transport::Layout, [Double, Ring]);

/// What happens when the slowest reader is `depth` frames behind (the `backpressure`
/// property; `ring` only).
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstShmFrameBackpressure")]
pub enum ShmFrameBackpressure {
    #[enum_value(
        name = "Block: wait for the slowest reader (nothing is lost; a stalled reader is \
                evicted after reader-timeout)",
        nick = "block"
    )]
    Block = 0,
    #[enum_value(
        name = "Drop oldest: overwrite the oldest frame; lagging readers skip ahead and count \
                what they missed",
        nick = "drop-oldest"
    )]
    DropOldest = 1,
    #[enum_value(
        name = "Drop newest: drop the incoming frame and count it",
        nick = "drop-newest"
    )]
    DropNewest = 2,
}

same_variants!(
    ShmFrameBackpressure,
    transport::Backpressure,
    [Block, DropOldest, DropNewest]
);

#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub(super) shm_name: Option<String>,
    pub(super) layout: ShmFrameLayout,
    pub(super) depth: u32,
    pub(super) backpressure: ShmFrameBackpressure,
    pub(super) shape: ShapeSetting,
    pub(super) perms: u32,
    pub(super) reader_timeout_ms: u64,
    pub(super) spare_slots: u32,
    pub(super) wait_for_readers: u32,
    /// 0: the wait for readers lasts until they come (or a flush or stop ends it).
    pub(super) wait_for_readers_timeout_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        let defaults = &*TRANSPORT_DEFAULTS;
        Settings {
            shm_name: None,
            layout: defaults.layout.into(),
            depth: defaults.depth,
            backpressure: defaults.backpressure.into(),
            shape: ShapeSetting::default(),
            perms: defaults.perms,
            reader_timeout_ms: DEFAULT_READER_TIMEOUT_MS,
            spare_slots: DEFAULT_SPARE_SLOTS,
            wait_for_readers: defaults.wait_for_readers,
            wait_for_readers_timeout_ms: defaults
                .wait_for_readers_timeout
                .map_or(0, |timeout| timeout.as_millis() as u64),
        }
    }
}

impl Settings {
    /// The writer configuration these settings ask for; `slot_size` is set per segment.
    pub(super) fn writer_config(&self, shm_name: &str) -> WriterConfig {
        WriterConfig {
            name: shm_name.to_string(),
            layout: self.layout.into(),
            depth: self.depth,
            spare_slots: self.spare_slots,
            backpressure: self.backpressure.into(),
            slot_size: 0,
            perms: self.perms,
            reader_timeout: Duration::from_millis(self.reader_timeout_ms),
            wait_for_readers: self.wait_for_readers,
            wait_for_readers_timeout: (self.wait_for_readers_timeout_ms > 0)
                .then(|| Duration::from_millis(self.wait_for_readers_timeout_ms)),
            caps: None,
        }
    }

    /// The segment name and expected shape to start with, or the error that refuses them.
    pub(super) fn checked(&self) -> Result<(String, Option<Shape>), gst::ErrorMessage> {
        properties::checked(
            self.shm_name.as_deref(),
            &self.shape,
            "shmframesink needs the name of the segment to create in /dev/shm (letters, \
             digits, '.', '_' and '-', not starting with '.'), e.g. shmframesink shm-name=cam0",
        )
    }

    /// Sets the property `name`; `element` names the sink in the log.
    pub(super) fn set(&mut self, element: &super::ShmFrameSink, name: &str, value: &glib::Value) {
        match name {
            "shm-name" => self.shm_name = properties::shm_name_from(value, *CAT, element),
            "layout" => self.layout = value.get().expect("type checked upstream"),
            "depth" => self.depth = value.get().expect("type checked upstream"),
            "backpressure" => self.backpressure = value.get().expect("type checked upstream"),
            "shape" => properties::set_shape(&mut self.shape, value, *CAT, element),
            "perms" => self.perms = value.get().expect("type checked upstream"),
            "reader-timeout" => {
                self.reader_timeout_ms = value.get().expect("type checked upstream")
            }
            "spare-slots" => self.spare_slots = value.get().expect("type checked upstream"),
            "wait-for-readers" => {
                self.wait_for_readers = value.get().expect("type checked upstream")
            }
            "wait-for-readers-timeout" => {
                self.wait_for_readers_timeout_ms = value.get().expect("type checked upstream")
            }
            other => unimplemented!("property {other}"),
        }
    }

    /// The value of the settable property `name`.
    pub(super) fn get(&self, name: &str) -> glib::Value {
        match name {
            "shm-name" => self.shm_name.to_value(),
            "layout" => self.layout.to_value(),
            "depth" => self.depth.to_value(),
            "backpressure" => self.backpressure.to_value(),
            "shape" => self.shape.shape().map(|s| s.to_string()).to_value(),
            "perms" => self.perms.to_value(),
            "reader-timeout" => self.reader_timeout_ms.to_value(),
            "spare-slots" => self.spare_slots.to_value(),
            "wait-for-readers" => self.wait_for_readers.to_value(),
            "wait-for-readers-timeout" => self.wait_for_readers_timeout_ms.to_value(),
            other => unimplemented!("property {other}"),
        }
    }
}

/// The sink's property specs (the README's element reference has the details).
pub(super) fn properties() -> Vec<glib::ParamSpec> {
    let defaults = Settings::default();
    vec![
        properties::shm_name_spec(
            "Name of the segment to create in /dev/shm, which readers use too (required)",
        ),
        glib::ParamSpecEnum::builder_with_default("layout", defaults.layout)
            .nick("Layout")
            .blurb("How frames are kept in the segment")
            .doc_show_default()
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt::builder("depth")
            .nick("Depth")
            .blurb("Frames the ring holds (layout=ring; double always has 2 slots)")
            .minimum(1)
            .maximum(transport::MAX_DEPTH)
            .default_value(defaults.depth)
            .doc_show_default()
            .mutable_ready()
            .build(),
        glib::ParamSpecEnum::builder_with_default("backpressure", defaults.backpressure)
            .nick("Backpressure")
            .blurb("What to do when the slowest reader is depth frames behind (layout=ring)")
            .doc_show_default()
            .mutable_ready()
            .build(),
        properties::shape_spec(
            "Shape",
            "WIDTHxHEIGHT or WIDTHxHEIGHT:FORMAT: accept only this geometry and create the \
             segment at start, before caps arrive (empty: any size)",
        ),
        glib::ParamSpecUInt::builder("perms")
            .nick("Permissions")
            .blurb(
                "File mode of the segment, octal 0600..0777 (shown in decimal: 384 = 0600; a \
                 leading 0 on a gst-launch command line means octal)",
            )
            .minimum(0o600)
            .maximum(0o777)
            .default_value(defaults.perms)
            .doc_show_default()
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt64::builder("reader-timeout")
            .nick("Reader timeout")
            .blurb("Milliseconds a reader may hold up the writer before it is evicted")
            .minimum(1)
            .maximum(MAX_READER_TIMEOUT_MS)
            .default_value(defaults.reader_timeout_ms)
            .doc_show_default()
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt::builder("spare-slots")
            .nick("Spare slots")
            .blurb(
                "Slots beyond depth that zero-copy readers and upstream's buffer pool may hold \
                 without holding up the writer (0: no pool is proposed)",
            )
            .minimum(0)
            .maximum(transport::MAX_SPARE_SLOTS)
            .default_value(defaults.spare_slots)
            .doc_show_default()
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt::builder("wait-for-readers")
            .nick("Wait for readers")
            .blurb("Publish nothing until this many readers are attached (0: no wait)")
            .minimum(0)
            .maximum(transport::MAX_READERS)
            .default_value(defaults.wait_for_readers)
            .doc_show_default()
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt64::builder("wait-for-readers-timeout")
            .nick("Wait for readers timeout")
            .blurb(
                "Milliseconds the wait of wait-for-readers may last, then a warning is posted \
                 and frames are published (0: no limit)",
            )
            .default_value(defaults.wait_for_readers_timeout_ms)
            .doc_show_default()
            .mutable_ready()
            .build(),
        properties::stats_spec(
            "shmframesink-stats since start (after stop, the last run's): frames-written, \
             frames-in-place, frames-dropped, readers, full-events, readers-evicted, caps, \
             slot-size",
        ),
    ]
}

//! The timestamp convention between the elements: frames carry absolute CLOCK_MONOTONIC
//! nanoseconds, which every process on the machine reads alike. The sink maps its running time
//! to CLOCK_MONOTONIC, the src maps CLOCK_MONOTONIC back to its own running time; both go
//! through the element's pipeline clock as it relates to CLOCK_MONOTONIC at that moment.

use gst::prelude::*;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::transport;

/// How an element's running time and CLOCK_MONOTONIC relate now.
pub(crate) struct ClockMapping {
    running_now: i128,
    /// `running - monotonic`; negative before the pipeline started.
    offset: i128,
}

impl ClockMapping {
    /// The mapping through `element`'s clock; without a clock or base time there is no running
    /// time: `None`.
    pub(crate) fn of(element: &gst::Element) -> Option<ClockMapping> {
        let (clock, base_time) = (element.clock()?, element.base_time()?);
        let running_now = clock.time().nseconds() as i128 - base_time.nseconds() as i128;
        let monotonic_now = monotonic_now() as i128;
        Some(ClockMapping {
            running_now,
            offset: running_now - monotonic_now,
        })
    }

    /// The element's running time now.
    pub(crate) fn running_now(&self) -> i128 {
        self.running_now
    }

    /// The sink's half: a running time as a CLOCK_MONOTONIC time, within the range the
    /// transport can carry (`u64::MAX` is its "no time").
    pub(crate) fn to_monotonic(&self, running: gst::ClockTime) -> u64 {
        (running.nseconds() as i128 - self.offset).clamp(0, u64::MAX as i128 - 1) as u64
    }

    /// The src's half: a CLOCK_MONOTONIC time as running time (negative: before the pipeline
    /// started).
    pub(crate) fn to_running(&self, monotonic: u64) -> i128 {
        monotonic as i128 + self.offset
    }
}

/// How long a [`ClockCache`] keeps a mapping. A pipeline clock that is CLOCK_MONOTONIC (the
/// system clock, GStreamer's default) keeps the same offset for ever; one that is not (an audio
/// device's clock, a network clock, a clock whose calibration changes) drifts from it, by its
/// rate difference times this at most (100 ppm: 10 µs).
const MAPPING_LIFETIME_NS: u64 = 100_000_000;

/// The mapping of [`ClockMapping::of`] kept between frames: taking it reads the pipeline clock
/// (locks, its calibration, a clock read) for some 700 instructions, which is a good part of
/// a small frame's cost. Taken again when the element's base time changed, after
/// [`Self::clock_changed`], or once it is [`MAPPING_LIFETIME_NS`] old.
#[derive(Default)]
pub(crate) struct ClockCache {
    /// Bumped by every change of the element's clock.
    clock_changes: AtomicU64,
    taken: Mutex<Option<Taken>>,
}

struct Taken {
    clock_changes: u64,
    base_time: gst::ClockTime,
    monotonic_ns: u64,
    offset: i128,
}

impl ClockCache {
    /// Call after the element's clock changed (its `set_clock`, once the parent's has run).
    pub(crate) fn clock_changed(&self) {
        self.clock_changes.fetch_add(1, Ordering::SeqCst);
    }

    /// [`ClockMapping::of`] `element`, from the kept mapping while it holds.
    pub(crate) fn mapping(&self, element: &gst::Element) -> Option<ClockMapping> {
        let now = monotonic_now();
        let base_time = element.base_time();
        let mut taken = self.taken.lock().unwrap();
        if let Some(t) = taken.as_ref()
            && Some(t.base_time) == base_time
            && t.clock_changes == self.clock_changes.load(Ordering::SeqCst)
            && now.wrapping_sub(t.monotonic_ns) < MAPPING_LIFETIME_NS
        {
            return Some(ClockMapping {
                running_now: now as i128 + t.offset,
                offset: t.offset,
            });
        }
        // Loaded before the clock is read: a change while we read makes the next call take
        // the mapping again.
        let clock_changes = self.clock_changes.load(Ordering::SeqCst);
        let mapping = ClockMapping::of(element);
        *taken = match (&mapping, base_time) {
            (Some(m), Some(base_time)) => Some(Taken {
                clock_changes,
                base_time,
                monotonic_ns: now,
                offset: m.offset,
            }),
            _ => None,
        };
        mapping
    }
}

/// CLOCK_MONOTONIC now, in nanoseconds.
pub(crate) fn monotonic_now() -> u64 {
    transport::monotonic_ns()
}

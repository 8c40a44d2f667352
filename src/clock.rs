//! The timestamp convention between the elements: frames carry absolute CLOCK_MONOTONIC
//! nanoseconds, which every process on the machine reads alike. The sink maps its running time
//! to CLOCK_MONOTONIC, the src maps CLOCK_MONOTONIC back to its own running time; both go
//! through the element's pipeline clock as it relates to CLOCK_MONOTONIC at that moment.

use gst::prelude::*;

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

/// CLOCK_MONOTONIC now, in nanoseconds.
pub(crate) fn monotonic_now() -> u64 {
    transport::monotonic_ns()
}

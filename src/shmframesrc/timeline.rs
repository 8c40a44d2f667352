//! Timestamp placement: a frame's times mapped into this pipeline's running time, then ordered
//! on one timeline per segment.

use crate::clock::ClockCache;
use crate::transport::FrameInfo;

use super::settings::TimestampMode;

/// A frame's PTS and DTS in running time as found, before a [`Timeline`] orders them:
/// `writer` maps the writer's CLOCK_MONOTONIC times, `arrival` is the running time now.
pub(super) fn mapped_timestamps(
    clock: &ClockCache,
    element: &gst::Element,
    mode: TimestampMode,
    info: &FrameInfo,
) -> (Option<i128>, Option<i128>) {
    let Some(mapping) = clock.mapping(element) else {
        return (None, None);
    };
    match mode {
        TimestampMode::Arrival => (Some(mapping.running_now()), None),
        TimestampMode::Writer => (
            info.pts.map(|t| mapping.to_running(t)),
            info.dts.map(|t| mapping.to_running(t)),
        ),
    }
}

pub(super) fn clock_time(running: i128) -> gst::ClockTime {
    gst::ClockTime::from_nseconds(running.clamp(0, gst::ClockTime::MAX.nseconds() as i128) as u64)
}

/// The timestamps of one segment (`start()` to `stop()`): strictly increasing and never
/// before the segment start (0), whatever the writer's times and the pipeline's pauses do.
/// Mapped times are moved later only by the run's `shift`, so frames keep the writer's spacing
/// (see the README's "Timestamps").
#[derive(Default)]
pub(super) struct Timeline {
    /// The PLAYING period (the element's `playing_since`) the last frame was taken in.
    pub(super) period: u64,
    /// The next frame starts a run (a new PLAYING period or a new writer): its shift is
    /// chosen afresh, so that it starts where the previous buffer ended, at the earliest.
    pub(super) run_pending: bool,
    /// Added to the run's mapped times: 0 unless its first frame lay before the previous end;
    /// it shrinks again where the writer's frames leave a gap.
    pub(super) shift: i128,
    /// The previous buffer's PTS and end (PTS + duration, at least PTS + 1 ns).
    last: Option<(i128, i128)>,
    /// A buffer was placed in the current PLAYING period.
    pub(super) period_delivered: bool,
}

impl Timeline {
    /// Output PTS and DTS for mapped ones; `true` when the shift changed.
    pub(super) fn place(
        &mut self,
        (pts, dts): (Option<i128>, Option<i128>),
        duration: Option<gst::ClockTime>,
    ) -> (Option<gst::ClockTime>, Option<gst::ClockTime>, bool) {
        let Some(pts) = pts else {
            return (None, dts.map(|dts| clock_time(dts + self.shift)), false);
        };
        let (last_pts, last_end) = self.last.unwrap_or((-1, 0));
        let before = self.shift;
        // Just enough for this frame to start where the previous buffer ended.
        let needed = (last_end - pts).max(0);
        if std::mem::take(&mut self.run_pending) {
            self.shift = needed;
        } else {
            // Within a run the shift only shrinks, where a gap leaves room for it.
            self.shift = self.shift.min(needed);
            if pts + self.shift <= last_pts {
                // The writer's times went back: continue just after the previous buffer.
                self.shift = last_pts + 1 - pts;
            }
        }
        let pts = pts + self.shift;
        self.period_delivered = true;
        let length = duration.map_or(1, |d| (d.nseconds() as i128).max(1));
        self.last = Some((pts, pts + length));
        (
            Some(clock_time(pts)),
            dts.map(|dts| clock_time(dts + self.shift)),
            self.shift != before,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i128 = 1_000_000;
    const FRAME: gst::ClockTime = gst::ClockTime::from_mseconds(33);

    fn pts(timeline: &mut Timeline, mapped: i128) -> u64 {
        timeline
            .place((Some(mapped), None), Some(FRAME))
            .0
            .unwrap()
            .nseconds()
    }

    #[test]
    fn timeline_starts_at_zero_and_keeps_the_writers_spacing() {
        let mut timeline = Timeline {
            run_pending: true,
            ..Timeline::default()
        };
        // Frames from before the pipeline started move together to 0, then in step.
        let placed: Vec<u64> = [-66, -33, 0, 33]
            .iter()
            .map(|t| pts(&mut timeline, t * MS))
            .collect();
        let ms = |v: &[i128]| v.iter().map(|t| (t * MS) as u64).collect::<Vec<_>>();
        assert_eq!(placed, ms(&[0, 33, 66, 99]));
        // A gap gives the shift back: a frame 100 ms late starts where it was written.
        assert_eq!(pts(&mut timeline, 200 * MS), (200 * MS) as u64);
    }

    #[test]
    fn timeline_never_repeats_or_goes_back() {
        let mut timeline = Timeline {
            run_pending: true,
            ..Timeline::default()
        };
        assert_eq!(pts(&mut timeline, 500 * MS), (500 * MS) as u64);
        // Within a run a writer's step back continues just after the previous buffer.
        assert_eq!(pts(&mut timeline, 400 * MS), (500 * MS + 1) as u64);
        // A new run (a resume, a new writer) starts where the previous buffer ended.
        timeline.run_pending = true;
        assert_eq!(pts(&mut timeline, 300 * MS), (533 * MS + 1) as u64);
    }
}

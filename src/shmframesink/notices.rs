//! Rate limiting of the `backpressure` announcements (signal and bus message).
//!
//! A writer outrunning its readers meets a full ring on every frame. Announcing each of those
//! would cost a bus message, a structure and a signal emission (all allocating) per frame, and
//! flood the application's bus. So at most one announcement is made per [`INTERVAL`]: a full
//! event within the interval after the previous announcement is held back, and the next
//! announcement (of a later event, or of the held one once the interval is over) says how many
//! events it stands for. Every full event is counted exactly once: the announcements' `1 +
//! suppressed` add up to the events met.

use std::time::{Duration, Instant};

use crate::transport::WriteOutcome;

/// At most one announcement per interval.
pub(super) const INTERVAL: Duration = Duration::from_millis(100);

/// One frame that met a full ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct FullEvent {
    /// What the policy did: `waited`, `overwrote-oldest` or `dropped-newest`.
    pub(super) outcome: &'static str,
    /// The frame number it was published as (not for a dropped frame).
    pub(super) frame: Option<u64>,
    /// How long the write waited, in nanoseconds (`block` only).
    pub(super) waited_ns: Option<u64>,
    /// Frames this sink dropped since start, this one included.
    pub(super) frames_dropped: u64,
}

impl FullEvent {
    pub(super) fn of(outcome: &WriteOutcome, frames_dropped: u64) -> FullEvent {
        let (name, waited_ns) = match outcome {
            WriteOutcome::Written { .. } => ("written", None),
            WriteOutcome::WrittenAfterWait { waited, .. } => (
                "waited",
                Some(waited.as_nanos().min(u64::MAX as u128) as u64),
            ),
            WriteOutcome::OverwroteOldest { .. } => ("overwrote-oldest", None),
            WriteOutcome::Dropped => ("dropped-newest", None),
        };
        FullEvent {
            outcome: name,
            frame: outcome.frame(),
            waited_ns,
            frames_dropped,
        }
    }
}

/// An announcement to make: the newest event, and how many earlier events since the previous
/// announcement it stands for too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Notice {
    pub(super) event: FullEvent,
    pub(super) suppressed: u64,
}

/// What was announced when, and what is held back. Plain data: recording an event allocates
/// nothing.
#[derive(Default)]
pub(super) struct BackpressureNotices {
    last_announced: Option<Instant>,
    /// The newest event held back, and how many are held back (it included).
    held: Option<(FullEvent, u64)>,
}

impl BackpressureNotices {
    fn interval_over(&self, now: Instant) -> bool {
        self.last_announced
            .is_none_or(|last| now.saturating_duration_since(last) >= INTERVAL)
    }

    /// Records a full event at `now`; returns the announcement to make now, if any.
    pub(super) fn on_full(&mut self, event: FullEvent, now: Instant) -> Option<Notice> {
        let held = self.held.map_or(0, |(_, n)| n);
        if self.interval_over(now) {
            self.last_announced = Some(now);
            self.held = None;
            Some(Notice {
                event,
                suppressed: held,
            })
        } else {
            self.held = Some((event, held + 1));
            None
        }
    }

    /// The held-back event, to announce now if the interval since the last announcement is
    /// over (or `always`: at EOS and stop, so that nothing stays unannounced).
    pub(super) fn due(&mut self, now: Instant, always: bool) -> Option<Notice> {
        let (event, held) = self.held?;
        if !always && !self.interval_over(now) {
            return None;
        }
        self.last_announced = Some(now);
        self.held = None;
        Some(Notice {
            event,
            suppressed: held - 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dropped(frames_dropped: u64) -> FullEvent {
        FullEvent::of(&WriteOutcome::Dropped, frames_dropped)
    }

    #[test]
    fn one_announcement_per_interval_and_every_event_counted_once() {
        let mut notices = BackpressureNotices::default();
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        // The first event is announced at once.
        assert_eq!(
            notices.on_full(dropped(1), ms(0)),
            Some(Notice {
                event: dropped(1),
                suppressed: 0
            })
        );
        // Within the interval: held back, and not due before the interval is over.
        for n in 2..=5 {
            assert_eq!(notices.on_full(dropped(n), ms(n * 10)), None);
        }
        assert_eq!(notices.due(ms(99), false), None);
        // Once it is over, the newest held event is due, standing for the 3 before it.
        assert_eq!(
            notices.due(ms(100), false),
            Some(Notice {
                event: dropped(5),
                suppressed: 3
            })
        );
        assert_eq!(notices.due(ms(500), false), None);
        // A later event after a quiet interval is announced at once, with nothing folded in.
        assert_eq!(
            notices.on_full(dropped(6), ms(300)),
            Some(Notice {
                event: dropped(6),
                suppressed: 0
            })
        );
        // Held events fold into the next event announced after the interval.
        assert_eq!(notices.on_full(dropped(7), ms(310)), None);
        assert_eq!(
            notices.on_full(dropped(8), ms(400)),
            Some(Notice {
                event: dropped(8),
                suppressed: 1
            })
        );
        // At EOS or stop a held event is due whatever the time.
        assert_eq!(notices.on_full(dropped(9), ms(401)), None);
        assert_eq!(
            notices.due(ms(402), true),
            Some(Notice {
                event: dropped(9),
                suppressed: 0
            })
        );
    }
}

//! The sink's statistics: the `stats` property, summed over the segments of a run.

use crate::transport::SegmentInfo;

use super::imp::Started;

/// Counters of a segment, summed over the segments a caps change replaced.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Counters {
    frames_written: u64,
    pub(super) frames_dropped: u64,
    full_events: u64,
    readers_evicted: u64,
}

impl Counters {
    pub(super) fn of(info: &SegmentInfo) -> Counters {
        Counters {
            frames_written: info.frames_written,
            frames_dropped: info.frames_dropped,
            full_events: info.full_events,
            readers_evicted: info.readers_evicted,
        }
    }

    pub(super) fn plus(self, other: Counters) -> Counters {
        Counters {
            frames_written: self.frames_written + other.frames_written,
            frames_dropped: self.frames_dropped + other.frames_dropped,
            full_events: self.full_events + other.full_events,
            readers_evicted: self.readers_evicted + other.readers_evicted,
        }
    }
}

pub(super) fn stats_structure(
    counters: Counters,
    frames_in_place: u64,
    readers: u32,
    caps: Option<&gst::Caps>,
    slot_size: u64,
) -> gst::Structure {
    gst::Structure::builder("shmframesink-stats")
        .field("frames-written", counters.frames_written)
        .field("frames-in-place", frames_in_place)
        .field("frames-dropped", counters.frames_dropped)
        .field("readers", readers)
        .field("full-events", counters.full_events)
        .field("readers-evicted", counters.readers_evicted)
        .field("caps", caps.map(|c| c.to_string()))
        .field("slot-size", slot_size)
        .build()
}

impl Started {
    pub(super) fn stats(&self, frames_in_place: u64) -> gst::Structure {
        let (counters, readers) = match &self.observer {
            Some(observer) => {
                let info = observer.info();
                (
                    self.before.plus(Counters::of(&info)),
                    info.readers.len() as u32,
                )
            }
            None => (self.before, 0),
        };
        stats_structure(
            counters,
            frames_in_place,
            readers,
            self.caps.as_ref(),
            self.slot_size,
        )
    }
}

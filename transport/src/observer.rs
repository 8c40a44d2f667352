//! Looking at a segment without taking part: [`Observer`] (statistics, inspection, random
//! access to frames still held) and the [`SegmentInfo`] snapshot it and [`inspect`] return.

use crate::caps;
use crate::error::Error;
use crate::frame::{FrameInfo, SlotView, read_held};
use crate::layout::*;
use crate::segment::{self, Mapping};
use crate::sys;
use crate::types::{Backpressure, Layout, StreamState};
use crate::wait::Interrupt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// A snapshot of a segment for inspection and statistics.
#[derive(Clone, Debug)]
pub struct SegmentInfo {
    pub path: PathBuf,
    pub layout: Layout,
    pub depth: u32,
    pub slot_count: u32,
    pub slot_capacity: u64,
    pub total_len: u64,
    pub backpressure: Backpressure,
    pub writer_pid: u32,
    /// The user the writer runs as (the owner of the segment file).
    pub writer_uid: u32,
    pub writer_session: u64,
    pub writer_alive: bool,
    pub state: StreamState,
    pub caps: Option<String>,
    pub head: u64,
    pub frames_written: u64,
    pub frames_dropped: u64,
    pub full_events: u64,
    pub readers_evicted: u64,
    pub readers: Vec<ReaderInfo>,
}

#[derive(Clone, Debug)]
pub struct ReaderInfo {
    pub index: u32,
    pub pid: u32,
    /// The reader's user, as the kernel told the writer when the reader connected.
    pub uid: u32,
    pub cursor: u64,
    pub lag: u64,
    pub frames_read: u64,
    pub frames_missed: u64,
    pub heartbeat_age_ns: u64,
    pub evicted: bool,
    /// Slots this reader holds pinned (zero-copy buffers downstream).
    pub pinned_slots: u32,
}

impl Mapping {
    pub(crate) fn info(&self) -> SegmentInfo {
        let h = self.header();
        let head = h.head.load(Ordering::Acquire);
        let now = sys::monotonic_ns();
        // The writer's copy of its reader table: bounded, and nothing in it was written by a
        // reader.
        let readers = (0..self.geo.max_readers)
            .filter_map(|i| {
                let e = self.mirror_entry(i);
                let pid = e.pid.load(Ordering::Acquire);
                (pid != 0).then(|| {
                    let cursor = e.cursor.load(Ordering::Relaxed);
                    ReaderInfo {
                        index: i,
                        pid,
                        uid: e.uid.load(Ordering::Relaxed),
                        cursor,
                        lag: head.saturating_sub(cursor),
                        frames_read: e.frames_read.load(Ordering::Relaxed),
                        frames_missed: e.frames_missed.load(Ordering::Relaxed),
                        heartbeat_age_ns: now
                            .saturating_sub(e.heartbeat_ns.load(Ordering::Relaxed)),
                        evicted: e.state.load(Ordering::Relaxed) == reader_state::EVICTED,
                        pinned_slots: e.pinned_slots.load(Ordering::Relaxed),
                    }
                })
            })
            .collect();
        SegmentInfo {
            path: self.path.clone(),
            layout: self.geo.layout,
            depth: self.geo.depth,
            slot_count: self.geo.slot_count,
            slot_capacity: self.geo.slot_capacity,
            total_len: self.geo.total_len,
            backpressure: self.geo.backpressure,
            writer_pid: h.writer_pid,
            writer_uid: self.owner_uid(),
            writer_session: h.writer_session,
            writer_alive: self.writer_alive(),
            state: self.stream_state(),
            caps: caps::read_caps(self, h.caps_gen.load(Ordering::Acquire))
                .ok()
                .flatten(),
            head,
            frames_written: h.frames_written.load(Ordering::Relaxed),
            frames_dropped: h.frames_dropped.load(Ordering::Relaxed),
            full_events: h.full_events.load(Ordering::Relaxed),
            readers_evicted: h.readers_evicted.load(Ordering::Relaxed),
            readers,
        }
    }
}

/// A snapshot of the segment named `name`, taken without attaching.
pub fn inspect(name: &str) -> Result<SegmentInfo, Error> {
    Ok(segment::open_read_only(name)?.info())
}

/// A read-only look at a segment that claims no reader entry and never waits: statistics,
/// inspection and random access to frames still held (`get-frame`). It does not count for
/// backpressure.
#[derive(Clone)]
pub struct Observer {
    map: Arc<Mapping>,
}

impl Observer {
    pub fn open(name: &str) -> Result<Observer, Error> {
        Ok(Observer {
            map: Arc::new(segment::open_read_only(name)?),
        })
    }

    pub(crate) fn from_mapping(map: Arc<Mapping>) -> Observer {
        Observer { map }
    }

    pub fn info(&self) -> SegmentInfo {
        self.map.info()
    }

    /// Readers attached right now (evicted ones included: they still read).
    pub fn reader_count(&self) -> usize {
        (0..self.map.geo.max_readers)
            .filter(|&i| self.map.mirror_entry(i).pid.load(Ordering::Acquire) != 0)
            .count()
    }

    /// Waits until at least `count` readers are attached, for at most `timeout`. False on
    /// timeout or interruption. Polls: attaching is rare and not on the data path.
    pub fn wait_for_readers(&self, count: usize, timeout: Duration, interrupt: &Interrupt) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.reader_count() >= count {
                return true;
            }
            let now = Instant::now();
            if now >= deadline || !interrupt.sleep((deadline - now).min(Duration::from_millis(2))) {
                return false;
            }
        }
    }

    pub fn writer_session(&self) -> u64 {
        self.map.header().writer_session
    }

    pub fn current_caps_gen(&self) -> u64 {
        self.map.header().caps_gen.load(Ordering::Acquire)
    }

    pub fn caps(&self, gen_: u64) -> Result<Option<String>, Error> {
        caps::read_caps(&self.map, gen_)
    }

    /// Copies frame `n` if the segment still holds it.
    pub fn read_frame(
        &self,
        n: u64,
        copy: impl FnMut(&FrameInfo, &SlotView),
    ) -> Result<Option<FrameInfo>, Error> {
        read_held(&self.map, n, copy)
    }
}

//! The vocabulary shared by writer, readers and the plugin: layouts, policies, stream state.

use std::fmt;
use std::time::Duration;

/// Default time a reader may block a `block` writer without advancing before it is evicted.
pub const DEFAULT_READER_TIMEOUT: Duration = Duration::from_secs(1);

/// How frames are kept in the segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layout {
    /// Two slots, latest-frame semantics: readers always take the newest complete frame and
    /// the writer never waits.
    Double,
    /// `depth` numbered slots read in order by every reader from its own cursor.
    Ring,
}

/// What the writer does when the slowest live reader is `depth` frames behind (`ring` only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backpressure {
    /// Wait for space: nothing is lost. A dead or stalled reader is evicted after a timeout.
    Block,
    /// Overwrite the oldest frame; lagging readers jump ahead and count what they missed.
    DropOldest,
    /// Drop the incoming frame and count it.
    DropNewest,
}

impl Backpressure {
    /// The value stored in the header's `backpressure` field.
    pub(crate) fn code(self) -> u32 {
        match self {
            Backpressure::Block => 0,
            Backpressure::DropOldest => 1,
            Backpressure::DropNewest => 2,
        }
    }

    pub(crate) fn from_code(code: u32) -> Backpressure {
        match code {
            0 => Backpressure::Block,
            2 => Backpressure::DropNewest,
            _ => Backpressure::DropOldest,
        }
    }
}

/// The policy as users name it: the value of shmframesink's `backpressure` property.
impl fmt::Display for Backpressure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backpressure::Block => "block",
            Backpressure::DropOldest => "drop-oldest",
            Backpressure::DropNewest => "drop-newest",
        })
    }
}

/// Where a new reader starts in the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum StartPosition {
    /// The newest complete frame (or the next one if none was written yet).
    #[default]
    Newest,
    /// The oldest frame still held.
    Oldest,
}

/// Stream state as the writer announces it in the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamState {
    Starting,
    Running,
    Eos,
    Closed,
}

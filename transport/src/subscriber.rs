//! A reader that outlives writers: it waits for a segment to appear, attaches, and when the
//! writer closes or dies it waits for the next one. This is `shmframesrc`'s view of the world.

use crate::error::Error;
use crate::frame::{FrameInfo, SlotView};
use crate::name::segment_path;
use crate::reader::{PinnedFrame, ReadResult, Reader, ReaderOptions};
use crate::sys::NameWatch;
use crate::types::{StartPosition, StreamState};
use crate::wait::Interrupt;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

/// How often the name is re-checked while no live writer is there, as a fallback: the name
/// appearing wakes the subscriber at once (inotify). Frames are always waited for with a futex.
const WRITER_POLL: Duration = Duration::from_millis(20);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubscriberEvent {
    Frame(FrameInfo),
    /// Attached to a writer's segment: the first, a new writer's (`restart`), or a new segment
    /// of the writer followed before (same pid, start time and session: it renegotiated
    /// frames its old slots could not hold).
    WriterAttached {
        pid: u32,
        session: u64,
        restart: bool,
    },
    /// The writer closed its segment (`clean`) or died; the subscriber waits for the next.
    WriterLost {
        pid: u32,
        clean: bool,
    },
    Eos,
    Timeout,
}

pub struct Subscriber {
    name: String,
    opts: ReaderOptions,
    reader: Option<Reader>,
    interrupt: Interrupt,
    /// The file of a writer that died: ignored until the name points elsewhere.
    dead_file: Option<(u64, u64)>,
    /// The identity (pid, process start time, session) of the last writer attached to.
    last_writer: Option<(u32, u64, u64)>,
    /// Wakes us when the name appears while we wait for a writer.
    name_watch: Option<NameWatch>,
    /// We looked for a live writer and found none, so the next writer's stream began after we
    /// started waiting: it is read from its oldest frame still held, whatever `start` says.
    waited_for_writer: bool,
    frames_read: u64,
    frames_missed: u64,
}

impl Subscriber {
    pub fn new(name: &str, opts: ReaderOptions) -> Result<Subscriber, Error> {
        segment_path(name)?;
        Ok(Subscriber {
            name: name.to_string(),
            opts,
            reader: None,
            interrupt: Interrupt::new(),
            dead_file: None,
            last_writer: None,
            name_watch: None,
            waited_for_writer: false,
            frames_read: 0,
            frames_missed: 0,
        })
    }

    pub fn interrupt_handle(&self) -> Interrupt {
        self.interrupt.clone()
    }

    pub fn reader(&self) -> Option<&Reader> {
        self.reader.as_ref()
    }

    /// Frames read / missed over every writer this subscriber followed.
    pub fn totals(&self) -> (u64, u64) {
        let (r, m) = self
            .reader
            .as_ref()
            .map_or((0, 0), |r| (r.frames_read(), r.frames_missed()));
        (self.frames_read + r, self.frames_missed + m)
    }

    fn drop_reader(&mut self) {
        if let Some(r) = self.reader.take() {
            self.frames_read += r.frames_read();
            self.frames_missed += r.frames_missed();
        }
    }

    /// Waits up to `timeout` for the next thing worth telling the caller; a frame is copied
    /// out through `copy` (see [`Reader::read_next`]).
    pub fn next(
        &mut self,
        timeout: Duration,
        mut copy: impl FnMut(&FrameInfo, &SlotView),
    ) -> Result<SubscriberEvent, Error> {
        self.next_via(timeout, |reader, remaining| {
            reader.read_next(remaining, &mut copy)
        })
    }

    /// Like [`Subscriber::next`], but a frame is pinned in place into `out` instead of copied
    /// (see [`Reader::pin_next`]).
    pub fn next_pinned(
        &mut self,
        timeout: Duration,
        out: &mut Option<PinnedFrame>,
    ) -> Result<SubscriberEvent, Error> {
        self.next_via(timeout, |reader, remaining| reader.pin_next(remaining, out))
    }

    fn next_via(
        &mut self,
        timeout: Duration,
        mut read: impl FnMut(&mut Reader, Duration) -> Result<ReadResult, Error>,
    ) -> Result<SubscriberEvent, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.interrupt.is_set() {
                return Err(Error::Interrupted);
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if let Some(reader) = self.reader.as_mut() {
                return match read(reader, remaining)? {
                    ReadResult::Frame(info) => Ok(SubscriberEvent::Frame(info)),
                    ReadResult::Eos => Ok(SubscriberEvent::Eos),
                    ReadResult::Timeout => Ok(SubscriberEvent::Timeout),
                    ReadResult::WriterGone { clean } => {
                        let pid = reader.writer_pid();
                        if !clean {
                            self.dead_file = Some(reader.file_id());
                        }
                        self.drop_reader();
                        self.waited_for_writer = true;
                        Ok(SubscriberEvent::WriterLost { pid, clean })
                    }
                };
            }
            if self.name_watch.is_none() {
                // Watch before looking, so that a segment appearing in between is noticed.
                self.name_watch = NameWatch::new(&segment_path(&self.name)?).ok();
            }
            if let Some(event) = self.try_attach()? {
                self.name_watch = None;
                return Ok(event);
            }
            self.waited_for_writer = true;
            if remaining.is_zero() {
                return Ok(SubscriberEvent::Timeout);
            }
            let slice = remaining.min(WRITER_POLL);
            match &self.name_watch {
                // An interrupt ends the wait (the loop then reports it).
                Some(watch) => {
                    let wake = self.interrupt.wake_fd();
                    if !self.interrupt.is_set() {
                        watch.wait(slice, wake);
                    }
                }
                None => {
                    if !self.interrupt.sleep(slice) {
                        return Err(Error::Interrupted);
                    }
                }
            }
        }
    }

    fn try_attach(&mut self) -> Result<Option<SubscriberEvent>, Error> {
        let path = segment_path(&self.name)?;
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            return Ok(None);
        };
        if self.dead_file == Some((meta.dev(), meta.ino())) {
            return Ok(None);
        }
        let mut opts = self.opts.clone();
        if self.waited_for_writer {
            opts.start = StartPosition::Oldest;
        }
        let reader = match Reader::open_with_interrupt(&self.name, &opts, self.interrupt.clone()) {
            Ok(r) => r,
            Err(Error::NotFound { .. }) => return Ok(None),
            Err(Error::WriterGone { .. }) => {
                // A segment left by a writer that died, or one being closed: wait for a new
                // writer to replace it.
                self.dead_file = Some((meta.dev(), meta.ino()));
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        if !reader.writer_alive() || reader.stream_state() == StreamState::Closed {
            // A segment left by a writer that died, or one being closed: wait for a new writer
            // to replace it.
            self.dead_file = Some(reader.file_id());
            return Ok(None);
        }
        let identity = (
            reader.writer_pid(),
            reader.writer_start_ticks(),
            reader.writer_session(),
        );
        let restart = self.last_writer.is_some_and(|last| last != identity);
        self.last_writer = Some(identity);
        let event = SubscriberEvent::WriterAttached {
            pid: identity.0,
            session: identity.2,
            restart,
        };
        self.reader = Some(reader);
        self.waited_for_writer = false;
        Ok(Some(event))
    }
}

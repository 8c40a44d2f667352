//! `shmframesink` implementation: a `GstBaseSink` over [`transport::Writer`].
//!
//! Locking (order: `output` before `state`; `settings`, `interrupt` and `lender` are leaves):
//! * `settings`: property values, copied out by `open_segment()` (the start, see `change_state`).
//! * `state`: what `stats`, `set_caps()` and `stop()` need to know about the running stream
//!   (configuration, a read-only [`Observer`] of the segment, counters of earlier segments).
//!   Held for a few instructions only, never across a wait.
//! * `output`: the [`Writer`] itself, in a mutex of its own that is held for the whole write,
//!   including a wait for room under `backpressure=block` (and for the whole wait of
//!   `wait-for-readers`, which ends the same ways). We keep the writer in place rather
//!   than taking it out of a lock for the duration of the write because `stop()` and the
//!   `clear` action must always find it: `stop()` must close (unlink) it even if a write were
//!   still running, and `clear` is exactly what frees a writer blocked on a full depot. Nothing
//!   waits for this lock while a write blocks without first ending the wait: `stop()` and
//!   `clear` interrupt the write through `interrupt` (held outside every other lock) before
//!   locking, `stats` only `try_lock`s it (its numbers come from the Observer), and
//!   `unlock()` never touches it; nor does the slot pool, which lends slots through `lender`
//!   (a leaf lock). Signals and bus messages are emitted after it is released, so handlers may
//!   call `clear` or read `stats`.

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::prelude::*;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use super::input::Input;
use super::notices::{BackpressureNotices, FullEvent, Notice};
use super::pool::SlotPool;
use super::settings::{self, Settings};
use super::stats::{Counters, stats_structure};
use crate::clock::{self, ClockCache};
use crate::shape::{self, Shape};
use crate::transport::{
    self, Backpressure, FrameMeta, Interrupt, Observer, ReaderEvent, WriteOutcome, Writer,
    WriterConfig,
};

pub(super) static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "shmframesink",
        gst::DebugColorFlags::empty(),
        Some("Shared-memory frame sink"),
    )
});

/// How often the sink checks its readers also while no frame arrives (upstream paused, a live
/// source gone quiet): a dead reader's entry is freed and its detach reported within this.
const IDLE_HOUSEKEEPING: gst::ClockTime = gst::ClockTime::from_mseconds(100);

/// The running stream, as everything but the writer itself needs to know it.
pub(super) struct Started {
    /// The writer configuration from the properties; `slot_size` is set per segment.
    config: WriterConfig,
    shape: Option<Shape>,
    /// Read-only view of the current segment (statistics without the writer's lock).
    pub(super) observer: Option<Observer>,
    pub(super) slot_size: u64,
    pub(super) caps: Option<gst::Caps>,
    /// Counters of segments already replaced by a caps change.
    pub(super) before: Counters,
}

enum State {
    /// `last_stats`: the statistics of the previous run, still readable after stop.
    Stopped {
        last_stats: Option<gst::Structure>,
    },
    Started(Box<Started>),
}

impl Default for State {
    fn default() -> Self {
        State::Stopped { last_stats: None }
    }
}

/// The writer and what `render()` needs with it.
struct Output {
    writer: Writer,
    /// The current caps (`None` until the first caps when the segment was made from `shape`).
    video_info: Option<gst_video::VideoInfo>,
}

#[derive(Default)]
pub struct ShmFrameSink {
    settings: Mutex<Settings>,
    state: Mutex<State>,
    /// See the module documentation for why the writer has its own lock.
    output: Mutex<Option<Output>>,
    /// The current writer's interrupt handle, outside `output` so that `unlock()`, `stop()`
    /// and `clear` can end a blocked write.
    interrupt: Mutex<Option<Interrupt>>,
    /// Set by `unlock()` (and `stop()`) until `unlock_stop()`: an interrupted write then
    /// returns `Flushing` instead of being retried.
    flushing: AtomicBool,
    /// `clear` was requested; whoever holds the writer next performs it.
    clear_pending: AtomicBool,
    /// Frames of this run published from our own pool's slots, without a copy.
    frames_in_place: AtomicU64,
    /// Lends the current segment's slots to our buffer pool without taking `output`, so a
    /// write waiting for room never keeps upstream from drawing into a free slot.
    lender: Mutex<Option<PoolLending>>,
    /// The periodic reader check while started (see `IDLE_HOUSEKEEPING`).
    housekeeping: Mutex<Option<gst::PeriodicClockId>>,
    /// Which full-ring events were announced (a leaf lock, held for a few instructions).
    notices: Mutex<BackpressureNotices>,
    /// How running time maps to CLOCK_MONOTONIC, kept between frames.
    clock: ClockCache,
}

/// How the slot pool borrows from the current segment.
#[derive(Clone)]
struct PoolLending {
    lender: transport::Lender,
    /// Under `backpressure=block`, how long a pool acquire waits for a free slot (as long as a
    /// stalled reader may hold up a write) before handing out memory to copy from.
    wait: Option<Duration>,
}

#[glib::object_subclass]
impl ObjectSubclass for ShmFrameSink {
    const NAME: &'static str = "GstShmFrameSink";
    type Type = super::ShmFrameSink;
    type ParentType = gst_base::BaseSink;
}

impl ObjectImpl for ShmFrameSink {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(settings::properties);
        PROPERTIES.as_ref()
    }

    fn signals() -> &'static [glib::subclass::Signal] {
        static SIGNALS: LazyLock<Vec<glib::subclass::Signal>> = LazyLock::new(|| {
            vec![
                // A reader attached to the segment; argument: its process id.
                glib::subclass::Signal::builder("reader-attached")
                    .param_types([u32::static_type()])
                    .build(),
                // A reader detached (or its process died); argument: its process id.
                glib::subclass::Signal::builder("reader-detached")
                    .param_types([u32::static_type()])
                    .build(),
                // A frame met a full ring. Arguments: what the policy did ("waited",
                // "overwrote-oldest" or "dropped-newest"), the number of frames this sink
                // dropped since start (drop-newest drops; overwritten frames are counted by
                // the readers that missed them), and how many earlier full events this one
                // stands for too: at most one is announced per 100 ms.
                glib::subclass::Signal::builder("backpressure")
                    .param_types([
                        String::static_type(),
                        u64::static_type(),
                        u64::static_type(),
                    ])
                    .build(),
                // Empties the depot: readers skip to the next frame written, counting the
                // skipped ones as missed. A write blocked on a full ring proceeds.
                glib::subclass::Signal::builder("clear")
                    .action()
                    .class_handler(|args| {
                        let element = args[0]
                            .get::<super::ShmFrameSink>()
                            .expect("clear: instance argument");
                        element.imp().clear_depot();
                        None
                    })
                    .build(),
            ]
        });
        SIGNALS.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut settings = self.settings.lock().unwrap();
        settings.set(&self.obj(), pspec.name(), value);
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        match pspec.name() {
            "stats" => self.stats().to_value(),
            name => self.settings.lock().unwrap().get(name),
        }
    }
}

impl GstObjectImpl for ShmFrameSink {}

impl ElementImpl for ShmFrameSink {
    fn set_clock(&self, clock: Option<&gst::Clock>) -> bool {
        let set = self.parent_set_clock(clock);
        self.clock.clock_changed();
        set
    }

    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Shared-memory frame sink",
                "Sink/Video",
                "Publishes raw video frames, with their caps and timestamps, in a \
                 shared-memory segment that shmframesrc elements in other processes read; \
                 a depot or double buffer with a backpressure policy",
                "shmframe developers",
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            vec![
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &shape::raw_video_caps(),
                )
                .expect("sink pad template"),
            ]
        });
        PAD_TEMPLATES.as_ref()
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        // The segment is opened here rather than in BaseSink::start(): GstBaseSink follows
        // every failed start() with a second error of its own ("some element failed to post a
        // proper error message"), so a refused start would print ours and then that one.
        if transition == gst::StateChange::ReadyToPaused
            && let Err(err) = self.open_segment()
        {
            self.post_error_message(err);
            return Err(gst::StateChangeError);
        }
        let result = self.parent_change_state(transition);
        if transition == gst::StateChange::ReadyToPaused && result.is_err() {
            let _ = BaseSinkImpl::stop(self);
        }
        result
    }
}

impl ShmFrameSink {
    /// What BaseSink::start() would do (see change_state): checks the settings and, with a
    /// `shape`, creates the segment.
    fn open_segment(&self) -> Result<(), gst::ErrorMessage> {
        let settings = self.settings.lock().unwrap().clone();
        let (shm_name, shape) = settings.checked()?;
        check_name_is_free(&shm_name)?;

        let config = settings.writer_config(&shm_name);
        self.flushing.store(false, Ordering::SeqCst);
        self.clear_pending.store(false, Ordering::SeqCst);
        self.frames_in_place.store(0, Ordering::Relaxed);
        *self.notices.lock().unwrap() = BackpressureNotices::default();

        let mut started = Started {
            config: config.clone(),
            shape,
            observer: None,
            slot_size: 0,
            caps: None,
            before: Counters::default(),
        };
        let mut output = None;
        if let Some(shape) = shape {
            // The segment exists from now on, so readers can attach before the first caps. A
            // shape without a format is sized for the largest format upstream can send at that
            // size (upstream elements answer caps queries in READY already).
            let offered = match shape.format {
                Some(_) => Vec::new(),
                None => {
                    shape::formats_in(&self.obj().sink_pad().peer_query_caps(Some(&shape.caps())))
                }
            };
            let slot_size = shape.slot_size(&offered);
            let writer = Writer::create(&WriterConfig {
                slot_size,
                ..config
            })
            .map_err(|err| gst::error_msg!(gst::ResourceError::OpenWrite, ("{err}")))?;
            started.observer = Some(writer.observer());
            started.slot_size = writer.slot_capacity();
            self.install_writer_handles(&writer);
            output = Some(Output {
                writer,
                video_info: None,
            });
            gst::info!(
                CAT,
                imp = self,
                "Created segment {shm_name:?} for shape {shape} (slots of {} bytes)",
                started.slot_size
            );
        } else {
            gst::info!(
                CAT,
                imp = self,
                "Started; segment {shm_name:?} is created with the first caps"
            );
        }
        *self.output.lock().unwrap() = output;
        *self.state.lock().unwrap() = State::Started(Box::new(started));
        self.start_housekeeping();
        Ok(())
    }
}

impl BaseSinkImpl for ShmFrameSink {
    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        if let Some(housekeeping) = self.housekeeping.lock().unwrap().take() {
            housekeeping.unschedule();
        }
        self.announce_held_backpressure(true);
        // End any write still waiting for room before taking the writer's lock.
        self.flushing.store(true, Ordering::SeqCst);
        self.wake_pool();
        if let Some(interrupt) = self.interrupt.lock().unwrap().as_ref() {
            interrupt.interrupt();
        }
        let output = self.output.lock().unwrap().take();
        *self.interrupt.lock().unwrap() = None;
        *self.lender.lock().unwrap() = None;
        let mut state = self.state.lock().unwrap();
        let last_stats = match &*state {
            State::Started(started) => {
                Some(started.stats(self.frames_in_place.load(Ordering::Relaxed)))
            }
            State::Stopped { last_stats } => last_stats.clone(),
        };
        *state = State::Stopped { last_stats };
        drop(state);
        if let Some(output) = output {
            gst::info!(
                CAT,
                imp = self,
                "Closing segment {:?} after {} frames",
                output.writer.name(),
                output.writer.frames_written()
            );
            // Marks the stream closed (unless it ended with EOS) and unlinks the name.
            output.writer.close();
        }
        Ok(())
    }

    fn caps(&self, filter: Option<&gst::Caps>) -> Option<gst::Caps> {
        let shape = self.settings.lock().unwrap().shape.shape();
        let template = self.obj().sink_pad().pad_template_caps();
        let caps = match shape {
            // The shape first, so that upstream converters produce it; then anything else, so
            // that a stream of another shape links and set_caps refuses it naming both shapes
            // (instead of a link failure that does not say why).
            Some(shape) => {
                let mut preferred = template.intersect(&shape.caps());
                preferred.merge(template);
                preferred
            }
            None => template,
        };
        Some(match filter {
            Some(filter) => filter.intersect_with_mode(&caps, gst::CapsIntersectMode::First),
            None => caps,
        })
    }

    fn set_caps(&self, caps: &gst::Caps) -> Result<(), gst::LoggableError> {
        let info = gst_video::VideoInfo::from_caps(caps).map_err(|_| {
            gst::loggable_error!(CAT, "Caps {caps} do not describe raw video GstVideo knows")
        })?;
        let (config, shape, current_caps) = match &*self.state.lock().unwrap() {
            State::Started(started) => {
                (started.config.clone(), started.shape, started.caps.clone())
            }
            State::Stopped { .. } => {
                return Err(gst::loggable_error!(CAT, "Caps {caps} set while stopped"));
            }
        };
        if let Some(shape) = shape
            && !shape.matches(&info)
        {
            let message = format!(
                "The stream's shape {} does not fit the shape property {shape}: set shape to \
                 {} or leave it empty, or convert the stream (caps {caps})",
                Shape::of(&info),
                Shape::of(&info),
            );
            gst::element_imp_error!(self, gst::CoreError::Negotiation, ("{message}"));
            return Err(gst::loggable_error!(CAT, "{message}"));
        }
        if current_caps.as_ref() == Some(caps) {
            gst::debug!(CAT, imp = self, "Caps unchanged: {caps}");
            return Ok(());
        }

        let caps_text = caps.to_string();
        let frame_size = info.size() as u64;
        let mut output_guard = self.output.lock().unwrap();
        let fits = output_guard
            .as_ref()
            .is_some_and(|output| frame_size <= output.writer.slot_capacity());
        let mut replaced = None;
        if !fits {
            let (guard, replacement) =
                self.replace_segment(output_guard, &config, frame_size, &caps_text)?;
            output_guard = guard;
            replaced = Some(replacement);
        }
        let Some(output) = output_guard.as_mut() else {
            unreachable!("a writer was installed above");
        };
        // A new segment was created with these caps already.
        if replaced.is_none()
            && let Err(err) = output.writer.set_caps(&caps_text)
        {
            drop(output_guard);
            gst::element_imp_error!(self, gst::CoreError::Negotiation, ("{err}"));
            return Err(gst::loggable_error!(CAT, "{err}"));
        }
        output.video_info = Some(info);
        let slot_size = output.writer.slot_capacity();
        let observer = replaced.is_some().then(|| output.writer.observer());
        if let State::Started(started) = &mut *self.state.lock().unwrap() {
            started.caps = Some(caps.clone());
            if let Some(observer) = &observer {
                started.observer = Some(observer.clone());
                started.slot_size = slot_size;
            }
            if let Some(counters) = replaced.as_ref().and_then(|r| r.counters) {
                started.before = started.before.plus(counters);
            }
        }
        drop(output_guard);

        gst::info!(
            CAT,
            imp = self,
            "Caps {caps_text} (frames of {frame_size} bytes)"
        );
        let Some(replaced) = replaced else {
            return Ok(());
        };
        self.announce_reader_events(replaced.reader_events);
        if let Some(observer) = &observer
            && config.backpressure == Backpressure::Block
            && replaced.followers > 0
        {
            self.wait_for_followers(observer, replaced.followers, config.reader_timeout);
        }
        if let Some(old_slot_size) = replaced.old_slot_size {
            self.post_element_message(
                gst::Structure::builder("shmframe-segment-recreated")
                    .field("old-slot-size", old_slot_size)
                    .field("slot-size", slot_size)
                    .field("caps", &caps_text)
                    .build(),
            );
        }
        Ok(())
    }

    fn render(&self, buffer: &gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
        if buffer.size() == 0 && buffer.flags().contains(gst::BufferFlags::GAP) {
            // A gap announces that there is no frame for a while: nothing to publish.
            gst::trace!(CAT, imp = self, "Skipping an empty GAP buffer");
            return Ok(gst::FlowSuccess::Ok);
        }
        self.await_readers()?;
        let meta = self.frame_meta(buffer);
        let (outcome, reader_events, dropped_in_segment) = self.write_frame(buffer, &meta)?;
        gst::trace!(CAT, imp = self, "Frame {outcome:?}");
        if outcome.was_full() {
            let dropped = self.dropped_before() + dropped_in_segment;
            let event = FullEvent::of(&outcome, dropped);
            gst::debug!(
                CAT,
                imp = self,
                "Ring full: {} ({dropped} frames dropped so far)",
                event.outcome
            );
            let notice = self.notices.lock().unwrap().on_full(event, Instant::now());
            if let Some(notice) = notice {
                self.announce_backpressure(notice);
            }
        }
        if !reader_events.is_empty() {
            self.announce_reader_events(reader_events);
        }
        Ok(gst::FlowSuccess::Ok)
    }

    fn event(&self, event: gst::Event) -> bool {
        if let gst::EventView::Eos(_) = event.view()
            && let Some(output) = self.output.lock().unwrap().as_mut()
        {
            gst::info!(
                CAT,
                imp = self,
                "End of stream after {} frames: readers get EOS once they read them",
                output.writer.frames_written()
            );
            output.writer.end_of_stream();
        }
        if let gst::EventView::Eos(_) = event.view() {
            self.announce_held_backpressure(true);
        }
        self.parent_event(event)
    }

    fn propose_allocation(
        &self,
        query: &mut gst::query::Allocation,
    ) -> Result<(), gst::LoggableError> {
        // Any strides are fine: render() repacks them.
        query.add_allocation_meta::<gst_video::VideoMeta>(None);
        let (caps, need_pool) = query.get_owned();
        if need_pool
            && let Some(caps) = caps
            && let Some(pool) = self.slot_pool(&caps)?
        {
            let slots = pool.max_buffers;
            query.add_allocation_pool(Some(&pool.pool), pool.frame_size, 0, slots);
        }
        self.parent_propose_allocation(query)
    }

    fn unlock(&self) -> Result<(), gst::ErrorMessage> {
        self.flushing.store(true, Ordering::SeqCst);
        self.wake_pool();
        if let Some(interrupt) = self.interrupt.lock().unwrap().as_ref() {
            gst::debug!(CAT, imp = self, "Interrupting a write waiting for room");
            interrupt.interrupt();
        }
        Ok(())
    }

    fn unlock_stop(&self) -> Result<(), gst::ErrorMessage> {
        self.flushing.store(false, Ordering::SeqCst);
        if let Some(interrupt) = self.interrupt.lock().unwrap().as_ref() {
            interrupt.clear();
        }
        Ok(())
    }
}

/// What `set_caps` replaced to make room for larger frames.
#[derive(Default)]
struct Replaced {
    /// The old segment's slot size (`None`: there was no segment yet).
    old_slot_size: Option<u64>,
    /// Readers of the old segment, which `block` must not lose frames for.
    followers: usize,
    /// Reader table changes of the old segment not announced yet.
    reader_events: Vec<ReaderEvent>,
    /// The old segment's counters.
    counters: Option<Counters>,
}

/// A pool proposed upstream, with what the allocation query says about it.
struct ProposedPool {
    pool: SlotPool,
    frame_size: u32,
    max_buffers: u32,
}

/// Refuses, before anything is created, a name a writer could not take (see
/// `transport::check_name_for_writer`).
fn check_name_is_free(shm_name: &str) -> Result<(), gst::ErrorMessage> {
    transport::check_name_for_writer(shm_name)
        .map_err(|err| gst::error_msg!(gst::ResourceError::OpenWrite, ("{err}")))
}

impl ShmFrameSink {
    /// Creates the segment for frames of `frame_size` bytes with `caps`, replacing the current
    /// one (whose successor keeps its identity, so that its readers follow the name to the new
    /// one). On failure the error is posted and the old segment's counters and reader changes
    /// are accounted for.
    fn replace_segment<'a>(
        &self,
        mut output_guard: MutexGuard<'a, Option<Output>>,
        config: &WriterConfig,
        frame_size: u64,
        caps: &str,
    ) -> Result<(MutexGuard<'a, Option<Output>>, Replaced), gst::LoggableError> {
        let mut replaced = Replaced::default();
        // The writer whose segment is replaced: its successor keeps its identity.
        let mut predecessor = None;
        if let Some(mut old) = output_guard.take() {
            replaced.followers = old.writer.reader_count();
            // Readers see the old segment close and follow the name to the new one.
            replaced.reader_events = old.writer.take_reader_events();
            replaced.counters = Some(Counters::of(&old.writer.info()));
            replaced.old_slot_size = Some(old.writer.slot_capacity());
            gst::info!(
                CAT,
                imp = self,
                "Frames of {frame_size} bytes do not fit the slots of {} bytes: recreating \
                 the segment",
                old.writer.slot_capacity()
            );
            predecessor = Some(old.writer);
        }
        let new_config = WriterConfig {
            slot_size: frame_size,
            caps: Some(caps.to_string()),
            ..config.clone()
        };
        let new_writer = match predecessor {
            Some(old) => old.replace(&new_config),
            None => Writer::create(&new_config),
        };
        let writer = match new_writer {
            Ok(writer) => writer,
            Err(err) => {
                drop(output_guard);
                if let State::Started(started) = &mut *self.state.lock().unwrap() {
                    started.observer = None;
                    if let Some(counters) = replaced.counters {
                        started.before = started.before.plus(counters);
                    }
                }
                self.announce_reader_events(replaced.reader_events);
                gst::element_imp_error!(self, gst::ResourceError::OpenWrite, ("{err}"));
                return Err(gst::loggable_error!(CAT, "{err}"));
            }
        };
        self.install_writer_handles(&writer);
        *output_guard = Some(Output {
            writer,
            video_info: None,
        });
        Ok((output_guard, replaced))
    }

    /// Under `block` nothing may be lost: gives the `followers` readers of a replaced segment
    /// time to find the new one before its first frame, as long as a stalled reader would be
    /// given before eviction.
    fn wait_for_followers(&self, observer: &Observer, followers: usize, timeout: Duration) {
        let interrupt = self.interrupt.lock().unwrap().clone();
        if let Some(interrupt) = interrupt
            && !observer.wait_for_readers(followers, timeout, &interrupt)
        {
            gst::warning!(
                CAT,
                imp = self,
                "Only {} of {followers} readers followed to the new segment within {:?}",
                observer.reader_count(),
                timeout
            );
        }
    }
}

impl ShmFrameSink {
    /// The frame's descriptor: times as absolute CLOCK_MONOTONIC nanoseconds (see the wire
    /// conventions and [`clock::ClockMapping`]), or the write time when there is no clock or base
    /// time yet.
    fn frame_meta(&self, buffer: &gst::BufferRef) -> FrameMeta {
        let obj = self.obj();
        let segment = obj.segment();
        let segment = segment.downcast_ref::<gst::ClockTime>();
        let mapping = self.clock.mapping(obj.upcast_ref());
        let write_time = mapping.is_none().then(clock::monotonic_now);
        let to_monotonic = |t: Option<gst::ClockTime>| -> Option<u64> {
            let t = t?;
            match &mapping {
                None => write_time,
                Some(mapping) => Some(mapping.to_monotonic(segment?.to_running_time(t)?)),
            }
        };
        FrameMeta {
            pts: to_monotonic(buffer.pts()),
            dts: to_monotonic(buffer.dts()),
            duration: buffer.duration().map(|d| d.nseconds()),
            flags: buffer.flags().bits(),
        }
    }

    /// Copies the frame into the next slot. Runs with `output` locked (the write may wait for
    /// room); returns what happened, the reader table changes seen, and the frames this
    /// segment dropped so far.
    fn write_frame(
        &self,
        buffer: &gst::Buffer,
        meta: &FrameMeta,
    ) -> Result<(WriteOutcome, Vec<ReaderEvent>, u64), gst::FlowError> {
        let mut guard = self.output.lock().unwrap();
        let Some(Output {
            writer,
            video_info: Some(info),
        }) = guard.as_mut()
        else {
            gst::element_imp_error!(
                self,
                gst::CoreError::Negotiation,
                ("Received a frame before caps"),
                ["Upstream must send a caps event before the first buffer"]
            );
            return Err(gst::FlowError::NotNegotiated);
        };
        let frame_size = info.size() as u64;
        let slot_size = writer.slot_capacity();
        if frame_size > slot_size {
            gst::element_imp_error!(
                self,
                gst::StreamError::Failed,
                ("frame of {frame_size} bytes does not fit slot of {slot_size} bytes"),
                ["caps {:?}", info]
            );
            return Err(gst::FlowError::Error);
        }
        // A frame upstream wrote into a slot of our pool is published where it is.
        let input = Input::of(buffer, writer, info).map_err(|why| {
            gst::element_imp_error!(
                self,
                gst::StreamError::Format,
                ("Cannot read the input frame: {why}")
            );
            gst::FlowError::Error
        })?;
        // Only a copy needs it (a clock read: a noticeable part of a small frame's cost).
        let cold = matches!(input, Input::Copy(_)) && writer.slots_are_cold(frame_size);
        // When a wait for room that `clear` interrupted began: the frame then met a full ring.
        let mut interrupted_wait_began: Option<Instant> = None;
        loop {
            if self.clear_pending.swap(false, Ordering::SeqCst) {
                gst::info!(CAT, imp = self, "Clearing the depot");
                writer.clear();
            }
            let written = match &input {
                Input::InPlace(slot) => writer.publish_lent(*slot, meta, frame_size),
                Input::Copy(source) => {
                    writer.write_with(meta, frame_size, |slot| source.copy_into(slot, info, cold))
                }
            };
            match written {
                Ok(outcome) => {
                    if matches!(input, Input::InPlace(_)) && outcome.frame().is_some() {
                        self.frames_in_place.fetch_add(1, Ordering::Relaxed);
                    }
                    let outcome = match outcome {
                        // The first attempt waited for room until `clear` made some: for the
                        // application this frame met a full depot and waited.
                        WriteOutcome::Written { frame } => match interrupted_wait_began {
                            Some(began) => WriteOutcome::WrittenAfterWait {
                                frame,
                                waited: began.elapsed(),
                            },
                            None => outcome,
                        },
                        outcome => outcome,
                    };
                    let events = writer.take_reader_events();
                    return Ok((outcome, events, writer.frames_dropped()));
                }
                Err(transport::Error::Interrupted) => {
                    // Either unlock() (flushing) or `clear` (which wants the depot emptied
                    // and the frame written) ended the wait.
                    if !self.clear_interrupt_unless_flushing() {
                        gst::debug!(CAT, imp = self, "Write interrupted: flushing");
                        return Err(gst::FlowError::Flushing);
                    }
                    interrupted_wait_began.get_or_insert(
                        writer.interrupted_wait_began().unwrap_or_else(Instant::now),
                    );
                }
                Err(err) => {
                    gst::element_imp_error!(
                        self,
                        gst::ResourceError::Write,
                        ("Writing to shm-name {:?} failed: {err}", writer.name())
                    );
                    return Err(gst::FlowError::Error);
                }
            }
        }
    }

    /// Holds the stream until the readers of `wait-for-readers` are attached (the writer would
    /// wait for them in its first write anyway; waiting here lets us announce the wait and the
    /// timeout with `output` released).
    fn await_readers(&self) -> Result<(), gst::FlowError> {
        let awaiting = match self.output.lock().unwrap().as_ref() {
            Some(output) => output.writer.awaiting_readers(),
            None => None,
        };
        let Some((wanted, attached)) = awaiting else {
            return Ok(());
        };
        if attached < wanted {
            gst::info!(
                CAT,
                imp = self,
                "Waiting for {wanted} readers before the first frame ({attached} attached)"
            );
            self.post_element_message(
                gst::Structure::builder("shmframe-waiting-for-readers")
                    .field("wanted", wanted as u32)
                    .field("attached", attached as u32)
                    .build(),
            );
        }
        loop {
            let result = match self.output.lock().unwrap().as_mut() {
                Some(output) => output.writer.await_readers(),
                None => Ok(()),
            };
            match result {
                Ok(()) => return Ok(()),
                Err(err @ transport::Error::ReadersMissing { .. }) => {
                    gst::element_imp_warning!(self, gst::ResourceError::Busy, ("{err}"));
                    return Ok(());
                }
                // unlock()/stop() (flushing), or `clear`, which the write performs.
                Err(transport::Error::Interrupted) => {
                    if !self.clear_interrupt_unless_flushing() {
                        gst::debug!(CAT, imp = self, "Wait for readers interrupted: flushing");
                        return Err(gst::FlowError::Flushing);
                    }
                }
                Err(err) => {
                    gst::element_imp_error!(self, gst::ResourceError::Write, ("{err}"));
                    return Err(gst::FlowError::Error);
                }
            }
        }
    }

    /// Clears the writer's interrupt unless a flush (or stop) is going on. Returns whether
    /// writing may go on (false: flushing; the interrupt stays set).
    fn clear_interrupt_unless_flushing(&self) -> bool {
        let guard = self.interrupt.lock().unwrap();
        if self.flushing.load(Ordering::SeqCst) {
            return false;
        }
        if let Some(interrupt) = guard.as_ref() {
            interrupt.clear();
            // unlock() sets `flushing` before taking this lock, so a flush that started
            // meanwhile is seen here; keep its interrupt.
            if self.flushing.load(Ordering::SeqCst) {
                interrupt.interrupt();
                return false;
            }
        }
        true
    }

    /// Makes `writer`'s handles the ones unlock()/stop()/clear and the slot pool use; a flush
    /// already going on applies to it at once.
    fn install_writer_handles(&self, writer: &Writer) {
        let wait = (writer.backpressure() == Backpressure::Block).then(|| writer.reader_timeout());
        *self.lender.lock().unwrap() = Some(PoolLending {
            lender: writer.lender(),
            wait,
        });
        let handle = writer.interrupt_handle();
        let mut guard = self.interrupt.lock().unwrap();
        // Checked under the lock unlock() takes after setting `flushing`: either it sees the
        // new handle or we see its flag.
        if self.flushing.load(Ordering::SeqCst) {
            handle.interrupt();
        }
        *guard = Some(handle);
    }

    /// The `clear` action.
    fn clear_depot(&self) {
        self.clear_pending.store(true, Ordering::SeqCst);
        // A write waiting for room holds `output`: interrupting it makes render() perform the
        // clear itself and then write the frame into the room the clear made.
        if let Some(interrupt) = self.interrupt.lock().unwrap().as_ref() {
            interrupt.interrupt();
        }
        let mut guard = self.output.lock().unwrap();
        match guard.as_mut() {
            Some(output) => {
                if self.clear_pending.swap(false, Ordering::SeqCst) {
                    gst::info!(CAT, imp = self, "Clearing the depot");
                    output.writer.clear();
                }
            }
            None => {
                gst::debug!(CAT, imp = self, "clear: no segment yet, nothing to clear");
                self.clear_pending.store(false, Ordering::SeqCst);
            }
        }
        // The interrupt above may have found no write waiting; don't let it hit the next one.
        self.clear_interrupt_unless_flushing();
    }

    /// A pool of segment slots for frames of `caps`, unless no slot could ever be lent.
    fn slot_pool(&self, caps: &gst::Caps) -> Result<Option<ProposedPool>, gst::LoggableError> {
        let info = gst_video::VideoInfo::from_caps(caps).map_err(|_| {
            gst::loggable_error!(
                CAT,
                "Allocation query for caps {caps} that are not raw video"
            )
        })?;
        let frame_size = info.size();
        let slots = match &*self.state.lock().unwrap() {
            State::Started(started) if started.config.spare_slots > 0 => {
                started.config.slot_count().map_err(|err| {
                    gst::loggable_error!(CAT, "No slot pool for this configuration: {err}")
                })?
            }
            State::Started(_) => {
                gst::debug!(
                    CAT,
                    imp = self,
                    "spare-slots=0: no slot can be lent, no pool"
                );
                return Ok(None);
            }
            State::Stopped { .. } => return Ok(None),
        };
        let weak_sink = self.obj().downgrade();
        let pool = SlotPool::new(
            Box::new(move |frame_size, cancelled| {
                weak_sink.upgrade()?.imp().lend_slot(frame_size, cancelled)
            }),
            slots,
        );
        let mut config = pool.config();
        config.set_params(Some(caps), frame_size as u32, 0, slots);
        pool.set_config(config)
            .map_err(|err| gst::loggable_error!(CAT, "Our slot pool refused its config: {err}"))?;
        gst::debug!(
            CAT,
            imp = self,
            "Proposing a pool of {slots} slots for frames of {frame_size} bytes"
        );
        Ok(Some(ProposedPool {
            pool,
            frame_size: frame_size as u32,
            max_buffers: slots,
        }))
    }

    /// Lends a slot of the current segment for a frame of `frame_size` bytes; `None` (the
    /// pool then hands out system memory) before the segment exists, when its slots are too
    /// small, or when none is free. Under `block` it first waits for one, as a write would
    /// wait for room, until `unlock()`/`stop()` or `cancelled()` (the pool is flushing).
    fn lend_slot(
        &self,
        frame_size: usize,
        cancelled: &dyn Fn() -> bool,
    ) -> Option<(u32, transport::Lender)> {
        let PoolLending { lender, wait } = self.lender.lock().unwrap().clone()?;
        if frame_size as u64 > lender.slot_capacity() {
            return None;
        }
        let stop = || cancelled() || self.flushing.load(Ordering::SeqCst);
        let lent = match wait {
            Some(timeout) if !stop() => lender.lend_within(timeout, stop),
            _ => lender.lend(),
        };
        let Some(slot) = lent else {
            gst::trace!(CAT, imp = self, "No slot free to lend");
            return None;
        };
        Some((slot, lender))
    }

    /// Wakes a pool acquire waiting for a slot (it then sees `flushing`).
    fn wake_pool(&self) {
        if let Some(lending) = self.lender.lock().unwrap().as_ref() {
            lending.lender.wake_waiters();
        }
    }

    fn dropped_before(&self) -> u64 {
        match &*self.state.lock().unwrap() {
            State::Started(started) => started.before.frames_dropped,
            State::Stopped { .. } => 0,
        }
    }

    fn stats(&self) -> gst::Structure {
        self.poll_reader_events();
        match &*self.state.lock().unwrap() {
            State::Started(started) => started.stats(self.frames_in_place.load(Ordering::Relaxed)),
            State::Stopped {
                last_stats: Some(last),
            } => last.clone(),
            State::Stopped { last_stats: None } => {
                stats_structure(Counters::default(), 0, 0, None, 0)
            }
        }
    }

    /// Checks the reader table every `IDLE_HOUSEKEEPING` from the system clock's thread, so
    /// that readers are checked while no frame arrives too (writes check them themselves).
    fn start_housekeeping(&self) {
        let clock = gst::SystemClock::obtain();
        let id = clock.new_periodic_id(clock.time() + IDLE_HOUSEKEEPING, IDLE_HOUSEKEEPING);
        let weak_sink = self.obj().downgrade();
        let scheduled = id.wait_async(move |_, _, _| {
            if let Some(sink) = weak_sink.upgrade() {
                sink.imp().poll_reader_events();
                sink.imp().announce_held_backpressure(false);
            }
        });
        match scheduled {
            Ok(_) => *self.housekeeping.lock().unwrap() = Some(id),
            Err(err) => gst::warning!(
                CAT,
                imp = self,
                "No periodic reader check ({err:?}): readers are checked on writes and stats only"
            ),
        }
    }

    /// Checks the reader table now (for `stats`, and periodically) unless a write holds the
    /// writer, which reports changes itself when it finishes.
    fn poll_reader_events(&self) {
        let events = match self.output.try_lock() {
            Ok(mut guard) => match guard.as_mut() {
                Some(output) => {
                    output.writer.poll_readers();
                    output.writer.take_reader_events()
                }
                None => return,
            },
            Err(TryLockError::WouldBlock) | Err(TryLockError::Poisoned(_)) => return,
        };
        self.announce_reader_events(events);
    }

    fn announce_reader_events(&self, events: Vec<ReaderEvent>) {
        for event in events {
            match event {
                ReaderEvent::Attached { pid, index } => {
                    gst::info!(CAT, imp = self, "Reader pid {pid} attached (entry {index})");
                    self.post_element_message(
                        gst::Structure::builder("shmframe-reader-attached")
                            .field("pid", pid)
                            .build(),
                    );
                    self.obj().emit_by_name::<()>("reader-attached", &[&pid]);
                }
                ReaderEvent::Detached { pid, index, died } => {
                    gst::info!(
                        CAT,
                        imp = self,
                        "Reader pid {pid} {} (entry {index})",
                        if died { "died" } else { "detached" }
                    );
                    self.post_element_message(
                        gst::Structure::builder("shmframe-reader-detached")
                            .field("pid", pid)
                            .field("died", died)
                            .build(),
                    );
                    self.obj().emit_by_name::<()>("reader-detached", &[&pid]);
                }
                ReaderEvent::Evicted { pid, index } => {
                    gst::warning!(
                        CAT,
                        imp = self,
                        "Reader pid {pid} (entry {index}) held up the writer for longer than \
                         reader-timeout: evicted until it catches up"
                    );
                    self.post_element_message(
                        gst::Structure::builder("shmframe-reader-evicted")
                            .field("pid", pid)
                            .build(),
                    );
                }
            }
        }
    }

    /// Announces a full-ring event held back by the rate limit once its interval is over
    /// (from the periodic check), or at once (`always`: EOS and stop).
    fn announce_held_backpressure(&self, always: bool) {
        let notice = self.notices.lock().unwrap().due(Instant::now(), always);
        if let Some(notice) = notice {
            self.announce_backpressure(notice);
        }
    }

    fn announce_backpressure(&self, Notice { event, suppressed }: Notice) {
        let mut structure = gst::Structure::builder("shmframe-backpressure")
            .field("outcome", event.outcome)
            .field("frames-dropped", event.frames_dropped)
            .field("suppressed", suppressed)
            .build();
        if let Some(frame) = event.frame {
            structure.set("frame", frame);
        }
        if let Some(waited) = event.waited_ns {
            structure.set("waited", waited);
        }
        self.post_element_message(structure);
        self.obj().emit_by_name::<()>(
            "backpressure",
            &[&event.outcome, &event.frames_dropped, &suppressed],
        );
    }

    fn post_element_message(&self, structure: gst::Structure) {
        let obj = self.obj();
        // Without a bus (an element outside any pipeline) there is nobody to tell.
        let _ = obj.post_message(gst::message::Element::builder(structure).src(&*obj).build());
    }
}

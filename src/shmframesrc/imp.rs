//! `shmframesrc` implementation: a live `GstPushSrc` over [`transport::Subscriber`].
//!
//! Locking: `settings`, `state` (statistics included), `interrupt` and `observer` are only
//! ever held for a few instructions. `stream` (the subscriber and the streaming thread's
//! bookkeeping) is taken out of its mutex by `create()` for the whole call and put back
//! afterwards, so no lock is held while the transport waits; see [`ShmFrameSrc::create`].

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::base_src::CreateSuccess;
use gst_base::subclass::prelude::*;

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use super::buffer::{FrameCopy, PinnedBuffers, decorate_buffer, frame_duration_of};
use super::settings::{self, CopyMode, Settings, StartPosition, TimestampMode};
use super::timeline::{Timeline, clock_time, mapped_timestamps};
use crate::clock::ClockCache;
use crate::shape::{self, Shape};
use crate::transport::{
    self, Backpressure, FrameInfo, Interrupt, Observer, ReaderOptions, Subscriber, SubscriberEvent,
};

pub(super) static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "shmframesrc",
        gst::DebugColorFlags::empty(),
        Some("Shared-memory frame source"),
    )
});

/// Longest single wait in the transport. Short, so that the `timeout` warning is posted on
/// time; an interrupt (unlock) ends the wait at once regardless.
const WAIT_SLICE: Duration = Duration::from_millis(100);

/// What queries, `stats` and `get-frame` need to know about the stream. Written by the
/// streaming thread, read from any thread; never held across a wait.
enum State {
    /// `stats`: the last run's, still readable after stop.
    Stopped { stats: Stats },
    Started {
        stats: Stats,
        /// The attached writer's current caps (`None`: no writer, or it announced none yet).
        writer_caps: Option<gst::Caps>,
        /// The caps last set on the source pad.
        negotiated: Option<gst::Caps>,
        /// One frame at the negotiated frame rate (the minimum latency).
        frame_duration: Option<gst::ClockTime>,
        /// Session id of the attached writer.
        writer_session: Option<u64>,
    },
}

impl Default for State {
    fn default() -> Self {
        State::Stopped {
            stats: Stats::default(),
        }
    }
}

impl State {
    fn stats(&self) -> &Stats {
        match self {
            State::Stopped { stats } | State::Started { stats, .. } => stats,
        }
    }

    fn stats_mut(&mut self) -> &mut Stats {
        match self {
            State::Stopped { stats } | State::Started { stats, .. } => stats,
        }
    }
}

/// The streaming thread's own state: the subscriber and what `create()` remembers between
/// frames. Created by `start()`, dropped by `stop()`.
struct Stream {
    subscriber: Subscriber,
    shm_name: String,
    shape: Option<Shape>,
    /// `None`: never warn about waiting.
    timeout: Option<Duration>,
    timestamp_mode: TimestampMode,
    copy_mode: CopyMode,
    /// Reused for copied frames, so steady-state reading allocates nothing: (frame size, pool).
    copy_pool: Option<(usize, gst::BufferPool)>,
    /// Reused wrappers of zero-copy frames, for the same reason.
    pinned_buffers: PinnedBuffers,
    start: StartPosition,
    /// Frames written before the current PLAYING period began are delivered, not skipped:
    /// the writer is `block` (nothing may be lost), or `start=oldest` asked for the frames
    /// held at attach and no PLAYING period delivered a frame of this writer yet.
    keep_earlier_frames: bool,
    timeline: Timeline,
    /// The latest writer's pid, kept after it is lost so a restart warning can name both.
    last_writer_pid: Option<u32>,
    /// Caps generation of the last frame pushed, and its video info. Generations are per
    /// writer, so both are forgotten when a writer attaches.
    caps_gen: Option<u64>,
    video_info: Option<gst_video::VideoInfo>,
    /// A generation missing from the header that was already reported on the bus.
    warned_missing_caps_gen: Option<u64>,
    /// The next buffer starts a new run of frames (first frame of a writer).
    discont_pending: bool,
    /// Evictions counted against writers already gone.
    evictions_before: u64,
}

struct Stats {
    frames_read: u64,
    frames_missed: u64,
    latency_sum_ns: u128,
    latency_max_ns: u64,
    writer_pid: u32,
    /// `NO_WRITER_UID` while no writer is attached.
    writer_uid: u32,
    writer_restarts: u32,
    evictions: u64,
    /// Zero-copy frames the writer overwrote before they were pushed (after evicting us).
    frames_overwritten: u64,
}

/// `writer-uid` while no writer is attached: (uid_t) -1, which names no user.
const NO_WRITER_UID: u32 = u32::MAX;

impl Default for Stats {
    fn default() -> Self {
        Stats {
            frames_read: 0,
            frames_missed: 0,
            latency_sum_ns: 0,
            latency_max_ns: 0,
            writer_pid: 0,
            writer_uid: NO_WRITER_UID,
            writer_restarts: 0,
            evictions: 0,
            frames_overwritten: 0,
        }
    }
}

impl Stats {
    fn to_structure(&self) -> gst::Structure {
        let latency_mean_ns = if self.frames_read == 0 {
            0
        } else {
            (self.latency_sum_ns / self.frames_read as u128) as u64
        };
        gst::Structure::builder("shmframesrc-stats")
            .field("frames-read", self.frames_read)
            .field("frames-missed", self.frames_missed)
            .field("latency-mean", latency_mean_ns)
            .field("latency-max", self.latency_max_ns)
            .field("writer-pid", self.writer_pid)
            .field("writer-uid", self.writer_uid)
            .field("writer-restarts", self.writer_restarts)
            .field("evictions", self.evictions)
            .field("frames-overwritten", self.frames_overwritten)
            .build()
    }
}

#[derive(Default)]
pub struct ShmFrameSrc {
    settings: Mutex<Settings>,
    state: Mutex<State>,
    /// Boxed: `create()` moves it out and back for every frame, a pointer rather than the
    /// whole struct.
    stream: Mutex<Option<Box<Stream>>>,
    /// The subscriber's interrupt handle, outside `stream` so `unlock()` can reach it while
    /// `create()` waits.
    interrupt: Mutex<Option<Interrupt>>,
    /// CLOCK_MONOTONIC time of the last PAUSED -> PLAYING: frames written before it belong
    /// to a time this source was not playing.
    playing_since: AtomicU64,
    /// Read-only view for `get-frame` (name it was opened for, observer). Never waits.
    observer: Mutex<Option<(String, Observer)>>,
    /// How CLOCK_MONOTONIC maps to running time, kept between frames.
    clock: ClockCache,
}

#[glib::object_subclass]
impl ObjectSubclass for ShmFrameSrc {
    const NAME: &'static str = "GstShmFrameSrc";
    type Type = super::ShmFrameSrc;
    type ParentType = gst_base::PushSrc;
}

impl ObjectImpl for ShmFrameSrc {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(settings::properties);
        PROPERTIES.as_ref()
    }

    fn signals() -> &'static [glib::subclass::Signal] {
        static SIGNALS: LazyLock<Vec<glib::subclass::Signal>> = LazyLock::new(|| {
            vec![
                glib::subclass::Signal::builder("get-frame")
                    .param_types([u64::static_type()])
                    .return_type::<Option<gst::Sample>>()
                    .action()
                    .class_handler(|args| {
                        let element = args[0]
                            .get::<super::ShmFrameSrc>()
                            .expect("get-frame: instance argument");
                        let number = args[1].get::<u64>().expect("get-frame: frame number");
                        Some(element.imp().get_frame(number).to_value())
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
            "stats" => self.state.lock().unwrap().stats().to_structure().to_value(),
            name => self.settings.lock().unwrap().get(name),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.set_live(true);
        obj.set_format(gst::Format::Time);
    }
}

impl GstObjectImpl for ShmFrameSrc {}

impl ElementImpl for ShmFrameSrc {
    fn set_clock(&self, clock: Option<&gst::Clock>) -> bool {
        let set = self.parent_set_clock(clock);
        self.clock.clock_changed();
        set
    }

    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Shared-memory frame source",
                "Source/Video",
                "Reads raw video frames, with their caps and timestamps, from a shared-memory \
                 segment written by shmframesink in another process; waits for the writer and \
                 follows its restarts",
                "shmframe developers",
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            vec![
                gst::PadTemplate::new(
                    "src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &shape::raw_video_caps(),
                )
                .expect("src pad template"),
            ]
        });
        PAD_TEMPLATES.as_ref()
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        // Settings are refused here, before GstBaseSrc::start(): GstBaseSrc follows every failed
        // start() with a second error of its own ("some element failed to post a proper error
        // message"). What start() does after these checks cannot fail.
        if transition == gst::StateChange::ReadyToPaused
            && let Err(err) = self.settings.lock().unwrap().checked()
        {
            self.post_error_message(err);
            return Err(gst::StateChangeError);
        }
        if transition == gst::StateChange::PausedToPlaying {
            // Before the streaming thread may run: its next frame sees the new period.
            self.playing_since
                .store(crate::clock::monotonic_now(), Ordering::Release);
        }
        self.parent_change_state(transition)
    }
}

impl BaseSrcImpl for ShmFrameSrc {
    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = self.settings.lock().unwrap().clone();
        let (shm_name, shape) = settings.checked()?;
        let subscriber = Subscriber::new(
            &shm_name,
            ReaderOptions {
                start: settings.start.into(),
                writer_uid: settings.writer_uid(),
                ..Default::default()
            },
        )
        .map_err(|err| gst::error_msg!(gst::ResourceError::Settings, ("{err}")))?;

        *self.interrupt.lock().unwrap() = Some(subscriber.interrupt_handle());
        *self.stream.lock().unwrap() = Some(Box::new(Stream {
            subscriber,
            shm_name: shm_name.clone(),
            shape,
            timeout: (settings.timeout_ms > 0).then(|| Duration::from_millis(settings.timeout_ms)),
            timestamp_mode: settings.timestamp_mode,
            copy_mode: settings.copy_mode,
            copy_pool: None,
            pinned_buffers: PinnedBuffers::default(),
            start: settings.start,
            keep_earlier_frames: false,
            timeline: Timeline::default(),
            last_writer_pid: None,
            caps_gen: None,
            video_info: None,
            warned_missing_caps_gen: None,
            discont_pending: true,
            evictions_before: 0,
        }));
        *self.state.lock().unwrap() = State::Started {
            stats: Stats::default(),
            writer_caps: None,
            negotiated: None,
            frame_duration: None,
            writer_session: None,
        };
        gst::info!(CAT, imp = self, "Started, reading shm-name {shm_name:?}");
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        // GstBaseSrc calls stop() after unlock() ended any wait in create(); dropping the
        // subscriber detaches from the writer's reader table.
        self.stop_state();
        *self.stream.lock().unwrap() = None;
        *self.interrupt.lock().unwrap() = None;
        self.stop_state();
        gst::info!(CAT, imp = self, "Stopped");
        Ok(())
    }

    fn is_seekable(&self) -> bool {
        false
    }

    fn times(&self, _buffer: &gst::BufferRef) -> (Option<gst::ClockTime>, Option<gst::ClockTime>) {
        // Frames are already paced by the writer; waiting on the clock for them again would
        // only add latency (and stall on timestamps of a writer running ahead of its clock).
        (None, None)
    }

    fn query(&self, query: &mut gst::QueryRef) -> bool {
        if let gst::QueryViewMut::Latency(q) = query.view_mut() {
            let min = match &*self.state.lock().unwrap() {
                State::Started { frame_duration, .. } => frame_duration.unwrap_or_default(),
                State::Stopped { .. } => gst::ClockTime::ZERO,
            };
            gst::debug!(CAT, imp = self, "Reporting latency: live, min {min}");
            q.set(true, min, gst::ClockTime::NONE);
            return true;
        }
        BaseSrcImplExt::parent_query(self, query)
    }

    fn caps(&self, filter: Option<&gst::Caps>) -> Option<gst::Caps> {
        let writer_caps = match &*self.state.lock().unwrap() {
            State::Started { writer_caps, .. } => writer_caps.clone(),
            State::Stopped { .. } => None,
        };
        let caps = writer_caps.unwrap_or_else(|| self.obj().src_pad().pad_template_caps());
        Some(match filter {
            Some(filter) => filter.intersect_with_mode(&caps, gst::CapsIntersectMode::First),
            None => caps,
        })
    }

    fn negotiate(&self) -> Result<(), gst::LoggableError> {
        // The caps are the writer's, not the result of a negotiation with downstream: until
        // the first frame there is nothing to set (create() sets the caps of every frame whose
        // caps differ); on a later reconfigure, announce again the caps being pushed.
        let negotiated = match &*self.state.lock().unwrap() {
            State::Started { negotiated, .. } => negotiated.clone(),
            State::Stopped { .. } => None,
        };
        if let Some(caps) = negotiated {
            self.obj().set_caps(&caps).map_err(|_| {
                gst::loggable_error!(CAT, "Downstream does not accept the writer's caps {caps}")
            })?;
        }
        Ok(())
    }

    fn unlock(&self) -> Result<(), gst::ErrorMessage> {
        if let Some(interrupt) = self.interrupt.lock().unwrap().as_ref() {
            gst::debug!(CAT, imp = self, "Interrupting the wait");
            interrupt.interrupt();
        }
        Ok(())
    }

    fn unlock_stop(&self) -> Result<(), gst::ErrorMessage> {
        if let Some(interrupt) = self.interrupt.lock().unwrap().as_ref() {
            interrupt.clear();
        }
        Ok(())
    }
}

impl ShmFrameSrc {
    /// Marks the element stopped, keeping the run's statistics readable.
    fn stop_state(&self) {
        let mut state = self.state.lock().unwrap();
        let stats = std::mem::take(state.stats_mut());
        *state = State::Stopped { stats };
    }
}

impl PushSrcImpl for ShmFrameSrc {
    fn create(
        &self,
        _buffer: Option<&mut gst::BufferRef>,
    ) -> Result<CreateSuccess, gst::FlowError> {
        // The stream is taken out of its mutex for the call, so no lock is held while the
        // transport waits; stop() only runs after unlock() ended that wait and create()
        // returned, and it is put back only if the element is still started.
        let Some(mut stream) = self.stream.lock().unwrap().take() else {
            gst::debug!(CAT, imp = self, "create() while stopped");
            return Err(gst::FlowError::Flushing);
        };
        let result = self.next_buffer(&mut stream);
        if matches!(*self.state.lock().unwrap(), State::Started { .. }) {
            *self.stream.lock().unwrap() = Some(stream);
        }
        result
    }
}

impl ShmFrameSrc {
    /// Whether the next frame is pinned in place rather than copied.
    fn zero_copy_now(&self, stream: &Stream) -> bool {
        match stream.copy_mode {
            CopyMode::Copy => false,
            CopyMode::ZeroCopy => true,
            CopyMode::Auto => stream
                .subscriber
                .reader()
                .is_none_or(|reader| reader.may_pin()),
        }
    }

    /// Waits for the next frame of `stream`, handling writer arrivals, losses and timeouts.
    fn next_buffer(&self, stream: &mut Stream) -> Result<CreateSuccess, gst::FlowError> {
        let mut waiting_since = Instant::now();
        loop {
            let mut frame_copy = FrameCopy::default();
            let mut pinned = None;
            let event = if self.zero_copy_now(stream) {
                stream.subscriber.next_pinned(WAIT_SLICE, &mut pinned)
            } else {
                let pool = &mut stream.copy_pool;
                stream
                    .subscriber
                    .next(WAIT_SLICE, |_info, view| frame_copy.copy_pooled(pool, view))
            };
            match event {
                Err(transport::Error::Interrupted) => {
                    gst::debug!(CAT, imp = self, "Wait interrupted: flushing");
                    return Err(gst::FlowError::Flushing);
                }
                Err(err) => {
                    gst::element_imp_error!(
                        self,
                        gst::ResourceError::Read,
                        ("Reading shm-name {:?} failed: {err}", stream.shm_name)
                    );
                    return Err(gst::FlowError::Error);
                }
                Ok(SubscriberEvent::Timeout) => {
                    if let Some(timeout) = stream.timeout
                        && waiting_since.elapsed() >= timeout
                    {
                        self.post_wait_warning(stream, timeout);
                        waiting_since = Instant::now();
                    }
                }
                Ok(SubscriberEvent::WriterAttached {
                    pid,
                    session,
                    restart,
                }) => {
                    self.on_writer_attached(stream, pid, session, restart);
                    waiting_since = Instant::now();
                }
                Ok(SubscriberEvent::WriterLost { pid, clean }) => {
                    self.on_writer_lost(stream, pid, clean);
                    waiting_since = Instant::now();
                }
                Ok(SubscriberEvent::Eos) => {
                    let (read, missed) = stream.subscriber.totals();
                    gst::info!(
                        CAT,
                        imp = self,
                        "The writer ended the stream: EOS after {read} frames read, {missed} \
                         missed"
                    );
                    return Err(gst::FlowError::Eos);
                }
                Ok(SubscriberEvent::Frame(info)) => {
                    if self.skip_earlier_frame(stream, &info) {
                        waiting_since = Instant::now();
                        continue;
                    }
                    if !self.prepare_caps(stream, &info)? {
                        waiting_since = Instant::now();
                        continue;
                    }
                    let copied = match pinned.take() {
                        // Checked last, after everything that may take time (a caps event
                        // goes downstream first): the pin is honoured unless the writer evicted
                        // us meanwhile and rewrote the slot.
                        Some(pinned) if !pinned.intact() => {
                            self.skip_overwritten_frame(stream, &info);
                            waiting_since = Instant::now();
                            continue;
                        }
                        // Read-only memory wrapping the slot; dropping the last reference
                        // releases the pin.
                        Some(pinned) => Ok(stream.pinned_buffers.wrap(pinned)),
                        None => frame_copy.finish(),
                    };
                    let buffer = copied.map_err(|failure| {
                        gst::element_imp_error!(
                            self,
                            gst::ResourceError::Read,
                            ("Copying frame {} failed: {failure}", info.number)
                        );
                        gst::FlowError::Error
                    })?;
                    return Ok(CreateSuccess::NewBuffer(
                        self.finish_buffer(stream, buffer, &info),
                    ));
                }
            }
        }
    }
}

impl ShmFrameSrc {
    fn post_wait_warning(&self, stream: &Stream, waited: Duration) {
        let ms = waited.as_millis();
        match stream.subscriber.reader() {
            None => gst::element_imp_warning!(
                self,
                gst::ResourceError::NotFound,
                (
                    "No writer on shm-name {:?} after {ms} ms; still waiting",
                    stream.shm_name
                ),
                [
                    "Start a writer with the same name, e.g. ... ! shmframesink shm-name={}",
                    stream.shm_name
                ]
            ),
            Some(reader) => gst::element_imp_warning!(
                self,
                gst::ResourceError::Read,
                (
                    "No frame from the writer (pid {}) on shm-name {:?} for {ms} ms; still \
                     waiting",
                    reader.writer_pid(),
                    stream.shm_name
                ),
                ["The writer is alive but is not publishing frames (paused or stalled?)"]
            ),
        }
    }

    fn on_writer_attached(&self, stream: &mut Stream, pid: u32, session: u64, restart: bool) {
        let uid = stream
            .subscriber
            .reader()
            .map_or(NO_WRITER_UID, |reader| reader.writer_uid());
        let previous_pid = stream.last_writer_pid.filter(|_| restart);
        stream.last_writer_pid = Some(pid);
        stream.keep_earlier_frames =
            stream.start == StartPosition::Oldest || Self::writer_blocks(stream);
        stream.timeline.run_pending = true;
        stream.caps_gen = None;
        stream.video_info = None;
        stream.warned_missing_caps_gen = None;
        stream.discont_pending = true;
        // Idle wrappers are kept for the slots of the previous writer's segment.
        stream.pinned_buffers.forget_idle();

        // Until its first frame, the header's current caps answer caps queries.
        let header_caps = stream.subscriber.reader().and_then(|reader| {
            let caps = reader.caps(reader.current_caps_gen()).ok().flatten()?;
            // Caps we would refuse at the first frame are not offered meanwhile either.
            gst::Caps::from_str(&caps)
                .ok()
                .filter(|caps| shape::refusal_of(caps).is_none())
        });
        gst::info!(
            CAT,
            imp = self,
            "Attached to writer pid {pid} (uid {uid}, session {session:#x}) on shm-name {:?}, \
             caps {:?}",
            stream.shm_name,
            header_caps
        );
        if let State::Started {
            writer_caps,
            writer_session,
            ..
        } = &mut *self.state.lock().unwrap()
        {
            *writer_caps = header_caps;
            *writer_session = Some(session);
        }
        {
            let mut state = self.state.lock().unwrap();
            let stats = state.stats_mut();
            stats.writer_pid = pid;
            stats.writer_uid = uid;
            stats.writer_restarts += u32::from(restart);
        }

        let obj = self.obj();
        let structure = gst::Structure::builder("shmframe-writer-attached")
            .field("shm-name", &stream.shm_name)
            .field("pid", pid)
            .field("uid", uid)
            .field("session", session)
            .field("restart", restart)
            .build();
        let _ = obj.post_message(gst::message::Element::builder(structure).src(&*obj).build());
        if let Some(previous_pid) = previous_pid {
            gst::element_imp_warning!(
                self,
                gst::ResourceError::Read,
                ("writer restarted (pid {previous_pid} -> {pid}), following the new writer"),
                [
                    "shm-name {:?}, new writer session {session:#x}",
                    stream.shm_name
                ]
            );
        }
    }

    fn on_writer_lost(&self, stream: &mut Stream, pid: u32, clean: bool) {
        gst::info!(
            CAT,
            imp = self,
            "Writer pid {pid} on shm-name {:?} {}; waiting for the next writer",
            stream.shm_name,
            if clean { "closed the stream" } else { "died" }
        );
        if let State::Started {
            writer_caps,
            writer_session,
            ..
        } = &mut *self.state.lock().unwrap()
        {
            *writer_caps = None;
            *writer_session = None;
        }
        {
            let mut state = self.state.lock().unwrap();
            let stats = state.stats_mut();
            stats.writer_pid = 0;
            stats.writer_uid = NO_WRITER_UID;
            stream.evictions_before = stats.evictions;
        }

        let obj = self.obj();
        let structure = gst::Structure::builder("shmframe-writer-lost")
            .field("shm-name", &stream.shm_name)
            .field("pid", pid)
            .field("clean", clean)
            .build();
        let _ = obj.post_message(gst::message::Element::builder(structure).src(&*obj).build());
        if !clean {
            gst::element_imp_warning!(
                self,
                gst::ResourceError::Read,
                (
                    "The writer (pid {pid}) of shm-name {:?} died without ending the stream; \
                     waiting for a new writer",
                    stream.shm_name
                ),
                ["Restart the writer: this source follows it when it comes back"]
            );
        }
    }

    /// Whether the attached writer is `block`: it loses no frame, so neither may this source.
    fn writer_blocks(stream: &Stream) -> bool {
        stream
            .subscriber
            .reader()
            .is_some_and(|reader| reader.info().backpressure == Backpressure::Block)
    }

    /// Skips (and counts missed) a frame written before the current PLAYING period began when
    /// a newer one is already published: like a live capture source, a paused or not yet
    /// playing source produces nothing, and a period begins with the current frame. Frames
    /// that must all be delivered (`keep_earlier_frames`) are kept; their timestamps are put
    /// in order by the timeline.
    fn skip_earlier_frame(&self, stream: &mut Stream, info: &FrameInfo) -> bool {
        let since = self.playing_since.load(Ordering::Acquire);
        if since != stream.timeline.period {
            stream.timeline.period = since;
            stream.timeline.run_pending = true;
            // `start=oldest` asks for the frames held at attach once, not for every pause's.
            if std::mem::take(&mut stream.timeline.period_delivered) {
                stream.keep_earlier_frames = Self::writer_blocks(stream);
            }
        }
        let skip = !stream.keep_earlier_frames
            && info.write_time_ns < since
            && stream
                .subscriber
                .reader()
                .is_some_and(|reader| info.number + 1 < reader.head());
        if skip {
            gst::debug!(
                CAT,
                imp = self,
                "Frame {} was written before this source began playing and a newer one is \
                 published: skipped",
                info.number
            );
            self.count_skipped(stream, info);
        }
        skip
    }

    /// Counts a frame that is not delivered (and those missed before it) as missed; the next
    /// buffer is DISCONT.
    fn count_skipped(&self, stream: &mut Stream, info: &FrameInfo) {
        self.state.lock().unwrap().stats_mut().frames_missed += info.missed_before + 1;
        stream.discont_pending = true;
    }

    /// Makes sure the caps of `info`'s generation are on the pad. `Ok(false)`: the generation
    /// is no longer (or was never) in the header, so the frame is skipped and counted missed.
    fn prepare_caps(&self, stream: &mut Stream, info: &FrameInfo) -> Result<bool, gst::FlowError> {
        if stream.caps_gen != Some(info.caps_gen) {
            let caps_string = match stream.subscriber.reader().map(|r| r.caps(info.caps_gen)) {
                Some(Ok(Some(caps))) => caps,
                Some(Err(err)) => {
                    gst::element_imp_error!(
                        self,
                        gst::ResourceError::Read,
                        (
                            "Reading the caps of frame {} from shm-name {:?} failed: {err}",
                            info.number,
                            stream.shm_name
                        )
                    );
                    return Err(gst::FlowError::Error);
                }
                _ => {
                    self.skip_frame_without_caps(stream, info);
                    return Ok(false);
                }
            };
            let caps = gst::Caps::from_str(&caps_string).map_err(|_| {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Format,
                    (
                        "The writer on shm-name {:?} announced caps that do not parse: \
                         {caps_string:?}",
                        stream.shm_name
                    )
                );
                gst::FlowError::NotNegotiated
            })?;
            if let Some(why) = shape::refusal_of(&caps) {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Format,
                    (
                        "The writer on shm-name {:?} announced caps that shmframesrc does not \
                         carry ({why}): {caps}",
                        stream.shm_name
                    ),
                    [
                        "shmframesrc reads system-memory video/x-raw in the formats shmframesink accepts"
                    ]
                );
                return Err(gst::FlowError::NotNegotiated);
            }
            let video_info = gst_video::VideoInfo::from_caps(&caps).map_err(|_| {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Format,
                    (
                        "The writer on shm-name {:?} announced caps that are not raw video: \
                         {caps}",
                        stream.shm_name
                    )
                );
                gst::FlowError::NotNegotiated
            })?;
            if let Some(shape) = stream.shape
                && !shape.matches(&video_info)
            {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Format,
                    (
                        "The writer's stream is {} but shape expects {shape}: unset the shape \
                         property or set it to {}, or make the writer on shm-name {:?} send \
                         {shape}",
                        Shape::of(&video_info),
                        Shape::of(&video_info),
                        stream.shm_name
                    ),
                    [
                        "shm-name {:?}, writer caps {caps}; change or unset the shape property",
                        stream.shm_name
                    ]
                );
                return Err(gst::FlowError::NotNegotiated);
            }
            self.set_writer_caps(&caps, &video_info)?;
            stream.caps_gen = Some(info.caps_gen);
            stream.video_info = Some(video_info);
        }
        let needed = stream.video_info.as_ref().map_or(0, |v| v.size() as u64);
        if info.size < needed {
            gst::element_imp_error!(
                self,
                gst::StreamError::Format,
                (
                    "Frame {} from shm-name {:?} has {} bytes but its caps need {needed}",
                    info.number,
                    stream.shm_name,
                    info.size
                ),
                ["The writer must pack frames in GstVideoInfo's default layout"]
            );
            return Err(gst::FlowError::Error);
        }
        Ok(true)
    }

    /// A pinned frame whose slot the writer rewrote before we pushed it: it held the writer up
    /// for longer than reader-timeout, was evicted, and its pins stopped counting. Not pushed;
    /// counted as missed and as overwritten, and the next buffer is DISCONT.
    fn skip_overwritten_frame(&self, stream: &mut Stream, info: &FrameInfo) {
        gst::warning!(
            CAT,
            imp = self,
            "Frame {} was overwritten before it was pushed: this reader held the writer up for \
             longer than its reader-timeout and was evicted; skipped",
            info.number
        );
        let mut state = self.state.lock().unwrap();
        let stats = state.stats_mut();
        stats.frames_missed += info.missed_before + 1;
        stats.frames_overwritten += 1;
        stream.discont_pending = true;
    }

    fn skip_frame_without_caps(&self, stream: &mut Stream, info: &FrameInfo) {
        gst::warning!(
            CAT,
            imp = self,
            "Frame {} has caps generation {}, which the header no longer holds: skipped",
            info.number,
            info.caps_gen
        );
        self.count_skipped(stream, info);
        if stream.warned_missing_caps_gen != Some(info.caps_gen) {
            stream.warned_missing_caps_gen = Some(info.caps_gen);
            gst::element_imp_warning!(
                self,
                gst::StreamError::Format,
                (
                    "Skipping frames of shm-name {:?} whose caps are unknown (caps generation \
                     {} is not in the header)",
                    stream.shm_name,
                    info.caps_gen
                ),
                ["The writer changed caps faster than this reader could follow"]
            );
        }
    }

    /// Sets a new writer caps on the pad (from the streaming thread, with no lock held: setting
    /// caps sends an event downstream, which may query this element).
    fn set_writer_caps(
        &self,
        caps: &gst::Caps,
        video_info: &gst_video::VideoInfo,
    ) -> Result<(), gst::FlowError> {
        gst::info!(CAT, imp = self, "Writer caps: {caps}");
        self.obj().set_caps(caps).map_err(|_| {
            gst::element_imp_error!(
                self,
                gst::CoreError::Negotiation,
                ("Downstream does not accept the writer's caps {caps}"),
                ["Add videoconvert/videoscale after shmframesrc to adapt the stream"]
            );
            gst::FlowError::NotNegotiated
        })?;
        let frame_duration = frame_duration_of(video_info);
        let latency_changed = match &mut *self.state.lock().unwrap() {
            State::Started {
                writer_caps,
                negotiated,
                frame_duration: current,
                ..
            } => {
                *writer_caps = Some(caps.clone());
                *negotiated = Some(caps.clone());
                std::mem::replace(current, frame_duration) != frame_duration
            }
            State::Stopped { .. } => false,
        };
        if latency_changed {
            let obj = self.obj();
            let _ = obj.post_message(gst::message::Latency::builder().src(&*obj).build());
        }
        Ok(())
    }

    fn finish_buffer(
        &self,
        stream: &mut Stream,
        mut buffer: gst::Buffer,
        info: &FrameInfo,
    ) -> gst::Buffer {
        let fallback_duration = stream.video_info.as_ref().and_then(frame_duration_of);
        let mapped = mapped_timestamps(
            &self.clock,
            self.obj().upcast_ref(),
            stream.timestamp_mode,
            info,
        );
        let duration = info
            .duration
            .map(gst::ClockTime::from_nseconds)
            .or(fallback_duration);
        let (pts, dts, moved) = stream.timeline.place(mapped, duration);
        if moved {
            gst::debug!(
                CAT,
                imp = self,
                "Frame {} moved {} ns later to keep timestamps increasing",
                info.number,
                stream.timeline.shift
            );
        }
        // Moving a frame later loses nothing: DISCONT stays for missed frames and new writers.
        let discont = info.missed_before > 0 || stream.discont_pending;
        stream.discont_pending = false;
        decorate_buffer(
            buffer.make_mut(),
            info,
            (pts, dts),
            fallback_duration,
            discont,
        );
        if discont {
            gst::debug!(
                CAT,
                imp = self,
                "Frame {} is discontinuous ({} missed before it)",
                info.number,
                info.missed_before
            );
        }

        let evictions = stream.subscriber.reader().map_or(0, |r| r.evictions());
        let latency_ns = crate::clock::monotonic_now().saturating_sub(info.write_time_ns);
        let mut state = self.state.lock().unwrap();
        let stats = state.stats_mut();
        stats.frames_read += 1;
        stats.frames_missed += info.missed_before;
        stats.latency_sum_ns += latency_ns as u128;
        stats.latency_max_ns = stats.latency_max_ns.max(latency_ns);
        stats.evictions = stream.evictions_before + evictions;
        buffer
    }

    /// The `get-frame` action: a copy of frame `number` if the writer still holds it. Uses its
    /// own read-only observer, so the streaming thread's reader is never touched.
    fn get_frame(&self, number: u64) -> Option<gst::Sample> {
        let Some(name) = self.settings.lock().unwrap().shm_name.clone() else {
            gst::warning!(CAT, imp = self, "get-frame: no shm-name set");
            return None;
        };
        let attached_session = match &*self.state.lock().unwrap() {
            State::Started { writer_session, .. } => *writer_session,
            State::Stopped { .. } => None,
        };
        // The observer never waits, so holding its lock for one lookup delays nobody.
        let mut observer = self.observer.lock().unwrap();
        let stale = match observer.as_ref() {
            None => true,
            Some((observed_name, obs)) => {
                *observed_name != name
                    || attached_session.is_some_and(|s| s != obs.writer_session())
                    || !obs.info().writer_alive
            }
        };
        if stale {
            match Observer::open(&name) {
                Ok(obs) => *observer = Some((name.clone(), obs)),
                Err(err) => {
                    gst::debug!(CAT, imp = self, "get-frame: cannot open {name:?}: {err}");
                    if observer.as_ref().is_some_and(|(n, _)| *n != name) {
                        *observer = None;
                    }
                }
            }
        }
        let (_, obs) = observer.as_ref()?;
        let mut frame_copy = FrameCopy::default();
        let info = match obs.read_frame(number, |_info, view| frame_copy.copy(view)) {
            Ok(Some(info)) => info,
            Ok(None) => {
                gst::debug!(CAT, imp = self, "get-frame: frame {number} is not held");
                return None;
            }
            Err(err) => {
                gst::warning!(CAT, imp = self, "get-frame {number}: {err}");
                return None;
            }
        };
        let caps = obs
            .caps(info.caps_gen)
            .ok()
            .flatten()
            .and_then(|caps| gst::Caps::from_str(&caps).ok());
        drop(observer);

        let mut buffer = match frame_copy.finish() {
            Ok(buffer) => buffer,
            Err(failure) => {
                gst::warning!(CAT, imp = self, "get-frame {number}: {failure}");
                return None;
            }
        };
        let fallback_duration = caps
            .as_ref()
            .and_then(|c| gst_video::VideoInfo::from_caps(c).ok())
            .and_then(|v| frame_duration_of(&v));
        let (pts, dts) = mapped_timestamps(
            &self.clock,
            self.obj().upcast_ref(),
            TimestampMode::Writer,
            &info,
        );
        let timestamps = (pts.map(clock_time), dts.map(clock_time));
        decorate_buffer(
            buffer.make_mut(),
            &info,
            timestamps,
            fallback_duration,
            false,
        );
        Some(
            gst::Sample::builder()
                .buffer(&buffer)
                .caps_if_some(caps.as_ref())
                .build(),
        )
    }
}

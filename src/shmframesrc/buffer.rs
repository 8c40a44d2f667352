//! Frames as buffers: copied into a pooled buffer of our own, or wrapped in place while a pin
//! keeps the writer off the slot; and the frame's descriptor put on the buffer.

use gst::prelude::*;

use std::ffi::c_void;

use crate::recycle::{RecycledMemories, ShellPool};
use crate::transport::{FrameInfo, PinnedFrame, SlotView};

/// Where the transport's copy closure puts a frame: one buffer per frame size, overwritten if
/// the closure runs again (the transport retries when the writer overwrote the slot mid-copy).
#[derive(Default)]
pub(super) struct FrameCopy {
    buffer: Option<gst::Buffer>,
    failure: Option<String>,
}

impl FrameCopy {
    /// Copies into a buffer from `pool` (re-created when the frame size changes).
    pub(super) fn copy_pooled(
        &mut self,
        pool: &mut Option<(usize, gst::BufferPool)>,
        view: &SlotView,
    ) {
        let size = view.len();
        if self.buffer.is_none() && size > 0 {
            match pooled_buffer(pool, size) {
                Ok(buffer) => self.buffer = Some(buffer),
                Err(err) => {
                    self.failure = Some(err);
                    return;
                }
            }
        }
        self.copy(view);
    }

    pub(super) fn copy(&mut self, view: &SlotView) {
        let size = view.len();
        if self.buffer.as_ref().is_none_or(|b| b.size() != size) {
            self.buffer = match gst::Buffer::with_size(size) {
                Ok(buffer) => Some(buffer),
                Err(err) => {
                    self.failure = Some(format!("could not allocate {size} bytes: {err}"));
                    None
                }
            };
        }
        let Some(buffer) = self.buffer.as_mut() else {
            return;
        };
        if size == 0 {
            return;
        }
        // The buffer was allocated here and never shared, so this does not copy.
        let buffer = buffer.make_mut();
        match buffer.map_writable() {
            Ok(mut map) => view.copy_to(map.as_mut_slice()),
            Err(err) => self.failure = Some(format!("could not map a buffer writable: {err}")),
        }
    }

    pub(super) fn finish(self) -> Result<gst::Buffer, String> {
        match (self.buffer, self.failure) {
            (_, Some(failure)) => Err(failure),
            (Some(buffer), None) => Ok(buffer),
            (None, None) => Err("the transport returned a frame without copying it".into()),
        }
    }
}

fn pooled_buffer(
    pool: &mut Option<(usize, gst::BufferPool)>,
    size: usize,
) -> Result<gst::Buffer, String> {
    if pool
        .as_ref()
        .is_none_or(|(pool_size, _)| *pool_size != size)
    {
        if let Some((_, old)) = pool.take() {
            let _ = old.set_active(false);
        }
        let fresh = gst::BufferPool::new();
        let mut config = fresh.config();
        config.set_params(None, size as u32, 2, 0);
        fresh
            .set_config(config)
            .map_err(|err| format!("could not configure a buffer pool of {size} bytes: {err}"))?;
        fresh
            .set_active(true)
            .map_err(|err| format!("could not activate a buffer pool of {size} bytes: {err}"))?;
        *pool = Some((size, fresh));
    }
    let (_, active) = pool.as_ref().expect("created above");
    active
        .acquire_buffer(None)
        .map_err(|err| format!("could not get a buffer of {size} bytes: {err:?}"))
}

/// Buffers whose one read-only memory wraps a pinned frame in place; the pin is released when
/// the memory is no longer referenced anywhere. Their wrappers are reused (`crate::recycle`),
/// and the pin travels as a raw token to a record the reader made when it attached, so wrapping
/// a frame allocates nothing.
pub(super) struct PinnedBuffers {
    shells: ShellPool,
    memories: RecycledMemories,
}

impl Default for PinnedBuffers {
    fn default() -> Self {
        PinnedBuffers {
            shells: ShellPool::new(),
            memories: RecycledMemories::new(release_pin, true),
        }
    }
}

/// # Safety
/// `token` came from `PinnedFrame::into_raw` and is released once.
unsafe fn release_pin(token: *mut c_void) {
    // SAFETY: as for this function.
    unsafe { PinnedFrame::release_raw(token as *const c_void) }
}

impl PinnedBuffers {
    pub(super) fn wrap(&self, pinned: PinnedFrame) -> gst::Buffer {
        let data = pinned.data();
        let (ptr, len) = (data.as_ptr(), data.len());
        let token = pinned.into_raw();
        // SAFETY: ptr..ptr+len stays mapped and unchanged while the pin is held, i.e. until
        // the release runs for its token; the memories are read-only (so is the mapping).
        let memory = unsafe {
            self.memories
                .wrap(ptr as *mut u8, len, len, token as *mut c_void)
        };
        let mut buffer = self.shells.shell();
        buffer
            .get_mut()
            .expect("a shell from the pool is referenced by nobody else")
            .append_memory(memory);
        buffer
    }

    /// Lets go of idle wrappers: they wrap the slots of a writer's segment that is gone.
    pub(super) fn forget_idle(&self) {
        self.memories.forget_idle();
    }
}

/// Puts a frame's descriptor on its buffer: timestamps, duration, frame number as offset, and
/// the writer's buffer flags (plus DISCONT when asked).
pub(super) fn decorate_buffer(
    buffer: &mut gst::BufferRef,
    info: &FrameInfo,
    timestamps: (Option<gst::ClockTime>, Option<gst::ClockTime>),
    fallback_duration: Option<gst::ClockTime>,
    discont: bool,
) {
    buffer.set_pts(timestamps.0);
    buffer.set_dts(timestamps.1);
    buffer.set_duration(
        info.duration
            .map(gst::ClockTime::from_nseconds)
            .or(fallback_duration),
    );
    buffer.set_offset(info.number);
    buffer.set_offset_end(info.number + 1);
    // TAG_MEMORY describes the writer's memory, not this copy.
    let mut flags = gst::BufferFlags::from_bits_truncate(info.flags) - gst::BufferFlags::TAG_MEMORY;
    if discont {
        flags |= gst::BufferFlags::DISCONT;
    }
    buffer.set_flags(flags);
}

pub(super) fn frame_duration_of(video_info: &gst_video::VideoInfo) -> Option<gst::ClockTime> {
    let fps = video_info.fps();
    (fps.numer() > 0 && fps.denom() > 0).then(|| {
        gst::ClockTime::SECOND
            .mul_div_floor(fps.denom() as u64, fps.numer() as u64)
            .unwrap_or(gst::ClockTime::ZERO)
    })
}

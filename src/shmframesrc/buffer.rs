//! Frames as buffers: copied into a pooled buffer of our own, or wrapped in place while a pin
//! keeps the writer off the slot; and the frame's descriptor put on the buffer.

use gst::glib;
use gst::prelude::*;

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

/// A buffer whose one read-only memory wraps a pinned frame in place; the pin is released when
/// GStreamer frees the memory (the last buffer holding it is dropped). Unlike
/// `gst::Buffer::from_slice`, which boxes its owner, this allocates nothing on the Rust side:
/// the pin travels as a raw token to a record the reader made when it attached.
pub(super) fn wrap_pinned(pinned: PinnedFrame) -> gst::Buffer {
    /// The memory's GDestroyNotify.
    unsafe extern "C" fn release_pin(token: glib::ffi::gpointer) {
        // SAFETY: `token` is the into_raw token given to exactly this memory, and GStreamer
        // calls the notify once, when the memory is freed.
        unsafe { PinnedFrame::release_raw(token as *const std::ffi::c_void) }
    }

    let data = pinned.data();
    let (ptr, len) = (data.as_ptr(), data.len());
    let token = pinned.into_raw();
    // SAFETY: ptr..ptr+len stays mapped and unchanged while the pin is held, i.e. until
    // release_pin runs; the memory is flagged read-only (the mapping is read-only too), so
    // GStreamer never writes through the mut pointer it is given.
    let memory = unsafe {
        gst::ffi::gst_memory_new_wrapped(
            gst::ffi::GST_MEMORY_FLAG_READONLY,
            ptr as glib::ffi::gpointer,
            len,
            0,
            len,
            token as glib::ffi::gpointer,
            Some(release_pin),
        )
    };
    let mut buffer = gst::Buffer::new();
    if memory.is_null() {
        // Only on a failed precondition, which the arguments above rule out; do not leak the pin.
        // SAFETY: the token was not handed to GStreamer.
        unsafe { PinnedFrame::release_raw(token) };
        return buffer;
    }
    // SAFETY: gst_memory_new_wrapped returns a new memory we own (transfer full).
    let memory: gst::Memory = unsafe { glib::translate::from_glib_full(memory) };
    buffer
        .get_mut()
        .expect("a new buffer is writable")
        .append_memory(memory);
    buffer
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

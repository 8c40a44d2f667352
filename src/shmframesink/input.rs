//! How a frame reaches its slot: drawn in place by upstream into a slot our pool lent, or
//! copied in (repacked into the caps' default layout when upstream used other strides).

use gst_video::prelude::*;

use crate::transport::{self, Writer};

// Lives on render()'s stack for one frame; boxing the mapped frame would only add an
// allocation per frame.
#[allow(clippy::large_enum_variant)]
pub(super) enum FrameSource<'a> {
    /// Already in the default layout of the caps: one copy.
    Packed(gst::BufferMap<'a, gst::buffer::Readable>),
    /// Planes at their own offsets and strides (GstVideoMeta): repacked line by line.
    Strided(gst_video::VideoFrameRef<&'a gst::BufferRef>),
}

impl<'a> FrameSource<'a> {
    /// `packed`: the buffer is in the default layout of `info` (see [`in_default_layout`]).
    fn new(
        buffer: &'a gst::BufferRef,
        info: &gst_video::VideoInfo,
        packed: bool,
    ) -> Result<Self, String> {
        if packed {
            if buffer.size() < info.size() {
                return Err(format!(
                    "the buffer holds {} bytes, a frame of these caps needs {} bytes",
                    buffer.size(),
                    info.size()
                ));
            }
            let map = buffer
                .map_readable()
                .map_err(|err| format!("could not map the buffer readable: {err}"))?;
            return Ok(FrameSource::Packed(map));
        }
        let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, info)
            .map_err(|err| format!("could not map the frame with its GstVideoMeta: {err}"))?;
        if let Some(stride) = frame.plane_stride().iter().find(|&&s| s <= 0) {
            return Err(format!(
                "plane stride {stride} is not supported (only positive strides are)"
            ));
        }
        Ok(FrameSource::Strided(frame))
    }

    /// Fills `slot` (exactly `info.size()` bytes) with the frame in the default layout;
    /// `cold`: the slot is not in cache (see `Writer::slots_are_cold`).
    pub(super) fn copy_into(&self, slot: &mut [u8], info: &gst_video::VideoInfo, cold: bool) {
        match self {
            FrameSource::Packed(map) => transport::copy_frame(slot, &map[..slot.len()], cold),
            FrameSource::Strided(frame) => {
                for plane in 0..frame.n_planes() {
                    let p = plane as usize;
                    let Ok(src) = frame.plane_data(plane) else {
                        continue;
                    };
                    let src_stride = frame.plane_stride()[p] as usize;
                    let dst_stride = info.stride()[p] as usize;
                    let rows = frame.plane_height(plane) as usize;
                    let Some(dst) = slot.get_mut(info.offset()[p]..) else {
                        continue;
                    };
                    if src_stride == dst_stride {
                        let n = (rows * dst_stride).min(src.len()).min(dst.len());
                        transport::copy_frame(&mut dst[..n], &src[..n], cold);
                        continue;
                    }
                    // A row of the default layout is its stride (the visible bytes plus
                    // alignment padding); the input's stride is at least the visible bytes.
                    let row_bytes = src_stride.min(dst_stride);
                    transport::copy_rows(dst, dst_stride, src, src_stride, row_bytes, rows, cold);
                }
            }
        }
    }
}

/// How a frame reaches its slot.
// Lives on render()'s stack for one frame (see FrameSource).
#[allow(clippy::large_enum_variant)]
pub(super) enum Input<'a> {
    /// Upstream drew it into this lent slot of our pool: published where it is.
    InPlace(u32),
    /// Anything else: copied into a slot.
    Copy(FrameSource<'a>),
}

impl<'a> Input<'a> {
    /// How `buffer`, a frame of `info`, reaches its slot.
    pub(super) fn of(
        buffer: &'a gst::BufferRef,
        writer: &Writer,
        info: &gst_video::VideoInfo,
    ) -> Result<Input<'a>, String> {
        let packed = in_default_layout(buffer, info);
        if packed && let Some(slot) = slot_holding(buffer, writer, info) {
            return Ok(Input::InPlace(slot));
        }
        FrameSource::new(buffer, info, packed).map(Input::Copy)
    }
}

/// The slot of our pool that `buffer` (in the default layout) was filled in, when it can be
/// published as it is: one memory starting at a lent, unpublished slot, holding a whole frame.
fn slot_holding(
    buffer: &gst::BufferRef,
    writer: &Writer,
    info: &gst_video::VideoInfo,
) -> Option<u32> {
    if buffer.n_memory() != 1 || buffer.size() < info.size() {
        return None;
    }
    let memory = buffer.peek_memory(0);
    // Our pool wraps whole slots: other memory (a camera's, a copy's) is told apart without
    // mapping it, which costs more than the rest of this check.
    if memory.maxsize() as u64 != writer.slot_capacity() {
        return None;
    }
    // Mapping memory that wraps a slot only hands out its pointer.
    let map = memory.map_readable().ok()?;
    writer.lent_slot_at(map.as_ptr())
}

/// Whether `buffer`'s planes sit where the caps' default layout puts them (no GstVideoMeta, or
/// one with the default offsets and strides).
fn in_default_layout(buffer: &gst::BufferRef, info: &gst_video::VideoInfo) -> bool {
    buffer
        .meta::<gst_video::VideoMeta>()
        .is_none_or(|meta| meta.offset() == info.offset() && meta.stride() == info.stride())
}

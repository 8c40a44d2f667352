//! How a frame is copied into its slot, and which copy suits the slot.
//!
//! A plain copy reads every destination cache line before writing it (read-for-ownership);
//! that costs nothing when the slot is still in this core's cache and a trip to memory for
//! every line when it is not. Non-temporal (streaming) stores write whole lines without
//! reading them. A slot is not in cache when the ring is larger than the last-level cache, or
//! when the writer has been idle: between the frames of a paced stream (a camera at 30 fps)
//! other work takes the caches and the clocks cool, and the plain copy of a 640x480 RGBA frame
//! takes twice as long as the streaming one (README, Performance).

use crate::sys;

/// A writer that published nothing for this long has left its slots to other work: the next
/// slot is taken as cold whatever the ring's size. Copying 75 KB to 1.2 MB frames into six
/// slots with pauses of 0.1, 1 and 5 ms between copies, streaming stores were 1.0-1.5x as fast
/// as the plain copy; 1 ms keeps back-to-back streams of small frames, whose ring stays in
/// cache, on the plain copy.
pub(crate) const IDLE_COLD_AFTER_NS: u64 = 1_000_000;

/// Whether the slot a frame of `frame_size` bytes goes to is out of cache: the ring of
/// `slot_count` such frames is larger than the last-level cache, or the writer has been idle
/// for `idle_ns` nanoseconds, at least [`IDLE_COLD_AFTER_NS`].
pub(crate) fn slots_are_cold(frame_size: u64, slot_count: usize, idle_ns: u64) -> bool {
    let ring_outgrows_cache =
        frame_size.saturating_mul(slot_count as u64) > sys::last_level_cache_bytes();
    ring_outgrows_cache || idle_ns >= IDLE_COLD_AFTER_NS
}

/// Copies a frame into a slot: with non-temporal stores when the slot is `cold` (see
/// [`crate::Writer::slots_are_cold`]), with a plain copy otherwise.
pub fn copy_frame(slot: &mut [u8], frame: &[u8], cold: bool) {
    if cold {
        copy_streaming(slot, frame);
    } else {
        slot.copy_from_slice(frame);
    }
}

/// Copies `rows` rows of `row_bytes` bytes from `src`, whose rows start `src_stride` bytes
/// apart, into `dst`, whose rows start `dst_stride` bytes apart (a frame repacked into the
/// default layout of its caps), as [`copy_frame`] copies a whole frame: streamed when `cold`.
/// Rows, or their bytes, that either slice lacks are left out.
pub fn copy_rows(
    dst: &mut [u8],
    dst_stride: usize,
    src: &[u8],
    src_stride: usize,
    row_bytes: usize,
    rows: usize,
    cold: bool,
) {
    let pairs = src
        .chunks(src_stride.max(1))
        .zip(dst.chunks_mut(dst_stride.max(1)))
        .take(rows);
    for (src_row, dst_row) in pairs {
        let n = row_bytes.min(src_row.len()).min(dst_row.len());
        if cold {
            stream_unfenced(&mut dst_row[..n], &src_row[..n]);
        } else {
            dst_row[..n].copy_from_slice(&src_row[..n]);
        }
    }
    if cold {
        fence_streaming_stores();
    }
}

/// Copies `src` into `dst` (same length) with non-temporal stores where the CPU has them:
/// the destination's cache lines are written without being read first, and without pushing
/// other data out of the cache. The stores are complete and ordered before whatever this
/// thread stores next (the release that publishes the frame).
pub(crate) fn copy_streaming(dst: &mut [u8], src: &[u8]) {
    stream_unfenced(dst, src);
    fence_streaming_stores();
}

/// [`copy_streaming`] without the fence: for several copies fenced once.
fn stream_unfenced(dst: &mut [u8], src: &[u8]) {
    assert_eq!(dst.len(), src.len(), "streaming copies need equal lengths");
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: SSE2 is part of the x86_64 baseline, and the lengths are equal.
        unsafe { copy_streaming_sse2(dst, src) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    dst.copy_from_slice(src);
}

/// Non-temporal stores are weakly ordered: this orders the ones made so far before whatever
/// this thread stores next (the release that publishes the frame).
fn fence_streaming_stores() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE2 (sfence) is part of the x86_64 baseline.
    unsafe {
        std::arch::x86_64::_mm_sfence()
    };
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
unsafe fn copy_streaming_sse2(dst: &mut [u8], src: &[u8]) {
    use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_stream_si128};
    const LINE: usize = 64;
    let len = dst.len();
    // Streaming stores need 16-byte aligned destinations: copy up to the first one plainly.
    let head = dst.as_ptr().align_offset(16).min(len);
    dst[..head].copy_from_slice(&src[..head]);
    let body = (len - head) / LINE * LINE;
    let (to, from) = (dst[head..].as_mut_ptr(), src[head..].as_ptr());
    for line in (0..body).step_by(LINE) {
        for part in (0..LINE).step_by(16) {
            let offset = line + part;
            // SAFETY: offset + 16 <= body <= len - head, so both 16-byte accesses stay inside
            // the slices; `to + offset` is 16-byte aligned (head aligned it, offsets are
            // multiples of 16); loads may be unaligned.
            unsafe {
                let value = _mm_loadu_si128(from.add(offset) as *const __m128i);
                _mm_stream_si128(to.add(offset) as *mut __m128i, value);
            }
        }
    }
    dst[head + body..].copy_from_slice(&src[head + body..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_copy_is_exact_at_every_alignment_and_length() {
        let src: Vec<u8> = (0..5000u32).map(|i| (i * 7 + 3) as u8).collect();
        let mut dst = vec![0u8; 5100];
        for offset in [0, 1, 7, 15, 16, 33] {
            for len in [0, 1, 15, 16, 63, 64, 65, 1000, 4097] {
                dst.fill(0xAA);
                copy_streaming(&mut dst[offset..offset + len], &src[..len]);
                assert_eq!(&dst[offset..offset + len], &src[..len], "{offset}+{len}");
                assert!(dst[..offset].iter().all(|&b| b == 0xAA));
                assert!(dst[offset + len..].iter().all(|&b| b == 0xAA));
            }
        }
    }

    #[test]
    fn rows_are_repacked_exactly_streamed_or_not() {
        // Three rows of 50 bytes, 64 apart in the source, 52 apart in the destination.
        let src: Vec<u8> = (0..192u32).map(|i| (i * 13 + 1) as u8).collect();
        for cold in [false, true] {
            for offset in [0, 3] {
                let mut dst = [0xAAu8; 200];
                copy_rows(&mut dst[offset..], 52, &src, 64, 50, 3, cold);
                for row in 0..3 {
                    let at = offset + row * 52;
                    assert_eq!(&dst[at..at + 50], &src[row * 64..row * 64 + 50], "{cold}");
                    assert!(dst[at + 50..at + 52].iter().all(|&b| b == 0xAA), "padding");
                }
                assert!(dst[..offset].iter().all(|&b| b == 0xAA));
                assert!(
                    dst[offset + 3 * 52..].iter().all(|&b| b == 0xAA),
                    "no fourth row"
                );
            }
        }
    }

    #[test]
    fn an_idle_writer_streams_and_a_busy_one_keeps_the_plain_copy_of_a_small_ring() {
        // 6 slots of 64 KiB fit any last-level cache we run on.
        assert!(!slots_are_cold(64 << 10, 6, 0));
        assert!(!slots_are_cold(64 << 10, 6, IDLE_COLD_AFTER_NS - 1));
        assert!(slots_are_cold(64 << 10, 6, IDLE_COLD_AFTER_NS));
        let llc = sys::last_level_cache_bytes();
        assert!(slots_are_cold(llc, 2, 0), "a ring larger than the cache");
    }
}

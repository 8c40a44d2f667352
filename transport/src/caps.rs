//! The caps table: the last few caps strings the writer announced, each in an entry guarded
//! by its own seqlock, so readers copy a string that is being replaced at most once more.

use crate::error::Error;
use crate::layout::CAPS_CAPACITY;
use crate::segment::{Mapping, WriterMapping};
use std::sync::atomic::Ordering;

/// Reads the caps string of generation `gen` from the caps table. Ok(None) when that
/// generation was already replaced (only the last CAPS_ENTRIES generations are kept) or when
/// no caps were ever set.
pub(crate) fn read_caps(m: &Mapping, gen_: u64) -> Result<Option<String>, Error> {
    if gen_ == 0 {
        return Ok(None);
    }
    let head = m.caps_head(gen_);
    for _ in 0..100 {
        let s1 = head.seq.load(Ordering::Acquire);
        if s1 % 2 == 1 {
            std::thread::yield_now();
            continue;
        }
        let stored_gen = head.generation.load(Ordering::Relaxed);
        let len = head.len.load(Ordering::Relaxed);
        if len > CAPS_CAPACITY as u64 {
            if head.seq.load(Ordering::Acquire) == s1 {
                return Err(Error::Corrupt {
                    field: "caps length".into(),
                    expected: format!("0..={CAPS_CAPACITY}"),
                    found: len,
                });
            }
            continue;
        }
        let mut buf = vec![0u8; len as usize];
        // SAFETY: len <= CAPS_CAPACITY, so the copy stays inside this caps entry. The bytes may
        // change while we copy; the sequence check below discards such a copy.
        unsafe {
            std::ptr::copy_nonoverlapping(m.caps_bytes_ptr(gen_), buf.as_mut_ptr(), buf.len())
        };
        std::sync::atomic::fence(Ordering::Acquire);
        if head.seq.load(Ordering::Relaxed) != s1 {
            continue;
        }
        if stored_gen != gen_ {
            return Ok(None);
        }
        return String::from_utf8(buf)
            .map(Some)
            .map_err(|_| Error::Corrupt {
                field: "caps string".into(),
                expected: "UTF-8 text".into(),
                found: len,
            });
    }
    Ok(None)
}

/// Refuses caps longer than a caps table entry holds.
pub(crate) fn check_len(caps: &str) -> Result<(), Error> {
    if caps.len() > CAPS_CAPACITY {
        return Err(Error::CapsTooLong {
            len: caps.len(),
            max: CAPS_CAPACITY,
        });
    }
    Ok(())
}

/// Writes caps generation `gen` (writer only).
pub(crate) fn write_caps(m: &WriterMapping, gen_: u64, caps: &str) {
    debug_assert!(caps.len() <= CAPS_CAPACITY);
    let head = m.caps_head(gen_);
    let s = head.seq.load(Ordering::Relaxed);
    head.seq.store(s + 1, Ordering::Relaxed);
    std::sync::atomic::fence(Ordering::Release);
    // SAFETY: the writer's mapping is writable and caps.len() <= CAPS_CAPACITY.
    unsafe {
        std::ptr::copy_nonoverlapping(caps.as_ptr(), m.caps_bytes_mut(gen_), caps.len());
    }
    head.len.store(caps.len() as u64, Ordering::Relaxed);
    head.generation.store(gen_, Ordering::Relaxed);
    head.seq.store(s + 2, Ordering::Release);
    m.header().caps_gen.store(gen_, Ordering::Release);
}

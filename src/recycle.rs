//! Wrappers of shared memory reused frame after frame, so that steady-state streaming
//! allocates nothing: a `GstMemory` over a slot goes back to an idle list when its last
//! reference is dropped, to wrap the same bytes (the same slot) again, and empty `GstBuffer`
//! shells come from a pool.
//!
//! What a memory holds while it is used (a reader's pin, a writer's loan of a slot) ends when
//! the memory is no longer referenced anywhere, not when its buffer returns: a copy of the
//! buffer made downstream (`tee`, `gst_buffer_copy`) shares the memory. So memories are
//! recycled from their own `dispose` (as v4l2src's allocator does): GStreamer calls it when the
//! reference count drops to zero; it hands the hold back and, instead of freeing the memory,
//! revives it with a reference owned by the idle list.

use gst::glib;
use gst::glib::translate::*;
use gst::prelude::*;
use gst::subclass::prelude::*;

use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

/// Idle memories (and buffer shells) kept at most: more than a segment's slots, so that each
/// slot's wrapper is kept, with room for those of a previous segment still in flight.
const MAX_IDLE: usize = 64;

/// Ends what a memory held (a pin, a loan), given the token it was wrapped with. Called once
/// per wrap, when the memory is no longer referenced.
pub(crate) type Release = unsafe fn(token: *mut c_void);

/// Hands out memories over shared bytes, reusing idle ones. Dropping it lets go of every idle
/// memory; memories still in flight are freed when their last reference goes.
pub(crate) struct RecycledMemories {
    home: Arc<Home>,
}

/// What the memories of one `RecycledMemories` share.
struct Home {
    idle: Mutex<Vec<IdleMemory>>,
    release: Release,
    /// `GST_MEMORY_FLAG_READONLY` for memories others must not write, or 0.
    flags: gst::ffi::GstMemoryFlags,
    /// The owner is gone: memories are freed, not kept.
    closed: AtomicBool,
}

/// An idle memory, with its record at hand: finding one for some bytes then takes no qdata
/// lookup (a global lock and a search in GStreamer) per idle memory.
struct IdleMemory {
    memory: *mut gst::ffi::GstMemory,
    record: *const MemoryRecord,
}

// SAFETY: a GstMemory is thread-safe reference-counted; the idle list owns one reference, and
// the record lives as long as the memory and is only changed by whoever holds that reference.
unsafe impl Send for IdleMemory {}

/// What a recycled memory knows about itself (its qdata and its wrapped user data).
struct MemoryRecord {
    /// The token of what it holds now (null while idle).
    token: AtomicPtr<c_void>,
    /// The bytes it wraps.
    data: *mut u8,
    maxsize: usize,
    /// Free it when it is next disposed (let go of by `forget_idle`).
    retired: AtomicBool,
    home: Arc<Home>,
}

impl Drop for RecycledMemories {
    fn drop(&mut self) {
        // Under the idle list's lock, which `recycle` checks it under: no memory is kept
        // after this (it would keep the home alive through its record, and itself).
        let idle = self.home.idle.lock().unwrap();
        self.home.closed.store(true, Ordering::SeqCst);
        drop(idle);
        self.forget_idle();
    }
}

impl RecycledMemories {
    /// Memories flagged read-only (`readonly`) or writable, whose holds `release` ends.
    pub(crate) fn new(release: Release, readonly: bool) -> RecycledMemories {
        RecycledMemories {
            home: Arc::new(Home {
                idle: Mutex::new(Vec::with_capacity(MAX_IDLE)),
                release,
                flags: if readonly {
                    gst::ffi::GST_MEMORY_FLAG_READONLY
                } else {
                    0
                },
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// A memory over `data..data + maxsize`, `size` bytes long from its start, that holds
    /// `token` until it is no longer referenced anywhere, then calls the release with it.
    ///
    /// # Safety
    /// The bytes stay mapped, and are not written by anyone else if the memories are writable,
    /// until the release runs for `token`.
    pub(crate) unsafe fn wrap(
        &self,
        data: *mut u8,
        maxsize: usize,
        size: usize,
        token: *mut c_void,
    ) -> gst::Memory {
        let reused = {
            let mut idle = self.home.idle.lock().unwrap();
            idle.iter()
                .position(|m| {
                    // SAFETY: the record of a memory on the idle list lives as long as it.
                    let record = unsafe { &*m.record };
                    record.data == data && record.maxsize == maxsize
                })
                .map(|i| idle.swap_remove(i))
        };
        if let Some(IdleMemory {
            memory: mem,
            record,
        }) = reused
        {
            // SAFETY: the idle list held the only reference, now ours: nobody else reads
            // or writes the memory struct. Offset and size are set for this use (a user
            // may have resized it); it wraps exactly the bytes the caller vouches for now
            // (same address and length).
            return unsafe {
                (*mem).offset = 0;
                (*mem).size = size;
                (*record).token.store(token, Ordering::SeqCst);
                from_glib_full(mem)
            };
        }
        // No idle memory over these bytes: a new one.
        let record = Box::into_raw(Box::new(MemoryRecord {
            token: AtomicPtr::new(token),
            data,
            maxsize,
            retired: AtomicBool::new(false),
            home: self.home.clone(),
        }));
        // SAFETY: the caller vouches for the bytes while the token is held, and a memory is
        // used only while it holds one (idle memories are only reused for the same bytes,
        // vouched for again); read-only memories are flagged so, and GStreamer never writes
        // through them. The record outlives the memory: `free_record` runs when GStreamer
        // frees it.
        unsafe {
            let mem = gst::ffi::gst_memory_new_wrapped(
                self.home.flags,
                data as glib::ffi::gpointer,
                maxsize,
                0,
                size,
                record as glib::ffi::gpointer,
                Some(free_record),
            );
            assert!(
                !mem.is_null(),
                "gst_memory_new_wrapped refused offset 0 and size {size} <= maxsize {maxsize}"
            );
            let object = mem as *mut gst::ffi::GstMiniObject;
            gst::ffi::gst_mini_object_set_qdata(
                object,
                RECORD_QUARK.into_glib(),
                record as glib::ffi::gpointer,
                None,
            );
            (*object).dispose = Some(recycle);
            from_glib_full(mem)
        }
    }

    /// Lets go of the idle memories (when the bytes they wrap are gone: a new segment).
    pub(crate) fn forget_idle(&self) {
        let idle = std::mem::take(&mut *self.home.idle.lock().unwrap());
        for IdleMemory { memory, record } in idle {
            // SAFETY: the record of a memory on the idle list lives as long as the memory;
            // the idle list owned this reference, and dispose now lets the memory be freed.
            unsafe {
                (*record).retired.store(true, Ordering::SeqCst);
                gst::ffi::gst_mini_object_unref(memory as *mut gst::ffi::GstMiniObject);
            }
        }
        // Room for the next idle ones without allocating while frames flow.
        self.home.idle.lock().unwrap().reserve_exact(MAX_IDLE);
    }
}

static RECORD_QUARK: LazyLock<glib::Quark> =
    LazyLock::new(|| glib::Quark::from_str("shmframe-recycled-memory"));

/// # Safety
/// `mem` is a memory made by `RecycledMemories::wrap` and not freed yet.
unsafe fn record_of(mem: *mut gst::ffi::GstMemory) -> *const MemoryRecord {
    // SAFETY: the qdata was set to the record when the memory was made.
    unsafe {
        gst::ffi::gst_mini_object_get_qdata(
            mem as *mut gst::ffi::GstMiniObject,
            RECORD_QUARK.into_glib(),
        ) as *const MemoryRecord
    }
}

/// The memories' dispose: called by GStreamer when the last reference is dropped. Ends the
/// hold; then keeps the memory for reuse (returns FALSE: not freed) unless the owner is gone,
/// it was retired, or the idle list is full.
unsafe extern "C" fn recycle(object: *mut gst::ffi::GstMiniObject) -> glib::ffi::gboolean {
    // SAFETY: `object` is one of our memories (only they get this dispose), being disposed:
    // nobody else references it, so its record is ours to update; the token was given with
    // the promise that the release is called once for it.
    unsafe {
        let record_ptr = record_of(object as *mut gst::ffi::GstMemory);
        let record = &*record_ptr;
        let token = record.token.swap(std::ptr::null_mut(), Ordering::SeqCst);
        if !token.is_null() {
            (record.home.release)(token);
        }
        if record.retired.load(Ordering::SeqCst) {
            return glib::ffi::GTRUE;
        }
        let mut idle = record.home.idle.lock().unwrap();
        if record.home.closed.load(Ordering::SeqCst) {
            return glib::ffi::GTRUE;
        }
        // Within the reserved capacity only, so that keeping it never allocates.
        if idle.len() >= idle.capacity().min(MAX_IDLE) {
            return glib::ffi::GTRUE;
        }
        gst::ffi::gst_mini_object_ref(object);
        idle.push(IdleMemory {
            memory: object as *mut gst::ffi::GstMemory,
            record: record_ptr,
        });
        glib::ffi::GFALSE
    }
}

/// The memories' GDestroyNotify, run when GStreamer frees one.
unsafe extern "C" fn free_record(record: glib::ffi::gpointer) {
    // SAFETY: `record` is the Box::into_raw pointer given to exactly this memory, and
    // GStreamer calls the notify once, when the memory is freed (after `recycle` ended its
    // hold; the check below is for safety only).
    unsafe {
        let record = Box::from_raw(record as *mut MemoryRecord);
        let token = record.token.load(Ordering::SeqCst);
        if !token.is_null() {
            (record.home.release)(token);
        }
    }
}

/// The empty `GstBuffer`s a pool keeps between frames, up to the room reserved for them, so
/// that keeping one never allocates.
#[derive(Default)]
pub(crate) struct Shells(Mutex<Vec<gst::Buffer>>);

impl Shells {
    /// Room for `keep` shells: no more are kept.
    pub(crate) fn reserve(&self, keep: usize) {
        self.0.lock().unwrap().reserve_exact(keep);
    }

    /// A kept shell, or a new one.
    pub(crate) fn take(&self) -> gst::Buffer {
        self.0.lock().unwrap().pop().unwrap_or_default()
    }

    /// A pool's `release_buffer`: strips the buffer of its memory and keeps it if there is
    /// room. GstBufferPool's reset_buffer has cleared timestamps, offsets, flags and metas.
    pub(crate) fn keep(&self, mut buffer: gst::Buffer) {
        let Some(shell) = buffer.get_mut() else {
            return;
        };
        // Our reference to the memory goes: it is recycled, and what it holds (a pin, a
        // slot's loan) ends, once nothing else holds it (a copy of the buffer may share it).
        shell.remove_all_memory();
        shell.unset_flags(gst::BufferFlags::TAG_MEMORY);
        let mut shells = self.0.lock().unwrap();
        if shells.len() < shells.capacity() {
            shells.push(buffer);
        }
    }
}

glib::wrapper! {
    /// A pool of empty `GstBuffer`s: a buffer returns when its last reference is dropped, is
    /// stripped of its memory and kept for the next frame.
    pub struct ShellPool(ObjectSubclass<imp::ShellPool>)
        @extends gst::BufferPool, gst::Object;
}

impl ShellPool {
    pub(crate) fn new() -> ShellPool {
        let pool: ShellPool = glib::Object::new();
        pool.imp().shells.reserve(MAX_IDLE);
        pool
    }

    /// An empty buffer, back in the pool when its last reference is dropped.
    pub(crate) fn shell(&self) -> gst::Buffer {
        self.acquire_buffer(None)
            .expect("the shell pool always has a buffer")
    }
}

mod imp {
    use super::*;

    #[derive(Default)]
    pub struct ShellPool {
        pub(super) shells: Shells,
    }

    #[glib::object_subclass]
    impl ObjectSubclass for ShellPool {
        const NAME: &'static str = "GstShmFrameShellPool";
        type Type = super::ShellPool;
        type ParentType = gst::BufferPool;
    }

    impl ObjectImpl for ShellPool {}
    impl GstObjectImpl for ShellPool {}

    impl BufferPoolImpl for ShellPool {
        fn start(&self) -> bool {
            // Nothing to preallocate: shells are made as needed and kept on release.
            true
        }

        fn acquire_buffer(
            &self,
            _params: Option<&gst::BufferPoolAcquireParams>,
        ) -> Result<gst::Buffer, gst::FlowError> {
            Ok(self.shells.take())
        }

        fn release_buffer(&self, buffer: gst::Buffer) {
            self.shells.keep(buffer);
        }
    }
}

//! The wrappers of zero-copy buffers, reused frame after frame so that steady-state reading
//! allocates nothing: the `GstBuffer` comes from a pool of empty shells, and the read-only
//! `GstMemory` over a pinned frame goes back to an idle list when its last reference is
//! dropped, to wrap the same bytes (the same slot) again.
//!
//! A memory's loan of a pin ends when the memory is no longer referenced anywhere, not when
//! the buffer returns: a copy of the buffer made downstream (`tee`, `gst_buffer_copy`) shares
//! the memory. So memories are recycled from their own `dispose` (as v4l2src's allocator
//! does): GStreamer calls it when the reference count drops to zero; it releases the pin and,
//! instead of freeing the memory, revives it with a reference owned by the idle list.

use gst::glib;
use gst::glib::translate::*;
use gst::prelude::*;
use gst::subclass::prelude::*;

use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use crate::transport::PinnedFrame;

/// Idle memories kept at most: more than a segment's slots, so that each slot's wrapper is
/// kept, with room for those of a previous writer's segment still in flight.
const MAX_IDLE: usize = 64;

/// Hands out buffers wrapping pinned frames. Dropping it lets go of every idle wrapper;
/// wrappers still in flight are freed when downstream drops them.
pub(super) struct PinnedBuffers {
    shells: ShellPool,
    memories: Arc<IdleMemories>,
}

impl Default for PinnedBuffers {
    fn default() -> Self {
        PinnedBuffers {
            shells: ShellPool::new(),
            memories: Arc::new(IdleMemories {
                idle: Mutex::new(Vec::with_capacity(MAX_IDLE)),
                closed: AtomicBool::new(false),
            }),
        }
    }
}

impl Drop for PinnedBuffers {
    fn drop(&mut self) {
        self.memories.closed.store(true, Ordering::SeqCst);
        self.forget_idle();
    }
}

impl PinnedBuffers {
    /// A buffer whose one read-only memory wraps `pinned` in place; the pin is released when
    /// the memory is no longer referenced anywhere.
    pub(super) fn wrap(&self, pinned: PinnedFrame) -> gst::Buffer {
        let memory = self.memory_for(pinned);
        let mut buffer = self.shells.shell();
        buffer
            .get_mut()
            .expect("a shell from the pool is referenced by nobody else")
            .append_memory(memory);
        buffer
    }

    /// Lets go of the idle wrappers (they wrap a segment that is gone when the writer changes).
    pub(super) fn forget_idle(&self) {
        let idle = std::mem::take(&mut *self.memories.idle.lock().unwrap());
        for memory in idle {
            // SAFETY: the record of a memory on the idle list lives as long as the memory.
            unsafe { (*record_of(memory.0)).retired.store(true, Ordering::SeqCst) };
            // SAFETY: the idle list owned this reference; dispose now lets it be freed.
            unsafe { gst::ffi::gst_mini_object_unref(memory.0 as *mut gst::ffi::GstMiniObject) };
        }
        // Room for the next idle ones without allocating while frames flow.
        self.memories.idle.lock().unwrap().reserve_exact(MAX_IDLE);
    }

    fn memory_for(&self, pinned: PinnedFrame) -> gst::Memory {
        let data = pinned.data();
        let (ptr, len) = (data.as_ptr(), data.len());
        let token = pinned.into_raw();
        let reused = {
            let mut idle = self.memories.idle.lock().unwrap();
            idle.iter()
                .position(|m| {
                    // SAFETY: the record of a memory on the idle list lives as long as it.
                    let record = unsafe { &*record_of(m.0) };
                    record.data == ptr && record.len == len
                })
                .map(|i| idle.swap_remove(i))
        };
        match reused {
            Some(memory) => {
                let mem = memory.0;
                // SAFETY: the idle list held the only reference, now ours: nobody else reads
                // or writes the memory. Offset and size are put back to the whole frame
                // (downstream may have resized it), and it wraps exactly the bytes pinned now
                // (same address and length), which stay mapped until the pin is released.
                unsafe {
                    (*mem).offset = 0;
                    (*mem).size = len;
                    (*record_of(mem))
                        .pin
                        .store(token as *mut c_void, Ordering::SeqCst);
                    from_glib_full(mem)
                }
            }
            None => self.new_memory(ptr, len, token),
        }
    }

    fn new_memory(&self, ptr: *const u8, len: usize, token: *const c_void) -> gst::Memory {
        let record = Box::into_raw(Box::new(MemoryRecord {
            pin: AtomicPtr::new(token as *mut c_void),
            data: ptr,
            len,
            retired: AtomicBool::new(false),
            home: self.memories.clone(),
        }));
        // SAFETY: ptr..ptr+len stays mapped and unchanged while the pin is held, and the
        // memory is used only while it holds one (idle memories are only reused for the same
        // bytes pinned again); it is flagged read-only (the mapping is read-only too), so
        // GStreamer never writes through the mut pointer it is given. The record outlives the
        // memory: `free_record` runs when GStreamer frees it.
        unsafe {
            let mem = gst::ffi::gst_memory_new_wrapped(
                gst::ffi::GST_MEMORY_FLAG_READONLY,
                ptr as glib::ffi::gpointer,
                len,
                0,
                len,
                record as glib::ffi::gpointer,
                Some(free_record),
            );
            if mem.is_null() {
                // Only on a failed precondition, which the arguments above rule out; do not
                // leak the pin.
                drop(Box::from_raw(record));
                PinnedFrame::release_raw(token);
                return gst::Memory::with_size(0);
            }
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
}

/// Idle memories, each holding one reference, ready to wrap the same bytes again.
struct IdleMemories {
    idle: Mutex<Vec<IdleMemory>>,
    /// The `PinnedBuffers` is gone: memories are freed, not kept.
    closed: AtomicBool,
}

struct IdleMemory(*mut gst::ffi::GstMemory);

// SAFETY: a GstMemory is thread-safe reference-counted; the idle list owns one reference.
unsafe impl Send for IdleMemory {}

/// What a recycled memory knows about itself (its qdata and its wrapped user data).
struct MemoryRecord {
    /// The token of the pin it holds now (null while idle).
    pin: AtomicPtr<c_void>,
    /// The bytes it wraps.
    data: *const u8,
    len: usize,
    /// Free it when it is next disposed (let go of by `forget_idle`).
    retired: AtomicBool,
    home: Arc<IdleMemories>,
}

static RECORD_QUARK: LazyLock<glib::Quark> =
    LazyLock::new(|| glib::Quark::from_str("shmframesrc-recycled-memory"));

/// # Safety
/// `mem` is a memory made by `PinnedBuffers::new_memory` and not freed yet.
unsafe fn record_of(mem: *mut gst::ffi::GstMemory) -> *const MemoryRecord {
    // SAFETY: the qdata was set to the record when the memory was made.
    unsafe {
        gst::ffi::gst_mini_object_get_qdata(
            mem as *mut gst::ffi::GstMiniObject,
            RECORD_QUARK.into_glib(),
        ) as *const MemoryRecord
    }
}

/// The memories' dispose: called by GStreamer when the last reference is dropped. Releases
/// the pin; then keeps the memory for reuse (returns FALSE: not freed) unless the owner is
/// gone, it was retired, or the idle list is full.
unsafe extern "C" fn recycle(object: *mut gst::ffi::GstMiniObject) -> glib::ffi::gboolean {
    // SAFETY: `object` is one of our memories (only they get this dispose), being disposed:
    // nobody else references it, so its record is ours to update.
    unsafe {
        let record = &*record_of(object as *mut gst::ffi::GstMemory);
        let token = record.pin.swap(std::ptr::null_mut(), Ordering::SeqCst);
        if !token.is_null() {
            PinnedFrame::release_raw(token);
        }
        if record.retired.load(Ordering::SeqCst) || record.home.closed.load(Ordering::SeqCst) {
            return glib::ffi::GTRUE;
        }
        let mut idle = record.home.idle.lock().unwrap();
        // Within the reserved capacity only, so that keeping it never allocates.
        if idle.len() >= idle.capacity().min(MAX_IDLE) {
            return glib::ffi::GTRUE;
        }
        gst::ffi::gst_mini_object_ref(object);
        idle.push(IdleMemory(object as *mut gst::ffi::GstMemory));
        glib::ffi::GFALSE
    }
}

/// The memories' GDestroyNotify, run when GStreamer frees one.
unsafe extern "C" fn free_record(record: glib::ffi::gpointer) {
    // SAFETY: `record` is the Box::into_raw pointer given to exactly this memory, and
    // GStreamer calls the notify once, when the memory is freed. A memory freed holding a pin
    // (never disposed: not possible for a reference-counted one, kept for safety) releases it.
    unsafe {
        let record = Box::from_raw(record as *mut MemoryRecord);
        let token = record.pin.load(Ordering::SeqCst);
        if !token.is_null() {
            PinnedFrame::release_raw(token);
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
    fn new() -> ShellPool {
        let pool: ShellPool = glib::Object::new();
        pool.imp().shells.lock().unwrap().reserve_exact(MAX_IDLE);
        pool
    }

    fn shell(&self) -> gst::Buffer {
        self.acquire_buffer(None)
            .expect("the shell pool always has a buffer")
    }
}

mod imp {
    use super::*;

    #[derive(Default)]
    pub struct ShellPool {
        pub(super) shells: Mutex<Vec<gst::Buffer>>,
    }

    #[glib::object_subclass]
    impl ObjectSubclass for ShellPool {
        const NAME: &'static str = "GstShmFrameSrcShellPool";
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

        fn alloc_buffer(
            &self,
            _params: Option<&gst::BufferPoolAcquireParams>,
        ) -> Result<gst::Buffer, gst::FlowError> {
            Ok(gst::Buffer::new())
        }

        fn acquire_buffer(
            &self,
            _params: Option<&gst::BufferPoolAcquireParams>,
        ) -> Result<gst::Buffer, gst::FlowError> {
            Ok(self.shells.lock().unwrap().pop().unwrap_or_default())
        }

        fn release_buffer(&self, mut buffer: gst::Buffer) {
            // GstBufferPool's reset_buffer has cleared timestamps, offsets, flags and metas.
            let Some(shell) = buffer.get_mut() else {
                return;
            };
            // Our reference to the memory goes: it is recycled once nothing else holds it.
            shell.remove_all_memory();
            shell.unset_flags(gst::BufferFlags::TAG_MEMORY);
            let mut shells = self.shells.lock().unwrap();
            if shells.len() < shells.capacity().min(MAX_IDLE) {
                shells.push(buffer);
            }
        }
    }
}

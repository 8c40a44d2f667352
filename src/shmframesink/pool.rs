//! The buffer pool `shmframesink` proposes upstream: its buffers are slots of the segment, so
//! an upstream element that fills a buffer from it (videotestsrc, videoconvert, a decoder,
//! appsrc with the pool) writes the frame straight into shared memory and `render()` only
//! publishes it.
//!
//! Each buffer handed out holds a slot lent by the writer ([`Writer::lend`]). The loan belongs
//! to the buffer's memory, not to the buffer: it ends when the last reference to the memory
//! is dropped, wherever that happens (a copy of the buffer made by `tee` or `imagefreeze`
//! shares the memory), so a slot is never rewritten while anything in the process can still
//! read it. When no slot is free (every spare slot lent or pinned, or the writer busy), the
//! pool hands out an ordinary system-memory buffer instead, which `render()` copies as it
//! copies any foreign buffer. Only under `backpressure=block` does an acquire first wait for
//! a slot, as a write waits for room, up to `reader-timeout` and never past a flush.
//!
//! [`Writer::lend`]: crate::transport::Writer::lend

use gst::glib;
use gst::glib::translate::*;
use gst::subclass::prelude::*;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::recycle::{RecycledMemories, Shells};
use crate::transport::Lender;

/// Asks the sink's current writer for a free slot that holds a frame of the given size: the
/// slot and the writer's lender, or `None`. It may wait for a slot, until the second argument
/// says the pool is flushing.
pub type LendSlot = Box<dyn Fn(usize, &dyn Fn() -> bool) -> Option<(u32, Lender)> + Send + Sync>;

glib::wrapper! {
    pub struct SlotPool(ObjectSubclass<imp::SlotPool>)
        @extends gst::BufferPool, gst::Object;
}

impl SlotPool {
    /// A pool whose buffers are slots that `lend` lends. It binds to whichever segment the
    /// sink has when a buffer is acquired, so it outlives a caps change that recreates it.
    pub fn new(lend: LendSlot, max_slots: u32) -> SlotPool {
        let pool: SlotPool = glib::Object::new();
        let bound = pool.imp().binding.set(imp::Binding {
            lend,
            loans: Mutex::new(imp::Loans::default()),
            frame_size: AtomicUsize::new(0),
            memories: RecycledMemories::new(imp::end_loan, false),
        });
        assert!(bound.is_ok(), "a new pool is bound once");
        pool.imp().reserve_shells(max_slots as usize);
        pool
    }
}

mod imp {
    use super::*;

    /// Shell buffers kept for reuse beyond the slots (fallback buffers in flight).
    const EXTRA_SHELLS: usize = 8;

    /// One slot's loan record: a reference to it travels with the memory that wraps the slot
    /// and ends the loan when that memory is freed.
    pub struct SlotLoan {
        pub lender: Lender,
        pub slot: u32,
    }

    /// The loan records of the segment the pool last lent from, one per slot, made once per
    /// segment: lending a slot then allocates nothing.
    #[derive(Default)]
    pub struct Loans {
        lender: Option<Lender>,
        records: Vec<Arc<SlotLoan>>,
    }

    impl Loans {
        fn record(&mut self, slot: u32, lender: Lender) -> Arc<SlotLoan> {
            if !self.lender.as_ref().is_some_and(|l| l.same_as(&lender)) {
                self.records = (0..lender.slot_count())
                    .map(|slot| {
                        Arc::new(SlotLoan {
                            lender: lender.clone(),
                            slot,
                        })
                    })
                    .collect();
                self.lender = Some(lender);
            }
            self.records[slot as usize].clone()
        }
    }

    pub struct Binding {
        pub lend: LendSlot,
        pub loans: Mutex<Loans>,
        /// The size of the buffers upstream asked for (the frame size of its caps).
        pub frame_size: AtomicUsize,
        /// The memories wrapping lent slots, reused for the same slots.
        pub(crate) memories: RecycledMemories,
    }

    #[derive(Default)]
    pub struct SlotPool {
        pub binding: OnceLock<Binding>,
        /// Buffers returned to the pool, without memory, reused by the next acquire.
        shells: Shells,
        /// Between flush_start and flush_stop: an acquire waiting for a slot gives up.
        flushing: AtomicBool,
    }

    /// Called when the last reference to a slot's memory is dropped.
    ///
    /// # Safety
    /// `loan` is the pointer `Arc::into_raw` gave in `wrap_slot`, passed once.
    pub unsafe fn end_loan(loan: *mut std::ffi::c_void) {
        // SAFETY: as for this function.
        let loan = unsafe { Arc::from_raw(loan as *const SlotLoan) };
        loan.lender.give_back(loan.slot);
    }

    impl SlotPool {
        /// Room for every shell the pool keeps, so returning one never allocates.
        pub fn reserve_shells(&self, slots: usize) {
            self.shells.reserve(slots + EXTRA_SHELLS);
        }

        fn binding(&self) -> &Binding {
            self.binding.get().expect("SlotPool::new binds every pool")
        }

        /// A memory over the lent slot `slot`, `frame_size` bytes long, whose release ends the
        /// loan.
        fn wrap_slot(&self, slot: u32, lender: Lender, frame_size: usize) -> gst::Memory {
            let (data, capacity) = (lender.slot_ptr(slot), lender.slot_capacity() as usize);
            let record = self.binding().loans.lock().unwrap().record(slot, lender);
            let loan = Arc::into_raw(record);
            // SAFETY: the slot is lent to this pool and unpublished, so nothing else writes it;
            // `capacity` bytes stay mapped at `data` as long as the lender inside the loan
            // record lives, and the record lives until `end_loan` runs, after the last use of
            // the memory. frame_size <= capacity: the sink lends only slots that hold a frame
            // of that size.
            unsafe {
                self.binding().memories.wrap(
                    data,
                    capacity,
                    frame_size,
                    loan as *mut std::ffi::c_void,
                )
            }
        }
    }

    #[glib::object_subclass]
    impl ObjectSubclass for SlotPool {
        const NAME: &'static str = "GstShmFrameSlotPool";
        type Type = super::SlotPool;
        type ParentType = gst::BufferPool;
    }

    impl ObjectImpl for SlotPool {}
    impl GstObjectImpl for SlotPool {}

    impl BufferPoolImpl for SlotPool {
        fn set_config(&self, config: &mut gst::BufferPoolConfigRef) -> bool {
            let Some((_caps, size, _min, _max)) = config.params() else {
                return false;
            };
            self.binding()
                .frame_size
                .store(size as usize, Ordering::Relaxed);
            self.parent_set_config(config)
        }

        fn flush_start(&self) {
            // A waiting acquire sees this within one wait slice (20 ms).
            self.flushing.store(true, Ordering::SeqCst);
            self.parent_flush_start();
        }

        fn flush_stop(&self) {
            self.flushing.store(false, Ordering::SeqCst);
            self.parent_flush_stop();
        }

        fn start(&self) -> bool {
            // Nothing to preallocate: slots are lent per acquire, and shells are made as
            // needed and kept by release_buffer.
            true
        }

        fn acquire_buffer(
            &self,
            params: Option<&gst::BufferPoolAcquireParams>,
        ) -> Result<gst::Buffer, gst::FlowError> {
            let binding = self.binding();
            let frame_size = binding.frame_size.load(Ordering::Relaxed);
            let dont_wait =
                params.is_some_and(|p| p.flags().contains(gst::BufferPoolAcquireFlags::DONTWAIT));
            let flushing = || dont_wait || self.flushing.load(Ordering::SeqCst);
            let memory = match (binding.lend)(frame_size, &flushing) {
                Some((slot, lender)) => self.wrap_slot(slot, lender, frame_size),
                None => gst::Memory::with_size(frame_size),
            };
            let mut buffer = self.shells.take();
            buffer
                .get_mut()
                .expect("a shell in the pool is referenced by nobody else")
                .append_memory(memory);
            Ok(buffer)
        }

        fn release_buffer(&self, buffer: gst::Buffer) {
            // Dropping our reference to the memory ends the slot's loan unless a copy of the
            // buffer still shares it.
            self.shells.keep(buffer);
        }
    }
}

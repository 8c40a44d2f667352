//! No heap allocation per frame in the steady state, on either side.
//!
//! How allocations are counted: EVERY heap allocation in this process, Rust's and C's.
//! * Rust: a counting `#[global_allocator]` (it allocates through glibc's `__libc_*` entry
//!   points directly, so its allocations are not counted twice below).
//! * C: this test binary defines `malloc`, `calloc`, `realloc`, `posix_memalign`,
//!   `aligned_alloc`, `memalign` and `valloc`, each counting and forwarding to glibc's
//!   `__libc_*` implementation. The dynamic linker resolves libglib's and libgstreamer's
//!   references to `malloc` etc. to the executable's definitions first (symbol interposition;
//!   the linker exports them because shared libraries on the link line reference them), so
//!   GLib/GStreamer allocations (`g_malloc`, and `g_slice` when it falls back to malloc) are
//!   counted. `sanity_check_counters` proves this at run time: `g_malloc` and a `GstStructure`
//!   must move the C counter, `Box::new` the Rust counter; if interposition were not in effect
//!   the test fails instead of passing vacuously.
//!
//! What is measured: in this one process, a writer pipeline (`videotestsrc ! imagefreeze !
//! identity drop-allocation=true ! shmframesink`: the sink's copy path, as with a camera,
//! paced so the ring does not fill, see `PACE_US`) and a
//! reader pipeline (`shmframesrc ! fakesink`) in `copy-mode=copy` and `copy-mode=zero-copy`.
//! A pad probe on the fakesink snapshots both counters at reader frames WARMUP,
//! WARMUP + SHORT and WARMUP + SHORT + LONG. The assertion: each window allocates at most
//! `SLACK` times in total (both pipelines, all threads) although it spans SHORT = 200 and
//! LONG = 400 frames; one allocation per frame anywhere would give >= 200 and fail. A mode
//! gets three tries, because a reader descheduled for longer than the ring's depth lets the
//! ring fill, and each full event is announced (allocating) by contract.
//! (`SLACK` leaves room for GLib's rare bookkeeping, e.g. a `g_slice` magazine refill; the
//! measured figure is printed, and was 0 when written.)
//!
//! GLib 2.74 (Debian 12) serves `GstBuffer`/`GstMemory` structs from `g_slice` magazines, which
//! recycle per thread without malloc; GLib >= 2.76 turns `g_slice` into plain malloc, where
//! this test would show the per-frame wrappers of the zero-copy path.
//!
//! To look at allocations with other tools (not needed by the test):
//!   heaptrack target/debug/deps/allocations-<hash> --exact steady_state_allocates_nothing_per_frame
//!   heaptrack_print heaptrack.allocations-*.zst | less      # "MOST CALLS TO ALLOCATION FUNCTIONS"
//! or `valgrind --tool=massif` / `--tool=memcheck --trace-malloc=yes`; note that GLib switches
//! `g_slice` to malloc under valgrind, so both show GstBuffer structs that are normally recycled.

mod common;

use common::{ShmName, init};
use gst::prelude::*;
use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static RUST_ALLOCS: AtomicU64 = AtomicU64::new(0);
static C_ALLOCS: AtomicU64 = AtomicU64::new(0);

/// With `SHMFRAME_ALLOC_TRACE=1`, the call stacks (raw return addresses, taken by glibc's
/// `backtrace()` into static storage, so tracing allocates nothing itself) of the first
/// `TRACE_SLOTS` allocations in the measured windows are printed with
/// `backtrace_symbols_fd` after the run: the way to find who allocates when this test fails.
static TRACING: AtomicBool = AtomicBool::new(false);
const TRACE_SLOTS: usize = 64;
const TRACE_DEPTH: usize = 16;
static TRACE_NEXT: AtomicUsize = AtomicUsize::new(0);
static TRACES: Traces = Traces(std::cell::UnsafeCell::new(
    [[std::ptr::null_mut(); TRACE_DEPTH]; TRACE_SLOTS],
));

struct Traces(std::cell::UnsafeCell<[[*mut c_void; TRACE_DEPTH]; TRACE_SLOTS]>);

// SAFETY: each slot is written by the one thread that claimed it through TRACE_NEXT, and all
// are read only after tracing stopped and the pipelines were shut down.
unsafe impl Sync for Traces {}

thread_local! {
    static IN_TRACE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
    if TRACING.load(Ordering::Relaxed) && !IN_TRACE.get() {
        let slot = TRACE_NEXT.fetch_add(1, Ordering::Relaxed);
        if slot < TRACE_SLOTS {
            IN_TRACE.set(true);
            // SAFETY: this thread claimed `slot` (see `Traces`); the buffer holds TRACE_DEPTH.
            unsafe {
                let frames = &mut (*TRACES.0.get())[slot];
                libc::backtrace(frames.as_mut_ptr(), TRACE_DEPTH as i32);
            }
            IN_TRACE.set(false);
        }
    }
}

fn print_traces() {
    let n = TRACE_NEXT.load(Ordering::SeqCst).min(TRACE_SLOTS);
    // SAFETY: tracing has stopped and the pipelines are shut down: nothing writes TRACES now.
    let traces = unsafe { &*TRACES.0.get() };
    for (slot, frames) in traces.iter().enumerate().take(n) {
        eprintln!("--- allocation {slot}");
        let depth = frames.iter().take_while(|p| !p.is_null()).count();
        // SAFETY: `depth` valid return addresses; backtrace_symbols_fd writes to stderr and
        // allocates nothing.
        unsafe { libc::backtrace_symbols_fd(frames.as_ptr(), depth as i32, 2) };
    }
}

unsafe extern "C" {
    fn __libc_malloc(size: usize) -> *mut c_void;
    fn __libc_calloc(n: usize, size: usize) -> *mut c_void;
    fn __libc_realloc(ptr: *mut c_void, size: usize) -> *mut c_void;
    fn __libc_memalign(align: usize, size: usize) -> *mut c_void;
    fn __libc_free(ptr: *mut c_void);
}

/// Counts every Rust allocation, allocating through glibc directly.
struct CountingAllocator;

/// glibc's malloc returns memory aligned to 16 bytes on x86_64 and aarch64.
const MALLOC_ALIGN: usize = 16;

// SAFETY: forwards to glibc's allocator, which satisfies size and alignment (memalign for
// alignments malloc does not guarantee); dealloc frees what alloc returned.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(&RUST_ALLOCS);
        // SAFETY: see the impl.
        unsafe {
            if layout.align() <= MALLOC_ALIGN {
                __libc_malloc(layout.size()) as *mut u8
            } else {
                __libc_memalign(layout.align(), layout.size()) as *mut u8
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: ptr came from alloc/realloc above.
        unsafe { __libc_free(ptr as *mut c_void) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(&RUST_ALLOCS);
        // SAFETY: see the impl; over-aligned blocks are moved by hand, as realloc does not
        // keep an alignment above malloc's.
        unsafe {
            if layout.align() <= MALLOC_ALIGN {
                __libc_realloc(ptr as *mut c_void, new_size) as *mut u8
            } else {
                let new = __libc_memalign(layout.align(), new_size) as *mut u8;
                if !new.is_null() {
                    std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                    __libc_free(ptr as *mut c_void);
                }
                new
            }
        }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

// The C allocation entry points, interposed for the whole process (see the module comment).
// `free` is not interposed: glibc's frees what glibc's __libc_* functions returned.

/// # Safety
/// The C `malloc` contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
    count(&C_ALLOCS);
    // SAFETY: forwarding the caller's arguments unchanged.
    unsafe { __libc_malloc(size) }
}

/// # Safety
/// The C `calloc` contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    count(&C_ALLOCS);
    // SAFETY: forwarding the caller's arguments unchanged.
    unsafe { __libc_calloc(n, size) }
}

/// # Safety
/// The C `realloc` contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn realloc(ptr: *mut c_void, size: usize) -> *mut c_void {
    count(&C_ALLOCS);
    // SAFETY: forwarding the caller's arguments unchanged.
    unsafe { __libc_realloc(ptr, size) }
}

/// # Safety
/// The C `memalign` contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    count(&C_ALLOCS);
    // SAFETY: forwarding the caller's arguments unchanged.
    unsafe { __libc_memalign(align, size) }
}

/// # Safety
/// The C `aligned_alloc` contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    count(&C_ALLOCS);
    // SAFETY: forwarding the caller's arguments unchanged.
    unsafe { __libc_memalign(align, size) }
}

/// # Safety
/// The C `valloc` contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn valloc(size: usize) -> *mut c_void {
    count(&C_ALLOCS);
    // SAFETY: forwarding the caller's arguments unchanged.
    unsafe { __libc_memalign(4096, size) }
}

/// # Safety
/// The C `posix_memalign` contract: `out` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> i32 {
    count(&C_ALLOCS);
    if !align.is_power_of_two() || !align.is_multiple_of(std::mem::size_of::<usize>()) {
        return libc::EINVAL;
    }
    // SAFETY: forwarding the caller's arguments; `out` is the caller's to write.
    unsafe {
        let p = __libc_memalign(align, size);
        if p.is_null() && size != 0 {
            return libc::ENOMEM;
        }
        *out = p;
    }
    0
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Counts {
    rust: u64,
    c: u64,
}

impl Counts {
    fn now() -> Counts {
        Counts {
            rust: RUST_ALLOCS.load(Ordering::Relaxed),
            c: C_ALLOCS.load(Ordering::Relaxed),
        }
    }

    fn since(self, earlier: Counts) -> Counts {
        Counts {
            rust: self.rust - earlier.rust,
            c: self.c - earlier.c,
        }
    }

    fn total(self) -> u64 {
        self.rust + self.c
    }
}

const WARMUP: usize = 300;
const SHORT: usize = 200;
const LONG: usize = 400;
/// The writer is paced like a camera (`identity sleep-time`, up to ~3000 frames/s) and given
/// a deep ring, so the reader keeps up: a FULL ring is not the steady state measured here.
/// (Each full event is announced by a bus message and a signal by contract, and those
/// allocate; a writer outrunning its reader under `block` makes every frame a full event.)
const PACE_US: u32 = 300;
/// At most this many allocations per measured window (both pipelines, every thread) for
/// GLib's occasional bookkeeping; a per-frame allocation gives at least SHORT.
const SLACK: u64 = 8;
/// Measurements per mode before giving up (see the test).
const ATTEMPTS: usize = 3;

/// The counters must see Rust and C allocations, including GLib's, or the real test would
/// pass whatever happens.
fn sanity_check_counters() {
    let before = Counts::now();
    let boxed = std::hint::black_box(Box::new([7u8; 32]));
    drop(boxed);
    assert!(Counts::now().rust > before.rust, "Box::new was not counted");

    let before = Counts::now();
    // SAFETY: plain g_malloc/g_free pair.
    unsafe {
        let p = gst::glib::ffi::g_malloc(48);
        gst::glib::ffi::g_free(p);
    }
    assert!(
        Counts::now().c > before.c,
        "g_malloc was not counted: malloc interposition is not in effect"
    );

    // A per-frame allocation of the kind this test exists to catch: a buffer wrapping boxed
    // Rust data, and a GstStructure (GLib malloc).
    let before = Counts::now();
    for i in 0..100u8 {
        let buffer = gst::Buffer::from_slice(vec![i; 16]);
        let structure = gst::Structure::builder("probe")
            .field("i", i as u32)
            .build();
        std::hint::black_box((buffer, structure));
    }
    let d = Counts::now().since(before);
    assert!(d.rust >= 100, "Rust allocations per buffer not seen: {d:?}");
    assert!(d.c >= 100, "C allocations per structure not seen: {d:?}");
}

/// Runs writer and reader pipelines in this process and returns the allocations counted in
/// the SHORT-frame and the LONG-frame windows after the warm-up.
fn measure(test: &str, copy_mode: &str) -> (Counts, Counts) {
    let name = ShmName::new(test);
    let writer = gst::parse::launch(&format!(
        "videotestsrc num-buffers=1 ! video/x-raw,format=RGBA,width=160,height=120,\
         framerate=30/1 ! imagefreeze num-buffers=1000000 ! identity drop-allocation=true \
         sleep-time={PACE_US} ! shmframesink shm-name={} depth=32 backpressure=block sync=false",
        name.as_str()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let reader = gst::parse::launch(&format!(
        "shmframesrc shm-name={} copy-mode={copy_mode} ! fakesink name=out sync=false",
        name.as_str()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();

    // Snapshots at the marks, taken inside the probe (atomics only: no allocation).
    static FRAMES: AtomicUsize = AtomicUsize::new(0);
    static SNAPSHOTS: [[AtomicU64; 2]; 3] = [
        [AtomicU64::new(0), AtomicU64::new(0)],
        [AtomicU64::new(0), AtomicU64::new(0)],
        [AtomicU64::new(0), AtomicU64::new(0)],
    ];
    FRAMES.store(0, Ordering::SeqCst);
    let trace = std::env::var_os("SHMFRAME_ALLOC_TRACE").is_some();
    if trace {
        // The first backtrace() loads libgcc's unwinder (allocating): do it outside the window.
        let mut frames = [std::ptr::null_mut(); TRACE_DEPTH];
        // SAFETY: a valid buffer of TRACE_DEPTH pointers.
        unsafe { libc::backtrace(frames.as_mut_ptr(), TRACE_DEPTH as i32) };
        TRACE_NEXT.store(0, Ordering::SeqCst);
    }
    let marks = [WARMUP, WARMUP + SHORT, WARMUP + SHORT + LONG];
    reader
        .by_name("out")
        .unwrap()
        .static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            let n = FRAMES.fetch_add(1, Ordering::SeqCst) + 1;
            if let Some(i) = marks.iter().position(|&m| m == n) {
                let now = Counts::now();
                SNAPSHOTS[i][0].store(now.rust, Ordering::SeqCst);
                SNAPSHOTS[i][1].store(now.c, Ordering::SeqCst);
                TRACING.store(trace && i + 1 < marks.len(), Ordering::SeqCst);
            }
            gst::PadProbeReturn::Ok
        });

    reader.set_state(gst::State::Playing).unwrap();
    writer.set_state(gst::State::Playing).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while FRAMES.load(Ordering::SeqCst) < marks[2] {
        assert!(
            Instant::now() < deadline,
            "{copy_mode}: only {} frames arrived",
            FRAMES.load(Ordering::SeqCst)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for (p, what) in [(&writer, "writer"), (&reader, "reader")] {
        if let Some(msg) = p
            .bus()
            .unwrap()
            .pop_filtered(&[gst::MessageType::Error, gst::MessageType::Warning])
        {
            panic!("{copy_mode}: {what} reported {msg:?}");
        }
    }
    TRACING.store(false, Ordering::SeqCst);
    writer.set_state(gst::State::Null).unwrap();
    reader.set_state(gst::State::Null).unwrap();
    if trace {
        eprintln!("=== allocations in the measured windows, copy-mode={copy_mode}");
        print_traces();
    }

    let snap = |i: usize| Counts {
        rust: SNAPSHOTS[i][0].load(Ordering::SeqCst),
        c: SNAPSHOTS[i][1].load(Ordering::SeqCst),
    };
    (snap(1).since(snap(0)), snap(2).since(snap(1)))
}

#[test]
fn steady_state_allocates_nothing_per_frame() {
    // One test function: the counters are process-wide, so nothing else may run meanwhile.
    init();
    sanity_check_counters();
    let mut failures = Vec::new();
    for copy_mode in ["copy", "zero-copy"] {
        // A reader descheduled for longer than the ring's depth lets the ring fill, and a full
        // event is announced (allocating) by contract: on a busy machine that can spoil one
        // window, so a mode gets ATTEMPTS tries. An allocation per frame fails every one.
        let mut seen = Vec::new();
        let mut clean = false;
        for attempt in 0..ATTEMPTS {
            let (short, long) = measure(&format!("alloc-{copy_mode}-{attempt}"), copy_mode);
            println!(
                "sink copy path + shmframesrc copy-mode={copy_mode}: {SHORT} frames: {} Rust + \
                 {} C allocations; {LONG} frames: {} Rust + {} C",
                short.rust, short.c, long.rust, long.c
            );
            seen.push(format!(
                "{SHORT} frames: {} ({} Rust, {} C), {LONG} frames: {} ({} Rust, {} C)",
                short.total(),
                short.rust,
                short.c,
                long.total(),
                long.rust,
                long.c
            ));
            if short.total() <= SLACK && long.total() <= SLACK {
                clean = true;
                break;
            }
        }
        if !clean {
            failures.push(format!("copy-mode={copy_mode}: {seen:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "per-frame allocations in the steady state: {failures:?}"
    );
}

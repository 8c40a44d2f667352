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
//! What is measured: in this one process, a writer pipeline (`videotestsrc !
//! identity drop-allocation=true ! shmframesink`: the sink's copy path, as with a camera) and a
//! reader pipeline (`shmframesrc ! fakesink`), in the scenarios of `SCENARIOS`:
//! * room in the ring (the writer paced like a camera, a deep ring), the reader in
//!   `copy-mode=copy` and in `copy-mode=zero-copy`, and upstream drawing into the sink's pool
//!   (no `drop-allocation`; each frame published in place): counted in frames the reader
//!   receives;
//! * a full ring on nearly every frame (an unpaced writer, a reader taking 1 ms per frame)
//!   under `block`, `drop-oldest` and `drop-newest`: counted in frames entering the sink.
//!
//! A pad probe snapshots both counters (and the `shmframe-backpressure` messages posted so far)
//! at the window marks after a warm-up. The assertion per window: at most `SLACK` allocations
//! (both pipelines, all threads) plus `PER_ANNOUNCEMENT` per backpressure announcement, and no
//! more announcements than the rate limit (one per 100 ms) allows. One allocation per frame
//! anywhere would give as many as the window has frames (200 to 40,000) and fail. A scenario
//! gets three tries, because a reader descheduled for longer than a roomy ring's depth lets it
//! fill. Measured when written: 0 allocations in every window with room in the ring, both
//! copy modes; under a full ring 4 allocations per announcement (structure, message, signal
//! arguments) and none per frame. Before the rate limit, each full frame allocated 4 times;
//! before the zero-copy wrappers were recycled, each zero-copy frame allocated 2 in the reader
//! (its `GstBuffer` and `GstMemory`) and each frame drawn into the sink's pool 1 (the
//! `GstMemory` over the lent slot).
//!
//! The test runs itself again in a child process with `G_SLICE=always-malloc`: GLib 2.74
//! serves `GstBuffer`/`GstMemory` structs from `g_slice` magazines, which recycle them per
//! thread without malloc, so a wrapper allocated per frame would go unseen; GLib >= 2.76 turns
//! `g_slice` into plain malloc, as this setting does. `sanity_check_counters` checks that a
//! `g_slice_alloc` is counted. Frames come from videotestsrc's own buffer pool: imagefreeze
//! would allocate a `GstBuffer` per push upstream of the sink, which is not the sink's doing.
//!
//! To look at allocations with other tools (not needed by the test):
//!   heaptrack target/debug/deps/allocations-<hash> --exact steady_state_allocates_nothing_per_frame
//!   heaptrack_print heaptrack.allocations-*.zst | less      # "MOST CALLS TO ALLOCATION FUNCTIONS"
//! or `valgrind --tool=massif` / `--tool=memcheck --trace-malloc=yes` (GLib switches `g_slice`
//! to malloc under valgrind, as this test does).

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

/// Frames counted before the first window.
const WARMUP: usize = 300;
/// Nothing is counted before the reader has received this many frames: its start (caps, its
/// buffer pool) allocates once.
const READER_WARMUP: usize = 50;
/// At most this many allocations per measured window (both pipelines, every thread) for
/// GLib's occasional bookkeeping; a per-frame allocation gives at least as many as the window
/// has frames.
const SLACK: u64 = 8;
/// What one `backpressure` announcement (bus message and signal) may allocate: the
/// structure and its fields, the message, the signal's argument values. Measured: see the
/// test's output (`per announcement`).
const PER_ANNOUNCEMENT: u64 = 8;
/// Measurements per scenario before giving up (see the test).
const ATTEMPTS: usize = 3;

/// Where a scenario counts frames for its windows.
#[derive(Clone, Copy, PartialEq)]
enum CountAt {
    /// Frames the reader's fakesink receives.
    Reader,
    /// Frames entering the sink (under drop-newest, also the ones it drops).
    Writer,
}

/// A writer pipeline (`videotestsrc ! identity drop-allocation=true ! shmframesink`: the sink's
/// copy path, as with a camera, whose buffers come from its own pool; imagefreeze would
/// allocate a GstBuffer per push itself) and a reader pipeline (`shmframesrc ! fakesink`) run
/// in this process.
struct Scenario {
    label: &'static str,
    /// Upstream draws into the sink's pool (slots of the segment) instead of its own buffers.
    into_sink_pool: bool,
    /// shmframesink properties.
    sink: &'static str,
    /// `identity sleep-time` before the sink, in µs (0: unpaced).
    pace_us: u32,
    copy_mode: &'static str,
    /// `identity sleep-time` in the reader, in µs (0: the reader reads as fast as it can).
    reader_sleep_us: u32,
    count_at: CountAt,
    /// Frames per measured window (two windows follow the warm-up).
    windows: [usize; 2],
}

/// The steady state: the writer paced like a camera (up to ~3000 frames/s) with a deep ring,
/// so the reader keeps up and the ring never fills.
const ROOM_IN_THE_RING: Scenario = Scenario {
    label: "room in the ring, shmframesrc copy-mode=copy",
    into_sink_pool: false,
    sink: "depth=32 backpressure=block",
    pace_us: 300,
    copy_mode: "copy",
    reader_sleep_us: 0,
    count_at: CountAt::Reader,
    windows: [200, 400],
};

/// A full ring on (nearly) every frame: an unpaced writer and a reader that takes 1 ms per
/// frame. Every write waits, overwrites or drops.
const FULL_RING: Scenario = Scenario {
    label: "full ring, backpressure=block",
    into_sink_pool: false,
    sink: "depth=4 backpressure=block",
    pace_us: 0,
    copy_mode: "copy",
    reader_sleep_us: 1000,
    count_at: CountAt::Writer,
    windows: [600, 1200],
};

const SCENARIOS: &[Scenario] = &[
    ROOM_IN_THE_RING,
    Scenario {
        label: "room in the ring, shmframesrc copy-mode=zero-copy",
        copy_mode: "zero-copy",
        ..ROOM_IN_THE_RING
    },
    // Upstream draws into the sink's pool: each frame is a slot lent and published in place.
    Scenario {
        label: "room in the ring, upstream draws into the sink's pool, copy-mode=zero-copy",
        into_sink_pool: true,
        copy_mode: "zero-copy",
        ..ROOM_IN_THE_RING
    },
    FULL_RING,
    Scenario {
        label: "full ring, backpressure=drop-oldest",
        sink: "depth=4 backpressure=drop-oldest",
        windows: [20_000, 40_000],
        ..FULL_RING
    },
    Scenario {
        label: "full ring, backpressure=drop-newest",
        sink: "depth=4 backpressure=drop-newest",
        windows: [20_000, 40_000],
        ..FULL_RING
    },
];

/// The counters must see Rust and C allocations, including GLib's and its slice allocator's,
/// or the real test would pass whatever happens.
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

    let before = Counts::now();
    // SAFETY: plain g_slice_alloc/g_slice_free1 pair of the same size.
    unsafe {
        let p = gst::glib::ffi::g_slice_alloc(48);
        gst::glib::ffi::g_slice_free1(48, p);
    }
    assert!(
        Counts::now().c > before.c,
        "g_slice_alloc was not counted: G_SLICE=always-malloc is not in effect (it must be set \
         before GLib's first slice allocation)"
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

/// What one window measured.
#[derive(Clone, Copy, Debug)]
struct Window {
    frames: usize,
    allocations: Counts,
    /// `shmframe-backpressure` messages posted in the window.
    announcements: u64,
    duration: Duration,
}

impl Window {
    /// The allocations this window may make: GLib's slack, and what its announcements cost.
    fn bound(&self) -> u64 {
        SLACK + self.announcements * PER_ANNOUNCEMENT
    }

    /// The most announcements the rate limit (one per 100 ms) allows in this window.
    fn announcements_allowed(&self) -> u64 {
        // One more than the spacing allows, for the skew between the clock reads of the rate
        // limit and those of the window marks.
        self.duration.as_millis() as u64 / 100 + 2
    }

    fn clean(&self) -> bool {
        self.allocations.total() <= self.bound()
            && self.announcements <= self.announcements_allowed()
    }

    fn describe(&self) -> String {
        format!(
            "{} frames in {} ms: {} allocations ({} Rust, {} C), {} backpressure announcements \
             (allowed: {} allocations, {} announcements)",
            self.frames,
            self.duration.as_millis(),
            self.allocations.total(),
            self.allocations.rust,
            self.allocations.c,
            self.announcements,
            self.bound(),
            self.announcements_allowed()
        )
    }
}

/// Runs a scenario's pipelines and returns what its two windows after the warm-up measured.
fn measure(scenario: &Scenario, name: &str) -> [Window; 2] {
    let name = ShmName::new(name);
    let pace = match scenario.pace_us {
        0 => String::new(),
        us => format!("sleep-time={us}"),
    };
    let writer = gst::parse::launch(&format!(
        "videotestsrc pattern=black num-buffers=1000000 ! video/x-raw,format=RGBA,width=160,\
         height=120,framerate=30/1 ! identity drop-allocation={} {pace} ! shmframesink name=sink shm-name={} {} sync=false",
        !scenario.into_sink_pool,
        name.as_str(),
        scenario.sink
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let throttle = match scenario.reader_sleep_us {
        0 => String::new(),
        us => format!("! identity sleep-time={us} "),
    };
    let reader = gst::parse::launch(&format!(
        "shmframesrc shm-name={} copy-mode={} {throttle}! fakesink name=out sync=false",
        name.as_str(),
        scenario.copy_mode
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();

    // Backpressure announcements, counted as they are posted (and dropped: nobody pops this
    // bus, and a growing queue would allocate).
    static ANNOUNCEMENTS: AtomicU64 = AtomicU64::new(0);
    ANNOUNCEMENTS.store(0, Ordering::SeqCst);
    writer.bus().unwrap().set_sync_handler(|_, msg| {
        if msg
            .structure()
            .is_some_and(|s| s.name() == "shmframe-backpressure")
        {
            ANNOUNCEMENTS.fetch_add(1, Ordering::SeqCst);
            return gst::BusSyncReply::Drop;
        }
        gst::BusSyncReply::Pass
    });

    // Snapshots at the marks, taken inside the probe (atomics only: no allocation).
    static FRAMES: AtomicUsize = AtomicUsize::new(0);
    static READ: AtomicUsize = AtomicUsize::new(0);
    READ.store(0, Ordering::SeqCst);
    static SNAPSHOTS: [[AtomicU64; 4]; 3] = [const { [const { AtomicU64::new(0) }; 4] }; 3];
    FRAMES.store(0, Ordering::SeqCst);
    let trace = std::env::var_os("SHMFRAME_ALLOC_TRACE").is_some();
    if trace {
        // The first backtrace() loads libgcc's unwinder (allocating): do it outside the window.
        let mut frames = [std::ptr::null_mut(); TRACE_DEPTH];
        // SAFETY: a valid buffer of TRACE_DEPTH pointers.
        unsafe { libc::backtrace(frames.as_mut_ptr(), TRACE_DEPTH as i32) };
        TRACE_NEXT.store(0, Ordering::SeqCst);
    }
    let [short, long] = scenario.windows;
    let marks = [WARMUP, WARMUP + short, WARMUP + short + long];
    let counted_pad = match scenario.count_at {
        CountAt::Reader => reader.by_name("out").unwrap().static_pad("sink"),
        CountAt::Writer => writer.by_name("sink").unwrap().static_pad("sink"),
    }
    .unwrap();
    let epoch = Instant::now();
    reader
        .by_name("out")
        .unwrap()
        .static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, |_, _| {
            READ.fetch_add(1, Ordering::SeqCst);
            gst::PadProbeReturn::Ok
        });
    counted_pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
        if READ.load(Ordering::SeqCst) < READER_WARMUP {
            return gst::PadProbeReturn::Ok;
        }
        let n = FRAMES.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(i) = marks.iter().position(|&m| m == n) {
            let now = Counts::now();
            SNAPSHOTS[i][0].store(now.rust, Ordering::SeqCst);
            SNAPSHOTS[i][1].store(now.c, Ordering::SeqCst);
            SNAPSHOTS[i][2].store(ANNOUNCEMENTS.load(Ordering::SeqCst), Ordering::SeqCst);
            SNAPSHOTS[i][3].store(epoch.elapsed().as_nanos() as u64, Ordering::SeqCst);
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
            "{}: only {} frames arrived",
            scenario.label,
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
            panic!("{}: {what} reported {msg:?}", scenario.label);
        }
    }
    TRACING.store(false, Ordering::SeqCst);
    writer.set_state(gst::State::Null).unwrap();
    reader.set_state(gst::State::Null).unwrap();
    if trace {
        eprintln!(
            "=== allocations in the measured windows, {}",
            scenario.label
        );
        print_traces();
    }

    let snap = |i: usize| (0..4).map(move |k| SNAPSHOTS[i][k].load(Ordering::SeqCst));
    let window = |from: usize, to: usize, frames: usize| {
        let (a, b): (Vec<u64>, Vec<u64>) = (snap(from).collect(), snap(to).collect());
        Window {
            frames,
            allocations: Counts {
                rust: b[0],
                c: b[1],
            }
            .since(Counts {
                rust: a[0],
                c: a[1],
            }),
            announcements: b[2] - a[2],
            duration: Duration::from_nanos(b[3] - a[3]),
        }
    };
    [window(0, 1, short), window(1, 2, long)]
}

const TEST_NAME: &str = "steady_state_allocates_nothing_per_frame";

#[test]
fn steady_state_allocates_nothing_per_frame() {
    // One test function: the counters are process-wide, so nothing else may run meanwhile.
    //
    // GLib 2.74 serves GstBuffer/GstMemory structs from g_slice magazines, which recycle them
    // per thread without malloc; GLib >= 2.76 turns g_slice into plain malloc. With
    // G_SLICE=always-malloc, which GLib reads when it is loaded, slices are mallocs here too,
    // so the test counts what a current GLib would allocate: this test runs itself again in a
    // child process with it set.
    if std::env::var("G_SLICE").as_deref() != Ok("always-malloc") {
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
            .env("G_SLICE", "always-malloc")
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("run this test again with G_SLICE=always-malloc");
        common::ChildGuard {
            child,
            label: format!("{TEST_NAME} with G_SLICE=always-malloc"),
        }
        .wait_ok(Duration::from_secs(600));
        return;
    }
    init();
    sanity_check_counters();
    let mut failures = Vec::new();
    for (i, scenario) in SCENARIOS.iter().enumerate() {
        // A reader descheduled for longer than the ring's depth lets a roomy ring fill, and
        // full events are announced (allocating, at most once per 100 ms): on a busy machine
        // that can spoil one window, so a scenario gets ATTEMPTS tries. An allocation per
        // frame fails every one.
        let mut seen = Vec::new();
        let mut clean = false;
        for attempt in 0..ATTEMPTS {
            let windows = measure(scenario, &format!("alloc-{i}-{attempt}"));
            for w in &windows {
                println!("{}: {}", scenario.label, w.describe());
                if w.announcements > 0 {
                    println!(
                        "  per announcement: {:.1} allocations",
                        w.allocations.total() as f64 / w.announcements as f64
                    );
                }
            }
            seen.extend(windows.iter().map(Window::describe));
            if windows.iter().all(Window::clean) {
                clean = true;
                break;
            }
        }
        if !clean {
            failures.push(format!("{}: {seen:?}", scenario.label));
        }
    }
    assert!(
        failures.is_empty(),
        "per-frame allocations in the steady state: {failures:#?}"
    );
}

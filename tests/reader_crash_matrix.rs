//! The reader-side crash matrix through the elements, with real processes: for each layout and
//! policy, a writer pipeline (`appsrc ! shmframesink`) runs while one `shmframesrc` reader is
//! SIGKILLed and another SIGSTOPped. The surviving reader checks every frame it gets (its
//! number and content) and keeps receiving; the writer is never held up much beyond
//! `reader-timeout`; a restarted reader gets checked frames; the writer then crashes and a
//! new writer process on the same name is followed by the running readers. Nothing is left
//! in /dev/shm at the end.
//!
//! Children are the child binary running a role of this file's `child_entry`, with the plugin
//! registered statically, so they always run the code under test.

mod common;

use common::{
    ChildGuard, ShmName, check_frame, fill_frame, init, launch_with, num, role, role_args,
    spawn_role, summary,
};
use gst::prelude::*;
use gstshmframe::transport::Observer;
use std::collections::HashMap;
use std::time::{Duration, Instant};

const CHILD_LIMIT: Duration = Duration::from_secs(60);
/// Frame contents of the second writer start here, so a reader's indices stay increasing
/// across the writer restart and tell the two writers apart.
const SECOND_WRITER_BASE: u64 = 1_000_000;
const READER_TIMEOUT_MS: u64 = 300;
const FIRST_WRITER_FRAMES: u64 = 700;
const SECOND_WRITER_FRAMES: u64 = 150;

/// Entry point of child processes: the child binary (tests/child/main.rs) runs it in the role
/// `spawn_role` names.
#[allow(dead_code)] // called by the child binary, not by this file's tests
pub fn child_entry() {
    let Some((role, args)) = role() else { return };
    init();
    let args = role_args(&args);
    let code = match role.as_str() {
        "writer" => run_writer(&args),
        "reader" => run_reader(&args),
        other => panic!("unknown role {other}"),
    };
    std::process::exit(code);
}

/// writer name= frames= base= pace_ms= props= readers= end=eos|crash. Pushes 32x32 RGBA
/// frames whose bytes encode `base + i` (see `fill_frame`); waits for `readers` readers after
/// the first frame. Reports the longest time one push took (the writer held up by readers).
/// `end=crash` SIGKILLs itself after the summary instead of sending EOS.
fn run_writer(a: &HashMap<String, String>) -> i32 {
    let frames: u64 = a["frames"].parse().unwrap();
    let base: u64 = a["base"].parse().unwrap();
    let pace = Duration::from_millis(a["pace_ms"].parse().unwrap());
    let readers: u32 = a["readers"].parse().unwrap();
    let (pipeline, src) = launch_with::<gst_app::AppSrc>(
        &format!(
            "appsrc name=src format=time block=true max-buffers=1 ! \
         shmframesink name=sink shm-name={} sync=false {}",
            a["name"], a["props"]
        ),
        "src",
    );
    let sink = pipeline.by_name("sink").unwrap();
    let stat = |field: &str| {
        sink.property::<gst::Structure>("stats")
            .get::<u64>(field)
            .unwrap()
    };
    src.set_caps(Some(
        &gst_video::VideoCapsBuilder::new()
            .format(gst_video::VideoFormat::Rgba)
            .width(32)
            .height(32)
            .framerate(gst::Fraction::new(30, 1))
            .build(),
    ));
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut longest_push = Duration::ZERO;
    for i in 0..frames {
        let mut buf = gst::Buffer::with_size(32 * 32 * 4).unwrap();
        {
            let b = buf.get_mut().unwrap();
            b.set_pts(gst::ClockTime::from_mseconds(33 * i));
            fill_frame(base + i, &mut b.map_writable().unwrap());
        }
        let pushed = Instant::now();
        src.push_buffer(buf).unwrap();
        longest_push = longest_push.max(pushed.elapsed());
        if i == 0 {
            let attached = common::wait_for(Duration::from_secs(30), || {
                sink.property::<gst::Structure>("stats")
                    .get::<u32>("readers")
                    .unwrap()
                    >= readers
            });
            assert!(attached, "readers did not attach");
        }
        std::thread::sleep(pace);
    }
    let all_handled = common::wait_for(Duration::from_secs(30), || {
        stat("frames-written") + stat("frames-dropped") == frames
    });
    assert!(all_handled, "the sink took every frame");
    println!(
        "SUMMARY written={} dropped={} longest_push_ms={} last_published={}",
        stat("frames-written"),
        stat("frames-dropped"),
        longest_push.as_millis(),
        newest_frame_content(&a["name"]),
    );
    if a["end"] == "crash" {
        // SAFETY: raise(2) with a valid signal; the process ends here, as if it crashed.
        unsafe { libc::raise(libc::SIGKILL) };
    }
    src.end_of_stream().unwrap();
    common::wait_for_eos(&pipeline, "writer pipeline", Duration::from_secs(30));
    pipeline.set_state(gst::State::Null).unwrap();
    0
}

/// The index that the newest frame of segment `name` holds: the last frame a reader can get
/// (the drop policies, and zero-copy readers' pins filling every slot, may drop the last
/// frames pushed).
fn newest_frame_content(name: &str) -> u64 {
    let observer = Observer::open(name).expect("the writer's segment");
    let head = observer.info().head;
    let mut first_word = [0u8; 8];
    observer
        .read_frame(head - 1, |_, view| {
            let mut frame = vec![0u8; view.len()];
            view.copy_to(&mut frame);
            first_word.copy_from_slice(&frame[..8]);
        })
        .unwrap()
        .expect("the newest frame is held");
    u64::from_le_bytes(first_word) / 0x1_0000_0001
}

/// reader name= props= limit_s=. Reads until EOS (for at most `limit_s` seconds), checking every
/// frame's content against the index its first word encodes, and reports the frames of each
/// writer and the writer changes.
fn run_reader(a: &HashMap<String, String>) -> i32 {
    let (pipeline, out) = launch_with::<gst_app::AppSink>(
        &format!(
            "shmframesrc name=src shm-name={} {} ! appsink name=out sync=false max-buffers=1",
            a["name"], a["props"]
        ),
        "out",
    );
    pipeline.set_state(gst::State::Playing).unwrap();
    let limit = Duration::from_secs(a["limit_s"].parse().unwrap());
    let started = Instant::now();
    let mut indices: Vec<u64> = Vec::new();
    let mut torn = 0;
    loop {
        assert!(started.elapsed() < limit, "reader ran too long");
        let Some(sample) = out.try_pull_sample(gst::ClockTime::from_mseconds(100)) else {
            if out.is_eos() {
                break;
            }
            continue;
        };
        let map = sample.buffer().unwrap().map_readable().unwrap();
        let index = u64::from_le_bytes(map[..8].try_into().unwrap()) / 0x1_0000_0001;
        if let Err(why) = check_frame(index, &map) {
            eprintln!("torn frame: {why}");
            torn += 1;
        }
        indices.push(index);
    }
    let (first, second): (Vec<u64>, Vec<u64>) =
        indices.iter().partition(|&&i| i < SECOND_WRITER_BASE);
    let bus = pipeline.bus().unwrap();
    let (mut attached, mut lost) = (0, 0);
    while let Some(msg) = bus.pop() {
        match msg.view() {
            gst::MessageView::Element(e) => match e.structure().map(|s| s.name().as_str()) {
                Some("shmframe-writer-attached") => attached += 1,
                Some("shmframe-writer-lost") => lost += 1,
                _ => {}
            },
            gst::MessageView::Error(e) => panic!("reader error: {} ({:?})", e.error(), e.debug()),
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    let last = |v: &[u64]| v.last().copied().map_or(-1, |i| i as i64);
    println!(
        "SUMMARY torn={torn} ordered={} first_frames={} first_last={} second_frames={} \
         second_first={} second_last={} attached={attached} lost={lost}",
        indices.windows(2).all(|p| p[0] < p[1]),
        first.len(),
        last(&first),
        second.len(),
        second.first().copied().map_or(-1, |i| i as i64),
        last(&second),
    );
    0
}

fn reader(name: &str, props: &str) -> ChildGuard {
    reader_for(name, props, CHILD_LIMIT)
}

/// A reader that reads for at most `limit`.
fn reader_for(name: &str, props: &str, limit: Duration) -> ChildGuard {
    spawn_role(
        "reader",
        &[
            &format!("name={name}"),
            &format!("props={props}"),
            &format!("limit_s={}", limit.as_secs()),
        ],
    )
}

fn writer(name: &str, frames: u64, base: u64, props: &str, readers: u32, end: &str) -> ChildGuard {
    spawn_role(
        "writer",
        &[
            &format!("name={name}"),
            &format!("frames={frames}"),
            &format!("base={base}"),
            "pace_ms=2",
            &format!("props={props} reader-timeout={READER_TIMEOUT_MS}"),
            &format!("readers={readers}"),
            &format!("end={end}"),
        ],
    )
}

/// The stdout of a child that ended by a signal (wait_ok expects success).
fn output_of_killed(child: &mut ChildGuard) -> String {
    let status = child
        .wait_timeout(CHILD_LIMIT)
        .unwrap_or_else(|| panic!("{} did not finish", child.label));
    let mut out = String::new();
    use std::io::Read;
    child
        .child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(
        !status.success(),
        "{} was to crash: {status}\n{out}",
        child.label
    );
    out
}

fn head_of(name: &str) -> u64 {
    gstshmframe::transport::inspect(name).map_or(0, |i| i.head)
}

fn reader_faults_case(layout: &str, props: &str) {
    let name = ShmName::new(&format!("rcm-{layout}"));
    let case = |what: &str| format!("{layout}: {what}");
    // Three readers from the start: `survivor` keeps running, `killed` is SIGKILLed and
    // `stopped` SIGSTOPped while the writer runs.
    let mut survivor = reader(&name, "start=oldest");
    let mut killed = reader(&name, "start=oldest");
    let stopped = reader(&name, "start=oldest");
    let mut first = writer(&name, FIRST_WRITER_FRAMES, 0, props, 3, "crash");
    assert!(
        common::wait_for(CHILD_LIMIT, || head_of(&name) >= 150),
        "{}",
        case("the first writer did not get going")
    );
    killed.signal(libc::SIGKILL);
    stopped.signal(libc::SIGSTOP);
    let head_at_faults = head_of(&name);
    let _ = killed.wait_timeout(Duration::from_secs(10));
    // The restarted reader joins the running stream at its newest frame.
    let mut restarted = reader(&name, "");

    let w1 = summary(&output_of_killed(&mut first));
    eprintln!("{layout}: first writer {w1:?}, faults at frame {head_at_faults}");
    let written1 = num(&w1, "written");
    assert_eq!(
        written1 + num(&w1, "dropped"),
        FIRST_WRITER_FRAMES,
        "{}",
        case(&format!(
            "every frame written or counted as dropped: {w1:?}"
        ))
    );
    assert!(
        num(&w1, "longest_push_ms") < READER_TIMEOUT_MS + 2_000,
        "{}",
        case(&format!(
            "the writer was held up beyond reader-timeout ({READER_TIMEOUT_MS} ms): {w1:?}"
        ))
    );

    let last_published = num(&w1, "last_published");
    eprintln!("{layout}: the first writer's last published frame holds {last_published}");
    assert!(
        last_published + 50 >= FIRST_WRITER_FRAMES,
        "{}",
        case(&format!(
            "the writer stopped publishing after the faults (at frame {head_at_faults}): its \
             last published frame holds {last_published} of 0..{FIRST_WRITER_FRAMES}"
        ))
    );

    // A new writer process on the same name (the first one crashed, leaving its segment).
    let mut second = writer(
        &name,
        SECOND_WRITER_FRAMES,
        SECOND_WRITER_BASE,
        props,
        2,
        "eos",
    );
    let w2 = summary(&second.wait_ok(CHILD_LIMIT));
    eprintln!("{layout}: second writer {w2:?}");

    for (who, child) in [("survivor", &mut survivor), ("restarted", &mut restarted)] {
        let s = summary(&child.wait_ok(CHILD_LIMIT));
        let what = |msg: &str| case(&format!("{who}: {msg}: {s:?}"));
        assert_eq!(num(&s, "torn"), 0, "{}", what("torn frames"));
        assert_eq!(s["ordered"], "true", "{}", what("frames out of order"));
        assert!(
            num(&s, "second_frames") > 0,
            "{}",
            what("follows the new writer")
        );
        assert_eq!(
            num(&s, "second_last"),
            num(&w2, "last_published"),
            "{}",
            what("reaches the new writer's last frame and EOS")
        );
        if layout == "block" {
            // Nothing is lost under block: every frame of the new writer arrives.
            assert_eq!(
                (num(&s, "second_first"), num(&s, "second_frames")),
                (SECOND_WRITER_BASE, SECOND_WRITER_FRAMES),
                "{}",
                what("frames lost under block")
            );
        }
        if who == "survivor" {
            // It kept receiving after the faults, up to the first writer's last frame.
            assert_eq!(
                num(&s, "first_last"),
                last_published,
                "{}",
                what(&format!(
                    "stopped receiving (faults at frame {head_at_faults})"
                ))
            );
            assert_eq!(
                (num(&s, "attached"), num(&s, "lost")),
                (2, 1),
                "{}",
                what("the crash and the new writer were reported")
            );
            if layout == "block" {
                assert_eq!(
                    num(&s, "first_frames"),
                    written1,
                    "{}",
                    what("frames lost under block")
                );
            }
        }
    }
    drop(stopped);
    assert!(
        !name.path().exists(),
        "{}",
        case("a segment is left behind")
    );
    let leftovers: Vec<_> = std::fs::read_dir(gstshmframe::transport::shm_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(name.as_str()))
        .map(|e| e.file_name())
        .collect();
    assert!(
        leftovers.is_empty(),
        "{}",
        case(&format!("left behind: {leftovers:?}"))
    );
}

/// The layouts and policies every case runs in: a name and the `shmframesink` properties.
const LAYOUTS: [(&str, &str); 4] = [
    ("double", "layout=double"),
    ("block", "layout=ring depth=4 backpressure=block"),
    (
        "drop-oldest",
        "layout=ring depth=4 backpressure=drop-oldest",
    ),
    (
        "drop-newest",
        "layout=ring depth=4 backpressure=drop-newest",
    ),
];

/// The `shmframesink` properties of the layout named `layout` in [`LAYOUTS`].
fn layout_props(layout: &str) -> &'static str {
    LAYOUTS
        .iter()
        .find(|(name, _)| *name == layout)
        .map(|(_, props)| *props)
        .unwrap_or_else(|| panic!("no layout {layout}"))
}

/// Killed and stopped readers harm no other process, in each layout and policy (one test each,
/// so that they run side by side).
fn reader_faults(layout: &str) {
    reader_faults_case(layout, layout_props(layout));
}

#[test]
fn killed_and_stopped_readers_harm_no_other_process_double() {
    reader_faults("double");
}

#[test]
fn killed_and_stopped_readers_harm_no_other_process_block() {
    reader_faults("block");
}

#[test]
fn killed_and_stopped_readers_harm_no_other_process_drop_oldest() {
    reader_faults("drop-oldest");
}

#[test]
fn killed_and_stopped_readers_harm_no_other_process_drop_newest() {
    reader_faults("drop-newest");
}

/// Regression test for the drop-newest case of the matrix: a reader that stops reading made a
/// drop-newest writer drop every later frame for every reader, for ever. It is now evicted
/// after the reader timeout, as under block, and the others receive frames again.
#[test]
fn a_stalled_reader_cannot_make_a_drop_newest_writer_drop_everything_for_ever() {
    use gstshmframe::transport::{
        Backpressure, FrameMeta, ReadResult, Reader, ReaderOptions, Writer, WriterConfig,
    };
    let name = ShmName::new("rcm-drop-newest-stall");
    let mut config = WriterConfig::new(&name, 64);
    config.depth = 4;
    config.backpressure = Backpressure::DropNewest;
    config.reader_timeout = Duration::from_millis(50);
    let mut writer = Writer::create(&config).unwrap();
    let stalled = Reader::open(&name, &ReaderOptions::default()).unwrap();
    let mut active = Reader::open(&name, &ReaderOptions::default()).unwrap();
    let write = |w: &mut Writer, n: u64| {
        let mut data = [0u8; 64];
        fill_frame(n, &mut data);
        w.write(&FrameMeta::default(), &data).unwrap()
    };
    let mut buf = [0u8; 64];
    let mut read = |r: &mut Reader| match r
        .read_next(Duration::ZERO, |_, v| v.copy_to(&mut buf))
        .unwrap()
    {
        ReadResult::Frame(_) => {
            let index = u64::from_le_bytes(buf[..8].try_into().unwrap()) / 0x1_0000_0001;
            check_frame(index, &buf).unwrap();
            Some(index)
        }
        _ => None,
    };
    // The ring fills up behind the stalled reader: the next frames are dropped.
    let mut pushed = 0;
    for _ in 0..8 {
        write(&mut writer, pushed);
        pushed += 1;
        while read(&mut active).is_some() {}
    }
    assert!(
        writer.frames_dropped() > 0,
        "the ring filled behind the stalled reader"
    );
    // Past the reader timeout, the stalled reader is evicted and frames flow again.
    std::thread::sleep(Duration::from_millis(120));
    let dropped = writer.frames_dropped();
    let mut received = Vec::new();
    for _ in 0..4 {
        write(&mut writer, pushed);
        pushed += 1;
        while let Some(index) = read(&mut active) {
            received.push(index);
        }
    }
    assert_eq!(
        writer.frames_dropped(),
        dropped,
        "no frame dropped after the eviction"
    );
    assert_eq!(received, (pushed - 4..pushed).collect::<Vec<_>>());
    drop(stalled);
}

/// Readers killed in a row per case: 10 in CI (each kill's entry is checked freed before the
/// next reader starts, so a leak shows at the first kill; the 8 cases kill 80),
/// `SHMFRAME_CHURN_ITERATIONS=200` for the full run (more than the table's 64 entries: the
/// table must never fill with dead readers).
fn churn_iterations() -> u64 {
    std::env::var("SHMFRAME_CHURN_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

/// How long a killed reader's entry may stay in the table: one housekeeping period (100 ms) is
/// the goal; the bound leaves room for a loaded machine.
const RECLAIM_LIMIT: Duration = Duration::from_secs(3);

/// The churn writer: pushes checked 32x32 RGBA frames into `appsrc ! shmframesink` from a
/// thread, copied from system memory or drawn from the sink's own slot pool, while `busy`.
struct Pusher {
    busy: std::sync::Arc<std::sync::atomic::AtomicBool>,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl Pusher {
    fn start(src: gst_app::AppSrc, pool: Option<gst::BufferPool>) -> Pusher {
        use std::sync::atomic::{AtomicBool, Ordering};
        let busy = std::sync::Arc::new(AtomicBool::new(true));
        let done = std::sync::Arc::new(AtomicBool::new(false));
        let (b, d) = (busy.clone(), done.clone());
        let thread = std::thread::spawn(move || {
            let mut n = 0;
            while !d.load(Ordering::SeqCst) {
                if b.load(Ordering::SeqCst) {
                    push_frame(&src, pool.as_ref(), n);
                    n += 1;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            n
        });
        Pusher { busy, done, thread }
    }

    fn set_busy(&self, busy: bool) {
        self.busy.store(busy, std::sync::atomic::Ordering::SeqCst);
    }

    /// Stops pushing; the number of frames pushed.
    fn finish(self) -> u64 {
        self.done.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

fn push_frame(src: &gst_app::AppSrc, pool: Option<&gst::BufferPool>, n: u64) {
    let mut buffer = match pool {
        Some(pool) => pool.acquire_buffer(None).unwrap(),
        None => gst::Buffer::with_size(32 * 32 * 4).unwrap(),
    };
    {
        let b = buffer.get_mut().unwrap();
        b.set_pts(gst::ClockTime::from_mseconds(33 * n));
        fill_frame(n, &mut b.map_writable().unwrap());
    }
    src.push_buffer(buffer).unwrap();
}

/// A reader of the Python package (`common::python`, through examples/python/interop_peer.py)
/// that attaches and reads nothing until it is killed.
fn python_reader(name: &str) -> ChildGuard {
    let peer = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/python/interop_peer.py"
    );
    let child = std::process::Command::new(common::python())
        .args([peer, "read", name, "--stall", "--timeout", "60"])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("the Python reader starts");
    ChildGuard {
        child,
        label: format!("python reader of {name}"),
    }
}

/// The slot pool `sink` proposes for `caps`, activated.
fn sink_pool(sink: &gst::Element, caps: &gst::Caps) -> gst::BufferPool {
    let mut query = gst::query::Allocation::new(Some(caps), true);
    assert!(sink.static_pad("sink").unwrap().query(&mut query));
    let (pool, ..) = query
        .allocation_pools()
        .next()
        .expect("the sink proposes a pool");
    let pool = pool.expect("a pool object");
    pool.set_active(true).unwrap();
    pool
}

/// Readers SIGKILLed one after another (`shmframesrc` processes, and every other pair Python
/// readers), alternately while the writer pushes frames and while it pushes none, on the copy
/// or the pool `path`: each killed reader's entry
/// is freed within `RECLAIM_LIMIT`, seen from outside the sink (an `Observer`: the sink's
/// `stats` would check the readers itself). Then a new reader attaches and, with the reader
/// that lived through it all, reads checked frames to the last; the sink's `readers` stat
/// counts exactly the live readers.
fn reader_churn_case(path: &str, layout: &str, props: &str) {
    let kills = churn_iterations();
    let name = ShmName::new(&format!("churn-{path}-{layout}"));
    let case = |what: &str| format!("{path} path, {layout}: {what}");
    let caps = gst_video::VideoCapsBuilder::new()
        .format(gst_video::VideoFormat::Rgba)
        .width(32)
        .height(32)
        .framerate(gst::Fraction::new(30, 1))
        .build();
    let (pipeline, src) = launch_with::<gst_app::AppSrc>(
        &format!(
            "appsrc name=src format=time block=true max-buffers=1 ! shmframesink name=sink \
             shm-name={} shape=32x32:RGBA sync=false reader-timeout={READER_TIMEOUT_MS} \
             {props}",
            name.as_str()
        ),
        "src",
    );
    src.set_caps(Some(&caps));
    let sink = pipeline.by_name("sink").unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let pool = (path == "pool").then(|| sink_pool(&sink, &caps));
    let observer = Observer::open(&name).expect("the sink made its segment at start");
    // It lives through every kill: a few seconds each at most on a loaded machine.
    let lifetime = CHILD_LIMIT + Duration::from_secs(2) * kills as u32;
    let mut lived = reader_for(&name, "start=oldest", lifetime);
    assert!(
        common::wait_for(CHILD_LIMIT, || observer.reader_count() == 1),
        "{}",
        case("the first reader did not attach")
    );
    let pusher = Pusher::start(src.clone(), pool);
    let mut longest = Duration::ZERO;
    for k in 0..kills {
        let busy = k % 2 == 0;
        pusher.set_busy(busy);
        let mut doomed = if k % 4 < 2 {
            reader(&name, "")
        } else {
            python_reader(&name)
        };
        assert!(
            common::wait_for(CHILD_LIMIT, || observer.reader_count() == 2),
            "{}",
            case(&format!("reader {k} did not attach"))
        );
        doomed.signal(libc::SIGKILL);
        assert!(doomed.wait_timeout(CHILD_LIMIT).is_some());
        let killed = Instant::now();
        let freed = common::wait_for(RECLAIM_LIMIT, || observer.reader_count() == 1);
        let writer = if busy { "busy" } else { "idle" };
        assert!(
            freed,
            "{}",
            case(&format!(
                "reader {k} of {kills} killed while the writer was {writer}: its entry was \
                 not freed within {RECLAIM_LIMIT:?}"
            ))
        );
        longest = longest.max(killed.elapsed());
    }
    pusher.set_busy(false);
    let mut fresh = reader(&name, "start=oldest");
    assert!(
        common::wait_for(CHILD_LIMIT, || observer.reader_count() == 2),
        "{}",
        case("a new reader did not attach after the kills")
    );
    pusher.set_busy(true);
    std::thread::sleep(Duration::from_millis(300));
    let pushed = pusher.finish();
    let stats = sink.property::<gst::Structure>("stats");
    assert_eq!(
        stats.get::<u32>("readers").unwrap(),
        2,
        "{}",
        case(&format!("the sink counts the live readers only: {stats}"))
    );
    if path == "pool" {
        assert!(
            stats.get::<u64>("frames-in-place").unwrap() > 0,
            "{}",
            case(&format!(
                "upstream drew frames into the sink's pool: {stats}"
            ))
        );
    }
    src.end_of_stream().unwrap();
    common::wait_for_eos(&pipeline, "churn writer", CHILD_LIMIT);
    // After EOS: appsrc may still have held the last frames pushed when the pusher stopped
    // (read before EOS, the newest frame was one short of what the readers got, twice).
    let last_published = newest_frame_content(&name);
    pipeline.set_state(gst::State::Null).unwrap();
    eprintln!(
        "{}",
        case(&format!(
            "{kills} readers killed, the longest took {longest:?} to be freed; {pushed} \
             frames pushed, the last published holds {last_published}"
        ))
    );
    for (who, child) in [("lived", &mut lived), ("fresh", &mut fresh)] {
        let s = summary(&child.wait_ok(lifetime));
        let what = |msg: &str| case(&format!("{who}: {msg}: {s:?}"));
        assert_eq!(num(&s, "torn"), 0, "{}", what("torn frames"));
        assert_eq!(s["ordered"], "true", "{}", what("frames out of order"));
        assert!(num(&s, "first_frames") > 0, "{}", what("no frame read"));
        assert_eq!(
            num(&s, "first_last"),
            last_published,
            "{}",
            what("reads up to the last frame")
        );
    }
}

/// Dead readers never lock new ones out: on the copy path and on the pool path (upstream
/// drawing into the sink's slots, where before the fix nothing freed a dead reader's entry, so
/// that from the 65th killed reader on every new one was refused), in every layout and policy,
/// with the writer busy and idle. One test per path and layout, so that they run side by side.
fn readers_killed_in_a_row_are_freed(path: &str, layout: &str) {
    // A quarter of the killed readers are Python ones.
    let test = format!("readers_killed_in_a_row_are_freed_{path}_{layout}");
    if !common::python_ready(&test) {
        return;
    }
    init();
    reader_churn_case(path, layout, layout_props(layout));
}

#[test]
fn readers_killed_in_a_row_are_freed_pool_double() {
    readers_killed_in_a_row_are_freed("pool", "double");
}

#[test]
fn readers_killed_in_a_row_are_freed_pool_block() {
    readers_killed_in_a_row_are_freed("pool", "block");
}

#[test]
fn readers_killed_in_a_row_are_freed_pool_drop_oldest() {
    readers_killed_in_a_row_are_freed("pool", "drop-oldest");
}

#[test]
fn readers_killed_in_a_row_are_freed_pool_drop_newest() {
    readers_killed_in_a_row_are_freed("pool", "drop-newest");
}

#[test]
fn readers_killed_in_a_row_are_freed_copy_double() {
    readers_killed_in_a_row_are_freed("copy", "double");
}

#[test]
fn readers_killed_in_a_row_are_freed_copy_block() {
    readers_killed_in_a_row_are_freed("copy", "block");
}

#[test]
fn readers_killed_in_a_row_are_freed_copy_drop_oldest() {
    readers_killed_in_a_row_are_freed("copy", "drop-oldest");
}

#[test]
fn readers_killed_in_a_row_are_freed_copy_drop_newest() {
    readers_killed_in_a_row_are_freed("copy", "drop-newest");
}

/// The smallest ring on the pool path: one frame and one spare slot under block, where the
/// sink's last sample, upstream's next buffer and the readers' pins share two slots (with one
/// spare slot no frame was drawn in place before 0a9f5cd, and under block every acquire waited
/// out the reader timeout).
#[test]
fn readers_killed_in_a_row_are_freed_pool_smallest_ring() {
    if !common::python_ready("readers_killed_in_a_row_are_freed_pool_smallest_ring") {
        return;
    }
    init();
    reader_churn_case(
        "pool",
        "smallest-ring",
        "backpressure=block depth=1 spare-slots=1",
    );
}

//! shmframe against GStreamer's shmsink/shmsrc, side by side, per ../shared/BENCH.md.
//!
//!     cargo run --release --example bench -- --quick     # about a minute
//!     cargo run --release --example bench                # the full matrix
//!     cargo run --release --example bench -- --csv out.csv
//!
//! Every process is this binary re-run in a role (writer or reader) with the plugin registered
//! statically, so what is measured is the code in this tree. Writers are gated until all their
//! readers are connected (shmframesink `stats.readers`, shmsink `client-connected`); readers
//! count frames in a fakesink handoff; fps = (frames - 1) / (last - first).

use gst::prelude::*;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ROLE_ENV: &str = "SHMFRAME_BENCH_ROLE";

#[derive(Clone, Copy, PartialEq)]
enum Contender {
    ShmFrame,
    ShmSink,
}

#[derive(Clone)]
struct Case {
    width: u32,
    height: u32,
    format: &'static str,
    frames: u64,
    readers: usize,
    /// Paced at 30 fps with latency stamps, instead of as fast as possible.
    latency: bool,
    /// Extra shmframesink properties.
    props: &'static str,
}

impl Case {
    fn frame_size(&self) -> u64 {
        let info = gst_video::VideoInfo::builder(
            gst_video::VideoFormat::from_string(self.format),
            self.width,
            self.height,
        )
        .build()
        .unwrap();
        info.size() as u64
    }

    fn caps(&self) -> String {
        let rate = if self.latency { "30/1" } else { "1000/1" };
        format!(
            "video/x-raw,format={},width={},height={},framerate={rate}",
            self.format, self.width, self.height
        )
    }
}

/// What one reader measured.
#[derive(Debug, Default, Clone)]
struct ReaderResult {
    frames: u64,
    fps: f64,
    latencies_ns: Vec<u64>,
}

fn main() {
    gst::init().unwrap();
    gstshmframe::plugin_register_static().unwrap();
    if let Ok(role) = std::env::var(ROLE_ENV) {
        let args: HashMap<String, String> = std::env::args()
            .skip(1)
            .filter_map(|a| a.split_once('=').map(|(k, v)| (k.into(), v.into())))
            .collect();
        match role.as_str() {
            "writer" => writer_role(&args),
            "reader" => reader_role(&args),
            _ => panic!("unknown role"),
        }
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let csv = args
        .iter()
        .position(|a| a == "--csv")
        .and_then(|i| args.get(i + 1).cloned());
    run_matrix(quick, csv);
}

fn run_matrix(quick: bool, csv: Option<String>) {
    let scale = |n: u64| if quick { n / 4 } else { n };
    let base = Case {
        width: 1920,
        height: 1080,
        format: "RGBA",
        frames: scale(1200),
        readers: 1,
        latency: false,
        props: "",
    };
    let command = format!(
        "cargo run --release --example bench{}",
        if quick { " -- --quick" } else { "" }
    );
    println!("# shmframe vs shmsink/shmsrc");
    println!();
    println!(
        "{} cores, {}, {}, command: `{command}`",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        gst::version_string(),
        if quick { "quick run" } else { "full run" }
    );
    println!();
    println!("| case | shmframe | shmsink | ratio |");
    println!("|---|---|---|---|");
    let mut rows: Vec<[String; 4]> = Vec::new();
    let mut emit = |row: [String; 4]| {
        println!("| {} | {} | {} | {} |", row[0], row[1], row[2], row[3]);
        rows.push(row);
    };

    // Throughput by frame size, one reader.
    for (w, h, f, n) in [
        (320, 240, "GRAY8", 20_000),
        (640, 480, "RGBA", 6000),
        (1920, 1080, "RGBA", 1200),
        (3840, 2160, "NV12", 400),
    ] {
        let case = Case {
            width: w,
            height: h,
            format: f,
            frames: scale(n),
            props: "backpressure=block",
            ..base.clone()
        };
        let ours = fps_of(&run(Contender::ShmFrame, &case, quick));
        let theirs = fps_of(&run_shmsink_best(&case, quick));
        let limit = memcpy_fps(case.frame_size());
        emit([
            format!("throughput {w}x{h} {f}, 1 reader (fps)"),
            format!("{ours:.0}"),
            format!("{theirs:.0}"),
            ratio(ours, theirs),
        ]);
        emit([
            format!("  memcpy limit {w}x{h} {f} (fps, one copy)"),
            format!("{limit:.0} ({:.0}% reached)", 100.0 * ours / limit),
            "-".into(),
            "-".into(),
        ]);
    }

    // Fan-out.
    for readers in [1usize, 3, 8] {
        let case = Case {
            readers,
            frames: scale(600),
            props: "backpressure=block",
            ..base.clone()
        };
        let ours = run(Contender::ShmFrame, &case, quick);
        let theirs = run_shmsink_best(&case, quick);
        let (per_o, agg_o) = (mean_fps(&ours), agg_fps(&ours));
        let (per_t, agg_t) = (mean_fps(&theirs), agg_fps(&theirs));
        emit([
            format!("fan-out 1920x1080 RGBA, {readers} readers: per-reader / aggregate fps"),
            format!("{per_o:.0} / {agg_o:.0}"),
            format!("{per_t:.0} / {agg_t:.0}"),
            ratio(agg_o, agg_t),
        ]);
    }

    // Latency at a paced 30 fps.
    for (w, h) in [(1920, 1080), (640, 480)] {
        let case = Case {
            width: w,
            height: h,
            frames: if quick { 90 } else { 300 },
            latency: true,
            props: "backpressure=block",
            ..base.clone()
        };
        let ours = run(Contender::ShmFrame, &case, quick);
        let theirs = run_shmsink_best(&case, quick);
        let (o50, o99, omax) = percentiles(&ours);
        let (t50, t99, tmax) = percentiles(&theirs);
        emit([
            format!("latency {w}x{h} RGBA @30 fps: p50 / p99 / max (µs)"),
            format!("{o50:.0} / {o99:.0} / {omax:.0}"),
            format!("{t50:.0} / {t99:.0} / {tmax:.0}"),
            format!("p50 {}", ratio(t50, o50)),
        ]);
    }

    // Our layouts and policies, 1080p RGBA, one reader.
    for props in [
        "layout=double",
        "layout=ring backpressure=block",
        "layout=ring backpressure=drop-oldest",
        "layout=ring backpressure=drop-newest",
    ] {
        let case = Case {
            props,
            frames: scale(1200),
            ..base.clone()
        };
        let ours = run(Contender::ShmFrame, &case, quick);
        let delivered: u64 = ours.iter().map(|r| r.frames).sum();
        emit([
            format!("1920x1080 RGBA `{props}` (fps, frames delivered)"),
            format!("{:.0} ({delivered}/{})", fps_of(&ours), case.frames),
            "-".into(),
            "-".into(),
        ]);
    }

    if let Some(path) = csv {
        let body: String = rows
            .iter()
            .map(|r| {
                r.iter()
                    .map(|c| format!("\"{}\"", c.replace('"', "'")))
                    .collect::<Vec<_>>()
                    .join(",")
                    + "\n"
            })
            .collect();
        std::fs::write(&path, format!("case,shmframe,shmsink,ratio\n{body}")).unwrap();
        println!();
        println!("CSV written to {path}");
    }
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}x", a / b)
    } else {
        "-".into()
    }
}

fn fps_of(r: &[ReaderResult]) -> f64 {
    mean_fps(r)
}

fn mean_fps(r: &[ReaderResult]) -> f64 {
    if r.is_empty() {
        return 0.0;
    }
    r.iter().map(|x| x.fps).sum::<f64>() / r.len() as f64
}

fn agg_fps(r: &[ReaderResult]) -> f64 {
    r.iter().map(|x| x.fps).sum()
}

fn percentiles(r: &[ReaderResult]) -> (f64, f64, f64) {
    let mut all: Vec<u64> = r.iter().flat_map(|x| x.latencies_ns.clone()).collect();
    if all.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    all.sort_unstable();
    let at = |p: f64| all[((all.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
    (at(0.5), at(0.99), at(1.0))
}

/// A single-threaded memcpy of one frame, repeated: the physical limit of a one-copy path.
/// The destination rotates over as many frame buffers as a default segment has slots (depth 4
/// plus 2 spare), as the writer's copies do; the source stays the same, as with imagefreeze.
fn memcpy_fps(size: u64) -> f64 {
    let src = vec![1u8; size as usize];
    // Filled once first, so page faults of fresh allocations are not what is measured (the
    // segment's slots are faulted in once too).
    let mut slots: Vec<Vec<u8>> = (0..6).map(|_| vec![2u8; size as usize]).collect();
    let started = Instant::now();
    let mut n = 0usize;
    while started.elapsed() < Duration::from_millis(500) {
        let dst = &mut slots[n % 6];
        dst.copy_from_slice(&src);
        std::hint::black_box(dst);
        n += 1;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// shmsink with the best shm-size among 2, 4 and 8 frames (quick: 4 frames only).
fn run_shmsink_best(case: &Case, quick: bool) -> Vec<ReaderResult> {
    let multiples: &[u64] = if quick { &[4] } else { &[2, 4, 8] };
    multiples
        .iter()
        .map(|m| run_with(Contender::ShmSink, case, *m))
        .max_by(|a, b| {
            let key = |r: &Vec<ReaderResult>| {
                if case.latency {
                    -percentiles(r).0
                } else {
                    agg_fps(r)
                }
            };
            key(a).partial_cmp(&key(b)).unwrap()
        })
        .unwrap()
}

fn run(contender: Contender, case: &Case, _quick: bool) -> Vec<ReaderResult> {
    run_with(contender, case, 4)
}

struct Bounded(Child);

impl Drop for Bounded {
    fn drop(&mut self) {
        // Give a child that finished its work a moment to exit cleanly, then kill it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(role: &str, args: &[String]) -> Bounded {
    Bounded(
        Command::new(std::env::current_exe().unwrap())
            .env(ROLE_ENV, role)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn role"),
    )
}

/// Runs one writer and `case.readers` readers; returns each reader's measurement.
fn run_with(contender: Contender, case: &Case, shm_frames: u64) -> Vec<ReaderResult> {
    let id = format!(
        "shmframe-bench-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let socket = std::env::temp_dir().join(format!("{id}.sock"));
    let common = vec![
        format!(
            "contender={}",
            if contender == Contender::ShmFrame {
                "shmframe"
            } else {
                "shmsink"
            }
        ),
        format!("name={id}"),
        format!("socket={}", socket.display()),
        format!("caps={}", case.caps()),
        format!("shape={}x{}:{}", case.width, case.height, case.format),
        format!("frames={}", case.frames),
        format!("readers={}", case.readers),
        format!("latency={}", case.latency),
        format!("props={}", case.props),
        format!("shmsize={}", case.frame_size() * shm_frames),
    ];
    let mut writer = spawn("writer", &common);
    let ready = first_line(&mut writer, Instant::now() + Duration::from_secs(30));
    if ready.as_deref().map(str::trim) != Some("READY") {
        eprintln!("bench: writer did not start ({ready:?}); counting this run as 0 fps");
        return vec![ReaderResult::default(); case.readers];
    }
    let mut readers: Vec<Bounded> = (0..case.readers)
        .map(|_| spawn("reader", &common))
        .collect();
    // Every run is bounded: a hung contender is killed and reported as 0 fps.
    let limit = Instant::now() + Duration::from_secs(150);
    let results: Vec<ReaderResult> = readers
        .iter_mut()
        .map(|r| match first_line(r, limit) {
            Some(line) => parse_result(&line),
            None => {
                eprintln!("bench: a reader hung; killed, counted as 0 fps");
                ReaderResult::default()
            }
        })
        .collect();
    drop(readers);
    drop(writer);
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_file(gstshmframe::transport::shm_dir().join(&id));
    results
}

/// The first line a child prints, or None if it prints none before `deadline`.
fn first_line(child: &mut Bounded, deadline: Instant) -> Option<String> {
    let out = child.0.stdout.take()?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(out).read_line(&mut line);
        let _ = tx.send(line);
    });
    rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .ok()
        .filter(|l| !l.is_empty())
}

fn parse_result(line: &str) -> ReaderResult {
    let mut r = ReaderResult::default();
    for kv in line.split_whitespace() {
        match kv.split_once('=') {
            Some(("frames", v)) => r.frames = v.parse().unwrap(),
            Some(("fps", v)) => r.fps = v.parse().unwrap(),
            Some(("lat", v)) if !v.is_empty() => {
                r.latencies_ns = v.split(',').map(|x| x.parse().unwrap()).collect()
            }
            _ => {}
        }
    }
    r
}

fn writer_role(a: &HashMap<String, String>) {
    let shmframe = a["contender"] == "shmframe";
    let frames: u64 = a["frames"].parse().unwrap();
    let readers: u32 = a["readers"].parse().unwrap();
    let latency = a["latency"] == "true";
    let source = if latency {
        format!(
            "videotestsrc is-live=true num-buffers={frames} ! {}",
            a["caps"]
        )
    } else {
        format!(
            "videotestsrc num-buffers=1 ! {} ! imagefreeze num-buffers={frames}",
            a["caps"]
        )
    };
    // A camera hands the sink fresh system memory per frame: upstream must not use the
    // sink's allocator (BENCH.md).
    let copy = "! identity drop-allocation=true ";
    let sink = if shmframe {
        format!(
            "shmframesink name=sink shm-name={} shape={} sync=false {}",
            a["name"], a["shape"], a["props"]
        )
    } else {
        format!(
            "shmsink name=sink socket-path={} shm-size={} sync=false wait-for-connection=false",
            a["socket"], a["shmsize"]
        )
    };
    let pipeline = gst::parse::launch(&format!("{source} {copy}! {sink}"))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let sink = pipeline.by_name("sink").unwrap();
    let connected = Arc::new(Mutex::new(0u32));
    if !shmframe {
        let c = connected.clone();
        sink.connect("client-connected", false, move |_| {
            *c.lock().unwrap() += 1;
            None
        });
    }
    if latency {
        // Stamp CLOCK_MONOTONIC into the first bytes just before the sink, for both contenders.
        sink.static_pad("sink")
            .unwrap()
            .add_probe(gst::PadProbeType::BUFFER, |_, info| {
                if let Some(gst::PadProbeData::Buffer(buffer)) = info.data.as_mut() {
                    let b = buffer.make_mut();
                    let mut map = b.map_writable().unwrap();
                    let now = gstshmframe::transport::sys::monotonic_ns();
                    map[..8].copy_from_slice(&now.to_le_bytes());
                }
                gst::PadProbeReturn::Ok
            });
    }
    pipeline.set_state(gst::State::Paused).unwrap();
    let _ = pipeline.state(gst::ClockTime::from_seconds(10));
    println!("READY");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = if shmframe {
            sink.property::<gst::Structure>("stats")
                .get::<u32>("readers")
                .unwrap_or(0)
        } else {
            *connected.lock().unwrap()
        };
        if n >= readers {
            break;
        }
        assert!(Instant::now() < deadline, "readers did not connect");
        std::thread::sleep(Duration::from_millis(5));
    }
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let msg = bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(120),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    if let Some(msg) = msg
        && let gst::MessageView::Error(e) = msg.view()
    {
        eprintln!("writer error: {} {:?}", e.error(), e.debug());
    }
    // shmsrc gets no EOS: give its readers time to drain before the socket goes away.
    if !shmframe {
        std::thread::sleep(Duration::from_millis(1500));
    }
    pipeline.set_state(gst::State::Null).unwrap();
}

fn reader_role(a: &HashMap<String, String>) {
    let shmframe = a["contender"] == "shmframe";
    let frames: u64 = a["frames"].parse().unwrap();
    let latency = a["latency"] == "true";
    let src = if shmframe {
        format!("shmframesrc shm-name={} start=oldest", a["name"])
    } else {
        format!(
            "shmsrc socket-path={} is-live=true ! {}",
            a["socket"], a["caps"]
        )
    };
    let pipeline = gst::parse::launch(&format!(
        "{src} ! fakesink name=out sync=false signal-handoffs=true"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    #[derive(Default)]
    struct Count {
        n: u64,
        first: u64,
        last: u64,
        lat: Vec<u64>,
    }
    let count = Arc::new(Mutex::new(Count::default()));
    let c = count.clone();
    pipeline
        .by_name("out")
        .unwrap()
        .connect("handoff", false, move |args| {
            let now = gstshmframe::transport::sys::monotonic_ns();
            let buffer = args[1].get::<gst::Buffer>().unwrap();
            let mut c = c.lock().unwrap();
            if c.n == 0 {
                c.first = now;
            }
            c.last = now;
            c.n += 1;
            if latency {
                let map = buffer.map_readable().unwrap();
                let stamp = u64::from_le_bytes(map[..8].try_into().unwrap());
                c.lat.push(now.saturating_sub(stamp));
            }
            None
        });
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let started = Instant::now();
    let mut idle_since = Instant::now();
    let mut last_n = 0;
    loop {
        if let Some(msg) = bus.timed_pop_filtered(
            gst::ClockTime::from_mseconds(50),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        ) {
            if let gst::MessageView::Error(e) = msg.view() {
                eprintln!("reader error: {} {:?}", e.error(), e.debug());
            }
            break;
        }
        let n = count.lock().unwrap().n;
        if n >= frames || started.elapsed() > Duration::from_secs(100) {
            break;
        }
        if n != last_n {
            last_n = n;
            idle_since = Instant::now();
        } else if n > 0 && idle_since.elapsed() > Duration::from_secs(2) {
            break;
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    let c = count.lock().unwrap();
    let span = (c.last - c.first) as f64 / 1e9;
    let fps = if c.n > 1 && span > 0.0 {
        (c.n - 1) as f64 / span
    } else {
        0.0
    };
    let lat: Vec<String> = c.lat.iter().map(u64::to_string).collect();
    println!("frames={} fps={fps:.2} lat={}", c.n, lat.join(","));
}

//! shmframe against GStreamer's shmsink/shmsrc, side by side (README, Performance).
//!
//!     cargo run --release --example bench -- --quick     # about a minute
//!     cargo run --release --example bench                # the full matrix
//!     cargo run --release --example bench -- --csv out.csv
//!     cargo run --release --example bench -- --markdown perf.md   # README Performance block
//!     cargo run --release --example bench -- --quick --only latency,cpu   # some row groups
//!     cargo run --release --example bench -- --rounds 5                   # rounds per row
//!
//! Each row is measured in several rounds (3 in a full run, 1 in a quick one), shmframe and
//! shmsink interleaved: the first round runs shmframe first, the next shmsink first, and so on,
//! so a machine that gets busier or quieter during a row weighs on both alike. A cell shows the
//! median over the rounds and, with more than one round, the spread `[min-max]`; the ratio is the
//! median of the rounds' own ratios (each taken from one round's side-by-side pair).
//!
//! Groups: throughput (camera-like source, both contenders copy in), zero-copy (upstream
//! draws into the sink's memory: our pool, shmsink's allocator), src-mode (shmframesrc
//! copy-mode), fan-out, latency, cpu (user + sys CPU seconds per frame of writer and readers,
//! from `getrusage` in each process over its streaming window), policies, python (the
//! `shmframe` Python package: readers against `shmframesrc ! fakesink` and one memcpy per
//! frame, writers against the Rust transport's writer; needs the package installed in release
//! mode in the interpreter `SHMFRAME_PYTHON` names, by default `<target dir>/pyenv/bin/python`:
//! `scripts/python.sh` makes that environment, then
//! `maturin develop --release --manifest-path python/Cargo.toml` with it active).
//!
//! Every process is this binary re-run in a role (writer or reader) with the plugin registered
//! statically, so what is measured is the code in this tree. Writers are gated until all their
//! readers are connected (shmframesink `stats.readers`, shmsink `client-connected`); readers
//! count frames in a fakesink handoff; fps = (frames - 1) / (last - first).

use gst::prelude::*;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ROLE_ENV: &str = "SHMFRAME_BENCH_ROLE";

#[derive(Clone, Copy, PartialEq)]
enum Contender {
    ShmFrame,
    ShmSink,
    /// The writer's source alone, into a fakesink: what producing the frames costs.
    SourceOnly,
}

impl Contender {
    fn name(self) -> &'static str {
        match self {
            Contender::ShmFrame => "shmframe",
            Contender::ShmSink => "shmsink",
            Contender::SourceOnly => "source",
        }
    }
}

/// Where the writer's frames come from and whether the sink must copy them.
#[derive(Clone, Copy, PartialEq)]
enum Upstream {
    /// Camera-like (BENCH.md): one frame re-pushed by imagefreeze in fresh system memory per
    /// push (`identity drop-allocation=true`): each contender copies every frame in.
    Camera,
    /// videotestsrc draws every frame (`pattern=black`) into memory from the sink's allocation
    /// proposal: our pool in shared memory, or shmsink's allocator. The zero-copy path; what it
    /// costs includes drawing each frame, so its ceiling is the `SourceOnly` row.
    DrawnIntoSink,
    /// The same drawn frames in system memory (`identity drop-allocation=true`): draw + copy.
    DrawnCopied,
}

#[derive(Clone)]
struct Case {
    width: u32,
    height: u32,
    format: &'static str,
    frames: u64,
    readers: usize,
    upstream: Upstream,
    /// Live source at this rate (frames are paced), instead of as fast as possible.
    live_fps: Option<u32>,
    /// The writer stamps CLOCK_MONOTONIC into each frame; readers report latencies.
    stamp: bool,
    /// Extra shmframesink properties.
    props: &'static str,
    /// Extra shmframesrc properties.
    src_props: &'static str,
    /// What the readers are (the `python` rows' reader processes; the other rows run
    /// `GStreamer` readers).
    reader: ReaderKind,
}

/// A reader process of a run.
#[derive(Clone, Copy, PartialEq)]
enum ReaderKind {
    /// `shmframesrc` (or `shmsrc`) into a fakesink.
    GStreamer,
    /// examples/python/bench_peer.py with the `shmframe` package: `read(copy=False)` or `read()`.
    Python { zero_copy: bool },
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
        let rate = self.live_fps.unwrap_or(1000);
        format!(
            "video/x-raw,format={},width={},height={},framerate={rate}/1",
            self.format, self.width, self.height
        )
    }
}

/// What one reader measured.
#[derive(Debug, Default, Clone)]
struct ReaderResult {
    frames: u64,
    fps: f64,
    /// user + sys CPU seconds of the whole reader process from its first frame to its last.
    cpu_s: f64,
    latencies_ns: Vec<u64>,
}

/// What the writer measured: user + sys CPU seconds from PLAYING to EOS, and frames pushed.
#[derive(Debug, Default, Clone)]
struct WriterResult {
    cpu_s: f64,
    frames: u64,
    /// The rate at which frames entered the sink.
    fps: f64,
}

/// One run: the writer's and each reader's measurements.
#[derive(Debug, Default, Clone)]
struct RunResult {
    writer: WriterResult,
    readers: Vec<ReaderResult>,
}

impl RunResult {
    fn failed(readers: usize) -> RunResult {
        RunResult {
            writer: WriterResult::default(),
            readers: vec![ReaderResult::default(); readers],
        }
    }

    /// CPU seconds per frame, writer and all readers together (0, i.e. failed, without the
    /// writer's result).
    fn cpu_per_frame(&self) -> f64 {
        if self.writer.frames == 0 {
            return 0.0;
        }
        let total = self.writer.cpu_s + self.readers.iter().map(|r| r.cpu_s).sum::<f64>();
        total / self.writer.frames.max(1) as f64
    }

    fn writer_cpu_per_frame(&self) -> f64 {
        self.writer.cpu_s / self.writer.frames.max(1) as f64
    }
}

/// user + sys CPU seconds of this process (all threads) so far.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the zeroed struct we own.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
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
            "transport-writer" => transport_writer_role(&args),
            _ => panic!("unknown role"),
        }
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let path_after = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let (csv, markdown) = (path_after("--csv"), path_after("--markdown"));
    let only: Vec<String> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let rounds = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .map(|v| match v.parse::<usize>() {
            Ok(n) if n >= 1 => n,
            _ => panic!("--rounds {v}: expected a whole number of at least 1"),
        })
        .unwrap_or(if quick { 1 } else { 3 });
    run_matrix(quick, rounds, Outputs { csv, markdown }, &only);
}

/// Row groups, in table order; `--only GROUP[,GROUP]` runs a subset.
const GROUPS: &[&str] = &[
    "throughput",
    "zero-copy",
    "src-mode",
    "fan-out",
    "latency",
    "cpu",
    "policies",
    "python",
];

/// Files written after the run, besides the table on stdout.
struct Outputs {
    csv: Option<String>,
    /// The block README's Performance section quotes: when, where and how it was measured,
    /// then the table.
    markdown: Option<String>,
}

/// The date and time now, UTC, as `YYYY-MM-DD HH:MM UTC`.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let (days, day_secs) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        day_secs / 3600,
        day_secs % 3600 / 60
    )
}

fn run_matrix(quick: bool, rounds: usize, outputs: Outputs, only: &[String]) {
    for o in only {
        assert!(
            GROUPS.contains(&o.as_str()),
            "--only {o}: unknown group; groups are {GROUPS:?}"
        );
    }
    let wanted = |group: &str| only.is_empty() || only.iter().any(|o| o == group);
    let scale = |n: u64| if quick { n / 4 } else { n };
    let base = Case {
        width: 1920,
        height: 1080,
        format: "RGBA",
        frames: scale(1200),
        readers: 1,
        upstream: Upstream::Camera,
        live_fps: None,
        stamp: false,
        props: "",
        src_props: "",
        reader: ReaderKind::GStreamer,
    };
    let default_rounds = if quick { 1 } else { 3 };
    let mut options = Vec::new();
    if quick {
        options.push("--quick".to_string());
    }
    if !only.is_empty() {
        options.push(format!("--only {}", only.join(",")));
    }
    if rounds != default_rounds {
        options.push(format!("--rounds {rounds}"));
    }
    let mut command = format!("{} --example bench", cargo_run_as_built());
    if !options.is_empty() {
        command += &format!(" -- {}", options.join(" "));
    }
    let intro = format!(
        "Measured {}, {} cores, {}, {}, {rounds} interleaved round{} per row{}, command: \
         `{command}`",
        utc_now(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        gst::version_string(),
        if quick { "quick run" } else { "full run" },
        if rounds == 1 { "" } else { "s" },
        if rounds == 1 {
            ""
        } else {
            " (cells: median [min-max]; ratio: median of the rounds' ratios)"
        }
    );
    const TABLE_HEAD: &str = "| case | shmframe | shmsink | ratio |\n|---|---|---|---|";
    println!("# shmframe vs shmsink/shmsrc");
    println!();
    println!("{intro}");
    println!();
    println!("{TABLE_HEAD}");
    let mut rows: Vec<[String; 4]> = Vec::new();
    let mut emit = |row: [String; 4]| {
        println!("| {} | {} | {} | {} |", row[0], row[1], row[2], row[3]);
        rows.push(row);
    };

    // Throughput by frame size, one reader, camera-like source (both contenders copy in).
    if wanted("throughput") {
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
            let mut anchor = Anchor::new(&case, quick);
            let (ours, theirs): (Samples, Samples) = interleaved(
                rounds,
                || fps_of(&run(Contender::ShmFrame, &case).readers),
                || fps_of(&anchor.run().readers),
            );
            let limit: Samples = repeated(rounds, || memcpy_fps(case.frame_size()));
            emit([
                format!("throughput {w}x{h} {f}, 1 reader (fps)"),
                ours.show(0),
                theirs.show(0),
                ratio_of(&ours, &theirs),
            ]);
            emit(ours_only(
                format!("  memcpy limit {w}x{h} {f} (fps, one copy)"),
                format!(
                    "{} ({:.0}% reached)",
                    limit.show(0),
                    100.0 * ours.median() / limit.median()
                ),
            ));
            let streaming: Option<Vec<f64>> = if case.frame_size() >= 1 << 20 {
                repeated::<_, Vec<_>>(rounds, || streaming_copy_fps(case.frame_size()))
                    .into_iter()
                    .collect()
            } else {
                None
            };
            if let Some(streaming) = streaming.map(Samples) {
                emit(ours_only(
                    format!("  streaming-store copy limit {w}x{h} {f} (fps, one copy)"),
                    format!(
                        "{} ({:.0}% reached)",
                        streaming.show(0),
                        100.0 * ours.median() / streaming.median()
                    ),
                ));
            }
        }
    }

    // Zero-copy writer: upstream draws every frame into the memory the sink proposes
    // (our pool in shared memory; shmsink's allocator) instead of system memory. The camera
    // rows' imagefreeze cannot be used here: it re-pushes ONE buffer, so no frame would be
    // drawn into a new slot; and shmsink hangs on it: a buffer already in its own memory is
    // sent without waiting for free space, one socket message per push, and (seen with gdb
    // on a hung run) the sink's streaming thread and shmsrc's both end up blocked in send(2),
    // each waiting for the other to read.
    if wanted("zero-copy") {
        for (w, h, f, n) in [(320, 240, "GRAY8", 20_000), (1920, 1080, "RGBA", 600)] {
            let drawn = |upstream| Case {
                width: w,
                height: h,
                format: f,
                frames: scale(n),
                upstream,
                props: "backpressure=block",
                ..base.clone()
            };
            let into_sink = drawn(Upstream::DrawnIntoSink);
            let copied = drawn(Upstream::DrawnCopied);
            let mut anchor = Anchor::new(&into_sink, quick);
            let (ours, theirs): (Samples, Samples) = interleaved(
                rounds,
                || fps_of(&run(Contender::ShmFrame, &into_sink).readers),
                || fps_of(&anchor.run().readers),
            );
            let mut anchor = Anchor::new(&copied, quick);
            let (ours_copied, theirs_copied): (Samples, Samples) = interleaved(
                rounds,
                || fps_of(&run(Contender::ShmFrame, &copied).readers),
                || fps_of(&anchor.run().readers),
            );
            let source: Samples = repeated(rounds, || source_fps(&into_sink));
            emit([
                format!(
                    "zero-copy writer {w}x{h} {f}: upstream draws into the sink's memory (fps)"
                ),
                ours.show(0),
                theirs.show(0),
                ratio_of(&ours, &theirs),
            ]);
            emit([
                "  same frames in system memory, copied by the sink (fps)".into(),
                ours_copied.show(0),
                theirs_copied.show(0),
                ratio_of(&ours_copied, &theirs_copied),
            ]);
            emit(ours_only(
                format!("  drawing alone {w}x{h} {f} into a fakesink (fps, the ceiling)"),
                format!(
                    "{} (zero-copy writer at {:.0}% of it)",
                    source.show(0),
                    100.0 * ours.median() / source.median()
                ),
            ));
        }
    }

    // shmframesrc copy-mode: copy every frame out, or push buffers wrapping the slots.
    if wanted("src-mode") {
        for (w, h, f, n) in [(640, 480, "RGBA", 6000), (1920, 1080, "RGBA", 1200)] {
            let mode = |src_props| Case {
                width: w,
                height: h,
                format: f,
                frames: scale(n),
                props: "backpressure=block",
                src_props,
                ..base.clone()
            };
            let (zero, copy): (Samples, Samples) = interleaved(
                rounds,
                || fps_of(&run(Contender::ShmFrame, &mode("copy-mode=zero-copy")).readers),
                || fps_of(&run(Contender::ShmFrame, &mode("copy-mode=copy")).readers),
            );
            emit([
                format!("shmframesrc {w}x{h} {f}: copy-mode=copy / zero-copy (fps)"),
                format!("{} / {}", copy.show(0), zero.show(0)),
                "-".into(),
                format!("zero-copy {}", ratio_of(&zero, &copy)),
            ]);
        }
    }

    // Fan-out.
    if wanted("fan-out") {
        for readers in [1usize, 3, 8] {
            let case = Case {
                readers,
                frames: scale(600),
                props: "backpressure=block",
                ..base.clone()
            };
            let mut anchor = Anchor::new(&case, quick);
            let (ours, theirs): (Vec<_>, Vec<_>) = interleaved(
                rounds,
                || run(Contender::ShmFrame, &case).readers,
                || anchor.run().readers,
            );
            let per = |runs: &[Vec<ReaderResult>]| Samples::of(runs, |r| mean_fps(r));
            let agg = |runs: &[Vec<ReaderResult>]| Samples::of(runs, |r| agg_fps(r));
            emit([
                format!("fan-out 1920x1080 RGBA, {readers} readers: per-reader / aggregate fps"),
                format!("{} / {}", per(&ours).show(0), agg(&ours).show(0)),
                format!("{} / {}", per(&theirs).show(0), agg(&theirs).show(0)),
                ratio_of(&agg(&ours), &agg(&theirs)),
            ]);
        }
    }

    // Latency at a paced 30 fps: camera-like (both contenders copy the frame in; that copy
    // is most of the p50), and with upstream drawing into the sink's memory (no copy).
    if wanted("latency") {
        for (w, h, upstream) in [
            (1920, 1080, Upstream::Camera),
            (640, 480, Upstream::Camera),
            (640, 480, Upstream::DrawnIntoSink),
        ] {
            let case = Case {
                width: w,
                height: h,
                frames: if quick { 90 } else { 300 },
                upstream,
                live_fps: Some(30),
                stamp: true,
                props: "backpressure=block",
                ..base.clone()
            };
            let mut anchor = Anchor::new(&case, quick);
            let (ours, theirs): (Vec<_>, Vec<_>) = interleaved(
                rounds,
                || percentiles(&run(Contender::ShmFrame, &case).readers),
                || percentiles(&anchor.run().readers),
            );
            let how = if upstream == Upstream::Camera {
                ""
            } else {
                ", upstream draws into the sink's memory"
            };
            let p50 = |runs: &[(f64, f64, f64)]| Samples::of(runs, |p| p.0);
            emit([
                format!("latency {w}x{h} RGBA @30 fps{how}: p50 / p99 / max (µs)"),
                show_percentiles(&ours),
                show_percentiles(&theirs),
                format!("p50 {}", ratio_of(&p50(&theirs), &p50(&ours))),
            ]);
            if upstream == Upstream::Camera {
                let (plain, streamed): (Vec<_>, Vec<_>) = repeated::<_, Vec<_>>(rounds, || {
                    paced_copies_us(case.frame_size(), case.frames as usize)
                })
                .into_iter()
                .unzip();
                emit(ours_only(
                    format!("  paced memcpy {w}x{h} RGBA @30 fps, the copy alone (µs)"),
                    show_percentiles(&plain),
                ));
                emit(ours_only(
                    format!(
                        "  paced streaming-store copy {w}x{h} RGBA @30 fps, the sink's copy (µs)"
                    ),
                    show_percentiles(&streamed),
                ));
            }
        }
    }

    // CPU cost of a paced stream: user + sys seconds of the writer process and all
    // reader processes, per frame. Both contenders zero-copy at both ends: upstream draws into
    // the sink's memory, readers wrap the shared memory (shmsrc always does; shmframesrc
    // copy-mode=zero-copy). Drawing the frame is part of the writer's cost for both; the
    // source-only row shows how much of it that is.
    if wanted("cpu") {
        let paced = |readers| Case {
            readers,
            frames: if quick { 120 } else { 600 },
            upstream: Upstream::DrawnIntoSink,
            live_fps: Some(60),
            props: "backpressure=block",
            src_props: "copy-mode=zero-copy",
            ..base.clone()
        };
        let three = paced(3);
        let mut anchor = Anchor::new(&three, quick);
        let (ours3, theirs3): (Vec<_>, Vec<_>) =
            interleaved(rounds, || run(Contender::ShmFrame, &three), || anchor.run());
        let source: Vec<_> = repeated(rounds, || run_with(Contender::SourceOnly, &paced(0), 0));
        let ours1: Vec<_> = repeated(rounds, || run(Contender::ShmFrame, &paced(1)));
        // Milliseconds per frame.
        let total_ms = |runs: &[RunResult]| Samples::of(runs, |r| 1e3 * r.cpu_per_frame());
        let writer_ms = |runs: &[RunResult]| Samples::of(runs, |r| 1e3 * r.writer_cpu_per_frame());
        emit([
            "CPU, 1920x1080 RGBA @60 fps to 3 readers: writer + readers (ms per frame; \
             ratio shmsink / shmframe)"
                .into(),
            total_ms(&ours3).show(3),
            total_ms(&theirs3).show(3),
            ratio_of(&total_ms(&theirs3), &total_ms(&ours3)),
        ]);
        emit([
            "  of which the writer (ms per frame)".into(),
            writer_ms(&ours3).show(3),
            writer_ms(&theirs3).show(3),
            ratio_of(&writer_ms(&theirs3), &writer_ms(&ours3)),
        ]);
        emit(ours_only(
            "  drawing the frames alone, into a fakesink (ms per frame)".into(),
            writer_ms(&source).show(3),
        ));
        let (one, three) = (writer_ms(&ours1), writer_ms(&ours3));
        emit([
            "writer CPU @60 fps, 1 vs 3 zero-copy readers (ms per frame)".into(),
            format!("{} / {}", one.show(3), three.show(3)),
            "-".into(),
            format!(
                "3 readers cost {:+.0}%",
                100.0 * (three.median() / one.median() - 1.0)
            ),
        ]);
    }

    // Our layouts and policies, 1080p RGBA, one reader.
    if wanted("policies") {
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
            let runs: Vec<_> = repeated(rounds, || run(Contender::ShmFrame, &case).readers);
            let fps = Samples::of(&runs, |r| fps_of(r));
            let delivered = Samples::of(&runs, |r| r.iter().map(|x| x.frames).sum::<u64>() as f64);
            emit(ours_only(
                format!("1920x1080 RGBA `{props}` (fps, frames delivered)"),
                format!("{} ({}/{})", fps.show(0), delivered.show(0), case.frames),
            ));
        }
    }

    // The Python package against what it wraps: a zero-copy reader against a shmframesrc !
    // fakesink reader of the same stream, a copying reader against one memcpy per frame, and
    // a writer alone (unpaced, no reader) against the Rust transport's writer alone.
    if wanted("python") {
        let python = python_interpreter();
        println!(
            "python group: {} ({})",
            python.display(),
            python_package_profile(&python)
        );
        // The writer publishes as fast as the reader reads, without rewriting the frames
        // (transport_writer_role): the reader is what is measured.
        let reading = |frames, reader| Case {
            frames: scale(frames),
            reader,
            src_props: "copy-mode=zero-copy",
            ..base.clone()
        };
        let python_reader = |zero_copy| ReaderKind::Python { zero_copy };
        let (py_zero, src): (Samples, Samples) = interleaved(
            rounds,
            || reader_fps(&reading(100_000, python_reader(true))),
            || reader_fps(&reading(100_000, ReaderKind::GStreamer)),
        );
        emit([
            "python zero-copy reader 1920x1080 RGBA: package / shmframesrc copy-mode=zero-copy ! \
             fakesink (fps)"
                .into(),
            format!("{} / {}", py_zero.show(0), src.show(0)),
            "-".into(),
            ratio_of(&py_zero, &src),
        ]);
        let copying = reading(1200, python_reader(false));
        let (py_copy, memcpy): (Samples, Samples) = interleaved(
            rounds,
            || reader_fps(&copying),
            || memcpy_fps(copying.frame_size()),
        );
        emit([
            "python copy reader 1920x1080 RGBA: package / one memcpy per frame (fps)".into(),
            format!("{} / {}", py_copy.show(0), memcpy.show(0)),
            "-".into(),
            ratio_of(&py_copy, &memcpy),
        ]);
        for (w, h, f, n) in [(320, 240, "GRAY8", 40_000), (1920, 1080, "RGBA", 1200)] {
            let frames = scale(n);
            let (py_writer, rust_writer): (Samples, Samples) = interleaved(
                rounds,
                || python_writer_fps(&python, w, h, f, frames),
                || transport_writer_fps(w, h, f, frames),
            );
            emit([
                format!("python writer {w}x{h} {f} alone: package / Rust transport writer (fps)"),
                format!("{} / {}", py_writer.show(0), rust_writer.show(0)),
                "-".into(),
                ratio_of(&py_writer, &rust_writer),
            ]);
        }
    }

    if let Some(path) = outputs.markdown {
        let table: String = rows
            .iter()
            .map(|r| format!("| {} | {} | {} | {} |\n", r[0], r[1], r[2], r[3]))
            .collect();
        std::fs::write(&path, format!("{intro}\n\n{TABLE_HEAD}\n{table}")).unwrap();
        println!();
        println!("Markdown written to {path}");
    }
    if let Some(path) = outputs.csv {
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

/// The `cargo run` that builds this binary as it is: its profile is the name of the directory
/// cargo put it in (`<target dir>/<profile>/examples/bench`; `debug` for the dev profile).
fn cargo_run_as_built() -> String {
    let exe = std::env::current_exe().unwrap();
    let profile = exe.ancestors().nth(2).and_then(|dir| dir.file_name());
    match profile.and_then(|name| name.to_str()) {
        Some("release") => "cargo run --release".into(),
        Some("debug") | None => "cargo run".into(),
        Some(other) => format!("cargo run --profile {other}"),
    }
}

/// The Python interpreter of the `python` rows: `SHMFRAME_PYTHON`, or the environment
/// scripts/python.sh makes, `<target dir>/pyenv/bin/python` (this binary is
/// `<target dir>/<profile>/examples/bench`).
fn python_interpreter() -> std::path::PathBuf {
    if let Some(python) = std::env::var_os("SHMFRAME_PYTHON").filter(|v| !v.is_empty()) {
        return python.into();
    }
    let exe = std::env::current_exe().unwrap();
    exe.ancestors()
        .nth(3)
        .expect("the bench runs from <target dir>/<profile>/examples")
        .join("pyenv/bin/python")
}

/// How the package `python` imports was built ("release" or "debug"), or why it cannot be
/// imported.
fn python_package_profile(python: &std::path::Path) -> String {
    match Command::new(python)
        .args(["-c", "import shmframe._native as n; print(n.BUILD_PROFILE)"])
        .output()
    {
        Ok(out) if out.status.success() => {
            let profile = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if profile == "release" {
                "package built in release mode".into()
            } else {
                format!(
                    "WARNING: the package is a {profile} build; for figures that mean something: \
                     maturin develop --release --manifest-path python/Cargo.toml"
                )
            }
        }
        Ok(out) => format!(
            "WARNING: cannot import shmframe: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => format!("WARNING: cannot run {}: {e}", python.display()),
    }
}

/// examples/python/bench_peer.py `args` with `python`.
fn python_peer(python: &std::path::Path, args: &[String]) -> Command {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python");
    let mut command = Command::new(python);
    command
        .arg(format!("{dir}/bench_peer.py"))
        .args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    command
}

/// Frames per second of a Python writer writing `frames` frames alone (bench_peer.py write).
fn python_writer_fps(python: &std::path::Path, w: u32, h: u32, format: &str, frames: u64) -> f64 {
    let name = bench_name();
    let args = [
        &name,
        &w.to_string(),
        &h.to_string(),
        format,
        &frames.to_string(),
    ]
    .map(str::to_string);
    let mut command = python_peer(python, &[&["write".to_string()][..], &args].concat());
    let child = spawn_command(&mut command, "python writer");
    let line = child.next_line(Instant::now() + Duration::from_secs(150));
    drop(child);
    let _ = std::fs::remove_file(gstshmframe::transport::shm_dir().join(&name));
    line.map_or(0.0, |l| parse_writer(&l).fps)
}

/// Frames per second of the Rust transport's writer writing `frames` frames alone, as
/// bench_peer.py's writer does (one frame prepared once, copied into a `block` ring of its own,
/// no reader).
fn transport_writer_fps(w: u32, h: u32, format: &str, frames: u64) -> f64 {
    let args = [
        format!("name={}", bench_name()),
        format!("shape={w}x{h}:{format}"),
        format!("frames={frames}"),
    ];
    let child = spawn("transport-writer", &args);
    let line = child.next_line(Instant::now() + Duration::from_secs(150));
    line.map_or(0.0, |l| parse_writer(&l).fps)
}

/// The Rust transport's writer. Without `readers`: writes `frames` copies of one frame
/// alone (a `block` ring, no reader). With `readers=N`: once N readers are attached, publishes
/// `frames` frames as fast as they read (`block`), each slot filled once only, so that what
/// is measured is the readers; then EOS.
fn transport_writer_role(a: &HashMap<String, String>) {
    use gstshmframe::transport::{Backpressure, FrameMeta, Writer, WriterConfig};
    let (dims, format) = a["shape"].split_once(':').unwrap();
    let (w, h) = dims.split_once('x').unwrap();
    let info = gst_video::VideoInfo::builder(
        gst_video::VideoFormat::from_string(format),
        w.parse().unwrap(),
        h.parse().unwrap(),
    )
    .build()
    .unwrap();
    let frames: u64 = a["frames"].parse().unwrap();
    let readers: usize = a.get("readers").map_or(0, |r| r.parse().unwrap());
    let mut cfg = WriterConfig::new(&a["name"], info.size() as u64);
    cfg.backpressure = Backpressure::Block;
    let mut writer = Writer::create(&cfg).unwrap();
    writer
        .set_caps(&format!(
            "video/x-raw, format=(string){format}, width=(int){w}, height=(int){h}, \
             framerate=(fraction)30/1"
        ))
        .unwrap();
    let frame = vec![7u8; info.size()];
    let meta = || FrameMeta {
        pts: Some(gstshmframe::transport::monotonic_ns()),
        dts: None,
        duration: None,
        flags: 0,
    };
    if readers > 0 {
        println!("READY");
        assert!(
            writer
                .wait_for_readers(readers, Some(Duration::from_secs(30)))
                .unwrap(),
            "readers did not attach"
        );
        let mut filled = vec![false; writer.geometry().slot_count as usize];
        for _ in 0..frames {
            let lease = writer.acquire().unwrap().expect("block never drops");
            let slot = lease.slot() as usize;
            if !filled[slot] {
                writer.slot_mut(&lease)[..frame.len()].copy_from_slice(&frame);
                filled[slot] = true;
            }
            writer.publish(lease, &meta(), frame.len() as u64).unwrap();
        }
        writer.end_of_stream();
        writer.close();
        println!("frames={frames}");
        return;
    }
    for _ in 0..8 {
        writer.write(&meta(), &frame).unwrap();
    }
    let (cpu_start, started) = (cpu_seconds(), Instant::now());
    for _ in 0..frames {
        writer.write(&meta(), &frame).unwrap();
    }
    let took = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_start;
    writer.close();
    println!(
        "frames={frames} fps={:.2} cpu={cpu:.6}",
        frames as f64 / took
    );
}

/// One reader of `case.reader` kind reading `case.frames` frames from the transport writer
/// of [`transport_writer_role`] that publishes as fast as it reads: what the reader costs.
fn reader_fps(case: &Case) -> f64 {
    let name = bench_name();
    let shape = format!("shape={}x{}:{}", case.width, case.height, case.format);
    let writer = spawn(
        "transport-writer",
        &[
            format!("name={name}"),
            shape,
            format!("frames={}", case.frames),
            "readers=1".into(),
        ],
    );
    let ready = writer.next_line(Instant::now() + Duration::from_secs(30));
    if ready.as_deref() != Some("READY") {
        eprintln!("bench: transport writer did not start ({ready:?}); counting 0 fps");
        return 0.0;
    }
    let reader = match case.reader {
        ReaderKind::GStreamer => spawn(
            "reader",
            &[
                "contender=shmframe".into(),
                format!("name={name}"),
                format!("frames={}", case.frames),
                "stamp=false".into(),
                format!("srcprops={}", case.src_props),
            ],
        ),
        ReaderKind::Python { zero_copy } => {
            let mut args = vec!["read".to_string(), name.clone(), case.frames.to_string()];
            if zero_copy {
                args.push("--zero-copy".into());
            }
            spawn_command(
                &mut python_peer(&python_interpreter(), &args),
                "python reader",
            )
        }
    };
    let result = reader
        .next_line(Instant::now() + Duration::from_secs(150))
        .map(|l| parse_reader(&l))
        .unwrap_or_default();
    drop(reader);
    drop(writer);
    let _ = std::fs::remove_file(gstshmframe::transport::shm_dir().join(&name));
    result.fps
}

/// Frames per second of the writer's source alone (drawing into a fakesink).
fn source_fps(case: &Case) -> f64 {
    let case = Case {
        readers: 0,
        ..case.clone()
    };
    run_with(Contender::SourceOnly, &case, 0).writer.fps
}

/// One quantity measured once per round of a row.
struct Samples(Vec<f64>);

impl Samples {
    fn of<T>(runs: &[T], value: impl Fn(&T) -> f64) -> Samples {
        Samples(runs.iter().map(value).collect())
    }

    /// The measured values, sorted. A round that failed (a contender hung or printed no
    /// result) measured 0, which no working run does: it is left out, and `show` says so.
    fn sorted(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self.0.iter().copied().filter(|x| *x > 0.0).collect();
        v.sort_by(f64::total_cmp);
        v
    }

    fn failed(&self) -> usize {
        self.0.len() - self.sorted().len()
    }

    fn median(&self) -> f64 {
        let v = self.sorted();
        match v.len() {
            0 => 0.0,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }

    /// The median with `digits` decimals, and the spread `[min-max]` when there are several
    /// rounds.
    fn show(&self, digits: usize) -> String {
        let v = self.sorted();
        let shown = match (v.first(), v.last()) {
            (None, _) | (_, None) => "-".to_string(),
            (Some(min), Some(max)) if v.len() > 1 => {
                format!("{:.digits$} [{min:.digits$}-{max:.digits$}]", self.median())
            }
            _ => format!("{:.digits$}", self.median()),
        };
        match self.failed() {
            0 => shown,
            n => format!("{shown} ({n} failed)"),
        }
    }
}

impl From<Vec<f64>> for Samples {
    fn from(v: Vec<f64>) -> Samples {
        Samples(v)
    }
}

/// Runs `ours` and `theirs` once per round, alternating which goes first.
fn interleaved<T, A: From<Vec<T>>>(
    rounds: usize,
    mut ours: impl FnMut() -> T,
    mut theirs: impl FnMut() -> T,
) -> (A, A) {
    let (mut a, mut b) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    for round in 0..rounds {
        if round % 2 == 0 {
            a.push(ours());
            b.push(theirs());
        } else {
            b.push(theirs());
            a.push(ours());
        }
    }
    (a.into(), b.into())
}

/// Runs `measure` once per round.
fn repeated<T, A: From<Vec<T>>>(rounds: usize, measure: impl FnMut() -> T) -> A {
    std::iter::repeat_with(measure)
        .take(rounds)
        .collect::<Vec<T>>()
        .into()
}

/// The median of the rounds' ratios a / b: each round's pair ran side by side, so their ratio
/// holds where the absolute figures drift; the spread follows with several rounds.
fn ratio_of(a: &Samples, b: &Samples) -> String {
    let ratios = Samples(
        a.0.iter()
            .zip(&b.0)
            .filter(|(a, b)| **a > 0.0 && **b > 0.0)
            .map(|(a, b)| a / b)
            .collect(),
    );
    if ratios.0.is_empty() {
        return "-".into();
    }
    let v = ratios.sorted();
    if v.len() > 1 {
        format!(
            "{:.2}x [{:.2}-{:.2}]",
            ratios.median(),
            v[0],
            v[v.len() - 1]
        )
    } else {
        format!("{:.2}x", ratios.median())
    }
}

/// p50 / p99 / max in µs, each the median over the rounds.
fn show_percentiles(runs: &[(f64, f64, f64)]) -> String {
    let p50 = Samples::of(runs, |p| p.0);
    let p99 = Samples::of(runs, |p| p.1);
    let max = Samples::of(runs, |p| p.2);
    format!("{} / {} / {}", p50.show(0), p99.show(0), max.show(0))
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
    percentiles_us(r.iter().flat_map(|x| x.latencies_ns.clone()).collect())
}

/// A row only shmframe has (a limit, a breakdown, a mode shmsink lacks): no shmsink figure,
/// no ratio.
fn ours_only(case: String, value: String) -> [String; 4] {
    [case, value, "-".into(), "-".into()]
}

/// p50 / p99 / max in µs of durations in ns.
fn percentiles_us(mut all: Vec<u64>) -> (f64, f64, f64) {
    if all.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    all.sort_unstable();
    let at = |p: f64| all[((all.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
    (at(0.5), at(0.99), at(1.0))
}

/// The copy a camera-like writer makes, timed at the latency rows' pace: 30 times a second a
/// freshly drawn frame (every cache line just written, as a camera or decoder leaves it) is
/// copied into the next of 6 slots, every other frame with a plain memcpy (shmsink's copy),
/// the others with the streaming stores shmframesink uses for slots out of cache. Both
/// contenders make this copy inside their latency; on an idle machine the plain one is
/// several times slower than in the back-to-back loop of [`memcpy_fps`] (caches and clocks
/// cool down between frames). p50 / p99 / max in µs of the plain and of the streaming copies.
fn paced_copies_us(size: u64, frames: usize) -> ((f64, f64, f64), (f64, f64, f64)) {
    let mut src = vec![1u8; size as usize];
    let mut slots: Vec<Vec<u8>> = (0..6).map(|_| vec![2u8; size as usize]).collect();
    let mut took = [Vec::with_capacity(frames), Vec::with_capacity(frames)];
    for n in 0..frames {
        for line in src.chunks_mut(64) {
            line[0] = n as u8;
        }
        let dst = &mut slots[n % 6];
        let streamed = n % 2 == 1;
        let started = Instant::now();
        gstshmframe::transport::copy_frame(dst, &src, streamed);
        took[streamed as usize].push(started.elapsed().as_nanos() as u64);
        std::hint::black_box(dst);
        std::thread::sleep(Duration::from_micros(33_333));
    }
    let [plain, streamed] = took;
    (percentiles_us(plain), percentiles_us(streamed))
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

/// Like [`memcpy_fps`], with non-temporal (streaming) stores that bypass the cache: the
/// destination's lines are not read first (no read-for-ownership) and do not evict the
/// source. For frames larger than the cache share, this is the copy the writer could make;
/// None where AVX2 is missing.
fn streaming_copy_fps(size: u64) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        if !std::arch::is_x86_feature_detected!("avx2") {
            return None;
        }
        let src = vec![1u8; size as usize];
        let mut slots: Vec<Vec<u8>> = (0..6).map(|_| vec![2u8; size as usize]).collect();
        let started = Instant::now();
        let mut n = 0usize;
        while started.elapsed() < Duration::from_millis(500) {
            let dst = &mut slots[n % 6];
            // SAFETY: AVX2 was detected above; both slices have `size` bytes.
            unsafe { streaming_copy(dst, &src) };
            std::hint::black_box(dst);
            n += 1;
        }
        Some(n as f64 / started.elapsed().as_secs_f64())
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = size;
        None
    }
}

/// Copies `src` into `dst` with 32-byte non-temporal stores, then fences them.
///
/// # Safety
/// The CPU supports AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn streaming_copy(dst: &mut [u8], src: &[u8]) {
    use std::arch::x86_64::*;
    assert_eq!(dst.len(), src.len());
    // Unaligned head by plain copy, so that the streaming stores are 32-byte aligned.
    let head = dst.as_ptr().align_offset(32).min(dst.len());
    dst[..head].copy_from_slice(&src[..head]);
    let body = (dst.len() - head) / 32 * 32;
    let (d, s) = (dst[head..].as_mut_ptr(), src[head..].as_ptr());
    for i in (0..body).step_by(32) {
        // SAFETY: i + 32 <= body lies within both slices past `head`; d + i is 32-aligned.
        unsafe {
            let v = _mm256_loadu_si256(s.add(i) as *const __m256i);
            _mm256_stream_si256(d.add(i) as *mut __m256i, v);
        }
    }
    _mm_sfence();
    dst[head + body..].copy_from_slice(&src[head + body..]);
}

/// shmsink with the best shm-size among 2, 4 and 8 frames (quick: 4 frames only): the
/// highest aggregate fps, the lowest latency p50, or (paced, unstamped runs) the lowest CPU.
/// The first round of a row tries every size; later rounds use the one that won.
struct Anchor<'a> {
    case: &'a Case,
    candidates: &'static [u64],
    best: Option<u64>,
}

impl<'a> Anchor<'a> {
    fn new(case: &'a Case, quick: bool) -> Anchor<'a> {
        Anchor {
            case,
            candidates: if quick { &[4] } else { &[2, 4, 8] },
            best: None,
        }
    }

    fn run(&mut self) -> RunResult {
        if let Some(frames) = self.best {
            return run_with(Contender::ShmSink, self.case, frames);
        }
        let case = self.case;
        let key = |r: &RunResult| {
            if case.stamp {
                -percentiles(&r.readers).0
            } else if case.live_fps.is_some() {
                -r.cpu_per_frame()
            } else {
                agg_fps(&r.readers)
            }
        };
        let (frames, best) = self
            .candidates
            .iter()
            .map(|m| (*m, run_with(Contender::ShmSink, case, *m)))
            .max_by(|a, b| key(&a.1).total_cmp(&key(&b.1)))
            .unwrap();
        self.best = Some(frames);
        best
    }
}

fn run(contender: Contender, case: &Case) -> RunResult {
    run_with(contender, case, 4)
}

/// A child process, killed if still running when dropped; its stdout lines arrive on a
/// channel.
struct Bounded {
    child: Child,
    lines: Receiver<String>,
    role: String,
}

impl Bounded {
    /// The next line the child prints, or None if it prints none before `deadline`.
    fn next_line(&self, deadline: Instant) -> Option<String> {
        self.lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .ok()
    }
}

impl Drop for Bounded {
    fn drop(&mut self) {
        // Give a child that finished its work a moment to exit cleanly, then kill it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!(
            "bench: a {} (pid {}) did not exit within 10 s of its work; killed",
            self.role,
            self.child.id()
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// This binary re-run in `role` with `args`.
fn spawn(role: &str, args: &[String]) -> Bounded {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.env(ROLE_ENV, role).args(args);
    spawn_command(&mut command, &format!("{role} ({})", args[0]))
}

fn spawn_command(command: &mut Command, role: &str) -> Bounded {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {role}: {e}"));
    let out = child.stdout.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Bounded {
        child,
        lines,
        role: role.to_string(),
    }
}

/// A segment name unique to this run.
fn bench_name() -> String {
    format!(
        "shmframe-bench-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    )
}

/// Runs one writer and `case.readers` readers; returns what each measured.
fn run_with(contender: Contender, case: &Case, shm_frames: u64) -> RunResult {
    let id = bench_name();
    let socket = std::env::temp_dir().join(format!("{id}.sock"));
    let upstream = match case.upstream {
        Upstream::Camera => "camera",
        Upstream::DrawnIntoSink => "drawn-into-sink",
        Upstream::DrawnCopied => "drawn-copied",
    };
    let common = vec![
        format!("contender={}", contender.name()),
        format!("name={id}"),
        format!("socket={}", socket.display()),
        format!("caps={}", case.caps()),
        format!("shape={}x{}:{}", case.width, case.height, case.format),
        format!("frames={}", case.frames),
        format!("readers={}", case.readers),
        format!("upstream={upstream}"),
        format!("live={}", case.live_fps.is_some()),
        format!("stamp={}", case.stamp),
        format!("props={}", case.props),
        format!("srcprops={}", case.src_props),
        format!("shmsize={}", case.frame_size() * shm_frames),
    ];
    let writer = spawn("writer", &common);
    let ready = writer.next_line(Instant::now() + Duration::from_secs(30));
    if ready.as_deref().map(str::trim) != Some("READY") {
        eprintln!("bench: writer did not start ({ready:?}); counting this run as 0 fps");
        return RunResult::failed(case.readers);
    }
    let readers: Vec<Bounded> = (0..case.readers)
        .map(|_| spawn("reader", &common))
        .collect();
    // Every run is bounded: a hung contender is killed and reported as 0 fps.
    let limit = Instant::now() + Duration::from_secs(150);
    let reader_results: Vec<ReaderResult> = readers
        .iter()
        .map(|r| match r.next_line(limit) {
            Some(line) => parse_reader(&line),
            None => {
                eprintln!("bench: a reader hung; killed, counted as 0 fps");
                ReaderResult::default()
            }
        })
        .collect();
    drop(readers);
    let writer_result = writer
        .next_line(Instant::now() + Duration::from_secs(20))
        .map(|l| parse_writer(&l))
        .unwrap_or_else(|| {
            eprintln!(
                "bench: a {} writer printed no result; its figures count as failed",
                contender.name()
            );
            WriterResult::default()
        });
    let writer_pid = writer.child.id();
    drop(writer);
    let _ = std::fs::remove_file(&socket);
    let shm_dir = gstshmframe::transport::shm_dir();
    let _ = std::fs::remove_file(shm_dir.join(&id));
    // A shmsink writer that had to be killed (some hang in their NULL transition after
    // upstream drew into shmsink's memory) leaves its area, /dev/shm/shmpipe.<pid>.<n>.
    // shmsink names it with printf's "%5d": a pid below 10000 is padded with spaces.
    let area_prefix = format!("shmpipe.{writer_pid:>5}.");
    for entry in std::fs::read_dir(&shm_dir).into_iter().flatten().flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(&area_prefix)
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    RunResult {
        writer: writer_result,
        readers: reader_results,
    }
}

fn parse_reader(line: &str) -> ReaderResult {
    let mut r = ReaderResult::default();
    for kv in line.split_whitespace() {
        match kv.split_once('=') {
            Some(("frames", v)) => r.frames = v.parse().unwrap(),
            Some(("fps", v)) => r.fps = v.parse().unwrap(),
            Some(("cpu", v)) => r.cpu_s = v.parse().unwrap(),
            Some(("lat", v)) if !v.is_empty() => {
                r.latencies_ns = v.split(',').map(|x| x.parse().unwrap()).collect()
            }
            _ => {}
        }
    }
    r
}

fn parse_writer(line: &str) -> WriterResult {
    let mut w = WriterResult::default();
    for kv in line.split_whitespace() {
        match kv.split_once('=') {
            Some(("cpu", v)) => w.cpu_s = v.parse().unwrap(),
            Some(("frames", v)) => w.frames = v.parse().unwrap(),
            Some(("fps", v)) => w.fps = v.parse().unwrap(),
            _ => {}
        }
    }
    w
}

/// Counts buffers passing a pad: first and last arrival (CLOCK_MONOTONIC) and how many.
#[derive(Default)]
struct Count {
    n: u64,
    first: u64,
    last: u64,
    cpu_at_first: f64,
    lat: Vec<u64>,
}

impl Count {
    fn fps(&self) -> f64 {
        let span = (self.last - self.first) as f64 / 1e9;
        if self.n > 1 && span > 0.0 {
            (self.n - 1) as f64 / span
        } else {
            0.0
        }
    }
}

fn writer_role(a: &HashMap<String, String>) {
    let contender = a["contender"].as_str();
    let frames: u64 = a["frames"].parse().unwrap();
    let readers: u32 = a["readers"].parse().unwrap();
    let stamp = a["stamp"] == "true";
    let live = a["live"] == "true";
    let upstream = a["upstream"].as_str();
    let source = match upstream {
        "camera" if !live => format!(
            "videotestsrc num-buffers=1 ! {} ! imagefreeze num-buffers={frames}",
            a["caps"]
        ),
        // A live camera-like source: a new frame per tick (the default pattern; drawing
        // happens before the stamp, so it is not part of the latency).
        "camera" => format!(
            "videotestsrc is-live=true num-buffers={frames} ! {}",
            a["caps"]
        ),
        _ => format!(
            "videotestsrc is-live={live} pattern=black num-buffers={frames} ! {}",
            a["caps"]
        ),
    };
    // A camera hands the sink fresh system memory per frame: upstream must not use the
    // sink's allocator (BENCH.md).
    let copy = if upstream == "drawn-into-sink" {
        ""
    } else {
        "! identity drop-allocation=true "
    };
    let sink = match contender {
        "shmframe" => format!(
            "shmframesink name=sink shm-name={} shape={} sync=false {}",
            a["name"], a["shape"], a["props"]
        ),
        "shmsink" => format!(
            "shmsink name=sink socket-path={} shm-size={} sync=false wait-for-connection=false",
            a["socket"], a["shmsize"]
        ),
        _ => "fakesink name=sink sync=false".into(),
    };
    let pipeline = gst::parse::launch(&format!("{source} {copy}! {sink}"))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let sink = pipeline.by_name("sink").unwrap();
    let connected = Arc::new(Mutex::new(0u32));
    if contender == "shmsink" {
        let c = connected.clone();
        sink.connect("client-connected", false, move |_| {
            *c.lock().unwrap() += 1;
            None
        });
    }
    let pushed = Arc::new(Mutex::new(Count::default()));
    let p = pushed.clone();
    sink.static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            let now = gstshmframe::transport::monotonic_ns();
            if stamp && let Some(gst::PadProbeData::Buffer(buffer)) = info.data.as_mut() {
                // Stamp CLOCK_MONOTONIC into the first bytes just before the sink, for both
                // contenders.
                let b = buffer.make_mut();
                let mut map = b.map_writable().unwrap();
                map[..8].copy_from_slice(&now.to_le_bytes());
            }
            let mut p = p.lock().unwrap();
            if p.n == 0 {
                p.first = now;
            }
            p.last = now;
            p.n += 1;
            gst::PadProbeReturn::Ok
        });
    pipeline.set_state(gst::State::Paused).unwrap();
    let _ = pipeline.state(gst::ClockTime::from_seconds(10));
    println!("READY");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = match contender {
            "shmframe" => sink
                .property::<gst::Structure>("stats")
                .get::<u32>("readers")
                .unwrap_or(0),
            "shmsink" => *connected.lock().unwrap(),
            _ => 0,
        };
        if n >= readers {
            break;
        }
        assert!(Instant::now() < deadline, "readers did not connect");
        std::thread::sleep(Duration::from_millis(5));
    }
    let cpu_start = cpu_seconds();
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let msg = bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(120),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    let cpu = cpu_seconds() - cpu_start;
    if let Some(msg) = msg
        && let gst::MessageView::Error(e) = msg.view()
    {
        eprintln!("writer error: {} {:?}", e.error(), e.debug());
    }
    let (n, fps) = {
        let p = pushed.lock().unwrap();
        (p.n, p.fps())
    };
    // The parent reads this line after the readers' results.
    println!("WRITER cpu={cpu:.6} frames={n} fps={fps:.2}");
    // shmsrc gets no EOS: give its readers time to drain before the socket goes away.
    if contender == "shmsink" {
        std::thread::sleep(Duration::from_millis(1500));
    }
    pipeline.set_state(gst::State::Null).unwrap();
}

fn reader_role(a: &HashMap<String, String>) {
    let shmframe = a["contender"] == "shmframe";
    let frames: u64 = a["frames"].parse().unwrap();
    let stamp = a["stamp"] == "true";
    let src = if shmframe {
        format!(
            "shmframesrc shm-name={} start=oldest {}",
            a["name"], a["srcprops"]
        )
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
    let count = Arc::new(Mutex::new(Count::default()));
    let c = count.clone();
    pipeline
        .by_name("out")
        .unwrap()
        .connect("handoff", false, move |args| {
            let now = gstshmframe::transport::monotonic_ns();
            let buffer = args[1].get::<gst::Buffer>().unwrap();
            let mut c = c.lock().unwrap();
            if c.n == 0 {
                c.first = now;
                c.cpu_at_first = cpu_seconds();
            }
            c.last = now;
            c.n += 1;
            if stamp {
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
    let cpu_end = cpu_seconds();
    pipeline.set_state(gst::State::Null).unwrap();
    let c = count.lock().unwrap();
    let cpu = if c.n > 0 {
        cpu_end - c.cpu_at_first
    } else {
        0.0
    };
    let lat: Vec<String> = c.lat.iter().map(u64::to_string).collect();
    println!(
        "frames={} fps={:.2} cpu={cpu:.6} lat={}",
        c.n,
        c.fps(),
        lat.join(",")
    );
}

//! Camera fan-out across processes.
//!
//! One writer process captures video (from `/dev/video0` when a camera and `v4l2src` exist,
//! else from a `videotestsrc` pattern) into a shmframe segment; three reader processes consume
//! the same frames independently:
//!
//! * `stats`: `shmframesrc ! fakesink`, reporting what the source reads;
//! * `snapshot`: one PNG every two seconds (`videorate ! pngenc ! multifilesink`);
//! * `recorder`: a Motion-JPEG AVI file (`jpegenc ! avimux ! filesink`).
//!
//! The readers are started before the writer (they wait for it). Every process is this same
//! binary started in a different role; the children print one machine-readable `stat` line per
//! second and the parent shows a table of frames per second, frames read, frames missed and
//! latency (writer's write time to the reader's push) per reader. After `--seconds` (or
//! Ctrl-C) the parent asks the writer for end-of-stream, which reaches every reader as EOS, so
//! the recording is finalised; it then checks that nothing is left in /dev/shm.
//!
//! ```text
//! cargo run --release --example demo -- [--seconds N] [--out DIR] [--source auto|camera|test]
//! ```

use gst::prelude::*;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const DEFAULT_SECONDS: u64 = 10;
/// How long the writer and the readers get to finish after end-of-stream was requested.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
const REPORT_INTERVAL: Duration = Duration::from_secs(1);
const CAMERA_DEVICE: &str = "/dev/video0";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    Writer,
    Stats,
    Snapshot,
    Recorder,
}

const READERS: [Role; 3] = [Role::Stats, Role::Snapshot, Role::Recorder];

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Writer => "writer",
            Role::Stats => "stats",
            Role::Snapshot => "snapshot",
            Role::Recorder => "recorder",
        }
    }

    fn parse(s: &str) -> Option<Role> {
        [Role::Writer, Role::Stats, Role::Snapshot, Role::Recorder]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Auto,
    Camera,
    Test,
}

struct Options {
    seconds: u64,
    out: Option<PathBuf>,
    source: Source,
    /// Set in child processes only.
    role: Option<Role>,
    shm_name: Option<String>,
}

const USAGE: &str = "\
usage: demo [--seconds N] [--out DIR] [--source auto|camera|test]

Camera fan-out: one writer process, three reader processes (stats, PNG snapshots,
recorder) sharing frames through a shmframe segment.

  --seconds N   run for N seconds (default 10); Ctrl-C ends earlier
  --out DIR     where snapshots and the recording go (default: a new directory in $TMPDIR)
  --source S    auto (camera if /dev/video0 exists, else test pattern), camera, or test";

fn parse_args() -> Result<Options, String> {
    let mut options = Options {
        seconds: DEFAULT_SECONDS,
        out: None,
        source: Source::Auto,
        role: None,
        shm_name: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |what: &str| {
            args.next()
                .ok_or_else(|| format!("{arg} needs a value ({what})\n\n{USAGE}"))
        };
        match arg.as_str() {
            "--seconds" => {
                let v = value("a number of seconds")?;
                options.seconds = v
                    .parse()
                    .map_err(|_| format!("--seconds expects a whole number, got {v:?}"))?;
            }
            "--out" => options.out = Some(PathBuf::from(value("a directory")?)),
            "--source" => {
                let v = value("auto, camera or test")?;
                options.source = match v.as_str() {
                    "auto" => Source::Auto,
                    "camera" => Source::Camera,
                    "test" => Source::Test,
                    _ => return Err(format!("--source expects auto, camera or test, got {v:?}")),
                };
            }
            "--role" => {
                let v = value("a role")?;
                options.role = Some(Role::parse(&v).ok_or_else(|| format!("unknown role {v:?}"))?);
            }
            "--shm-name" => options.shm_name = Some(value("a segment name")?),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument {arg:?}\n\n{USAGE}")),
        }
    }
    Ok(options)
}

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("demo: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match options.role {
        Some(role) => run_child(role, &options),
        None => run_parent(&options),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let who = options.role.map_or("demo", Role::as_str);
            eprintln!("{who}: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_gstreamer() -> Result<(), String> {
    gst::init().map_err(|e| format!("cannot initialise GStreamer: {e}"))?;
    gstshmframe::plugin_register_static()
        .map_err(|e| format!("cannot register the shmframe plugin: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Child processes: one pipeline each.

fn pipeline_description(role: Role, shm_name: &str, source: Source, out: &Path) -> String {
    let out = out.display();
    match role {
        Role::Writer => {
            let capture = if source == Source::Camera {
                format!(
                    "v4l2src device={CAMERA_DEVICE} ! videoconvert ! videoscale ! \
                     video/x-raw,format=RGBA,width=640,height=480"
                )
            } else {
                "videotestsrc is-live=true pattern=ball ! \
                 video/x-raw,width=640,height=480,framerate=30/1,format=RGBA"
                    .to_string()
            };
            // drop-oldest: like a camera, the writer never waits; a reader that falls more than
            // `depth` frames behind skips ahead and counts what it missed.
            format!(
                "{capture} ! shmframesink name=shm shm-name={shm_name} layout=ring depth=8 \
                 backpressure=drop-oldest"
            )
        }
        Role::Stats => format!("shmframesrc name=shm shm-name={shm_name} ! fakesink sync=false"),
        Role::Snapshot => format!(
            "shmframesrc name=shm shm-name={shm_name} ! videorate skip-to-first=true ! \
             video/x-raw,framerate=1/2 ! videoconvert ! pngenc ! \
             multifilesink location=\"{out}/snapshot-%05d.png\""
        ),
        Role::Recorder => format!(
            "shmframesrc name=shm shm-name={shm_name} ! videoconvert ! jpegenc quality=85 ! \
             avimux ! filesink location=\"{out}/recording.avi\""
        ),
    }
}

fn run_child(role: Role, options: &Options) -> Result<(), String> {
    let shm_name = options
        .shm_name
        .as_deref()
        .ok_or("child role without --shm-name")?;
    let out = options.out.as_deref().ok_or("child role without --out")?;
    init_gstreamer()?;

    let description = pipeline_description(role, shm_name, options.source, out);
    let pipeline = gst::parse::launch(&description)
        .map_err(|e| format!("cannot build pipeline `{description}`: {e}"))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| "parse::launch did not return a pipeline".to_string())?;
    let shm_element = pipeline
        .by_name("shm")
        .ok_or("the pipeline has no element named shm")?;

    // The parent writes `eos` (or goes away, closing our stdin) to end the stream cleanly.
    let weak_pipeline = pipeline.downgrade();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(l) if l.trim() == "eos" => break,
                Ok(_) => continue,
                Err(_) => break,
            }
        }
        if let Some(pipeline) = weak_pipeline.upgrade() {
            pipeline.send_event(gst::event::Eos::new());
        }
    });

    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| format!("cannot start pipeline `{description}`: {e}"))?;

    let bus = pipeline.bus().expect("a pipeline has a bus");
    let mut next_report = Instant::now() + REPORT_INTERVAL;
    let result = loop {
        let wait = next_report.saturating_duration_since(Instant::now());
        if let Some(msg) = bus.timed_pop(gst::ClockTime::from_nseconds(wait.as_nanos() as u64)) {
            use gst::MessageView;
            match msg.view() {
                MessageView::Eos(_) => break Ok(()),
                MessageView::Error(e) => {
                    break Err(format!(
                        "{} (from {}; {})",
                        e.error(),
                        msg.src().map(|s| s.path_string()).unwrap_or_default(),
                        e.debug().unwrap_or_default()
                    ));
                }
                MessageView::Warning(w) => eprintln!(
                    "{}: warning: {} ({})",
                    role.as_str(),
                    w.error(),
                    w.debug().unwrap_or_default()
                ),
                _ => {}
            }
        }
        if Instant::now() >= next_report {
            report_stats(role, &shm_element);
            next_report += REPORT_INTERVAL;
        }
    };
    report_stats(role, &shm_element);
    let _ = pipeline.set_state(gst::State::Null);
    println!("done role={}", role.as_str());
    result
}

/// A numeric `stats` field whatever integer type the element uses.
fn stat_field(stats: &gst::StructureRef, name: &str) -> Option<u64> {
    let value = stats.value(name).ok()?;
    value
        .get::<u64>()
        .ok()
        .or_else(|| value.get::<i64>().ok().map(|v| v.max(0) as u64))
        .or_else(|| value.get::<u32>().ok().map(u64::from))
        .or_else(|| value.get::<i32>().ok().map(|v| v.max(0) as u64))
        .or_else(|| value.get::<f64>().ok().map(|v| v.max(0.0) as u64))
}

/// Prints one `stat` line: `stat role=R key=value ...` (missing fields are left out).
fn report_stats(role: Role, shm_element: &gst::Element) {
    let stats = shm_element.property::<gst::Structure>("stats");
    let fields: &[&str] = if role == Role::Writer {
        &["frames-written", "frames-dropped", "readers"]
    } else {
        &[
            "frames-read",
            "frames-missed",
            "latency-mean",
            "latency-max",
        ]
    };
    let mut line = format!("stat role={}", role.as_str());
    for field in fields {
        if let Some(v) = stat_field(&stats, field) {
            line.push_str(&format!(" {field}={v}"));
        }
    }
    println!("{line}");
}

// ---------------------------------------------------------------------------------------------
// The parent: spawns the roles, shows the table, shuts everything down cleanly.

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_signal: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn install_interrupt_handler() {
    let handler: extern "C" fn(libc::c_int) = on_interrupt;
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe, and the
        // function lives for the whole program.
        unsafe { libc::signal(signal, handler as libc::sighandler_t) };
    }
}

struct Process {
    role: Role,
    child: Child,
    stdin: Option<ChildStdin>,
    exited: Option<std::process::ExitStatus>,
}

impl Process {
    fn spawn(
        role: Role,
        source: Source,
        shm_name: &str,
        out: &Path,
        lines: mpsc::Sender<(Role, String)>,
    ) -> Result<Process, String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find own binary: {e}"))?;
        let source_arg = if source == Source::Camera {
            "camera"
        } else {
            "test"
        };
        let mut child = Command::new(exe)
            .args(["--role", role.as_str(), "--shm-name", shm_name])
            .args(["--source", source_arg])
            .arg("--out")
            .arg(out)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // Own process group: Ctrl-C in the terminal reaches only the parent, which then
            // shuts the children down in order (writer EOS first).
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start the {} process: {e}", role.as_str()))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.send((role, line)).is_err() {
                    break;
                }
            }
        });
        Ok(Process {
            role,
            stdin: child.stdin.take(),
            child,
            exited: None,
        })
    }

    fn poll(&mut self) -> Option<std::process::ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    fn send(&mut self, command: &str) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = writeln!(stdin, "{command}");
        }
    }

    /// Waits until the process exited or `deadline` passed.
    fn wait_until(&mut self, deadline: Instant) -> Option<std::process::ExitStatus> {
        loop {
            if let Some(status) = self.poll() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if self.poll().is_none() {
            let _ = self.child.kill();
            self.exited = self.child.wait().ok();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The latest `stat` line of one role, and what the previous table row showed.
#[derive(Default)]
struct RoleStats {
    fields: BTreeMap<String, u64>,
    frames_at_last_row: Option<u64>,
    fps: Option<f64>,
    /// When the first and the latest frame count above zero arrived, for the average rate.
    first_frames: Option<(Instant, u64)>,
    last_frames: Option<(Instant, u64)>,
}

impl RoleStats {
    fn update(&mut self, line: &str) {
        if !line.starts_with("stat ") {
            return;
        }
        for word in line.split_whitespace().skip(2) {
            if let Some((key, value)) = word.split_once('=')
                && let Ok(v) = value.parse()
            {
                self.fields.insert(key.to_string(), v);
            }
        }
        if let Some(frames) = self.get("frames-read").filter(|&f| f > 0) {
            let now = Instant::now();
            self.first_frames.get_or_insert((now, frames));
            if self.last_frames.is_none_or(|(_, last)| last != frames) {
                self.last_frames = Some((now, frames));
            }
        }
    }

    /// Frames per second between the first and the latest frame count reported.
    fn average_fps(&self) -> Option<f64> {
        let ((t0, f0), (t1, f1)) = (self.first_frames?, self.last_frames?);
        let span = (t1 - t0).as_secs_f64();
        (span > 0.5).then(|| (f1 - f0) as f64 / span)
    }

    fn get(&self, key: &str) -> Option<u64> {
        self.fields.get(key).copied()
    }
}

fn format_count(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

fn format_ms(ns: Option<u64>) -> String {
    ns.map_or_else(
        || "-".to_string(),
        |ns| format!("{:.2} ms", ns as f64 / 1e6),
    )
}

/// Prints the table; `elapsed_since_row` is the time since the previous one, or `None` for
/// the final table, which shows each reader's average rate.
fn print_table(title: &str, stats: &mut BTreeMap<Role, RoleStats>, elapsed_since_row: Option<f64>) {
    if stats.values().all(|s| s.fields.is_empty()) {
        println!("{title}  waiting for the first frames...");
        return;
    }
    let writer = stats.entry(Role::Writer).or_default();
    println!(
        "{title}  writer: {} written, {} dropped, {} readers attached",
        format_count(writer.get("frames-written")),
        format_count(writer.get("frames-dropped")),
        format_count(writer.get("readers")),
    );
    println!(
        "    {:<10} {:>7} {:>8} {:>8} {:>13} {:>13}",
        "reader", "fps", "read", "missed", "latency mean", "latency max"
    );
    for role in READERS {
        let s = stats.entry(role).or_default();
        let frames = s.get("frames-read");
        match elapsed_since_row {
            Some(elapsed) => {
                if let (Some(now), Some(before)) = (frames, s.frames_at_last_row)
                    && elapsed > 0.0
                {
                    s.fps = Some(now.saturating_sub(before) as f64 / elapsed);
                }
            }
            None => s.fps = s.average_fps(),
        }
        if frames.is_some() {
            s.frames_at_last_row = frames;
        }
        println!(
            "    {:<10} {:>7} {:>8} {:>8} {:>13} {:>13}",
            role.as_str(),
            s.fps.map_or_else(|| "-".to_string(), |f| format!("{f:.1}")),
            format_count(frames),
            format_count(s.get("frames-missed")),
            format_ms(s.get("latency-mean")),
            format_ms(s.get("latency-max")),
        );
    }
}

fn choose_source(requested: Source) -> Result<Source, String> {
    let camera_present = Path::new(CAMERA_DEVICE).exists();
    let v4l2_available = gst::ElementFactory::find("v4l2src").is_some();
    match requested {
        Source::Test => Ok(Source::Test),
        Source::Camera if camera_present && v4l2_available => Ok(Source::Camera),
        Source::Camera => Err(format!(
            "--source camera needs {CAMERA_DEVICE} ({}) and v4l2src from \
             gstreamer1.0-plugins-good ({})",
            if camera_present { "found" } else { "missing" },
            if v4l2_available { "found" } else { "missing" }
        )),
        Source::Auto if camera_present && v4l2_available => Ok(Source::Camera),
        Source::Auto => Ok(Source::Test),
    }
}

/// Files a segment named `shm_name` may leave in /dev/shm (the segment and any half-created
/// temporary file of it).
fn leftover_segment_files(shm_name: &str) -> Vec<PathBuf> {
    let dir = gstshmframe::transport::shm_dir();
    let temp_prefix = format!(".shmframe-new-{shm_name}-");
    std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    name == shm_name || name.starts_with(&temp_prefix)
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

fn run_parent(options: &Options) -> Result<(), String> {
    init_gstreamer()?;
    for factory in ["shmframesink", "shmframesrc"] {
        if gst::ElementFactory::find(factory).is_none() {
            return Err(format!(
                "element {factory} is not registered; is the plugin built with its elements?"
            ));
        }
    }
    let source = choose_source(options.source)?;
    let shm_name = format!("shmframe-demo-{}", std::process::id());
    let out = options.out.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("shmframe-demo-{}", std::process::id()))
    });
    std::fs::create_dir_all(&out)
        .map_err(|e| format!("cannot create output directory {}: {e}", out.display()))?;
    let out = out.canonicalize().unwrap_or(out);

    install_interrupt_handler();
    println!(
        "shmframe demo: segment /dev/shm/{shm_name}, source {}, {} s (Ctrl-C ends earlier)",
        if source == Source::Camera {
            CAMERA_DEVICE
        } else {
            "videotestsrc (no camera found)"
        },
        options.seconds
    );
    for role in [Role::Writer, Role::Stats, Role::Snapshot, Role::Recorder] {
        println!(
            "  {:<9} gst-launch-1.0 {}",
            role.as_str(),
            pipeline_description(role, &shm_name, source, &out)
        );
    }

    let (line_tx, line_rx) = mpsc::channel();
    let mut processes = Vec::new();
    // Readers first: they wait for the writer, as a reader started before its camera would.
    for role in READERS {
        processes.push(Process::spawn(
            role,
            source,
            &shm_name,
            &out,
            line_tx.clone(),
        )?);
    }
    processes.push(Process::spawn(
        Role::Writer,
        source,
        &shm_name,
        &out,
        line_tx,
    )?);

    let mut stats: BTreeMap<Role, RoleStats> = BTreeMap::new();
    let started = Instant::now();
    let run_for = Duration::from_secs(options.seconds);
    let mut last_row = Instant::now();
    let mut next_row = last_row + REPORT_INTERVAL;
    let mut failure: Option<String> = None;

    // Run: collect `stat` lines, print a table each second.
    while started.elapsed() < run_for && !INTERRUPTED.load(Ordering::SeqCst) {
        let wait = next_row
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(100));
        if let Ok((role, line)) = line_rx.recv_timeout(wait) {
            stats.entry(role).or_default().update(&line);
        }
        if Instant::now() >= next_row {
            let now = Instant::now();
            let title = format!("[{:>3} s]", started.elapsed().as_secs());
            print_table(&title, &mut stats, Some((now - last_row).as_secs_f64()));
            last_row = now;
            next_row += REPORT_INTERVAL;
        }
        if let Some(p) = processes
            .iter_mut()
            .find_map(|p| p.poll().is_some().then_some(p))
        {
            failure = Some(format!(
                "the {} process ended early ({})",
                p.role.as_str(),
                p.exited.expect("polled")
            ));
            break;
        }
    }
    if INTERRUPTED.load(Ordering::SeqCst) {
        println!("interrupted: ending the stream");
    }

    // Shut down: EOS from the writer reaches every reader, which then finish their files.
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    let writer = processes
        .iter_mut()
        .find(|p| p.role == Role::Writer)
        .expect("writer spawned");
    writer.send("eos");
    if writer.wait_until(deadline).is_none() {
        eprintln!("demo: the writer did not stop within {SHUTDOWN_GRACE:?}; killing it");
        writer.kill();
    }
    let writer_ended_stream = writer.poll().is_some_and(|status| status.success());
    for p in processes.iter_mut().filter(|p| p.role != Role::Writer) {
        if !writer_ended_stream {
            // A failed writer sent no EOS; readers would wait for a new writer.
            p.send("eos");
        }
        if p.wait_until(deadline).is_none() {
            // The writer's EOS did not reach this reader: end it directly, then force it.
            p.send("eos");
            if p.wait_until(Instant::now() + Duration::from_secs(3))
                .is_none()
            {
                eprintln!("demo: the {} process is stuck; killing it", p.role.as_str());
                p.kill();
            }
        }
    }
    for p in processes.iter_mut() {
        p.stdin = None;
        match p.poll() {
            Some(status) if status.success() => {}
            Some(status) => {
                failure.get_or_insert_with(|| {
                    format!("the {} process failed ({status})", p.role.as_str())
                });
            }
            None => unreachable!("every process was waited for or killed"),
        }
    }
    drop(processes);
    // The reader threads end with their pipes; collect what they sent last.
    while let Ok((role, line)) = line_rx.recv_timeout(Duration::from_millis(200)) {
        stats.entry(role).or_default().update(&line);
    }
    print_table("final (fps: average over the run)", &mut stats, None);

    // Nothing may be left in /dev/shm.
    let leftovers = leftover_segment_files(&shm_name);
    if leftovers.is_empty() {
        println!("/dev/shm: clean (no segment named {shm_name} left)");
    } else {
        for path in &leftovers {
            let _ = std::fs::remove_file(path);
            println!("/dev/shm: removed leftover {}", path.display());
        }
        failure.get_or_insert_with(|| {
            format!("segment files were left in /dev/shm (now removed): {leftovers:?}")
        });
    }

    let mut snapshots: Vec<PathBuf> = std::fs::read_dir(&out)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "png"))
                .collect()
        })
        .unwrap_or_default();
    snapshots.sort();
    println!(
        "snapshots: {} PNG file(s) in {}{}",
        snapshots.len(),
        out.display(),
        snapshots
            .last()
            .map(|p| format!(" (latest {})", p.display()))
            .unwrap_or_default()
    );
    let recording = out.join("recording.avi");
    match std::fs::metadata(&recording) {
        Ok(m) => println!(
            "recording: {} ({} bytes, Motion-JPEG AVI; play it with \
             `gst-launch-1.0 playbin uri=file://{}`)",
            recording.display(),
            m.len(),
            recording.display()
        ),
        Err(_) => println!("recording: none written"),
    }

    match failure {
        Some(f) => Err(f),
        None => Ok(()),
    }
}

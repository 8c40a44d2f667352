//! The examples of docs/PYTHON.md, run as they are written: each section's code blocks are
//! taken from the document and started in the document's order, so the docs cannot drift from
//! what the code does. The environment keeps them apart from everything else on the machine
//! (segments in a directory of their own through SHMFRAME_DIR, a registry of their own) and
//! lets `autovideosink` fall back to `fakevideosink` where there is no display; the code is
//! not touched.
//!
//! Needs /usr/bin/python3 with numpy (scripts/setup.sh installs python3-numpy); without it the
//! tests print a notice and pass, as tests/python_interop.rs does.

mod common;

use common::{ChildGuard, built_plugin, wait_for};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const PYTHON: &str = "/usr/bin/python3";
const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/PYTHON.md");
/// Upper bound for any example; reached only when something is broken.
const LIMIT: Duration = Duration::from_secs(60);

fn python_ready(test: &str) -> bool {
    let ready = Command::new(PYTHON)
        .args(["-c", "import numpy"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ready {
        eprintln!("NOTICE: {test} skipped: {PYTHON} with numpy is missing; run scripts/setup.sh");
    }
    ready
}

/// The fenced code blocks (language, text) of the section headed `heading` (any level), up to
/// the next heading of the same or a higher level.
fn code_blocks(heading: &str) -> Vec<(String, String)> {
    let doc = std::fs::read_to_string(DOC).unwrap();
    let mut lines = doc.lines();
    let level = lines
        .by_ref()
        .find_map(|l| {
            let hashes = l.chars().take_while(|&c| c == '#').count();
            (hashes > 0 && l[hashes..].trim() == heading).then_some(hashes)
        })
        .unwrap_or_else(|| panic!("{DOC} has no section {heading:?}"));
    let mut blocks = Vec::new();
    let mut open: Option<(String, String)> = None;
    for line in lines {
        match open.take() {
            Some((lang, text)) if line.trim_start() == "```" => blocks.push((lang, text)),
            Some((lang, mut text)) => {
                text.push_str(line);
                text.push('\n');
                open = Some((lang, text));
            }
            None => {
                let hashes = line.chars().take_while(|&c| c == '#').count();
                if hashes > 0 && hashes <= level {
                    break;
                }
                if let Some(lang) = line.trim_start().strip_prefix("```") {
                    open = Some((lang.trim().to_string(), String::new()));
                }
            }
        }
    }
    blocks
}

/// The first block of language `lang` among `blocks`.
fn block<'a>(blocks: &'a [(String, String)], lang: &str) -> &'a str {
    blocks
        .iter()
        .find(|(l, _)| l == lang)
        .map(|(_, t)| t.as_str())
        .unwrap_or_else(|| panic!("no {lang} block in {blocks:#?}"))
}

/// A directory of its own for the segments and the registry of one test, removed on drop.
struct Sandbox(PathBuf);

impl Sandbox {
    fn new(test: &str) -> Sandbox {
        let dir = std::env::temp_dir().join(format!("shmframe-docs-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Sandbox(dir)
    }

    /// `program args` with the environment an example runs in; stdout and stderr come as
    /// lines on the returned channel.
    fn spawn(&self, program: &str, args: &[&str]) -> (ChildGuard, mpsc::Receiver<String>) {
        let plugin = built_plugin();
        let mut child = Command::new(program)
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("SHMFRAME_DIR", &self.0)
            .env("GST_PLUGIN_PATH", plugin.parent().unwrap())
            .env("GST_REGISTRY", self.0.join("registry.bin"))
            // Headless: autovideosink picks fakevideosink (which keeps the clock, as a display).
            .env("GST_PLUGIN_FEATURE_RANK", "fakevideosink:MAX")
            .env("GST_DEBUG", "shmframesrc:4")
            .env("GST_DEBUG_NO_COLOR", "1")
            // The module is on PYTHONPATH, as the set-up section says; print lines as they come.
            .env(
                "PYTHONPATH",
                Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python"),
            )
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        let (tx, lines) = mpsc::channel();
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let label = format!("{program} {}", args.join(" "));
        (ChildGuard { child, label }, lines)
    }

    /// A `sh` code block as a shell runs it (exec: signals reach the command itself).
    fn shell(&self, script: &str) -> (ChildGuard, mpsc::Receiver<String>) {
        self.spawn("sh", &["-c", &format!("exec {}", script.trim())])
    }

    fn python(&self, code: &str) -> (ChildGuard, mpsc::Receiver<String>) {
        self.spawn(PYTHON, &["-c", code])
    }

    /// Whether segment `name` exists.
    fn has_segment(&self, name: &str) -> bool {
        self.0.join(name).exists()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Waits for `child` to exit within LIMIT and returns its exit status and every line it printed.
fn finish(
    mut child: ChildGuard,
    lines: mpsc::Receiver<String>,
) -> (std::process::ExitStatus, Vec<String>) {
    let status = child.wait_timeout(LIMIT).unwrap_or_else(|| {
        let seen: Vec<String> = lines.try_iter().collect();
        panic!("{} did not finish within {LIMIT:?}: {seen:#?}", child.label)
    });
    // The pipes reach EOF once the process is gone.
    let mut seen = Vec::new();
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(5)) {
        seen.push(line);
    }
    (status, seen)
}

#[test]
#[ignore = "pure-Python module removed (protocol v2)"]
fn the_python_writer_example_runs_as_written() {
    let test = "the_python_writer_example_runs_as_written";
    if !python_ready(test) {
        return;
    }
    let blocks = code_blocks("Writing frames for GStreamer");
    let sandbox = Sandbox::new("writer");
    // The document's order: the Python program first, then the pipeline.
    let started = Instant::now();
    let (python, python_lines) = sandbox.python(block(&blocks, "python"));
    assert!(
        wait_for(LIMIT, || sandbox.has_segment("cam1")),
        "the writer created cam1"
    );
    std::thread::sleep(Duration::from_millis(500));
    let (launch, launch_lines) = sandbox.shell(block(&blocks, "sh"));
    let (status, printed) = finish(python, python_lines);
    let took = started.elapsed();
    assert!(status.success(), "the Python example failed: {printed:#?}");
    assert_eq!(printed, ["300 frames written"]);
    // 300 frames at 30 fps: the last one is due 299/30 s after the first.
    assert!(
        took >= Duration::from_millis(9_900),
        "fps=30 paces the writes: 300 frames took {took:?}"
    );
    let (status, printed) = finish(launch, launch_lines);
    assert!(status.success(), "gst-launch-1.0 failed: {printed:#?}");
    assert!(
        printed
            .iter()
            .any(|l| l.contains("EOS after 300 frames read, 0 missed")),
        "the reader got every frame, then EOS: {printed:#?}"
    );
}

#[test]
#[ignore = "pure-Python module removed (protocol v2)"]
fn the_python_reader_example_runs_as_written() {
    let test = "the_python_reader_example_runs_as_written";
    if !python_ready(test) {
        return;
    }
    let blocks = code_blocks("Reading frames a GStreamer pipeline publishes");
    let sandbox = Sandbox::new("reader");
    // The document's order: the pipeline first, then the Python program.
    let (launch, launch_lines) = sandbox.shell(block(&blocks, "sh"));
    // The example waits 5 s for the segment; a loaded machine may take longer to start
    // gst-launch-1.0 with a fresh registry.
    assert!(
        wait_for(LIMIT, || sandbox.has_segment("cam0")),
        "the pipeline created cam0"
    );
    let (python, python_lines) = sandbox.python(block(&blocks, "python"));
    // Frames as the example prints them: number, mean, frames missed.
    let mut frames = Vec::new();
    let deadline = Instant::now() + LIMIT;
    while frames.len() < 30 {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = python_lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("30 frames within {LIMIT:?}; got {frames:#?}"));
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields.len(), 3, "a frame line: {line:?}");
        let number: u64 = fields[0].parse().unwrap();
        let mean: f64 = fields[1].parse().unwrap();
        assert!(
            mean > 0.0 && mean < 255.0,
            "videotestsrc's colour bars: {line}"
        );
        frames.push(number);
    }
    assert!(
        frames.windows(2).all(|w| w[0] < w[1]),
        "in order: {frames:?}"
    );
    // Stopping the pipeline (Ctrl-C) ends the reader's loop cleanly.
    launch.signal(libc::SIGINT);
    let (_, _) = finish(launch, launch_lines);
    let (status, printed) = finish(python, python_lines);
    assert!(status.success(), "the Python example failed: {printed:#?}");
    assert_eq!(
        printed.last().map(String::as_str),
        Some("writer stopped cleanly"),
        "{printed:#?}"
    );
}

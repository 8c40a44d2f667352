//! Lock-step offload between two processes.
//!
//! Process A (the client) hands frames to process B (the worker) through the segment
//! `<name>-req`; B processes each frame (inverts every byte) and writes the result to
//! `<name>-resp`; A reads the results back and verifies each. Both segments are rings of depth 1
//! with `backpressure=block`, the shared-memory version of a semaphore-guarded put/get
//! hand-off: nothing is dropped and neither side runs ahead of the other.
//!
//! ```text
//! A:  appsrc ! shmframesink shm-name=<name>-req sync=false layout=ring depth=1 backpressure=block
//! B:  shmframesrc shm-name=<name>-req start=oldest ! appsink      (invert)
//!     appsrc ! shmframesink shm-name=<name>-resp sync=false layout=ring depth=1 backpressure=block
//! A:  shmframesrc shm-name=<name>-resp start=oldest ! appsink     (verify)
//! ```
//!
//! A sends frame n+1 only after the result of frame n came back. Both roles are this binary;
//! A starts B with `std::env::current_exe()`.
//!
//! ```text
//! cargo run --release --example offload -- [--frames N]
//! ```

use gst::prelude::*;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

const WIDTH: u32 = 640;
const HEIGHT: u32 = 480;
const DEFAULT_FRAMES: u64 = 100;
/// Bound on every wait for one frame; the worker's own end is bounded by the client's EOS.
const FRAME_WAIT: Duration = Duration::from_secs(10);

fn fill_frame(frame: u64, data: &mut [u8]) {
    let (head, rest) = data.split_at_mut(8);
    head.copy_from_slice(&frame.to_le_bytes());
    for (i, byte) in rest.iter_mut().enumerate() {
        *byte = (i as u64)
            .wrapping_mul(3)
            .wrapping_add(frame.wrapping_mul(11)) as u8;
    }
}

fn init_gstreamer() -> Result<(), String> {
    gst::init().map_err(|e| format!("cannot initialise GStreamer: {e}"))?;
    gstshmframe::plugin_register_static()
        .map_err(|e| format!("cannot register the shmframe plugin: {e}"))
}

fn launch(description: &str) -> Result<gst::Pipeline, String> {
    gst::parse::launch(description)
        .map_err(|e| format!("cannot build `{description}`: {e}"))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| format!("`{description}` is not a pipeline"))
}

fn by_name<T: IsA<gst::Element>>(pipeline: &gst::Pipeline, name: &str) -> T {
    pipeline
        .by_name(name)
        .unwrap_or_else(|| panic!("element {name} is in the pipeline"))
        .downcast::<T>()
        .unwrap_or_else(|_| panic!("element {name} has the expected type"))
}

/// The first error message on `pipeline`'s bus, if any (does not wait).
fn bus_error(pipeline: &gst::Pipeline) -> Option<String> {
    let bus = pipeline.bus()?;
    while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
        if let gst::MessageView::Error(e) = msg.view() {
            return Some(format!(
                "{} (from {}; {})",
                e.error(),
                msg.src().map(|s| s.path_string()).unwrap_or_default(),
                e.debug().unwrap_or_default()
            ));
        }
    }
    None
}

/// Waits for EOS (or an error) on `pipeline`'s bus.
fn wait_eos(pipeline: &gst::Pipeline, limit: Duration) -> Result<(), String> {
    let bus = pipeline.bus().expect("a pipeline has a bus");
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_nseconds(limit.as_nanos() as u64),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .ok_or_else(|| format!("no end-of-stream within {limit:?}"))?;
    match msg.view() {
        gst::MessageView::Error(e) => {
            Err(format!("{} ({})", e.error(), e.debug().unwrap_or_default()))
        }
        _ => Ok(()),
    }
}

/// The sink half of a hand-off: `appsrc ! shmframesink depth=1 backpressure=block`.
/// `sync=false`: hand each frame over as soon as it is pushed instead of pacing frames by their
/// timestamps.
fn hand_off_pipeline(shm_name: &str) -> Result<gst::Pipeline, String> {
    launch(&format!(
        "appsrc name=in format=time ! shmframesink shm-name={shm_name} sync=false layout=ring \
         depth=1 backpressure=block"
    ))
}

/// The source half: `shmframesrc start=oldest ! appsink`; `start=oldest` picks up a frame
/// written before this reader attached.
fn receive_pipeline(shm_name: &str) -> Result<gst::Pipeline, String> {
    launch(&format!(
        "shmframesrc shm-name={shm_name} start=oldest ! appsink name=out sync=false"
    ))
}

// ---------------------------------------------------------------------------------------------
// Process B: invert every frame from `<name>-req` into `<name>-resp` until end-of-stream.

fn run_worker(name: &str) -> Result<(), String> {
    init_gstreamer()?;
    let requests = receive_pipeline(&format!("{name}-req"))?;
    let responses = hand_off_pipeline(&format!("{name}-resp"))?;
    let appsink: gst_app::AppSink = by_name(&requests, "out");
    let appsrc: gst_app::AppSrc = by_name(&responses, "in");

    // If the client goes away (our stdin closes), end the request stream so we finish too.
    let weak_requests = requests.downgrade();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        if let Some(p) = weak_requests.upgrade() {
            p.send_event(gst::event::Eos::new());
        }
    });

    let result = (|| {
        requests
            .set_state(gst::State::Playing)
            .map_err(|e| format!("cannot start the request reader: {e}"))?;
        responses
            .set_state(gst::State::Playing)
            .map_err(|e| format!("cannot start the response writer: {e}"))?;
        let mut processed = 0u64;
        loop {
            // Pulls block until the next request or EOS; the client bounds the whole exchange.
            let Ok(sample) = appsink.pull_sample() else {
                break; // EOS
            };
            let caps = sample.caps_owned().ok_or("a request without caps")?;
            if appsrc.caps().as_ref() != Some(&caps) {
                appsrc.set_caps(Some(&caps));
            }
            let request = sample.buffer().ok_or("a request without buffer")?;
            let input = request
                .map_readable()
                .map_err(|e| format!("cannot map request: {e}"))?;
            let mut result = gst::Buffer::with_size(input.len())
                .map_err(|e| format!("cannot allocate a result: {e}"))?;
            {
                let result = result.get_mut().expect("new buffer is writable");
                result.set_pts(request.pts());
                result.set_duration(request.duration());
                let mut output = result.map_writable().expect("new buffer maps writable");
                for (o, i) in output.iter_mut().zip(input.iter()) {
                    *o = !*i;
                }
            }
            appsrc
                .push_buffer(result)
                .map_err(|e| format!("cannot push result {processed}: {e:?}"))?;
            processed += 1;
        }
        if let Some(e) = bus_error(&requests) {
            return Err(e);
        }
        appsrc
            .end_of_stream()
            .map_err(|e| format!("cannot end the response stream: {e:?}"))?;
        wait_eos(&responses, FRAME_WAIT)?;
        eprintln!("worker: processed {processed} frames");
        Ok(())
    })();
    let _ = requests.set_state(gst::State::Null);
    let _ = responses.set_state(gst::State::Null);
    result
}

// ---------------------------------------------------------------------------------------------
// Process A: send frames one at a time and verify each result.

/// Kills and reaps the worker if the client returns early.
struct WorkerGuard(Child);

impl Drop for WorkerGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Removes the segment files if a process died before it could unlink them.
struct SegmentGuard(Vec<String>);

impl Drop for SegmentGuard {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = std::fs::remove_file(gstshmframe::transport::shm_dir().join(name));
        }
    }
}

struct Summary {
    frames: u64,
    mean_round_trip: Duration,
    max_round_trip: Duration,
}

/// Starts process B: this binary with `--worker NAME`. In the example's test binary (`cargo
/// test --examples`) it is the test `tests::worker_role`, with the name in the environment.
fn spawn_worker(name: &str) -> std::io::Result<Child> {
    let mut command = Command::new(std::env::current_exe()?);
    if cfg!(test) {
        command
            .args([
                "tests::worker_role",
                "--exact",
                "--nocapture",
                "--test-threads=1",
                "-q",
            ])
            .env(WORKER_ENV, name)
            .stdout(Stdio::null());
    } else {
        command.args(["--worker", name]).stdout(Stdio::inherit());
    }
    command
        .stdin(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
}

/// Names the worker's segments when it runs as a test (see `spawn_worker`).
const WORKER_ENV: &str = "SHMFRAME_OFFLOAD_WORKER";

fn run_client(frames: u64) -> Result<Summary, String> {
    init_gstreamer()?;
    let name = format!("shmframe-offload-{}", std::process::id());
    let segments = SegmentGuard(vec![format!("{name}-req"), format!("{name}-resp")]);

    let mut worker =
        WorkerGuard(spawn_worker(&name).map_err(|e| format!("cannot start the worker: {e}"))?);

    let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::Gray8, WIDTH, HEIGHT)
        .fps(gst::Fraction::new(30, 1))
        .build()
        .map_err(|e| format!("video info: {e}"))?;
    let caps = info.to_caps().map_err(|e| format!("caps: {e}"))?;
    let frame_size = info.size();
    let frame_duration = gst::ClockTime::from_nseconds(1_000_000_000 / 30);

    let requests = hand_off_pipeline(&segments.0[0])?;
    let responses = receive_pipeline(&segments.0[1])?;
    let appsrc: gst_app::AppSrc = by_name(&requests, "in");
    let appsink: gst_app::AppSink = by_name(&responses, "out");
    appsrc.set_caps(Some(&caps));

    let result = (|| {
        responses
            .set_state(gst::State::Playing)
            .map_err(|e| format!("cannot start the result reader: {e}"))?;
        requests
            .set_state(gst::State::Playing)
            .map_err(|e| format!("cannot start the request writer: {e}"))?;

        let mut total = Duration::ZERO;
        let mut max = Duration::ZERO;
        let mut expected = vec![0u8; frame_size];
        for n in 0..frames {
            let mut buffer = gst::Buffer::with_size(frame_size)
                .map_err(|e| format!("cannot allocate a frame: {e}"))?;
            {
                let buffer = buffer.get_mut().expect("new buffer is writable");
                buffer.set_pts(frame_duration * n);
                buffer.set_duration(frame_duration);
                let mut map = buffer.map_writable().expect("new buffer maps writable");
                fill_frame(n, &mut map);
            }
            let sent = Instant::now();
            appsrc
                .push_buffer(buffer)
                .map_err(|e| format!("appsrc refused frame {n}: {e:?}"))?;

            let sample = appsink
                .try_pull_sample(gst::ClockTime::from_nseconds(FRAME_WAIT.as_nanos() as u64))
                .ok_or_else(|| {
                    bus_error(&requests)
                        .or_else(|| bus_error(&responses))
                        .unwrap_or_else(|| format!("no result for frame {n} within {FRAME_WAIT:?}"))
                })?;
            let round_trip = sent.elapsed();
            total += round_trip;
            max = max.max(round_trip);

            let buffer = sample.buffer().ok_or("a result without buffer")?;
            let result = buffer
                .map_readable()
                .map_err(|e| format!("cannot map result {n}: {e}"))?;
            fill_frame(n, &mut expected);
            if result.len() != expected.len() {
                return Err(format!(
                    "result {n}: {} bytes, expected {}",
                    result.len(),
                    expected.len()
                ));
            }
            if let Some(i) = result.iter().zip(&expected).position(|(r, e)| *r != !*e) {
                return Err(format!(
                    "result {n}: byte {i} is {:#04x}, expected {:#04x} (the inverse of {:#04x})",
                    result[i], !expected[i], expected[i]
                ));
            }
        }
        appsrc
            .end_of_stream()
            .map_err(|e| format!("appsrc refused end-of-stream: {e:?}"))?;
        // The worker ends its result stream when ours ends: EOS comes back.
        let deadline = Instant::now() + FRAME_WAIT;
        while !appsink.is_eos() {
            if appsink
                .try_pull_sample(gst::ClockTime::from_mseconds(100))
                .is_some()
            {
                return Err("an extra result arrived after the last frame".to_string());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the worker did not end its result stream within {FRAME_WAIT:?}"
                ));
            }
        }
        Ok(Summary {
            frames,
            mean_round_trip: total / frames.max(1) as u32,
            max_round_trip: max,
        })
    })();

    let _ = requests.set_state(gst::State::Null);
    let _ = responses.set_state(gst::State::Null);
    let summary = result?;

    // The worker finishes once both streams ended.
    drop(worker.0.stdin.take());
    let deadline = Instant::now() + FRAME_WAIT;
    let status = loop {
        if let Some(status) = worker.0.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if Instant::now() >= deadline {
            return Err(format!("the worker did not exit within {FRAME_WAIT:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if !status.success() {
        return Err(format!("the worker failed ({status})"));
    }
    for segment in &segments.0 {
        if gstshmframe::transport::shm_dir().join(segment).exists() {
            return Err(format!("/dev/shm/{segment} was left behind"));
        }
    }
    Ok(summary)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["--worker", name] => match run_worker(name) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("worker: error: {e}");
                ExitCode::FAILURE
            }
        },
        [] | ["--frames", _] => {
            let frames = match args.as_slice() {
                ["--frames", n] => match n.parse::<u64>() {
                    Ok(n) if n > 0 => n,
                    _ => {
                        eprintln!("--frames expects a positive number, got {n:?}");
                        return ExitCode::from(2);
                    }
                },
                _ => DEFAULT_FRAMES,
            };
            match run_client(frames) {
                Ok(s) => {
                    println!(
                        "OK: {} frames of {WIDTH}x{HEIGHT} GRAY8 offloaded in lock-step and \
                         verified; round trip mean {:.2} ms, max {:.2} ms",
                        s.frames,
                        s.mean_round_trip.as_secs_f64() * 1e3,
                        s.max_round_trip.as_secs_f64() * 1e3
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("FAILED: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        _ => {
            eprintln!("usage: offload [--frames N]");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole example, worker process included: every result must be the inverse of its
    /// frame (`run_client` compares every byte) and both segments must be gone afterwards.
    #[test]
    fn offload_round_trip() {
        if std::env::var_os(WORKER_ENV).is_some() {
            return; // this process is a worker
        }
        let summary = run_client(20).unwrap_or_else(|e| panic!("offload failed: {e}"));
        assert_eq!(summary.frames, 20);
    }

    /// Process B when the client runs under the test harness; does nothing otherwise.
    #[test]
    fn worker_role() {
        let Ok(name) = std::env::var(WORKER_ENV) else {
            return;
        };
        run_worker(&name).unwrap_or_else(|e| panic!("worker failed: {e}"));
    }
}

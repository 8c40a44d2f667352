//! An application embedding both elements in one program.
//!
//! Two pipelines in the same process share frames through a shmframe segment:
//!
//! ```text
//! appsrc ! shmframesink shm-name=<name> shape=320x240:RGBA sync=false layout=ring depth=8 backpressure=block
//! shmframesrc shm-name=<name> start=oldest ! appsink
//! ```
//!
//! The program pushes numbered frames with a counter pattern, reads every one back through the
//! appsink and checks frame number, caps and content, then uses the source's `get-frame` action
//! signal to fetch frames the writer still holds by number (random access). It prints a summary
//! and exits non-zero on any mismatch.
//!
//! ```text
//! cargo run --example app -- [--frames N]
//! ```

use gst::prelude::*;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

const WIDTH: u32 = 320;
const HEIGHT: u32 = 240;
const DEFAULT_FRAMES: u64 = 64;
const DEPTH: u32 = 8;
const WAIT_LIMIT: Duration = Duration::from_secs(10);

/// Frame content: the frame number in the first 8 bytes, then bytes that depend on both the
/// frame number and their position, so a frame from elsewhere or a torn copy is detected.
fn fill_frame(frame: u64, data: &mut [u8]) {
    let (head, rest) = data.split_at_mut(8);
    head.copy_from_slice(&frame.to_le_bytes());
    for (i, byte) in rest.iter_mut().enumerate() {
        *byte = (i as u64)
            .wrapping_mul(7)
            .wrapping_add(frame.wrapping_mul(13)) as u8;
    }
}

fn check_frame(frame: u64, data: &[u8], expected_size: usize) -> Result<(), String> {
    if data.len() != expected_size {
        return Err(format!(
            "frame {frame}: expected {expected_size} bytes, got {}",
            data.len()
        ));
    }
    let mut expected = vec![0u8; expected_size];
    fill_frame(frame, &mut expected);
    match data.iter().zip(&expected).position(|(a, b)| a != b) {
        None => Ok(()),
        Some(i) => Err(format!(
            "frame {frame}: byte {i} is {:#04x}, expected {:#04x} (the frame carries number {})",
            data[i],
            expected[i],
            u64::from_le_bytes(data[..8].try_into().expect("8 bytes"))
        )),
    }
}

/// Removes the segment file if something went wrong before the sink could unlink it.
struct SegmentGuard(String);

impl Drop for SegmentGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(gstshmframe::transport::shm_dir().join(&self.0));
    }
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

struct Summary {
    pushed: u64,
    received: u64,
    random_access_held: Vec<u64>,
}

fn run(frames: u64) -> Result<Summary, String> {
    gst::init().map_err(|e| format!("cannot initialise GStreamer: {e}"))?;
    gstshmframe::plugin_register_static()
        .map_err(|e| format!("cannot register the shmframe plugin: {e}"))?;

    let shm_name = format!("shmframe-app-{}", std::process::id());
    let _segment_guard = SegmentGuard(shm_name.clone());
    let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgba, WIDTH, HEIGHT)
        .fps(gst::Fraction::new(30, 1))
        .build()
        .map_err(|e| format!("video info: {e}"))?;
    let caps = info.to_caps().map_err(|e| format!("caps: {e}"))?;
    let frame_size = info.size();
    let frame_duration = gst::ClockTime::from_nseconds(1_000_000_000 / 30);

    // `shape` makes the sink create the segment at start, before the first caps, so the reader
    // can attach before any frame is written; `block` then guarantees it gets every frame.
    // `sync=false`: these frames are not real-time, so the sink does not pace them.
    let writer = launch(&format!(
        "appsrc name=frames format=time block=true ! \
         shmframesink name=sink shm-name={shm_name} shape={WIDTH}x{HEIGHT}:RGBA sync=false \
         layout=ring depth={DEPTH} backpressure=block"
    ))?;
    let reader = launch(&format!(
        "shmframesrc name=src shm-name={shm_name} start=oldest ! appsink name=frames sync=false"
    ))?;
    let appsrc: gst_app::AppSrc = by_name(&writer, "frames");
    let sink: gst::Element = by_name(&writer, "sink");
    let src: gst::Element = by_name(&reader, "src");
    let appsink: gst_app::AppSink = by_name(&reader, "frames");
    appsrc.set_caps(Some(&caps));

    let (attached_tx, attached_rx) = mpsc::channel();
    sink.connect("reader-attached", false, move |args| {
        let pid = args.get(1).and_then(|v| {
            v.get::<u32>()
                .ok()
                .or_else(|| v.get::<i32>().ok().map(|p| p as u32))
                .or_else(|| v.get::<u64>().ok().map(|p| p as u32))
        });
        let _ = attached_tx.send(pid);
        None
    });

    let result = (|| {
        // The reader first: it waits for the writer.
        reader
            .set_state(gst::State::Playing)
            .map_err(|e| format!("cannot start the reader pipeline: {e}"))?;
        writer
            .set_state(gst::State::Playing)
            .map_err(|e| format!("cannot start the writer pipeline: {e}"))?;

        // Reading `stats` makes the sink look at its reader table now (it also does so on
        // every write), which emits `reader-attached` for a reader that arrived meanwhile.
        let deadline = Instant::now() + WAIT_LIMIT;
        loop {
            let _ = sink.property::<gst::Structure>("stats");
            if let Ok(pid) = attached_rx.recv_timeout(Duration::from_millis(50)) {
                println!(
                    "reader attached (pid {})",
                    pid.map_or("?".to_string(), |p| p.to_string())
                );
                break;
            }
            if let Some(e) = bus_error(&writer).or_else(|| bus_error(&reader)) {
                return Err(e);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the reader did not attach within {WAIT_LIMIT:?} (no reader-attached signal)"
                ));
            }
        }

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
            appsrc
                .push_buffer(buffer)
                .map_err(|e| format!("appsrc refused frame {n}: {e:?}"))?;
        }
        appsrc
            .end_of_stream()
            .map_err(|e| format!("appsrc refused end-of-stream: {e:?}"))?;
        println!("pushed {frames} frames of {WIDTH}x{HEIGHT} RGBA ({frame_size} bytes each)");

        // Read every frame back, in order, until the writer's EOS.
        let mut received = 0u64;
        let mut first_offset = None;
        loop {
            let Some(sample) = appsink.try_pull_sample(gst::ClockTime::from_seconds(5)) else {
                if appsink.is_eos() {
                    break;
                }
                return Err(bus_error(&reader)
                    .or_else(|| bus_error(&writer))
                    .unwrap_or_else(|| {
                        format!("no frame and no EOS within 5 s after {received} frames")
                    }));
            };
            let sample_caps = sample.caps().ok_or("a sample without caps")?;
            let sample_info = gst_video::VideoInfo::from_caps(sample_caps)
                .map_err(|e| format!("the source's caps {sample_caps} are not video: {e}"))?;
            if (
                sample_info.format(),
                sample_info.width(),
                sample_info.height(),
            ) != (info.format(), info.width(), info.height())
            {
                return Err(format!(
                    "the source negotiated {sample_caps}, the writer had {caps}"
                ));
            }
            let buffer = sample.buffer().ok_or("a sample without buffer")?;
            let offset = buffer.offset();
            let first = *first_offset.get_or_insert(offset);
            if offset != first + received {
                return Err(format!(
                    "frame {received}: buffer offset {offset}, expected {} (frames lost or \
                     reordered)",
                    first + received
                ));
            }
            let map = buffer
                .map_readable()
                .map_err(|e| format!("cannot map frame {received}: {e}"))?;
            check_frame(received, &map, frame_size)?;
            received += 1;
        }
        if received != frames {
            return Err(format!("pushed {frames} frames, received {received}"));
        }
        println!("received {received} frames in order, content verified");

        // Random access: frames the writer still holds, by number, without disturbing anyone.
        let first = first_offset.unwrap_or(0);
        let mut held = Vec::new();
        for n in 0..frames {
            let sample = src.emit_by_name::<Option<gst::Sample>>("get-frame", &[&(first + n)]);
            if let Some(sample) = sample {
                let buffer = sample
                    .buffer()
                    .ok_or("get-frame returned a sample without buffer")?;
                let map = buffer
                    .map_readable()
                    .map_err(|e| format!("cannot map frame {n}: {e}"))?;
                check_frame(n, &map, frame_size).map_err(|e| format!("get-frame: {e}"))?;
                held.push(n);
            }
        }
        if held.last() != Some(&(frames - 1)) {
            return Err(format!(
                "get-frame did not return the newest frame {} (frames held: {held:?})",
                frames - 1
            ));
        }
        if frames > u64::from(DEPTH) * 4 && held.first() == Some(&0) {
            return Err(format!(
                "get-frame returned frame 0, which a depth-{DEPTH} ring must have overwritten"
            ));
        }
        if let Some(sample) =
            src.emit_by_name::<Option<gst::Sample>>("get-frame", &[&(first + frames + 100)])
        {
            return Err(format!(
                "get-frame returned a sample for a frame never written: {sample:?}"
            ));
        }
        println!(
            "get-frame: frames {}..={} still held, {} verified; older and future frames -> NULL",
            held.first().expect("not empty"),
            held.last().expect("not empty"),
            held.len()
        );
        Ok(Summary {
            pushed: frames,
            received,
            random_access_held: held,
        })
    })();

    let _ = reader.set_state(gst::State::Null);
    let _ = writer.set_state(gst::State::Null);
    let summary = result?;

    if gstshmframe::transport::shm_dir().join(&shm_name).exists() {
        return Err(format!(
            "/dev/shm/{shm_name} still exists after the sink stopped"
        ));
    }
    Ok(summary)
}

fn main() -> ExitCode {
    let mut frames = DEFAULT_FRAMES;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next().map(|v| v.parse::<u64>())) {
            ("--frames", Some(Ok(n))) if n > 0 => frames = n,
            _ => {
                eprintln!("usage: app [--frames N]   (N > 0, default {DEFAULT_FRAMES})");
                return ExitCode::from(2);
            }
        }
    }
    match run(frames) {
        Ok(s) => {
            println!(
                "OK: {} pushed, {} received and verified, {} fetched by number with get-frame",
                s.pushed,
                s.received,
                s.random_access_held.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    /// The whole example: every frame read back in order with its content, caps checked, and
    /// `get-frame` returning exactly the frames the ring still holds (`run` checks all of it).
    #[test]
    fn app_round_trip() {
        let summary = super::run(40).unwrap_or_else(|e| panic!("app failed: {e}"));
        assert_eq!((summary.pushed, summary.received), (40, 40));
        assert_eq!(
            summary.random_access_held.last(),
            Some(&39),
            "get-frame must return the newest frame"
        );
    }
}

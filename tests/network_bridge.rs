//! The network bridge recipe of docs/NETWORK.md on loopback: fan-out continues past one machine
//! with GStreamer's own network elements, no shmframe wire protocol involved.
//!
//! ```text
//! source:   videotestsrc ! shmframesink shm-name=X
//! sender:   shmframesrc shm-name=X ! rtpvrawpay ! udpsink host=127.0.0.1 port=P
//! receiver: udpsrc address=127.0.0.1 port=P caps="application/x-rtp,…" ! rtpvrawdepay
//!           ! shmframesink shm-name=Y
//! consumer: shmframesrc shm-name=Y ! appsink
//! ```
//!
//! The four pipelines run in this process (the plugin is registered statically); between them
//! are two segments and a UDP socket on 127.0.0.1. UDP may lose packets, so the test checks that
//! frames arrive with the right caps and the right content (every frame of the static pattern is
//! identical), not that every frame arrives.

mod common;

use common::{ShmName, init, prerequisite};
use gst::prelude::*;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);
const WIDTH: u32 = 64;
const HEIGHT: u32 = 48;
const FRAMES: u32 = 60;

/// Whether the RTP and UDP elements are installed (see `common::prerequisite`).
fn elements_ready(test: &str) -> bool {
    init();
    let missing: Vec<&str> = [
        "shmframesink",
        "shmframesrc",
        "rtpvrawpay",
        "rtpvrawdepay",
        "udpsink",
        "udpsrc",
    ]
    .into_iter()
    .filter(|f| gst::ElementFactory::find(f).is_none())
    .collect();
    prerequisite(
        test,
        (!missing.is_empty()).then(|| {
            format!(
                "elements missing: {missing:?} (gstreamer1.0-plugins-good: run scripts/setup.sh)"
            )
        }),
    )
}

/// A free UDP port on the loopback interface (the OS picks it; the socket is closed again).
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A pipeline set to NULL when dropped (also when an assertion fails).
struct Pipe {
    pipeline: gst::Pipeline,
    what: &'static str,
    warnings: std::cell::RefCell<Vec<String>>,
}

impl Pipe {
    fn launch(what: &'static str, description: &str) -> Pipe {
        let pipeline = gst::parse::launch(description)
            .unwrap_or_else(|e| panic!("{what}: {e}: {description}"))
            .downcast::<gst::Pipeline>()
            .unwrap();
        Pipe {
            pipeline,
            what,
            warnings: Default::default(),
        }
    }

    fn play(&self) {
        self.pipeline
            .set_state(gst::State::Playing)
            .unwrap_or_else(|e| panic!("{}: cannot play: {e}", self.what));
    }

    /// Panics on an error message; true once EOS was posted. Keeps the warnings.
    fn poll_eos(&self) -> bool {
        let bus = self.pipeline.bus().unwrap();
        while let Some(msg) = bus.pop() {
            match msg.view() {
                gst::MessageView::Error(e) => {
                    panic!("{}: {} ({:?})", self.what, e.error(), e.debug())
                }
                gst::MessageView::Warning(w) => {
                    self.warnings
                        .borrow_mut()
                        .push(format!("{} ({:?})", w.error(), w.debug()))
                }
                gst::MessageView::Eos(_) => return true,
                _ => {}
            }
        }
        false
    }

    /// The warnings posted so far, as `text (debug)`.
    fn warnings(&self) -> Vec<String> {
        self.poll_eos();
        self.warnings.borrow().clone()
    }

    fn appsink(&self, name: &str) -> gst_app::AppSink {
        self.pipeline
            .by_name(name)
            .unwrap()
            .downcast::<gst_app::AppSink>()
            .unwrap()
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

fn raw_caps() -> String {
    format!("video/x-raw,format=RGBA,width={WIDTH},height={HEIGHT},framerate=30/1")
}

/// One frame of the static `smpte100` pattern (plain colour bars), as every frame of the source is.
fn reference_frame() -> Vec<u8> {
    let pipe = Pipe::launch(
        "reference",
        &format!(
            "videotestsrc num-buffers=1 pattern=smpte100 ! {} ! appsink name=out sync=false",
            raw_caps()
        ),
    );
    pipe.play();
    let sample = pipe
        .appsink("out")
        .try_pull_sample(gst::ClockTime::from_seconds(LIMIT.as_secs()))
        .expect("reference frame");
    sample.buffer().unwrap().map_readable().unwrap().to_vec()
}

#[test]
fn rtp_raw_video_bridge_over_loopback_udp() {
    if !elements_ready("rtp_raw_video_bridge_over_loopback_udp") {
        return;
    }
    let reference = reference_frame();
    let here = ShmName::new("bridge-here");
    let there = ShmName::new("bridge-there");
    let port = free_udp_port();

    // Started consumer first: every shmframesrc waits for its writer.
    let consumer = Pipe::launch(
        "consumer",
        &format!(
            "shmframesrc shm-name={} ! appsink name=out sync=false",
            there.as_str()
        ),
    );
    // RTP raw video carries no caps in band: the receiver states them (as the payloader
    // announces them; `gst-launch-1.0 -v` on the sender prints them). The queue gives the
    // receiver the buffering udpsrc lacks: without it the sink warns, at each latency
    // query, "Pipeline construction is invalid, please add queues".
    let receiver = Pipe::launch(
        "receiver",
        &format!(
            "udpsrc address=127.0.0.1 port={port} caps=\"application/x-rtp, media=video, \
             clock-rate=90000, encoding-name=RAW, sampling=RGBA, depth=(string)8, \
             width=(string){WIDTH}, height=(string){HEIGHT}, colorimetry=(string)SMPTE240M, \
             payload=96\" ! rtpvrawdepay ! queue ! shmframesink shm-name={}",
            there.as_str()
        ),
    );
    let sender = Pipe::launch(
        "sender",
        &format!(
            "shmframesrc shm-name={} ! rtpvrawpay ! udpsink host=127.0.0.1 port={port} sync=false",
            here.as_str()
        ),
    );
    let source = Pipe::launch(
        "source",
        &format!(
            "videotestsrc is-live=true num-buffers={FRAMES} pattern=smpte100 ! {} ! \
             shmframesink shm-name={}",
            raw_caps(),
            here.as_str()
        ),
    );
    consumer.play();
    receiver.play();
    sender.play();
    source.play();

    let out = consumer.appsink("out");
    let deadline = Instant::now() + LIMIT;
    let (mut source_eos, mut sender_eos) = (false, false);
    let mut received: Vec<u64> = Vec::new();
    let mut last_arrival = Instant::now();
    loop {
        assert!(
            Instant::now() < deadline,
            "bridge did not finish within {LIMIT:?}; received {received:?}"
        );
        source_eos |= source.poll_eos();
        sender_eos |= sender.poll_eos();
        receiver.poll_eos();
        consumer.poll_eos();
        // EOS does not cross UDP: once the sender has finished, wait until frames stop coming.
        if sender_eos && last_arrival.elapsed() > Duration::from_secs(2) {
            break;
        }
        if received.len() as u32 == FRAMES && sender_eos {
            break;
        }
        let Some(sample) = out.try_pull_sample(gst::ClockTime::from_mseconds(100)) else {
            continue;
        };
        last_arrival = Instant::now();
        let info = gst_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
        assert_eq!(
            (info.format(), info.width(), info.height()),
            (gst_video::VideoFormat::Rgba, WIDTH, HEIGHT),
            "caps after the bridge: {:?}",
            sample.caps()
        );
        let buffer = sample.buffer().unwrap();
        let map = buffer.map_readable().unwrap();
        assert_eq!(map.len(), reference.len());
        let differing = map.iter().zip(&reference).filter(|(a, b)| a != b).count();
        let first = map.iter().zip(&reference).position(|(a, b)| a != b);
        assert_eq!(
            differing,
            0,
            "frame {} after RTP and two segments differs from the source pattern (first \
             difference at byte {first:?})",
            buffer.offset()
        );
        received.push(buffer.offset());
    }
    while !source_eos && Instant::now() < deadline {
        source_eos = source.poll_eos();
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(source_eos, "the source finished");
    assert!(
        sender_eos,
        "the writer's EOS reached the sender through the segment"
    );
    assert!(!received.is_empty(), "no frame crossed the bridge");
    assert_eq!(
        receiver.warnings(),
        Vec::<String>::new(),
        "the receiver as documented runs without warnings"
    );
    assert!(
        received.windows(2).all(|w| w[0] < w[1]),
        "the far segment numbers frames in order: {received:?}"
    );
    println!(
        "{} of {FRAMES} frames crossed the loopback bridge",
        received.len()
    );
}

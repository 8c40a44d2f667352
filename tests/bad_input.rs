//! The bad-input matrix: every kind of bad input a user or a foreign process can hand the
//! transport or the elements, each case a test asserting the exact error text (what was
//! expected, what was found, what to do), and that nothing that is not ours is changed.

mod common;

use common::{
    ChildGuard, ShmName, check_frame, fill_frame, init, oldest, role, spawn_role, wait_for,
};
use gst::prelude::*;
use gstshmframe::transport::{
    Backpressure, Error, FrameMeta, LAYOUT_VERSION, Layout, MAX_NAME_LEN, Observer, ReadResult,
    Reader, ReaderOptions, Subscriber, Writer, WriterConfig, inspect,
};
use std::time::Duration;

/// Entry point of child processes: the child binary (tests/child/main.rs) runs it in the role
/// `spawn_role` names.
#[allow(dead_code)] // called by the child binary, not by this file's tests
pub fn child_entry() {
    let Some((role, args)) = role() else { return };
    assert_eq!(role, "writer");
    // A writer that writes 4 KiB frames every 2 ms until it is killed.
    let mut config = WriterConfig::new(&args[0], 4096);
    config.backpressure = Backpressure::DropOldest;
    let mut writer = Writer::create(&config).unwrap();
    writer.set_caps("test/x-frames").unwrap();
    for n in 0.. {
        writer
            .write_with(&FrameMeta::default(), 4096, |slot| fill_frame(n, slot))
            .unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn writer_error(config: &WriterConfig) -> String {
    Writer::create(config).err().expect("refused").to_string()
}

fn reader_error(name: &str) -> String {
    Reader::open(name, &oldest())
        .err()
        .expect("refused")
        .to_string()
}

fn observer_error(name: &str) -> String {
    Observer::open(name).err().expect("refused").to_string()
}

/// The text of the error an element posts when its pipeline starts (sinks and sources
/// validate their settings before they start), or while it runs (a source meeting a bad
/// segment). A refused start posts that one error and nothing else: GStreamer's generic
/// "some element failed to post a proper error message" would follow an error from a failed
/// GstBaseSink/GstBaseSrc start().
fn element_error(factory: &str, props: &[(&str, &str)]) -> String {
    init();
    let element = gst::ElementFactory::make(factory).build().unwrap();
    for (k, v) in props {
        element.set_property_from_str(k, v);
    }
    let pipeline = gst::Pipeline::new();
    pipeline.add(&element).unwrap();
    if factory == "shmframesrc" {
        let sink = gst::ElementFactory::make("fakesink").build().unwrap();
        pipeline.add(&sink).unwrap();
        element.link(&sink).unwrap();
    }
    let refused_start = pipeline.set_state(gst::State::Playing).is_err();
    let bus = pipeline.bus().unwrap();
    let text = |msg: gst::Message| match msg.view() {
        gst::MessageView::Error(e) => e.error().to_string(),
        _ => unreachable!(),
    };
    let first = bus
        .timed_pop_filtered(gst::ClockTime::from_seconds(10), &[gst::MessageType::Error])
        .map(text)
        .unwrap_or_else(|| panic!("{factory} {props:?}: no error within 10 s"));
    if refused_start {
        // Everything a failed state change posts is on the bus when set_state returns.
        let more: Vec<String> = std::iter::from_fn(|| bus.pop_filtered(&[gst::MessageType::Error]))
            .map(text)
            .collect();
        assert!(
            more.is_empty(),
            "{factory} {props:?}: {first:?} was followed by {more:?}"
        );
    }
    pipeline.set_state(gst::State::Null).unwrap();
    first
}

/// A name refused everywhere with the same explanation: by the transport's writer, reader,
/// observer and subscriber, by shmframesink and by shmframesrc; nothing is created.
fn refused_name(bad: &str, why: &str) {
    let expected = format!("invalid shm-name {bad:?}: {why}");
    assert_eq!(writer_error(&WriterConfig::new(bad, 64)), expected);
    assert_eq!(reader_error(bad), expected);
    assert_eq!(observer_error(bad), expected);
    assert_eq!(
        Subscriber::new(bad, oldest()).err().unwrap().to_string(),
        expected
    );
    assert_eq!(
        element_error("shmframesink", &[("shm-name", bad)]),
        expected
    );
    assert_eq!(element_error("shmframesrc", &[("shm-name", bad)]), expected);
}

const ONLY: &str = "only letters, digits, '.', '_' and '-' are allowed";

#[test]
fn a_name_with_a_slash_is_refused() {
    refused_name("cam/0", &format!("it contains '/'; {ONLY}"));
    refused_name("/dev/shm/cam0", &format!("it contains '/'; {ONLY}"));
}

#[test]
fn a_name_with_dot_dot_is_refused() {
    let why = "it starts with '.'; start it with a letter, digit, '_' or '-', e.g. \"cam0\"";
    refused_name("..", why);
    refused_name("../etc/passwd", why);
    refused_name("cam..0/../x", &format!("it contains '/'; {ONLY}"));
}

#[test]
fn an_empty_name_is_refused() {
    let expected = "invalid shm-name \"\": it is empty; set shm-name to e.g. \"cam0\"";
    assert_eq!(writer_error(&WriterConfig::new("", 64)), expected);
    assert_eq!(reader_error(""), expected);
    assert_eq!(observer_error(""), expected);
    // The elements treat an empty shm-name as a missing one.
    assert_eq!(
        element_error("shmframesink", &[("shm-name", "")]),
        "No shm-name set: shmframesink needs the name of the segment to create in /dev/shm \
         (letters, digits, '.', '_' and '-', not starting with '.'), e.g. shmframesink \
         shm-name=cam0"
    );
    assert_eq!(
        element_error("shmframesrc", &[]),
        "No shm-name set: set it to the name the writer uses, e.g. shmframesrc shm-name=cam0"
    );
}

#[test]
fn a_too_long_name_is_refused() {
    let longest = "x".repeat(MAX_NAME_LEN);
    let name = ShmName(longest.clone());
    let w = Writer::create(&WriterConfig::new(&name, 64)).expect("200 bytes are fine");
    drop(w);
    let too_long = "x".repeat(MAX_NAME_LEN + 1);
    refused_name(
        &too_long,
        "it is 201 bytes long, the limit is 200; choose a shorter name",
    );
}

#[test]
fn a_non_ascii_name_is_refused() {
    refused_name("caméra", &format!("it contains 'é'; {ONLY}"));
    // A NUL cannot even reach the elements (GObject strings end at NUL); the transport refuses it.
    let nul = "cam\u{0}0";
    let expected = format!("invalid shm-name {nul:?}: it contains '\\0'; {ONLY}");
    assert_eq!(writer_error(&WriterConfig::new(nul, 64)), expected);
    assert_eq!(reader_error(nul), expected);
    refused_name("cam 0", &format!("it contains ' '; {ONLY}"));
}

fn foreign_text(name: &ShmName) -> String {
    format!(
        "{} exists and is not a shmframe segment; it was left untouched: remove it or choose \
         another shm-name",
        name.path().display()
    )
}

/// Refused by writers and readers alike, and left as it was, byte for byte and mode.
fn foreign_file_case(name: &ShmName, content: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(name.path(), content).unwrap();
    std::fs::set_permissions(name.path(), std::fs::Permissions::from_mode(0o640)).unwrap();
    let before = std::fs::metadata(name.path()).unwrap();
    let expected = foreign_text(name);
    assert_eq!(writer_error(&WriterConfig::new(name, 64)), expected);
    assert_eq!(
        element_error(
            "shmframesink",
            &[("shm-name", name.as_str()), ("shape", "8x8:GRAY8")]
        ),
        expected
    );
    assert_eq!(reader_error(name), expected);
    assert_eq!(observer_error(name), expected);
    // shmframesrc waits for a writer, but a foreign file is an error, not something to wait on.
    assert_eq!(
        element_error("shmframesrc", &[("shm-name", name.as_str())]),
        format!("Reading shm-name {:?} failed: {expected}", name.as_str())
    );
    let after = std::fs::metadata(name.path()).unwrap();
    assert_eq!(std::fs::read(name.path()).unwrap(), content);
    assert_eq!(after.permissions().mode(), before.permissions().mode());
    assert_eq!(after.modified().unwrap(), before.modified().unwrap());
}

#[test]
fn a_foreign_file_at_the_name_is_refused_and_left_untouched() {
    let name = ShmName::new("bad-foreign");
    let content: Vec<u8> = (0..20_000u32).map(|i| (i * 31 % 251) as u8).collect();
    foreign_file_case(&name, &content);
}

#[test]
fn a_foreign_file_that_starts_like_a_segment_is_left_untouched_by_the_writer() {
    let name = ShmName::new("bad-foreign-magic");
    // "SHMFRAMX": almost our magic.
    let mut content = b"SHMFRAMX".to_vec();
    content.extend((0..9000u32).map(|i| i as u8));
    foreign_file_case(&name, &content);
}

#[test]
fn a_second_live_writer_is_refused_naming_the_holders_pid_and_the_first_is_unharmed() {
    let name = ShmName::new("bad-second-writer");
    let first: ChildGuard = spawn_role("writer", &[&name]);
    assert!(
        wait_for(Duration::from_secs(20), || {
            inspect(&name).is_ok_and(|i| i.writer_alive && i.frames_written > 0)
        }),
        "the first writer is running"
    );
    let expected = format!(
        "shm-name {:?} is already used by a live writer (pid {}); stop it or choose another \
         shm-name",
        name.as_str(),
        first.pid()
    );
    assert_eq!(writer_error(&WriterConfig::new(&name, 4096)), expected);
    assert_eq!(
        element_error(
            "shmframesink",
            &[("shm-name", name.as_str()), ("shape", "32x32:RGBA")]
        ),
        expected
    );
    // The first writer still delivers: consecutive frames with their content.
    let mut reader = Reader::open(&name, &ReaderOptions::default()).unwrap();
    assert_eq!(reader.writer_pid(), first.pid());
    let mut buf = vec![0u8; 4096];
    let mut numbers = Vec::new();
    while numbers.len() < 20 {
        match reader
            .read_next(Duration::from_secs(5), |_, v| v.copy_to(&mut buf))
            .unwrap()
        {
            ReadResult::Frame(info) => {
                check_frame(info.number, &buf).unwrap();
                numbers.push(info.number);
            }
            other => panic!("the first writer stopped delivering: {other:?}"),
        }
    }
    assert!(numbers.windows(2).all(|p| p[0] < p[1]), "{numbers:?}");
}

/// What a user sees: `gst-launch-1.0` of a second writer prints the refusal, naming the
/// holder's pid, as its only error; not followed by GStreamer's generic "some element failed
/// to post a proper error message" (which GstBaseSink adds after any failed start()).
#[test]
fn a_second_writer_in_gst_launch_prints_one_error_naming_the_holder() {
    let name = ShmName::new("bad-second-launch");
    let first: ChildGuard = spawn_role("writer", &[&name]);
    assert!(
        wait_for(Duration::from_secs(20), || {
            inspect(&name).is_ok_and(|i| i.writer_alive && i.frames_written > 0)
        }),
        "the first writer is running"
    );
    let so = common::built_plugin();
    let registry = std::env::temp_dir().join(format!("{}.registry", name.as_str()));
    let out = std::process::Command::new("timeout")
        .arg("60")
        .arg("gst-launch-1.0")
        .args(
            format!(
                "videotestsrc num-buffers=1 ! video/x-raw,format=GRAY8,width=64,height=48 ! \
                 shmframesink shm-name={}",
                name.as_str()
            )
            .split_whitespace(),
        )
        .env("GST_PLUGIN_PATH", so.parent().unwrap())
        .env("GST_REGISTRY", &registry)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("gst-launch-1.0 (gstreamer1.0-tools) is installed");
    let _ = std::fs::remove_file(&registry);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("ERROR: from element"))
        .collect();
    assert_eq!(
        errors,
        [format!(
            "ERROR: from element /GstPipeline:pipeline0/GstShmFrameSink:shmframesink0: shm-name \
             {:?} is already used by a live writer (pid {}); stop it or choose another shm-name",
            name.as_str(),
            first.pid()
        )],
        "{text}"
    );
    assert!(!text.contains("proper error message"), "{text}");
    assert!(!out.status.success(), "{text}");
}

/// A complete segment image (ring, depth 3, one spare slot, 5000-byte slots) as a writer
/// leaves it, with its geometry.
fn segment_image(name: &ShmName) -> (Vec<u8>, gstshmframe::transport::Geometry) {
    let mut config = WriterConfig::new(name, 5000);
    config.depth = 3;
    config.spare_slots = 1;
    let mut w = Writer::create(&config).unwrap();
    w.set_caps("video/x-raw, format=(string)GRAY8, width=(int)100, height=(int)50")
        .unwrap();
    for n in 0..2 {
        w.write_with(&FrameMeta::default(), 5000, |s| fill_frame(n, s))
            .unwrap();
    }
    let bytes = std::fs::read(name.path()).unwrap();
    let geo = Reader::open(name, &oldest()).unwrap().geometry().clone();
    drop(w);
    (bytes, geo)
}

fn truncated_text(what: &str, expected: u64, found: u64) -> String {
    format!(
        "truncated segment: {what} needs {expected} bytes, the file has {found}; a shmframe \
         writer never leaves a segment cut short: remove the file and restart the writer"
    )
}

#[test]
fn a_segment_truncated_at_any_interesting_offset_is_refused_by_readers() {
    let name = ShmName::new("bad-truncated");
    let (image, geo) = segment_image(&name);
    assert_eq!(image.len() as u64, geo.total_len);
    const HEADER_REGION: u64 = 1024 + 4 * 1792;
    let mut cuts: Vec<(u64, &str)> = vec![
        (0, "empty file"),
        (4, "inside the magic"),
        (8, "after the magic"),
        (12, "after the version"),
        (100, "inside the geometry"),
        (1024, "at the caps table"),
        (HEADER_REGION - 1, "inside the caps table"),
        (HEADER_REGION, "at the reader table"),
        (geo.index_offset, "at the ring index"),
        (geo.desc_offset, "at the slot descriptors"),
        (geo.data_offset, "at the first slot"),
    ];
    for k in 1..geo.slot_count as u64 {
        cuts.push((geo.data_offset + k * geo.slot_stride, "at a slot boundary"));
    }
    cuts.push((geo.total_len - 1, "one byte short"));
    for (cut, what) in cuts {
        std::fs::write(name.path(), &image[..cut as usize]).unwrap();
        let expected = if cut < HEADER_REGION {
            truncated_text("header", HEADER_REGION, cut)
        } else {
            truncated_text("segment", geo.total_len, cut)
        };
        assert_eq!(reader_error(&name), expected, "cut {cut} ({what})");
        assert_eq!(observer_error(&name), expected, "cut {cut} ({what})");
        assert_eq!(
            std::fs::metadata(name.path()).unwrap().len(),
            cut,
            "readers never change the file"
        );
    }
    assert_eq!(
        element_error("shmframesrc", &[("shm-name", name.as_str())]),
        format!(
            "Reading shm-name {:?} failed: {}",
            name.as_str(),
            truncated_text("segment", geo.total_len, geo.total_len - 1)
        )
    );
    // The full image opens: the cuts above were the only problem. (Its writer is gone, which
    // a reader learns when it tries to attach.)
    std::fs::write(name.path(), &image).unwrap();
    Observer::open(&name).unwrap();
    let gone = Reader::open(&name, &oldest()).err().unwrap();
    assert!(matches!(gone, Error::WriterGone { .. }), "{gone}");
    // A writer reclaims a cut segment of a dead writer like any stale segment of its own.
    std::fs::write(name.path(), &image[..HEADER_REGION as usize]).unwrap();
    let w = Writer::create(&WriterConfig::new(&name, 5000)).unwrap();
    assert_eq!(w.info().writer_pid, std::process::id());
}

#[test]
fn a_segment_of_another_layout_version_is_refused_by_readers() {
    let name = ShmName::new("bad-version");
    let (mut image, _) = segment_image(&name);
    for version in [0, LAYOUT_VERSION + 1, u32::MAX] {
        image[8..12].copy_from_slice(&version.to_ne_bytes());
        std::fs::write(name.path(), &image).unwrap();
        let expected = format!(
            "segment layout version {version} is not supported by this build (expects version \
             {LAYOUT_VERSION}); use the same shmframe version for writer and readers"
        );
        assert_eq!(reader_error(&name), expected);
        assert_eq!(observer_error(&name), expected);
        assert_eq!(
            element_error("shmframesrc", &[("shm-name", name.as_str())]),
            format!("Reading shm-name {:?} failed: {expected}", name.as_str())
        );
        assert_eq!(std::fs::read(name.path()).unwrap(), image);
    }
}

#[test]
fn a_shape_that_does_not_match_the_writers_stream_names_both_shapes() {
    init();
    let name = ShmName::new("bad-shape");
    // The writer: 64x48 RGBA frames.
    let mut config = WriterConfig::new(&name, 64 * 48 * 4);
    config.backpressure = Backpressure::DropOldest;
    let mut writer = Writer::create(&config).unwrap();
    writer
        .set_caps(
            "video/x-raw, format=(string)RGBA, width=(int)64, height=(int)48, \
             framerate=(fraction)30/1",
        )
        .unwrap();
    for (shape, found_expected) in [
        ("32x24", "64x48:RGBA but shape expects 32x24"),
        ("64x48:GRAY8", "64x48:RGBA but shape expects 64x48:GRAY8"),
    ] {
        assert_eq!(
            src_error_on_first_frame(&mut writer, &name, &format!("shape={shape}")),
            format!(
                "The writer's stream is {found_expected}: unset the shape property or set it \
                 to 64x48:RGBA, or make the writer on shm-name {:?} send {shape}",
                name.as_str()
            )
        );
    }
}

/// A stream of another geometry than the sink's `shape` links (the shape is only the
/// preferred caps, which converters upstream then produce), and the sink refuses its caps
/// naming both shapes: not a link failure that does not say why.
#[test]
fn a_sink_shape_that_does_not_fit_the_stream_is_refused_naming_the_shape() {
    init();
    let name = ShmName::new("bad-sink-shape");
    let caps = "video/x-raw, format=(string)RGBA, width=(int)3840, height=(int)2160, \
                framerate=(fraction)30/1";
    let (pipeline, src) = common::launch_with::<gst_app::AppSrc>(
        &format!(
            "appsrc name=camera caps=\"{caps}\" format=time ! shmframesink shm-name={} \
             shape=1x1:RGBA",
            name.as_str()
        ),
        "camera",
    );
    pipeline.set_state(gst::State::Playing).unwrap();
    let _ = src.push_buffer(gst::Buffer::with_size(3840 * 2160 * 4).unwrap());
    let msg = pipeline
        .bus()
        .unwrap()
        .timed_pop_filtered(gst::ClockTime::from_seconds(20), &[gst::MessageType::Error])
        .expect("the sink refuses the caps");
    pipeline.set_state(gst::State::Null).unwrap();
    let gst::MessageView::Error(err) = msg.view() else {
        unreachable!()
    };
    assert_eq!(
        err.error().to_string(),
        format!(
            "The stream's shape 3840x2160:RGBA does not fit the shape property 1x1:RGBA: set \
             shape to 3840x2160:RGBA or leave it empty, or convert the stream (caps {caps})"
        )
    );
    assert!(!name.path().exists());
}

#[test]
fn a_malformed_shape_property_says_what_is_expected() {
    let usage = "expected WIDTHxHEIGHT or WIDTHxHEIGHT:FORMAT, e.g. 1920x1080 or 640x480:RGBA";
    for (shape, expected) in [
        ("64by48", format!("invalid shape \"64by48\": {usage}")),
        (
            "0x48",
            format!("invalid shape \"0x48\": width \"0\" is not a number in 1..=32768; {usage}"),
        ),
        (
            "64x48:NOPE",
            "invalid shape \"64x48:NOPE\": \"NOPE\" is not a GstVideoFormat name (e.g. RGBA, \
             I420, NV12, GRAY8)"
                .to_string(),
        ),
        (
            "64x48:v210",
            "invalid shape \"64x48:v210\": shmframe does not carry v210; the formats it \
             carries are RGB, BGR, RGBA, BGRA, ARGB, ABGR, RGBx, BGRx, xRGB, xBGR, GRAY8, \
             GRAY16_LE, GRAY16_BE, I420, YV12, NV12, NV21, YUY2, UYVY, Y42B, Y444, RGB16, BGR16, \
             ARGB64, AYUV64, P010_10LE, I420_10LE"
                .to_string(),
        ),
    ] {
        for element in ["shmframesrc", "shmframesink"] {
            assert_eq!(
                element_error(element, &[("shm-name", "cam0"), ("shape", shape)]),
                format!("The shape property was refused: {expected}")
            );
        }
    }
}

#[test]
fn writer_settings_out_of_range_are_refused_with_the_range() {
    let name = ShmName::new("bad-config");
    let refused = |f: &dyn Fn(&mut WriterConfig)| {
        let mut c = WriterConfig::new(&name, 64);
        f(&mut c);
        let text = writer_error(&c);
        assert!(!name.path().exists(), "nothing created for: {text}");
        text
    };
    assert_eq!(
        refused(&|c| c.depth = 0),
        "invalid configuration: depth 0 is out of range: expected 1..=1024"
    );
    assert_eq!(
        refused(&|c| c.depth = 1025),
        "invalid configuration: depth 1025 is out of range: expected 1..=1024"
    );
    assert_eq!(
        refused(&|c| c.spare_slots = 65),
        "invalid configuration: spare slots 65 is out of range: expected 0..=64"
    );
    assert_eq!(
        refused(&|c| c.slot_size = 0),
        "invalid configuration: slot size 0 bytes is out of range: expected 1..=268435456"
    );
    assert_eq!(
        refused(&|c| c.slot_size = (256 << 20) + 1),
        "invalid configuration: slot size 268435457 bytes is out of range: expected \
         1..=268435456"
    );
    for perms in [0o400, 0o1777, 0o066] {
        assert_eq!(
            refused(&|c| c.perms = perms),
            format!(
                "invalid configuration: perms {perms:o} must be an octal file mode of at most \
                 0777 that includes 0600 (the writer and its readers need read and write \
                 access)"
            )
        );
    }
    // Double always has two slots, whatever depth says.
    let mut c = WriterConfig::new(&name, 64);
    c.layout = Layout::Double;
    c.depth = 0;
    assert_eq!(Writer::create(&c).unwrap().info().depth, 2);
}

#[test]
fn element_properties_out_of_range_are_refused_and_keep_their_value() {
    init();
    let sink = gst::ElementFactory::make("shmframesink").build().unwrap();
    for (element, prop, bad, kept) in [
        (&sink, "depth", 0u64, 4u64),
        (&sink, "depth", 1025, 4),
        (&sink, "perms", 0o400, 0o600),
        (&sink, "perms", 0o1000, 0o600),
        (&sink, "reader-timeout", 0, 1000),
    ] {
        let pspec = element.find_property(prop).unwrap();
        let value = if pspec.value_type() == u64::static_type() {
            bad.to_value()
        } else {
            (bad as u32).to_value()
        };
        // GLib refuses a value outside the param spec's range (a critical warning, which
        // gstreamer-rs turns into a panic) and keeps the previous one.
        let refused = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            element.set_property_from_value(prop, &value)
        }))
        .is_err();
        assert!(refused, "{prop}={bad} was accepted");
        let now = element.property_value(prop);
        let now = now
            .get::<u64>()
            .unwrap_or_else(|_| now.get::<u32>().unwrap() as u64);
        assert_eq!(now, kept, "{prop} kept its value");
    }
}

#[test]
fn a_frame_larger_than_the_slot_is_refused_with_the_size_needed() {
    let name = ShmName::new("bad-too-large");
    let mut w = Writer::create(&WriterConfig::new(&name, 100)).unwrap();
    let capacity = w.slot_capacity();
    let too_large = capacity + 1;
    let expected = format!(
        "frame of {too_large} bytes does not fit a slot of {capacity} bytes; create the writer \
         with a slot size of at least {too_large} bytes"
    );
    let data = vec![0u8; too_large as usize];
    assert_eq!(
        w.write(&FrameMeta::default(), &data)
            .unwrap_err()
            .to_string(),
        expected
    );
    assert_eq!(
        w.write_with(&FrameMeta::default(), too_large, |_| {})
            .unwrap_err()
            .to_string(),
        expected
    );
    assert_eq!(w.frames_written(), 0);
    // The writer still works with a frame that fits.
    w.write(&FrameMeta::default(), &[7u8; 100]).unwrap();
    assert_eq!(w.frames_written(), 1);
}

/// A ring that does not fit the shm file system (Docker's default /dev/shm is 64 MiB) is
/// refused when the sink starts, saying how much room it needs, instead of faulting on the
/// first write past the space there is.
#[test]
fn a_ring_larger_than_the_shm_file_system_is_refused_with_the_room_it_needs() {
    let name = ShmName::new("bad-no-space");
    let err = element_error(
        "shmframesink",
        &[
            ("shm-name", name.as_str()),
            ("shape", "8192x8192:RGBA"),
            ("depth", "1024"),
        ],
    );
    let needed: u64 = err
        .strip_prefix("the segment needs ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{err}"));
    // 1024 ring slots and the sink's 2 spare slots of 256 MiB, plus the header.
    assert!(needed > 1026 * (256 << 20), "{err}");
    let dir = gstshmframe::transport::shm_dir().display().to_string();
    assert!(
        err.ends_with(&format!(
            "free; lower depth or the frame size, remove segments no longer used, or give \
             {dir} more room (Docker: --shm-size)"
        )),
        "{err}"
    );
    assert!(!name.path().exists());
}

/// Runs `f` on a thread and returns its result, failing the test (naming `what`) if it takes
/// longer than 20 s: a hung open must fail the test, not hang it.
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("{what} did not return within 20 s (hung in open?)"))
}

/// Every error shmframesink posts when `upstream ! shmframesink` (no `shape`: the segment is
/// created at the first caps) starts on `name`: collected until 2 s after the first. (The
/// pipeline's own consequential messages are not the sink's.)
fn sink_errors(name: &str) -> Vec<String> {
    init();
    let pipeline = gst::parse::launch(&format!(
        "videotestsrc num-buffers=10 ! video/x-raw,format=GRAY8,width=8,height=8 ! \
         shmframesink name=sink shm-name={name}"
    ))
    .unwrap();
    let _ = pipeline.set_state(gst::State::Playing);
    let bus = pipeline.bus().unwrap();
    let mut errors = Vec::new();
    let mut limit = gst::ClockTime::from_seconds(10);
    while let Some(msg) = bus.timed_pop_filtered(limit, &[gst::MessageType::Error]) {
        if let gst::MessageView::Error(e) = msg.view()
            && msg.src().is_some_and(|s| s.name() == "sink")
        {
            errors.push(e.error().to_string());
        }
        limit = gst::ClockTime::from_seconds(2);
    }
    pipeline.set_state(gst::State::Null).unwrap();
    errors
}

fn not_a_file_text(name: &ShmName, what: &str) -> String {
    format!(
        "{} is {what}, not a shmframe segment (segments are regular files); it was left \
         untouched: remove it or choose another shm-name",
        name.path().display()
    )
}

/// Something that is not a regular file at the name: every writer and reader (transport,
/// both elements, the src's `get-frame`, `inspect`) says what is there, once, without hanging,
/// and leaves it as it was.
fn not_a_file_case(name: &ShmName, what: &str) {
    let file_type = || std::fs::symlink_metadata(name.path()).unwrap().file_type();
    let before = file_type();
    let expected = not_a_file_text(name, what);
    let owned = name.to_string();
    let transport = within("the transport", move || {
        [
            writer_error(&WriterConfig::new(&owned, 64)),
            reader_error(&owned),
            observer_error(&owned),
            inspect(&owned).expect_err("refused").to_string(),
        ]
    });
    assert_eq!(transport, [(); 4].map(|_| expected.clone()), "{what}");
    let owned = name.to_string();
    let with_shape = within("shmframesink with a shape", move || {
        element_error(
            "shmframesink",
            &[("shm-name", owned.as_str()), ("shape", "8x8:GRAY8")],
        )
    });
    assert_eq!(with_shape, expected, "{what}");
    let owned = name.to_string();
    let sink = within("shmframesink", move || sink_errors(&owned));
    assert_eq!(sink, std::slice::from_ref(&expected), "{what}: posted once");
    let owned = name.to_string();
    let src = within("shmframesrc", move || {
        element_error("shmframesrc", &[("shm-name", owned.as_str())])
    });
    assert_eq!(
        src,
        format!("Reading shm-name {:?} failed: {expected}", name.as_str()),
        "{what}"
    );
    let owned = name.to_string();
    let frame = within("get-frame", move || {
        init();
        let src = gst::ElementFactory::make("shmframesrc")
            .property("shm-name", owned.as_str())
            .build()
            .unwrap();
        src.emit_by_name::<Option<gst::Sample>>("get-frame", &[&0u64])
            .is_none()
    });
    assert!(frame, "{what}: get-frame has no frame to give");
    assert_eq!(file_type(), before, "{what} is left as it was");
}

#[test]
fn a_fifo_at_the_name_hangs_nothing_and_is_named() {
    let name = ShmName::new("bad-fifo");
    let path = std::ffi::CString::new(name.path().as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    not_a_file_case(&name, "a FIFO (named pipe)");
}

#[test]
fn a_directory_at_the_name_is_named_once() {
    let name = ShmName::new("bad-dir");
    std::fs::create_dir(name.path()).unwrap();
    not_a_file_case(&name, "a directory");
}

#[test]
fn a_socket_at_the_name_is_named() {
    let name = ShmName::new("bad-socket");
    let _listener = std::os::unix::net::UnixListener::bind(name.path()).unwrap();
    not_a_file_case(&name, "a socket");
}

#[test]
fn symbolic_links_at_the_name_are_named_with_their_target() {
    let name = ShmName::new("bad-dangling");
    let target = "/nonexistent/shmframe-target";
    std::os::unix::fs::symlink(target, name.path()).unwrap();
    not_a_file_case(
        &name,
        &format!("a symbolic link to {target} (which does not exist)"),
    );
    let name = ShmName::new("bad-link-null");
    std::os::unix::fs::symlink("/dev/null", name.path()).unwrap();
    not_a_file_case(&name, "a symbolic link to /dev/null");
}

#[test]
fn a_device_at_the_name_is_named() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("NOTICE: a_device_at_the_name_is_named skipped: mknod needs root");
        return;
    }
    let name = ShmName::new("bad-device");
    let path = std::ffi::CString::new(name.path().as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path; 1:3 is /dev/null's device number.
    let made = unsafe { libc::mknod(path.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
    assert_eq!(made, 0, "{}", std::io::Error::last_os_error());
    not_a_file_case(&name, "a character device");
}

/// A segment with a valid header whose file is larger than what is allocated (a broken or
/// hostile writer): mapping it populated would allocate the holes until the shm file system is
/// full, then fault (SIGBUS). Readers refuse it before mapping anything, and allocate nothing.
#[test]
fn a_sparse_segment_is_refused_by_readers_before_mapping() {
    use std::os::unix::fs::MetadataExt;
    let name = ShmName::new("bad-sparse");
    let (image, geo) = segment_image(&name);
    const HEADER_REGION: usize = 1024 + 4 * 1792;
    let file = std::fs::File::create(name.path()).unwrap();
    std::io::Write::write_all(&mut &file, &image[..HEADER_REGION]).unwrap();
    file.set_len(geo.total_len).unwrap();
    drop(file);
    let allocated = std::fs::metadata(name.path()).unwrap().blocks() * 512;
    assert!(allocated < geo.total_len, "the file has holes");
    let expected = format!(
        "{} is not fully allocated: the file has {} bytes but only {allocated} of them are \
         backed by memory, and mapping it would fill the shm file system (a shmframe writer \
         allocates its whole segment before publishing it): remove the file and restart the \
         writer",
        name.path().display(),
        geo.total_len
    );
    assert_eq!(reader_error(&name), expected);
    assert_eq!(observer_error(&name), expected);
    assert_eq!(
        element_error("shmframesrc", &[("shm-name", name.as_str())]),
        format!("Reading shm-name {:?} failed: {expected}", name.as_str())
    );
    let after = std::fs::metadata(name.path()).unwrap();
    assert_eq!(
        (after.len(), after.blocks() * 512),
        (geo.total_len, allocated),
        "readers allocate nothing"
    );
    // A writer replaces it like any segment of a dead writer.
    let w = Writer::create(&WriterConfig::new(&name, 5000)).unwrap();
    assert_eq!(w.info().writer_pid, std::process::id());
}

/// The error a `shmframesrc` posts for a writer that announces `caps` and writes one frame.
fn src_error_for_writer_caps(name: &ShmName, caps: &str) -> String {
    init();
    let mut writer = Writer::create(&WriterConfig::new(name, 64 * 48 * 4)).unwrap();
    writer.set_caps(caps).unwrap();
    src_error_on_first_frame(&mut writer, name, "")
}

/// The error a `shmframesrc` with the properties `src_props` posts once `writer` (on `name`,
/// slots of at least 64x48 RGBA) has written one frame for it.
fn src_error_on_first_frame(writer: &mut Writer, name: &ShmName, src_props: &str) -> String {
    let (pipeline, _) = common::launch_with::<gst::Element>(
        &format!(
            "shmframesrc name=src shm-name={} {src_props} ! fakesink",
            name.as_str()
        ),
        "src",
    );
    pipeline.set_state(gst::State::Playing).unwrap();
    let observer = writer.observer();
    assert!(wait_for(Duration::from_secs(10), || observer
        .reader_count()
        > 0));
    writer
        .write_with(&FrameMeta::default(), 64 * 48 * 4, |s| fill_frame(0, s))
        .unwrap();
    let msg = pipeline
        .bus()
        .unwrap()
        .timed_pop_filtered(gst::ClockTime::from_seconds(10), &[gst::MessageType::Error])
        .unwrap_or_else(|| panic!("no error from shmframesrc {src_props}"));
    pipeline.set_state(gst::State::Null).unwrap();
    let gst::MessageView::Error(e) = msg.view() else {
        unreachable!()
    };
    e.error().to_string()
}

/// A segment's caps come from whoever wrote it: shmframesrc takes only system-memory raw video
/// in the formats shmframesink accepts. Caps with a memory feature (frames in a segment are
/// system memory, whatever the header says), another media type or another format are a clear
/// error, not buffers pushed under caps that describe something else.
#[test]
fn caps_in_a_header_that_are_not_system_memory_raw_video_are_refused_by_readers() {
    let supported = "RGB, BGR, RGBA, BGRA, ARGB, ABGR, RGBx, BGRx, xRGB, xBGR, GRAY8, \
                     GRAY16_LE, GRAY16_BE, I420, YV12, NV12, NV21, YUY2, UYVY, Y42B, Y444, \
                     RGB16, BGR16, ARGB64, AYUV64, P010_10LE, I420_10LE";
    for (caps, why) in [
        (
            "video/x-raw(memory:DMABuf), format=(string)RGBA, width=(int)64, height=(int)48, \
             framerate=(fraction)30/1",
            "caps features memory:DMABuf: frames in a segment are system memory".to_string(),
        ),
        (
            "video/x-raw, format=(string)v210, width=(int)64, height=(int)48, \
             framerate=(fraction)30/1",
            format!("format v210, not one of {supported}"),
        ),
        (
            "image/jpeg, width=(int)64, height=(int)48, framerate=(fraction)30/1",
            "media type image/jpeg, not video/x-raw".to_string(),
        ),
    ] {
        let name = ShmName::new("bad-header-caps");
        assert_eq!(
            src_error_for_writer_caps(&name, caps),
            format!(
                "The writer on shm-name {:?} announced caps that shmframesrc does not carry \
                 ({why}): {caps}",
                name.as_str()
            )
        );
    }
}

/// A head counter at or above 2^48 cannot be a writer's (the index keeps 48 bits for a frame
/// number): readers refuse it as a corrupt segment, when they attach and when it appears
/// under an attached reader, instead of discarding every frame in silence.
#[test]
fn a_head_counter_beyond_its_range_is_a_corrupt_segment() {
    use std::os::unix::fs::FileExt;
    const HEAD_OFFSET: u64 = 152;
    let name = ShmName::new("bad-head");
    let mut writer = Writer::create(&WriterConfig::new(&name, 4096)).unwrap();
    writer.set_caps("test/x-frames").unwrap();
    for n in 0..2 {
        writer
            .write_with(&FrameMeta::default(), 4096, |s| fill_frame(n, s))
            .unwrap();
    }
    let mut attached = Reader::open(&name, &oldest()).unwrap();
    let set_head = |head: u64| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(name.path())
            .unwrap()
            .write_all_at(&head.to_ne_bytes(), HEAD_OFFSET)
            .unwrap();
    };
    for head in [1u64 << 48, u64::MAX] {
        set_head(head);
        let expected = format!(
            "corrupt segment header: field head expected a frame count below 2^48 \
             (281474976710656), found {head}; the segment was damaged or not written by \
             shmframe: remove the file and restart the writer"
        );
        assert_eq!(reader_error(&name), expected);
        assert_eq!(
            attached
                .read_next(Duration::from_secs(1), |_, _| {})
                .expect_err("refused")
                .to_string(),
            expected
        );
        assert_eq!(
            element_error("shmframesrc", &[("shm-name", name.as_str())]),
            format!("Reading shm-name {:?} failed: {expected}", name.as_str())
        );
    }
    // Within its range, the same segment reads again.
    set_head(2);
    let frame = attached
        .read_next(Duration::from_secs(1), |_, _| {})
        .unwrap();
    assert!(
        matches!(frame, ReadResult::Frame(ref i) if i.number == 0),
        "{frame:?}"
    );
}

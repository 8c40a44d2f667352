//! Who may attach: a segment is created 0600 by default, a reader running as another user gets
//! a permission error that says what to change, and the sink's `perms` property widens access
//! deliberately. The readers are the child binary (this file's `child_entry`) run as user
//! `nobody` (uid and gids are switched in the child before exec), so the tests need root; run as another user they fail
//! under scripts/test.sh, or are skipped with a notice (see `common::prerequisite`).

mod common;

use common::{
    ChildGuard, ShmName, check_frame, fill_frame, init, launch_with, prerequisite, role,
    spawn_role_as, wait_for,
};
use gst::prelude::*;
use gstshmframe::transport::{
    FrameMeta, Observer, ReadResult, Reader, ReaderOptions, StartPosition, Writer, WriterConfig,
    inspect,
};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

const NOBODY: u32 = 65534;
const NOGROUP: u32 = 65534;
const FRAMES: u64 = 5;
const FRAME_SIZE: usize = 16 * 16 * 4;
const CHILD_LIMIT: Duration = Duration::from_secs(60);

/// Entry point of child processes: the child binary (tests/child/main.rs) runs it in the role
/// `spawn_role` names.
#[allow(dead_code)] // called by the child binary, not by this file's tests
pub fn child_entry() {
    let Some((role, args)) = role() else { return };
    if role == "write" {
        write_for_everyone(&args[0]);
    }
    assert_eq!(role, "read");
    let (name, how) = (&args[0], args[1].as_str());
    let outcome = match how {
        "reader" => read_with_reader(name),
        "observer" => read_with_observer(name),
        "element" => read_with_element(name),
        // Not reading: taking the name as a writer (0 frames read when that succeeds).
        "writer" => Writer::create(&WriterConfig::new(name, 4096))
            .map(|_| 0)
            .map_err(|e| e.to_string()),
        "sink" => start_sink(name),
        other => panic!("unknown way to read: {other}"),
    };
    match outcome {
        Ok(frames) => println!("FRAMES {frames}"),
        Err(text) => println!("ERROR {text}"),
    }
    std::process::exit(0);
}

/// A writer of frames 0..FRAMES with perms 0666 that says `READY` and then holds its segment
/// until it is killed (at most CHILD_LIMIT).
fn write_for_everyone(name: &str) -> ! {
    let mut config = WriterConfig::new(name, FRAME_SIZE as u64);
    config.perms = 0o666;
    config.depth = 8;
    let mut writer = Writer::create(&config).unwrap();
    writer
        .set_caps(
            "video/x-raw, format=(string)RGBA, width=(int)16, height=(int)16, \
             framerate=(fraction)30/1",
        )
        .unwrap();
    for n in 0..FRAMES {
        writer
            .write_with(&FrameMeta::default(), FRAME_SIZE as u64, |s| {
                fill_frame(n, s)
            })
            .unwrap();
    }
    println!("READY");
    std::thread::sleep(CHILD_LIMIT);
    std::process::exit(0);
}

/// Reads the writer's frames 0..FRAMES through a `Reader`, checking each one's content.
fn read_with_reader(name: &str) -> Result<u64, String> {
    let opts = ReaderOptions {
        start: StartPosition::Oldest,
        ..Default::default()
    };
    let mut reader = Reader::open(name, &opts).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; FRAME_SIZE];
    for n in 0..FRAMES {
        let result = reader
            .read_next(Duration::from_secs(10), |_, view| view.copy_to(&mut buf))
            .map_err(|e| e.to_string())?;
        let ReadResult::Frame(info) = result else {
            panic!("expected frame {n}, got {result:?}");
        };
        assert_eq!(info.number, n);
        check_frame(n, &buf).unwrap();
    }
    Ok(FRAMES)
}

/// Reads frames 0..FRAMES through a read-only `Observer`, checking each one's content.
fn read_with_observer(name: &str) -> Result<u64, String> {
    let observer = Observer::open(name).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; FRAME_SIZE];
    for n in 0..FRAMES {
        let info = observer
            .read_frame(n, |_, view| view.copy_to(&mut buf))
            .map_err(|e| e.to_string())?
            .unwrap_or_else(|| panic!("frame {n} is held"));
        assert_eq!(info.number, n);
        check_frame(n, &buf).unwrap();
    }
    Ok(FRAMES)
}

/// Reads frames 0..FRAMES with `shmframesrc`, checking each one's content; the error text is
/// the one the src posts on the bus.
fn read_with_element(name: &str) -> Result<u64, String> {
    init();
    let (pipeline, out) = launch_with::<gst_app::AppSink>(
        &format!("shmframesrc shm-name={name} start=oldest ! appsink name=out sync=false"),
        "out",
    );
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let mut received = 0;
    let result = loop {
        if let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
            let gst::MessageView::Error(e) = msg.view() else {
                unreachable!()
            };
            break Err(e.error().to_string());
        }
        if received == FRAMES {
            break Ok(FRAMES);
        }
        if let Some(sample) = out.try_pull_sample(gst::ClockTime::from_mseconds(100)) {
            let map = sample.buffer().unwrap().map_readable().unwrap();
            check_frame(received, &map).unwrap();
            received += 1;
        }
    };
    pipeline.set_state(gst::State::Null).unwrap();
    result
}

/// Starts `shmframesink` (with a shape: the segment is made at once) on `name`; the error
/// text is the one the sink posts.
fn start_sink(name: &str) -> Result<u64, String> {
    init();
    let (pipeline, _sink) = launch_with::<gst::Element>(
        &format!("appsrc ! shmframesink name=sink shm-name={name} shape=16x16:RGBA"),
        "sink",
    );
    let _ = pipeline.set_state(gst::State::Paused);
    let result = match pipeline.bus().unwrap().timed_pop_filtered(
        gst::ClockTime::from_seconds(10),
        &[gst::MessageType::Error, gst::MessageType::AsyncDone],
    ) {
        Some(msg) => match msg.view() {
            gst::MessageView::Error(e) => Err(e.error().to_string()),
            _ => Ok(0),
        },
        None => Ok(0),
    };
    pipeline.set_state(gst::State::Null).unwrap();
    result
}

/// A writer pipeline in this process: `appsrc ! shmframesink` with `perms` (None: the
/// default), holding frames 0..FRAMES of 16x16 RGBA.
struct WriterPipeline(gst::Pipeline);

impl WriterPipeline {
    fn start(name: &str, perms: Option<&str>) -> WriterPipeline {
        init();
        let perms = perms.map(|p| format!("perms={p}")).unwrap_or_default();
        let (pipeline, src) = launch_with::<gst_app::AppSrc>(
            &format!(
                "appsrc name=src format=time ! shmframesink name=sink shm-name={name} \
             shape=16x16:RGBA backpressure=drop-oldest depth=8 sync=false {perms}"
            ),
            "src",
        );
        src.set_caps(Some(
            &gst::Caps::builder("video/x-raw")
                .field("format", "RGBA")
                .field("width", 16)
                .field("height", 16)
                .field("framerate", gst::Fraction::new(30, 1))
                .build(),
        ));
        pipeline.set_state(gst::State::Playing).unwrap();
        for n in 0..FRAMES {
            let mut buf = gst::Buffer::with_size(FRAME_SIZE).unwrap();
            {
                let b = buf.get_mut().unwrap();
                b.set_pts(gst::ClockTime::from_mseconds(33 * n));
                fill_frame(n, &mut b.map_writable().unwrap());
            }
            src.push_buffer(buf).unwrap();
        }
        let sink = pipeline.by_name("sink").unwrap();
        assert!(
            wait_for(Duration::from_secs(20), || {
                sink.property::<gst::Structure>("stats")
                    .get::<u64>("frames-written")
                    .unwrap()
                    == FRAMES
            }),
            "the writer wrote its frames"
        );
        WriterPipeline(pipeline)
    }
}

impl Drop for WriterPipeline {
    fn drop(&mut self) {
        let _ = self.0.set_state(gst::State::Null);
    }
}

/// A directory that belongs to `nobody` (its HOME and GStreamer registry), removed on drop;
/// it also holds a copy of the child binary when nobody cannot reach the original.
struct NobodyDir(PathBuf);

impl NobodyDir {
    fn new(test: &str) -> NobodyDir {
        let dir = std::env::temp_dir().join(format!(
            "shmframe-perms-{test}-{}-{}",
            std::process::id(),
            common::ShmName::new("dir")
                .as_str()
                .rsplit('-')
                .next()
                .unwrap()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(NOBODY), Some(NOGROUP)).unwrap();
        NobodyDir(dir)
    }
}

impl Drop for NobodyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The child binary as `nobody` can run it (see `common::child_binary_for_others`).
fn binary_for_nobody(dir: &NobodyDir) -> PathBuf {
    common::child_binary_for_others(&dir.0)
}

fn running_as_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    prerequisite(
        test,
        (!root).then(|| "switching the reader to another user needs root (CI runs as root)".into()),
    )
}

/// Runs a reader as `nobody` (with extra supplementary groups) and returns what it printed:
/// `FRAMES n` or `ERROR text`.
fn read_as_nobody(dir: &NobodyDir, name: &str, how: &str, groups: &[u32]) -> String {
    let exe = binary_for_nobody(dir);
    let registry = dir.0.join("registry.bin");
    let mut child: ChildGuard = spawn_role_as(
        &exe,
        "read",
        &[name, how],
        (NOBODY, NOGROUP, groups),
        &[
            ("HOME", dir.0.as_os_str()),
            ("XDG_CACHE_HOME", dir.0.as_os_str()),
            ("GST_REGISTRY", registry.as_os_str()),
        ],
    );
    let out = child.wait_ok(CHILD_LIMIT);
    out.lines()
        .find(|l| l.starts_with("FRAMES ") || l.starts_with("ERROR "))
        .unwrap_or_else(|| panic!("no outcome in the child's output:\n{out}"))
        .to_string()
}

fn mode_of(name: &ShmName) -> u32 {
    std::fs::metadata(name.path()).unwrap().permissions().mode() & 0o7777
}

fn denied(name: &ShmName) -> String {
    denied_because(name, "Permission denied (os error 13)")
}

fn denied_because(name: &ShmName, detail: &str) -> String {
    format!(
        "permission denied on {}: {detail}; a reader needs read and write access, which the \
         writer's perms property grants (default 0600: the writer's user only): run the reader \
         as that user, or start the writer with perms=0660 (its group) or perms=0666 \
         (everyone)",
        name.path().display()
    )
}

/// The error of a reader that may read the segment but not connect to its socket.
fn socket_denied(name: &ShmName) -> String {
    let session = inspect(name).unwrap().writer_session;
    denied_because(
        name,
        &format!(
            "connecting to its socket {}: Permission denied (os error 13)",
            name.path()
                .with_file_name(format!(".shmframe-sock-{session:016x}"))
                .display()
        ),
    )
}

#[test]
fn a_default_segment_is_0600_and_another_users_reader_is_told_what_to_change() {
    if !running_as_root("a_default_segment_is_0600") {
        return;
    }
    let name = ShmName::new("perm-default");
    let dir = NobodyDir::new("default");
    let _writer = WriterPipeline::start(&name, None);
    assert_eq!(mode_of(&name), 0o600, "the default mode");
    assert_eq!(
        read_as_nobody(&dir, &name, "reader", &[]),
        format!("ERROR {}", denied(&name))
    );
    assert_eq!(
        read_as_nobody(&dir, &name, "observer", &[]),
        format!("ERROR {}", denied(&name))
    );
    assert_eq!(
        read_as_nobody(&dir, &name, "element", &[]),
        format!(
            "ERROR Reading shm-name \"{}\" failed: {}",
            name.as_str(),
            denied(&name)
        )
    );
}

#[test]
fn perms_0666_lets_another_users_shmframesrc_read_every_frame() {
    if !running_as_root("perms_0666_lets_another_users_shmframesrc_read_every_frame") {
        return;
    }
    let name = ShmName::new("perm-0666");
    let dir = NobodyDir::new("0666");
    let _writer = WriterPipeline::start(&name, Some("0666"));
    // Only the writer writes the segment file; readers are admitted by its socket's mode.
    assert_eq!(mode_of(&name), 0o644);
    assert_eq!(read_as_nobody(&dir, &name, "element", &[]), "FRAMES 5");
    assert_eq!(read_as_nobody(&dir, &name, "reader", &[]), "FRAMES 5");
}

#[test]
fn perms_0660_lets_the_writers_group_read_and_nobody_else() {
    if !running_as_root("perms_0660_lets_the_writers_group_read_and_nobody_else") {
        return;
    }
    let name = ShmName::new("perm-0660");
    let dir = NobodyDir::new("0660");
    let _writer = WriterPipeline::start(&name, Some("0660"));
    assert_eq!(mode_of(&name), 0o640);
    // SAFETY: getegid has no preconditions. The segment belongs to our effective group.
    let group = unsafe { libc::getegid() };
    assert_eq!(
        read_as_nobody(&dir, &name, "reader", &[group]),
        "FRAMES 5",
        "a member of the writer's group reads"
    );
    assert_eq!(
        read_as_nobody(&dir, &name, "reader", &[]),
        format!("ERROR {}", denied(&name)),
        "others do not"
    );
}

#[test]
fn perms_0644_lets_others_observe_but_not_attach_as_readers() {
    if !running_as_root("perms_0644_lets_others_observe_but_not_attach_as_readers") {
        return;
    }
    let name = ShmName::new("perm-0644");
    let dir = NobodyDir::new("0644");
    let _writer = WriterPipeline::start(&name, Some("0644"));
    assert_eq!(mode_of(&name), 0o644);
    // A reader attaches through the stream's socket, which needs write access to it.
    assert_eq!(
        read_as_nobody(&dir, &name, "reader", &[]),
        format!("ERROR {}", socket_denied(&name))
    );
    // The read-only view (statistics, get-frame, the inspector) needs only read access.
    assert_eq!(read_as_nobody(&dir, &name, "observer", &[]), "FRAMES 5");
}

/// A segment left by a dead writer of root's is not another user's to take over: a writer
/// running as `nobody` is told what is there and what to do (instead of "Operation not
/// permitted"), through the transport and the sink, whatever the segment's mode, and the file
/// is left as it was.
#[test]
fn a_stale_segment_of_root_is_explained_to_another_users_writer() {
    if !running_as_root("a_stale_segment_of_root_is_explained_to_another_users_writer") {
        return;
    }
    let dir = NobodyDir::new("stale-root");
    for (mode, stale) in [(0o666, true), (0o644, true), (0o600, false)] {
        let name = ShmName::new("perm-stale-root");
        // A dead writer's segment: the image of a live one, without the live writer's lock.
        let image = {
            let _writer = Writer::create(&WriterConfig::new(&name, 4096)).unwrap();
            std::fs::read(name.path()).unwrap()
        };
        std::fs::write(name.path(), &image).unwrap();
        std::fs::set_permissions(name.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        let path = name.path().display().to_string();
        let expected = if stale {
            format!(
                "{path} was left by a writer that is gone, but it belongs to uid 0 and this \
                 process (uid {NOBODY}) may not replace it: remove it as uid 0 or root (rm \
                 {path}), or choose another shm-name"
            )
        } else {
            format!(
                "{path} belongs to uid 0 and this process (uid {NOBODY}) may not open it to \
                 check whether its writer is alive: if that writer is gone, remove it as uid 0 \
                 or root (rm {path}); otherwise choose another shm-name"
            )
        };
        for how in ["writer", "sink"] {
            assert_eq!(
                read_as_nobody(&dir, &name, how, &[]),
                format!("ERROR {expected}"),
                "mode {mode:o}, {how}"
            );
        }
        assert_eq!(std::fs::read(name.path()).unwrap(), image, "left as it was");
        assert_eq!(mode_of(&name), mode);
    }
}

/// Permissions let root read any user's segment: the reader is told whose frames they are. A
/// writer running as `nobody`, read by root: `shmframe-writer-attached` carries its `uid`,
/// `stats` its `writer-uid` (4294967295 before a writer is attached), the inspector's
/// snapshot its `writer_uid`.
#[test]
fn a_reader_is_told_which_user_runs_its_writer() {
    if !running_as_root("a_reader_is_told_which_user_runs_its_writer") {
        return;
    }
    use std::io::BufRead;
    let name = ShmName::new("perm-owner");
    let dir = NobodyDir::new("owner");
    let exe = binary_for_nobody(&dir);
    let mut writer = spawn_role_as(
        &exe,
        "write",
        &[&name],
        (NOBODY, NOGROUP, &[]),
        &[("HOME", dir.0.as_os_str())],
    );
    let stdout = writer.child.stdout.take().unwrap();
    let ready = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|line| line == "READY");
    assert!(ready, "the writer running as nobody made its segment");
    assert_eq!(inspect(&name).unwrap().writer_uid, NOBODY);

    init();
    let (pipeline, out) = launch_with::<gst_app::AppSink>(
        &format!(
            "shmframesrc name=src shm-name={} start=oldest ! appsink name=out sync=false",
            name.as_str()
        ),
        "out",
    );
    let src = pipeline.by_name("src").unwrap();
    let writer_uid = |src: &gst::Element| {
        src.property::<gst::Structure>("stats")
            .get::<u32>("writer-uid")
            .unwrap()
    };
    assert_eq!(writer_uid(&src), u32::MAX);
    pipeline.set_state(gst::State::Playing).unwrap();
    for n in 0..FRAMES {
        let sample = out
            .try_pull_sample(gst::ClockTime::from_seconds(20))
            .unwrap_or_else(|| panic!("frame {n}"));
        check_frame(n, &sample.buffer().unwrap().map_readable().unwrap()).unwrap();
    }
    assert_eq!(writer_uid(&src), NOBODY);
    let bus = pipeline.bus().unwrap();
    let attached = std::iter::from_fn(|| bus.pop_filtered(&[gst::MessageType::Element]))
        .filter_map(|m| m.structure().map(|s| s.to_owned()))
        .find(|s| s.name() == "shmframe-writer-attached")
        .expect("shmframe-writer-attached");
    pipeline.set_state(gst::State::Null).unwrap();
    assert_eq!(attached.get::<u32>("uid").unwrap(), NOBODY);
    assert_eq!(attached.get::<u32>("pid").unwrap(), writer.pid());
}

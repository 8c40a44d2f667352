//! Test support shared by the integration tests: unique segment names that clean up after
//! themselves, bounded child processes, and frame patterns that make torn or misplaced frames
//! detectable.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A segment name unique to this test, process and call; removes `/dev/shm/<name>` (and any
/// temporary file of ours for it) when dropped, also when the test panics.
pub struct ShmName(pub String);

impl ShmName {
    pub fn new(test: &str) -> ShmName {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        ShmName(format!("shmframe-test-{test}-{}-{n}", std::process::id()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn path(&self) -> std::path::PathBuf {
        gstshmframe::transport::shm_dir().join(&self.0)
    }
}

impl ShmName {
    /// The files in the shm directory that belong to this name: its segment and the temporary
    /// files its writers build it in.
    pub fn files(&self) -> Vec<String> {
        let temp_prefix = format!(".shmframe-new-{}-", self.0);
        file_names(&gstshmframe::transport::shm_dir())
            .into_iter()
            .filter(|f| *f == self.0 || f.starts_with(&temp_prefix))
            .collect()
    }
}

/// The names of the entries of `dir`, sorted.
pub fn file_names(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

impl Drop for ShmName {
    fn drop(&mut self) {
        // A writer killed by the test leaves its socket, named by the session in its segment.
        if let Ok(info) = gstshmframe::transport::inspect(&self.0) {
            let _ = std::fs::remove_file(gstshmframe::transport::socket_path(
                &gstshmframe::transport::shm_dir(),
                info.writer_session,
            ));
        }
        // A test may have put a directory at the name.
        if std::fs::remove_file(self.path()).is_err() {
            let _ = std::fs::remove_dir(self.path());
        }
        if let Ok(dir) = std::fs::read_dir(gstshmframe::transport::shm_dir()) {
            let prefix = format!(".shmframe-new-{}-", self.0);
            for e in dir.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

impl std::ops::Deref for ShmName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// A child process that is killed (SIGKILL) and reaped when dropped.
pub struct ChildGuard {
    pub child: Child,
    pub label: String,
}

impl ChildGuard {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the pid of our own unreaped child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits up to `limit` for the child to exit; panics (after killing it) if it does not.
    pub fn wait_ok(&mut self, limit: Duration) -> String {
        let status = self.wait_timeout(limit).unwrap_or_else(|| {
            self.signal(libc::SIGKILL);
            let _ = self.child.wait();
            panic!("{} did not finish within {limit:?}", self.label)
        });
        let mut out = String::new();
        if let Some(mut so) = self.child.stdout.take() {
            use std::io::Read;
            let _ = so.read_to_string(&mut out);
        }
        assert!(
            status.success(),
            "{} failed ({status}); output:\n{out}",
            self.label
        );
        out
    }

    pub fn wait_timeout(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal(libc::SIGCONT);
            self.signal(libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// The child binary (tests/child/main.rs, cargo's `child` test target), which runs the
/// `child_entry` of the test file that spawns it. `cargo test --test X` builds only X, so this
/// asks cargo for the binary, which builds it when it is missing or out of date (a no-op
/// otherwise), and takes its path from cargo's report.
pub fn child_binary() -> &'static std::path::Path {
    static BINARY: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BINARY.get_or_init(|| {
        let mut cargo = Command::new(env!("CARGO"));
        cargo.args([
            "build",
            "--quiet",
            "--test",
            "child",
            "--message-format=json-render-diagnostics",
            "--manifest-path",
            concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"),
        ]);
        if !cfg!(debug_assertions) {
            cargo.arg("--release");
        }
        let out = cargo
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .expect("run cargo to build the child binary");
        assert!(
            out.status.success(),
            "cargo could not build the child binary"
        );
        let report = String::from_utf8_lossy(&out.stdout);
        let field = "\"executable\":\"";
        report
            .lines()
            .filter(|l| l.contains("\"reason\":\"compiler-artifact\"") && l.contains(field))
            .find_map(|l| {
                let start = l.find(field)? + field.len();
                let len = l[start..].find('"')?;
                Some(std::path::PathBuf::from(&l[start..start + len]))
            })
            .unwrap_or_else(|| panic!("no executable in cargo's report:\n{report}"))
    })
}

/// Runs the child binary in role `role` of this test file's `child_entry`, with `args`.
pub fn spawn_role(role: &str, args: &[&str]) -> ChildGuard {
    spawn_role_env::<&str>(role, args, &[])
}

/// `spawn_role` with `env` added to the child's environment (e.g. `SHMFRAME_DIR`, which a test
/// must not set in its own process: tests run in parallel).
pub fn spawn_role_env<V: AsRef<std::ffi::OsStr>>(
    role: &str,
    args: &[&str],
    env: &[(&str, V)],
) -> ChildGuard {
    let child = role_command(child_binary(), role, args)
        .envs(env.iter().map(|(k, v)| (k, v.as_ref())))
        .spawn()
        .expect("spawn the child binary");
    ChildGuard {
        child,
        label: format!("child {role} {args:?}"),
    }
}

/// The command that runs `binary` (the child binary or a copy) in `role` of this test file.
fn role_command(binary: &std::path::Path, role: &str, args: &[&str]) -> Command {
    let mut command = Command::new(binary);
    command
        // The name of the test crate, which is the test file's: the child binary's dispatch key.
        .env("SHMFRAME_ROLES_OF", env!("CARGO_CRATE_NAME"))
        .env("SHMFRAME_ROLE", role)
        .env("SHMFRAME_ARGS", args.join("\u{1f}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    command
}

/// The role and arguments of this process, if it was started by `spawn_role`.
pub fn role() -> Option<(String, Vec<String>)> {
    let role = std::env::var("SHMFRAME_ROLE").ok()?;
    let args = std::env::var("SHMFRAME_ARGS").unwrap_or_default();
    let args = if args.is_empty() {
        vec![]
    } else {
        args.split('\u{1f}').map(str::to_string).collect()
    };
    Some((role, args))
}

/// Reader options that start at the oldest frame the segment holds instead of the newest.
pub fn oldest() -> gstshmframe::transport::ReaderOptions {
    gstshmframe::transport::ReaderOptions {
        start: gstshmframe::transport::StartPosition::Oldest,
        ..Default::default()
    }
}

/// Frame content: every 8-byte word holds `frame_number * 0x1_0000_0001 + word_index`, so any
/// byte from another frame, or a half-written frame, fails `check_frame`.
pub fn fill_frame(frame: u64, buf: &mut [u8]) {
    for (i, chunk) in buf.chunks_mut(8).enumerate() {
        let v = frame.wrapping_mul(0x1_0000_0001).wrapping_add(i as u64);
        let bytes = v.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
}

pub fn check_frame(frame: u64, buf: &[u8]) -> Result<(), String> {
    for (i, chunk) in buf.chunks(8).enumerate() {
        let v = frame.wrapping_mul(0x1_0000_0001).wrapping_add(i as u64);
        if chunk != &v.to_le_bytes()[..chunk.len()] {
            return Err(format!(
                "frame {frame}: word {i} holds {chunk:?}, expected {:?}",
                &v.to_le_bytes()[..chunk.len()]
            ));
        }
    }
    Ok(())
}

/// The `key=value` pairs of the `SUMMARY ...` line a child role printed.
pub fn summary(out: &str) -> std::collections::HashMap<String, String> {
    let line = out
        .lines()
        .find(|l| l.starts_with("SUMMARY "))
        .unwrap_or_else(|| panic!("no summary in child output:\n{out}"));
    line["SUMMARY ".len()..]
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A numeric value of a child's summary.
pub fn num(m: &std::collections::HashMap<String, String>, k: &str) -> u64 {
    m[k].parse()
        .unwrap_or_else(|_| panic!("{k} in {m:?} is not a number"))
}

/// Frames of the readers-started-first tests (an unpaced writer waiting for readers started
/// before it): 10,000 by default (a few seconds), another count under
/// SHMFRAME_READERS_FIRST_FRAMES.
pub fn readers_first_frames() -> u64 {
    std::env::var("SHMFRAME_READERS_FIRST_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

/// Runs `write` on `writer`, failing the test (after interrupting the write) if it takes longer
/// than `limit`: a writer held up for ever must fail a test, not hang it.
pub fn write_within<T>(
    writer: &mut gstshmframe::transport::Writer,
    limit: Duration,
    what: &str,
    write: impl FnOnce(&mut gstshmframe::transport::Writer) -> Result<T, gstshmframe::transport::Error>,
) -> T {
    let interrupt = writer.interrupt_handle();
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if finished.recv_timeout(limit).is_err() {
            interrupt.interrupt();
        }
    });
    let started = Instant::now();
    let result = write(writer);
    let _ = done.send(());
    watchdog.join().unwrap();
    result.unwrap_or_else(|e| panic!("{what}: {e} after {:?}", started.elapsed()))
}

/// Whether a test's prerequisite is there: `missing` says what is not, or is `None`. A missing
/// prerequisite fails the test when `SHMFRAME_REQUIRE_ALL` is set (scripts/test.sh sets it)
/// unless `SHMFRAME_ALLOW_SKIPS=1`; otherwise the test is skipped with a notice. The caller
/// returns at once when this is false.
pub fn prerequisite(test: &str, missing: Option<String>) -> bool {
    let Some(why) = missing else { return true };
    let set = |var: &str| std::env::var_os(var).is_some_and(|v| !v.is_empty() && v != "0");
    if set("SHMFRAME_REQUIRE_ALL") && !set("SHMFRAME_ALLOW_SKIPS") {
        panic!(
            "{test}: prerequisite missing: {why}. scripts/test.sh requires every test to run; \
             set SHMFRAME_ALLOW_SKIPS=1 to skip it instead"
        );
    }
    eprintln!("NOTICE: {test} skipped: {why}");
    false
}

/// Polls `cond` every 5 ms until it holds or `limit` passes.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}

/// Waits, for at most `limit`, until `child` watches a directory for a name to appear (an
/// inotify watch, seen in /proc): what a `shmframesrc` started before its writer does while it
/// waits for the segment. False if it does not come to that (or the child ended).
pub fn wait_until_waiting_for_segment(child: &ChildGuard, limit: Duration) -> bool {
    let pid = child.child.id();
    let watches = || -> Option<bool> {
        for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
            let inotify = std::fs::read_link(fd.path())
                .is_ok_and(|target| target.as_os_str() == "anon_inode:inotify");
            let fdinfo = format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_string_lossy());
            if inotify
                && std::fs::read_to_string(fdinfo).is_ok_and(|info| info.contains("inotify wd:"))
            {
                return Some(true);
            }
        }
        Some(false)
    };
    wait_for(limit, || watches() == Some(true))
}

/// Like `spawn_role`, but runs `exe` (the child binary or a copy of it) as user `uid`, group
/// `gid` with supplementary groups `groups` (the test must run as root), with `env` added.
pub fn spawn_role_as(
    exe: &std::path::Path,
    role: &str,
    args: &[&str],
    (uid, gid, groups): (u32, u32, &[u32]),
    env: &[(&str, &std::ffi::OsStr)],
) -> ChildGuard {
    use std::os::unix::process::CommandExt;
    let groups: Vec<libc::gid_t> = groups.to_vec();
    let mut command = role_command(exe, role, args);
    for (k, v) in env {
        command.env(k, v);
    }
    // SAFETY: the closure runs between fork and exec and only makes the async-signal-safe
    // calls setgroups, setgid and setuid on data prepared before the fork.
    unsafe {
        command.pre_exec(move || {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn().expect("spawn child as another user");
    ChildGuard {
        child,
        label: format!("child {role} {args:?} as uid {uid}"),
    }
}

/// Why another user (an "other" to every file here) cannot execute `exe`, if it cannot: every
/// directory on the way needs o+x, the file o+rx.
pub fn unreachable_for_others(exe: &std::path::Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.permissions().mode());
    if mode(exe).map_or(true, |m| m & 0o005 != 0o005) {
        return Some(format!(
            "{} is not readable and executable by others",
            exe.display()
        ));
    }
    exe.ancestors()
        .skip(1)
        .find(|dir| mode(dir).map_or(true, |m| m & 0o001 == 0))
        .map(|dir| format!("{} is not searchable by others", dir.display()))
}

/// The child binary as another user can run it: the original if others can reach it, else a
/// copy in `dir` (a directory of that user's, removed by the caller).
pub fn child_binary_for_others(dir: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let exe = child_binary().to_path_buf();
    match unreachable_for_others(&exe) {
        None => exe,
        Some(why) => {
            eprintln!(
                "{why}: running a copy of the child binary from {}",
                dir.display()
            );
            let copy = dir.join("child-for-others");
            std::fs::copy(&exe, &copy).unwrap();
            std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
            copy
        }
    }
}

/// The cdylib that gst-launch-1.0 loads, next to the test binary's deps directory; panics if
/// it is older than any source it is built from (`cargo test` builds the library for the test
/// profile but does not refresh this file; `cargo build` does, and scripts/test.sh runs it).
/// Comparing with the sources rather than with the test binary keeps the check right when
/// the test binaries are built long after the cdylib (a fresh clone builds every dependency
/// again for the test profile).
pub fn built_plugin() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let so = dir.join("libgstshmframe.so");
    let manifest_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // The cdylib links the transport crate statically: its sources count as the plugin's.
    let newest_source = ["src", "transport/src"]
        .iter()
        .filter_map(|dir| newest_mtime(&manifest_dir.join(dir)))
        .chain(
            ["Cargo.toml", "build.rs", "transport/Cargo.toml"]
                .iter()
                .filter_map(|f| {
                    std::fs::metadata(manifest_dir.join(f))
                        .and_then(|m| m.modified())
                        .ok()
                }),
        )
        .max()
        .expect("the crate's sources");
    match std::fs::metadata(&so).and_then(|m| m.modified()) {
        Ok(built) if built >= newest_source => so,
        _ => panic!(
            "{} is missing or older than the crate's sources: `cargo test` does not rebuild \
             the cdylib; run `cargo build` first (scripts/test.sh does)",
            so.display()
        ),
    }
}

/// The newest modification time of the files under `dir`.
pub fn newest_mtime(dir: &std::path::Path) -> Option<std::time::SystemTime> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let meta = entry.metadata().ok()?;
            if meta.is_dir() {
                newest_mtime(&entry.path())
            } else {
                meta.modified().ok()
            }
        })
        .max()
}

/// `gst-launch-1.0 ARGS` with the built plugin and a registry of its own (removed on drop of
/// the returned path's owner: the caller removes `registry`).
pub fn gst_launch(args: &str, registry: &std::path::Path) -> ChildGuard {
    gst_launch_env::<&str>(args, registry, &[])
}

/// `gst_launch` with `env` added to its environment (e.g. `SHMFRAME_DIR`).
pub fn gst_launch_env<V: AsRef<std::ffi::OsStr>>(
    args: &str,
    registry: &std::path::Path,
    env: &[(&str, V)],
) -> ChildGuard {
    let so = built_plugin();
    let child = Command::new("gst-launch-1.0")
        .args(args.split_whitespace())
        .envs(env.iter().map(|(k, v)| (k, v.as_ref())))
        .env("GST_PLUGIN_PATH", so.parent().unwrap())
        .env("GST_REGISTRY", registry)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("gst-launch-1.0 (gstreamer1.0-tools) is installed");
    ChildGuard {
        child,
        label: format!("gst-launch-1.0 {args}"),
    }
}

/// Initialises GStreamer and registers this crate's elements statically, once per process
/// (tests run the code under test, not an installed plugin).
pub fn init() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstshmframe::plugin_register_static().expect("register the shmframe plugin");
    });
}

/// The `key=value` arguments of a child role.
pub fn role_args(args: &[String]) -> std::collections::HashMap<String, String> {
    args.iter()
        .filter_map(|a| a.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Waits up to `limit` for the pipeline's EOS; an error message, or nothing in time, fails the
/// test naming `what`.
pub fn wait_for_eos(pipeline: &gst::Pipeline, what: &str, limit: Duration) {
    use gst::prelude::*;
    let msg = pipeline
        .bus()
        .unwrap()
        .timed_pop_filtered(
            gst::ClockTime::from_nseconds(limit.as_nanos() as u64),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .unwrap_or_else(|| panic!("{what}: no EOS within {limit:?}"));
    if let gst::MessageView::Error(e) = msg.view() {
        panic!("{what}: {} ({:?})", e.error(), e.debug());
    }
}

/// A pipeline from a gst-launch description, and its element `name` as a `T`.
pub fn launch_with<T: gst::prelude::IsA<gst::Element>>(
    description: &str,
    name: &str,
) -> (gst::Pipeline, T) {
    use gst::prelude::*;
    let pipeline = gst::parse::launch(description)
        .unwrap_or_else(|e| panic!("{description}: {e}"))
        .downcast::<gst::Pipeline>()
        .unwrap();
    let element = pipeline
        .by_name(name)
        .unwrap_or_else(|| panic!("no element {name} in {description}"))
        .downcast::<T>()
        .unwrap();
    (pipeline, element)
}

/// A tmpfs of `bytes` mounted on a new directory for one test; unmounted and removed when
/// dropped, also when the test fails.
pub struct SmallTmpfs(pub std::path::PathBuf);

impl SmallTmpfs {
    /// Err: why it could not be mounted (mounting needs root).
    pub fn mount(test: &str, bytes: u64) -> Result<SmallTmpfs, String> {
        let dir =
            std::env::temp_dir().join(format!("shmframe-tmpfs-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let out = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={bytes},mode=1777"),
                "tmpfs",
            ])
            .arg(&dir)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            let _ = std::fs::remove_dir(&dir);
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(SmallTmpfs(dir))
    }

    pub fn entries(&self) -> Vec<String> {
        file_names(&self.0)
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let unmounted = std::process::Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Busy (a child still alive): detach it now, the kernel frees it when unused.
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// The Python interpreter that has the `shmframe` package (python/) and numpy: the one
/// `SHMFRAME_PYTHON` names, or else the virtual environment scripts/python.sh builds the
/// package into, `<target dir>/pyenv/bin/python`. Err: why it cannot be used.
fn python_env() -> &'static Result<std::path::PathBuf, String> {
    static PYTHON: std::sync::OnceLock<Result<std::path::PathBuf, String>> =
        std::sync::OnceLock::new();
    PYTHON.get_or_init(|| {
        let python = match std::env::var_os("SHMFRAME_PYTHON").filter(|v| !v.is_empty()) {
            Some(python) => std::path::PathBuf::from(python),
            // This test binary is <target dir>/<profile>/deps/<test>.
            None => std::env::current_exe()
                .unwrap()
                .ancestors()
                .nth(3)
                .expect("tests run from <target dir>/<profile>/deps")
                .join("pyenv/bin/python"),
        };
        let out = Command::new(&python)
            .args(["-c", "import numpy, shmframe"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| {
                format!(
                    "{} cannot run ({e}): run scripts/python.sh, which builds the shmframe \
                     package into it, or set SHMFRAME_PYTHON to an interpreter that has it",
                    python.display()
                )
            })?;
        if !out.status.success() {
            return Err(format!(
                "{} cannot import the shmframe package ({}): run scripts/python.sh, or set \
                 SHMFRAME_PYTHON to an interpreter that has it",
                python.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(python)
    })
}

/// Whether the Python interpreter of [`python`] is there (see `prerequisite`).
pub fn python_ready(test: &str) -> bool {
    prerequisite(test, python_env().clone().err())
}

/// The Python interpreter with the `shmframe` package; call [`python_ready`] first.
pub fn python() -> &'static std::path::Path {
    python_env()
        .as_ref()
        .expect("python_ready was called and returned true")
}

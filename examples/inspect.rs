//! `ipcs` for frames: shows what is in shmframe segments without attaching to them.
//!
//! For each segment: its caps, layout, depth, slot size, the writer (pid, the user it runs as,
//! alive or dead, stream state), frame counters (written, dropped, full events, evictions) and every attached reader
//! with its lag behind the writer, frames read and missed and the age of its heartbeat. With
//! `--watch` the view refreshes every second and adds live rates (frames per second written,
//! and read per reader) from two samples one second apart.
//!
//! ```text
//! cargo run --example inspect                   # every segment in /dev/shm
//! cargo run --example inspect -- cam0           # one segment
//! cargo run --example inspect -- cam0 --watch   # refresh every second with rates (Ctrl-C)
//! ```
//!
//! It opens segments read-only and claims no reader entry, so it never disturbs a stream.
//! `SHMFRAME_DIR` overrides /dev/shm, as for the elements.

use gstshmframe::transport::{self, Layout, ReaderInfo, SegmentInfo};
use std::collections::HashMap;
use std::fmt::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: inspect [SHM-NAME ...] [--watch]";

fn main() -> ExitCode {
    let mut names = Vec::new();
    let mut watch = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--watch" | "-w" => watch = true,
            "--help" | "-h" => {
                println!(
                    "{USAGE}\nWithout a name, shows every shmframe segment in {}.",
                    transport::shm_dir().display()
                );
                return ExitCode::SUCCESS;
            }
            a if a.starts_with('-') => {
                eprintln!("unknown option {a}\n{USAGE}");
                return ExitCode::FAILURE;
            }
            a => names.push(a.to_string()),
        }
    }
    let explicit = !names.is_empty();
    if !watch {
        let snapshot = sample(&names, explicit);
        print_all(&snapshot, None);
        return if explicit && snapshot.iter().any(|(_, s)| s.is_err()) {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }
    let mut previous: Option<(Instant, HashMap<String, SegmentInfo>)> = None;
    loop {
        let now = Instant::now();
        let snapshot = sample(&names, explicit);
        // Clear the terminal and home the cursor, like `watch`.
        print!("\x1b[2J\x1b[H");
        let rates = previous
            .as_ref()
            .map(|(t, prev)| (now.duration_since(*t), prev));
        print_all(&snapshot, rates);
        previous = Some((
            now,
            snapshot
                .into_iter()
                .filter_map(|(n, s)| s.ok().map(|s| (n, s)))
                .collect(),
        ));
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Every requested segment (or every segment in the shm directory) with its snapshot or the
/// reason it could not be read.
fn sample(names: &[String], explicit: bool) -> Vec<(String, Result<SegmentInfo, String>)> {
    let names: Vec<String> = if explicit {
        names.to_vec()
    } else {
        let mut found: Vec<String> = std::fs::read_dir(transport::shm_dir())
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| transport::validate_name(n).is_ok())
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        found
    };
    names
        .into_iter()
        .filter_map(|name| match transport::inspect(&name) {
            Ok(info) => Some((name, Ok(info))),
            // Scanning the directory: other programs' files are none of our business.
            Err(_) if !explicit => None,
            Err(e) => Some((name, Err(e.to_string()))),
        })
        .collect()
}

fn print_all(
    snapshot: &[(String, Result<SegmentInfo, String>)],
    rates: Option<(Duration, &HashMap<String, SegmentInfo>)>,
) {
    if snapshot.is_empty() {
        println!("no shmframe segments in {}", transport::shm_dir().display());
    }
    for (name, info) in snapshot {
        match info {
            Ok(info) => {
                let before = rates.and_then(|(dt, prev)| prev.get(name).map(|p| (dt, p)));
                print!("{}", segment_text(name, info, before));
            }
            Err(e) => println!("{name}: {e}\n"),
        }
    }
}

fn per_second(now: u64, before: u64, dt: Duration) -> f64 {
    now.saturating_sub(before) as f64 / dt.as_secs_f64().max(1e-9)
}

/// The name of user `uid` from /etc/passwd, if it has one there.
fn user_name(uid: u32) -> Option<String> {
    std::fs::read_to_string("/etc/passwd")
        .ok()?
        .lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            (fields.nth(1)?.parse() == Ok(uid)).then(|| name.to_string())
        })
}

/// One segment's block of the report; `before`: the same segment a while ago, for rates.
fn segment_text(
    name: &str,
    info: &SegmentInfo,
    before: Option<(Duration, &SegmentInfo)>,
) -> String {
    let mut out = String::new();
    // A new writer in the same name restarts the counters: no rate across it.
    let before = before.filter(|(_, p)| p.writer_session == info.writer_session);
    // As the sink's properties say it: `depth` (2 for double) plus `spare-slots`.
    let spare = info.slot_count.saturating_sub(info.depth);
    let layout = match info.layout {
        Layout::Double => format!("double: 2 + {spare} spare slots, the writer never waits"),
        Layout::Ring => format!(
            "ring: depth {} + {spare} spare slots, backpressure={}",
            info.depth, info.backpressure
        ),
    };
    let owner = user_name(info.writer_uid).map_or(String::new(), |name| format!("{name}, "));
    let _ = writeln!(out, "{name}  ({})", info.path.display());
    let _ = writeln!(
        out,
        "  layout     {layout} (format version {})",
        transport::LAYOUT_VERSION
    );
    let _ = writeln!(
        out,
        "  slot size  {} bytes   segment {} bytes",
        info.slot_capacity, info.total_len
    );
    let _ = writeln!(
        out,
        "  caps       {}",
        info.caps.as_deref().unwrap_or("(none announced yet)")
    );
    let _ = writeln!(
        out,
        "  writer     pid {} {}  user {owner}uid {}  state {:?}  session {:016x}",
        info.writer_pid,
        if info.writer_alive { "alive" } else { "DEAD" },
        info.writer_uid,
        info.state,
        info.writer_session
    );
    let fps = before.map_or(String::new(), |(dt, p)| {
        format!(
            "  ({:.1} fps)",
            per_second(info.frames_written, p.frames_written, dt)
        )
    });
    let _ = writeln!(
        out,
        "  frames     written {}{fps}  dropped {}  next {}  full events {}  evictions {}",
        info.frames_written, info.frames_dropped, info.head, info.full_events, info.readers_evicted
    );
    if info.readers.is_empty() {
        let _ = writeln!(out, "  readers    none");
    } else {
        let _ = writeln!(
            out,
            "  readers    {:>4} {:>8} {:>6} {:>10} {:>8} {:>10} {:>9}",
            "#", "pid", "lag", "read", "missed", "heartbeat", "read fps"
        );
        for r in &info.readers {
            let rate = before
                .and_then(|(dt, p)| reader_before(p, r).map(|b| (dt, b)))
                .map_or("-".to_string(), |(dt, b)| {
                    format!("{:.1}", per_second(r.frames_read, b.frames_read, dt))
                });
            let _ = writeln!(
                out,
                "             {:>4} {:>8} {:>6} {:>10} {:>8} {:>8}ms {:>9}{}",
                r.index,
                r.pid,
                r.lag,
                r.frames_read,
                r.frames_missed,
                r.heartbeat_age_ns / 1_000_000,
                rate,
                if r.evicted { "  (evicted)" } else { "" }
            );
        }
    }
    out.push('\n');
    out
}

/// The same reader (entry and pid) in an earlier snapshot.
fn reader_before<'a>(prev: &'a SegmentInfo, r: &ReaderInfo) -> Option<&'a ReaderInfo> {
    prev.readers
        .iter()
        .find(|p| p.index == r.index && p.pid == r.pid && p.frames_read <= r.frames_read)
}

#[cfg(test)]
mod tests {
    use gstshmframe::transport::{Backpressure, Layout, Writer, WriterConfig, inspect};

    /// The layout line uses the sink's property values and counts slots as its properties do
    /// (`double`: 2 + spare, not "slots=4"), and the writer line names the user it runs as.
    #[test]
    fn the_report_speaks_in_property_values_and_names_the_owner() {
        let name = format!("inspect-test-{}", std::process::id());
        let uid = std::fs::metadata("/proc/self").map_or(0, |m| {
            use std::os::unix::fs::MetadataExt;
            m.uid()
        });
        let owner = super::user_name(uid).map_or(String::new(), |n| format!("{n}, "));
        for (layout, backpressure, expected) in [
            (
                Layout::Double,
                Backpressure::DropOldest,
                "  layout     double: 2 + 2 spare slots, the writer never waits (format version 3)",
            ),
            (
                Layout::Ring,
                Backpressure::Block,
                "  layout     ring: depth 4 + 2 spare slots, backpressure=block (format version 3)",
            ),
            (
                Layout::Ring,
                Backpressure::DropOldest,
                "  layout     ring: depth 4 + 2 spare slots, backpressure=drop-oldest (format \
                 version 3)",
            ),
        ] {
            let mut config = WriterConfig::new(&name, 64);
            config.layout = layout;
            config.backpressure = backpressure;
            config.spare_slots = 2;
            let writer = Writer::create(&config).unwrap();
            let info = inspect(&name).unwrap();
            let text = super::segment_text(&name, &info, None);
            drop(writer);
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines[1], expected, "{text}");
            assert_eq!(
                lines[4],
                format!(
                    "  writer     pid {} alive  user {owner}uid {uid}  state Starting  session \
                     {:016x}",
                    std::process::id(),
                    info.writer_session
                ),
                "{text}"
            );
        }
    }
}

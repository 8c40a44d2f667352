//! `ipcs` for frames: shows what is in shmframe segments without attaching to them.
//!
//! For each segment: its caps, layout, depth, slot size, the writer (pid, alive or dead, stream
//! state), frame counters (written, dropped, full events, evictions) and every attached reader
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
                print_segment(name, info, before);
            }
            Err(e) => println!("{name}: {e}\n"),
        }
    }
}

fn per_second(now: u64, before: u64, dt: Duration) -> f64 {
    now.saturating_sub(before) as f64 / dt.as_secs_f64().max(1e-9)
}

fn print_segment(name: &str, info: &SegmentInfo, before: Option<(Duration, &SegmentInfo)>) {
    // A new writer in the same name restarts the counters: no rate across it.
    let before = before.filter(|(_, p)| p.writer_session == info.writer_session);
    let layout = match info.layout {
        Layout::Double => "double".to_string(),
        Layout::Ring => format!("ring depth={}", info.depth),
    };
    println!("{name}  ({})", info.path.display());
    println!(
        "  layout     {layout} slots={} backpressure={:?} (format version {})",
        info.slot_count,
        info.backpressure,
        transport::LAYOUT_VERSION
    );
    println!(
        "  slot size  {} bytes   segment {} bytes",
        info.slot_capacity, info.total_len
    );
    println!(
        "  caps       {}",
        info.caps.as_deref().unwrap_or("(none announced yet)")
    );
    println!(
        "  writer     pid {} {}  state {:?}  session {:016x}",
        info.writer_pid,
        if info.writer_alive { "alive" } else { "DEAD" },
        info.state,
        info.writer_session
    );
    let fps = before.map_or(String::new(), |(dt, p)| {
        format!(
            "  ({:.1} fps)",
            per_second(info.frames_written, p.frames_written, dt)
        )
    });
    println!(
        "  frames     written {}{fps}  dropped {}  next {}  full events {}  evictions {}",
        info.frames_written, info.frames_dropped, info.head, info.full_events, info.readers_evicted
    );
    if info.readers.is_empty() {
        println!("  readers    none");
    } else {
        println!(
            "  readers    {:>4} {:>8} {:>6} {:>10} {:>8} {:>10} {:>9}",
            "#", "pid", "lag", "read", "missed", "heartbeat", "read fps"
        );
        for r in &info.readers {
            let rate = before
                .and_then(|(dt, p)| reader_before(p, r).map(|b| (dt, b)))
                .map_or("-".to_string(), |(dt, b)| {
                    format!("{:.1}", per_second(r.frames_read, b.frames_read, dt))
                });
            println!(
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
    println!();
}

/// The same reader (entry and pid) in an earlier snapshot.
fn reader_before<'a>(prev: &'a SegmentInfo, r: &ReaderInfo) -> Option<&'a ReaderInfo> {
    prev.readers
        .iter()
        .find(|p| p.index == r.index && p.pid == r.pid && p.frames_read <= r.frames_read)
}

//! Micro-benchmark of the transport alone: one write plus one read of a frame, across two
//! processes, for 64 B, 300 KB and 8 MB frames. The child process (this binary re-run with
//! SHMFRAME_BENCH_ROLE=reader) copies every frame out, as a reader element would.
//!
//!     cargo bench -p shmframe-transport --bench transport            # full run
//!     cargo bench -p shmframe-transport --bench transport -- --quick
//!     cargo bench -p shmframe-transport --bench transport -- 64     # only the 64 B row
//!
//! Prints a markdown table: per-frame cost with writer and reader pipelined on two cores,
//! throughput, and write-to-read-complete latency percentiles (CLOCK_MONOTONIC on both sides).

use shmframe_transport::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    if std::env::var("SHMFRAME_BENCH_ROLE").as_deref() == Ok("reader") {
        reader(&std::env::var("SHMFRAME_BENCH_NAME").unwrap());
        return;
    }
    // `cargo test --all-targets` runs this binary without `--bench`: then it is a smoke test
    // of the cross-process path with few frames, not a measurement.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let quick = smoke || std::env::args().any(|a| a == "--quick");
    // Other arguments pick rows by size (`64`, `300`, `8`): one row alone, e.g. under
    // `perf stat`, counts that row's frames only.
    let sizes: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    println!("# shmframe transport micro-benchmark");
    println!();
    println!(
        "{} cores, layout ring depth 4 backpressure block, command: `cargo bench -p shmframe-transport --bench transport{}`",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if quick { " -- --quick" } else { "" }
    );
    println!();
    println!(
        "| frame | frames | ns/frame (write+read) | MB/s | latency p50 µs | p99 µs | max µs |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (label, size, frames) in [
        ("64 B", 64u64, 200_000u64),
        ("300 KB", 300 * 1024, 20_000),
        ("8 MB", 8 << 20, 600),
    ] {
        if !sizes.is_empty() && !sizes.iter().any(|s| label.split(' ').next() == Some(s)) {
            continue;
        }
        let frames = if smoke {
            (frames / 1000).max(5)
        } else if quick {
            frames / 10
        } else {
            frames
        };
        run(label, size, frames);
    }
}

fn run(label: &str, size: u64, frames: u64) {
    let name = format!("shmframe-bench-{}-{size}", std::process::id());
    let mut c = WriterConfig::new(&name, size);
    c.depth = 4;
    c.backpressure = Backpressure::Block;
    let mut w = Writer::create(&c).expect("create segment");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("SHMFRAME_BENCH_ROLE", "reader")
        .env("SHMFRAME_BENCH_NAME", &name)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn reader");
    let deadline = Instant::now() + Duration::from_secs(10);
    while w.reader_count() == 0 {
        assert!(Instant::now() < deadline, "reader did not attach");
        std::thread::sleep(Duration::from_millis(1));
    }
    let payload = vec![0x5au8; size as usize];
    let started = Instant::now();
    for _ in 0..frames {
        w.write(&FrameMeta::default(), &payload).expect("write");
    }
    w.end_of_stream();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let elapsed = started.elapsed();
    let _ = child.wait();
    drop(w);
    let mut lat: Vec<u64> = line
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    let read = lat.remove(0);
    assert_eq!(read, frames, "reader must get every frame under block");
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
    let ns = elapsed.as_nanos() as f64 / frames as f64;
    let mbs = size as f64 * frames as f64 / elapsed.as_secs_f64() / 1e6;
    println!(
        "| {label} | {frames} | {ns:.0} | {mbs:.0} | {:.1} | {:.1} | {:.1} |",
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
}

fn reader(name: &str) {
    let mut r = Reader::open(
        name,
        &ReaderOptions {
            start: StartPosition::Oldest,
            ..Default::default()
        },
    )
    .expect("open");
    let mut buf = Vec::new();
    let mut latencies = Vec::new();
    while let ReadResult::Frame(info) = r
        .read_next(Duration::from_secs(5), |info, view| {
            buf.resize(info.size as usize, 0);
            view.copy_to(&mut buf);
        })
        .expect("read")
    {
        latencies.push(monotonic_ns().saturating_sub(info.write_time_ns));
    }
    // Sample at most 100k latencies to keep the line short.
    let step = (latencies.len() / 100_000).max(1);
    let sampled: Vec<String> = latencies.iter().step_by(step).map(u64::to_string).collect();
    println!("{} {}", r.frames_read(), sampled.join(" "));
}

//! Property tests: whatever bytes a segment holds, validating it never panics, never reads out
//! of bounds, and never accepts a geometry that does not fit the file. 130,000 cases in all.

mod common;

use common::ShmName;
use gstshmframe::transport::*;
use std::sync::OnceLock;

/// The first bytes of a real segment, and its length.
fn valid_header() -> &'static (Vec<u8>, u64) {
    static HEADER: OnceLock<(Vec<u8>, u64)> = OnceLock::new();
    HEADER.get_or_init(|| {
        let name = ShmName::new("prop-template");
        let mut c = WriterConfig::new(&name, 10_000);
        c.depth = 3;
        c.spare_slots = 1;
        let w = Writer::create(&c).unwrap();
        let bytes = std::fs::read(name.path()).unwrap();
        let len = bytes.len() as u64;
        drop(w);
        (bytes[..8192].to_vec(), len)
    })
}

/// A geometry that was accepted must describe regions inside the file, in order.
fn check_accepted(g: &Geometry, file_len: u64) {
    assert!(g.total_len <= file_len);
    assert!(g.readers_offset + g.readers_len <= g.index_offset);
    assert!(g.desc_offset_of(g.slot_count) <= g.data_offset);
    assert!(g.slot_data_offset(g.slot_count) <= g.total_len);
    assert!(g.slot_capacity <= g.slot_stride);
    assert!(g.check_slot(g.slot_count).is_err());
}

/// Pseudo-random cases (SplitMix64) from a seed that changes every run, so that the runs
/// together cover more than one run does; a failing case prints the seed, and
/// `SHMFRAME_PROPERTY_SEED=<seed>` replays it.
struct Cases {
    state: u64,
}

impl Cases {
    fn u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// In `0..n` (the modulo's bias is far below what these properties could notice).
    fn below(&mut self, n: u64) -> u64 {
        self.u64() % n
    }

    fn bytes(&mut self, max_len: u64) -> Vec<u8> {
        let len = self.below(max_len) as usize;
        (0..len).map(|_| self.u64() as u8).collect()
    }
}

/// Runs `property` on `count` cases; a failure (a panic) names the case and how to replay it.
fn check_cases(test: &str, count: u64, mut property: impl FnMut(&mut Cases)) {
    let seed = match std::env::var("SHMFRAME_PROPERTY_SEED") {
        Ok(seed) => seed.parse().expect("SHMFRAME_PROPERTY_SEED is a u64"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    };
    let mut cases = Cases { state: seed };
    for case in 0..count {
        struct Report<'a>(&'a str, u64, u64);
        impl Drop for Report<'_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    let Report(test, case, seed) = self;
                    eprintln!(
                        "{test}: case {case} failed; replay with SHMFRAME_PROPERTY_SEED={seed} \
                         cargo test --test header_properties -- --exact {test}"
                    );
                }
            }
        }
        let _report = Report(test, case, seed);
        property(&mut cases);
    }
}

#[test]
fn arbitrary_bytes_never_panic() {
    check_cases("arbitrary_bytes_never_panic", 40_000, |cases| {
        let bytes = cases.bytes(9000);
        let file_len = cases.u64();
        if let Ok(g) = Geometry::parse(&bytes, file_len) {
            check_accepted(&g, file_len);
        }
    });
}

#[test]
fn arbitrary_bytes_after_a_valid_magic_never_panic() {
    check_cases(
        "arbitrary_bytes_after_a_valid_magic_never_panic",
        40_000,
        |cases| {
            let mut bytes = b"SHMFRAME".to_vec();
            bytes.extend_from_slice(&cases.bytes(9000));
            let file_len = cases.u64();
            if let Ok(g) = Geometry::parse(&bytes, file_len) {
                check_accepted(&g, file_len);
            }
        },
    );
}

#[test]
fn any_mutated_header_field_is_caught_or_harmless() {
    let (template, len) = valid_header();
    check_cases(
        "any_mutated_header_field_is_caught_or_harmless",
        40_000,
        |cases| {
            let offset = cases.below(512) as usize;
            let value = cases.u64();
            let width = [1, 4, 8][cases.below(3) as usize];
            let file_len_delta = cases.below(140_000) as i64 - 70_000;
            let mut bytes = template.clone();
            let v = value.to_ne_bytes();
            bytes[offset..offset + width].copy_from_slice(&v[..width]);
            let file_len = (*len as i64 + file_len_delta).max(0) as u64;
            match Geometry::parse(&bytes, file_len) {
                Ok(g) => check_accepted(&g, file_len),
                // Errors are typed and say what was found.
                Err(e) => assert!(!e.to_string().is_empty(), "{e:?}"),
            }
        },
    );
}

#[test]
fn truncated_headers_are_reported_as_truncated() {
    let (template, len) = valid_header();
    check_cases(
        "truncated_headers_are_reported_as_truncated",
        10_000,
        |cases| {
            let cut = cases.below(8192) as usize;
            let res = Geometry::parse(&template[..cut], (cut as u64).min(*len));
            assert!(
                matches!(res, Err(Error::Truncated { .. })),
                "cut at {cut}: {res:?}"
            );
        },
    );
}

/// Through the real open path (file I/O and mmap): fewer cases.
#[test]
fn opening_a_corrupted_segment_never_panics() {
    let (template, len) = valid_header();
    check_cases("opening_a_corrupted_segment_never_panics", 1_500, |cases| {
        let name = ShmName::new("prop-open");
        let mut bytes = template.clone();
        bytes.resize(*len as usize, 0);
        for _ in 0..1 + cases.below(15) {
            let offset = cases.below(8192) as usize;
            bytes[offset] = cases.u64() as u8;
        }
        if cases.below(2) == 1 {
            bytes.truncate(cases.below(200_000) as usize);
        }
        std::fs::write(name.path(), &bytes).unwrap();
        let opts = ReaderOptions {
            start: StartPosition::Oldest,
            ..Default::default()
        };
        if let Ok(mut r) = Reader::open(&name, &opts) {
            // Mutations only reach the header and caps pages; the ring index past them is
            // empty, so whatever the header claims, no frame can come out of it.
            let res = r.read_next(std::time::Duration::from_millis(1), |_, _| {});
            assert!(!matches!(res, Ok(ReadResult::Frame(_))), "{res:?}");
            let _ = r.info();
        }
        let _ = inspect(&name);
    });
}

#[test]
fn specific_corruptions_name_the_field() {
    let (template, len) = valid_header();
    let set_u32 = |off: usize, v: u32| {
        let mut b = template.clone();
        b[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        b
    };
    // version is at offset 8, layout at 12, depth at 16 (see layout.rs).
    let e = Geometry::parse(&set_u32(8, 99), *len).unwrap_err();
    assert_eq!(
        e.to_string(),
        "segment layout version 99 is not supported by this build (expects version 3); use the \
         same shmframe version for writer and readers"
    );
    let e = Geometry::parse(&set_u32(12, 7), *len).unwrap_err();
    assert_eq!(
        e.to_string(),
        "corrupt segment header: field layout expected 1 (double) or 2 (ring), found 7; the \
         segment was damaged or not written by shmframe: remove the file and restart the writer"
    );
    let e = Geometry::parse(&set_u32(16, 5000), *len).unwrap_err();
    assert!(e.to_string().contains("field depth"), "{e}");
    let e = Geometry::parse(template, len - 1).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("truncated segment: segment needs"),
        "{e}"
    );
    // Bytes without shmframe's magic are a foreign file; the opener names it (tests/transport.rs).
    let e = Geometry::parse(&set_u32(0, 0x2153_4f42), *len).unwrap_err();
    assert!(
        matches!(&e, Error::ForeignFile { path } if path.is_empty()),
        "{e:?}"
    );
    assert!(Geometry::parse(template, *len).is_ok());
}

//! Property tests: whatever bytes a segment holds, validating it never panics, never reads out
//! of bounds, and never accepts a geometry that does not fit the file. 130,000 cases in all.

mod common;

use common::ShmName;
use gstshmframe::transport::*;
use proptest::prelude::*;
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40_000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..9000),
                                   file_len in any::<u64>()) {
        if let Ok(g) = Geometry::parse(&bytes, file_len) {
            check_accepted(&g, file_len);
        }
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_magic_never_panic(
        tail in proptest::collection::vec(any::<u8>(), 0..9000),
        file_len in any::<u64>(),
    ) {
        let mut bytes = b"SHMFRAME".to_vec();
        bytes.extend_from_slice(&tail);
        if let Ok(g) = Geometry::parse(&bytes, file_len) {
            check_accepted(&g, file_len);
        }
    }

    #[test]
    fn any_mutated_header_field_is_caught_or_harmless(
        offset in 0usize..512,
        value in any::<u64>(),
        width in prop_oneof![Just(1usize), Just(4), Just(8)],
        file_len_delta in -70_000i64..70_000,
    ) {
        let (template, len) = valid_header();
        let mut bytes = template.clone();
        let v = value.to_ne_bytes();
        bytes[offset..offset + width].copy_from_slice(&v[..width]);
        let file_len = (*len as i64 + file_len_delta).max(0) as u64;
        match Geometry::parse(&bytes, file_len) {
            Ok(g) => check_accepted(&g, file_len),
            Err(e) => {
                // Errors are typed and say what was found.
                let msg = e.to_string();
                prop_assert!(!msg.is_empty());
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn truncated_headers_are_reported_as_truncated(cut in 0usize..8192) {
        let (template, len) = valid_header();
        let res = Geometry::parse(&template[..cut], (cut as u64).min(*len));
        prop_assert!(
            matches!(res, Err(Error::Truncated { .. })),
            "cut at {}: {:?}", cut, res
        );
    }
}

proptest! {
    // Through the real open path (file I/O and mmap): fewer cases.
    #![proptest_config(ProptestConfig::with_cases(1_500))]

    #[test]
    fn opening_a_corrupted_segment_never_panics(
        mutations in proptest::collection::vec((0usize..8192, any::<u8>()), 1..16),
        cut in proptest::option::of(0u64..200_000),
    ) {
        let name = ShmName::new("prop-open");
        let (template, len) = valid_header();
        let mut bytes = template.clone();
        bytes.resize(*len as usize, 0);
        for (off, b) in &mutations {
            bytes[*off] = *b;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut as usize);
        }
        std::fs::write(name.path(), &bytes).unwrap();
        let opts = ReaderOptions { start: StartPosition::Oldest, ..Default::default() };
        if let Ok(mut r) = Reader::open(&name, &opts) {
            // Mutations only reach the header and caps pages; the ring index past them is
            // empty, so whatever the header claims, no frame can come out of it.
            let res = r.read_next(std::time::Duration::from_millis(1), |_, _| {});
            prop_assert!(!matches!(res, Ok(ReadResult::Frame(_))), "{:?}", res);
            let _ = r.info();
        }
        let _ = inspect(&name);
    }
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

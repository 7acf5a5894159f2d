//! The wheel RECORD reader: whatever a wheel's RECORD holds, what kiln reads from it is what it
//! would write back ([`record_line`] writes the RECORD of every installed wheel), so quoting
//! never changes which path a hash vouches for.

#![no_main]

use kiln::install::wheel::{parse_record, record_line};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(record) = parse_record(text) else {
        return;
    };
    for listed in record.values() {
        if let Some(hash) = &listed.hash {
            assert!(hash.starts_with("sha256="), "{text:?}: hash {hash:?}");
        }
    }
    let written: String = record
        .iter()
        .map(|(path, listed)| record_line(path, listed) + "\n")
        .collect();
    assert_eq!(
        parse_record(&written).as_ref(),
        Ok(&record),
        "{text:?} written back as {written:?}"
    );
});

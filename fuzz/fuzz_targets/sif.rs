//! The SIF reader: the header check the library API applies to uploads, and the descriptor
//! table kiln reads to build on a SIF it holds. Whatever the bytes, reading ends with objects
//! or an error saying the file is not a SIF, never a panic or an outsized allocation, and the two
//! readers agree on what a SIF is.

#![no_main]

use std::io::{Cursor, ErrorKind};

use kiln::assemble::sif::{MAX_DESCRIPTORS, SifArch, SifDataType, read_descriptors};
use libfuzzer_sys::fuzz_target;

/// Where the magic sits in the header, after the launch script field.
const MAGIC_AT: usize = 32;

fuzz_target!(|data: &[u8]| {
    let has_magic = data.get(MAGIC_AT..MAGIC_AT + 10) == Some(b"SIF_MAGIC\0".as_slice());
    if SifArch::of_header(data).is_some() {
        assert!(has_magic, "an architecture without the SIF magic");
    }
    let objects = match read_descriptors(Cursor::new(data)) {
        Ok(objects) => objects,
        Err(err) => {
            // Reading from memory fails only on what the bytes say.
            assert!(
                matches!(
                    err.kind(),
                    ErrorKind::InvalidData | ErrorKind::UnexpectedEof
                ),
                "{err}"
            );
            return;
        }
    };
    assert!(has_magic, "descriptors read without the SIF magic");
    assert!(objects.len() <= MAX_DESCRIPTORS as usize);
    for object in &objects {
        assert!(!object.name.contains('\0'), "{object:?}");
        if object.primary_partition {
            assert_eq!(
                object.data_type,
                SifDataType::Partition.code(),
                "{object:?}"
            );
        }
    }
});

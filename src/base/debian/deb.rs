//! Reading a `.deb`: an `ar` archive whose `data.tar.*` member holds the package's files.
//!
//! Only the data member is read; the control member's maintainer scripts are never run, and
//! the package's control stanza comes from the signed index instead. The `ar` format is small
//! enough to read here: a magic line, then 60-byte headers each followed by the member.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

/// The magic line every `ar` archive starts with.
const AR_MAGIC: &[u8; 8] = b"!<arch>\n";

/// The size of an `ar` member header.
const AR_HEADER_LEN: usize = 60;

/// The members a `.deb` can have before its data: `debian-binary`, `control.tar.*` and
/// optional `_`-prefixed ones. More than this is not a `.deb`.
const MAX_MEMBERS: usize = 16;

/// The package's file tree, decompressed as it is read.
pub type DataTar = tar::Archive<Box<dyn Read + Send>>;

/// Opens the `data.tar` of the `.deb` at `path`, decompressing xz, zstd, gzip or nothing, as
/// deb(5) allows (bzip2 and lzma are legacy and not accepted).
pub fn data_tar(path: &Path) -> io::Result<DataTar> {
    let mut file = BufReader::new(File::open(path)?);
    let mut magic = [0u8; AR_MAGIC.len()];
    file.read_exact(&mut magic)
        .map_err(|_| invalid("shorter than an ar header"))?;
    if &magic != AR_MAGIC {
        return Err(invalid("not an ar archive"));
    }
    for _ in 0..MAX_MEMBERS {
        let mut header = [0u8; AR_HEADER_LEN];
        file.read_exact(&mut header)
            .map_err(|_| invalid("has no data.tar member"))?;
        if &header[58..60] != b"`\n" {
            return Err(invalid("has a malformed ar member header"));
        }
        let name = String::from_utf8_lossy(&header[..16]);
        let name = name.trim_end().trim_end_matches('/');
        let size: u64 = String::from_utf8_lossy(&header[48..58])
            .trim()
            .parse()
            .map_err(|_| invalid("has an ar member with an unreadable size"))?;
        if let Some(compression) = name.strip_prefix("data.tar") {
            let member: Box<dyn Read + Send> = Box::new(file.take(size));
            let decoded: Box<dyn Read + Send> = match compression {
                ".xz" => Box::new(liblzma::read::XzDecoder::new(member)),
                ".zst" => Box::new(zstd::stream::read::Decoder::new(member)?),
                ".gz" => Box::new(flate2::read::GzDecoder::new(member)),
                "" => member,
                other => {
                    return Err(invalid(&format!(
                        "has a data.tar{other} member, a compression kiln does not read"
                    )));
                }
            };
            return Ok(tar::Archive::new(decoded));
        }
        // Members are padded to an even offset.
        file.seek(SeekFrom::Current((size + size % 2) as i64))?;
    }
    Err(invalid("has no data.tar member"))
}

fn invalid(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("the .deb {why}"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// A `.deb` with the given data entries (path, contents), data member xz-compressed.
    pub(crate) fn deb_bytes(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut data = tar::Builder::new(Vec::new());
        for (path, contents) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(contents.len() as u64);
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            header.set_entry_type(tar::EntryType::Regular);
            data.append_data(&mut header, path, *contents).unwrap();
        }
        let data = data.into_inner().unwrap();
        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 6);
        xz.write_all(&data).unwrap();
        let data = xz.finish().unwrap();

        let mut out = AR_MAGIC.to_vec();
        for (name, body) in [
            ("debian-binary", b"2.0\n".to_vec()),
            ("control.tar.xz", b"not read".to_vec()),
            ("data.tar.xz", data),
        ] {
            out.extend(
                format!(
                    "{name:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                    0,
                    0,
                    0,
                    100644,
                    body.len()
                )
                .as_bytes(),
            );
            out.extend(&body);
            if body.len() % 2 == 1 {
                out.push(b'\n');
            }
        }
        out
    }

    #[test]
    fn reads_the_data_member_past_odd_sized_members() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.deb");
        std::fs::write(&path, deb_bytes(&[("./usr/bin/hello", b"#!/bin/sh\n")])).unwrap();
        let mut archive = data_tar(&path).unwrap();
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let mut text = String::new();
            entry.read_to_string(&mut text).unwrap();
            seen.push((entry.path().unwrap().display().to_string(), text));
        }
        assert_eq!(
            seen,
            [("usr/bin/hello".to_owned(), "#!/bin/sh\n".to_owned())]
        );
    }

    #[test]
    fn refuses_what_is_not_a_deb() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.deb");
        std::fs::write(&path, b"<html>not found</html>").unwrap();
        let err = data_tar(&path).err().unwrap();
        assert!(err.to_string().contains("not an ar archive"), "{err}");
    }
}

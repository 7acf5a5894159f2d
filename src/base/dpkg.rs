//! A base image's dpkg status, read from its layer tars: what Debian packages the image holds,
//! for its SBOM, without unpacking anything or running dpkg.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

use super::BaseError;

/// The dpkg database's package list, as layer tars name it (without `./` or `/`).
const STATUS_PATH: &str = "var/lib/dpkg/status";

/// The whiteout a layer carries when it deletes the status file.
const STATUS_WHITEOUT: &str = "var/lib/dpkg/.wh.status";

/// The largest status file read (Debian's full desktop installs stay under 10 MB).
const MAX_STATUS_BYTES: u64 = 64 << 20;

/// `/var/lib/dpkg/status` of the image whose layers (gzip or plain tars) are `layers`, bottom
/// first: from the top-most layer that has it, `None` when no layer has it or the top-most
/// mention deletes it. Blocking; run it off the async runtime.
pub fn dpkg_status(layers: &[PathBuf]) -> Result<Option<String>, BaseError> {
    for layer in layers.iter().rev() {
        match status_in_layer(layer).map_err(|source| BaseError::Io {
            step: format!(
                "reading the dpkg status from base layer {}",
                layer.display()
            ),
            source,
        })? {
            Found::Status(text) => return Ok(Some(text)),
            Found::Deleted => return Ok(None),
            Found::Nothing => {}
        }
    }
    Ok(None)
}

enum Found {
    Status(String),
    Deleted,
    Nothing,
}

fn status_in_layer(path: &Path) -> io::Result<Found> {
    let mut file = BufReader::new(File::open(path)?);
    let mut magic = [0u8; 2];
    let gzip = file.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
    let file = BufReader::new(File::open(path)?);
    let reader: Box<dyn Read> = if gzip {
        Box::new(GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut archive = tar::Archive::new(reader);
    let mut found = Found::Nothing;
    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw = entry.path_bytes();
        let name = String::from_utf8_lossy(&raw);
        let name = name.trim_start_matches("./").trim_start_matches('/');
        if name == STATUS_WHITEOUT {
            found = Found::Deleted;
        } else if name == STATUS_PATH && entry.header().entry_type().is_file() {
            if entry.size() > MAX_STATUS_BYTES {
                return Err(io::Error::other(format!(
                    "{STATUS_PATH} is larger than {MAX_STATUS_BYTES} bytes"
                )));
            }
            let mut text = String::new();
            entry.read_to_string(&mut text)?;
            // Later entries of a tar replace earlier ones, so keep reading.
            found = Found::Status(text);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn layer(dir: &Path, name: &str, gzip: bool, files: &[(&str, &str)]) -> PathBuf {
        let path = dir.join(name);
        let file = File::create(&path).expect("layer file");
        let writer: Box<dyn io::Write> = if gzip {
            Box::new(flate2::write::GzEncoder::new(
                file,
                flate2::Compression::fast(),
            ))
        } else {
            Box::new(file)
        };
        let mut builder = tar::Builder::new(writer);
        for (name, text) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(text.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder
                .append_data(&mut header, name, text.as_bytes())
                .expect("entry");
        }
        builder.into_inner().expect("tar").flush().expect("flush");
        path
    }

    #[test]
    fn the_top_most_status_wins() {
        let dir = tempfile::tempdir().expect("temp dir");
        let bottom = layer(
            dir.path(),
            "bottom",
            true,
            &[("./etc/hostname", ""), ("./var/lib/dpkg/status", "old\n")],
        );
        let middle = layer(dir.path(), "middle", false, &[("usr/bin/x", "x")]);
        let top = layer(dir.path(), "top", true, &[("var/lib/dpkg/status", "new\n")]);
        assert_eq!(
            dpkg_status(&[bottom.clone(), middle.clone(), top]).expect("read"),
            Some("new\n".to_owned())
        );
        assert_eq!(
            dpkg_status(&[bottom.clone(), middle.clone()]).expect("read"),
            Some("old\n".to_owned())
        );
        let deleted = layer(
            dir.path(),
            "deleted",
            true,
            &[("var/lib/dpkg/.wh.status", "")],
        );
        assert_eq!(dpkg_status(&[bottom, deleted]).expect("read"), None);
        assert_eq!(dpkg_status(&[middle]).expect("read"), None);
    }

    #[test]
    fn unreadable_layers_name_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("gone.tar.gz");
        let err = dpkg_status(&[missing]).expect_err("no such file");
        assert!(err.to_string().contains("gone.tar.gz"), "{err}");
    }
}

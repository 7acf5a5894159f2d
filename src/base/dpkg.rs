//! An image's dpkg status, read from its layer tars: what Debian packages the image holds, for
//! its SBOM, without unpacking anything or running dpkg. Used for kiln's bases and for images
//! buildah built from users' recipes.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use super::BaseError;

/// The dpkg database's package list, as layer tars name it (without `./` or `/`).
const STATUS_PATH: &str = "var/lib/dpkg/status";

/// Whiteouts that delete the status file or a directory holding it.
const STATUS_WHITEOUTS: [&str; 4] = [
    "var/lib/dpkg/.wh.status",
    "var/lib/.wh.dpkg",
    "var/.wh.lib",
    ".wh.var",
];

/// Opaque-directory markers that hide what lower layers have in a directory holding the status
/// file (a `RUN rm -rf /var/lib/dpkg && mkdir …` leaves one).
const STATUS_OPAQUE_MARKERS: [&str; 4] = [
    "var/lib/dpkg/.wh..wh..opq",
    "var/lib/.wh..wh..opq",
    "var/.wh..wh..opq",
    ".wh..wh..opq",
];

/// The largest status file read (Debian's full desktop installs stay under 10 MB).
const MAX_STATUS_BYTES: u64 = 64 << 20;

/// What one layer says about `/var/lib/dpkg/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerStatus {
    /// The layer holds the file: this text, whatever lower layers had.
    Status(String),
    /// The layer deletes it (or hides the directory holding it): the image has none.
    Deleted,
    /// The layer leaves it as lower layers have it.
    Untouched,
}

/// `/var/lib/dpkg/status` of the image whose layers (gzip or plain tars) are `layers`, bottom
/// first: from the top-most layer that has it, `None` when no layer has it or the top-most
/// mention deletes it. Blocking; run it off the async runtime.
pub fn dpkg_status(layers: &[PathBuf]) -> Result<Option<String>, BaseError> {
    for layer in layers.iter().rev() {
        match layer_dpkg_status(layer)? {
            LayerStatus::Status(text) => return Ok(Some(text)),
            LayerStatus::Deleted => return Ok(None),
            LayerStatus::Untouched => {}
        }
    }
    Ok(None)
}

/// What the layer tar (gzip or plain) at `path` does to the dpkg status, for callers that
/// fetch layers one at a time from the top. Blocking; run it off the async runtime.
pub fn layer_dpkg_status(path: &Path) -> Result<LayerStatus, BaseError> {
    status_in_layer(path).map_err(|source| BaseError::Io {
        step: format!("reading the dpkg status from layer {}", path.display()),
        source,
    })
}

fn status_in_layer(path: &Path) -> io::Result<LayerStatus> {
    let mut file = BufReader::new(File::open(path)?);
    let mut magic = [0u8; 2];
    let gzip = file.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
    let file = BufReader::new(File::open(path)?);
    let reader: Box<dyn Read> = if gzip {
        Box::new(MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut archive = tar::Archive::new(reader);
    let mut status = None;
    let mut hidden = false;
    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw = entry.path_bytes();
        let name = String::from_utf8_lossy(&raw);
        let name = name.trim_start_matches("./").trim_start_matches('/');
        if STATUS_WHITEOUTS.contains(&name) || STATUS_OPAQUE_MARKERS.contains(&name) {
            hidden = true;
        } else if name == STATUS_PATH && entry.header().entry_type().is_file() {
            if entry.size() > MAX_STATUS_BYTES {
                return Err(io::Error::other(format!(
                    "{STATUS_PATH} is larger than {MAX_STATUS_BYTES} bytes"
                )));
            }
            let mut text = String::new();
            entry.read_to_string(&mut text)?;
            // Later entries of a tar replace earlier ones, so keep reading.
            status = Some(text);
        }
    }
    Ok(match status {
        Some(text) => LayerStatus::Status(text),
        None if hidden => LayerStatus::Deleted,
        None => LayerStatus::Untouched,
    })
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
        assert_eq!(dpkg_status(&[bottom.clone(), deleted]).expect("read"), None);
        assert_eq!(dpkg_status(&[middle]).expect("read"), None);
        // `RUN rm -rf /var/lib/dpkg` deletes the directory; a fresh one hides what was below.
        for (name, marker) in [
            ("gone-dir", "var/lib/.wh.dpkg"),
            ("opaque", "var/lib/dpkg/.wh..wh..opq"),
        ] {
            let hiding = layer(dir.path(), name, true, &[(marker, "")]);
            assert_eq!(
                layer_dpkg_status(&hiding).expect("read"),
                LayerStatus::Deleted
            );
            assert_eq!(
                dpkg_status(&[bottom.clone(), hiding]).expect("read"),
                None,
                "{marker}"
            );
        }
        let replaced = layer(
            dir.path(),
            "replaced",
            false,
            &[
                ("var/lib/dpkg/.wh..wh..opq", ""),
                ("var/lib/dpkg/status", "fresh\n"),
            ],
        );
        assert_eq!(
            dpkg_status(&[bottom, replaced]).expect("read"),
            Some("fresh\n".to_owned())
        );
    }

    #[test]
    fn unreadable_layers_name_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("gone.tar.gz");
        let err = dpkg_status(&[missing]).expect_err("no such file");
        assert!(err.to_string().contains("gone.tar.gz"), "{err}");
    }
}

//! The SBOM of an image: an SPDX 2.3 JSON document made from the build's lock (conda packages
//! and wheels) and its base's dpkg status (Debian packages), and the OCI artifact manifest that
//! attaches it to the image as a referrer.
//!
//! Pure: the same lock, status and image digest give the same bytes, since nothing here reads
//! the clock (`created` is [`CREATED`]) or the machine. Its input is the lock `resolve` makes.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{Blob, CREATED, Descriptor, MEDIA_TYPE_MANIFEST};
use crate::resolve::{LockedPackage, LockedWheel};
use crate::spec::Platform;

/// The media type of an SPDX JSON document, also the artifact type of its referrer.
pub const MEDIA_TYPE_SPDX: &str = "application/spdx+json";
/// The media type of the empty config OCI artifacts carry.
pub const MEDIA_TYPE_EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// The file name `oras pull` writes the SBOM to.
pub const SBOM_FILE_NAME: &str = "sbom.spdx.json";

/// SPDX's word for "this document does not say".
const NOASSERTION: &str = "NOASSERTION";

/// Everything an image's SBOM describes.
#[derive(Debug, Clone, Copy)]
pub struct SbomInput<'a> {
    /// The image's repository with its registry host, e.g. `kiln.example.org/library/samtools`.
    pub image: &'a str,
    /// The digest of the image manifest the SBOM describes (one platform).
    pub digest: &'a str,
    /// The image's platform.
    pub platform: Platform,
    /// The conda packages locked for this platform.
    pub packages: &'a [LockedPackage],
    /// The wheels locked for this platform.
    pub wheels: &'a [LockedWheel],
    /// The Debian packages of the base, from its `/var/lib/dpkg/status`.
    pub debian: &'a [DebianPackage],
    /// The Debian release of the base (`bookworm`), when known, for the purl's `distro`.
    pub distro: Option<&'a str>,
}

/// One installed Debian package, as its dpkg status paragraph gives it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DebianPackage {
    /// Package name.
    pub name: String,
    /// Version, with epoch if any (`1:2.3-4`).
    pub version: String,
    /// Architecture (`amd64`, `arm64`, `all`).
    pub architecture: String,
}

/// The packages a dpkg status file lists as installed, sorted. Paragraphs that are not
/// installed (`deinstall ok config-files`, half-installed) or lack a field are skipped.
pub fn parse_dpkg_status(text: &str) -> Vec<DebianPackage> {
    let mut packages = BTreeSet::new();
    for paragraph in text.split("\n\n") {
        let mut fields = BTreeMap::new();
        for line in paragraph.lines() {
            if line.starts_with([' ', '\t']) {
                continue;
            }
            if let Some((key, value)) = line.split_once(':') {
                fields.insert(key.trim(), value.trim());
            }
        }
        let installed = fields
            .get("Status")
            .is_some_and(|status| status.split_whitespace().nth(2) == Some("installed"));
        let (Some(name), Some(version), Some(architecture)) = (
            fields.get("Package"),
            fields.get("Version"),
            fields.get("Architecture"),
        ) else {
            continue;
        };
        if installed {
            packages.insert(DebianPackage {
                name: (*name).to_owned(),
                version: (*version).to_owned(),
                architecture: (*architecture).to_owned(),
            });
        }
    }
    packages.into_iter().collect()
}

/// The SPDX 2.3 JSON document of one platform's image: the image as the described package,
/// which `CONTAINS` every conda package, wheel and Debian package, each with its purl, its
/// sha256 when the lock has it and its declared license when the metadata has a valid SPDX
/// expression (`NOASSERTION` otherwise).
pub fn spdx_document(input: &SbomInput<'_>) -> Blob {
    let hex = input.digest.trim_start_matches("sha256:");
    let (host, repository) = input.image.split_once('/').unwrap_or(("", input.image));
    let mut ids = SpdxIds::default();
    let image_id = ids.claim("Image");
    let image_name = repository.rsplit('/').next().unwrap_or(repository);
    let mut packages = vec![Package {
        spdx_id: image_id.clone(),
        name: repository.to_owned(),
        version_info: input.digest.to_owned(),
        download_location: NOASSERTION.to_owned(),
        files_analyzed: false,
        checksums: vec![Checksum::sha256(hex)],
        license_concluded: NOASSERTION,
        license_declared: NOASSERTION.to_owned(),
        primary_package_purpose: Some("CONTAINER"),
        external_refs: vec![ExternalRef::purl(format!(
            "pkg:oci/{}@{}?arch={}&repository_url={}",
            encode(image_name),
            // The oci purl type's examples write the digest's colon as `%3A`.
            percent_encode(input.digest, &[]),
            input.platform.architecture(),
            encode_qualifier(input.image),
        ))],
    }];
    for package in input.packages {
        packages.push(Package {
            spdx_id: ids.claim(&format!(
                "conda-{}-{}-{}",
                package.name, package.version, package.build
            )),
            name: package.name.clone(),
            version_info: package.version.clone(),
            download_location: package.url.clone(),
            files_analyzed: false,
            checksums: vec![Checksum::sha256(&package.sha256)],
            license_concluded: NOASSERTION,
            license_declared: license_expression(package.license.as_deref()),
            primary_package_purpose: Some("LIBRARY"),
            external_refs: vec![ExternalRef::purl(conda_purl(package))],
        });
    }
    for wheel in input.wheels {
        packages.push(Package {
            spdx_id: ids.claim(&format!("pypi-{}-{}", wheel.name, wheel.version)),
            name: wheel.name.clone(),
            version_info: wheel.version.clone(),
            download_location: wheel.url.clone(),
            files_analyzed: false,
            checksums: vec![Checksum::sha256(&wheel.sha256)],
            license_concluded: NOASSERTION,
            license_declared: license_expression(wheel.license.as_deref()),
            primary_package_purpose: Some("LIBRARY"),
            external_refs: vec![ExternalRef::purl(format!(
                "pkg:pypi/{}@{}",
                encode(&pypi_name(&wheel.name)),
                encode(&wheel.version)
            ))],
        });
    }
    for package in input.debian {
        let mut purl = format!(
            "pkg:deb/debian/{}@{}?arch={}",
            encode(&package.name),
            encode(&package.version),
            encode_qualifier(&package.architecture)
        );
        if let Some(distro) = input.distro {
            purl.push_str(&format!("&distro={}", encode_qualifier(distro)));
        }
        packages.push(Package {
            spdx_id: ids.claim(&format!(
                "deb-{}-{}-{}",
                package.name, package.version, package.architecture
            )),
            name: package.name.clone(),
            version_info: package.version.clone(),
            download_location: NOASSERTION.to_owned(),
            files_analyzed: false,
            checksums: Vec::new(),
            license_concluded: NOASSERTION,
            license_declared: NOASSERTION.to_owned(),
            primary_package_purpose: None,
            external_refs: vec![ExternalRef::purl(purl)],
        });
    }
    let mut relationships = vec![Relationship {
        spdx_element_id: "SPDXRef-DOCUMENT".to_owned(),
        relationship_type: "DESCRIBES",
        related_spdx_element: image_id.clone(),
    }];
    relationships.extend(packages[1..].iter().map(|package| Relationship {
        spdx_element_id: image_id.clone(),
        relationship_type: "CONTAINS",
        related_spdx_element: package.spdx_id.clone(),
    }));
    let document = Document {
        spdx_version: "SPDX-2.3",
        data_license: "CC0-1.0",
        spdx_id: "SPDXRef-DOCUMENT",
        name: format!("{}@{}", input.image, input.digest),
        // Unique per image, and the same wherever the same image is built for this registry.
        document_namespace: format!("https://{host}/spdx/{repository}/sha256-{hex}"),
        creation_info: CreationInfo {
            created: CREATED,
            creators: vec![concat!("Tool: kiln-", env!("CARGO_PKG_VERSION"))],
        },
        packages,
        relationships,
    };
    // Plain structs of strings and lists always serialize.
    let mut bytes = serde_json::to_vec_pretty(&document).expect("SPDX documents serialize");
    bytes.push(b'\n');
    Blob::new(MEDIA_TYPE_SPDX, bytes)
}

/// The OCI artifact that attaches `sbom` to the image manifest `subject` as a referrer:
/// `artifactType` SPDX JSON, the empty config, one layer (the document, titled
/// [`SBOM_FILE_NAME`]). Returns (empty config, manifest); both must be pushed.
pub fn sbom_referrer(sbom: &Blob, subject: &Descriptor) -> (Blob, Blob) {
    let config = Blob::new(MEDIA_TYPE_EMPTY, b"{}".to_vec());
    let mut layer = sbom.descriptor();
    layer.annotations = Some(BTreeMap::from([(
        "org.opencontainers.image.title".to_owned(),
        SBOM_FILE_NAME.to_owned(),
    )]));
    let manifest = ArtifactManifest {
        schema_version: 2,
        media_type: MEDIA_TYPE_MANIFEST,
        artifact_type: MEDIA_TYPE_SPDX,
        config: config.descriptor(),
        layers: vec![layer],
        subject: Descriptor {
            annotations: None,
            ..subject.clone()
        },
    };
    // As above: plain data.
    let bytes = serde_json::to_vec(&manifest).expect("OCI manifests serialize");
    (config, Blob::new(MEDIA_TYPE_MANIFEST, bytes))
}

/// A declared license when it is a valid SPDX expression of listed identifiers, else
/// `NOASSERTION`. Free text is not guessed at: `BSD` or `GPL` name several licenses, and a
/// wrong declared license is worse than none.
fn license_expression(declared: Option<&str>) -> String {
    match declared.map(str::trim) {
        Some(text) if spdx::Expression::parse(text).is_ok() => text.to_owned(),
        _ => NOASSERTION.to_owned(),
    }
}

/// `pkg:conda/<name>@<version>?build=…&channel=…&subdir=…&type=…`, qualifiers in key order.
fn conda_purl(package: &LockedPackage) -> String {
    let file = package.file_name();
    let kind = if file.ends_with(".tar.bz2") {
        "tar.bz2"
    } else {
        "conda"
    };
    let mut purl = format!(
        "pkg:conda/{}@{}?build={}",
        encode(&package.name),
        encode(&package.version),
        encode_qualifier(&package.build)
    );
    if let Some(channel) = conda_channel(&package.url, &package.subdir) {
        purl.push_str(&format!("&channel={}", encode_qualifier(&channel)));
    }
    purl.push_str(&format!(
        "&subdir={}&type={kind}",
        encode_qualifier(&package.subdir)
    ));
    purl
}

/// The channel an archive URL (`<channel>/<subdir>/<file>`) comes from: its name on
/// anaconda.org (`conda-forge`), its whole URL elsewhere.
fn conda_channel(url: &str, subdir: &str) -> Option<String> {
    let (directory, _) = url.rsplit_once('/')?;
    let channel = directory.strip_suffix(subdir)?.trim_end_matches('/');
    let name = [
        "https://conda.anaconda.org/",
        "https://repo.anaconda.com/pkgs/",
    ]
    .into_iter()
    .find_map(|prefix| channel.strip_prefix(prefix));
    Some(name.unwrap_or(channel).to_owned())
}

/// A PyPI name as purls write it: lowercase, runs of `-`, `_` and `.` as one `-`.
fn pypi_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.extend(c.to_lowercase());
        }
    }
    out
}

/// Percent-encodes a purl name or version: all but unreserved characters and `:`.
fn encode(text: &str) -> String {
    percent_encode(text, &[':'])
}

/// Percent-encodes a purl qualifier value, which may keep `:` and `/` (URLs).
fn encode_qualifier(text: &str) -> String {
    percent_encode(text, &[':', '/'])
}

fn percent_encode(text: &str, keep: &[char]) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        let c = char::from(byte);
        if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~') || keep.contains(&c) {
            out.push(c);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Unique SPDX IDs: `SPDXRef-` and the description with every character SPDX IDs do not allow
/// (anything but letters, digits, `.` and `-`) as `-`, numbered when two come out the same.
#[derive(Debug, Default)]
struct SpdxIds {
    taken: BTreeSet<String>,
}

impl SpdxIds {
    fn claim(&mut self, description: &str) -> String {
        let clean: String = description
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let mut id = format!("SPDXRef-{clean}");
        let mut n = 2;
        while self.taken.contains(&id) {
            id = format!("SPDXRef-{clean}-{n}");
            n += 1;
        }
        self.taken.insert(id.clone());
        id
    }
}

/// The document. Field order is the serialization order; keep it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    spdx_version: &'static str,
    data_license: &'static str,
    #[serde(rename = "SPDXID")]
    spdx_id: &'static str,
    name: String,
    document_namespace: String,
    creation_info: CreationInfo,
    packages: Vec<Package>,
    relationships: Vec<Relationship>,
}

#[derive(Debug, Serialize)]
struct CreationInfo {
    created: &'static str,
    creators: Vec<&'static str>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Package {
    #[serde(rename = "SPDXID")]
    spdx_id: String,
    name: String,
    version_info: String,
    download_location: String,
    files_analyzed: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    checksums: Vec<Checksum>,
    license_concluded: &'static str,
    license_declared: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    primary_package_purpose: Option<&'static str>,
    external_refs: Vec<ExternalRef>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Checksum {
    algorithm: &'static str,
    checksum_value: String,
}

impl Checksum {
    fn sha256(hex: &str) -> Checksum {
        Checksum {
            algorithm: "SHA256",
            checksum_value: hex.to_owned(),
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ExternalRef {
    reference_category: &'static str,
    reference_type: &'static str,
    reference_locator: String,
}

impl ExternalRef {
    fn purl(locator: String) -> ExternalRef {
        ExternalRef {
            reference_category: "PACKAGE-MANAGER",
            reference_type: "purl",
            reference_locator: locator,
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Relationship {
    spdx_element_id: String,
    relationship_type: &'static str,
    related_spdx_element: String,
}

/// An OCI 1.1 artifact manifest with a subject. Field order is the serialization order.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ArtifactManifest {
    schema_version: u32,
    media_type: &'static str,
    artifact_type: &'static str,
    config: Descriptor,
    layers: Vec<Descriptor>,
    subject: Descriptor,
}

#[cfg(test)]
mod tests;

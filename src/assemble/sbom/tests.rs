use serde_json::Value;

use super::*;

const STATUS: &str = "\
Package: libc6
Status: install ok installed
Priority: optional
Architecture: amd64
Multi-Arch: same
Version: 2.36-9+deb12u10
Description: GNU C Library: Shared libraries
 Contains the standard libraries that are used by nearly all programs on
 the system.

Package: tzdata
Status: install ok installed
Architecture: all
Version: 2025b-0+deb12u1

Package: oldpkg
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0

Package: bash
Status: install ok installed
Architecture: amd64
Version: 5.2.15-2+b8
";

fn samtools() -> LockedPackage {
    LockedPackage {
        name: "samtools".into(),
        version: "1.21".into(),
        build: "h50ea8bc_0".into(),
        subdir: "linux-64".into(),
        url: "https://conda.anaconda.org/bioconda/linux-64/samtools-1.21-h50ea8bc_0.tar.bz2".into(),
        sha256: "ab".repeat(32),
        size: 10,
        license: Some("MIT".into()),
    }
}

fn local_package() -> LockedPackage {
    LockedPackage {
        name: "kiln_hello".into(),
        version: "2.0".into(),
        build: "0".into(),
        subdir: "noarch".into(),
        url: "http://127.0.0.1:8000/kiln-test/noarch/kiln_hello-2.0-0.conda".into(),
        sha256: "cd".repeat(32),
        size: 10,
        license: Some("BSD-3-Clause OR Apache-2.0".into()),
    }
}

fn requests() -> LockedWheel {
    LockedWheel {
        name: "charset-normalizer".into(),
        version: "3.4.0+local".into(),
        file_name: "charset_normalizer-3.4.0-py3-none-any.whl".into(),
        url: "https://files.pythonhosted.org/packages/charset_normalizer-3.4.0-py3-none-any.whl"
            .into(),
        sha256: "ef".repeat(32),
        size: 10,
        license: Some("see LICENSE file".into()),
    }
}

fn document(debian: &[DebianPackage]) -> Value {
    serde_json::from_slice(&document_blob(debian).bytes).expect("the SBOM is JSON")
}

fn document_blob(debian: &[DebianPackage]) -> Blob {
    let packages = [samtools(), local_package()];
    let wheels = [requests()];
    let blob = spdx_document(&SbomInput {
        image: "kiln.example.org/library/samtools",
        digest: &format!("sha256:{}", "12".repeat(32)),
        platform: Platform::LinuxAmd64,
        packages: &packages,
        wheels: &wheels,
        debian,
        distro: Some("bookworm"),
    });
    assert_eq!(blob.media_type, MEDIA_TYPE_SPDX);
    blob
}

#[test]
fn dpkg_status_lists_installed_packages_only() {
    let packages = parse_dpkg_status(STATUS);
    let names: Vec<&str> = packages.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["bash", "libc6", "tzdata"]);
    assert_eq!(packages[1].version, "2.36-9+deb12u10");
    assert_eq!(packages[2].architecture, "all");
    assert!(parse_dpkg_status("").is_empty());
}

#[test]
fn small_lock_document_snapshot() {
    let debian = parse_dpkg_status(STATUS);
    let blob = document_blob(&debian);
    insta::assert_snapshot!(String::from_utf8(blob.bytes).expect("UTF-8"));
}

#[test]
fn document_has_the_fields_spdx_requires() {
    let debian = parse_dpkg_status(STATUS);
    let doc = document(&debian);
    assert_eq!(doc["spdxVersion"], "SPDX-2.3");
    assert_eq!(doc["dataLicense"], "CC0-1.0");
    assert_eq!(doc["SPDXID"], "SPDXRef-DOCUMENT");
    let namespace = doc["documentNamespace"].as_str().expect("namespace");
    assert!(namespace.starts_with("https://kiln.example.org/spdx/library/samtools/sha256-"));
    assert!(!namespace.contains('#'));
    assert_eq!(doc["creationInfo"]["created"], "1970-01-01T00:00:00Z");
    assert_eq!(
        doc["creationInfo"]["creators"][0],
        concat!("Tool: kiln-", env!("CARGO_PKG_VERSION"))
    );
    let packages = doc["packages"].as_array().expect("packages");
    assert_eq!(packages.len(), 1 + 2 + 1 + 3, "image, conda, wheel, debian");
    let mut ids = BTreeSet::new();
    for package in packages {
        let id = package["SPDXID"].as_str().expect("SPDXID");
        assert!(
            id.strip_prefix("SPDXRef-").is_some_and(|rest| rest
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')),
            "{id}"
        );
        assert!(ids.insert(id.to_owned()), "{id} is unique");
        for field in ["name", "downloadLocation", "licenseDeclared"] {
            assert!(package[field].is_string(), "{id} has {field}");
        }
        assert_eq!(package["filesAnalyzed"], false, "{id}");
        assert_eq!(package["externalRefs"][0]["referenceType"], "purl", "{id}");
    }
    let relationships = doc["relationships"].as_array().expect("relationships");
    assert_eq!(relationships[0]["relationshipType"], "DESCRIBES");
    assert_eq!(relationships[0]["relatedSpdxElement"], "SPDXRef-Image");
    assert_eq!(relationships.len(), packages.len());
    assert!(
        relationships[1..]
            .iter()
            .all(|r| r["relationshipType"] == "CONTAINS" && r["spdxElementId"] == "SPDXRef-Image")
    );
}

#[test]
fn purls_checksums_and_licenses_follow_the_metadata() {
    let debian = parse_dpkg_status(STATUS);
    let doc = document(&debian);
    let by_name = |name: &str| -> Value {
        doc["packages"]
            .as_array()
            .expect("packages")
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} is listed"))
    };
    let purl = |package: &Value| package["externalRefs"][0]["referenceLocator"].clone();
    let samtools = by_name("samtools");
    assert_eq!(
        purl(&samtools),
        "pkg:conda/samtools@1.21?build=h50ea8bc_0&channel=bioconda&subdir=linux-64&type=tar.bz2"
    );
    assert_eq!(samtools["checksums"][0]["algorithm"], "SHA256");
    assert_eq!(samtools["checksums"][0]["checksumValue"], "ab".repeat(32));
    assert_eq!(samtools["licenseDeclared"], "MIT");
    let local = by_name("kiln_hello");
    assert_eq!(
        purl(&local),
        "pkg:conda/kiln_hello@2.0?build=0&channel=http://127.0.0.1:8000/kiln-test&subdir=noarch&type=conda"
    );
    assert_eq!(local["licenseDeclared"], "BSD-3-Clause OR Apache-2.0");
    let wheel = by_name("charset-normalizer");
    assert_eq!(purl(&wheel), "pkg:pypi/charset-normalizer@3.4.0%2Blocal");
    assert_eq!(wheel["licenseDeclared"], "NOASSERTION", "free text");
    let libc = by_name("libc6");
    assert_eq!(
        purl(&libc),
        "pkg:deb/debian/libc6@2.36-9%2Bdeb12u10?arch=amd64&distro=bookworm"
    );
    assert!(
        libc.get("checksums").is_none(),
        "dpkg status has no archive checksum"
    );
    let image = by_name("library/samtools");
    assert_eq!(image["primaryPackagePurpose"], "CONTAINER");
    assert_eq!(image["checksums"][0]["checksumValue"], "12".repeat(32));
}

#[test]
fn the_same_lock_gives_the_same_bytes() {
    let debian = parse_dpkg_status(STATUS);
    let input = |debian| SbomInput {
        image: "kiln.example.org/library/samtools",
        digest: "sha256:0000000000000000000000000000000000000000000000000000000000000000",
        platform: Platform::LinuxArm64,
        packages: &[],
        wheels: &[],
        debian,
        distro: None,
    };
    let first = spdx_document(&input(&debian));
    let parsed_again = parse_dpkg_status(STATUS);
    let second = spdx_document(&input(&parsed_again));
    assert_eq!(first, second);
    assert_ne!(first, spdx_document(&input(&debian[..1])));
}

#[test]
fn only_valid_spdx_expressions_are_declared() {
    for (declared, expected) in [
        (Some("MIT"), "MIT"),
        (
            Some(" GPL-2.0-or-later AND LGPL-2.1-only "),
            "GPL-2.0-or-later AND LGPL-2.1-only",
        ),
        (
            Some("Apache-2.0 WITH LLVM-exception"),
            "Apache-2.0 WITH LLVM-exception",
        ),
        (Some("BSD"), NOASSERTION),
        (Some("Apache 2.0"), NOASSERTION),
        (Some("see LICENSE.txt"), NOASSERTION),
        (Some(""), NOASSERTION),
        (None, NOASSERTION),
    ] {
        assert_eq!(license_expression(declared), expected, "{declared:?}");
    }
}

#[test]
fn spdx_ids_stay_unique_after_cleaning() {
    let mut ids = SpdxIds::default();
    assert_eq!(ids.claim("conda-a_b-1"), "SPDXRef-conda-a-b-1");
    assert_eq!(ids.claim("conda-a-b-1"), "SPDXRef-conda-a-b-1-2");
    assert_eq!(ids.claim("conda-a+b-1"), "SPDXRef-conda-a-b-1-3");
}

#[test]
fn referrer_points_at_its_subject() {
    let sbom = Blob::new(MEDIA_TYPE_SPDX, b"{}\n".to_vec());
    let subject = Descriptor {
        media_type: MEDIA_TYPE_MANIFEST.to_owned(),
        digest: format!("sha256:{}", "34".repeat(32)),
        size: 1234,
        annotations: None,
    };
    let (config, manifest) = sbom_referrer(&sbom, &subject);
    assert_eq!(
        config.digest, "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
        "the OCI empty descriptor"
    );
    let value: Value = serde_json::from_slice(&manifest.bytes).expect("JSON");
    assert_eq!(value["artifactType"], MEDIA_TYPE_SPDX);
    assert_eq!(value["config"]["mediaType"], MEDIA_TYPE_EMPTY);
    assert_eq!(value["config"]["size"], 2);
    assert_eq!(value["layers"][0]["mediaType"], MEDIA_TYPE_SPDX);
    assert_eq!(value["layers"][0]["digest"], sbom.digest);
    assert_eq!(
        value["layers"][0]["annotations"]["org.opencontainers.image.title"],
        SBOM_FILE_NAME
    );
    assert_eq!(value["subject"]["digest"], subject.digest);
    assert_eq!(value["subject"]["size"], 1234);
}

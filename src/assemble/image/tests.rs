use super::*;

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn env(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

fn labels(list: &[(&str, &str)]) -> BTreeMap<String, String> {
    list.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn tiny_config() -> Blob {
    let base = BaseConfig {
        env: strings(&["PATH=/usr/bin"]),
        diff_ids: strings(&["sha256:aa"]),
        ..BaseConfig::default()
    };
    image_config(
        Platform::LinuxAmd64,
        &base,
        &strings(&["sha256:bb"]),
        &env(&[("PATH", "/opt/conda/bin:/usr/bin")]),
        &labels(&[("k", "v")]),
    )
}

#[test]
fn golden_config() {
    let blob = tiny_config();
    let expected = r#"{"created":"1970-01-01T00:00:00Z","architecture":"amd64","os":"linux","config":{"Env":["PATH=/opt/conda/bin:/usr/bin"],"Labels":{"k":"v"}},"rootfs":{"type":"layers","diff_ids":["sha256:aa","sha256:bb"]}}"#;
    assert_eq!(std::str::from_utf8(&blob.bytes).unwrap(), expected);
    assert_eq!(blob.digest, sha256_digest(expected.as_bytes()));
    assert_eq!(blob.media_type, MEDIA_TYPE_CONFIG);
}

#[test]
fn golden_manifest() {
    let config = Blob {
        bytes: b"{}".to_vec(),
        digest: "sha256:cc".to_owned(),
        media_type: MEDIA_TYPE_CONFIG,
    };
    let layers = [Descriptor {
        media_type: MEDIA_TYPE_LAYER_GZIP.to_owned(),
        digest: "sha256:dd".to_owned(),
        size: 7,
        annotations: None,
    }];
    let blob = image_manifest(&config, &layers, &labels(&[("a", "b")]));
    let expected = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:cc","size":2},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:dd","size":7}],"annotations":{"a":"b"}}"#;
    assert_eq!(std::str::from_utf8(&blob.bytes).unwrap(), expected);
    assert_eq!(blob.digest, sha256_digest(expected.as_bytes()));

    let bare = image_manifest(&config, &layers, &BTreeMap::new());
    assert!(
        !std::str::from_utf8(&bare.bytes)
            .unwrap()
            .contains("annotations")
    );
}

#[test]
fn base_layer_descriptors_are_kept_as_given() {
    let base = Descriptor {
        media_type: "application/vnd.docker.image.rootfs.diff.tar.gzip".to_owned(),
        digest: "sha256:ee".to_owned(),
        size: 3,
        annotations: Some(labels(&[("x", "y")])),
    };
    let ours = Blob {
        bytes: vec![],
        digest: "sha256:ff".to_owned(),
        media_type: MEDIA_TYPE_CONFIG,
    };
    let blob = image_manifest(&ours, std::slice::from_ref(&base), &BTreeMap::new());
    let value: serde_json::Value = serde_json::from_slice(&blob.bytes).unwrap();
    let back: Descriptor = serde_json::from_value(value["layers"][0].clone()).unwrap();
    assert_eq!(back, base);
}

#[test]
fn golden_index_sorted_by_platform() {
    let manifest = |digest: &str| Blob {
        bytes: b"{}".to_vec(),
        digest: digest.to_owned(),
        media_type: MEDIA_TYPE_MANIFEST,
    };
    let a = image_index(&[
        (Platform::LinuxArm64, manifest("sha256:22")),
        (Platform::LinuxAmd64, manifest("sha256:11")),
    ]);
    let expected = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:11","size":2,"platform":{"architecture":"amd64","os":"linux"}},{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:22","size":2,"platform":{"architecture":"arm64","os":"linux"}}]}"#;
    assert_eq!(std::str::from_utf8(&a.bytes).unwrap(), expected);
    let b = image_index(&[
        (Platform::LinuxAmd64, manifest("sha256:11")),
        (Platform::LinuxArm64, manifest("sha256:22")),
    ]);
    assert_eq!(a, b);
    assert_eq!(a.media_type, MEDIA_TYPE_INDEX);
}

#[test]
fn same_inputs_same_bytes() {
    assert_eq!(tiny_config(), tiny_config());
    let m1 = image_manifest(&tiny_config(), &[], &BTreeMap::new());
    let m2 = image_manifest(&tiny_config(), &[], &BTreeMap::new());
    assert_eq!(m1, m2);
}

#[test]
fn env_replaces_in_place_and_appends_in_order() {
    let base = BaseConfig {
        env: strings(&["HOME=/root", "PATH=/usr/bin:/bin", "LANG=C"]),
        ..BaseConfig::default()
    };
    let path = format!("/opt/conda/bin:{}", base.env_var("PATH").unwrap());
    let blob = image_config(
        Platform::LinuxArm64,
        &base,
        &[],
        &env(&[
            ("PATH", &path),
            ("ZED", "1"),
            ("LANG", "C.UTF-8"),
            ("ALPHA", "2"),
            ("ZED", "3"),
        ]),
        &BTreeMap::new(),
    );
    let value: serde_json::Value = serde_json::from_slice(&blob.bytes).unwrap();
    assert_eq!(
        value["config"]["Env"],
        serde_json::json!([
            "HOME=/root",
            "PATH=/opt/conda/bin:/usr/bin:/bin",
            "LANG=C.UTF-8",
            "ZED=3",
            "ALPHA=2"
        ])
    );
    assert_eq!(value["architecture"], "arm64");
    assert!(value["config"].get("Labels").is_none());
    assert!(value.get("history").is_none());
}

#[test]
fn labels_are_sorted_and_base_settings_kept() {
    let base = BaseConfig::from_json(
        br#"{"created":"2024-05-01T10:00:00Z","architecture":"amd64","os":"linux",
            "config":{"User":"","Env":["PATH=/bin"],"Cmd":["bash"],"Entrypoint":null,
                      "WorkingDir":"/work","Labels":{"base":"label"}},
            "rootfs":{"type":"layers","diff_ids":["sha256:01","sha256:02"]},
            "history":[{"created":"2024-05-01T10:00:00Z","created_by":"x"}]}"#,
    )
    .unwrap();
    assert_eq!(base.user, None);
    assert_eq!(base.working_dir.as_deref(), Some("/work"));
    assert_eq!(base.diff_ids, strings(&["sha256:01", "sha256:02"]));

    let blob = image_config(
        Platform::LinuxAmd64,
        &base,
        &strings(&["sha256:03"]),
        &[],
        &labels(&[("z", "1"), ("a", "2")]),
    );
    let text = std::str::from_utf8(&blob.bytes).unwrap();
    assert!(text.contains(r#""config":{"Env":["PATH=/bin"],"Cmd":["bash"],"WorkingDir":"/work","Labels":{"a":"2","z":"1"}}"#), "{text}");
    assert!(text.contains(r#""diff_ids":["sha256:01","sha256:02","sha256:03"]"#));
    assert!(!text.contains("2024") && !text.contains("base"));
}

#[test]
fn invalid_base_config_is_an_error() {
    let err = BaseConfig::from_json(b"not json").unwrap_err();
    assert!(matches!(err, AssembleError::BaseConfig { .. }));
    // A config with nothing in it is a valid, empty base.
    assert_eq!(BaseConfig::from_json(b"{}").unwrap(), BaseConfig::default());
}

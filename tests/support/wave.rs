//! What Nextflow's Wave client sends, for the tests and benchmarks of kiln's Wave API.

use serde_json::{Value, json};

use super::conda_channel::CHANNEL_NAME;

/// The body Nextflow's Wave client sends for a `conda` directive (reference §4.3), nulls and
/// all, for the test channel's `kiln-hello=2.0`; `changes` are merged on top (objects key by
/// key, anything else replaced).
pub fn nextflow_body(changes: Value) -> Value {
    let mut body = json!({
        "towerAccessToken": null,
        "towerRefreshToken": null,
        "towerWorkspaceId": null,
        "towerEndpoint": "https://api.cloud.seqera.io",
        "containerImage": null,
        "containerFile": null,
        "containerConfig": {"entrypoint": null, "cmd": null, "env": null, "workingDir": null, "layers": null},
        "containerPlatform": "linux/amd64",
        "buildRepository": null,
        "cacheRepository": null,
        "timestamp": "2026-11-21T18:57:10.123456+02:00",
        "fingerprint": "6f1c0d3e9a7b4e2f8c5d1a0b9e8f7c6d",
        "freeze": true,
        "format": null,
        "dryRun": false,
        "workflowId": null,
        "containerIncludes": null,
        "packages": {
            "type": "CONDA",
            "environment": null,
            "entries": ["kiln-hello=2.0"],
            "channels": [CHANNEL_NAME],
            "condaOpts": {
                "mambaImage": "mambaorg/micromamba:1.5.10-noble",
                "commands": null,
                "basePackages": "conda-forge::procps-ng",
                "baseImage": "ubuntu:24.04"
            },
            "pixiOpts": null,
            "cranOpts": null
        },
        "nameStrategy": null,
        "mirror": false,
        "scanMode": null,
        "scanLevels": null,
        "buildCompression": null,
        "buildTemplate": null
    });
    merge(&mut body, changes);
    body
}

fn merge(into: &mut Value, changes: Value) {
    match (into, changes) {
        (Value::Object(into), Value::Object(changes)) => {
            for (key, value) in changes {
                match into.get_mut(&key) {
                    Some(existing) if value.is_object() && existing.is_object() => {
                        merge(existing, value)
                    }
                    _ => {
                        into.insert(key, value);
                    }
                }
            }
        }
        (into, changes) => *into = changes,
    }
}

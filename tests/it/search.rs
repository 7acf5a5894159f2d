//! Package search through kiln's HTTP API, against the local test channel (no network: the
//! pip index is pointed at a local server that has no projects).

use crate::support::conda_channel;

use conda_channel::{CHANNEL_NAME, CondaChannel};
use serde_json::{Value, json};

#[tokio::test]
async fn search_finds_conda_packages_of_the_configured_channel() {
    let channel = CondaChannel::build();
    let server = channel.serve();
    let url = server.url.clone();
    let host = url
        .strip_suffix(&format!("/{CHANNEL_NAME}"))
        .expect("the channel URL ends with its name")
        .to_owned();
    let app = crate::support::TestApp::start_with(|config| {
        config.channels = vec![CHANNEL_NAME.parse().unwrap()];
        config.channel_mirrors.insert(CHANNEL_NAME.into(), url);
        config.build.pip_index_url = Some(format!("{host}/simple/"));
    })
    .await;
    let client = reqwest::Client::new();
    let get = |q: &str| {
        let request = client.get(app.url("/api/v1/search")).query(&[("q", q)]);
        async move {
            let response = request.send().await.expect("GET /api/v1/search");
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.expect("JSON")
        }
    };

    let answer = get("kiln-he").await;
    assert_eq!(
        answer,
        json!({
            "conda": [{"name": "kiln-hello", "channel": CHANNEL_NAME, "version": "2.0",
                       "summary": null}],
            "pypi": [],
        })
    );
    let spec = get("kiln-test::kiln-hello=1.0").await;
    assert_eq!(spec["conda"][0]["name"], "kiln-hello", "{spec}");
    let answer = get("hello").await;
    let names: Vec<&str> = answer["conda"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|hit| hit["name"].as_str().expect("a name"))
        .collect();
    assert_eq!(names, ["kiln-hello", "kiln-pyhello"]);
    assert_eq!(get("  ").await, json!({"conda": [], "pypi": []}));
    let response = client
        .get(app.url("/api/v1/search"))
        .send()
        .await
        .expect("GET without q");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.expect("JSON"),
        json!({"conda": [], "pypi": []})
    );
}

//! The request page in a real browser (headless Chromium through chromedriver and
//! fantoccini): search the local channel, add `kiln-hello` as a chip, ask for a Singularity
//! image, follow its log live until it succeeds with an `oras://` image and a download link,
//! open its build page; ask again and get the cached image at once; and type a bad entry,
//! which is refused next to the search box while the chips stay. Screenshots of the form, the
//! finished result, the build page and a phone-sized form are written to
//! `target/ui-screenshots/` (the path is printed) so a person can look at the pages.

use crate::support::{conda_channel, debian_base, forms};

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{PUSHER, TestApp};
use conda_channel::{CHANNEL_NAME, CondaChannel};
use fantoccini::{Client, ClientBuilder, Locator};
use forms::form_session;
use futures_util::FutureExt as _;
use kiln::credentials::Credentials;
use kiln::registry::client::{Auth, RegistryClient};
use serde_json::json;

const BASE: &str = "kiln/base/debian";
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// WebDriver's code for the Enter key.
const ENTER: &str = "\u{e007}";
/// A whole SIF build of the test package, from a cold start.
const BUILD_TIMEOUT: Duration = Duration::from_secs(300);
/// Anything the page does without building.
const UI_TIMEOUT: Duration = Duration::from_secs(30);

/// chromedriver on a free port, killed when dropped (also when the test panics).
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Driver {
        assert!(
            Path::new(CHROMEDRIVER).is_file() && Path::new(CHROMIUM).is_file(),
            "the browser test needs Debian's chromium and chromium-driver \
             ({CHROMIUM}, {CHROMEDRIVER})"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// A headless Chromium session, once chromedriver listens.
    async fn connect(&self) -> Client {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"],
            }),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let connected = ClientBuilder::rustls()
                .expect("TLS roots")
                .capabilities(capabilities.clone())
                .connect(&self.url)
                .await;
            match connected {
                Ok(client) => return client,
                Err(err) if Instant::now() > deadline => panic!("chromedriver: {err}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// kiln with the local channel as its default channel and the Debian base in its registry.
async fn start_kiln(channel_url: String) -> TestApp {
    let app = TestApp::start_with(move |config| {
        let base = format!("{}/{BASE}:bookworm", config.registry);
        config.channels = vec![CHANNEL_NAME.parse().expect("channel")];
        config
            .channel_mirrors
            .insert(CHANNEL_NAME.to_owned(), channel_url);
        config.base.conda.image = Some(base.parse().expect("reference"));
        config.base.python.image = Some(base.parse().expect("reference"));
        config.base.python.python = None;
    })
    .await;
    let client = RegistryClient::new(
        &app.address.to_string(),
        Auth::Basic(Credentials::new(PUSHER.0, PUSHER.1)),
        &[],
    )
    .expect("client");
    debian_base::push_debian_python_base(&client, BASE).await;
    app
}

/// Polls `check` until it gives a value or `timeout` passes; `what` names the wait in the
/// failure, which also carries the last thing seen.
async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(seen) if Instant::now() > deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {seen}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The visible text of the element `css` selects ("" when it is absent).
async fn text(client: &Client, css: &str) -> String {
    match client.find(Locator::Css(css)).await {
        Ok(element) => element.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn click(client: &Client, css: &str) {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|err| panic!("{css}: {err}"))
        .click()
        .await
        .unwrap_or_else(|err| panic!("clicking {css}: {err}"));
}

async fn chips(client: &Client) -> Vec<String> {
    let mut entries = Vec::new();
    for chip in client
        .find_all(Locator::Css("#chips .chip"))
        .await
        .expect("chips")
    {
        entries.push(
            chip.attr("data-entry")
                .await
                .expect("attribute")
                .unwrap_or_default(),
        );
    }
    entries
}

/// Scrolls the element `css` selects to the top of the window, for a screenshot of it.
async fn scroll_to(client: &Client, css: &str) {
    client
        .execute(
            "document.querySelector(arguments[0]).scrollIntoView({block: 'start'})",
            vec![json!(css)],
        )
        .await
        .unwrap_or_else(|err| panic!("scrolling to {css}: {err}"));
}

async fn screenshot(client: &Client, dir: &Path, name: &str) {
    let png = client.screenshot().await.expect("screenshot");
    std::fs::write(dir.join(name), png).expect("write screenshot");
}

/// Searches for the test package, adds it as a chip and chooses Singularity.
async fn add_kiln_hello_as_sif(client: &Client, base: &str) {
    client.goto(&format!("{base}/")).await.expect("open /");
    let search = client
        .wait()
        .at_most(UI_TIMEOUT)
        .for_element(Locator::Css("#search"))
        .await
        .expect("the search box");
    search.send_keys("kiln-he").await.expect("type");
    let result = "#results li[data-entry^=\"kiln-test::kiln-hello=\"] button.add";
    wait_for("a search result for kiln-hello", UI_TIMEOUT, || async {
        match client.find(Locator::Css(result)).await {
            Ok(_) => Ok(()),
            Err(_) => Err(text(client, "#results").await),
        }
    })
    .await;
    let entry = client
        .find(Locator::Css(
            "#results li[data-entry^=\"kiln-test::kiln-hello=\"]",
        ))
        .await
        .expect("result")
        .attr("data-entry")
        .await
        .expect("attribute");
    assert_eq!(entry.as_deref(), Some("kiln-test::kiln-hello=2.0"));
    click(client, result).await;
    assert_eq!(chips(client).await, ["kiln-test::kiln-hello=2.0"]);
    click(client, "input[name=format][value=sif]").await;
}

/// The browser part, run apart from the setup so that the session is closed even when an
/// assertion fails.
async fn steps(client: &Client, base: &str, shots: &Path) {
    // A phone-sized look at the empty form.
    client.set_window_size(360, 780).await.expect("resize");
    client.goto(&format!("{base}/")).await.expect("open /");
    client
        .wait()
        .at_most(UI_TIMEOUT)
        .for_element(Locator::Css("html.js #search"))
        .await
        .expect("the script ran");
    screenshot(client, shots, "0-form-360px.png").await;
    client.set_window_size(1280, 900).await.expect("resize");

    // First request: a build, followed live.
    add_kiln_hello_as_sif(client, base).await;
    let amd64 = client
        .find(Locator::Css("input[name=platform][value=\"linux/amd64\"]"))
        .await
        .expect("platform box");
    assert!(
        amd64.is_selected().await.expect("checked"),
        "amd64 by default"
    );
    screenshot(client, shots, "1-form.png").await;
    click(client, "#get-container").await;
    wait_for("the build log to stream", BUILD_TIMEOUT, || async {
        let log = text(client, "#log").await;
        if log.trim().is_empty() {
            Err(format!(
                "status {:?}, error {:?}",
                text(client, "#status").await,
                text(client, "#entry-error").await
            ))
        } else {
            Ok(())
        }
    })
    .await;
    wait_for("the build to succeed", BUILD_TIMEOUT, || async {
        let status = text(client, "#status").await;
        let image = text(client, "#image-uri").await;
        if status == "Succeeded" && image.starts_with("oras://") {
            Ok(())
        } else if status == "Failed" {
            panic!(
                "the build failed: {}\n{}",
                text(client, "#reason").await,
                text(client, "#log").await
            )
        } else {
            Err(format!("status {status:?}, image {image:?}"))
        }
    })
    .await;
    let download = wait_for("the SIF download link", UI_TIMEOUT, || async {
        let href = client
            .find(Locator::Css("#download"))
            .await
            .map_err(|err| err.to_string())?
            .attr("href")
            .await
            .map_err(|err| err.to_string())?;
        href.filter(|href| href.starts_with("http"))
            .ok_or_else(|| "no href yet".to_owned())
    })
    .await;
    assert!(
        download.starts_with(&format!("{base}/")),
        "the SIF is served by kiln: {download}"
    );
    let elapsed = text(client, "#elapsed").await;
    assert!(elapsed.ends_with(" s"), "elapsed: {elapsed:?}");
    scroll_to(client, "#result").await;
    screenshot(client, shots, "2-result.png").await;

    // The build page, in tabs.
    let details = client
        .find(Locator::Css("#details"))
        .await
        .expect("details link")
        .attr("href")
        .await
        .expect("href")
        .expect("a build link");
    assert!(details.starts_with("/view/builds/bd-"), "{details}");
    client
        .goto(&format!("{base}{details}"))
        .await
        .expect("build page");
    client
        .wait()
        .at_most(UI_TIMEOUT)
        .for_element(Locator::Css(".tablist .tab"))
        .await
        .expect("tabs");
    let tabs = client
        .find_all(Locator::Css(".tablist .tab"))
        .await
        .expect("tabs");
    let mut titles = Vec::new();
    for tab in &tabs {
        titles.push(tab.text().await.expect("tab text"));
    }
    assert_eq!(
        titles,
        ["Singularity definition", "Conda environment", "Lock", "Log"]
    );
    assert!(
        text(client, "#recipe pre").await.contains("Bootstrap"),
        "the recipe tab shows the definition file"
    );
    screenshot(client, shots, "3-build-page.png").await;
    click(client, "#tab-build-log").await;
    scroll_to(client, ".tabs").await;
    screenshot(client, shots, "3-build-page-log-tab.png").await;
    assert!(
        !text(client, "#build-log pre").await.is_empty(),
        "the log tab shows"
    );
    assert!(
        client
            .find(Locator::Css("#build-log .panel-tools .download"))
            .await
            .is_ok()
    );

    // Second request: the same image is answered at once.
    add_kiln_hello_as_sif(client, base).await;
    click(client, "#get-container").await;
    let asked = Instant::now();
    wait_for("a cached answer", UI_TIMEOUT, || async {
        let status = text(client, "#status").await;
        if status == "Cached" {
            Ok(())
        } else {
            Err(status)
        }
    })
    .await;
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "cached answers are immediate"
    );
    assert!(text(client, "#image-uri").await.starts_with("oras://"));
    assert!(text(client, "#log").await.is_empty(), "no build to follow");
    screenshot(client, shots, "4-cached.png").await;

    // A bad entry is refused next to the search box; the chips stay.
    let search = client.find(Locator::Css("#search")).await.expect("search");
    search
        .send_keys(&format!("numpy;rm{ENTER}"))
        .await
        .expect("type");
    let message = wait_for("the entry error", UI_TIMEOUT, || async {
        let message = text(client, "#entry-error").await;
        if message.is_empty() {
            Err("no message".to_owned())
        } else {
            Ok(message)
        }
    })
    .await;
    assert!(message.contains("numpy;rm"), "{message}");
    assert_eq!(chips(client).await, ["kiln-test::kiln-hello=2.0"]);

    // One kiln refuses (the client lets it through): its message shows in the same place.
    search.clear().await.expect("clear");
    search
        .send_keys(&format!("pip:{ENTER}"))
        .await
        .expect("type");
    click(client, "#get-container").await;
    let message = wait_for("kiln's own refusal", UI_TIMEOUT, || async {
        let message = text(client, "#entry-error").await;
        if message.is_empty() {
            Err("no message".to_owned())
        } else {
            Ok(message)
        }
    })
    .await;
    assert!(message.contains("pip:"), "{message}");
    assert_eq!(
        chips(client).await,
        ["kiln-test::kiln-hello=2.0", "pip:"],
        "a refused request keeps its chips"
    );
    screenshot(client, shots, "5-entry-error.png").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_request_page_builds_follows_and_caches() {
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots");
    std::fs::create_dir_all(&shots).expect("screenshot folder");
    let channel = CondaChannel::build();
    let server = channel.serve();
    let app = start_kiln(server.url.clone()).await;
    let base = app.url("");

    let driver = Driver::start();
    let client = driver.connect().await;
    let outcome = std::panic::AssertUnwindSafe(steps(&client, &base, &shots))
        .catch_unwind()
        .await;
    let _ = client.close().await;
    drop(driver);
    println!("screenshots: {}", shots.display());
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    without_javascript(&base).await;
}

/// The form as a browser without JavaScript posts it: the (now cached) image redirects to its
/// build page; a bad entry re-renders the form with kiln's message and the input kept.
async fn without_javascript(base: &str) {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("HTTP client");
    let (cookie, form_token) = form_session(&format!("{base}/")).await;
    let post = |body: &'static str| {
        http.post(format!("{base}/ui/container"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("cookie", &cookie)
            .body(format!("{body}&form_token={form_token}"))
            .send()
    };
    let answer = post("packages=kiln-test%3A%3Akiln-hello%3D2.0&format=sif&platform=linux%2Famd64")
        .await
        .expect("post");
    assert_eq!(answer.status(), reqwest::StatusCode::SEE_OTHER);
    let location = answer
        .headers()
        .get("location")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(location.starts_with("/view/builds/bd-"), "{location}");

    let answer = post("packages=numpy%3Brm%0Asamtools&format=docker&platform=linux%2Farm64")
        .await
        .expect("post");
    assert_eq!(answer.status(), reqwest::StatusCode::BAD_REQUEST);
    let html = answer.text().await.expect("body");
    assert!(
        html.contains("numpy;rm"),
        "the message names the entry: {html}"
    );
    assert!(html.contains("numpy;rm\nsamtools</textarea>"), "{html}");
    assert!(html.contains(r#"value="linux/arm64" checked"#), "{html}");
}

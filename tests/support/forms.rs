//! kiln's HTML forms as a browser meets them: a post needs the page's form token and the
//! cookie it belongs to.

/// The form token of the page at `url` and the cookie it belongs to (`name=value`), as a
/// browser gets them: kiln's forms refuse posts without both.
pub async fn form_session(url: &str) -> (String, String) {
    let page = reqwest::get(url).await.expect("the form's page");
    let cookie = page.headers()["set-cookie"]
        .to_str()
        .expect("ASCII")
        .split(';')
        .next()
        .expect("name=value")
        .to_owned();
    let html = page.text().await.expect("HTML");
    let marker = r#"name="form_token" value=""#;
    let start = html.find(marker).expect("the form has a token") + marker.len();
    let token = html[start..].split('"').next().expect("a value").to_owned();
    (cookie, token)
}

/// Takes user name `user` on the token page at `tokens_page` and returns the token it shows,
/// as a person signing up would.
pub async fn signup_token(tokens_page: &str, user: &str) -> String {
    let (cookie, form_token) = form_session(tokens_page).await;
    let page = reqwest::Client::new()
        .post(tokens_page)
        .header("cookie", cookie)
        .form(&[("user", user), ("form_token", form_token.as_str())])
        .send()
        .await
        .expect("token page answers");
    assert!(page.status().is_success(), "{}", page.status());
    let html = page.text().await.expect("page");
    let start = html.find("kiln_").expect("the page shows the token");
    html[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

//! The pages and the status API as a person (or a script) meets them.

mod support;

use reqwest::StatusCode;
use reqwest::redirect::Policy;
use support::{TestDaemon, small_path};

#[tokio::test]
async fn index_player_redirect_and_status_api() {
    let test = TestDaemon::start(&[("cam", &small_path(320, 240))]).await;
    let client = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap();
    let get = |path: &str| client.get(test.url(path)).send();

    let index = get("/").await.unwrap();
    assert_eq!(index.status(), StatusCode::OK);
    assert!(index.text().await.unwrap().contains("/_static/index.js"));

    // `/cam` sends people to the player, which is the same page for every path.
    let redirect = get("/cam").await.unwrap();
    assert_eq!(redirect.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(redirect.headers()["location"], "/cam/");
    let player = get("/cam/").await.unwrap();
    assert_eq!(player.status(), StatusCode::OK);
    assert!(
        player.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(player.text().await.unwrap().contains("<video"));

    let paths: serde_json::Value =
        serde_json::from_str(&get("/api/paths").await.unwrap().text().await.unwrap()).unwrap();
    let cam = &paths["paths"][0];
    assert_eq!(cam["name"], "cam");
    assert_eq!(cam["state"], "running");
    assert_eq!(cam["url"], "/cam/");
    assert_eq!(
        (cam["width"].as_u64(), cam["height"].as_u64()),
        (Some(320), Some(240))
    );
    assert_eq!(paths["configErrors"], serde_json::json!([]));

    let missing = get("/_static/nope.js").await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    test.daemon.shutdown().await;
}

/// Only path names are redirected (never off the origin), and odd paths get a 4xx, never a 5xx.
#[tokio::test]
async fn odd_paths_are_answered_not_redirected_away() {
    let test = TestDaemon::start(&[("cam", &small_path(320, 240))]).await;
    let client = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap();
    for path in [
        "/%2Fevil.example",
        "/%2F%2Fevil.example",
        "/%5Cevil.example",
        "/%0d%0aX",
        "/%00",
        "/a%20b",
        "/%ff",
        "/api",
    ] {
        let r = client.get(test.url(path)).send().await.unwrap();
        assert!(r.status().is_client_error(), "{path}: {}", r.status());
        assert!(r.headers().get("location").is_none(), "{path}");
    }
    test.daemon.shutdown().await;
}

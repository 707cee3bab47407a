//! Who may watch: the shipped default (private networks watch, loopback administers) seen from
//! a public-looking and a private address in network namespaces; users with plain, `sha256:`
//! and `argon2:` passwords; per-path rules; the kiosk URL in Chromium; other origins.

mod support;

use std::time::Duration;

use camportal::config::{ServerConfig, parse_secret};
use camportal::daemon::{self, Daemon, Settings};
use camportal_viewer::Viewer;
use reqwest::StatusCode;
use support::chromium::Chromium;
use support::netns::{Link, Netns};
use support::{TestDaemon, offer_sdp, small_path};
use tokio::runtime::Runtime;

const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// A daemon with the shipped access rules in `link`'s server namespace, on all its addresses.
struct NamespacedDaemon {
    runtime: Runtime,
    daemon: Daemon,
    _dir: tempfile::TempDir,
}

impl NamespacedDaemon {
    async fn start(link: &Link) -> NamespacedDaemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let config_dir = dir.path().join("config.d");
        std::fs::create_dir(&config_dir).expect("config.d");
        std::fs::write(config_dir.join("cam.yml"), small_path(320, 240)).expect("path file");
        let server = ServerConfig {
            http_address: "0.0.0.0:0".parse().unwrap(),
            udp_address: "0.0.0.0:0".parse().unwrap(),
            ..ServerConfig::default()
        };
        let runtime = link.server.runtime();
        let daemon = runtime
            .spawn(daemon::start(Settings { config_dir, server }))
            .await
            .expect("start task")
            .expect("daemon starts in its namespace");
        for _ in 0..400 {
            if daemon.board.has_path("cam") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        NamespacedDaemon {
            runtime,
            daemon,
            _dir: dir,
        }
    }

    fn url(&self, link: &Link, rest: &str) -> String {
        format!(
            "http://{}:{}{rest}",
            link.server_ip,
            self.daemon.http_addr.port()
        )
    }

    async fn stop(self) {
        let NamespacedDaemon {
            runtime, daemon, ..
        } = self;
        runtime.spawn(daemon.shutdown()).await.expect("shutdown");
        runtime.shutdown_background();
    }
}

/// `(status, body)` of a request made from `client`'s namespace.
async fn request_from(
    client: &Netns,
    method: reqwest::Method,
    url: String,
    body: Option<String>,
) -> (StatusCode, String) {
    let runtime = client.runtime();
    let answer = runtime
        .spawn(async move {
            let mut request = reqwest::Client::new().request(method, &url);
            if let Some(body) = body {
                request = request.header("Content-Type", "application/sdp").body(body);
            }
            let response = request.send().await.expect("the daemon answers");
            let status = response.status();
            (status, response.text().await.unwrap_or_default())
        })
        .await
        .expect("request task");
    runtime.shutdown_background();
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_address_gets_403_for_everything_before_its_offer_is_read() {
    let link = Link::new("203.0.113.1", "203.0.113.2");
    let server = NamespacedDaemon::start(&link).await;
    let get = reqwest::Method::GET;
    for rest in [
        "/",
        "/cam/",
        "/_static/player.js",
        "/api/paths",
        "/api/viewers",
        "/_paths",
    ] {
        let (status, body) =
            request_from(&link.client, get.clone(), server.url(&link, rest), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "GET {rest}: {body}");
        assert!(body.contains("203.0.113.2"), "GET {rest}: {body}");
    }
    // Refused before the SDP is parsed: garbage gets the same 403, not a 400.
    for offer in [offer_sdp(&["h264"]), "not SDP at all".to_string()] {
        let (status, body) = request_from(
            &link.client,
            reqwest::Method::POST,
            server.url(&link, "/cam/whep"),
            Some(offer),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert!(body.contains("may not read path 'cam'"), "{body}");
    }
    assert_eq!(server.daemon.board.snapshot().paths[0].viewers, 0);

    // RTSP too: refused before a request is read.
    let rtsp = std::net::SocketAddr::new(
        link.server_ip,
        server.daemon.rtsp_addr.expect("RTSP on").port(),
    );
    let runtime = link.client.runtime();
    let answer = runtime
        .spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut stream = tokio::net::TcpStream::connect(rtsp).await.expect("connect");
            let url = format!("rtsp://{rtsp}/cam");
            let request = format!("DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\n\r\n");
            let _ = stream.write_all(request.as_bytes()).await;
            let mut answer = String::new();
            let _ = stream.read_to_string(&mut answer).await;
            answer
        })
        .await
        .expect("RTSP task");
    runtime.shutdown_background();
    assert!(answer.starts_with("RTSP/1.0 403"), "{answer}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_address_plays_but_may_not_use_the_api() {
    let link = Link::new("192.168.77.1", "192.168.77.2");
    let server = NamespacedDaemon::start(&link).await;
    let whep = server.url(&link, "/cam/whep");
    let runtime = link.client.runtime();
    let played = runtime
        .spawn(async move {
            let mut viewer = Viewer::connect(&whep).await?;
            let frame = viewer.next_frame(FRAME_TIMEOUT).await?;
            viewer.close().await?;
            anyhow::Ok((frame.picture.width, frame.picture.height))
        })
        .await
        .expect("viewer task")
        .expect("a viewer at a private address plays");
    runtime.shutdown_background();
    assert_eq!(played, (320, 240));

    let get = reqwest::Method::GET;
    let (status, body) =
        request_from(&link.client, get.clone(), server.url(&link, "/cam/"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = request_from(
        &link.client,
        get.clone(),
        server.url(&link, "/_paths"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("\"cam\""), "{body}");
    let (status, body) =
        request_from(&link.client, get, server.url(&link, "/api/paths"), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    server.stop().await;
}

fn sha256_base64(text: &str) -> String {
    use base64::Engine;
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// `echo -n argonpass | argon2 saltsalt -id -e`
const ARGON2_OF_ARGONPASS: &str =
    "argon2:$argon2id$v=19$m=4096,t=3,p=1$c2FsdHNhbHQ$0Qy1/Lifv4rlnNHcLVkpxFmjfUSBa2sx4OiMooooubo";

/// kiosk (plain) watches the lobby only, hashed (sha256) watches the office only, admin
/// (argon2) watches everything and uses the API; nobody else gets anything.
fn users_config(server: &mut ServerConfig) {
    let yaml = format!(
        "authInternalUsers:\n\
         - user: kiosk\n  pass: lobbypass\n  permissions:\n  - action: read\n    path: lobby\n\
         - user: hashed\n  pass: sha256:{}\n  permissions:\n  - action: read\n    path: office\n\
         - user: admin\n  pass: '{ARGON2_OF_ARGONPASS}'\n  ips: [127.0.0.0/8]\n  permissions:\n  \
         - action: read\n  - action: api\n",
        sha256_base64("officepass")
    );
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), yaml).expect("write");
    let parsed = camportal::config::load_server_file(file.path()).expect("users config parses");
    server.auth_users = parsed.auth_users;
}

async fn status_of(
    request: reqwest::RequestBuilder,
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let response = request.send().await.expect("the daemon answers");
    let (status, headers) = (response.status(), response.headers().clone());
    (status, headers, response.text().await.unwrap_or_default())
}

#[tokio::test]
async fn users_sign_in_with_basic_or_the_url_and_see_their_paths_only() {
    assert!(parse_secret(ARGON2_OF_ARGONPASS).is_ok());
    let test = TestDaemon::start_with(
        &[
            ("lobby", &small_path(160, 120)),
            ("office", &small_path(160, 120)),
        ],
        users_config,
    )
    .await;
    let client = reqwest::Client::new();
    let get = |rest: &str| client.get(test.url(rest));

    // No credentials, wrong ones: 401 with a prompt.
    for request in [
        get("/lobby/"),
        get("/lobby/").basic_auth("kiosk", Some("wrong")),
        get("/lobby/?user=kiosk&pass=wrong"),
        get("/api/paths"),
        get("/"),
    ] {
        let (status, headers, _) = status_of(request).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let prompt = headers.get("www-authenticate").expect("WWW-Authenticate");
        assert!(prompt.to_str().unwrap().starts_with("Basic realm="));
    }
    // Right ones, as Basic or in the URL.
    for request in [
        get("/lobby/").basic_auth("kiosk", Some("lobbypass")),
        get("/lobby/?user=kiosk&pass=lobbypass"),
        get("/office/").basic_auth("hashed", Some("officepass")),
        get("/office/").basic_auth("admin", Some("argonpass")),
        get("/api/paths").basic_auth("admin", Some("argonpass")),
        get("/_static/player.js"),
    ] {
        let (status, _, body) = status_of(request).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // Each user to their own paths.
    for request in [
        get("/office/").basic_auth("kiosk", Some("lobbypass")),
        get("/lobby/").basic_auth("hashed", Some("officepass")),
        get("/api/paths").basic_auth("kiosk", Some("lobbypass")),
    ] {
        let (status, _, _) = status_of(request).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let offer = |rest: &str| {
        client
            .post(test.url(rest))
            .header("Content-Type", "application/sdp")
            .body(offer_sdp(&["h264"]))
    };
    let (status, headers, body) =
        status_of(offer("/lobby/whep").basic_auth("kiosk", Some("lobbypass"))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let session = headers["location"].to_str().unwrap().to_string();
    let (status, _, _) =
        status_of(offer("/office/whep").basic_auth("kiosk", Some("lobbypass"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // The session is ended by its own URL with the read permission, not without it.
    let (status, _, _) = status_of(client.delete(test.url(&session))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = status_of(
        client
            .delete(test.url(&session))
            .basic_auth("kiosk", Some("lobbypass")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // The index lists what its user may watch, configuration errors only for the API's users.
    let (_, _, listed) = status_of(get("/_paths").basic_auth("kiosk", Some("lobbypass"))).await;
    let listed: serde_json::Value = serde_json::from_str(&listed).expect("JSON");
    let names: Vec<&str> = listed["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["lobby"]);
    let (_, _, listed) = status_of(get("/_paths").basic_auth("admin", Some("argonpass"))).await;
    assert!(
        listed.contains("\"office\"") && listed.contains("\"lobby\""),
        "{listed}"
    );
}

#[tokio::test]
async fn the_kiosk_url_plays_in_chromium_without_a_prompt() {
    let test = TestDaemon::start_with(&[("lobby", &small_path(320, 240))], users_config).await;
    let browser = Chromium::launch().await.expect("chromium");
    let page = browser
        .open(&test.url("/lobby/?user=kiosk&pass=lobbypass"))
        .await
        .expect("page");
    page.wait_for(
        "(() => { const v = document.querySelector('video'); \
          return v && v.videoWidth > 0 && !v.paused; })()",
        Duration::from_secs(20),
    )
    .await
    .expect("the kiosk URL plays");
    let viewers = reqwest::Client::new()
        .get(test.url("/api/viewers"))
        .basic_auth("admin", Some("argonpass"))
        .send()
        .await
        .expect("API")
        .text()
        .await
        .expect("body");
    assert!(viewers.contains("\"lobby\""), "{viewers}");
    page.close().await.ok();
}

#[tokio::test]
async fn another_origin_can_neither_list_nor_end_sessions() {
    let test = TestDaemon::start_with(&[("cam", &small_path(160, 120))], |server| {
        server.allow_origins = vec!["http://player.example".to_string()];
    })
    .await;
    let client = reqwest::Client::new();
    let evil = "http://evil.example";
    let (status, headers, body) =
        status_of(client.get(test.url("/api/viewers")).header("Origin", evil)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(headers.get("access-control-allow-origin").is_none());
    let (status, _, _) = status_of(
        client
            .request(reqwest::Method::OPTIONS, test.url("/api/viewers"))
            .header("Origin", evil)
            .header("Access-Control-Request-Method", "GET"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A viewer's session, from its own page.
    let (status, headers, _) = status_of(
        client
            .post(test.whep_url("cam"))
            .header("Content-Type", "application/sdp")
            .body(offer_sdp(&["h264"])),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let session = test.url(headers["location"].to_str().unwrap());
    let (status, _, _) = status_of(client.delete(&session).header("Origin", evil)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = status_of(
        client
            .request(reqwest::Method::OPTIONS, &session)
            .header("Origin", evil)
            .header("Access-Control-Request-Method", "DELETE"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(test.viewer_count().await, 1, "the session lives on");

    // The configured origin may use WHEP (CORS answered), and end its own session.
    let allowed = "http://player.example";
    let (status, headers, _) = status_of(
        client
            .request(reqwest::Method::OPTIONS, &session)
            .header("Origin", allowed)
            .header("Access-Control-Request-Method", "DELETE")
            .header("Access-Control-Request-Headers", "authorization"),
    )
    .await;
    assert!(status.is_success(), "{status}");
    assert_eq!(headers["access-control-allow-origin"], allowed);
    let (status, _, _) = status_of(client.delete(&session).header("Origin", allowed)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = status_of(
        client
            .get(test.url("/api/viewers"))
            .header("Origin", allowed),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "the API is not WHEP");
}

/// The status of `GET url`, polled until it is `want` (up to 5 s).
async fn wait_status(url: &str, want: StatusCode) -> StatusCode {
    let mut status = StatusCode::IM_A_TEAPOT;
    for _ in 0..100 {
        status = reqwest::get(url)
            .await
            .expect("the daemon answers")
            .status();
        if status == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    status
}

#[tokio::test]
async fn sighup_puts_new_rules_in_force_and_a_broken_file_keeps_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config_dir = dir.path().join("config.d");
    std::fs::create_dir(&config_dir).expect("config.d");
    std::fs::write(config_dir.join("cam.yml"), small_path(160, 120)).expect("path file");
    let server_file = dir.path().join("camportal.yml");
    std::fs::write(
        &server_file,
        "authInternalUsers:\n- user: kiosk\n  pass: kioskpass\n  permissions:\n  - action: read\n",
    )
    .expect("camportal.yml");
    let daemon = support::process::DaemonProcess::spawn(&config_dir, "127.0.0.1:0", "127.0.0.1:0");
    let player = format!("{}/cam/", daemon.address);
    assert_eq!(
        wait_status(&player, StatusCode::UNAUTHORIZED).await,
        StatusCode::UNAUTHORIZED
    );

    // Back to the defaults (loopback may watch), without a restart.
    std::fs::write(&server_file, "# defaults\n").expect("camportal.yml");
    daemon.signal(libc::SIGHUP);
    assert_eq!(wait_status(&player, StatusCode::OK).await, StatusCode::OK);

    // A broken file changes nothing.
    std::fs::write(&server_file, "authInternalUsers: [\n").expect("camportal.yml");
    daemon.signal(libc::SIGHUP);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        reqwest::get(&player).await.expect("answer").status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_page_of_another_origin_in_chromium_cannot_read_the_session_list() {
    let test = TestDaemon::start(&[("cam", &small_path(160, 120))]).await;
    // Someone watches.
    let mut viewer = Viewer::connect(&test.whep_url("cam"))
        .await
        .expect("viewer");
    viewer.next_frame(FRAME_TIMEOUT).await.expect("frame");
    let port = test.daemon.http_addr.port();
    let browser = Chromium::launch().await.expect("chromium");
    // http://localhost:PORT is another origin than http://127.0.0.1:PORT: a stand-in for any
    // page on the network the kiosk's browser might open.
    let page = browser
        .open(&format!("http://localhost:{port}/"))
        .await
        .expect("page");
    let listed = page
        .eval(&format!(
            "fetch('http://127.0.0.1:{port}/api/viewers')\
               .then(r => r.text(), e => 'refused: ' + e.message)"
        ))
        .await
        .expect("fetch evaluated");
    let listed = listed.as_str().unwrap_or_default().to_string();
    assert!(
        listed.starts_with("refused"),
        "another origin read: {listed}"
    );
    assert!(!listed.contains(viewer.session_url().rsplit('/').next().unwrap()));
    page.close().await.ok();
    assert_eq!(test.viewer_count().await, 1, "the viewer watches on");
    viewer.close().await.expect("close");
}

//! HTTPS (`webrtcEncryption: yes`): a certificate made by `openssl` served and replaced without
//! a restart, checked with `curl --cacert`; the self-signed default played in Chromium.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::chromium::Chromium;
use support::{TestDaemon, small_path};

/// A key and a self-signed certificate for 127.0.0.1, made by `openssl`.
fn openssl_pair(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let (key, cert) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.crt")),
    );
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", &format!("/CN={name}")])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap_or_else(|e| panic!("openssl not found ({e}): run `apt-get install openssl`"));
    assert!(
        made.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    (key, cert)
}

/// `curl --cacert ca URL`: `Ok(body)`, or `Err(curl's complaint)`.
fn curl(ca: &Path, url: &str) -> Result<String, String> {
    let output = Command::new("curl")
        .args([
            "--silent",
            "--show-error",
            "--fail",
            "--max-time",
            "5",
            "--cacert",
        ])
        .arg(ca)
        .arg(url)
        .output()
        .unwrap_or_else(|e| panic!("curl not found ({e}): run `apt-get install curl`"));
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_files_is_served_and_replaced_without_a_restart() {
    let certs = tempfile::tempdir().expect("temp dir");
    let (first_key, first_cert) = openssl_pair(certs.path(), "first");
    let (second_key, second_cert) = openssl_pair(certs.path(), "second");
    let (key, cert) = (
        certs.path().join("server.key"),
        certs.path().join("server.crt"),
    );
    std::fs::copy(&first_key, &key).unwrap();
    std::fs::copy(&first_cert, &cert).unwrap();
    let test = TestDaemon::start_with(&[("cam", &small_path(160, 120))], |server| {
        server.encryption = true;
        server.server_key = key.clone();
        server.server_cert = cert.clone();
    })
    .await;
    let api = test.url("/api/paths");
    assert!(api.starts_with("https://"), "{api}");

    let (first_ca, second_ca) = (first_cert.clone(), second_cert.clone());
    let answer = tokio::task::spawn_blocking({
        let api = api.clone();
        move || curl(&first_ca, &api)
    })
    .await
    .unwrap()
    .expect("the API over HTTPS, trusted with the first certificate");
    assert!(answer.contains("\"cam\""), "{answer}");
    // Plain HTTP is not served on the port.
    let plain = reqwest::get(test.url("/api/paths").replacen("https", "http", 1)).await;
    assert!(
        plain.map_or(true, |r| !r.status().is_success()),
        "plain HTTP answered"
    );

    // Replace the files (as certbot would: new files renamed over the old ones).
    std::fs::copy(&second_key, certs.path().join("new.key")).unwrap();
    std::fs::copy(&second_cert, certs.path().join("new.crt")).unwrap();
    std::fs::rename(certs.path().join("new.key"), &key).unwrap();
    std::fs::rename(certs.path().join("new.crt"), &cert).unwrap();
    let switched = tokio::task::spawn_blocking(move || {
        for _ in 0..50 {
            if curl(&second_ca, &api).is_ok() {
                return Some(curl(&first_cert, &api));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    })
    .await
    .unwrap()
    .expect("the second certificate is served within 5 s of the files changing");
    assert!(switched.is_err(), "the first certificate is still served");
}

#[tokio::test]
async fn the_self_signed_default_plays_in_chromium() {
    let certs = tempfile::tempdir().expect("temp dir");
    let (key, cert) = (
        certs.path().join("server.key"),
        certs.path().join("server.crt"),
    );
    let test = TestDaemon::start_with(&[("cam", &small_path(320, 240))], |server| {
        server.encryption = true;
        server.server_key = key.clone();
        server.server_cert = cert.clone();
    })
    .await;
    assert!(
        key.exists() && cert.exists(),
        "the pair is kept beside the config"
    );
    let answer = tokio::task::spawn_blocking({
        let (cert, url) = (cert.clone(), test.url("/api/paths"));
        move || curl(&cert, &url)
    })
    .await
    .unwrap()
    .expect("the made certificate names 127.0.0.1");
    assert!(answer.contains("\"cam\""));

    // A browser told to accept it (as a user does once) plays the player page over HTTPS.
    let browser = Chromium::launch_with(&["--ignore-certificate-errors"])
        .await
        .expect("chromium");
    let page = browser.open(&test.url("/cam/")).await.expect("page");
    page.wait_for(
        "(() => { const v = document.querySelector('video'); \
          return v && v.videoWidth > 0 && !v.paused; })()",
        Duration::from_secs(20),
    )
    .await
    .expect("the player plays over HTTPS");
    page.close().await.ok();
}

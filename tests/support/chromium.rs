//! Drives Debian's real Chromium, headless, over the Chrome DevTools Protocol (CDP) so that
//! integration tests can play streams in a real browser. A small JSON-RPC client over one
//! websocket to the browser; every page is attached in "flat" mode and addressed by session id.
//!
//! Chromium missing is an error, never a skip: a green run must mean the browser really played.

// Each test binary uses a different part of this support module.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStderr, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const DEFAULT_BINARY: &str = "/usr/bin/chromium";
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
const LOAD_TIMEOUT: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Console lines kept per page, and Chromium stderr lines kept for error messages.
const KEEP_LINES: usize = 200;
const STDERR_TAIL: usize = 30;

type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Reply = std::result::Result<Value, String>;
/// Calls awaiting their reply, by request id.
type Waiters = HashMap<u64, oneshot::Sender<Reply>>;
/// Each page's console, by CDP session id.
type Consoles = HashMap<String, VecDeque<ConsoleLine>>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data: a panicking holder cannot leave it inconsistent.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A headless Chromium owned by the test. Dropping it kills the browser (by its PID) and removes
/// its temporary profile.
pub struct Chromium {
    child: Child,
    cdp: Arc<Cdp>,
    profile: Option<tempfile::TempDir>,
}

impl Chromium {
    /// Starts `$CHROMIUM` or `/usr/bin/chromium` with a fresh profile and connects to it.
    pub async fn launch() -> Result<Chromium> {
        Self::launch_with(&[]).await
    }

    /// [`Chromium::launch`] with extra command-line switches (say
    /// `--use-fake-device-for-media-stream` for a page that needs a camera).
    pub async fn launch_with(extra_args: &[&str]) -> Result<Chromium> {
        Self::launch_in(None, extra_args).await
    }

    /// [`Chromium::launch_with`] in the network namespace `netns` (`ip netns exec`). Its
    /// DevTools port is on that namespace's loopback, so call this from a runtime whose threads
    /// are in it ([`super::netns::Netns::runtime`]); the browser can be driven from anywhere
    /// after.
    pub async fn launch_in(netns: Option<&str>, extra_args: &[&str]) -> Result<Chromium> {
        let binary = std::env::var_os("CHROMIUM")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_BINARY));
        if !binary.exists() {
            bail!(
                "Chromium not found at {}: run `apt-get install chromium` (or set $CHROMIUM)",
                binary.display()
            );
        }
        let mut command = match netns {
            Some(name) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", name]).arg(&binary);
                command
            }
            None => Command::new(&binary),
        };
        let profile = tempfile::Builder::new()
            .prefix("camportal-chromium-")
            .tempdir()
            .context("cannot create a temporary Chromium profile")?;
        let mut child = command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--autoplay-policy=no-user-gesture-required",
                "--use-fake-ui-for-media-stream",
                // Several pages may be open at once: none may be throttled as a background tab.
                "--disable-background-timer-throttling",
                "--disable-renderer-backgrounding",
                "--disable-backgrounding-occluded-windows",
                "--hide-scrollbars",
                "--mute-audio",
                "--window-size=1280,720",
                "--remote-debugging-port=0",
            ])
            .args(extra_args)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let stderr = child
            .stderr
            .take()
            .context("Chromium's stderr was not captured")?;
        let ws_url = match tokio::time::timeout(LAUNCH_TIMEOUT, devtools_url(stderr)).await {
            Ok(Ok(url)) => url,
            Ok(Err(err)) => return Err(err.context(format!("{} did not start", binary.display()))),
            Err(_) => bail!(
                "{} did not print its DevTools address within {LAUNCH_TIMEOUT:?}",
                binary.display()
            ),
        };
        let (ws, _) = tokio_tungstenite::connect_async(ws_url.as_str())
            .await
            .with_context(|| format!("cannot connect to Chromium's DevTools at {ws_url}"))?;
        tracing::debug!(%ws_url, pid = child.id(), "Chromium started");
        Ok(Chromium {
            child,
            cdp: Cdp::new(ws),
            profile: Some(profile),
        })
    }

    /// Opens `url` in a new tab (in its own browser context: no shared cache or storage) and
    /// waits until it has loaded.
    pub async fn open(&self, url: &str) -> Result<Page> {
        self.open_with_script(url, None).await
    }

    /// [`Chromium::open`], running `script` in the page before any of the page's own scripts
    /// (to instrument it).
    pub async fn open_with_script(&self, url: &str, script: Option<&str>) -> Result<Page> {
        let context = self
            .cdp
            .call(None, "Target.createBrowserContext", json!({}))
            .await?;
        let context_id = str_field(&context, "browserContextId")?;
        let target = self
            .cdp
            .call(
                None,
                "Target.createTarget",
                json!({ "url": "about:blank", "browserContextId": context_id }),
            )
            .await?;
        let target_id = str_field(&target, "targetId")?;
        let attached = self
            .cdp
            .call(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target_id, "flatten": true }),
            )
            .await?;
        let page = Page {
            cdp: Arc::clone(&self.cdp),
            session: str_field(&attached, "sessionId")?,
            context_id,
        };
        lock(&self.cdp.consoles).insert(page.session.clone(), VecDeque::new());
        // Enabled before navigating, so errors thrown while the page loads are seen.
        for domain in ["Runtime.enable", "Page.enable", "Log.enable"] {
            page.call(domain, json!({})).await?;
        }
        if let Some(script) = script {
            page.call(
                "Page.addScriptToEvaluateOnNewDocument",
                json!({ "source": script }),
            )
            .await?;
        }
        page.goto(url).await?;
        Ok(page)
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        // Give the browser's own children a moment to exit before removing their profile.
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(profile) = self.profile.take() {
            let path = profile.path().to_path_buf();
            drop(profile);
            if path.exists() {
                std::thread::sleep(Duration::from_millis(200));
                let _ = std::fs::remove_dir_all(&path);
            }
        }
    }
}

/// Reads Chromium's stderr up to `DevTools listening on ws://…`, then keeps draining it (a full
/// pipe would block the browser) into debug logs.
async fn devtools_url(stderr: ChildStderr) -> Result<String> {
    let mut lines = BufReader::new(stderr).lines();
    let mut tail = VecDeque::new();
    while let Some(line) = lines
        .next_line()
        .await
        .context("cannot read Chromium's stderr")?
    {
        if let Some(url) = line.trim().strip_prefix("DevTools listening on ") {
            let url = url.to_owned();
            tokio::spawn(async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::debug!(target: "chromium", "{line}");
                }
            });
            return Ok(url);
        }
        if tail.len() == STDERR_TAIL {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    let tail: Vec<String> = tail.into();
    bail!("Chromium exited; its last output:\n{}", tail.join("\n"))
}

fn str_field(value: &Value, name: &str) -> Result<String> {
    value
        .get(name)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .with_context(|| format!("no {name} in DevTools reply {value}"))
}

/// One tab. Dropping it closes the tab (best effort).
pub struct Page {
    cdp: Arc<Cdp>,
    session: String,
    context_id: String,
}

impl Page {
    /// The shipped player's reconnect count (`window.camportal.reconnects`).
    pub async fn reconnects(&self) -> Value {
        self.eval("window.camportal.reconnects")
            .await
            .expect("reconnects")
    }

    async fn call(&self, method: &str, params: Value) -> Result<Value> {
        self.cdp.call(Some(&self.session), method, params).await
    }

    /// Navigates this tab to `url` and waits for its load event.
    pub async fn goto(&self, url: &str) -> Result<()> {
        let reply = self.call("Page.navigate", json!({ "url": url })).await?;
        if let Some(error) = reply.get("errorText").and_then(Value::as_str) {
            bail!("cannot load {url}: {error}");
        }
        self.wait_for("document.readyState === 'complete'", LOAD_TIMEOUT)
            .await
            .with_context(|| format!("{url} did not finish loading"))?;
        Ok(())
    }

    /// Evaluates a JS expression in the page, awaiting it if it is a promise, and returns its
    /// value as JSON (`null` for `undefined`). A thrown exception is an `Err` with its message.
    pub async fn eval(&self, js: &str) -> Result<Value> {
        let reply = self
            .call(
                "Runtime.evaluate",
                json!({
                    "expression": js,
                    "awaitPromise": true,
                    "returnByValue": true,
                    "userGesture": true,
                }),
            )
            .await?;
        if let Some(details) = reply.get("exceptionDetails") {
            bail!("JS exception in `{js}`: {}", exception_text(details));
        }
        let result = reply.get("result").unwrap_or(&Value::Null);
        // NaN, Infinity, -0 and bigints do not fit in JSON: keep their JS spelling.
        if let Some(spelling) = result.get("unserializableValue") {
            return Ok(spelling.clone());
        }
        Ok(result.get("value").cloned().unwrap_or(Value::Null))
    }

    /// Polls `js_condition` until it is truthy and returns its value. Exceptions while polling
    /// (the page may not be ready yet) count as "not yet"; on timeout the error shows the last
    /// value or exception and the page's recent console.
    pub async fn wait_for(&self, js_condition: &str, timeout: Duration) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let last = match tokio::time::timeout(remaining, self.eval(js_condition)).await {
                Ok(Ok(value)) if truthy(&value) => return Ok(value),
                Ok(Ok(value)) => format!("last value: {value}"),
                Ok(Err(err)) => format!("last error: {err:#}"),
                Err(_) => "last evaluation did not finish".to_owned(),
            };
            if Instant::now() + POLL_INTERVAL >= deadline {
                let console = self.console();
                let recent = &console[console.len().saturating_sub(20)..];
                bail!(
                    "timed out after {timeout:?} waiting for `{js_condition}`; {last}\n\
                     recent console:\n{}",
                    recent.join("\n")
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// A PNG of the visible viewport.
    pub async fn screenshot_png(&self) -> Result<Vec<u8>> {
        let reply = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await?;
        let data = str_field(&reply, "data")?;
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .context("the screenshot is not valid base64")
    }

    /// Everything the page logged so far (console calls, uncaught exceptions, browser log
    /// entries such as failed loads), oldest first, as `kind: text`.
    pub fn console(&self) -> Vec<String> {
        lock(&self.cdp.consoles)
            .get(&self.session)
            .map(|lines| lines.iter().map(ToString::to_string).collect())
            .unwrap_or_default()
    }

    /// The uncaught JS exceptions (including unhandled promise rejections) so far.
    pub fn exceptions(&self) -> Vec<String> {
        lock(&self.cdp.consoles)
            .get(&self.session)
            .map(|lines| {
                lines
                    .iter()
                    .filter(|line| line.kind == EXCEPTION)
                    .map(|line| line.text.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Closes the tab and waits until Chromium confirms (its WebRTC sessions end with it).
    pub async fn close(self) -> Result<()> {
        let context_id = self.context_id.clone();
        self.cdp
            .call(
                None,
                "Target.disposeBrowserContext",
                json!({ "browserContextId": context_id }),
            )
            .await
            .map(drop)
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        lock(&self.cdp.consoles).remove(&self.session);
        // Disposing an already disposed context fails harmlessly; without a runtime (the test is
        // ending) the browser's own exit closes the tab.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let cdp = Arc::clone(&self.cdp);
            let params = json!({ "browserContextId": self.context_id });
            runtime.spawn(async move {
                let _ = cdp.call(None, "Target.disposeBrowserContext", params).await;
            });
        }
    }
}

/// JS truthiness of a JSON value (`NaN` arrives as the string "NaN" and counts as truthy, which
/// only matters for conditions nobody writes).
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

fn exception_text(details: &Value) -> String {
    // `description` carries "Error: message\n    at …"; thrown non-errors only have `value`.
    let exception = details.get("exception");
    exception
        .and_then(|e| e.get("description"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| exception.and_then(|e| e.get("value")).map(Value::to_string))
        .or_else(|| {
            details
                .get("text")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| details.to_string())
}

const EXCEPTION: &str = "exception";

struct ConsoleLine {
    kind: String,
    text: String,
}

impl std::fmt::Display for ConsoleLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.text)
    }
}

/// The DevTools connection: requests are matched to replies by id by a reader task, which also
/// files console events under their page's session id.
struct Cdp {
    sink: tokio::sync::Mutex<SplitSink<WsStream, Message>>,
    next_id: AtomicU64,
    /// `None` once the connection is gone: calls then fail at once instead of hanging.
    pending: Arc<Mutex<Option<Waiters>>>,
    consoles: Arc<Mutex<Consoles>>,
    reader: JoinHandle<()>,
}

impl Cdp {
    fn new(ws: WsStream) -> Arc<Cdp> {
        let (sink, stream) = ws.split();
        let pending = Arc::new(Mutex::new(Some(HashMap::new())));
        let consoles = Arc::new(Mutex::new(HashMap::new()));
        let reader = tokio::spawn(read_loop(
            stream,
            Arc::clone(&pending),
            Arc::clone(&consoles),
        ));
        Arc::new(Cdp {
            sink: tokio::sync::Mutex::new(sink),
            next_id: AtomicU64::new(1),
            pending,
            consoles,
            reader,
        })
    }

    async fn call(&self, session: Option<&str>, method: &str, params: Value) -> Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        match lock(&self.pending).as_mut() {
            Some(pending) => pending.insert(id, tx),
            None => bail!("{method}: Chromium's DevTools connection is closed"),
        };
        let mut request = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            request["sessionId"] = json!(session);
        }
        let sent = self
            .sink
            .lock()
            .await
            .send(Message::text(request.to_string()))
            .await;
        if let Err(err) = sent {
            self.forget(id);
            return Err(anyhow!(err).context(format!("{method}: cannot send to Chromium")));
        }
        match tokio::time::timeout(COMMAND_TIMEOUT, rx).await {
            Ok(Ok(Ok(result))) => Ok(result),
            Ok(Ok(Err(message))) => bail!("{method} failed: {message}"),
            Ok(Err(_)) => bail!("{method}: Chromium closed the DevTools connection"),
            Err(_) => {
                self.forget(id);
                bail!("{method}: no reply from Chromium within {COMMAND_TIMEOUT:?}")
            }
        }
    }

    fn forget(&self, id: u64) {
        if let Some(pending) = lock(&self.pending).as_mut() {
            pending.remove(&id);
        }
    }
}

impl Drop for Cdp {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn read_loop(
    mut stream: SplitStream<WsStream>,
    pending: Arc<Mutex<Option<Waiters>>>,
    consoles: Arc<Mutex<Consoles>>,
) {
    while let Some(message) = stream.next().await {
        let text = match message {
            Ok(Message::Text(text)) => text,
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        let Ok(message) = serde_json::from_str::<Value>(text.as_str()) else {
            tracing::warn!("unparsable DevTools message: {}", text.as_str());
            continue;
        };
        if let Some(id) = message.get("id").and_then(Value::as_u64) {
            let waiter = lock(&pending).as_mut().and_then(|p| p.remove(&id));
            if let Some(waiter) = waiter {
                let reply = match message.get("error") {
                    Some(error) => Err(error
                        .get("message")
                        .and_then(Value::as_str)
                        .map_or_else(|| error.to_string(), str::to_owned)),
                    None => Ok(message.get("result").cloned().unwrap_or(Value::Null)),
                };
                let _ = waiter.send(reply);
            }
        } else if let (Some(method), Some(session)) = (
            message.get("method").and_then(Value::as_str),
            message.get("sessionId").and_then(Value::as_str),
        ) {
            let params = message.get("params").unwrap_or(&Value::Null);
            if let Some(line) = console_line(method, params)
                && let Some(lines) = lock(&consoles).get_mut(session)
            {
                if lines.len() == KEEP_LINES {
                    lines.pop_front();
                }
                lines.push_back(line);
            }
        }
    }
    // Dropping the waiters wakes every pending call with "connection closed".
    lock(&pending).take();
}

fn console_line(method: &str, params: &Value) -> Option<ConsoleLine> {
    let line = |kind: &str, text: String| ConsoleLine {
        kind: kind.to_owned(),
        text,
    };
    match method {
        "Runtime.consoleAPICalled" => {
            let kind = params.get("type").and_then(Value::as_str).unwrap_or("log");
            let args: Vec<String> = params
                .get("args")
                .and_then(Value::as_array)
                .map(|args| args.iter().map(remote_object_text).collect())
                .unwrap_or_default();
            Some(line(&format!("console.{kind}"), args.join(" ")))
        }
        "Runtime.exceptionThrown" => Some(line(
            EXCEPTION,
            exception_text(params.get("exceptionDetails").unwrap_or(&Value::Null)),
        )),
        "Log.entryAdded" => {
            let entry = params.get("entry")?;
            let level = entry.get("level").and_then(Value::as_str).unwrap_or("info");
            let text = entry.get("text").and_then(Value::as_str).unwrap_or("");
            let url = entry.get("url").and_then(Value::as_str).unwrap_or("");
            Some(line(
                &format!("log.{level}"),
                format!("{text} {url}").trim().to_owned(),
            ))
        }
        _ => None,
    }
}

fn remote_object_text(object: &Value) -> String {
    match object.get("value") {
        Some(Value::String(s)) => s.clone(),
        Some(value) => value.to_string(),
        None => object
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or("undefined")
            .to_owned(),
    }
}

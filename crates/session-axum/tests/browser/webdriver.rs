//! A minimal W3C WebDriver client over reqwest, and the chromedriver process it talks to.
//!
//! Only what the browser test needs: a session with Chrome options, navigation, elements by
//! CSS selector (click, text), cookies (all, add, delete), synchronous scripts, and the end
//! of the session. Errors are strings naming the command and WebDriver's own error.

use std::fs::{self, File};
use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};

/// The key under which W3C WebDriver returns an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long chromedriver may take to answer `/status` with `ready: true`.
const DRIVER_READY: Duration = Duration::from_secs(20);

/// What a WebDriver command failed with.
pub(crate) type Result<T> = std::result::Result<T, String>;

/// A `chromedriver` child process on a free 127.0.0.1 port, with its own scratch directory
/// (log, Chromium's profile). Dropping it kills its whole process group — chromedriver,
/// and the Chromium it started if the session was not ended — and removes the directory.
pub(crate) struct ChromeDriver {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl ChromeDriver {
    /// Starts `chromedriver` and waits until it is ready for sessions.
    pub(crate) async fn start(chromedriver: &Path) -> Result<ChromeDriver> {
        let dir = scratch_dir()?;
        let tmp = dir.join("tmp");
        fs::create_dir_all(&tmp).map_err(|e| format!("scratch directory {}: {e}", tmp.display()))?;
        let port = free_port()?;
        let log = File::create(dir.join("chromedriver.log")).map_err(|e| format!("chromedriver log: {e}"))?;
        let log_err = log.try_clone().map_err(|e| format!("chromedriver log: {e}"))?;
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            // Whatever --user-data-dir says, Chromium writes its crash database under
            // $XDG_CONFIG_HOME and scratch directories under $TMPDIR (left behind when it is
            // killed): keep those in the scratch directory too.
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .env("XDG_CACHE_HOME", dir.join("cache"))
            .env("TMPDIR", &tmp)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            // Its own process group: Chromium and its helpers join it, so one signal ends all.
            .process_group(0)
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(format!("cannot run {}: {e}", chromedriver.display()));
            }
        };
        let mut driver = ChromeDriver { child, port, dir };
        driver.wait_ready().await?;
        Ok(driver)
    }

    /// `http://127.0.0.1:<port>`.
    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A fresh directory for Chromium's `--user-data-dir`.
    pub(crate) fn profile_dir(&self) -> PathBuf {
        self.dir.join("profile")
    }

    /// The last lines chromedriver logged.
    pub(crate) fn log_tail(&self) -> String {
        let text = fs::read_to_string(self.dir.join("chromedriver.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let http = client()?;
        let deadline = Instant::now() + DRIVER_READY;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "chromedriver exited at start-up ({status}):\n{}",
                    self.log_tail()
                ));
            }
            let ready = match http.get(format!("{}/status", self.url())).send().await {
                Ok(response) => response
                    .json::<Value>()
                    .await
                    .is_ok_and(|v| v["value"]["ready"] == json!(true)),
                Err(_) => false,
            };
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "chromedriver on port {} not ready after {DRIVER_READY:?}:\n{}",
                    self.port,
                    self.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // The group's id is chromedriver's pid (process_group(0)); `kill -KILL -- -PGID`.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A cookie as WebDriver reports it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Cookie {
    pub(crate) name: String,
    pub(crate) value: String,
    #[serde(default)]
    pub(crate) path: Option<String>,
    #[serde(default)]
    pub(crate) domain: Option<String>,
    #[serde(default)]
    pub(crate) secure: Option<bool>,
    #[serde(default)]
    pub(crate) http_only: Option<bool>,
    #[serde(default)]
    pub(crate) same_site: Option<String>,
    #[serde(default)]
    pub(crate) expiry: Option<u64>,
}

/// One WebDriver session (one browser).
pub(crate) struct Browser {
    http: reqwest::Client,
    session: String,
}

impl Browser {
    /// A new session of `chromium` with `args` (W3C `POST /session`).
    pub(crate) async fn new(driver: &ChromeDriver, chromium: &Path, args: &[String]) -> Result<Browser> {
        let http = client()?;
        let capabilities = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": chromium.to_string_lossy(),
                        "args": args,
                    },
                },
            },
        });
        let value = send(
            http.post(format!("{}/session", driver.url())).json(&capabilities),
            "new session",
        )
        .await?;
        let session = value["sessionId"]
            .as_str()
            .ok_or_else(|| format!("new session: no sessionId in {value}"))?;
        Ok(Browser {
            http,
            session: format!("{}/session/{session}", driver.url()),
        })
    }

    async fn post(&self, path: &str, body: Value, what: &str) -> Result<Value> {
        send(
            self.http.post(format!("{}{path}", self.session)).json(&body),
            what,
        )
        .await
    }

    async fn get(&self, path: &str, what: &str) -> Result<Value> {
        send(self.http.get(format!("{}{path}", self.session)), what).await
    }

    async fn delete(&self, path: &str, what: &str) -> Result<Value> {
        send(self.http.delete(format!("{}{path}", self.session)), what).await
    }

    /// Navigates to `url` and waits for the page to load.
    pub(crate) async fn goto(&self, url: &str) -> Result<()> {
        self.post("/url", json!({ "url": url }), &format!("navigate to {url}"))
            .await
            .map(drop)
    }

    /// Reloads the current page.
    pub(crate) async fn refresh(&self) -> Result<()> {
        self.post("/refresh", json!({}), "refresh").await.map(drop)
    }

    /// The first element `css` selects.
    pub(crate) async fn find(&self, css: &str) -> Result<Element<'_>> {
        let value = self
            .post(
                "/element",
                json!({ "using": "css selector", "value": css }),
                &format!("find {css}"),
            )
            .await?;
        let id = value[ELEMENT_KEY]
            .as_str()
            .ok_or_else(|| format!("find {css}: no element reference in {value}"))?;
        Ok(Element {
            browser: self,
            id: id.to_owned(),
            css: css.to_owned(),
        })
    }

    /// Every cookie the browser would send to the current page.
    pub(crate) async fn cookies(&self) -> Result<Vec<Cookie>> {
        let value = self.get("/cookie", "get all cookies").await?;
        serde_json::from_value(value).map_err(|e| format!("get all cookies: {e}"))
    }

    /// Adds a cookie for the current page's domain (W3C "Add Cookie"; `cookie` holds `name`,
    /// `value` and any of `path`, `secure`, `httpOnly`, `sameSite`, `expiry`).
    pub(crate) async fn add_cookie(&self, cookie: Value) -> Result<()> {
        self.post("/cookie", json!({ "cookie": cookie }), "add cookie")
            .await
            .map(drop)
    }

    /// Deletes every cookie of the current page's domain.
    pub(crate) async fn delete_cookies(&self) -> Result<()> {
        self.delete("/cookie", "delete all cookies").await.map(drop)
    }

    /// Runs `script` (a function body; `return` gives the answer) in the page.
    pub(crate) async fn execute(&self, script: &str) -> Result<Value> {
        self.post(
            "/execute/sync",
            json!({ "script": script, "args": [] }),
            "execute script",
        )
        .await
    }

    /// The page's visible text (for failure messages).
    pub(crate) async fn page_text(&self) -> String {
        match self
            .execute("return document.body ? document.body.innerText : document.documentElement.outerHTML")
            .await
        {
            Ok(Value::String(text)) => text,
            Ok(other) => other.to_string(),
            Err(e) => e,
        }
    }

    /// Ends the session: Chromium quits.
    pub(crate) async fn quit(self) -> Result<()> {
        send(self.http.delete(&self.session), "delete session")
            .await
            .map(drop)
    }
}

/// An element of the current page.
pub(crate) struct Element<'a> {
    browser: &'a Browser,
    id: String,
    css: String,
}

impl Element<'_> {
    /// Clicks it; a click that submits a form returns once the next page has loaded.
    pub(crate) async fn click(&self) -> Result<()> {
        self.browser
            .post(
                &format!("/element/{}/click", self.id),
                json!({}),
                &format!("click {}", self.css),
            )
            .await
            .map(drop)
    }

    /// Its rendered text.
    pub(crate) async fn text(&self) -> Result<String> {
        let value = self
            .browser
            .get(
                &format!("/element/{}/text", self.id),
                &format!("text of {}", self.css),
            )
            .await?;
        value
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("text of {}: not a string: {value}", self.css))
    }
}

/// Sends a command and unwraps W3C's `{"value": …}`, turning an error answer into its
/// `error: message`.
async fn send(request: reqwest::RequestBuilder, what: &str) -> Result<Value> {
    let response = request.send().await.map_err(|e| format!("{what}: {e}"))?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .map_err(|e| format!("{what}: HTTP {status}, body not JSON: {e}"))?;
    let value = body.get("value").cloned().unwrap_or(Value::Null);
    if status.is_success() {
        Ok(value)
    } else {
        let message = value["message"].as_str().unwrap_or_default();
        let message = message.lines().next().unwrap_or_default();
        Err(format!("{what}: HTTP {status}: {}: {message}", value["error"]))
    }
}

/// An HTTP client for 127.0.0.1 (never through a proxy from the environment).
fn client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

/// A port nothing listens on now (the OS's pick).
fn free_port() -> Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// A new, empty directory under the system's temporary directory.
fn scratch_dir() -> Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!("session-axum-browser-{}-{nanos}", std::process::id()));
    fs::create_dir_all(&dir).map_err(|e| format!("scratch directory {}: {e}", dir.display()))?;
    Ok(dir)
}

//! The example app (`examples/axum_app.rs`) in a real browser: headless Chromium driven
//! through chromedriver (W3C WebDriver), the app served in-process on the fallback backend over
//! a `redis-server` this test starts, kills and restarts.
//!
//! The scenario: count twice (a session cookie appears: `__Host-id`, `HttpOnly`, `Secure`,
//! `SameSite=Lax`, `Path=/`, invisible to `document.cookie`); log in (a new id); count; kill
//! Redis and keep counting (the fallback's warm copy: no error page, the same cookie); restart
//! Redis and count until Redis holds the session again (the count never resets, the user stays
//! logged in); log out (the cookie goes); plant the old cookies again (the one before login and
//! the one logged out): both are refused, and a count then gives a new id. One `FIGURES browser: …` line sums it up.
//!
//! Runs only with `SESSION_TEST_BROWSER=1` (`cargo xtask test --only browser`); then it needs
//! Debian's `chromium` and `chromium-driver` (`/usr/bin/chromium`, `/usr/bin/chromedriver`, or
//! `SESSION_TEST_CHROMIUM` / `SESSION_TEST_CHROMEDRIVER`) and `redis-server`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "tests: a failed expectation is a failed test, and the figures are the output"
)]

#[path = "../examples/axum_app.rs"]
mod example;
#[path = "browser/webdriver.rs"]
mod webdriver;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;
use session_axum::SessionLayer;
use session_store::{SessionId, Settings};
use testkit_redis::resp::Reply;
use testkit_redis::RedisServer;
use tokio::task::block_in_place;

use crate::webdriver::{Browser, ChromeDriver, Cookie};

/// `1` runs the test; anything else skips it.
const BROWSER_ENV: &str = "SESSION_TEST_BROWSER";
/// The session cookie's name (the layer's secure default).
const COOKIE: &str = "__Host-id";
/// Chromium's arguments, besides `--user-data-dir`. Without the background-networking ones,
/// Chromium's own connections to the outside (refused on a closed network) get in the way.
const CHROMIUM_ARGS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];
/// How long a page may take to show what a step expects.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long Redis may take to hold the session again after its restart.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(20);

/// The store settings: `backend` over the test's Redis; the fallback probes a down Redis
/// often, so that recovery takes a fraction of a second, and has no recovery grace (one
/// instance: no other may still be replaying sessions it can't see).
fn settings(backend: &str, redis_url: &str) -> Settings {
    Settings::from_toml(&format!(
        r#"
backend = "{backend}"

[redis]
url = "{redis_url}"

[fallback]
probe_min_ms = 20
probe_max_ms = 200
recovery_grace_ms = 0
"#
    ))
    .expect("test settings")
}

/// A program's path: `env` if set, else `default`; a test failure naming Debian's packages
/// when it does not exist.
fn program(env: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(env).map_or_else(|| PathBuf::from(default), PathBuf::from);
    assert!(
        path.is_file(),
        "{} not found (set {env} to use another); the browser test needs Debian's packages \
         `chromium` and `chromium-driver`: apt-get install -y chromium chromium-driver",
        path.display()
    );
    path
}

/// What the example's page shows.
#[derive(Debug, PartialEq, Eq)]
struct Page {
    who: String,
    count: u64,
}

/// The page now: `#who` and `#count`, or what the browser shows instead.
async fn page(browser: &Browser) -> Result<Page, String> {
    let who = browser.find("#who").await?.text().await?;
    let count = browser.find("#count").await?.text().await?;
    let count = count
        .trim()
        .parse()
        .map_err(|e| format!("#count is {count:?}: {e}"))?;
    Ok(Page { who, count })
}

/// Waits until the page shows `who` and `count`; panics with what it shows otherwise.
async fn expect_page(browser: &Browser, who: &str, count: u64, step: &str) {
    let deadline = Instant::now() + STEP_TIMEOUT;
    let want = Page {
        who: who.to_owned(),
        count,
    };
    loop {
        let seen = page(browser).await;
        if seen.as_ref() == Ok(&want) {
            return;
        }
        if Instant::now() >= deadline {
            panic!(
                "{step}: expected {want:?}, the page shows {seen:?}; its text:\n{}",
                browser.page_text().await
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The session cookie the browser holds for the page, if any.
async fn session_cookie(browser: &Browser) -> Option<Cookie> {
    let cookies = browser.cookies().await.expect("get all cookies");
    let mut ours: Vec<Cookie> = cookies.into_iter().filter(|c| c.name == COOKIE).collect();
    assert!(ours.len() <= 1, "one session cookie at most: {ours:?}");
    ours.pop()
}

/// Clicks `css` and waits for the page to show `who` and `count`; returns how long it took.
async fn click(browser: &Browser, css: &str, who: &str, count: u64, step: &str) -> Duration {
    let started = Instant::now();
    browser
        .find(css)
        .await
        .unwrap_or_else(|e| panic!("{step}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("{step}: {e}"));
    expect_page(browser, who, count, step).await;
    started.elapsed()
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_app_in_chromium() {
    if std::env::var(BROWSER_ENV).as_deref() != Ok("1") {
        println!("browser test skipped: set {BROWSER_ENV}=1 (cargo xtask test --only browser) to run it");
        return;
    }
    let chromium = program("SESSION_TEST_CHROMIUM", "/usr/bin/chromium");
    let chromedriver = program("SESSION_TEST_CHROMEDRIVER", "/usr/bin/chromedriver");
    let began = Instant::now();

    // Redis, and the example app on the fallback over it, in this process.
    let mut redis = block_in_place(RedisServer::start).expect("start redis-server");
    let built = session_store::build(&settings("fallback", &redis.url()))
        .await
        .expect("build the fallback store");
    let layer = SessionLayer::new(built.sessions::<example::Visit>("web").expect("namespace"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let site = format!("http://{}/", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, example::app(layer)).await });

    // Chromium through chromedriver, with a fresh profile.
    let driver = ChromeDriver::start(&chromedriver)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| (*a).to_owned()).collect();
    args.push(format!("--user-data-dir={}", driver.profile_dir().display()));
    let browser = Browser::new(&driver, &chromium, &args)
        .await
        .unwrap_or_else(|e| panic!("{e}\nchromedriver's log:\n{}", driver.log_tail()));
    let mut clicks = 0u32;
    let out = "not logged in";
    let ada = "logged in as ada";

    // 1. A first visit: no session, no cookie.
    browser.goto(&site).await.unwrap();
    expect_page(&browser, out, 0, "first visit").await;
    assert!(
        session_cookie(&browser).await.is_none(),
        "a cookie before any write"
    );

    // 2. Count twice: a session, in a cookie only the server sees.
    for n in 1..=2 {
        click(&browser, "#more", out, n, "count before login").await;
        clicks += 1;
    }
    let a = session_cookie(&browser)
        .await
        .expect("Chromium kept no session cookie (does it count http://127.0.0.1 as a secure origin?)");
    assert_eq!(a.http_only, Some(true), "{a:?}");
    assert_eq!(a.secure, Some(true), "{a:?}");
    assert_eq!(a.same_site.as_deref(), Some("Lax"), "{a:?}");
    assert_eq!(a.path.as_deref(), Some("/"), "{a:?}");
    assert_eq!(a.domain.as_deref(), Some("127.0.0.1"), "host-only: {a:?}");
    assert!(a.expiry.is_some(), "Max-Age gives the cookie an expiry: {a:?}");
    SessionId::parse(&a.value).expect("the cookie holds a session id");
    let script_sees = browser.execute("return document.cookie").await.unwrap();
    let script_sees = script_sees.as_str().unwrap_or_default().to_owned();
    assert!(
        !script_sees.contains(COOKIE) && !script_sees.contains(&a.value),
        "document.cookie shows the HttpOnly cookie: {script_sees:?}"
    );

    // 3. Log in: a new id; the visit goes on.
    click(&browser, "#login", ada, 2, "log in").await;
    clicks += 1;
    let b = session_cookie(&browser).await.expect("a cookie after login");
    assert_ne!(b.value, a.value, "login must rotate the session id");
    for n in 3..=5 {
        click(&browser, "#more", ada, n, "count after login").await;
        clicks += 1;
    }
    // The app is on Redis (not serving from memory since its start): a second store, straight
    // on Redis, reads the session.
    let checker = session_store::build(&settings("redis", &redis.url()))
        .await
        .expect("a second store, straight on Redis");
    let checker = checker.sessions::<example::Visit>("web").unwrap();
    let b_id = SessionId::parse(&b.value).unwrap();
    let stored = checker
        .load(&b_id)
        .await
        .unwrap()
        .expect("Redis holds the session");
    assert_eq!(
        (stored.value.user.as_deref(), stored.value.count),
        (Some("ada"), 5)
    );

    // 4. Redis dies mid-session: the fallback's warm copy serves and records the counts.
    block_in_place(|| redis.kill9()).expect("kill redis-server");
    let mut outage_clicks = Vec::new();
    for n in 6..=8 {
        outage_clicks.push(click(&browser, "#more", ada, n, "count while Redis is down").await);
        clicks += 1;
        let cookie = session_cookie(&browser)
            .await
            .expect("the cookie survives the outage");
        assert_eq!(cookie.value, b.value, "the outage changed the cookie");
    }

    // 5. Redis is back (empty: no persistence): count until it holds the session again
    //    (the journal's replay, or the next write through it). The count never resets.
    let restarted = Instant::now();
    block_in_place(|| redis.restart()).expect("restart redis-server on its port");
    let mut count = 8;
    let mut recovery_clicks = 0u32;
    let caught_up = loop {
        count += 1;
        click(&browser, "#more", ada, count, "count after Redis restarted").await;
        clicks += 1;
        recovery_clicks += 1;
        // The second store reconnects on its own; until it has, "not yet".
        if let Ok(Some(stored)) = checker.load(&b_id).await {
            assert_eq!(
                stored.value.user.as_deref(),
                Some("ada"),
                "Redis's copy logged out"
            );
            if stored.value.count == count {
                break restarted.elapsed();
            }
            assert!(
                stored.value.count < count,
                "Redis ahead of the page: {}",
                stored.value.count
            );
        }
        assert!(
            restarted.elapsed() < RECOVERY_TIMEOUT,
            "Redis still lacks the session (or its last count) {RECOVERY_TIMEOUT:?} after its restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Once more: now written through Redis at once.
    count += 1;
    click(&browser, "#more", ada, count, "count with Redis back").await;
    clicks += 1;
    let stored = checker
        .load(&b_id)
        .await
        .unwrap()
        .expect("Redis holds the session");
    assert_eq!(
        (stored.value.user.as_deref(), stored.value.count),
        (Some("ada"), count)
    );
    let keys = match block_in_place(|| redis.cmd(&["DBSIZE"])).expect("DBSIZE") {
        Reply::Integer(n) => n,
        other => panic!("DBSIZE answered {other:?}"),
    };
    assert_eq!(
        session_cookie(&browser).await.map(|c| c.value),
        Some(b.value.clone()),
        "the cookie changed through the restart"
    );

    // 6. Log out: the session is gone everywhere, and so is the cookie.
    click(&browser, "#logout", out, 0, "log out").await;
    clicks += 1;
    assert!(
        session_cookie(&browser).await.is_none(),
        "logout must remove the cookie"
    );
    assert!(
        checker.load(&b_id).await.unwrap().is_none(),
        "Redis still holds the logged-out session"
    );

    // 7. The old cookies, planted again, are refused; a write gets a new id.
    browser.delete_cookies().await.unwrap();
    let mut refused = 0;
    for (which, old) in [("logged out (B)", &b), ("before login (A)", &a)] {
        browser
            .add_cookie(json!({
                "name": COOKIE,
                "value": old.value,
                "path": "/",
                "secure": true,
                "httpOnly": true,
                "sameSite": "Lax",
            }))
            .await
            .unwrap_or_else(|e| panic!("plant the {which} cookie: {e}"));
        let planted = session_cookie(&browser).await.map(|c| c.value);
        assert_eq!(
            planted.as_ref(),
            Some(&old.value),
            "the {which} cookie was not planted"
        );
        browser.refresh().await.unwrap();
        expect_page(&browser, out, 0, &format!("the {which} cookie")).await;
        // Left alone (removing it could clobber a concurrent login's cookie); the first write
        // replaces it with a new id.
        click(
            &browser,
            "#more",
            out,
            1,
            &format!("a count after the {which} cookie"),
        )
        .await;
        let fresh = session_cookie(&browser).await.map(|c| c.value);
        assert!(
            fresh.is_some() && fresh.as_ref() != Some(&old.value),
            "a write after the refused {which} cookie must give a new id"
        );
        refused += 1;
    }

    browser.quit().await.expect("end the WebDriver session");
    drop(driver);
    server.abort();
    let slowest_outage = outage_clicks.iter().max().copied().unwrap_or_default();
    println!(
        "FIGURES browser: {clicks} clicks, count 2 → login (id rotated) → 5 → Redis killed → 8 (outage clicks \
         {} ms, slowest {} ms) → restarted → {count}; Redis held the session after {recovery_clicks} clicks, \
         {} ms after the restart ({keys} keys); cookie {COOKIE} HttpOnly Secure SameSite=Lax Path=/ accepted \
         over http://127.0.0.1, hidden from document.cookie; logout removed it; old cookies refused {refused}/2; \
         {:.1} s in all",
        outage_clicks.iter().map(|d| ms(*d).to_string()).collect::<Vec<_>>().join("/"),
        ms(slowest_outage),
        ms(caught_up),
        began.elapsed().as_secs_f64()
    );
}

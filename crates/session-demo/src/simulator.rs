//! The chat simulator: drives one or more demo servers the way a chat front
//! end would, records every request, and at the end checks that every
//! acknowledged write is there and no deleted session came back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

use crate::model::{Message, OrchestratorSession, TaskSession};

/// What to run.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Base URLs of demo servers, e.g. `http://127.0.0.1:8080`. Sessions
    /// created on one are read and updated through the next.
    pub targets: Vec<String>,
    /// Simulated users; each has one task and one orchestrator session.
    pub users: usize,
    /// Chat turns per user (each: read, append two messages, compare-and-set).
    pub turns: usize,
    /// Users running at once.
    pub concurrency: usize,
    /// Every `delete_every`-th user logs out at the end (0: nobody).
    pub delete_every: usize,
    /// Pause between a user's turns.
    pub pause: Duration,
    /// Before verifying, wait until every target's `/health` reports an
    /// empty journal and no fallback (up to this long).
    pub wait_recovered: Option<Duration>,
    /// The store is expected to lose its primary during the run: misses of
    /// sessions the secondary never saw and errors of calls in flight at the
    /// moment of failure are reported but do not fail the run. Lost and
    /// resurrected sessions still do.
    pub outage: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            targets: vec!["http://127.0.0.1:8080".into()],
            users: 100,
            turns: 5,
            concurrency: 16,
            delete_every: 4,
            pause: Duration::ZERO,
            wait_recovered: None,
            outage: false,
        }
    }
}

/// What happened.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Requests sent.
    pub requests: u64,
    /// Requests answered 5xx or not answered.
    pub errors: u64,
    /// Sessions created (201).
    pub created: u64,
    /// Loads answered 200.
    pub hits: u64,
    /// Loads of live sessions answered 404 (sessions lost or not shared).
    pub misses: u64,
    /// Of the misses, those read through another instance than the creator.
    pub cross_instance_misses: u64,
    /// Loads answered 200 by another instance than the one that created the session: the
    /// sessions the instances share.
    pub cross_instance_hits: u64,
    /// Updates answered 204.
    pub updated: u64,
    /// Compare-and-set conflicts (412), retried.
    pub conflicts: u64,
    /// Sessions deleted (204).
    pub deleted: u64,
    /// Sessions checked at the end.
    pub verified: u64,
    /// Sessions whose final state is not the last acknowledged one.
    pub lost: u64,
    /// Deleted sessions that answered 200 at the end.
    pub resurrected: u64,
    /// Latency percentiles of all requests, in ms: p50, p99, max.
    pub latency_ms: (f64, f64, f64),
    /// Wall time of the load phase.
    pub elapsed: Duration,
    /// How long the wait for recovery took, if asked.
    pub recovery_wait: Option<Duration>,
}

impl Report {
    /// The report as the lines the simulator prints.
    pub fn lines(&self, config: &SimConfig) -> Vec<String> {
        let reads = self.hits + self.misses;
        let ratio = if reads == 0 {
            0.0
        } else {
            self.hits as f64 * 100.0 / reads as f64
        };
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let mut out = vec![
            format!(
                "chat-sim: targets={} users={} turns={} concurrency={}",
                config.targets.len(),
                config.users,
                config.turns,
                config.concurrency
            ),
            format!("requests: {} sent, {} errors", self.requests, self.errors),
            format!(
                "sessions: created={} updated={} deleted={} conflicts_retried={}",
                self.created, self.updated, self.deleted, self.conflicts
            ),
            format!(
                "reads: hits={} misses={} hit_ratio={ratio:.2}% cross_instance_hits={} cross_instance_misses={}",
                self.hits, self.misses, self.cross_instance_hits, self.cross_instance_misses
            ),
            format!(
                "latency: p50={:.2} ms p99={:.2} ms max={:.2} ms",
                self.latency_ms.0, self.latency_ms.1, self.latency_ms.2
            ),
            format!(
                "throughput: {:.0} req/s over {:.2} s",
                self.requests as f64 / secs,
                self.elapsed.as_secs_f64()
            ),
        ];
        if config.outage && (self.errors > 0 || self.misses > 0) {
            out.push(
                "  with an outage: errors are requests answered 503 while an instance could not tell \
                 whether a session exists (Redis down and the session not in its memory, or Redis just back \
                 and the session possibly still in the other instance's journal: fallback.recovery_grace_ms); \
                 misses are reads of sessions that only the other instance's outage journal held, made after \
                 that grace (see cross_instance_misses), visible everywhere once it has replayed. verify is \
                 what counts."
                    .to_owned(),
            );
        }
        if let Some(w) = self.recovery_wait {
            out.push(format!(
                "recovery: journal drained {:.2} s after the load ended",
                w.as_secs_f64()
            ));
        }
        out.push(format!(
            "verify: checked={} lost={} resurrected={}",
            self.verified, self.lost, self.resurrected
        ));
        out
    }

    /// Whether the run met its promises: nothing lost or resurrected, and
    /// (unless an outage was expected) no errors and no misses.
    pub fn is_clean(&self, config: &SimConfig) -> bool {
        let durable = self.lost == 0 && self.resurrected == 0;
        durable && (config.outage || (self.errors == 0 && self.misses == 0))
    }
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    errors: AtomicU64,
    created: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    cross: AtomicU64,
    cross_hits: AtomicU64,
    updated: AtomicU64,
    conflicts: AtomicU64,
    deleted: AtomicU64,
}

struct Shared {
    client: Client,
    targets: Vec<String>,
    counters: Counters,
    latencies: Mutex<Vec<u32>>,
}

/// What one user's sessions should look like at the end.
struct Expectation {
    task_id: String,
    orch_id: String,
    /// Acknowledged message count, or `None` once deleted.
    messages: Option<usize>,
    step: Option<i64>,
    /// A write of the task (0) or orchestrator (1) failed without an answer:
    /// its outcome is unknown, so a later state than the acknowledged one is fine.
    uncertain: [bool; 2],
}

/// An answer: status, `ETag` exactly as sent (an opaque token, sent back
/// verbatim as `If-Match`), JSON body (`Null` if none).
enum Outcome {
    Status(StatusCode, Option<String>, Value),
    Failed,
}

impl Shared {
    async fn send(&self, req: reqwest::RequestBuilder) -> Outcome {
        let start = Instant::now();
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let result = req.send().await;
        let out = match result {
            Ok(resp) => {
                let status = resp.status();
                let etag = resp
                    .headers()
                    .get(reqwest::header::ETAG)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let body = resp.bytes().await.ok();
                let value = body
                    .as_deref()
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .unwrap_or(Value::Null);
                if status.is_server_error() {
                    self.counters.errors.fetch_add(1, Ordering::Relaxed);
                }
                Outcome::Status(status, etag, value)
            }
            Err(_) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                Outcome::Failed
            }
        };
        let us = u32::try_from(start.elapsed().as_micros()).unwrap_or(u32::MAX);
        if let Ok(mut l) = self.latencies.lock() {
            l.push(us);
        }
        out
    }

    fn url(&self, target: usize, path: &str) -> String {
        format!("{}{}", self.targets[target % self.targets.len()], path)
    }

    async fn create(&self, target: usize, kind: &str, body: &Value) -> Option<String> {
        let req = self
            .client
            .post(self.url(target, &format!("/api/sessions/{kind}")))
            .json(body);
        match self.send(req).await {
            Outcome::Status(StatusCode::CREATED, _, v) => {
                self.counters.created.fetch_add(1, Ordering::Relaxed);
                v.get("id").and_then(Value::as_str).map(str::to_owned)
            }
            _ => None,
        }
    }

    /// GET; `Some((etag, body))` on 200. Counts hits and misses.
    async fn get(&self, target: usize, creator: usize, kind: &str, id: &str) -> Option<(String, Value)> {
        let req = self
            .client
            .get(self.url(target, &format!("/api/sessions/{kind}/{id}")));
        match self.send(req).await {
            Outcome::Status(StatusCode::OK, Some(v), body) => {
                self.counters.hits.fetch_add(1, Ordering::Relaxed);
                if target % self.targets.len() != creator % self.targets.len() {
                    self.counters.cross_hits.fetch_add(1, Ordering::Relaxed);
                }
                Some((v, body))
            }
            Outcome::Status(StatusCode::NOT_FOUND, _, _) => {
                self.counters.misses.fetch_add(1, Ordering::Relaxed);
                if target % self.targets.len() != creator % self.targets.len() {
                    self.counters.cross.fetch_add(1, Ordering::Relaxed);
                }
                None
            }
            _ => None,
        }
    }

    /// PUT with `If-Match: etag`; `Ok(true)` on 204, `Ok(false)` on 412, `Err` otherwise.
    async fn put(&self, target: usize, kind: &str, id: &str, etag: &str, body: &Value) -> Result<bool, ()> {
        let req = self
            .client
            .put(self.url(target, &format!("/api/sessions/{kind}/{id}")))
            .header(reqwest::header::IF_MATCH, etag)
            .json(body);
        match self.send(req).await {
            Outcome::Status(StatusCode::NO_CONTENT, _, _) => {
                self.counters.updated.fetch_add(1, Ordering::Relaxed);
                Ok(true)
            }
            Outcome::Status(StatusCode::PRECONDITION_FAILED, _, _) => {
                self.counters.conflicts.fetch_add(1, Ordering::Relaxed);
                Ok(false)
            }
            _ => Err(()),
        }
    }

    /// DELETE; `true` once answered 204 or 404: either way the session must
    /// not exist afterwards (a logout while the primary is down may answer
    /// 404 from the secondary and still delete the session everywhere).
    async fn delete(&self, target: usize, kind: &str, id: &str) -> bool {
        let req = self
            .client
            .delete(self.url(target, &format!("/api/sessions/{kind}/{id}")));
        match self.send(req).await {
            Outcome::Status(StatusCode::NO_CONTENT, _, _) => {
                self.counters.deleted.fetch_add(1, Ordering::Relaxed);
                true
            }
            Outcome::Status(StatusCode::NOT_FOUND, _, _) => true,
            _ => false,
        }
    }
}

const MAX_RETRIES: usize = 20;

/// Reads a session through `target`, changes it with `edit`, writes it back
/// with `If-Match`, retrying on 412. `Some(result)` once acknowledged.
async fn read_modify_write<T, R>(
    s: &Shared,
    target: usize,
    creator: usize,
    kind: &str,
    id: &str,
    edit: impl Fn(&mut T) -> R,
) -> Option<R>
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    for _ in 0..MAX_RETRIES {
        let (etag, body) = s.get(target, creator, kind, id).await?;
        let mut value: T = serde_json::from_value(body).ok()?;
        let r = edit(&mut value);
        let body = serde_json::to_value(&value).ok()?;
        match s.put(target, kind, id, &etag, &body).await {
            Ok(true) => return Some(r),
            Ok(false) => continue,
            Err(()) => return None,
        }
    }
    None
}

async fn run_user(s: Arc<Shared>, user: usize, config: Arc<SimConfig>) -> Option<Expectation> {
    let creator = user;
    let task = json!({
        "taskId": format!("task-{user}"),
        "state": "new",
        "messages": [],
        "variables": {"user": format!("user-{user}")},
    });
    let task_id = s.create(creator, "task", &task).await?;
    let orch = json!({"taskSessionIds": [task_id.clone()], "currentStep": 0, "context": {"user": format!("user-{user}")}});
    let orch_id = s.create(creator, "orchestrator", &orch).await?;
    let mut exp = Expectation {
        task_id,
        orch_id,
        messages: Some(0),
        step: Some(0),
        uncertain: [false; 2],
    };
    for turn in 0..config.turns {
        // Another instance than the creator, when there are several.
        let target = creator + turn + 1;
        let acked = read_modify_write(
            &s,
            target,
            creator,
            "task",
            &exp.task_id,
            |t: &mut TaskSession| {
                t.state = "running".into();
                t.messages.push(Message {
                    role: "user".into(),
                    content: format!("question {turn} from user {user}"),
                });
                t.messages.push(Message {
                    role: "assistant".into(),
                    content: format!("answer {turn}"),
                });
                t.messages.len()
            },
        )
        .await;
        match acked {
            Some(n) => exp.messages = Some(n),
            None => exp.uncertain[0] = true,
        }
        let step = read_modify_write(
            &s,
            target,
            creator,
            "orchestrator",
            &exp.orch_id,
            |o: &mut OrchestratorSession| {
                o.current_step += 1;
                o.current_step
            },
        )
        .await;
        match step {
            Some(st) => exp.step = Some(st),
            None => exp.uncertain[1] = true,
        }
        if !config.pause.is_zero() {
            tokio::time::sleep(config.pause).await;
        }
    }
    if config.delete_every > 0 && user.is_multiple_of(config.delete_every) {
        let target = creator + 1;
        if s.delete(target, "task", &exp.task_id).await {
            exp.messages = None;
        }
        if s.delete(target, "orchestrator", &exp.orch_id).await {
            exp.step = None;
        }
    }
    Some(exp)
}

async fn wait_recovered(s: &Shared, limit: Duration) -> Duration {
    let start = Instant::now();
    while start.elapsed() < limit {
        let mut all = true;
        for t in &s.targets {
            let ok = match s.client.get(format!("{t}/health")).send().await {
                Ok(resp) => match resp.json::<Value>().await {
                    Ok(v) => {
                        v.get("journal").and_then(Value::as_u64) == Some(0)
                            && v.get("fallback_active").and_then(Value::as_bool) == Some(false)
                    }
                    Err(_) => false,
                },
                Err(_) => false,
            };
            all &= ok;
        }
        if all {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[idx.min(sorted.len() - 1)]) / 1000.0
}

/// Runs the simulation and verifies the end state.
///
/// # Errors
/// When the HTTP client cannot be built or no target is given.
pub async fn run(config: SimConfig) -> Result<Report, String> {
    if config.targets.is_empty() {
        return Err("no target given".into());
    }
    let client = Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(config.concurrency.max(1))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let shared = Arc::new(Shared {
        client,
        targets: config.targets.clone(),
        counters: Counters::default(),
        latencies: Mutex::new(Vec::new()),
    });
    let config = Arc::new(config);
    let sem = Arc::new(tokio::sync::Semaphore::new(config.concurrency.max(1)));
    let start = Instant::now();
    let mut handles = Vec::with_capacity(config.users);
    for user in 0..config.users {
        let s = Arc::clone(&shared);
        let c = Arc::clone(&config);
        let sem = Arc::clone(&sem);
        handles.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await.ok()?;
            run_user(s, user, c).await
        }));
    }
    let mut expectations = Vec::new();
    for h in handles {
        if let Ok(Some(e)) = h.await {
            expectations.push(e);
        }
    }
    let elapsed = start.elapsed();
    let mut latencies = shared.latencies.lock().map(|l| l.clone()).unwrap_or_default();
    latencies.sort_unstable();
    let recovery_wait = match config.wait_recovered {
        Some(limit) => Some(wait_recovered(&shared, limit).await),
        None => None,
    };

    // Verify through a plain client, so verification does not count as load.
    let mut verified = 0;
    let mut lost = 0;
    let mut resurrected = 0;
    for (i, e) in expectations.iter().enumerate() {
        let checks: [(&str, &String, Option<i64>, bool); 2] = [
            ("task", &e.task_id, e.messages.map(|n| n as i64), e.uncertain[0]),
            ("orchestrator", &e.orch_id, e.step, e.uncertain[1]),
        ];
        for (kind, id, expected, uncertain) in checks {
            verified += 1;
            let url = shared.url(i, &format!("/api/sessions/{kind}/{id}"));
            let got = match shared.client.get(url).send().await {
                Ok(r) if r.status() == StatusCode::OK => r.json::<Value>().await.ok(),
                Ok(r) if r.status() == StatusCode::NOT_FOUND => None,
                _ => {
                    lost += 1;
                    continue;
                }
            };
            match (expected, got) {
                (None, Some(_)) => resurrected += 1,
                (None, None) => {}
                (Some(_), None) => lost += 1,
                (Some(n), Some(v)) => {
                    let actual = match kind {
                        "task" => v
                            .get("messages")
                            .and_then(Value::as_array)
                            .map(|m| m.len() as i64),
                        _ => v.get("currentStep").and_then(Value::as_i64),
                    };
                    let ok = match actual {
                        Some(a) if uncertain => a >= n,
                        Some(a) => a == n,
                        None => false,
                    };
                    if !ok {
                        lost += 1;
                    }
                }
            }
        }
    }
    let c = &shared.counters;
    Ok(Report {
        requests: c.requests.load(Ordering::Relaxed),
        errors: c.errors.load(Ordering::Relaxed),
        created: c.created.load(Ordering::Relaxed),
        hits: c.hits.load(Ordering::Relaxed),
        misses: c.misses.load(Ordering::Relaxed),
        cross_instance_misses: c.cross.load(Ordering::Relaxed),
        cross_instance_hits: c.cross_hits.load(Ordering::Relaxed),
        updated: c.updated.load(Ordering::Relaxed),
        conflicts: c.conflicts.load(Ordering::Relaxed),
        deleted: c.deleted.load(Ordering::Relaxed),
        verified,
        lost,
        resurrected,
        latency_ms: (
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99),
            latencies.last().map_or(0.0, |m| f64::from(*m) / 1000.0),
        ),
        elapsed,
        recovery_wait,
    })
}

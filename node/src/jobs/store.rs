//! The embedded job store: one redb database (`jobs.redb`) under `--async-dir`. A job is accepted
//! only once it is on disk, and leaves the queue only in the transaction that stores its result,
//! so a crash or a restart loses nothing accepted and no job ends twice.
//!
//! Every change goes through one writer thread that commits what has queued up behind the
//! transaction in progress as the next transaction (group commit): a burst of submissions costs
//! one `fsync` per batch, not per job. Reads take their own snapshot and never wait for it.
//!
//! Tables: `jobs` (id → the job, JSON), `bodies` (id → its request body, until it ends),
//! `pending` (sequence number → id: the queue, in arrival order, queued or running),
//! `idempotency` (model/key → id) and `expiry` (finish time + id, for the result TTL).

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_channel::{unbounded, Receiver, Sender};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
const BODIES: TableDefinition<&str, &[u8]> = TableDefinition::new("bodies");
const PENDING: TableDefinition<u64, &str> = TableDefinition::new("pending");
const KEYS: TableDefinition<&str, &str> = TableDefinition::new("idempotency");
const EXPIRY: TableDefinition<&str, ()> = TableDefinition::new("expiry");

/// Most changes committed in one transaction.
const MAX_GROUP: usize = 1024;
/// Most expired jobs one sweep deletes (one transaction; the sweeper asks again while a sweep
/// fills it), so that the writer never stalls submissions for long.
pub const MAX_SWEEP: usize = 10_000;

/// Which route a job came in on, and so how its body is read and its result written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// `POST /async/predictions/{model}`: the body and answer of `/predictions`.
    Predictions,
    /// `POST /v2/models/{model}/infer` with `Prefer: respond-async`: KServe v2's.
    V2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Queued,
    Running,
    Done,
    Failed,
}

impl Status {
    pub fn is_final(self) -> bool {
        matches!(self, Status::Done | Status::Failed)
    }
}

/// Why a job failed, as an error body writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobError {
    pub code: String,
    pub error: String,
}

/// One asynchronous request and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub model: String,
    pub protocol: Protocol,
    pub status: Status,
    /// Times it was handed to the model (a retry, or a node that died while running it, adds one).
    pub attempts: u32,
    /// Milliseconds since the Unix epoch.
    pub submitted_ms: u64,
    pub finished_ms: Option<u64>,
    pub result: Option<serde_json::Value>,
    pub error: Option<JobError>,
    /// Where its result is POSTed when it ends (the request's, else the node's).
    pub callback_url: Option<String>,
    /// Its place in the queue.
    pub seq: u64,
    /// Its idempotency key's entry (`model/key`), deleted with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// A job waiting in the queue, as the dispatcher keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub seq: u64,
    pub id: String,
    pub model: String,
    pub submitted_ms: u64,
}

impl From<&Job> for Pending {
    fn from(j: &Job) -> Self {
        Self { seq: j.seq, id: j.id.clone(), model: j.model.clone(), submitted_ms: j.submitted_ms }
    }
}

/// A new job as a front end hands it over.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub model: String,
    pub protocol: Protocol,
    pub body: Vec<u8>,
    /// The client's `Idempotency-Key`: the same key for the same model gives the same job.
    pub key: Option<String>,
    pub callback_url: Option<String>,
}

/// How a job ends.
#[derive(Debug, Clone)]
pub enum Outcome {
    Done(serde_json::Value),
    Failed(JobError),
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("the job store failed: {0}")]
    Failed(String),
    /// A request too large for the queue (SQS messages: 256 KiB).
    #[error("the request is {0} bytes as a queue message; the queue takes at most {1}")]
    TooLarge(usize, usize),
}

impl StoreError {
    pub(crate) fn from<E: std::fmt::Display>(e: E) -> Self {
        Self::Failed(e.to_string())
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

enum Op {
    Submit(NewJob),
    Start(String),
    Finish(String, Outcome),
    Requeue { id: String, counted: bool },
    Sweep { before_ms: u64 },
}

enum Done {
    /// The job, and whether it existed already (an idempotent retry).
    Submitted(Job, bool),
    /// The job and its body; `None` when it has ended already (or is gone).
    Started(Option<(Job, Vec<u8>)>),
    /// The ended job; `None` when it had ended already: its first result stands.
    Finished(Option<Job>),
    Requeued,
    Swept(usize),
}

type Reply = oneshot::Sender<Result<Done, StoreError>>;

/// The store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    ops: Sender<(Op, Reply)>,
}

/// What opening found: the jobs to run, and those a crash left to fail for good.
pub struct Opened {
    pub store: Store,
    /// Jobs still to run, in queue order.
    pub pending: Vec<Pending>,
    /// Jobs found running (their node died) that had no attempts left: now failed.
    pub dead: Vec<Job>,
}

impl Store {
    /// Opens (or creates) `dir/jobs.redb`. Jobs that were running when the last process stopped
    /// go back to the queue, with that attempt counted; those with no attempts left fail.
    pub fn open(dir: &Path, max_attempts: u32) -> Result<Opened, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Failed(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join("jobs.redb");
        let db =
            Database::create(&path).map_err(|e| StoreError::Failed(format!("cannot open {}: {e}", path.display())))?;
        let db = Arc::new(db);
        let (pending, dead) = recover(&db, max_attempts)?;
        let next_seq = pending.last().map_or(0, |p| p.seq + 1);
        let (ops, rx) = unbounded();
        let writer = db.clone();
        std::thread::Builder::new()
            .name("stowage-jobs-store".into())
            .spawn(move || write_loop(&writer, &rx, next_seq))
            .map_err(StoreError::from)?;
        Ok(Opened { store: Store { db, ops }, pending, dead })
    }

    async fn call(&self, op: Op) -> Result<Done, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.ops.send((op, tx)).map_err(|_| StoreError::Failed("the store's writer has stopped".into()))?;
        rx.await.map_err(|_| StoreError::Failed("the store's writer has stopped".into()))?
    }

    /// Stores a new job (on disk when this returns), or finds the one its idempotency key names:
    /// `(job, true)` then.
    pub async fn submit(&self, job: NewJob) -> Result<(Job, bool), StoreError> {
        match self.call(Op::Submit(job)).await? {
            Done::Submitted(j, existed) => Ok((j, existed)),
            _ => unreachable!("submit answers Submitted"),
        }
    }

    /// Marks a job running and counts the attempt; its body to run. `None`: it has ended.
    pub async fn start(&self, id: &str) -> Result<Option<(Job, Vec<u8>)>, StoreError> {
        match self.call(Op::Start(id.to_string())).await? {
            Done::Started(s) => Ok(s),
            _ => unreachable!("start answers Started"),
        }
    }

    /// Stores a job's result and takes it off the queue, in one transaction. `None`: it had
    /// ended already, and keeps its first result.
    pub async fn finish(&self, id: &str, outcome: Outcome) -> Result<Option<Job>, StoreError> {
        match self.call(Op::Finish(id.to_string(), outcome)).await? {
            Done::Finished(j) => Ok(j),
            _ => unreachable!("finish answers Finished"),
        }
    }

    /// Puts a running job back in the queue; `counted: false` takes back the attempt (it never
    /// reached the model: a full queue, a model still loading).
    pub async fn requeue(&self, id: &str, counted: bool) -> Result<(), StoreError> {
        self.call(Op::Requeue { id: id.to_string(), counted }).await.map(|_| ())
    }

    /// Deletes the jobs that ended before `before_ms` (at most `MAX_SWEEP`), with their
    /// idempotency keys.
    pub async fn sweep(&self, before_ms: u64) -> Result<usize, StoreError> {
        match self.call(Op::Sweep { before_ms }).await? {
            Done::Swept(n) => Ok(n),
            _ => unreachable!("sweep answers Swept"),
        }
    }

    /// A job as stored now.
    pub fn get(&self, id: &str) -> Result<Option<Job>, StoreError> {
        let tx = self.db.begin_read().map_err(StoreError::from)?;
        let jobs = tx.open_table(JOBS).map_err(StoreError::from)?;
        let found = jobs.get(id).map_err(StoreError::from)?;
        found.map(|v| decode(v.value())).transpose()
    }
}

fn decode(bytes: &[u8]) -> Result<Job, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Failed(format!("a stored job does not parse: {e}")))
}

fn encode(job: &Job) -> Vec<u8> {
    serde_json::to_vec(job).expect("a job serializes")
}

/// The queue after a restart; running jobs go back (or fail, without attempts left).
fn recover(db: &Database, max_attempts: u32) -> Result<(Vec<Pending>, Vec<Job>), StoreError> {
    let mut tx = db.begin_write().map_err(StoreError::from)?;
    tx.set_durability(Durability::Immediate).map_err(StoreError::from)?;
    let mut pending = Vec::new();
    let mut dead = Vec::new();
    {
        let queue: Vec<(u64, String)> = {
            let t = tx.open_table(PENDING).map_err(StoreError::from)?;
            let rows = t.iter().map_err(StoreError::from)?;
            rows.map(|r| r.map(|(k, v)| (k.value(), v.value().to_string())))
                .collect::<Result<_, _>>()
                .map_err(StoreError::from)?
        };
        for (seq, id) in queue {
            let Some(mut job) = load(&tx, &id)? else {
                tx.open_table(PENDING).map_err(StoreError::from)?.remove(seq).map_err(StoreError::from)?;
                continue;
            };
            if job.status == Status::Running {
                if job.attempts >= max_attempts {
                    let why = format!(
                        "the node stopped while running it, {} time{}; the job is not tried again",
                        job.attempts,
                        if job.attempts == 1 { "" } else { "s" }
                    );
                    let failed =
                        end(&tx, &id, Outcome::Failed(JobError { code: "inference_failed".into(), error: why }))?;
                    dead.extend(failed);
                    continue;
                }
                job.status = Status::Queued;
                save(&tx, &job)?;
            }
            pending.push(Pending::from(&job));
        }
    }
    tx.commit().map_err(StoreError::from)?;
    Ok((pending, dead))
}

fn load(tx: &WriteTransaction, id: &str) -> Result<Option<Job>, StoreError> {
    let t = tx.open_table(JOBS).map_err(StoreError::from)?;
    let v = t.get(id).map_err(StoreError::from)?;
    v.map(|v| decode(v.value())).transpose()
}

fn save(tx: &WriteTransaction, job: &Job) -> Result<(), StoreError> {
    let mut t = tx.open_table(JOBS).map_err(StoreError::from)?;
    t.insert(job.id.as_str(), encode(job).as_slice()).map_err(StoreError::from)?;
    Ok(())
}

fn expiry_key(finished_ms: u64, id: &str) -> String {
    format!("{finished_ms:020}/{id}")
}

fn key_of(model: &str, key: &str) -> String {
    format!("{model}/{key}")
}

/// Ends a job that has not ended: its result in, its body and queue place out.
fn end(tx: &WriteTransaction, id: &str, outcome: Outcome) -> Result<Option<Job>, StoreError> {
    let Some(mut job) = load(tx, id)? else { return Ok(None) };
    if job.status.is_final() {
        return Ok(None);
    }
    let now = now_ms();
    job.status = match outcome {
        Outcome::Done(v) => {
            job.result = Some(v);
            Status::Done
        }
        Outcome::Failed(e) => {
            job.error = Some(e);
            Status::Failed
        }
    };
    job.finished_ms = Some(now);
    save(tx, &job)?;
    tx.open_table(BODIES).map_err(StoreError::from)?.remove(id).map_err(StoreError::from)?;
    tx.open_table(PENDING).map_err(StoreError::from)?.remove(job.seq).map_err(StoreError::from)?;
    tx.open_table(EXPIRY)
        .map_err(StoreError::from)?
        .insert(expiry_key(now, id).as_str(), ())
        .map_err(StoreError::from)?;
    Ok(Some(job))
}

fn apply(tx: &WriteTransaction, op: Op, next_seq: &mut u64) -> Result<Done, StoreError> {
    match op {
        Op::Submit(new) => {
            let key = new.key.as_deref().map(|k| key_of(&new.model, k));
            if let Some(k) = &key {
                let existing = tx
                    .open_table(KEYS)
                    .map_err(StoreError::from)?
                    .get(k.as_str())
                    .map_err(StoreError::from)?
                    .map(|v| v.value().to_string());
                if let Some(id) = existing {
                    if let Some(job) = load(tx, &id)? {
                        return Ok(Done::Submitted(job, true));
                    }
                }
            }
            let id = format!("{}.{:032x}", new.model, rand::random::<u128>());
            let seq = *next_seq;
            *next_seq += 1;
            let job = Job {
                id: id.clone(),
                model: new.model,
                protocol: new.protocol,
                status: Status::Queued,
                attempts: 0,
                submitted_ms: now_ms(),
                finished_ms: None,
                result: None,
                error: None,
                callback_url: new.callback_url,
                seq,
                key: key.clone(),
            };
            save(tx, &job)?;
            tx.open_table(BODIES)
                .map_err(StoreError::from)?
                .insert(id.as_str(), new.body.as_slice())
                .map_err(StoreError::from)?;
            tx.open_table(PENDING).map_err(StoreError::from)?.insert(seq, id.as_str()).map_err(StoreError::from)?;
            if let Some(k) = &key {
                tx.open_table(KEYS)
                    .map_err(StoreError::from)?
                    .insert(k.as_str(), id.as_str())
                    .map_err(StoreError::from)?;
            }
            Ok(Done::Submitted(job, false))
        }
        Op::Start(id) => {
            let Some(mut job) = load(tx, &id)? else { return Ok(Done::Started(None)) };
            if job.status.is_final() {
                return Ok(Done::Started(None));
            }
            let body = tx
                .open_table(BODIES)
                .map_err(StoreError::from)?
                .get(id.as_str())
                .map_err(StoreError::from)?
                .map(|v| v.value().to_vec());
            let Some(body) = body else { return Ok(Done::Started(None)) };
            job.status = Status::Running;
            job.attempts += 1;
            save(tx, &job)?;
            Ok(Done::Started(Some((job, body))))
        }
        Op::Finish(id, outcome) => Ok(Done::Finished(end(tx, &id, outcome)?)),
        Op::Requeue { id, counted } => {
            if let Some(mut job) = load(tx, &id)? {
                if job.status == Status::Running {
                    job.status = Status::Queued;
                    if !counted {
                        job.attempts = job.attempts.saturating_sub(1);
                    }
                    save(tx, &job)?;
                }
            }
            Ok(Done::Requeued)
        }
        Op::Sweep { before_ms } => {
            let old: Vec<String> = {
                let t = tx.open_table(EXPIRY).map_err(StoreError::from)?;
                let end = expiry_key(before_ms, "");
                let rows = t.range(..end.as_str()).map_err(StoreError::from)?;
                rows.take(MAX_SWEEP)
                    .map(|r| r.map(|(k, _)| k.value().to_string()))
                    .collect::<Result<_, _>>()
                    .map_err(StoreError::from)?
            };
            for k in &old {
                tx.open_table(EXPIRY).map_err(StoreError::from)?.remove(k.as_str()).map_err(StoreError::from)?;
                let id = k.split_once('/').map_or("", |(_, id)| id);
                if let Some(key) = load(tx, id)?.and_then(|j| j.key) {
                    tx.open_table(KEYS).map_err(StoreError::from)?.remove(key.as_str()).map_err(StoreError::from)?;
                }
                tx.open_table(JOBS).map_err(StoreError::from)?.remove(id).map_err(StoreError::from)?;
            }
            Ok(Done::Swept(old.len()))
        }
    }
}

/// The writer: takes what has queued up (at most `MAX_GROUP`), applies it in one durable
/// transaction, answers each. A failed transaction fails all of its changes, none half-made.
fn write_loop(db: &Database, rx: &Receiver<(Op, Reply)>, mut next_seq: u64) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(op) => group.push(op),
                Err(_) => break,
            }
        }
        let (ops, replies): (Vec<Op>, Vec<Reply>) = group.into_iter().unzip();
        match commit_group(db, ops, &mut next_seq) {
            Ok(done) => {
                for (d, r) in done.into_iter().zip(replies) {
                    let _ = r.send(Ok(d));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "the job store could not commit");
                for r in replies {
                    let _ = r.send(Err(e.clone()));
                }
            }
        }
    }
}

fn commit_group(db: &Database, ops: Vec<Op>, next_seq: &mut u64) -> Result<Vec<Done>, StoreError> {
    let mut tx = db.begin_write().map_err(StoreError::from)?;
    tx.set_durability(Durability::Immediate).map_err(StoreError::from)?;
    let done = ops.into_iter().map(|op| apply(&tx, op, next_seq)).collect::<Result<Vec<_>, _>>()?;
    tx.commit().map_err(StoreError::from)?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(model: &str, key: Option<&str>) -> NewJob {
        NewJob {
            model: model.into(),
            protocol: Protocol::Predictions,
            body: br#"{"inputs":"hi"}"#.to_vec(),
            key: key.map(String::from),
            callback_url: None,
        }
    }

    /// The store as a crash leaves it: its file copied while the process still runs.
    fn crashed(from: &Path) -> tempfile::TempDir {
        let to = tempfile::tempdir().unwrap();
        std::fs::copy(from.join("jobs.redb"), to.path().join("jobs.redb")).unwrap();
        to
    }

    #[tokio::test]
    async fn an_idempotency_key_gives_the_same_job_per_model() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), 3).unwrap().store;
        let (a, existed) = s.submit(new("m1", Some("k"))).await.unwrap();
        assert!(!existed);
        assert!(a.id.starts_with("m1."), "{}", a.id);
        let (b, existed) = s.submit(new("m1", Some("k"))).await.unwrap();
        assert!(existed);
        assert_eq!(a.id, b.id);
        // Another model's same key, or no key, is another job.
        assert_ne!(s.submit(new("m2", Some("k"))).await.unwrap().0.id, a.id);
        assert_ne!(s.submit(new("m1", None)).await.unwrap().0.id, a.id);
    }

    #[tokio::test]
    async fn a_job_ends_once_and_keeps_its_first_result() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), 3).unwrap().store;
        let (job, _) = s.submit(new("m", None)).await.unwrap();
        let (started, body) = s.start(&job.id).await.unwrap().unwrap();
        assert_eq!((started.status, started.attempts), (Status::Running, 1));
        assert_eq!(body, br#"{"inputs":"hi"}"#);
        let done = s.finish(&job.id, Outcome::Done(serde_json::json!({"n": 1}))).await.unwrap().unwrap();
        assert_eq!(done.status, Status::Done);
        assert!(s.finish(&job.id, Outcome::Done(serde_json::json!({"n": 2}))).await.unwrap().is_none());
        assert!(s.start(&job.id).await.unwrap().is_none(), "an ended job does not run again");
        let stored = s.get(&job.id).unwrap().unwrap();
        assert_eq!(stored.result, Some(serde_json::json!({"n": 1})));
        assert!(stored.finished_ms.is_some());
        assert!(s.get("m.nope").unwrap().is_none());
    }

    #[tokio::test]
    async fn a_crash_loses_nothing_accepted_and_counts_the_attempt_it_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), 2).unwrap().store;
        let mut ids = Vec::new();
        for _ in 0..5 {
            ids.push(s.submit(new("m", None)).await.unwrap().0.id);
        }
        s.start(&ids[0]).await.unwrap().unwrap();
        s.finish(&ids[0], Outcome::Done(serde_json::json!(0))).await.unwrap();
        s.start(&ids[1]).await.unwrap().unwrap();
        // ids[2] ran once before, was put back, and runs again when the node dies.
        s.start(&ids[2]).await.unwrap().unwrap();
        s.requeue(&ids[2], true).await.unwrap();
        s.start(&ids[2]).await.unwrap().unwrap();

        let after = crashed(dir.path());
        let opened = Store::open(after.path(), 2).unwrap();
        let pending: Vec<&str> = opened.pending.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(pending, [&ids[1], &ids[3], &ids[4]], "queue order kept, the ended job gone");
        let j1 = opened.store.get(&ids[1]).unwrap().unwrap();
        assert_eq!((j1.status, j1.attempts), (Status::Queued, 1));
        // Two attempts of two: it fails (dead letter) instead of running a third time.
        assert_eq!(opened.dead.len(), 1);
        let dead = opened.store.get(&ids[2]).unwrap().unwrap();
        assert_eq!(dead.status, Status::Failed);
        assert!(dead.error.unwrap().error.contains("stopped while running it, 2 times"));
        // New jobs queue behind the old ones.
        let (later, _) = opened.store.submit(new("m", None)).await.unwrap();
        assert!(later.seq > opened.pending.last().unwrap().seq);
    }

    #[tokio::test]
    async fn a_requeue_that_never_reached_the_model_takes_the_attempt_back() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), 3).unwrap().store;
        let (job, _) = s.submit(new("m", None)).await.unwrap();
        s.start(&job.id).await.unwrap();
        s.requeue(&job.id, false).await.unwrap();
        let j = s.get(&job.id).unwrap().unwrap();
        assert_eq!((j.status, j.attempts), (Status::Queued, 0));
    }

    #[tokio::test]
    async fn sweeping_deletes_old_results_and_their_keys() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), 3).unwrap().store;
        let (old, _) = s.submit(new("m", Some("k"))).await.unwrap();
        let (running, _) = s.submit(new("m", None)).await.unwrap();
        s.start(&old.id).await.unwrap();
        s.finish(&old.id, Outcome::Failed(JobError { code: "invalid_input".into(), error: "no".into() }))
            .await
            .unwrap();
        s.start(&running.id).await.unwrap();
        assert_eq!(s.sweep(now_ms() + 1).await.unwrap(), 1);
        assert!(s.get(&old.id).unwrap().is_none());
        assert!(s.get(&running.id).unwrap().is_some(), "a job that has not ended is never swept");
        // Its key is free again: a new job.
        let (again, existed) = s.submit(new("m", Some("k"))).await.unwrap();
        assert!(!existed);
        assert_ne!(again.id, old.id);
    }

    #[tokio::test]
    async fn many_submissions_commit_in_groups() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), 3).unwrap().store;
        let all = futures_util::future::join_all((0..300).map(|_| s.submit(new("m", None)))).await;
        let ids: std::collections::HashSet<String> = all.into_iter().map(|r| r.unwrap().0.id).collect();
        assert_eq!(ids.len(), 300);
        let after = crashed(dir.path());
        assert_eq!(Store::open(after.path(), 3).unwrap().pending.len(), 300);
    }
}

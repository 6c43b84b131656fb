//! Asynchronous requests on real processes (docs/http-api.md, "Asynchronous requests"): a node
//! killed with SIGKILL twice while it takes 1,000 jobs, and once more with a backlog, loses
//! none, runs each to one
//! stored result equal to what /predictions answers, and gives a resubmitted Idempotency-Key its
//! original id; KServe v2's `Prefer: respond-async` and callbacks; the gateway routes both.

use std::collections::{HashMap, HashSet};
use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{free_port, stowage, wait_ok, Proc};

const MODELS: [&str; 4] = ["tiny-0001", "tiny-0002", "tiny-0003", "tiny-0004"];

fn synth(dir: &Path, count: usize) {
    let out = stowage().args(["synth", "--count", &count.to_string(), "--out"]).arg(dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A node on `port` serving the catalog in `models`, its queue in `queue`.
fn node(models: &Path, queue: &Path, port: u16, flags: &[&str]) -> Proc {
    let child = stowage()
        .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string(), "--catalog"])
        .arg(models.join("models.toml"))
        .arg("--async-dir")
        .arg(queue)
        .args(flags)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut node = Proc(child);
    wait_ok(&format!("http://127.0.0.1:{port}/ready"), &mut node);
    node
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// Status, headers we look at, and JSON body of a request.
fn call(
    req: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<(u16, Option<String>, Value), ureq::Error> {
    let mut r = req?;
    let replayed = r.headers().get("idempotent-replayed").and_then(|v| v.to_str().ok()).map(String::from);
    let status = r.status().as_u16();
    Ok((status, replayed, r.body_mut().read_json().unwrap_or_default()))
}

fn submit(
    a: &ureq::Agent,
    base: &str,
    model: &str,
    key: &str,
    text: &str,
) -> Result<(u16, Option<String>, Value), ureq::Error> {
    call(
        a.post(format!("{base}/async/predictions/{model}"))
            .header("Idempotency-Key", key)
            .send_json(json!({"inputs": text})),
    )
}

/// Scores equal within float noise (a job may share an engine call, and its padding, with others).
fn same_answer(a: &Value, b: &Value) -> bool {
    let (pa, pb) = (&a["predictions"], &b["predictions"]);
    a["model"] == b["model"]
        && pa.as_array().map(Vec::len) == pb.as_array().map(Vec::len)
        && pa.as_array().unwrap().iter().zip(pb.as_array().unwrap()).all(|(x, y)| {
            x["label"] == y["label"] && (x["score"].as_f64().unwrap() - y["score"].as_f64().unwrap()).abs() < 1e-5
        })
}

#[test]
fn sigkill_twice_loses_no_accepted_job_and_runs_each_to_one_result() {
    let dir = tempfile::tempdir().unwrap();
    let (models, queue) = (dir.path().join("m"), dir.path().join("q"));
    synth(&models, 4);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let a = agent();
    let text = |i: usize| format!("review {} of the product, number {}", i % 25, i % 7);
    let mut proc = node(&models, &queue, port, &[]);
    // Key → id of every accepted job; a submission the dying node did not answer is sent again,
    // with its key, once the node is back (as a client would).
    let mut ids: HashMap<String, String> = HashMap::new();
    let mut replays = 0;
    let n = 1000;
    for i in 0..n {
        if i == 300 || i == 700 {
            let _ = proc.0.kill(); // SIGKILL: no drain, no flush
            let _ = proc.0.wait();
            proc = node(&models, &queue, port, &[]);
        }
        let (model, key) = (MODELS[i % 4], format!("key-{i}"));
        let (status, _, body) = match submit(&a, &base, model, &key, &text(i)) {
            Ok(r) => r,
            Err(e) => panic!("submission {i}: {e}"),
        };
        assert_eq!(status, 202, "{body}");
        ids.insert(key, body["id"].as_str().unwrap().to_string());
        // Now and then a client retries one already accepted, before or after a kill.
        if i % 97 == 0 {
            let (status, replayed, again) =
                submit(&a, &base, MODELS[(i / 2) % 4], &format!("key-{}", i / 2), &text(i / 2)).unwrap();
            assert_eq!((status, replayed.as_deref()), (202, Some("true")), "{again}");
            assert_eq!(again["id"].as_str(), ids.get(&format!("key-{}", i / 2)).map(String::as_str));
            replays += 1;
        }
    }
    assert!(replays > 5);
    assert_eq!(ids.values().collect::<HashSet<_>>().len(), n, "one job per key");
    // Every job to check: its key, model and text.
    let mut jobs: Vec<(String, &str, String)> = (0..n).map(|i| (format!("key-{i}"), MODELS[i % 4], text(i))).collect();
    // Killed once more while the queue drains. A node can run jobs as fast as one client
    // submits them, so bursts from several clients build a backlog first: the kill must find
    // jobs still waiting, or the test would show nothing.
    let mut backlog = false;
    for round in 0..20 {
        let burst: Vec<Vec<(String, &str, String, String)>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|t| {
                    let (a, base) = (&a, &base);
                    s.spawn(move || {
                        (0..40)
                            .map(|j| {
                                let (key, model, text) = (format!("burst-{round}-{t}-{j}"), MODELS[j % 4], text(j));
                                let (status, _, body) = submit(a, base, model, &key, &text).unwrap();
                                assert_eq!(status, 202, "{body}");
                                (key, model, text, body["id"].as_str().unwrap().to_string())
                            })
                            .collect()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (key, model, text, id) in burst.into_iter().flatten() {
            ids.insert(key.clone(), id);
            jobs.push((key, model, text));
        }
        let last = &ids[&jobs.last().unwrap().0];
        let (_, _, job) = call(a.get(format!("{base}/async/results/{last}")).call()).unwrap();
        if job["status"] != "done" {
            backlog = true;
            break;
        }
    }
    assert!(backlog, "the queue drained before every kill: the test would show nothing");
    let _ = proc.0.kill();
    let _ = proc.0.wait();
    let _proc = node(&models, &queue, port, &[]);

    let mut sync: HashMap<(String, String), Value> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut pending: Vec<&(String, &str, String)> = jobs.iter().collect();
    while !pending.is_empty() {
        assert!(Instant::now() < deadline, "{} jobs not done in 240 s", pending.len());
        let mut still = Vec::new();
        for entry in pending {
            let (key, model, text) = entry;
            let id = &ids[key];
            let (status, _, job) = call(a.get(format!("{base}/async/results/{id}")).call()).unwrap();
            assert_eq!(status, 200, "{job}");
            match job["status"].as_str().unwrap() {
                "done" => {
                    assert_eq!(job["model"], *model);
                    assert!(job["attempts"].as_u64().unwrap() >= 1, "{job}");
                    let want = sync.entry((model.to_string(), text.clone())).or_insert_with(|| {
                        let r = a.post(format!("{base}/predictions/{model}")).send_json(json!({"inputs": text}));
                        call(r).unwrap().2
                    });
                    assert!(same_answer(&job["result"], want), "{job} vs {want}");
                }
                "queued" | "running" => still.push(entry),
                other => panic!("job {id} ended {other}: {job}"),
            }
        }
        pending = still;
        std::thread::sleep(Duration::from_millis(100));
    }
    // After everything ran, a resubmitted key still gives its original id, and runs nothing new.
    let (status, replayed, again) = submit(&a, &base, MODELS[1], "key-1", &text(1)).unwrap();
    assert_eq!((status, replayed.as_deref(), again["status"].as_str()), (202, Some("true"), Some("done")));
    assert_eq!(again["id"].as_str(), Some(ids["key-1"].as_str()));
    let metrics = a.get(format!("{base}/metrics")).call().unwrap().body_mut().read_to_string().unwrap();
    assert!(metrics.contains("stowage_async_oldest_queued_seconds 0"), "the queue is empty");
}

/// Accepts one HTTP POST on `listener` and returns its JSON body (answering 200).
fn receive_one(listener: &TcpListener) -> Value {
    let (mut s, _) = listener.accept().unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let (_, body) = crate::common::read_request(&mut r).unwrap();
    s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").unwrap();
    serde_json::from_slice(&body).unwrap()
}

#[test]
fn kserve_v2_async_calls_back_and_the_gateway_routes_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let (models, queue) = (dir.path().join("m"), dir.path().join("q"));
    synth(&models, 2);
    let hook = TcpListener::bind("127.0.0.1:0").unwrap();
    let hook_url = format!("http://{}/done", hook.local_addr().unwrap());
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _node = node(&models, &queue, port, &["--async-callback-url", &hook_url, "--async-request-callbacks"]);
    let a = agent();
    let infer =
        json!({"id": "r1", "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["fine day"]}]});

    let r = a.post(format!("{base}/v2/models/tiny-0001/infer")).header("Prefer", "respond-async").send_json(&infer);
    let (status, _, accepted) = call(r).unwrap();
    assert_eq!(status, 202, "{accepted}");
    let called = receive_one(&hook);
    assert_eq!(called["id"], accepted["id"]);
    assert_eq!(called["status"], "done", "{called}");
    let direct = call(a.post(format!("{base}/v2/models/tiny-0001/infer")).send_json(&infer)).unwrap().2;
    assert_eq!(called["result"]["outputs"][0]["name"], direct["outputs"][0]["name"]);
    assert_eq!(called["result"]["id"], "r1");
    let url = format!("{base}{}", accepted["status_url"].as_str().unwrap());
    assert_eq!(call(a.get(&url).call()).unwrap().2, called, "the callback is the stored result");

    // Binary tensors are refused up front, as are callbacks that are not http:// URLs.
    let binary = json!({"inputs": infer["inputs"], "parameters": {"binary_data_output": true}});
    let r = a.post(format!("{base}/v2/models/tiny-0001/infer")).header("Prefer", "respond-async").send_json(&binary);
    assert_eq!(call(r).unwrap().0, 400);
    let r = a
        .post(format!("{base}/async/predictions/tiny-0001"))
        .send_json(json!({"inputs": "x", "callback_url": "file:///etc"}));
    assert_eq!(call(r).unwrap().2["code"], "malformed_request");

    // Through a gateway: submitted by model, read back by id.
    let routes = dir.path().join("routes.json");
    std::fs::write(&routes, json!({"tiny-0001": base, "tiny-0002": base}).to_string()).unwrap();
    let gport = free_port();
    let gateway = stowage()
        .args(["gateway", "--host", "127.0.0.1", "--port", &gport.to_string(), "--routes"])
        .arg(&routes)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut gateway = Proc(gateway);
    let gbase = format!("http://127.0.0.1:{gport}");
    wait_ok(&format!("{gbase}/ready"), &mut gateway);
    let r = a.post(format!("{gbase}/async/predictions/tiny-0002")).send_json(json!({"inputs": "via the gateway"}));
    let (status, _, accepted) = call(r).unwrap();
    assert_eq!(status, 202, "{accepted}");
    let called = receive_one(&hook);
    assert_eq!((called["id"].clone(), called["status"].as_str()), (accepted["id"].clone(), Some("done")));
    let url = format!("{gbase}{}", accepted["status_url"].as_str().unwrap());
    assert_eq!(call(a.get(&url).call()).unwrap().2["status"], "done");
    let (status, _, e) = call(a.get(format!("{gbase}/async/results/nope.123")).call()).unwrap();
    assert_eq!((status, e["code"].as_str()), (404, Some("unknown_job")));
}

/// `<Tag>value</Tag>` out of an XML answer.
fn xml_value(xml: &str, tag: &str) -> Option<String> {
    let start = xml.find(&format!("<{tag}>"))? + tag.len() + 2;
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(xml[start..end].to_string())
}

/// The loopback server tells the services apart by the credential scope of the signature (and
/// does not check signatures).
const SQS_AUTH: &str =
    "AWS4-HMAC-SHA256 Credential=test/20261206/us-east-1/sqs/aws4_request, SignedHeaders=host, Signature=0";
const S3_AUTH: &str =
    "AWS4-HMAC-SHA256 Credential=test/20261206/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0";

/// The bucket `jobs` and a queue called `name` on the loopback server; the queue's URL.
fn bucket_and_queue(a: &ureq::Agent, s3: &crate::s3::S3Server, name: &str) -> String {
    assert_eq!(a.put(format!("{}/jobs", s3.url())).send_empty().unwrap().status().as_u16(), 200);
    let mut r = a
        .post(s3.url())
        .header("Authorization", SQS_AUTH)
        .send_form([("Action", "CreateQueue"), ("QueueName", name)])
        .unwrap();
    let xml = r.body_mut().read_to_string().unwrap();
    xml_value(&xml, "QueueUrl").unwrap_or_else(|| panic!("no queue: {xml}"))
}

#[test]
fn sqs_and_s3_lose_nothing_to_a_sigkill() {
    let Some(s3) = crate::s3::s3_server() else { return };
    let a = agent();
    let queue = bucket_and_queue(&a, &s3, "node-a");

    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("m");
    synth(&models, 2);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let start = || {
        let child = crate::s3::stowage_s3()
            .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string(), "--catalog"])
            .arg(models.join("models.toml"))
            .args(["--async-queue-url", &queue, "--async-results", "s3://jobs/results/", "--s3-endpoint", &s3.url()])
            .args(["--async-visibility-timeout-seconds", "2"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut p = Proc(child);
        wait_ok(&format!("{base}/ready"), &mut p);
        p
    };
    let mut proc = start();
    let text = |i: usize| format!("parcel {} arrived {}", i % 5, ["late", "early", "damaged"][i % 3]);
    let mut ids = Vec::new();
    let n = 60;
    for i in 0..n {
        if i == n / 2 {
            let _ = proc.0.kill();
            let _ = proc.0.wait();
            proc = start();
        }
        let (status, _, body) = submit(&a, &base, MODELS[i % 2], &format!("k{i}"), &text(i)).unwrap();
        assert_eq!(status, 202, "{body}");
        ids.push(body["id"].as_str().unwrap().to_string());
    }
    // A resubmitted key names the same job, before it has run too.
    let (status, replayed, again) = submit(&a, &base, MODELS[1], "k1", &text(1)).unwrap();
    assert_eq!((status, replayed.as_deref(), again["id"].as_str()), (202, Some("true"), Some(ids[1].as_str())));
    let last = call(a.get(format!("{base}/async/results/{}", ids[n - 1])).call()).unwrap().2;
    assert_ne!(last["status"], "done", "the queue drained before the kill: the test would show nothing");
    let _ = proc.0.kill(); // with jobs in the queue and, likely, one received
    let _ = proc.0.wait();
    let _proc = start();
    let deadline = Instant::now() + Duration::from_secs(120);
    for (i, id) in ids.iter().enumerate() {
        let job = loop {
            let (status, _, job) = call(a.get(format!("{base}/async/results/{id}")).call()).unwrap();
            assert_eq!(status, 200, "{job}");
            if job["status"] == "done" || job["status"] == "failed" {
                break job;
            }
            assert!(Instant::now() < deadline, "job {id} not done in 120 s: {job}");
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(job["status"], "done", "{job}");
        let model = MODELS[i % 2];
        let want = call(a.post(format!("{base}/predictions/{model}")).send_json(json!({"inputs": text(i)}))).unwrap().2;
        assert!(same_answer(&job["result"], &want), "{job} vs {want}");
        // The document is the S3 object itself.
        let mut r =
            a.get(format!("{}/jobs/results/{id}.json", s3.url())).header("Authorization", S3_AUTH).call().unwrap();
        let stored = r.body_mut().read_to_string().unwrap();
        let stored: Value = serde_json::from_str(&stored).unwrap_or_else(|e| panic!("{e}: {} {stored}", r.status()));
        assert_eq!(stored["status"], "done");
    }
    let (status, _, e) = call(a.get(format!("{base}/async/results/tiny-0001.0000")).call()).unwrap();
    assert_eq!((status, e["code"].as_str()), (404, Some("unknown_job")));
}

/// A running SQS job stays invisible past the visibility timeout while its node holds it, and
/// comes back (a second receive) once the node lets go without deleting it.
#[tokio::test]
async fn a_running_sqs_job_stays_invisible_while_it_runs() {
    use stowage_node::jobs::sqs::{AwsQueue, Sqs};
    use stowage_node::jobs::{NewJob, Protocol};
    let Some(s3) = crate::s3::s3_server() else { return };
    let a = agent();
    let queue = bucket_and_queue(&a, &s3, "held");
    for (k, v) in [("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"), ("AWS_REGION", "us-east-1")] {
        // SAFETY: this test's own process (nextest runs each test alone); nothing reads the
        // environment on another thread yet.
        unsafe { std::env::set_var(k, v) };
    }
    let q = Sqs::connect(&AwsQueue {
        queue_url: queue,
        results: "s3://jobs/r/".into(),
        endpoint: Some(s3.url()),
        visibility: Duration::from_secs(2),
    })
    .await
    .unwrap();
    let new = NewJob {
        model: "m".into(),
        protocol: Protocol::Predictions,
        body: br#"{"inputs":"x"}"#.to_vec(),
        key: None,
        callback_url: None,
    };
    q.submit(new).await.unwrap();
    let first = q.next().await.unwrap().expect("the job");
    // Held for 4 s (twice the timeout): nobody else receives it meanwhile.
    let held = tokio::time::timeout(Duration::from_secs(4), async {
        tokio::select! {
            never = q.hold(&first) => match never {},
            again = async {
                tokio::time::sleep(Duration::from_secs(2)).await;
                q.next().await.unwrap()
            } => again,
        }
    })
    .await;
    let seen = match held {
        Ok(again) => again.map(|r| r.id().to_string()),
        Err(_) => None,
    };
    assert_eq!(seen, None, "received again while held");
    // Let go: it comes back after the timeout.
    let deadline = Instant::now() + Duration::from_secs(10);
    let again = loop {
        if let Some(r) = q.next().await.unwrap() {
            break r;
        }
        assert!(Instant::now() < deadline, "never came back");
    };
    assert_eq!(again.id(), first.id());
}

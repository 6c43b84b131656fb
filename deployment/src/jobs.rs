//! `stowage manifests --async-queue-url`: each node takes asynchronous requests on its own SQS
//! queue, with the results in S3 (docs/http-api.md, "Asynchronous requests"): the node's
//! settings (environment variables of its container), a KEDA `aws-sqs-queue` trigger on the
//! queue's depth in the node's ScaledObject (beside the in-flight trigger of `--keda-inflight`),
//! and the TriggerAuthentication through which KEDA reads the queue with the node's own IAM role
//! (IRSA).

use serde_json::{json, Value};
use stowage_core::PlanNode;

/// The TriggerAuthentication every node's SQS trigger names.
pub const TRIGGER_AUTH: &str = "stowage-aws";

/// Default of `--async-queue-length`.
pub const DEFAULT_QUEUE_LENGTH: u32 = 50;

#[derive(Debug, Clone, PartialEq)]
pub struct AsyncQueueOptions {
    /// The queue of each node: `{node}` is its id.
    pub queue_url: String,
    /// `s3://bucket/prefix/` for the jobs' documents.
    pub results: String,
    pub region: String,
    /// Messages per replica KEDA aims at.
    pub queue_length: u32,
    /// Messages below which KEDA leaves a node at its minimum replicas.
    pub activation_queue_length: u32,
    pub visibility_seconds: u64,
}

impl AsyncQueueOptions {
    /// Node `node`'s queue URL.
    pub fn queue_of(&self, node: &str) -> String {
        self.queue_url.replace("{node}", node)
    }

    /// The node container's settings, as `stowage serve` reads them.
    pub fn env(&self, node: &str) -> Vec<(&'static str, String)> {
        vec![
            ("STOWAGE_ASYNC_QUEUE_URL", self.queue_of(node)),
            ("STOWAGE_ASYNC_RESULTS", self.results.clone()),
            ("STOWAGE_ASYNC_VISIBILITY_TIMEOUT_SECONDS", self.visibility_seconds.to_string()),
        ]
    }
}

/// The region of an SQS queue URL (`https://sqs.REGION.amazonaws.com/ACCOUNT/NAME`).
pub fn region_of(queue_url: &str) -> Option<String> {
    let host = queue_url.split("://").nth(1)?.split('/').next()?;
    let region = host.strip_prefix("sqs.")?.split('.').next()?;
    (!region.is_empty()).then(|| region.to_string())
}

/// The KEDA trigger on node `n`'s queue: messages waiting and in flight, per replica.
pub fn sqs_trigger(n: &PlanNode, o: &AsyncQueueOptions) -> Value {
    json!({
        "type": "aws-sqs-queue",
        "authenticationRef": {"name": TRIGGER_AUTH},
        "metadata": {
            "queueURL": o.queue_of(&n.id),
            "queueLength": o.queue_length.to_string(),
            "activationQueueLength": o.activation_queue_length.to_string(),
            "awsRegion": o.region,
        },
    })
}

/// KEDA reads each queue with the role of the workload it scales (the nodes' IRSA role, which
/// needs `sqs:GetQueueAttributes`).
pub fn trigger_authentication(namespace: &str) -> String {
    let v = json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "TriggerAuthentication",
        "metadata": {"name": TRIGGER_AUTH, "namespace": namespace,
                     "labels": {"app.kubernetes.io/name": "stowage", "app.kubernetes.io/part-of": "stowage"}},
        "spec": {"podIdentity": {"provider": "aws", "identityOwner": "workload"}},
    });
    serde_yaml_ng::to_string(&v).expect("serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_region_comes_from_the_queue_url() {
        assert_eq!(region_of("https://sqs.eu-west-1.amazonaws.com/123/q-{node}").as_deref(), Some("eu-west-1"));
        assert_eq!(region_of("http://localhost:4566/000/q"), None);
    }
}

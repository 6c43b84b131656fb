//! `stowage manifests --monitoring`: what the Prometheus Operator and Grafana need to watch a
//! deployment — a PodMonitor for the nodes and one for the gateway, and a Grafana dashboard (as
//! JSON, and as a ConfigMap labelled `grafana_dashboard: "1"` for Grafana's sidecar) — and, with
//! `--keda-inflight`, a KEDA ScaledObject per node that scales its replicas on the requests each
//! pod holds (a Prometheus trigger). Every metric a panel or trigger reads is in docs/metrics.md
//! (a test checks the names, and promtool the PromQL).

use std::collections::BTreeMap;

use serde_json::{json, Value};
use stowage_core::PlanNode;

/// The label the PodMonitors give every series: the node (Deployment) a pod belongs to.
pub const NODE_LABEL: &str = "stowage_node";

/// Default of `--prometheus-namespace`.
pub const DEFAULT_PROMETHEUS_NAMESPACE: &str = "monitoring";
/// Default of `--prometheus-url` (the Prometheus Operator's service for a Prometheus in
/// `monitoring`).
pub const DEFAULT_PROMETHEUS_URL: &str = "http://prometheus-operated.monitoring.svc:9090";

/// What `--monitoring` adds.
#[derive(Debug, Clone, PartialEq)]
pub struct MonitoringOptions {
    /// Prometheus scrapes from here: the NetworkPolicy lets it reach the nodes.
    pub prometheus_namespace: String,
    /// Scale each node on in-flight requests per pod through KEDA instead of CPU.
    pub keda: Option<KedaOptions>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KedaOptions {
    pub prometheus_url: String,
    /// Requests in flight (running or queued) per pod above which KEDA adds a pod.
    pub inflight_per_pod: f64,
}

fn pod_monitor(name: &str, namespace: &str, component: &str) -> Value {
    json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"app.kubernetes.io/name": "stowage", "app.kubernetes.io/part-of": "stowage"}},
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": "stowage", "app.kubernetes.io/component": component}},
            "podMetricsEndpoints": [{
                "port": "http",
                "path": "/metrics",
                "interval": "15s",
                "relabelings": [{
                    "sourceLabels": ["__meta_kubernetes_pod_label_app_kubernetes_io_instance"],
                    "targetLabel": NODE_LABEL,
                }],
            }],
        },
    })
}

/// One dashboard panel: title, unit, PromQL queries with their legends.
pub type Panel = (&'static str, &'static str, Vec<(String, String)>);

/// The dashboard's panels.
pub fn panels(namespace: &str) -> Vec<Panel> {
    let ns = format!("namespace=\"{namespace}\"");
    let by_node = format!("{{{{{NODE_LABEL}}}}}");
    let q = |expr: String, legend: &str| (expr, legend.to_string());
    vec![
        (
            "Requests per second, by node",
            "reqps",
            vec![q(format!("sum by ({NODE_LABEL}) (rate(stowage_requests_total{{{ns}}}[5m]))"), &by_node)],
        ),
        (
            "Latency P50 and P99, by node",
            "s",
            vec![
                q(
                    format!("histogram_quantile(0.5, sum by ({NODE_LABEL}, le) (rate(stowage_request_duration_seconds_bucket{{{ns}}}[5m])))"),
                    &format!("{by_node} P50"),
                ),
                q(
                    format!("histogram_quantile(0.99, sum by ({NODE_LABEL}, le) (rate(stowage_request_duration_seconds_bucket{{{ns}}}[5m])))"),
                    &format!("{by_node} P99"),
                ),
            ],
        ),
        (
            "Requests in flight, by node",
            "short",
            vec![q(format!("sum by ({NODE_LABEL}) (stowage_inflight_requests{{{ns}}})"), &by_node)],
        ),
        (
            "Queue: engine calls waiting for a thread, and the P99 wait for a slot",
            "short",
            vec![
                q(format!("sum by ({NODE_LABEL}) (stowage_inference_backlog{{{ns}}})"), &format!("{by_node} backlog")),
                q(
                    format!("histogram_quantile(0.99, sum by ({NODE_LABEL}, le) (rate(stowage_queue_wait_seconds_bucket{{{ns}}}[5m])))"),
                    &format!("{by_node} P99 queue wait (s)"),
                ),
            ],
        ),
        (
            "Rejections per second, by reason",
            "reqps",
            vec![q(format!("sum by (reason) (rate(stowage_rejected_total{{{ns}}}[5m]))"), "{{reason}}")],
        ),
        (
            "Errors per second, by status code",
            "reqps",
            vec![q(format!("sum by (code) (rate(stowage_requests_total{{{ns}, code!=\"200\"}}[5m]))"), "{{code}}")],
        ),
        (
            "Resident memory, by pod",
            "bytes",
            vec![q(format!("sum by (pod) (process_resident_memory_bytes{{{ns}}})"), "{{pod}}")],
        ),
        (
            "Top 10 models by traffic",
            "reqps",
            vec![q(format!("topk(10, sum by (model) (rate(stowage_requests_total{{{ns}}}[5m])))"), "{{model}}")],
        ),
        (
            "Top 10 models by P99 latency",
            "s",
            vec![q(
                format!("topk(10, histogram_quantile(0.99, sum by (model, le) (rate(stowage_request_duration_seconds_bucket{{{ns}}}[5m]))))"),
                "{{model}}",
            )],
        ),
        (
            "Gateway: requests per second by code, and node errors",
            "reqps",
            vec![
                q(format!("sum by (code) (rate(stowage_gateway_requests_total{{{ns}}}[5m]))"), "{{code}}"),
                q(format!("sum by (kind) (rate(stowage_gateway_upstream_errors_total{{{ns}}}[5m]))"), "upstream {{kind}}"),
            ],
        ),
        (
            "Reloads in the last hour, by result",
            "short",
            vec![q(format!("sum by (result) (increase(stowage_reloads_total{{{ns}}}[1h]))"), "{{result}}")],
        ),
        (
            "Models by state",
            "short",
            vec![q(format!("sum by (state) (stowage_models{{{ns}}})"), "{{state}}")],
        ),
    ]
}

/// The Grafana dashboard (JSON model): a Prometheus data source chosen when it is imported.
pub fn dashboard(namespace: &str) -> Value {
    let panels: Vec<Value> = panels(namespace)
        .into_iter()
        .enumerate()
        .map(|(i, (title, unit, queries))| {
            let targets: Vec<Value> = queries
                .into_iter()
                .enumerate()
                .map(|(j, (expr, legend))| {
                    json!({"refId": ((b'A' + j as u8) as char).to_string(), "expr": expr, "legendFormat": legend,
                           "datasource": {"type": "prometheus", "uid": "${datasource}"}})
                })
                .collect();
            json!({
                "id": i + 1,
                "type": "timeseries",
                "title": title,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {"h": 8, "w": 12, "x": (i % 2) * 12, "y": (i / 2) * 8},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "targets": targets,
            })
        })
        .collect();
    json!({
        "title": format!("Stowage ({namespace})"),
        "uid": format!("stowage-{namespace}"),
        "tags": ["stowage"],
        "timezone": "browser",
        "schemaVersion": 39,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"}]},
        "panels": panels,
    })
}

/// `monitoring.yaml` for a deployment in `namespace` whose gateway is `gateway`: the two
/// PodMonitors and the dashboard's ConfigMap.
pub fn monitoring_yaml(namespace: &str, gateway: &str) -> String {
    let dashboard = serde_json::to_string_pretty(&dashboard(namespace)).expect("serializes");
    let config_map = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "stowage-dashboard", "namespace": namespace,
                     "labels": {"grafana_dashboard": "1", "app.kubernetes.io/name": "stowage", "app.kubernetes.io/part-of": "stowage"}},
        "data": {"stowage.json": dashboard},
    });
    [pod_monitor("stowage-nodes", namespace, "node"), pod_monitor(gateway, namespace, "gateway"), config_map]
        .iter()
        .map(|v| serde_yaml_ng::to_string(v).expect("serializes"))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// The KEDA trigger on the requests a node's pods hold (in flight and waiting for a thread),
/// per pod.
pub fn inflight_trigger(n: &PlanNode, namespace: &str, keda: &KedaOptions) -> Value {
    let query = format!(
        "sum(stowage_inflight_requests{{namespace=\"{namespace}\", {NODE_LABEL}=\"{}\"}}) + sum(stowage_inference_backlog{{namespace=\"{namespace}\", {NODE_LABEL}=\"{}\"}})",
        n.id, n.id
    );
    json!({
        "type": "prometheus",
        "metricType": "AverageValue",
        "metadata": {
            "serverAddress": keda.prometheus_url,
            "query": query,
            "threshold": format!("{}", keda.inflight_per_pod),
        },
    })
}

/// The triggers that scale node `n`, which scales to zero, from zero and keep it up: requests the
/// gateway holds for it (waiting now, or held in the last minute: a wait shorter than KEDA's
/// polling is seen too), and requests it answered in the last two minutes. KEDA activates the
/// node when either is above 0 (`activationThreshold`) and scales it to zero when both have been
/// 0 for the ScaledObject's `cooldownPeriod`.
pub fn wake_triggers(n: &PlanNode, namespace: &str, prometheus_url: &str) -> Vec<Value> {
    let ns = format!("namespace=\"{namespace}\"");
    let held = format!(
        "sum(stowage_gateway_waiting_requests{{{ns}, node=\"{id}\"}}) + sum(increase(stowage_gateway_hold_duration_seconds_count{{{ns}, node=\"{id}\"}}[1m]))",
        id = n.id
    );
    let answered = format!("sum(rate(stowage_requests_total{{{ns}, {NODE_LABEL}=\"{}\"}}[2m]))", n.id);
    let trigger = |name: &str, query: String| {
        json!({
            "type": "prometheus",
            "name": name,
            "metricType": "Value",
            "metadata": {
                "serverAddress": prometheus_url,
                "query": query,
                // Any held request wakes the node; one replica serves the node's planned peak.
                "threshold": "1000000",
                "activationThreshold": "0",
                "ignoreNullValues": "true",
            },
        })
    };
    vec![trigger("held-at-gateway", held), trigger("answered", answered)]
}

/// KEDA's `cooldownPeriod` for a node that does not scale to zero: a new pod loads every model
/// of the node before it is ready, so it does not flap.
pub const DEFAULT_COOLDOWN_SECONDS: i32 = 600;

/// The KEDA ScaledObject of node `n`: from `min` to `max` replicas on its `triggers` (KEDA adds
/// pods while any trigger asks for more); `cooldown` seconds with no trigger active before it
/// goes to `min` 0.
pub fn scaled_object(n: &PlanNode, namespace: &str, triggers: Vec<Value>, min: i32, max: i32, cooldown: i32) -> String {
    let labels: BTreeMap<&str, &str> = BTreeMap::from([
        ("app.kubernetes.io/name", "stowage"),
        ("app.kubernetes.io/part-of", "stowage"),
        ("app.kubernetes.io/instance", n.id.as_str()),
    ]);
    let v = json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": n.id, "namespace": namespace, "labels": labels},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": n.id},
            "minReplicaCount": min,
            "maxReplicaCount": max,
            "cooldownPeriod": cooldown,
            "triggers": triggers,
        },
    });
    serde_yaml_ng::to_string(&v).expect("serializes")
}

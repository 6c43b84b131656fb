//! The command line: one binary, one subcommand per step of the data flow (docs/cli.md). Every
//! flag also reads an environment variable, and each variable has one meaning across commands
//! (`STOWAGE_CATALOG` is always the catalog read, `STOWAGE_PLAN` the plan read; what a command
//! writes has a name of its own). Defaults are the constants of the crate that uses them.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use stowage_engine::{default_ort_intra_threads, EngineOptions};
use stowage_node::lifecycle::registry::{DEFAULT_BATCH_INPUTS, DEFAULT_MAX_BATCH_TOKENS};
use stowage_node::lifecycle::startup::{
    DEFAULT_COLD_LOAD_PARALLELISM, DEFAULT_FETCH_PARALLELISM, DEFAULT_LOAD_PARALLELISM,
};
use stowage_node::lifecycle::storage::s3::{Timeouts, DEFAULT_READ_TIMEOUT_SECONDS};
use stowage_node::lifecycle::storage::{FetchOptions, DEFAULT_FETCH_BACKOFF_MS, DEFAULT_FETCH_RETRIES};
use stowage_node::serve::predict::{DEFAULT_MAX_BATCH, DEFAULT_READY_FRACTION, DEFAULT_REJECT_DELAY_MS};
use stowage_planner::{
    Method, DEFAULT_BOUND_SECONDS, DEFAULT_EXACT_MAX_MODELS, DEFAULT_LNS_ITERATIONS, DEFAULT_SEED,
    DEFAULT_TIME_LIMIT_SECONDS,
};

use crate::http::state::{DEFAULT_BODY_TIMEOUT_MS, DEFAULT_MAX_BODY_BYTES};

#[derive(Debug, Parser)]
#[command(
    name = "stowage",
    version,
    about = "Pack thousands of small models onto the cheapest instances, and serve them"
)]
pub struct Cli {
    /// Log as JSON lines (for clusters) instead of human-readable text.
    #[arg(long, global = true, env = "STOWAGE_JSON_LOGS")]
    pub json_logs: bool,

    /// Send traces to this OpenTelemetry collector (OTLP over HTTP, e.g. http://localhost:4318):
    /// every request's span on the node and the gateway, and the node's queue, tokenize and
    /// inference steps in it. Off by default.
    #[arg(long, global = true, env = "STOWAGE_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Pack every model of a catalog onto the cheapest set of instances; write plan.json.
    Plan(PlanArgs),
    /// What changes from one plan to another: nodes and models added, removed, moved.
    Diff(DiffArgs),
    /// Write synthetic BERT-style ONNX models (+ tokenizer.json, config.json) and a matching catalog.
    Synth(SynthArgs),
    /// Run one node: load its models and answer /predictions/<model_id>.
    Serve(ServeArgs),
    /// Serve every model of a plan at one address: forward each request to its model's node.
    Gateway(GatewayArgs),
    /// Write Kubernetes manifests for a plan (kubectl apply -k OUT).
    Manifests(ManifestsArgs),
    /// Write load-test targets for a plan (vegeta JSON lines) to stdout.
    Targets(TargetsArgs),
    /// Put a catalog's local model files into an S3 bucket; write the catalog with s3:// URIs.
    Upload(UploadArgs),
    /// Measure each model's memory and service time here; write the footprints into a catalog.
    Profile(ProfileArgs),
    /// Load from a targets file (when vegeta is not installed), closed or open loop (--rate).
    Attack(AttackArgs),
    /// Send every model of a plan its planned peak (× --factor), open loop, and report per node
    /// whether the measured P90 held the target and how it compares with the prediction.
    Verify(VerifyArgs),
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The plan whose nodes to check.
    #[arg(long, env = "STOWAGE_PLAN")]
    pub plan: PathBuf,

    /// Catalog the plan was made from (default: models.toml beside the plan): each model's
    /// peak_rps and request_tokens.
    #[arg(long, env = "STOWAGE_CATALOG")]
    pub catalog: Option<PathBuf>,

    /// One URL in front of every model (the gateway: `out/deploy/gateway.url`, or an Ingress).
    #[arg(long, env = "STOWAGE_URL", conflicts_with = "routes", required_unless_present = "routes")]
    pub url: Option<String>,

    /// Route map from scripts/deploy.sh (model id → node URL) instead of one URL.
    #[arg(long, env = "STOWAGE_ROUTES")]
    pub routes: Option<PathBuf>,

    /// Each model's traffic: its peak_rps times this.
    #[arg(long, env = "STOWAGE_FACTOR", default_value_t = 1.0)]
    pub factor: f64,

    /// How long to send, in seconds (after one request to each model that is not counted).
    #[arg(long, env = "STOWAGE_DURATION", default_value_t = 30.0)]
    pub duration: f64,

    /// How each model's requests are spaced: a Poisson process (as the planner assumes) or evenly.
    #[arg(long, env = "STOWAGE_ARRIVALS", value_enum, default_value_t = crate::openloop::Arrivals::Poisson)]
    pub arrivals: crate::openloop::Arrivals,

    /// Connections at most (requests in flight).
    #[arg(long, env = "STOWAGE_CONNECTIONS", default_value_t = DEFAULT_CONNECTIONS)]
    pub connections: usize,

    /// Per-request timeout, in seconds.
    #[arg(long, env = "STOWAGE_TIMEOUT", default_value_t = 30.0)]
    pub timeout: f64,

    /// The text every request sends (default: per model, request_tokens whole words of its
    /// tokenizer's vocabulary, as `stowage profile` sends them).
    #[arg(long, env = "STOWAGE_TEXT")]
    pub text: Option<String>,

    /// The node's P90 target when the plan has none (else the plan's slo_p90_ms of each node).
    #[arg(long, env = "STOWAGE_SLO_MS")]
    pub slo_ms: Option<f64>,

    /// Seed of the arrival times.
    #[arg(long, env = "STOWAGE_VERIFY_SEED", default_value_t = 1)]
    pub seed: u64,

    /// Also write verify.json (the report), results.csv (every request, vegeta's CSV results
    /// format) and verify.svg (predicted and measured P90 per node) into this folder.
    #[arg(long, env = "STOWAGE_VERIFY_OUT")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct UploadArgs {
    /// Catalog whose model files to upload (or a folder holding models.toml, as `stowage synth` writes).
    #[arg(long, env = "STOWAGE_CATALOG")]
    pub catalog: PathBuf,

    /// Bucket to upload into.
    #[arg(long, env = "STOWAGE_BUCKET")]
    pub bucket: String,

    /// Key prefix: files go to s3://BUCKET/PREFIX/<model id>/<file name>.
    #[arg(long, env = "STOWAGE_S3_PREFIX", default_value = "models")]
    pub prefix: String,

    /// Write the rewritten catalog here (default: stdout).
    #[arg(long, env = "STOWAGE_UPLOADED_CATALOG")]
    pub out: Option<PathBuf>,

    /// Create the bucket first if it does not exist.
    #[arg(long, env = "STOWAGE_CREATE_BUCKET")]
    pub create_bucket: bool,

    /// S3-compatible endpoint; else AWS_ENDPOINT_URL, else AWS. Credentials come from the default chain.
    #[arg(long, env = "STOWAGE_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,

    /// Files uploading at once.
    #[arg(long, env = "STOWAGE_PARALLELISM", default_value_t = DEFAULT_FETCH_PARALLELISM)]
    pub parallelism: usize,

    /// Further attempts after a transient S3 failure.
    #[arg(long, env = "STOWAGE_RETRIES", default_value_t = DEFAULT_FETCH_RETRIES)]
    pub retries: u32,
}

/// Which of a saturated node's one-second answer counts `stowage profile` takes as its capacity,
/// by default (`--capacity-quantile`): the 20th percentile. With `max_utilization`'s headroom on
/// top, a node at its planned peak is then over its capacity in well under one second of ten, the
/// share of slow requests a P90 target allows (BENCHMARKS.md, "Plans that hold": with the 10th
/// percentile, the node held 1.25 × its plan in three runs of six).
pub const DEFAULT_CAPACITY_QUANTILE: f64 = 0.2;

#[derive(Debug, clap::Args)]
pub struct ProfileArgs {
    /// Catalog of the models to measure.
    #[arg(long, env = "STOWAGE_CATALOG")]
    pub catalog: PathBuf,

    /// Models to measure, comma-separated (default: all).
    #[arg(long, env = "STOWAGE_MODELS", value_delimiter = ',')]
    pub models: Vec<String>,

    /// Instance family this machine stands for: the footprints are written for it.
    #[arg(long, env = "STOWAGE_FAMILY", default_value = "c5")]
    pub family: String,

    /// Tokens per request (capped at the model's length); default: each model's request_tokens
    /// (the catalog's typical request length).
    #[arg(long, env = "STOWAGE_TOKENS")]
    pub tokens: Option<usize>,

    /// Timed engine calls per model alone (after 3 warm-up ones): the `engine ms` column.
    #[arg(long, env = "STOWAGE_ITERATIONS", default_value_t = 20)]
    pub iterations: usize,

    /// Requests per model through the measuring node (interleaved at random with the other
    /// models'): its service time and spread.
    #[arg(long, env = "STOWAGE_REQUESTS", default_value_t = 40)]
    pub requests: usize,

    /// Which of the saturated node's one-second answer counts is its capacity: 0.2 (the default)
    /// plans for the pace it keeps in four seconds of five, on a machine whose speed varies from
    /// second to second; 0.5, for its median second.
    #[arg(long, env = "STOWAGE_CAPACITY_QUANTILE", default_value_t = DEFAULT_CAPACITY_QUANTILE)]
    pub capacity_quantile: f64,

    /// Write the catalog with measured footprints here.
    #[arg(long, env = "STOWAGE_PROFILED_CATALOG", conflicts_with = "in_place")]
    pub out: Option<PathBuf>,

    /// Write the measured footprints into --catalog itself.
    #[arg(long, env = "STOWAGE_IN_PLACE")]
    pub in_place: bool,

    /// The engine to measure with, as the nodes will run it.
    #[command(flatten)]
    pub engine: EngineArgs,

    #[command(flatten)]
    pub s3: S3Args,
}

#[derive(Debug, clap::Args)]
pub struct AttackArgs {
    /// Targets file from `stowage targets` (vegeta JSON lines).
    #[arg(long, env = "STOWAGE_TARGETS")]
    pub targets: PathBuf,

    /// Closed loop: requests in flight at once (one client thread each, each sending its next
    /// request when its answer came). Ignored with --rate.
    #[arg(long, env = "STOWAGE_CONCURRENCY", default_value_t = 4)]
    pub concurrency: usize,

    /// Open loop: send this many requests a second whatever the server does, and count each
    /// latency from the request's scheduled time (as vegeta's `attack -rate` and wrk2 do).
    #[arg(long, env = "STOWAGE_RATE")]
    pub rate: Option<f64>,

    /// With --rate: how requests are spaced, evenly or as a Poisson process.
    #[arg(long, env = "STOWAGE_ARRIVALS", value_enum, default_value_t = crate::openloop::Arrivals::Constant)]
    pub arrivals: crate::openloop::Arrivals,

    /// With --rate: connections at most (requests in flight); a request due while all are busy
    /// waits for one, and the report says how late requests left.
    #[arg(long, env = "STOWAGE_CONNECTIONS", default_value_t = DEFAULT_CONNECTIONS)]
    pub connections: usize,

    /// How long to send, in seconds.
    #[arg(long, env = "STOWAGE_DURATION", default_value_t = 10.0)]
    pub duration: f64,

    /// Per-request timeout, in seconds.
    #[arg(long, env = "STOWAGE_TIMEOUT", default_value_t = 30.0)]
    pub timeout: f64,

    /// Also write every request's result here in vegeta's CSV results format (send time in ns,
    /// code, latency in ns, bytes out, bytes in, error, body, attack, seq), which `vegeta report`
    /// and `vegeta plot` read as they read their own.
    #[arg(long, env = "STOWAGE_VEGETA_RESULTS")]
    pub vegeta_results: Option<PathBuf>,
}

/// Default of `--connections` (open-loop load).
pub const DEFAULT_CONNECTIONS: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TargetOrder {
    /// Uniformly random models.
    Random,
    /// Zipf-skewed popularity (--zipf-s): a few hot models and a long tail.
    Zipf,
}

#[derive(Debug, clap::Args)]
pub struct TargetsArgs {
    /// Plan whose models to target.
    #[arg(long, env = "STOWAGE_PLAN")]
    pub plan: PathBuf,

    /// Route map from scripts/deploy.sh (model id → node URL).
    #[arg(long, env = "STOWAGE_ROUTES", conflicts_with_all = ["base_url", "namespace"])]
    pub routes: Option<PathBuf>,

    /// One URL for every model (the Ingress), e.g. http://models.example.
    #[arg(long, env = "STOWAGE_BASE_URL", conflicts_with = "namespace")]
    pub base_url: Option<String>,

    /// In-cluster DNS names http://<node>.<NAMESPACE>.svc.cluster.local:8080 (the default, with
    /// namespace stowage, when neither --routes nor --base-url is given).
    #[arg(long, env = "STOWAGE_NAMESPACE")]
    pub namespace: Option<String>,

    /// Number of targets (at least one per model; every model comes once before any repeats).
    #[arg(long, env = "STOWAGE_REQUESTS", default_value_t = 1000)]
    pub requests: usize,

    /// How requests spread over models.
    #[arg(long, env = "STOWAGE_ORDER", value_enum, default_value_t = TargetOrder::Random)]
    pub order: TargetOrder,

    /// Zipf exponent for --order zipf.
    #[arg(long, env = "STOWAGE_ZIPF_S", default_value_t = 1.1)]
    pub zipf_s: f64,

    /// Text to classify in every request.
    #[arg(long, env = "STOWAGE_TEXT", default_value = "I love this product, the delivery was fast")]
    pub text: String,

    /// Seed of the order.
    #[arg(long, env = "STOWAGE_TARGETS_SEED", default_value_t = 1)]
    pub seed: u64,
}

#[derive(Debug, clap::Args)]
pub struct ManifestsArgs {
    /// Plan to deploy.
    #[arg(long, env = "STOWAGE_PLAN")]
    pub plan: PathBuf,

    /// Catalog the plan was made from (default: models.toml beside the plan); goes into the ConfigMap.
    #[arg(long, env = "STOWAGE_CATALOG")]
    pub catalog: Option<PathBuf>,

    /// Folder to write the manifests and kustomization.yaml into.
    #[arg(long, env = "STOWAGE_MANIFESTS_DIR", default_value = "deploy")]
    pub out: PathBuf,

    /// Namespace of every object.
    #[arg(long, env = "STOWAGE_NAMESPACE", default_value = "stowage")]
    pub namespace: String,

    /// One image for every node, overriding the per-family images below.
    #[arg(long, env = "STOWAGE_IMAGE")]
    pub image: Option<String>,

    /// Registry prefix of the per-family images REGISTRY/stowage-{cpu,gpu,inf}:TAG.
    #[arg(long, env = "STOWAGE_REGISTRY")]
    pub registry: Option<String>,

    /// Tag of the per-family images.
    #[arg(long, env = "STOWAGE_TAG", default_value = env!("CARGO_PKG_VERSION"))]
    pub tag: String,

    /// Image for c5 (CPU) nodes.
    #[arg(long, env = "STOWAGE_IMAGE_CPU")]
    pub image_cpu: Option<String>,

    /// Image for g4dn (GPU) nodes.
    #[arg(long, env = "STOWAGE_IMAGE_GPU")]
    pub image_gpu: Option<String>,

    /// Image for inf1 (Inferentia) nodes.
    #[arg(long, env = "STOWAGE_IMAGE_INF")]
    pub image_inf: Option<String>,

    /// Pods per node of the plan.
    #[arg(long, env = "STOWAGE_REPLICAS", default_value_t = 1)]
    pub replicas: i32,

    /// IngressClass of the one Ingress.
    #[arg(long, env = "STOWAGE_INGRESS_CLASS", default_value = "nginx")]
    pub ingress_class: String,

    /// Gateway pods at least (`stowage gateway`: the one address of every model).
    #[arg(long, env = "STOWAGE_GATEWAY_REPLICAS", default_value_t = 2)]
    pub gateway_replicas: i32,

    /// Gateway pods at most: an HPA scales them on CPU (70%).
    #[arg(long, env = "STOWAGE_GATEWAY_MAX_REPLICAS", default_value_t = 10)]
    pub gateway_max_replicas: i32,

    /// With --ingress-class alb: the load balancer's scheme, internal or internet-facing.
    #[arg(long, env = "STOWAGE_ALB_SCHEME", default_value = "internal", value_parser = ["internal", "internet-facing"])]
    pub alb_scheme: String,

    /// Host the Ingress answers for (default: any).
    #[arg(long, env = "STOWAGE_INGRESS_HOST")]
    pub ingress_host: Option<String>,

    /// IAM role for the ServiceAccount (EKS IRSA), for reading models from S3. Without it the
    /// pods mount no service-account token.
    #[arg(long, env = "STOWAGE_IRSA_ROLE_ARN")]
    pub irsa_role_arn: Option<String>,

    /// Namespace of the ingress controller: its pods (and the nodes' own namespace's) are the
    /// only ones the NetworkPolicy lets reach the nodes.
    #[arg(long, env = "STOWAGE_INGRESS_NAMESPACE", default_value = "ingress-nginx")]
    pub ingress_namespace: String,

    /// Also let these CIDRs reach the nodes, comma-separated (an ALB with target-type ip comes
    /// from the VPC's addresses).
    #[arg(long, env = "STOWAGE_ALLOW_CIDRS", value_delimiter = ',')]
    pub allow_cidrs: Vec<String>,

    /// Write no NetworkPolicy (a cluster without a network plugin that enforces them).
    #[arg(long, env = "STOWAGE_NO_NETWORK_POLICY")]
    pub no_network_policy: bool,

    /// Deploy a plan's inf1 nodes anyway, as CPU pods: Stowage has no engine that runs on
    /// Inferentia (Neuron) yet, so they run ONNX Runtime on the instance's CPUs, request no Neuron
    /// device, and their CPU requests come from the models' CPU (c5) footprints (at most the
    /// type's compute × max_utilization) — while the plan
    /// assumed Inferentia speed. Without it a plan with inf1 nodes is refused.
    #[arg(long, env = "STOWAGE_ALLOW_CPU_ON_INF1")]
    pub allow_cpu_on_inf1: bool,

    /// The images carry the catalog's local model files at the paths it names: deploy a catalog
    /// whose files are not in S3 anyway (else refused: a pod cannot read this machine's disk).
    #[arg(long, env = "STOWAGE_MODELS_IN_IMAGE")]
    pub models_in_image: bool,

    /// Seconds a node may take to drain on SIGTERM (terminationGracePeriodSeconds is this, the
    /// shutdown delay and 15 more).
    #[arg(long, env = "STOWAGE_DRAIN_SECONDS", default_value_t = 30)]
    pub drain_seconds: i64,

    /// Seconds a node serves on after SIGTERM, not ready, before it refuses new requests: the time
    /// the Service's endpoints and the Ingress take to drop a terminating pod (serve's
    /// --shutdown-delay-seconds).
    #[arg(long, env = "STOWAGE_SHUTDOWN_DELAY_SECONDS", default_value_t = 5)]
    pub shutdown_delay_seconds: i64,

    /// Seconds a node may take to load and warm up its models (the startup probe's budget).
    #[arg(long, env = "STOWAGE_STARTUP_SECONDS", default_value_t = 600)]
    pub startup_seconds: i32,

    /// Add a HorizontalPodAutoscaler per node (CPU, 70%) scaling from --replicas up to this.
    #[arg(long, env = "STOWAGE_HPA_MAX_REPLICAS")]
    pub hpa_max_replicas: Option<i32>,

    /// Also write monitoring.yaml: PodMonitors for the nodes and the gateway (Prometheus
    /// Operator) and a Grafana dashboard (a ConfigMap labelled grafana_dashboard: "1" for
    /// Grafana's sidecar); the NetworkPolicy lets --prometheus-namespace scrape the nodes.
    #[arg(long, env = "STOWAGE_MONITORING")]
    pub monitoring: bool,

    /// The namespace Prometheus scrapes from (with --monitoring).
    #[arg(long, env = "STOWAGE_PROMETHEUS_NAMESPACE", default_value = stowage_deployment::monitoring::DEFAULT_PROMETHEUS_NAMESPACE)]
    pub prometheus_namespace: String,

    /// Scale each node on load instead of CPU: a KEDA ScaledObject (Prometheus trigger) adds pods,
    /// up to --hpa-max-replicas, while the node's pods hold more than this many requests each
    /// (in flight and waiting for a thread). Needs --monitoring, --hpa-max-replicas and KEDA.
    #[arg(long, env = "STOWAGE_KEDA_INFLIGHT", requires_all = ["monitoring", "hpa_max_replicas"])]
    pub keda_inflight: Option<f64>,

    /// Prometheus as KEDA queries it (with --keda-inflight, and for nodes that scale to zero).
    #[arg(long, env = "STOWAGE_PROMETHEUS_URL", default_value = stowage_deployment::monitoring::DEFAULT_PROMETHEUS_URL)]
    pub prometheus_url: String,

    /// Also write karpenter.yaml (apply it before the rest; it is cluster-scoped, so not in
    /// kustomization.yaml): a Karpenter NodePool per instance type of the plan and their
    /// EC2NodeClass; the nodes' pods tolerate the pools' taint. Needs --karpenter-role.
    #[arg(long, env = "STOWAGE_KARPENTER", requires = "karpenter_role")]
    pub karpenter: bool,

    /// The IAM role of the instances Karpenter launches (with --karpenter).
    #[arg(long, env = "STOWAGE_KARPENTER_ROLE")]
    pub karpenter_role: Option<String>,

    /// The AMI of the instances, as an EC2NodeClass amiSelectorTerms alias (with --karpenter).
    #[arg(long, env = "STOWAGE_KARPENTER_AMI", default_value = "al2023@latest")]
    pub karpenter_ami: String,

    /// The karpenter.sh/discovery tag value of the cluster's subnets and security groups (with
    /// --karpenter).
    #[arg(long, env = "STOWAGE_KARPENTER_DISCOVERY", default_value = "stowage")]
    pub karpenter_discovery: String,

    /// Share of instances a NodePool may launch beyond the plan's nodes at their most replicas,
    /// at least one: room for rolling updates (with --karpenter).
    #[arg(long, env = "STOWAGE_KARPENTER_HEADROOM", default_value_t = 0.25)]
    pub karpenter_headroom: f64,

    /// Seconds a node that scales to zero ("min_replicas": 0 in the plan) stays up with no
    /// request before KEDA scales it to zero (its ScaledObject's cooldownPeriod).
    #[arg(long, env = "STOWAGE_IDLE_SECONDS", default_value_t = 300)]
    pub idle_seconds: i32,

    /// Asynchronous requests on one SQS queue per node: this URL with {node} filled in (e.g.
    /// https://sqs.eu-west-1.amazonaws.com/123456789012/stowage-{node}; create the queues first).
    /// Each node gets the queue and --async-results, and a KEDA ScaledObject that adds pods on
    /// the queue's depth (with --hpa-max-replicas; beside --keda-inflight's trigger) through the
    /// nodes' IRSA role (--irsa-role-arn).
    #[arg(long = "async-queue-url", env = "STOWAGE_ASYNC_QUEUE_URL", requires_all = ["async_results", "irsa_role_arn", "hpa_max_replicas"])]
    pub async_queue_url: Option<String>,

    /// Where the nodes' asynchronous jobs keep their documents: s3://bucket/prefix/.
    #[arg(long, env = "STOWAGE_ASYNC_RESULTS", requires = "async_queue_url")]
    pub async_results: Option<String>,

    /// The queues' AWS region (default: read from --async-queue-url).
    #[arg(long, env = "AWS_REGION")]
    pub aws_region: Option<String>,

    /// Messages per node replica KEDA aims at: a node with more waiting gets more pods.
    #[arg(long, env = "STOWAGE_ASYNC_QUEUE_LENGTH", default_value_t = stowage_deployment::jobs::DEFAULT_QUEUE_LENGTH)]
    pub async_queue_length: u32,

    /// Messages below which KEDA leaves a node at --replicas (its activation threshold).
    #[arg(long, env = "STOWAGE_ASYNC_ACTIVATION_QUEUE_LENGTH", default_value_t = 0)]
    pub async_activation_queue_length: u32,

    /// The nodes' --async-visibility-timeout-seconds.
    #[arg(long, env = "STOWAGE_ASYNC_VISIBILITY_TIMEOUT_SECONDS", default_value_t = stowage_node::jobs::sqs::DEFAULT_VISIBILITY_SECONDS)]
    pub async_visibility_timeout_seconds: u64,

    /// Also write loadtest.yaml: a Job of this many vegeta client pods attacking every model
    /// in-cluster (apply it separately; gather with scripts/loadtest-gather.sh).
    #[arg(long, env = "STOWAGE_LOADTEST_CLIENTS")]
    pub loadtest_clients: Option<i32>,

    /// Total requests/s of the load-test Job, shared by its clients.
    #[arg(long, env = "STOWAGE_LOADTEST_RATE", default_value_t = 1000)]
    pub loadtest_rate: u32,

    /// Seconds each load-test client attacks.
    #[arg(long, env = "STOWAGE_LOADTEST_DURATION", default_value_t = 60)]
    pub loadtest_duration: u32,

    /// Targets in the load-test ConfigMap (each model at least once; a ConfigMap holds ~1 MiB).
    #[arg(long, env = "STOWAGE_LOADTEST_REQUESTS", default_value_t = 2000)]
    pub loadtest_requests: usize,

    /// Image with vegeta for the load-test clients.
    #[arg(long, env = "STOWAGE_LOADTEST_IMAGE", default_value = "peterevans/vegeta:6.9.1")]
    pub loadtest_image: String,
}

#[derive(Debug, clap::Args)]
pub struct GatewayArgs {
    /// Plan whose models to route (each to its node's URL, from --node-url).
    #[arg(long, env = "STOWAGE_PLAN", conflicts_with = "routes", required_unless_present = "routes")]
    pub plan: Option<PathBuf>,

    /// Route map from scripts/deploy.sh (model id → node URL), instead of a plan.
    #[arg(long, env = "STOWAGE_ROUTES")]
    pub routes: Option<PathBuf>,

    /// URL of a node, with {node} and {namespace} filled in (the in-cluster Service by default).
    #[arg(long, env = "STOWAGE_NODE_URL", default_value = crate::gateway::routes::DEFAULT_NODE_URL)]
    pub node_url: String,

    /// gRPC address of a node (its --grpc-port), with {node} and {namespace} filled in; with
    /// --routes, a model's entry gives it (`{"url": …, "grpc": …}`).
    #[arg(long, env = "STOWAGE_NODE_GRPC_URL", default_value = crate::gateway::routes::DEFAULT_NODE_GRPC_URL)]
    pub node_grpc_url: String,

    /// Also serve KServe v2 over gRPC on this port: ModelInfer, ModelReady and ModelMetadata go
    /// to the model's node over a pooled HTTP/2 connection; health and server metadata are the
    /// gateway's. Off by default.
    #[arg(long, env = "STOWAGE_GRPC_PORT")]
    pub grpc_port: Option<u16>,

    /// Namespace for {namespace} in --node-url and --node-grpc-url.
    #[arg(long, env = "STOWAGE_NAMESPACE", default_value = "stowage")]
    pub namespace: String,

    /// Address to listen on.
    #[arg(long, env = "STOWAGE_HOST", default_value = "0.0.0.0")]
    pub host: String,

    /// Port to listen on (0 picks a free one; the log says which).
    #[arg(long, env = "STOWAGE_PORT", default_value_t = 8080)]
    pub port: u16,

    /// HTTP worker threads (default: the number of CPUs).
    #[arg(long, env = "STOWAGE_WORKERS")]
    pub workers: Option<usize>,

    /// Longest a node may take to answer a forwarded request, in milliseconds; beyond, 504.
    #[arg(long, env = "STOWAGE_UPSTREAM_TIMEOUT_MS", default_value_t = crate::gateway::DEFAULT_UPSTREAM_TIMEOUT_MS)]
    pub upstream_timeout_ms: u64,

    /// Longest a request waits for a node that scales to zero (min_replicas 0) to start, in
    /// milliseconds; beyond, 503 `node_starting` with Retry-After.
    #[arg(long, env = "STOWAGE_HOLD_TIMEOUT_MS", default_value_t = crate::gateway::wake::DEFAULT_HOLD_TIMEOUT_MS)]
    pub hold_timeout_ms: u64,

    /// How often the plan or route map is checked for changes, in milliseconds (a changed file
    /// that can be used replaces the routes; one that cannot changes nothing).
    #[arg(long, env = "STOWAGE_RELOAD_INTERVAL_MS", default_value_t = crate::gateway::DEFAULT_RELOAD_INTERVAL_MS)]
    pub reload_interval_ms: u64,

    /// Largest request body, in bytes; beyond, 413.
    #[arg(long, env = "STOWAGE_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,

    /// Longest a request body may take to arrive, in milliseconds; beyond, 408 `body_timeout`
    /// and the connection is closed.
    #[arg(long, env = "STOWAGE_BODY_TIMEOUT_MS", default_value_t = DEFAULT_BODY_TIMEOUT_MS)]
    pub body_timeout_ms: u64,

    /// Most client connections the gateway holds open (default: half of what its open-file limit
    /// allows after a reserve, the other half for its connections to the nodes); beyond, new
    /// connections wait to be accepted.
    #[arg(long, env = "STOWAGE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// On SIGTERM, seconds to go on forwarding (with /ready failing) before refusing new
    /// requests: the time the Service and the Ingress take to drop a terminating gateway pod. A
    /// second signal cuts it short.
    #[arg(long, env = "STOWAGE_SHUTDOWN_DELAY_SECONDS", default_value_t = 0)]
    pub shutdown_delay_seconds: u64,

    /// On SIGTERM, after the delay, how long in-flight requests may take to finish, in seconds.
    #[arg(long, env = "STOWAGE_DRAIN_SECONDS", default_value_t = 30)]
    pub drain_seconds: u64,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Plan to serve a node of (with --node).
    #[arg(long, env = "STOWAGE_PLAN", requires = "node")]
    pub plan: Option<PathBuf>,

    /// Node id of the plan to serve.
    #[arg(long, env = "STOWAGE_NODE")]
    pub node: Option<String>,

    /// Catalog with the models' artifacts; with --plan, defaults to models.toml beside the plan
    /// and must be the catalog the plan was made from.
    #[arg(long, env = "STOWAGE_CATALOG")]
    pub catalog: Option<PathBuf>,

    /// Without a plan: the catalog models to serve, comma-separated (default: all).
    #[arg(long, env = "STOWAGE_MODELS", value_delimiter = ',')]
    pub models: Vec<String>,

    /// Address to listen on.
    #[arg(long, env = "STOWAGE_HOST", default_value = "0.0.0.0")]
    pub host: String,

    /// Port to listen on (0 picks a free one; the log says which).
    #[arg(long, env = "STOWAGE_PORT", default_value_t = 8080)]
    pub port: u16,

    /// Also answer the health checks (/ping, /ready, /v2/health/live, /v2/health/ready) on this
    /// port, with a thread and connections of their own: clients that fill the serving port's
    /// connections (stalled bodies, a flood) never hold a probe up. Off by default.
    #[arg(long, env = "STOWAGE_PROBE_PORT")]
    pub probe_port: Option<u16>,

    /// Also serve KServe v2 over gRPC (inference.GRPCInferenceService) on this port: health,
    /// metadata and ModelInfer, through the same admission, batching and metrics as REST. Off by
    /// default.
    #[arg(long, env = "STOWAGE_GRPC_PORT")]
    pub grpc_port: Option<u16>,

    #[command(flatten)]
    pub engine: EngineArgs,

    /// Threads that run inference for the whole node (default: the number of CPUs): however many
    /// models are busy, at most this many inferences run at once; the rest wait in FIFO order.
    #[arg(long, env = "STOWAGE_INFERENCE_THREADS")]
    pub inference_threads: Option<usize>,

    /// Engine calls of one model that may run at once (default: the inference threads; an ONNX
    /// Runtime model runs one at a time whatever this says, as its session is locked).
    #[arg(long, env = "STOWAGE_MODEL_CONCURRENCY")]
    pub model_concurrency: Option<usize>,

    /// Most inputs in one engine call: requests that wait for the same model while its engine
    /// is busy run together, padded to the longest, up to this many inputs (1: never combine).
    /// A lone request never waits for a batch to fill.
    #[arg(long, env = "STOWAGE_BATCH_INPUTS", default_value_t = DEFAULT_BATCH_INPUTS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=256))]
    pub batch_inputs: usize,

    /// Most padded tokens in one engine call (its rows × the longest): requests of similar
    /// length batch together, and a request joins a batch only while padding stays under half of
    /// its tokens, so one long text does not pad every row. A single larger request runs alone.
    #[arg(long, env = "STOWAGE_MAX_BATCH_TOKENS", default_value_t = DEFAULT_MAX_BATCH_TOKENS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_batch_tokens: usize,

    /// Requests of one model that may wait beyond those its engine calls hold
    /// (model concurrency × batch inputs); beyond, 429 with Retry-After. Without it, a model
    /// whose requests have a wait bound (--max-queue-delay-ms, or ten times its latency target)
    /// queues as many as the node answers within that bound, at least 64 and at most 4096, so
    /// that the bound, not a count, refuses; other models queue 64.
    #[arg(long, env = "STOWAGE_QUEUE_SIZE")]
    pub queue_size: Option<usize>,

    /// How long a request turned away because its model's queue is full waits before it is told
    /// so (429), in milliseconds: it costs no CPU, and it bounds the rate of clients that ignore
    /// Retry-After to their connections ÷ this, so that a flood cannot take the model's cores.
    #[arg(long, env = "STOWAGE_REJECT_DELAY_MS", default_value_t = DEFAULT_REJECT_DELAY_MS)]
    pub reject_delay_ms: u64,

    /// Refuse at once (429, no --reject-delay-ms) a request that would wait longer than this for
    /// its engine call, reckoned from the work ahead of it and what requests cost lately. Without
    /// it, ten times each model's latency target (the catalog's slo_p90_ms) is its bound; 0
    /// turns it off.
    #[arg(long, env = "STOWAGE_MAX_QUEUE_DELAY_MS")]
    pub max_queue_delay_ms: Option<u64>,

    /// Longest a request may wait for its model before it runs, in milliseconds (0: no limit);
    /// beyond, 503 `queue_timeout` with Retry-After, and it never runs. Clients that gave up
    /// still hold their place otherwise: the HTTP server does not drop a waiting handler when
    /// its client hangs up.
    #[arg(long, env = "STOWAGE_QUEUE_TIMEOUT_MS", default_value_t = 0)]
    pub queue_timeout_ms: u64,

    /// Largest request body, in bytes; beyond, 413.
    #[arg(long, env = "STOWAGE_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,

    /// Longest a request body may take to arrive once the request's head has, in milliseconds;
    /// beyond, 408 `body_timeout` and the connection is closed (slow or stalled clients).
    #[arg(long, env = "STOWAGE_BODY_TIMEOUT_MS", default_value_t = DEFAULT_BODY_TIMEOUT_MS, value_parser = clap::builder::RangedU64ValueParser::<u64>::new().range(1..))]
    pub body_timeout_ms: u64,

    /// Most client connections the node holds open (default: what its open-file limit allows,
    /// less a reserve for model files and S3); beyond, new connections wait to be accepted, so
    /// that a flood of idle or slow connections never exhausts the process's file descriptors.
    #[arg(long, env = "STOWAGE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Most inputs in one request.
    #[arg(long, env = "STOWAGE_MAX_BATCH", default_value_t = DEFAULT_MAX_BATCH)]
    pub max_batch: usize,

    /// Share of the node's models that must be ready for /ready to answer 200.
    #[arg(long, env = "STOWAGE_READY_FRACTION", default_value_t = DEFAULT_READY_FRACTION)]
    pub ready_fraction: f64,

    /// Models loaded at once at start-up.
    #[arg(long, env = "STOWAGE_LOAD_PARALLELISM", default_value_t = DEFAULT_LOAD_PARALLELISM)]
    pub load_parallelism: usize,

    /// Cold models loaded at once while serving (within --load-parallelism). Each load holds up to
    /// 2.4 × its ONNX file beyond its model while it runs, out of the cold pool where it is free.
    #[arg(long, env = "STOWAGE_COLD_LOAD_PARALLELISM", default_value_t = DEFAULT_COLD_LOAD_PARALLELISM)]
    pub cold_load_parallelism: usize,

    #[command(flatten)]
    pub s3: S3Args,

    /// HTTP worker threads (default: the number of CPUs).
    #[arg(long, env = "STOWAGE_WORKERS")]
    pub workers: Option<usize>,

    /// On SIGTERM, how long in-flight requests may take to finish, in seconds.
    #[arg(long, env = "STOWAGE_DRAIN_SECONDS", default_value_t = 30)]
    pub drain_seconds: u64,

    /// On SIGTERM, seconds to go on serving (with /ready failing) before refusing new requests
    /// and draining: the time load balancers take to stop sending requests here (Kubernetes
    /// removes a terminating pod from its Service asynchronously). A second signal cuts it short.
    #[arg(long, env = "STOWAGE_SHUTDOWN_DELAY_SECONDS", default_value_t = 0)]
    pub shutdown_delay_seconds: u64,

    /// Memory the node's cold models share, in MiB: instead of the plan's `cold_pool_mib`, or
    /// without a plan (--catalog) for the catalog's cold models (`residency = "cold"`, or `auto`
    /// below `cold_below_rps`). A cold model loads on its first request and the least recently
    /// used idle ones are evicted when the pool is full. 0: every model hot.
    #[arg(long, env = "STOWAGE_COLD_POOL_MIB")]
    pub cold_pool_mib: Option<f64>,

    /// Do not watch the plan and catalog files: the node reloads only on SIGHUP or
    /// POST /admin/reload.
    #[arg(long, env = "STOWAGE_NO_WATCH")]
    pub no_watch: bool,

    /// Serve the admin API (POST /admin/reload, GET /admin/plan) on this port, on --admin-host
    /// only; never on the serving port. Off by default.
    #[arg(long, env = "STOWAGE_ADMIN_PORT")]
    pub admin_port: Option<u16>,

    /// Address of the admin API: loopback by default. Any other address needs a bearer token
    /// (--admin-token-file, or the STOWAGE_ADMIN_TOKEN environment variable).
    #[arg(long, env = "STOWAGE_ADMIN_HOST", default_value = DEFAULT_ADMIN_HOST)]
    pub admin_host: String,

    /// File holding the admin API's bearer token (its first line); else the STOWAGE_ADMIN_TOKEN
    /// environment variable. With a token, every admin call must send
    /// `Authorization: Bearer <token>`.
    #[arg(long, env = "STOWAGE_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,

    /// Take asynchronous requests (POST /async/predictions/{model}, KServe v2 with
    /// `Prefer: respond-async`), queued durably in this folder (jobs.redb): a crash or a restart
    /// loses nothing accepted. Off by default.
    #[arg(long, env = "STOWAGE_ASYNC_DIR")]
    pub async_dir: Option<PathBuf>,

    /// Take asynchronous requests on this SQS queue (one per node) instead of --async-dir, with
    /// the jobs' results in --async-results. The endpoint is --s3-endpoint's (else
    /// AWS_ENDPOINT_URL, else AWS).
    #[arg(long, env = "STOWAGE_ASYNC_QUEUE_URL")]
    pub async_queue_url: Option<String>,

    /// Where the jobs of --async-queue-url keep their documents and results: s3://bucket/prefix/
    /// (one object per job, {prefix}{id}.json; expire them with a lifecycle rule).
    #[arg(long, env = "STOWAGE_ASYNC_RESULTS")]
    pub async_results: Option<String>,

    /// With --async-queue-url: how long a received job stays invisible to other receivers
    /// (renewed every half of it while the job runs); a node that dies mid-job leaves it to come
    /// back after this.
    #[arg(long, env = "STOWAGE_ASYNC_VISIBILITY_TIMEOUT_SECONDS", default_value_t = stowage_node::jobs::sqs::DEFAULT_VISIBILITY_SECONDS)]
    pub async_visibility_timeout_seconds: u64,

    /// How long an ended asynchronous job's result is kept, in seconds (--async-dir).
    #[arg(long, env = "STOWAGE_ASYNC_RESULT_TTL_SECONDS", default_value_t = stowage_node::jobs::DEFAULT_RESULT_TTL_SECONDS)]
    pub async_result_ttl_seconds: u64,

    /// Times an asynchronous job may reach its model (and fail, or the node die while it runs)
    /// before it fails for good.
    #[arg(long, env = "STOWAGE_ASYNC_MAX_ATTEMPTS", default_value_t = stowage_node::jobs::DEFAULT_MAX_ATTEMPTS)]
    pub async_max_attempts: u32,

    /// Most asynchronous jobs running at once (default: --inference-threads). Jobs only start
    /// while no synchronous request waits for the node's threads or the job's model.
    #[arg(long, env = "STOWAGE_ASYNC_CONCURRENCY")]
    pub async_concurrency: Option<usize>,

    /// POST every ended asynchronous job (as GET /async/results/{id} shows it) to this http:// URL,
    /// unless its request names its own callback_url.
    #[arg(long, env = "STOWAGE_ASYNC_CALLBACK_URL")]
    pub async_callback_url: Option<String>,

    /// Let a request name its own callback (`callback_url` in the body). Off by default: the node
    /// would POST to any address a client names.
    #[arg(long, env = "STOWAGE_ASYNC_REQUEST_CALLBACKS")]
    pub async_request_callbacks: bool,
}

/// Default of `--admin-host`.
pub const DEFAULT_ADMIN_HOST: &str = "127.0.0.1";
/// The environment variable that may hold the admin API's bearer token (never a flag: flags
/// show in `ps`).
pub const ADMIN_TOKEN_ENV: &str = "STOWAGE_ADMIN_TOKEN";

/// Which engine runs a model, and how (`serve` and `profile`).
#[derive(Debug, Clone, clap::Args)]
pub struct EngineArgs {
    /// Engine for models whose catalog entry names none: auto (the faster of tract and ONNX
    /// Runtime on a typical request, measured when the model loads; kept by its sha256 under
    /// --cache-dir), tract or ort.
    #[arg(long, env = "STOWAGE_ENGINE", default_value = "auto")]
    pub engine: stowage_core::Engine,

    /// The ONNX Runtime shared library (libonnxruntime.so.*) for the ort engine; else ORT_DYLIB_PATH.
    #[arg(long, env = "STOWAGE_ORT_LIBRARY")]
    pub ort_library: Option<PathBuf>,

    /// ONNX Runtime's intra-op threads: one pool of this many that every model's session shares
    /// (default: one per CPU), so a lone request uses the idle cores and many at once never run
    /// more threads than this. 1: each inference on the thread that runs it.
    #[arg(long, env = "STOWAGE_ORT_INTRA_THREADS")]
    pub ort_intra_threads: Option<usize>,

    /// Run ort models on these CUDA devices, comma-separated (g4dn nodes: 0,1,2,3 on a 4-GPU
    /// type): the models take them in turn, in plan order. Needs the onnxruntime-gpu library
    /// (scripts/ort-lib.sh --gpu); a model that cannot get its GPU fails instead of using the CPU.
    #[arg(long, env = "STOWAGE_ORT_CUDA_DEVICE", value_delimiter = ',')]
    pub ort_cuda_device: Vec<i32>,
}

impl EngineArgs {
    /// The engine settings; a model's CUDA device is its turn of `--ort-cuda-device` (the first
    /// one here: `stowage profile` measures one model at a time).
    pub fn options(&self) -> EngineOptions {
        EngineOptions {
            ort_intra_threads: self.ort_intra_threads.unwrap_or_else(default_ort_intra_threads),
            ort_cuda_device: self.ort_cuda_device.first().copied(),
        }
    }
}

/// Where s3:// model files come from and where they are kept.
#[derive(Debug, Clone, clap::Args)]
pub struct S3Args {
    /// Folder for files fetched from S3, reused across restarts while valid
    /// (default: $XDG_CACHE_HOME/stowage, else ~/.cache/stowage).
    #[arg(long, env = "STOWAGE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,

    /// S3-compatible endpoint (MinIO, a local test server); else AWS_ENDPOINT_URL, else AWS.
    /// Credentials always come from the default chain (environment, profile, IRSA, instance role).
    #[arg(long, env = "STOWAGE_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,

    /// Models downloading at once.
    #[arg(long, env = "STOWAGE_FETCH_PARALLELISM", default_value_t = DEFAULT_FETCH_PARALLELISM)]
    pub fetch_parallelism: usize,

    /// Further attempts after a transient S3 failure (connection, timeout, throttling, 5xx).
    #[arg(long, env = "STOWAGE_FETCH_RETRIES", default_value_t = DEFAULT_FETCH_RETRIES)]
    pub fetch_retries: u32,

    /// First retry delay in milliseconds; each retry doubles it (capped at 20 s), with jitter.
    #[arg(long, env = "STOWAGE_FETCH_BACKOFF_MS", default_value_t = DEFAULT_FETCH_BACKOFF_MS)]
    pub fetch_backoff_ms: u64,

    /// Seconds an S3 request may wait for the first byte of the answer, and a download for its
    /// next byte; an attempt may take three times as long until the answer's headers. Each
    /// failed attempt is retried (--fetch-retries), so an endpoint that never answers fails a
    /// model after about (retries + 1) × this, plus the backoff.
    #[arg(long, env = "STOWAGE_S3_READ_TIMEOUT_SECONDS", default_value_t = DEFAULT_READ_TIMEOUT_SECONDS, value_parser = clap::builder::RangedU64ValueParser::<u64>::new().range(1..))]
    pub s3_read_timeout_seconds: u64,
}

impl S3Args {
    pub fn fetch_options(&self) -> FetchOptions {
        let d = FetchOptions::default();
        let read = std::time::Duration::from_secs(self.s3_read_timeout_seconds);
        FetchOptions {
            cache_dir: self.cache_dir.clone().unwrap_or(d.cache_dir),
            endpoint: self.s3_endpoint.clone(),
            retries: self.fetch_retries,
            backoff: std::time::Duration::from_millis(self.fetch_backoff_ms),
            stall_timeout: read,
            timeouts: Timeouts { read, attempt: read * 3, ..d.timeouts },
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct SynthArgs {
    /// Folder to write into: one subfolder per model, and models.toml.
    #[arg(long, env = "STOWAGE_SYNTH_DIR", default_value = "synth")]
    pub out: PathBuf,

    /// How many models (each with its own random weights).
    #[arg(long, env = "STOWAGE_COUNT", default_value_t = 4)]
    pub count: usize,

    /// Size preset.
    #[arg(long, env = "STOWAGE_PRESET", value_enum, default_value_t = stowage_synth::Preset::Tiny)]
    pub preset: stowage_synth::Preset,

    /// Override the preset's number of transformer layers.
    #[arg(long, env = "STOWAGE_LAYERS")]
    pub layers: Option<usize>,

    /// Override the preset's hidden size.
    #[arg(long, env = "STOWAGE_HIDDEN")]
    pub hidden: Option<usize>,

    /// Override the preset's number of attention heads.
    #[arg(long, env = "STOWAGE_HEADS")]
    pub heads: Option<usize>,

    /// Override the preset's vocabulary size.
    #[arg(long, env = "STOWAGE_VOCAB")]
    pub vocab: Option<usize>,

    /// Classification labels of each model.
    #[arg(long, env = "STOWAGE_LABELS", default_value_t = 2)]
    pub labels: usize,

    /// Make every n-th model an embedding model (output last_hidden_state); 0 for none.
    #[arg(long, env = "STOWAGE_EMBEDDING_EVERY", default_value_t = 0)]
    pub embedding_every: usize,

    /// Model ids are PREFIX-0001, PREFIX-0002, …; defaults to the preset's name.
    #[arg(long, env = "STOWAGE_MODEL_PREFIX")]
    pub prefix: Option<String>,

    /// Expected peak requests/s per model, written into the catalog.
    #[arg(long, env = "STOWAGE_PEAK_RPS", default_value_t = 2.0)]
    pub peak_rps: f64,

    /// Plan the models onto one small local instance type, `local.small`, that holds N of them,
    /// instead of the AWS types: a plan of several nodes for `scripts/deploy.sh --runtime local`.
    #[arg(long, env = "STOWAGE_PER_NODE", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub per_node: Option<usize>,

    /// Seed of the random weights.
    #[arg(long, env = "STOWAGE_SYNTH_SEED", default_value_t = 1)]
    pub seed: u64,
}

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// Model catalog to pack (models.toml).
    #[arg(long, env = "STOWAGE_CATALOG")]
    pub catalog: PathBuf,

    /// Where to write the plan.
    #[arg(long, env = "STOWAGE_PLAN_OUT", default_value = "plan.json")]
    pub out: PathBuf,

    /// Also draw the packing as an SVG picture here.
    #[arg(long, env = "STOWAGE_SVG")]
    pub svg: Option<PathBuf>,

    /// Wall-clock limit for the solver, in seconds. Plans are deterministic unless it is reached.
    #[arg(long, env = "STOWAGE_TIME_LIMIT", default_value_t = DEFAULT_TIME_LIMIT_SECONDS)]
    pub time_limit: f64,

    /// Solver to use.
    #[arg(long, env = "STOWAGE_METHOD", value_enum, default_value_t = Method::Auto)]
    pub method: Method,

    /// With --method auto, the largest catalog solved by the exact MILP.
    #[arg(long, env = "STOWAGE_EXACT_MAX_MODELS", default_value_t = DEFAULT_EXACT_MAX_MODELS)]
    pub exact_max_models: usize,

    /// Iterations of the large-neighbourhood search.
    #[arg(long, env = "STOWAGE_LNS_ITERATIONS", default_value_t = DEFAULT_LNS_ITERATIONS)]
    pub lns_iterations: usize,

    /// Seed of the search's random choices.
    #[arg(long, env = "STOWAGE_PLAN_SEED", default_value_t = DEFAULT_SEED)]
    pub seed: u64,

    /// Seconds the column-generation lower bound may take where the plan is over 1 % above the
    /// continuous one (0: the continuous bound only).
    #[arg(long, env = "STOWAGE_BOUND_TIME", default_value_t = DEFAULT_BOUND_SECONDS)]
    pub bound_time: f64,

    /// The plan running now: start from its placement and move as few model bytes as the cost
    /// budget allows; node ids of kept nodes stay, new nodes get ids never used before, and the
    /// plan gets a `changes` block.
    #[arg(long, env = "STOWAGE_PREVIOUS_PLAN")]
    pub previous: Option<PathBuf>,

    /// With --previous: the plan may cost up to this share more than a fresh plan of the catalog
    /// (made in the same run) to move fewer models.
    #[arg(long, env = "STOWAGE_MAX_COST_INCREASE", default_value_t = stowage_planner::replan::DEFAULT_MAX_COST_INCREASE, requires = "previous")]
    pub max_cost_increase: f64,

    /// With --previous: instead of the cost budget, move at most this many models to save money
    /// (moves the limits force are not counted); the cost left on the table is reported.
    #[arg(long, env = "STOWAGE_MAX_MOVES", requires = "previous")]
    pub max_moves: Option<usize>,
}

#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// The plan before.
    pub before: PathBuf,

    /// The plan after.
    pub after: PathBuf,

    /// The catalog of the plan after, for the bytes to reload (default: models.toml beside it,
    /// if it is that plan's catalog).
    #[arg(long, env = "STOWAGE_CATALOG")]
    pub catalog: Option<PathBuf>,

    /// Print the changes as JSON (the plan's `changes` block) instead of text.
    #[arg(long)]
    pub json: bool,
}

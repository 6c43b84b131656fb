//! `stowage manifests`: Kubernetes objects for a plan, built from typed k8s-openapi structs (so
//! the output is schema-correct by construction), written as YAML with a kustomization.yaml.
//!
//! Per node: Deployment, Service and PodDisruptionBudget named after the node id. Once per plan:
//! Namespace, ServiceAccount (IRSA annotation), the plan+catalog ConfigMap, one Ingress routing
//! `/predictions/<model-id>` to the node that hosts it.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec, MetricTarget,
    ResourceMetricSource,
};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    HTTPGetAction, Namespace, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    SeccompProfile, SecurityContext, Service, ServiceAccount, ServicePort, ServiceSpec, Toleration, Volume,
    VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, IPBlock, Ingress, IngressBackend, IngressRule, IngressServiceBackend,
    IngressSpec, NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
    ServiceBackendPort,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;
use stowage_core::{Catalog, Plan, PlanNode};

use crate::slices::{plan_slice, sha256, SliceError, Slicer};

pub const PORT: i32 = 8080;
/// KServe v2 over gRPC on the nodes and the gateway (`--grpc-port`; Triton's gRPC port); the gateway's default
/// `--node-grpc-url` reaches the nodes' Services on it.
pub const GRPC_PORT: i32 = 8001;
const CONFIG_DIR: &str = "/etc/stowage";
const CACHE_DIR: &str = "/var/cache/stowage";
/// The node's admin API port, bound to the pod's loopback.
pub const ADMIN_PORT: &str = "8081";
/// The node's health checks' own port (`--probe-port`), which the kubelet probes.
pub const PROBE_PORT: i32 = 8082;
/// The uid the images run as (docker/Dockerfile.*: `USER 10001`).
pub const RUN_AS_USER: i64 = 10001;

/// Settings of `stowage manifests`.
#[derive(Debug, Clone)]
pub struct ManifestOptions {
    pub namespace: String,
    /// Image per family kind: cpu (c5 and others), gpu (g4dn), inf (inf1).
    pub image_cpu: String,
    pub image_gpu: String,
    pub image_inf: String,
    pub replicas: i32,
    pub ingress_class: String,
    pub ingress_host: Option<String>,
    /// IAM role for the pods' ServiceAccount (EKS IRSA), for S3 access.
    pub irsa_role_arn: Option<String>,
    /// Seconds a node may take to drain on SIGTERM.
    pub drain_seconds: i64,
    /// Seconds a node serves on after SIGTERM, not ready, before refusing new requests: the time
    /// the Service's endpoints and the Ingress take to drop a terminating pod.
    pub shutdown_delay_seconds: i64,
    /// Seconds a node may take to load and warm up its models before it is restarted.
    pub startup_seconds: i32,
    /// With a value above `replicas`, a HorizontalPodAutoscaler per node scales its pods on CPU.
    pub hpa_max_replicas: Option<i32>,
    /// Gateway pods at least (an HPA scales them up to `gateway_max_replicas` on CPU).
    pub gateway_replicas: i32,
    pub gateway_max_replicas: i32,
    /// `alb.ingress.kubernetes.io/scheme` when the Ingress class is `alb`: `internal` or
    /// `internet-facing`.
    pub alb_scheme: String,
    /// Only these may reach the nodes' port (a NetworkPolicy): pods of the ingress controller's
    /// namespace and of the nodes' own (a gateway, the load-test clients), and these CIDRs (an
    /// ALB with `target-type: ip` comes from the VPC's). `None`: no NetworkPolicy.
    pub network_policy: Option<NetworkAccess>,
    /// PodMonitors and a Grafana dashboard (`monitoring.yaml`); KEDA autoscaling on load.
    pub monitoring: Option<crate::monitoring::MonitoringOptions>,
    /// Asynchronous requests on an SQS queue per node, KEDA scaling on its depth.
    pub async_queue: Option<crate::jobs::AsyncQueueOptions>,
    /// Prometheus as KEDA queries it: the triggers of nodes that scale to zero, and
    /// `--keda-inflight`'s.
    pub prometheus_url: String,
    /// Seconds a node that scales to zero stays up with no request before KEDA scales it to zero
    /// (its ScaledObject's `cooldownPeriod`).
    pub idle_seconds: i32,
    /// The nodes' pods tolerate the taint of the Karpenter NodePools (`karpenter.rs`) that buy
    /// their instances.
    pub karpenter: bool,
}

/// Who may reach the nodes.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkAccess {
    pub ingress_namespace: String,
    pub cidrs: Vec<String>,
}

/// One output file: its name under the output folder and its YAML documents.
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestFile {
    pub name: String,
    pub yaml: String,
}

fn labels(node: Option<&str>) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "stowage".to_string()),
        ("app.kubernetes.io/part-of".to_string(), "stowage".to_string()),
        ("app.kubernetes.io/managed-by".to_string(), "stowage".to_string()),
    ]);
    if let Some(n) = node {
        l.insert("app.kubernetes.io/instance".into(), n.into());
        l.insert("app.kubernetes.io/component".into(), "node".into());
    }
    l
}

fn selector(node: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "stowage".to_string()),
        ("app.kubernetes.io/instance".to_string(), node.to_string()),
    ])
}

fn meta(name: &str, namespace: Option<&str>, node: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(Into::into),
        labels: Some(labels(node)),
        ..Default::default()
    }
}

fn yaml<T: Serialize>(docs: &[T]) -> String {
    docs.iter()
        .map(|d| serde_yaml_ng::to_string(d).expect("Kubernetes objects serialize"))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// The accelerator a family's pod requests: (resource name, devices per node from compute).
/// inf1 requests none: no engine of Stowage runs on Inferentia yet, so its pods run ONNX Runtime
/// on the CPU (`stowage manifests` refuses them unless told `--allow-cpu-on-inf1`).
fn accelerator(family: &str, compute: f64) -> Option<(&'static str, i64)> {
    match family {
        "g4dn" => Some(("nvidia.com/gpu", gpus(compute))),
        _ => None,
    }
}

/// GPUs of a g4dn type: its compute units.
fn gpus(compute: f64) -> i64 {
    compute.round().max(1.0) as i64
}

/// The taint an inf1 node carries (the Neuron device plugin's): its CPU pods must tolerate it.
const NEURON: &str = "aws.amazon.com/neuron";

/// A probe of `path` on the container port named `port`.
fn probe(port: &str, path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(port.into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Default::default()
    }
}

fn mib(m: f64) -> Quantity {
    Quantity(format!("{}Mi", m.ceil() as i64))
}

/// The container's ports, named for the probes and the Service: HTTP and gRPC.
fn serving_ports() -> Vec<ContainerPort> {
    vec![
        ContainerPort { name: Some("http".into()), container_port: PORT, ..Default::default() },
        ContainerPort { name: Some("grpc".into()), container_port: GRPC_PORT, ..Default::default() },
    ]
}

/// The plan ConfigMap `name`, read-only at CONFIG_DIR.
fn config_mount() -> VolumeMount {
    VolumeMount { name: "plan".into(), mount_path: CONFIG_DIR.into(), read_only: Some(true), ..Default::default() }
}

fn config_volume(name: String) -> Volume {
    Volume {
        name: "plan".into(),
        config_map: Some(ConfigMapVolumeSource { name, ..Default::default() }),
        ..Default::default()
    }
}

/// A container that cannot escalate, writes nothing to its root filesystem and keeps no capability.
fn hardened() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
        ..Default::default()
    }
}

/// The images' non-root user, the runtime's default seccomp profile.
fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS_USER),
        run_as_group: Some(RUN_AS_USER),
        fs_group: Some(RUN_AS_USER),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
        ..Default::default()
    }
}

/// The Service of the pods `selector` picks: HTTP on 8080, gRPC on 8001. The gRPC port is named
/// `grpc` and declares cleartext HTTP/2 (`appProtocol: kubernetes.io/h2c`), so that meshes and
/// Ingress or Gateway API controllers route it as gRPC.
fn http_service(metadata: ObjectMeta, selector: BTreeMap<String, String>) -> Service {
    Service {
        metadata,
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![
                ServicePort {
                    name: Some("http".into()),
                    port: PORT,
                    target_port: Some(IntOrString::String("http".into())),
                    ..Default::default()
                },
                ServicePort {
                    name: Some("grpc".into()),
                    port: GRPC_PORT,
                    target_port: Some(IntOrString::String("grpc".into())),
                    app_protocol: Some("kubernetes.io/h2c".into()),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// One pod of `selector`'s at a time: voluntary evictions proceed, never all at once.
fn one_at_a_time(metadata: ObjectMeta, selector: BTreeMap<String, String>) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata,
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector { match_labels: Some(selector), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Scales Deployment `target` from `min` to `max` pods on CPU (70 %).
fn cpu_hpa(metadata: ObjectMeta, target: &str, min: i32, max: i32) -> HorizontalPodAutoscaler {
    HorizontalPodAutoscaler {
        metadata,
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: target.into(),
            },
            min_replicas: Some(min),
            max_replicas: max,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(70),
                        ..Default::default()
                    },
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What the plan's footprints say a node's models need on `family`.
fn models_mib(node: &PlanNode, catalog: &Catalog, family: &str) -> f64 {
    node.models
        .iter()
        .filter_map(|m| catalog.model(m))
        .filter_map(|m| m.footprints.get(family))
        .map(|f| f.memory_mib)
        .sum()
}

fn deployment(node: &PlanNode, catalog: &Catalog, o: &ManifestOptions) -> Deployment {
    let it = catalog.instance_type(&node.instance_type);
    let family = it.map_or(node.family.as_str(), |t| t.family.as_str());
    let compute = it.map_or(1.0, |t| t.compute);
    // Every GPU the pod requests, the models taking them in turn.
    let devices = (0..gpus(compute)).map(|d| d.to_string()).collect::<Vec<_>>().join(",");
    let (image, mut args) = match family {
        "g4dn" => (&o.image_gpu, vec!["--engine", "ort", "--ort-cuda-device", devices.as_str()]),
        "inf1" => (&o.image_inf, vec!["--engine", "ort"]),
        _ => (&o.image_cpu, vec!["--engine", "ort"]),
    };
    let mut all = vec![
        "serve",
        "--plan",
        "/etc/stowage/plan.json",
        "--catalog",
        "/etc/stowage/models.toml",
        "--node",
        node.id.as_str(),
    ];
    all.append(&mut args);
    let (drain, delay) = (o.drain_seconds.to_string(), o.shutdown_delay_seconds.to_string());
    all.extend(["--port", "8080", "--drain-seconds", drain.as_str(), "--shutdown-delay-seconds", delay.as_str()]);
    all.extend(["--cache-dir", CACHE_DIR, "--json-logs"]);
    // The admin API on the pod's loopback only: `kubectl port-forward` reaches it, nothing else.
    all.extend(["--admin-port", ADMIN_PORT]);
    let (probe_port, grpc_port) = (PROBE_PORT.to_string(), GRPC_PORT.to_string());
    all.extend(["--probe-port", probe_port.as_str(), "--grpc-port", grpc_port.as_str()]);

    // Resources come from the instance type alone, never from the node's models: a plan change
    // that moves models only rewrites the node's ConfigMap (the node reloads it in place), and
    // Kubernetes restarts nothing. The pod owns its instance: it requests the memory the planner
    // lets models use there (`max_memory` of it) plus the server's own, with the instance's
    // memory as the limit, so it can never crowd out its neighbours' pods; CPU is the planner's
    // utilization limit of the type's compute.
    let planned_mib =
        it.map_or_else(|| models_mib(node, catalog, family), |t| t.memory_gib * 1024.0 * catalog.limits.max_memory);
    let limit_mib = it.map_or(planned_mib + 512.0, |t| t.memory_gib * 1024.0);
    // At most 85 % of the instance's memory: the kubelet and system daemons keep the rest
    // (EKS reserves about 0.9 GiB on an 8 GiB c5.xlarge), and a request above what the node
    // can allocate would never schedule.
    let request_mib = (planned_mib + 256.0).min(limit_mib * 0.85);
    let mut cores = compute * catalog.limits.max_utilization;
    if family == "inf1" {
        // CPU pods on inf1 (`--allow-cpu-on-inf1`): what their models need on CPUs (their c5
        // footprints, else their own), at most the type's share. The one request that follows
        // the models: such a node's pods restart when its models change.
        let needed: f64 = node
            .models
            .iter()
            .filter_map(|m| catalog.model(m))
            .filter_map(|m| {
                m.footprints.get("c5").or_else(|| m.footprints.get(family)).map(|f| m.peak_rps * f.service_ms / 1000.0)
            })
            .sum();
        cores = cores.min(needed);
    }
    let mut requests = BTreeMap::from([
        ("memory".to_string(), mib(request_mib)),
        ("cpu".to_string(), Quantity(format!("{}m", (cores.max(0.25) * 1000.0).ceil() as i64))),
    ]);
    let mut limits = BTreeMap::from([("memory".to_string(), mib(limit_mib))]);
    let tolerate = |key: &str| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some("NoSchedule".into()),
        ..Default::default()
    };
    let mut tolerations = Vec::new();
    if let Some((resource, count)) = accelerator(family, compute) {
        requests.insert(resource.into(), Quantity(count.to_string()));
        limits.insert(resource.into(), Quantity(count.to_string()));
        tolerations.push(tolerate(resource));
    }
    if family == "inf1" {
        tolerations.push(tolerate(NEURON));
    }
    if o.karpenter {
        tolerations.push(crate::karpenter::toleration());
    }
    let mut env = vec![EnvVar { name: "RUST_LOG".into(), value: Some("info".into()), ..Default::default() }];
    if let Some(q) = &o.async_queue {
        env.extend(q.env(&node.id).into_iter().map(|(name, value)| EnvVar {
            name: name.into(),
            value: Some(value),
            ..Default::default()
        }));
    }
    let container = Container {
        name: "stowage".into(),
        image: Some(image.clone()),
        args: Some(all.into_iter().map(String::from).collect()),
        ports: Some(
            serving_ports()
                .into_iter()
                .chain([ContainerPort { name: Some("probe".into()), container_port: PROBE_PORT, ..Default::default() }])
                .collect(),
        ),
        env: Some(env),
        resources: Some(ResourceRequirements { requests: Some(requests), limits: Some(limits), ..Default::default() }),
        // The node answers its probes on a listener of their own (`--probe-port`): clients that
        // hold every serving connection cannot make the kubelet restart or unready it.
        liveness_probe: Some(probe("probe", "/ping", 10, 3)),
        readiness_probe: Some(probe("probe", "/ready", 5, 2)),
        startup_probe: Some(probe("probe", "/ready", 10, (o.startup_seconds / 10).max(1))),
        volume_mounts: Some(vec![
            config_mount(),
            VolumeMount { name: "cache".into(), mount_path: CACHE_DIR.into(), ..Default::default() },
            VolumeMount { name: "tmp".into(), mount_path: "/tmp".into(), ..Default::default() },
        ]),
        security_context: Some(hardened()),
        ..Default::default()
    };
    // Models and tokenizers land in the cache: room for as many models as the type holds, with a
    // margin for downloads in flight (a reload fetches the new models beside the old ones);
    // beyond, the kubelet evicts the pod instead of filling the node's disk.
    let cache_limit = mib(planned_mib * 1.5 + 1024.0);
    let pod = PodSpec {
        service_account_name: Some("stowage".into()),
        // Nothing in the pod talks to the Kubernetes API: no token unless IRSA needs one.
        automount_service_account_token: o.irsa_role_arn.is_none().then_some(false),
        node_selector: Some(BTreeMap::from([(
            "node.kubernetes.io/instance-type".to_string(),
            node.instance_type.clone(),
        )])),
        tolerations: (!tolerations.is_empty()).then_some(tolerations),
        termination_grace_period_seconds: Some(o.shutdown_delay_seconds + o.drain_seconds + 15),
        security_context: Some(pod_security()),
        containers: vec![container],
        volumes: Some(vec![
            config_volume(node_config_name(&node.id)),
            Volume { name: "cache".into(), empty_dir: Some(sized(cache_limit)), ..Default::default() },
            Volume { name: "tmp".into(), empty_dir: Some(sized(mib(256.0))), ..Default::default() },
        ]),
        ..Default::default()
    };
    Deployment {
        metadata: meta(&node.id, Some(&o.namespace), Some(&node.id)),
        spec: Some(DeploymentSpec {
            // A node that scales to zero: its ScaledObject owns the count (applying the manifests
            // again must not wake it).
            replicas: (!node.scales_to_zero()).then_some(o.replicas),
            selector: LabelSelector { match_labels: Some(selector(&node.id)), ..Default::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(Some(&node.id))),
                    annotations: Some(BTreeMap::from([(
                        "stowage.dev/instance-type".to_string(),
                        node.instance_type.clone(),
                    )])),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn service(node: &PlanNode, o: &ManifestOptions) -> Service {
    http_service(meta(&node.id, Some(&o.namespace), Some(&node.id)), selector(&node.id))
}

fn pdb(node: &PlanNode, o: &ManifestOptions) -> PodDisruptionBudget {
    one_at_a_time(meta(&node.id, Some(&o.namespace), Some(&node.id)), selector(&node.id))
}

fn hpa(node: &PlanNode, o: &ManifestOptions, max: i32) -> HorizontalPodAutoscaler {
    cpu_hpa(meta(&node.id, Some(&o.namespace), Some(&node.id)), &node.id, o.replicas, max)
}

/// The gateway's name: its Deployment, Service, PDB and HPA.
pub const GATEWAY: &str = "stowage-gateway";

fn gateway_meta(o: &ManifestOptions) -> ObjectMeta {
    let mut m = meta(GATEWAY, Some(&o.namespace), None);
    if let Some(l) = m.labels.as_mut() {
        l.insert("app.kubernetes.io/instance".into(), GATEWAY.into());
        l.insert("app.kubernetes.io/component".into(), "gateway".into());
    }
    m
}

/// The gateway: one address for every model (`stowage gateway`), reading the plan from the
/// `stowage-plan` ConfigMap and reaching each node at its Service. Stateless: an HPA scales it.
fn gateway(o: &ManifestOptions) -> String {
    let select = selector(GATEWAY);
    // As a node: on SIGTERM it forwards on, not ready, while the Ingress lets go of the pod, then
    // drains; a rolling update drops no request.
    let (delay, drain) = (o.shutdown_delay_seconds.to_string(), o.drain_seconds.to_string());
    let container = Container {
        name: "gateway".into(),
        image: Some(o.image_cpu.clone()),
        args: Some(
            [
                "gateway",
                "--plan",
                &format!("{CONFIG_DIR}/plan.json"),
                "--namespace",
                &o.namespace,
                "--port",
                "8080",
                "--grpc-port",
                "8001",
                "--shutdown-delay-seconds",
                &delay,
                "--drain-seconds",
                &drain,
                "--json-logs",
            ]
            .map(String::from)
            .to_vec(),
        ),
        ports: Some(serving_ports()),
        env: Some(vec![EnvVar { name: "RUST_LOG".into(), value: Some("info".into()), ..Default::default() }]),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity("250m".into())),
                ("memory".to_string(), mib(128.0)),
            ])),
            limits: Some(BTreeMap::from([("memory".to_string(), mib(512.0))])),
            ..Default::default()
        }),
        liveness_probe: Some(probe("http", "/ping", 10, 3)),
        readiness_probe: Some(probe("http", "/ready", 5, 2)),
        volume_mounts: Some(vec![config_mount()]),
        security_context: Some(hardened()),
        ..Default::default()
    };
    let deployment = Deployment {
        metadata: gateway_meta(o),
        spec: Some(DeploymentSpec {
            replicas: Some(o.gateway_replicas),
            selector: LabelSelector { match_labels: Some(select.clone()), ..Default::default() },
            template: PodTemplateSpec {
                metadata: Some(gateway_meta(o)),
                spec: Some(PodSpec {
                    automount_service_account_token: Some(false),
                    security_context: Some(pod_security()),
                    containers: vec![container],
                    termination_grace_period_seconds: Some(o.shutdown_delay_seconds + o.drain_seconds + 15),
                    volumes: Some(vec![config_volume("stowage-plan".into())]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    let service = http_service(gateway_meta(o), select.clone());
    let pdb = one_at_a_time(gateway_meta(o), select);
    let hpa = cpu_hpa(gateway_meta(o), GATEWAY, o.gateway_replicas, o.gateway_max_replicas.max(o.gateway_replicas));
    [
        serde_yaml_ng::to_string(&deployment),
        serde_yaml_ng::to_string(&service),
        serde_yaml_ng::to_string(&pdb),
        serde_yaml_ng::to_string(&hpa),
    ]
    .map(|d| d.expect("Kubernetes objects serialize"))
    .join("---\n")
}

/// The one Ingress: a handful of paths, all to the gateway, whatever the number of models (an
/// ALB holds 100 rules, and `kubectl apply` stores an object in a 256 KiB annotation).
fn ingress(o: &ManifestOptions) -> Ingress {
    let path = |prefix: &str| HTTPIngressPath {
        path: Some(prefix.into()),
        path_type: "Prefix".into(),
        backend: IngressBackend {
            service: Some(IngressServiceBackend {
                name: GATEWAY.into(),
                port: Some(ServiceBackendPort { number: Some(PORT), ..Default::default() }),
            }),
            ..Default::default()
        },
    };
    let paths = vec![path("/predictions/"), path("/v2/")];
    let mut metadata = meta("stowage", Some(&o.namespace), None);
    if o.ingress_class == "alb" {
        // The AWS Load Balancer Controller: straight to the pods, health-checked on /ready.
        metadata.annotations = Some(BTreeMap::from([
            ("alb.ingress.kubernetes.io/target-type".to_string(), "ip".to_string()),
            ("alb.ingress.kubernetes.io/healthcheck-path".to_string(), "/ready".to_string()),
            ("alb.ingress.kubernetes.io/scheme".to_string(), o.alb_scheme.clone()),
        ]));
    }
    Ingress {
        metadata,
        spec: Some(IngressSpec {
            ingress_class_name: Some(o.ingress_class.clone()),
            rules: Some(vec![IngressRule { host: o.ingress_host.clone(), http: Some(HTTPIngressRuleValue { paths }) }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn sized(limit: Quantity) -> EmptyDirVolumeSource {
    EmptyDirVolumeSource { size_limit: Some(limit), ..Default::default() }
}

/// Who may reach the nodes' serving ports (HTTP and gRPC): the ingress controller's namespace, the nodes' own namespace,
/// and the CIDRs given. Kubelet probes are not subject to it.
fn network_policy(o: &ManifestOptions, access: &NetworkAccess) -> NetworkPolicy {
    let namespace = |name: &str| NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([("kubernetes.io/metadata.name".to_string(), name.to_string())])),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut from = vec![namespace(&access.ingress_namespace), namespace(&o.namespace)];
    if let Some(m) = &o.monitoring {
        // Prometheus scrapes /metrics on the same port.
        from.push(namespace(&m.prometheus_namespace));
    }
    from.extend(access.cidrs.iter().map(|cidr| NetworkPolicyPeer {
        ip_block: Some(IPBlock { cidr: cidr.clone(), except: None }),
        ..Default::default()
    }));
    NetworkPolicy {
        metadata: meta("stowage-nodes", Some(&o.namespace), None),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([
                    ("app.kubernetes.io/name".to_string(), "stowage".to_string()),
                    ("app.kubernetes.io/component".to_string(), "node".to_string()),
                ])),
                ..Default::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(from),
                ports: Some(
                    [PORT, GRPC_PORT]
                        .map(|port| NetworkPolicyPort {
                            port: Some(IntOrString::Int(port)),
                            protocol: Some("TCP".into()),
                            ..Default::default()
                        })
                        .to_vec(),
                ),
            }]),
            ..Default::default()
        }),
    }
}

/// Every file of the deployment, in a stable order. `plan_json` goes to the gateway's ConfigMap as
/// it is; each node's ConfigMap holds its slice of the plan and of `catalog_toml`.
pub fn render(
    plan: &Plan,
    catalog: &Catalog,
    plan_json: &str,
    catalog_toml: &str,
    o: &ManifestOptions,
) -> Result<Vec<ManifestFile>, SliceError> {
    let ns = Namespace {
        metadata: ObjectMeta { name: Some(o.namespace.clone()), labels: Some(labels(None)), ..Default::default() },
        ..Default::default()
    };
    let mut sa_meta = meta("stowage", Some(&o.namespace), None);
    if let Some(arn) = &o.irsa_role_arn {
        sa_meta.annotations = Some(BTreeMap::from([("eks.amazonaws.com/role-arn".to_string(), arn.clone())]));
    }
    let sa = ServiceAccount { metadata: sa_meta, ..Default::default() };
    // The gateway's routes: the plan alone (no catalog: it routes, it loads nothing).
    let cm = ConfigMap {
        metadata: meta("stowage-plan", Some(&o.namespace), None),
        data: Some(BTreeMap::from([("plan.json".to_string(), plan_json.to_string())])),
        ..Default::default()
    };
    let mut files = vec![
        ManifestFile { name: "namespace.yaml".into(), yaml: yaml(&[ns]) },
        ManifestFile { name: "serviceaccount.yaml".into(), yaml: yaml(&[sa]) },
        ManifestFile { name: "configmap.yaml".into(), yaml: yaml(&[cm]) },
        ManifestFile { name: "ingress.yaml".into(), yaml: yaml(&[ingress(o)]) },
        ManifestFile { name: "gateway.yaml".into(), yaml: gateway(o) },
    ];
    if let Some(access) = &o.network_policy {
        files.push(ManifestFile { name: "networkpolicy.yaml".into(), yaml: yaml(&[network_policy(o, access)]) });
    }
    let slicer = Slicer::new(catalog_toml)?;
    for n in &plan.nodes {
        let catalog_part = slicer.slice(&n.models);
        let plan_part = plan_slice(plan, n, &sha256(&catalog_part));
        let node_config = ConfigMap {
            metadata: meta(&node_config_name(&n.id), Some(&o.namespace), Some(&n.id)),
            data: Some(BTreeMap::from([
                ("plan.json".to_string(), plan_part.to_json()),
                ("models.toml".to_string(), catalog_part),
            ])),
            ..Default::default()
        };
        let mut docs = vec![
            serde_yaml_ng::to_string(&node_config).expect("serializes"),
            serde_yaml_ng::to_string(&deployment(n, catalog, o)).expect("serializes"),
            serde_yaml_ng::to_string(&service(n, o)).expect("serializes"),
            serde_yaml_ng::to_string(&pdb(n, o)).expect("serializes"),
        ];
        let max = o.hpa_max_replicas.filter(|&m| m > o.replicas);
        // KEDA makes (and owns) the node's HPA, on load and queue depth instead of CPU; for a
        // node that scales to zero, from zero on the requests the gateway holds for it.
        let mut triggers = Vec::new();
        if n.scales_to_zero() {
            triggers.extend(crate::monitoring::wake_triggers(n, &o.namespace, &o.prometheus_url));
        }
        if max.is_some() {
            if let Some(keda) = o.monitoring.as_ref().and_then(|m| m.keda.as_ref()) {
                triggers.push(crate::monitoring::inflight_trigger(n, &o.namespace, keda));
            }
            if let Some(q) = &o.async_queue {
                triggers.push(crate::jobs::sqs_trigger(n, q));
            }
        }
        if n.scales_to_zero() {
            let max = max.unwrap_or(o.replicas).max(1);
            docs.push(crate::monitoring::scaled_object(n, &o.namespace, triggers, 0, max, o.idle_seconds));
        } else if let Some(max) = max {
            if triggers.is_empty() {
                docs.push(serde_yaml_ng::to_string(&hpa(n, o, max)).expect("serializes"));
            } else {
                let cooldown = crate::monitoring::DEFAULT_COOLDOWN_SECONDS;
                docs.push(crate::monitoring::scaled_object(n, &o.namespace, triggers, o.replicas, max, cooldown));
            }
        }
        files.push(ManifestFile { name: format!("node-{}.yaml", n.id), yaml: docs.join("---\n") });
    }
    if o.async_queue.is_some() {
        files.push(ManifestFile { name: "async.yaml".into(), yaml: crate::jobs::trigger_authentication(&o.namespace) });
    }
    if o.monitoring.is_some() {
        files.push(ManifestFile {
            name: "monitoring.yaml".into(),
            yaml: crate::monitoring::monitoring_yaml(&o.namespace, GATEWAY),
        });
    }
    let resources: Vec<String> = files.iter().map(|f| format!("  - {}\n", f.name)).collect();
    files.push(ManifestFile {
        name: "kustomization.yaml".into(),
        yaml: format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: {}\nresources:\n{}",
            o.namespace,
            resources.concat()
        ),
    });
    Ok(files)
}

/// The ConfigMap of a node's plan and catalog slice.
pub fn node_config_name(node: &str) -> String {
    format!("{node}-plan")
}

/// The distributed load test: N client pods, each attacking the plan's in-cluster targets at
/// rate/N with vegeta (as the reference did with 40+ clients).
#[derive(Debug, Clone)]
pub struct LoadtestOptions {
    pub clients: i32,
    /// Total requests per second over all clients.
    pub rate: u32,
    pub duration_seconds: u32,
    pub image: String,
    /// vegeta JSON targets (from `targets`), one per line.
    pub targets_json: String,
}

/// `loadtest.yaml`: the targets ConfigMap and the Job. Kept out of kustomization.yaml: apply it
/// when the nodes are ready, gather with scripts/loadtest-gather.sh.
pub fn loadtest(o: &ManifestOptions, l: &LoadtestOptions) -> ManifestFile {
    let name = "stowage-loadtest";
    let mut labels = labels(None);
    labels.insert("app.kubernetes.io/component".into(), "loadtest".into());
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(format!("{name}-targets")),
            namespace: Some(o.namespace.clone()),
            labels: Some(labels.clone()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("targets.json".to_string(), l.targets_json.clone())])),
        ..Default::default()
    };
    let per_client = (l.rate as f64 / l.clients.max(1) as f64).max(1.0).round() as u32;
    let script = format!(
        "vegeta attack -format=json -targets=/targets/targets.json -rate={per_client} -duration={}s | vegeta encode --to json",
        l.duration_seconds
    );
    let container = Container {
        name: "vegeta".into(),
        image: Some(l.image.clone()),
        command: Some(vec!["sh".into(), "-c".into(), script]),
        volume_mounts: Some(vec![VolumeMount {
            name: "targets".into(),
            mount_path: "/targets".into(),
            read_only: Some(true),
            ..Default::default()
        }]),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity("1".into())),
                ("memory".to_string(), Quantity("512Mi".into())),
            ])),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS_USER),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let job = Job {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(o.namespace.clone()),
            labels: Some(labels.clone()),
            ..Default::default()
        },
        spec: Some(JobSpec {
            parallelism: Some(l.clients),
            completions: Some(l.clients),
            backoff_limit: Some(0),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels), ..Default::default() }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    containers: vec![container],
                    volumes: Some(vec![Volume {
                        name: "targets".into(),
                        config_map: Some(ConfigMapVolumeSource {
                            name: format!("{name}-targets"),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    ManifestFile {
        name: "loadtest.yaml".into(),
        yaml: [serde_yaml_ng::to_string(&cm).expect("serializes"), serde_yaml_ng::to_string(&job).expect("serializes")]
            .join("---\n"),
    }
}

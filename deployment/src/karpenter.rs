//! `stowage manifests --karpenter`: what Karpenter needs to buy the EC2 instances a plan's nodes
//! run on — one NodePool per instance type of the plan and the EC2NodeClass they share
//! (`karpenter.yaml`, cluster-scoped, so kept out of kustomization.yaml). Each NodePool:
//! - buys only its instance type, as on-demand capacity, or Spot too where the catalog's type
//!   says `spot = true`;
//! - taints its instances (`stowage.dev/dedicated=true:NoSchedule`), which only the nodes' pods
//!   tolerate, so nothing else lands on them;
//! - is limited to the CPU and memory of the plan's nodes of its type at their most replicas,
//!   plus headroom for rolling updates (each new pod needs an instance of its own);
//! - consolidates only empty instances (a Stowage pod owns its instance: moving it reloads every
//!   model) and disrupts one instance at a time, so a model with r replicas loses at most 1/r of
//!   its capacity at once (the nodes' PodDisruptionBudgets hold too).

use std::collections::BTreeMap;

use serde_json::json;
use stowage_core::{Catalog, Plan};

/// The taint a NodePool puts on its instances and the nodes' pods tolerate.
pub const TAINT_KEY: &str = "stowage.dev/dedicated";
/// The EC2NodeClass the NodePools share.
pub const NODE_CLASS: &str = "stowage";

/// Settings of `--karpenter`.
#[derive(Debug, Clone, PartialEq)]
pub struct KarpenterOptions {
    /// The IAM role of the instances (`--karpenter-role`).
    pub role: String,
    /// The AMI, as an `amiSelectorTerms` alias (`--karpenter-ami`, e.g. `al2023@latest`).
    pub ami_alias: String,
    /// The `karpenter.sh/discovery` tag of the cluster's subnets and security groups.
    pub discovery: String,
    /// Share of instances a NodePool may hold beyond the plan's, at least one (surge).
    pub headroom: f64,
}

/// vCPUs and memory (GiB) of the EC2 instance types of the families Stowage plans for.
pub fn shape(instance_type: &str) -> Option<(u32, u32)> {
    Some(match instance_type {
        "inf1.xlarge" => (4, 8),
        "inf1.2xlarge" => (8, 16),
        "inf1.6xlarge" => (24, 48),
        "inf1.24xlarge" => (96, 192),
        "g4dn.xlarge" => (4, 16),
        "g4dn.2xlarge" => (8, 32),
        "g4dn.4xlarge" => (16, 64),
        "g4dn.8xlarge" => (32, 128),
        "g4dn.12xlarge" => (48, 192),
        "g4dn.16xlarge" => (64, 256),
        "c5.large" => (2, 4),
        "c5.xlarge" => (4, 8),
        "c5.2xlarge" => (8, 16),
        "c5.4xlarge" => (16, 32),
        "c5.9xlarge" => (36, 72),
        "c5.12xlarge" => (48, 96),
        "c5.18xlarge" => (72, 144),
        "c5.24xlarge" => (96, 192),
        _ => return None,
    })
}

/// The NodePool of `instance_type`.
pub fn pool_name(instance_type: &str) -> String {
    format!("stowage-{}", instance_type.replace('.', "-"))
}

/// The toleration the nodes' pods carry (`stowage.dev/dedicated`).
pub fn toleration() -> k8s_openapi::api::core::v1::Toleration {
    k8s_openapi::api::core::v1::Toleration {
        key: Some(TAINT_KEY.into()),
        operator: Some("Equal".into()),
        value: Some("true".into()),
        effect: Some("NoSchedule".into()),
        ..Default::default()
    }
}

/// Why `karpenter.yaml` cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum KarpenterError {
    #[error("--karpenter: instance type {0:?} of the plan is not one whose vCPUs and memory Stowage knows (inf1, g4dn and c5 sizes)")]
    UnknownShape(String),
}

/// `karpenter.yaml`: the EC2NodeClass and a NodePool per instance type of `plan`, each node
/// counted at `max_replicas` pods; an instance type Stowage does not know the shape of is an
/// error naming it.
pub fn karpenter_yaml(
    plan: &Plan,
    catalog: &Catalog,
    max_replicas: i32,
    o: &KarpenterOptions,
) -> Result<String, KarpenterError> {
    let labels = json!({"app.kubernetes.io/name": "stowage", "app.kubernetes.io/part-of": "stowage", "app.kubernetes.io/managed-by": "stowage"});
    let mut per_type: BTreeMap<&str, i64> = BTreeMap::new();
    for n in &plan.nodes {
        *per_type.entry(n.instance_type.as_str()).or_default() += i64::from(max_replicas.max(1));
    }
    let mut docs = vec![json!({
        "apiVersion": "karpenter.k8s.aws/v1",
        "kind": "EC2NodeClass",
        "metadata": {"name": NODE_CLASS, "labels": labels},
        "spec": {
            "role": o.role,
            "amiSelectorTerms": [{"alias": o.ami_alias}],
            "subnetSelectorTerms": [{"tags": {"karpenter.sh/discovery": o.discovery}}],
            "securityGroupSelectorTerms": [{"tags": {"karpenter.sh/discovery": o.discovery}}],
        },
    })];
    for (ty, pods) in per_type {
        let (cpu, memory) = shape(ty).ok_or_else(|| KarpenterError::UnknownShape(ty.to_string()))?;
        let spot = catalog.instance_type(ty).is_some_and(|t| t.spot);
        let capacity: Vec<&str> = if spot { vec!["spot", "on-demand"] } else { vec!["on-demand"] };
        let instances = pods + ((pods as f64 * o.headroom).ceil() as i64).max(1);
        let name = pool_name(ty);
        docs.push(json!({
            "apiVersion": "karpenter.sh/v1",
            "kind": "NodePool",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "template": {
                    "metadata": {"labels": {"stowage.dev/pool": name}},
                    "spec": {
                        "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": NODE_CLASS},
                        "requirements": [
                            {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": [ty]},
                            {"key": "karpenter.sh/capacity-type", "operator": "In", "values": capacity},
                        ],
                        "taints": [{"key": TAINT_KEY, "value": "true", "effect": "NoSchedule"}],
                        "expireAfter": "720h",
                    },
                },
                "limits": {"cpu": (i64::from(cpu) * instances).to_string(), "memory": format!("{}Gi", i64::from(memory) * instances)},
                "disruption": {
                    "consolidationPolicy": "WhenEmpty",
                    "consolidateAfter": "5m",
                    "budgets": [{"nodes": "1"}],
                },
            },
        }));
    }
    Ok(docs.iter().map(|d| serde_yaml_ng::to_string(d).expect("serializes")).collect::<Vec<_>>().join("---\n"))
}

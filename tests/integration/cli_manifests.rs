//! `stowage manifests` as a user runs it, checked by a real Kubernetes schema validator
//! (kubernetes-validate --strict, from PyPI) and rendered by `kubectl kustomize` where kubectl is
//! installed. A plan that uses all three families (c5, g4dn, inf1).
//! STOWAGE_REQUIRE_K8S_VALIDATE=1 (set by scripts/test.sh) makes a missing validator a failure.

use std::path::Path;
use std::process::Command;

use crate::common::{run, stowage};

/// The small three-family catalog, planned in a temporary folder: (folder, catalog, plan).
fn planned() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("models.toml");
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("planner/tests/data/small.toml"), &catalog).unwrap();
    let plan = dir.path().join("plan.json");
    run(stowage().arg("plan").arg("--catalog").arg(&catalog).arg("--out").arg(&plan));
    (dir, catalog, plan)
}

#[test]
fn manifests_for_all_three_families_validate() {
    let (dir, _, plan) = planned();
    let deploy = dir.path().join("deploy");
    // The small catalog's files are local paths: refused, unless the images carry them.
    let refused = stowage().arg("manifests").arg("--plan").arg(&plan).arg("--out").arg(&deploy).output().unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{err}");
    assert!(
        err.contains("are local paths")
            && err.contains("models/shop-de/model.onnx")
            && err.contains("--models-in-image"),
        "{err}"
    );
    assert!(!deploy.exists(), "nothing written when refused");
    // Its inf1 node has no engine that runs on Inferentia: refused, unless deployed as CPU pods.
    let refused = stowage()
        .arg("manifests")
        .arg("--plan")
        .arg(&plan)
        .arg("--out")
        .arg(&deploy)
        .arg("--models-in-image")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{err}");
    assert!(err.contains("1 of the plan's nodes are inf1") && err.contains("--allow-cpu-on-inf1"), "{err}");
    let allowed = stowage()
        .arg("manifests")
        .arg("--plan")
        .arg(&plan)
        .arg("--out")
        .arg(dir.path().join("inf1-as-cpu"))
        .args(["--models-in-image", "--allow-cpu-on-inf1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&allowed.stderr);
    assert!(allowed.status.success() && err.contains("the plan assumed Inferentia speed"), "{err}");
    let out = run(stowage().arg("manifests").arg("--plan").arg(&plan).arg("--out").arg(&deploy).args([
        "--models-in-image",
        "--allow-cpu-on-inf1",
        "--allow-cidrs",
        "10.0.0.0/16",
        "--registry",
        "registry.example/team",
        "--tag",
        "v1",
        "--hpa-max-replicas",
        "3",
        "--loadtest-clients",
        "4",
        "--loadtest-rate",
        "400",
    ]));
    let lt = std::fs::read_to_string(deploy.join("loadtest.yaml")).unwrap();
    assert!(lt.contains("kind: Job") && lt.contains("parallelism: 4") && lt.contains("-rate=100 "), "{lt}");
    assert!(lt.contains("http://g4dn-xlarge-000.stowage.svc.cluster.local:8080/predictions/gpu-only"));
    assert!(!std::fs::read_to_string(deploy.join("kustomization.yaml")).unwrap().contains("loadtest"));
    assert!(out.contains("(3 nodes, 7 models, namespace stowage)"), "{out}");
    let mut names: Vec<String> =
        std::fs::read_dir(&deploy).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
    names.sort();
    assert_eq!(names.iter().filter(|n| n.starts_with("node-")).count(), 3, "{names:?}");
    let gpu = std::fs::read_to_string(deploy.join("node-g4dn-xlarge-000.yaml")).unwrap();
    assert!(gpu.contains("image: registry.example/team/stowage-gpu:v1"));
    // No IRSA: no service-account token in the pods; the cache has a size limit.
    assert!(gpu.contains("automountServiceAccountToken: false") && gpu.contains("sizeLimit:"), "{gpu}");
    let policy = std::fs::read_to_string(deploy.join("networkpolicy.yaml")).unwrap();
    assert!(
        policy.contains("kubernetes.io/metadata.name: ingress-nginx") && policy.contains("cidr: 10.0.0.0/16"),
        "{policy}"
    );

    let yaml: Vec<_> = names.iter().filter(|n| *n != "kustomization.yaml").map(|n| deploy.join(n)).collect();
    match Command::new("kubernetes-validate").arg("--strict").args(["-k", "1.33"]).args(&yaml).output() {
        Ok(o) => {
            let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
            assert!(o.status.success(), "schema validation failed:\n{text}");
            // Namespace, ServiceAccount, ConfigMap, Ingress, NetworkPolicy, the gateway (Deployment,
            // Service, PDB, HPA), 3 × (ConfigMap, Deployment, Service,
            // PDB, HPA), and the load test's ConfigMap and Job.
            assert_eq!(text.matches(" passed for resource ").count(), 26, "{text}");
        }
        Err(e) => {
            assert!(
                std::env::var("STOWAGE_REQUIRE_K8S_VALIDATE").map_or(true, |v| v != "1"),
                "kubernetes-validate required: {e}"
            );
            eprintln!("skipped schema validation: {e}");
        }
    }
    if let Ok(o) = Command::new("kubectl").arg("kustomize").arg(&deploy).output() {
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(text.matches("\nkind: Deployment").count(), 4, "three nodes and the gateway");
    }

    // Re-running with a smaller plan removes the nodes that are gone.
    std::fs::write(deploy.join("node-old-000.yaml"), "stale").unwrap();
    run(stowage()
        .arg("manifests")
        .args(["--models-in-image", "--allow-cpu-on-inf1"])
        .arg("--plan")
        .arg(&plan)
        .arg("--out")
        .arg(&deploy));
    assert!(!deploy.join("node-old-000.yaml").exists());
}

#[test]
fn manifests_refuse_a_mismatched_catalog() {
    let (dir, catalog, plan) = planned();
    std::fs::write(&catalog, std::fs::read_to_string(&catalog).unwrap() + "\n# edited\n").unwrap();
    let out =
        stowage().arg("manifests").arg("--plan").arg(&plan).arg("--out").arg(dir.path().join("d")).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not the catalog"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn manifests_give_nodes_their_sqs_queues_as_serve_reads_them() {
    let (dir, _, plan) = planned();
    let deploy = dir.path().join("deploy");
    let base = |url: &str| {
        let mut c = stowage();
        c.arg("manifests").arg("--plan").arg(&plan).arg("--out").arg(&deploy);
        c.args(["--models-in-image", "--allow-cpu-on-inf1", "--hpa-max-replicas", "4"]);
        c.args(["--irsa-role-arn", "arn:aws:iam::123456789012:role/stowage", "--async-results", "s3://jobs/r/"]);
        c.args(["--async-queue-url", url]);
        c
    };
    // A URL without {node} would give every node one queue; one without a region needs --aws-region.
    for (url, says) in
        [("https://sqs.eu-west-1.amazonaws.com/1/q", "{node}"), ("http://queues.internal/1/q-{node}", "--aws-region")]
    {
        let out = base(url).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.code() == Some(1) && err.contains(says), "{url}: {err}");
    }
    run(&mut base("https://sqs.eu-west-1.amazonaws.com/123456789012/stowage-{node}"));
    let node = std::fs::read_to_string(deploy.join("node-c5-xlarge-000.yaml")).unwrap();
    assert!(node.contains("kind: ScaledObject") && node.contains("type: aws-sqs-queue"), "{node}");
    // Every variable the Deployment sets is one `stowage serve` reads.
    let help = run(stowage().args(["serve", "--help"]));
    for var in ["STOWAGE_ASYNC_QUEUE_URL", "STOWAGE_ASYNC_RESULTS", "STOWAGE_ASYNC_VISIBILITY_TIMEOUT_SECONDS"] {
        assert!(node.contains(&format!("name: {var}")), "{var} not set");
        assert!(help.contains(&format!("[env: {var}=")), "serve does not read {var}");
    }
}

#[test]
fn karpenter_pools_are_written_beside_the_kustomization_and_need_a_role() {
    let (dir, _, plan) = planned();
    let deploy = dir.path().join("deploy");
    let base = || {
        let mut c = stowage();
        c.arg("manifests").arg("--plan").arg(&plan).arg("--out").arg(&deploy);
        c.args(["--models-in-image", "--allow-cpu-on-inf1", "--karpenter"]);
        c
    };
    let refused = base().output().unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--karpenter-role"));
    let said = run(base().args(["--karpenter-role", "KarpenterNodeRole-stowage"]));
    assert!(said.contains("karpenter.yaml first"), "{said}");
    let karpenter = std::fs::read_to_string(deploy.join("karpenter.yaml")).unwrap();
    let plan = stowage_core::Plan::load(&plan).unwrap();
    let types: std::collections::BTreeSet<&str> = plan.nodes.iter().map(|n| n.instance_type.as_str()).collect();
    assert_eq!(karpenter.matches("kind: NodePool").count(), types.len(), "{karpenter}");
    assert!(karpenter.contains("role: KarpenterNodeRole-stowage") && karpenter.contains("alias: al2023@latest"));
    // Cluster-scoped: not in the namespaced kustomization.
    let kustomization = std::fs::read_to_string(deploy.join("kustomization.yaml")).unwrap();
    assert!(!kustomization.contains("karpenter"), "{kustomization}");
    let node = std::fs::read_to_string(deploy.join(format!("node-{}.yaml", plan.nodes[0].id))).unwrap();
    assert!(node.contains("key: stowage.dev/dedicated"), "{node}");
}

//! Manifests of the small golden plan (c5, g4dn and inf1 nodes): golden files, and the rules each
//! family's Deployment must follow. `UPDATE_GOLDEN=1` rewrites tests/data/manifests/.

use std::path::Path;

use stowage_core::{Catalog, Plan};
use stowage_deployment::manifests::{render, ManifestOptions, NetworkAccess};

fn opts() -> ManifestOptions {
    ManifestOptions {
        namespace: "stowage".into(),
        image_cpu: "registry.example/stowage-cpu:1".into(),
        image_gpu: "registry.example/stowage-gpu:1".into(),
        image_inf: "registry.example/stowage-inf:1".into(),
        replicas: 1,
        ingress_class: "nginx".into(),
        ingress_host: Some("models.example".into()),
        irsa_role_arn: Some("arn:aws:iam::123456789012:role/stowage".into()),
        drain_seconds: 30,
        shutdown_delay_seconds: 5,
        startup_seconds: 600,
        hpa_max_replicas: None,
        gateway_replicas: 2,
        gateway_max_replicas: 10,
        alb_scheme: "internal".into(),
        network_policy: Some(NetworkAccess {
            ingress_namespace: "ingress-nginx".into(),
            cidrs: vec!["10.0.0.0/16".into()],
        }),
        monitoring: None,
        async_queue: None,
        prometheus_url: "http://prometheus.monitoring:9090".into(),
        idle_seconds: 300,
        karpenter: false,
    }
}

fn files() -> Vec<stowage_deployment::manifests::ManifestFile> {
    // The planner's golden plan of its small catalog is the input.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../planner/tests/data");
    let plan_json = std::fs::read_to_string(dir.join("small.plan.json")).unwrap();
    let plan = Plan::parse("small.plan.json", &plan_json).unwrap();
    let catalog = Catalog::load(dir.join("small.toml")).unwrap();
    let toml = std::fs::read_to_string(dir.join("small.toml")).unwrap();
    render(&plan, &catalog, &plan_json, &toml, &opts()).unwrap()
}

#[test]
fn small_plan_matches_golden_manifests() {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/manifests");
    let files = files();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(&golden).unwrap();
        for f in &files {
            std::fs::write(golden.join(&f.name), &f.yaml).unwrap();
        }
    }
    for f in &files {
        let want = std::fs::read_to_string(golden.join(&f.name)).unwrap_or_else(|_| panic!("no golden {}", f.name));
        assert_eq!(f.yaml, want, "{} differs; rerun with UPDATE_GOLDEN=1 if intended", f.name);
    }
    assert_eq!(std::fs::read_dir(&golden).unwrap().count(), files.len());
}

#[test]
fn each_family_gets_its_selector_accelerator_and_image() {
    let files = files();
    let node = |name: &str| files.iter().find(|f| f.name == name).unwrap().yaml.clone();
    let gpu = node("node-g4dn-xlarge-000.yaml");
    assert!(gpu.contains("node.kubernetes.io/instance-type: g4dn.xlarge"));
    assert!(gpu.contains("nvidia.com/gpu: '1'") && gpu.contains("key: nvidia.com/gpu"));
    assert!(gpu.contains("image: registry.example/stowage-gpu:1") && gpu.contains("--ort-cuda-device"));
    assert!(gpu.contains("- --ort-cuda-device\n") && gpu.contains("- '0'\n"), "one GPU, device 0: {gpu}");
    // No engine runs on Inferentia yet: an inf1 pod is a CPU pod that tolerates the node's taint.
    let inf = node("node-inf1-xlarge-000.yaml");
    assert!(!inf.contains("aws.amazon.com/neuron: '") && inf.contains("key: aws.amazon.com/neuron"), "{inf}");
    assert!(!inf.contains("IPC_LOCK") && inf.contains("image: registry.example/stowage-inf:1"));
    let cpu = node("node-c5-xlarge-000.yaml");
    assert!(!cpu.contains("nvidia.com") && !cpu.contains("neuron") && !cpu.contains("tolerations"));
    for y in [&gpu, &inf, &cpu] {
        assert!(y.contains("readOnlyRootFilesystem: true") && y.contains("runAsNonRoot: true") && y.contains("- ALL"));
        assert!(y.contains("terminationGracePeriodSeconds: 50"), "grace above the 5 s delay and the 30 s drain");
        assert!(y.contains("- --shutdown-delay-seconds\n") && y.contains("- '5'\n"), "{y}");
        assert!(y.contains("path: /ping") && y.contains("path: /ready") && y.contains("startupProbe"));
        assert_eq!(y.split("---\n").count(), 4);
        for kind in ["kind: ConfigMap", "kind: Deployment", "kind: Service", "kind: PodDisruptionBudget"] {
            assert!(y.contains(kind), "{kind}");
        }
    }
    // The Ingress has two paths, both to the gateway, however many models the plan has.
    let ingress = node("ingress.yaml");
    assert_eq!(ingress.matches("path: ").count(), 2, "{ingress}");
    assert!(
        ingress.contains("path: /predictions/\n")
            && ingress.contains("path: /v2/\n")
            && ingress.contains("pathType: Prefix")
    );
    assert_eq!(ingress.matches("name: stowage-gateway").count(), 2, "{ingress}");
    assert!(!ingress.contains("alb.ingress.kubernetes.io"), "ALB annotations only for the alb class");
    let gateway = node("gateway.yaml");
    for want in [
        "kind: Deployment",
        "kind: Service",
        "kind: PodDisruptionBudget",
        "kind: HorizontalPodAutoscaler",
        "- gateway\n",
        "- /etc/stowage/plan.json\n",
        "replicas: 2",
        "maxReplicas: 10",
        "app.kubernetes.io/component: gateway",
    ] {
        assert!(gateway.contains(want), "{want}: {gateway}");
    }
    assert!(node("serviceaccount.yaml").contains("eks.amazonaws.com/role-arn: arn:aws:iam::123456789012:role/stowage"));
    let k = node("kustomization.yaml");
    assert!(files.iter().filter(|f| f.name != "kustomization.yaml").all(|f| k.contains(&format!("- {}", f.name))));
}

#[test]
fn hpa_only_when_asked() {
    // The planner's golden plan of its small catalog is the input.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../planner/tests/data");
    let plan_json = std::fs::read_to_string(dir.join("small.plan.json")).unwrap();
    let plan = Plan::parse("small.plan.json", &plan_json).unwrap();
    let catalog = Catalog::load(dir.join("small.toml")).unwrap();
    let with =
        render(&plan, &catalog, &plan_json, "", &ManifestOptions { hpa_max_replicas: Some(4), ..opts() }).unwrap();
    let node = with.iter().find(|f| f.name == "node-c5-xlarge-000.yaml").unwrap();
    assert!(
        node.yaml.contains("kind: HorizontalPodAutoscaler")
            && node.yaml.contains("maxReplicas: 4")
            && node.yaml.contains("minReplicas: 1")
    );
    assert!(!files()
        .iter()
        .filter(|f| f.name.starts_with("node-"))
        .any(|f| f.yaml.contains("HorizontalPodAutoscaler")));
}

#[test]
fn an_alb_ingress_carries_the_controller_s_annotations() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../planner/tests/data");
    let plan_json = std::fs::read_to_string(dir.join("small.plan.json")).unwrap();
    let plan = Plan::parse("small.plan.json", &plan_json).unwrap();
    let catalog = Catalog::load(dir.join("small.toml")).unwrap();
    let o = ManifestOptions { ingress_class: "alb".into(), alb_scheme: "internet-facing".into(), ..opts() };
    let files = render(&plan, &catalog, &plan_json, "", &o).unwrap();
    let ingress = &files.iter().find(|f| f.name == "ingress.yaml").unwrap().yaml;
    for want in [
        "alb.ingress.kubernetes.io/target-type: ip",
        "alb.ingress.kubernetes.io/healthcheck-path: /ready",
        "alb.ingress.kubernetes.io/scheme: internet-facing",
        "ingressClassName: alb",
    ] {
        assert!(ingress.contains(want), "{want}: {ingress}");
    }
}

#[test]
fn each_node_gets_its_own_slice_of_the_plan_and_catalog_and_it_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../planner/tests/data");
    let plan = Plan::load(dir.join("small.plan.json")).unwrap();
    let toml = std::fs::read_to_string(dir.join("small.toml")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    for node in &plan.nodes {
        let catalog = stowage_deployment::slices::catalog_slice(&toml, &node.models).unwrap();
        let slice = stowage_deployment::slices::plan_slice(&plan, node, &stowage_deployment::slices::sha256(&catalog));
        // As a node reads them from its ConfigMap: plan.json with models.toml beside it.
        let folder = tmp.path().join(&node.id);
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("plan.json"), slice.to_json()).unwrap();
        std::fs::write(folder.join("models.toml"), &catalog).unwrap();
        let loaded = Plan::load(folder.join("plan.json")).unwrap();
        let c = loaded.catalog(&folder.join("plan.json"), None).unwrap();
        let mut ids: Vec<&str> = c.models.iter().map(|m| m.id.as_str()).collect();
        ids.sort();
        let mut want: Vec<&str> = node.models.iter().map(String::as_str).collect();
        want.sort();
        assert_eq!(ids, want, "{}", node.id);
        assert_eq!(loaded.nodes, vec![node.clone()]);
    }
}

/// A catalog of `n` models on S3 and a plan that puts 25 on each node (no solver: only the sizes
/// of what is written matter here).
fn large(n: usize) -> (Plan, Catalog, String, String) {
    let mut toml = String::from(
        "[instance_types.\"inf1.6xlarge\"]\nfamily = \"inf1\"\nprice_per_hour = 1.18\nmemory_gib = 48\ncompute = 16\n\n\
         [profiles.\"bert-base\".inf1]\nmemory_mib = 600\nservice_ms = 6.0\n\n",
    );
    for i in 0..n {
        toml += &format!(
            "[[models]]\nid = \"model-{i:05}\"\nprofile = \"bert-base\"\nartifact = \"s3://stowage-models/model-{i:05}/model.onnx\"\n\
             tokenizer = \"s3://stowage-models/model-{i:05}/tokenizer.json\"\npeak_rps = 2.0\n\n"
        );
    }
    let catalog = Catalog::parse("models.toml", &toml).unwrap();
    let nodes: Vec<serde_json::Value> = (0..n.div_ceil(25))
        .map(|k| {
            let models: Vec<String> = (k * 25..((k + 1) * 25).min(n)).map(|i| format!("model-{i:05}")).collect();
            serde_json::json!({"id": format!("inf1-6xlarge-{k:03}"), "instance_type": "inf1.6xlarge", "family": "inf1",
                "price_per_hour": 1.18, "models": models, "usage": {"memory": 0.34, "utilization": 0.05}})
        })
        .collect();
    let cost = 1.18 * nodes.len() as f64;
    fixture(catalog, toml, nodes, cost)
}

/// A plan of `nodes` for `catalog` (its text `toml`), costing `cost` an hour (its lower bound
/// too): the plan, the catalog, the plan's JSON and the catalog's text.
fn fixture(
    catalog: Catalog,
    toml: String,
    nodes: Vec<serde_json::Value>,
    cost: f64,
) -> (Plan, Catalog, String, String) {
    let plan_json = serde_json::to_string_pretty(&serde_json::json!({
        "format": "stowage-plan/v1", "catalog_sha256": catalog.sha256, "cost_per_hour": cost,
        "lower_bound_per_hour": cost,
        "solver": {"method": "test", "seconds": 0.0, "proven_optimal": false, "gap": 0.0}, "nodes": nodes,
    }))
    .unwrap();
    (Plan::parse("plan.json", &plan_json).unwrap(), catalog, plan_json, toml)
}

#[test]
fn every_object_stays_small_at_ten_thousand_models() {
    let (plan, catalog, plan_json, toml) = large(10_000);
    let files = render(&plan, &catalog, &plan_json, &toml, &opts()).unwrap();
    let mut largest = (0, String::new());
    for f in &files {
        for doc in f.yaml.split("---\n") {
            if doc.len() > largest.0 {
                largest = (doc.len(), f.name.clone());
            }
            // Server-side apply keeps no copy in an annotation: the limit is etcd's 1 MiB per object.
            assert!(doc.len() < 1 << 20, "{}: an object of {} bytes", f.name, doc.len());
        }
        if f.name != "configmap.yaml" {
            // Everything but the gateway's plan also fits client-side `kubectl apply` (256 KiB).
            assert!(f.yaml.split("---\n").all(|d| d.len() < 256 << 10), "{}", f.name);
        }
    }
    let ingress = &files.iter().find(|f| f.name == "ingress.yaml").unwrap().yaml;
    assert!(ingress.len() < 2048, "{ingress}");
    eprintln!("10,000 models, {} nodes: largest object {} KiB ({})", plan.nodes.len(), largest.0 >> 10, largest.1);

    // The same objects pass a real Kubernetes schema validator: the shared ones and the first and
    // last node's (each node's files have the same shape).
    let dir = tempfile::tempdir().unwrap();
    let pick = [
        "configmap.yaml",
        "gateway.yaml",
        "ingress.yaml",
        "networkpolicy.yaml",
        "node-inf1-6xlarge-000.yaml",
        "node-inf1-6xlarge-399.yaml",
    ];
    for f in files.iter().filter(|f| pick.contains(&f.name.as_str())) {
        std::fs::write(dir.path().join(&f.name), &f.yaml).unwrap();
    }
    let paths: Vec<_> = pick.iter().map(|p| dir.path().join(p)).collect();
    match std::process::Command::new("kubernetes-validate").arg("--strict").args(["-k", "1.33"]).args(&paths).output() {
        Ok(o) => {
            let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
            assert!(o.status.success(), "schema validation failed:\n{text}");
            // ConfigMap; the gateway's 4; Ingress; NetworkPolicy; 2 × (ConfigMap, Deployment, Service, PDB).
            assert_eq!(text.matches(" passed for resource ").count(), 15, "{text}");
        }
        Err(e) => {
            assert!(
                std::env::var("STOWAGE_REQUIRE_K8S_VALIDATE").map_or(true, |v| v != "1"),
                "kubernetes-validate required: {e}"
            );
            eprintln!("skipped schema validation: {e}");
        }
    }
}

#[test]
fn a_multi_gpu_node_uses_every_gpu_it_requests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../planner/tests/data");
    let plan_json = std::fs::read_to_string(dir.join("small.plan.json")).unwrap();
    let mut plan = Plan::parse("small.plan.json", &plan_json).unwrap();
    let toml = std::fs::read_to_string(dir.join("small.toml")).unwrap();
    // The same catalog with a four-GPU g4dn type, and the plan's g4dn node on it.
    let toml = toml.replace("[instance_types.\"g4dn.xlarge\"]", "[instance_types.\"g4dn.12xlarge\"]").replace(
        "price_per_hour = 0.526\nmemory_gib = 15\ncompute = 1",
        "price_per_hour = 3.912\nmemory_gib = 60\ncompute = 4",
    );
    let catalog = Catalog::parse("small.toml", &toml).unwrap();
    for n in plan.nodes.iter_mut().filter(|n| n.family == "g4dn") {
        n.instance_type = "g4dn.12xlarge".into();
    }
    let files = render(&plan, &catalog, &plan_json, &toml, &opts()).unwrap();
    let gpu = &files.iter().find(|f| f.name.starts_with("node-g4dn")).unwrap().yaml;
    assert!(gpu.contains("nvidia.com/gpu: '4'") && gpu.contains("- 0,1,2,3\n"), "{gpu}");
}

#[test]
fn a_node_whose_models_change_keeps_its_deployment_and_only_its_configmap_changes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../planner/tests/data");
    let plan_json = std::fs::read_to_string(dir.join("small.plan.json")).unwrap();
    let plan = Plan::parse("small.plan.json", &plan_json).unwrap();
    let catalog = Catalog::load(dir.join("small.toml")).unwrap();
    let toml = std::fs::read_to_string(dir.join("small.toml")).unwrap();
    // The same plan with one model moved from the c5 node to the g4dn node.
    let mut moved = plan.clone();
    let (from, to) = (0, 1);
    let m = moved.nodes[from].models.pop().unwrap();
    moved.nodes[to].models.push(m);
    let before = render(&plan, &catalog, &plan_json, &toml, &opts()).unwrap();
    let after = render(&moved, &catalog, &moved.to_json(), &toml, &opts()).unwrap();
    let docs = |files: &[stowage_deployment::manifests::ManifestFile], node: &str| -> Vec<String> {
        let f = files.iter().find(|f| f.name == format!("node-{node}.yaml")).unwrap();
        f.yaml.split("---\n").map(str::to_string).collect()
    };
    for i in [from, to] {
        let id = &plan.nodes[i].id;
        let (b, a) = (docs(&before, id), docs(&after, id));
        assert!(b[0].contains("kind: ConfigMap") && b[0] != a[0], "{id}: its ConfigMap holds the new slice");
        assert_eq!(&b[1..], &a[1..], "{id}: Deployment, Service, PDB unchanged");
    }
}

#[test]
fn monitoring_watches_nodes_and_gateway_and_its_dashboard_reads_documented_metrics() {
    use stowage_deployment::monitoring::{panels, KedaOptions, MonitoringOptions, NODE_LABEL};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../planner/tests/data");
    let mut plan = Plan::load(dir.join("small.plan.json")).unwrap();
    // Its first node scales to zero.
    plan.nodes[0].min_replicas = 0;
    let plan_json = plan.to_json();
    let catalog = Catalog::load(dir.join("small.toml")).unwrap();
    let toml = std::fs::read_to_string(dir.join("small.toml")).unwrap();
    let keda = KedaOptions { prometheus_url: "http://prometheus.monitoring:9090".into(), inflight_per_pod: 8.0 };
    let o = ManifestOptions {
        hpa_max_replicas: Some(4),
        monitoring: Some(MonitoringOptions { prometheus_namespace: "monitoring".into(), keda: Some(keda) }),
        ..opts()
    };
    let files = render(&plan, &catalog, &plan_json, &toml, &o).unwrap();
    let file = |name: &str| files.iter().find(|f| f.name == name).unwrap_or_else(|| panic!("no {name}")).yaml.clone();
    let docs = |text: &str| -> Vec<serde_json::Value> {
        text.split("---\n").map(|d| serde_yaml_ng::from_str(d).unwrap()).collect()
    };
    assert!(file("kustomization.yaml").contains("  - monitoring.yaml\n"));
    let monitoring = docs(&file("monitoring.yaml"));
    assert_eq!(monitoring.iter().filter(|d| d["kind"] == "PodMonitor").count(), 2);

    // Each PodMonitor selects pods that exist, by labels their pod templates carry, on a named
    // container port, with /metrics; every series gets the node's name.
    let pods: Vec<serde_json::Value> = files
        .iter()
        .filter(|f| f.name.starts_with("node-") || f.name == "gateway.yaml")
        .flat_map(|f| docs(&f.yaml))
        .filter(|d| d["kind"] == "Deployment")
        .map(|d| d["spec"]["template"].clone())
        .collect();
    for pm in monitoring.iter().filter(|d| d["kind"] == "PodMonitor") {
        assert_eq!(pm["apiVersion"], "monitoring.coreos.com/v1");
        let want = pm["spec"]["selector"]["matchLabels"].as_object().unwrap();
        let matched: Vec<&serde_json::Value> =
            pods.iter().filter(|t| want.iter().all(|(k, v)| &t["metadata"]["labels"][k] == v)).collect();
        assert!(!matched.is_empty(), "{} selects no pod", pm["metadata"]["name"]);
        let endpoint = &pm["spec"]["podMetricsEndpoints"][0];
        assert_eq!(endpoint["path"], "/metrics");
        for t in matched {
            let ports = t["spec"]["containers"][0]["ports"].as_array().unwrap();
            assert!(ports.iter().any(|p| p["name"] == endpoint["port"]), "{t}");
        }
        assert_eq!(endpoint["relabelings"][0]["targetLabel"], NODE_LABEL);
    }
    // The dashboard, for Grafana's sidecar: valid JSON with a panel per query set, each query
    // reading only metrics docs/metrics.md lists.
    let cm = monitoring.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let dashboard: serde_json::Value = serde_json::from_str(cm["data"]["stowage.json"].as_str().unwrap()).unwrap();
    assert_eq!(dashboard["panels"].as_array().unwrap().len(), panels("stowage").len());
    let listed = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/metrics.md")).unwrap();
    let mut exprs = Vec::new();
    for p in dashboard["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            exprs.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    for (_, _, queries) in panels("stowage") {
        exprs.extend(queries.into_iter().map(|(e, _)| e));
    }
    let scaled: Vec<serde_json::Value> = files
        .iter()
        .filter(|f| f.name.starts_with("node-"))
        .flat_map(|f| docs(&f.yaml))
        .filter(|d| d["kind"] == "ScaledObject" || d["kind"] == "HorizontalPodAutoscaler")
        .collect();
    // KEDA scales each node on load instead of the CPU HPA; the node that scales to zero, from
    // zero: woken by the requests the gateway holds for it (by its plan id, the gateway's `node`
    // label), kept up while it answers, back to zero after --idle-seconds.
    assert_eq!(scaled.len(), plan.nodes.len());
    for so in &scaled {
        assert_eq!(so["kind"], "ScaledObject");
        let name = so["metadata"]["name"].as_str().unwrap();
        assert_eq!(so["spec"]["scaleTargetRef"]["name"], name);
        let zero = name == plan.nodes[0].id;
        assert_eq!(
            (so["spec"]["minReplicaCount"].as_i64(), so["spec"]["maxReplicaCount"].as_i64()),
            (Some(if zero { 0 } else { 1 }), Some(4))
        );
        let triggers = so["spec"]["triggers"].as_array().unwrap();
        let inflight = triggers.iter().find(|t| t["metadata"]["threshold"] == "8").unwrap();
        assert_eq!(inflight["type"], "prometheus");
        if zero {
            assert_eq!(so["spec"]["cooldownPeriod"], 300);
            let held = triggers.iter().find(|t| t["name"] == "held-at-gateway").unwrap();
            let query = held["metadata"]["query"].as_str().unwrap();
            assert!(query.contains(&format!("node=\"{name}\"")) && query.contains("stowage_gateway_waiting_requests"));
            assert_eq!(held["metadata"]["activationThreshold"], "0");
            assert!(triggers.iter().any(|t| t["name"] == "answered"));
        } else {
            assert_eq!(triggers.len(), 1);
        }
        for t in triggers {
            assert_eq!(t["metadata"]["serverAddress"], "http://prometheus.monitoring:9090");
            exprs.push(t["metadata"]["query"].as_str().unwrap().to_string());
        }
    }
    // Applying the manifests again leaves the node's replicas to KEDA.
    let zero_node = docs(&file(&format!("node-{}.yaml", plan.nodes[0].id)));
    let deployment = zero_node.iter().find(|d| d["kind"] == "Deployment").unwrap();
    assert!(deployment["spec"].get("replicas").is_none(), "{deployment}");
    let other = docs(&file(&format!("node-{}.yaml", plan.nodes[1].id)));
    assert_eq!(other.iter().find(|d| d["kind"] == "Deployment").unwrap()["spec"]["replicas"], 1);
    let mut names = std::collections::BTreeSet::new();
    for e in &exprs {
        let mut rest = e.as_str();
        while let Some(i) = rest.find(|c: char| c.is_ascii_lowercase()) {
            rest = &rest[i..];
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
            let word = &rest[..end];
            if word.starts_with("stowage_") || word.starts_with("process_") {
                let base = ["_bucket", "_sum", "_count"].iter().fold(word, |w, s| w.strip_suffix(s).unwrap_or(w));
                names.insert(base.to_string());
            }
            rest = &rest[end..];
        }
    }
    names.remove(NODE_LABEL);
    assert!(names.len() >= 10, "{names:?}");
    for n in &names {
        assert!(listed.contains(&format!("`{n}`")), "the dashboard reads {n}, which docs/metrics.md does not list");
    }
    // Prometheus itself parses every query (promtool, as recording rules).
    let rules: String = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| {
            format!("      - record: stowage:check_{i}\n        expr: {}\n", serde_json::to_string(e).unwrap())
        })
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("rules.yaml");
    std::fs::write(&path, format!("groups:\n  - name: dashboard\n    rules:\n{rules}")).unwrap();
    match std::process::Command::new("promtool").args(["check", "rules"]).arg(&path).output() {
        Ok(out) => assert!(
            out.status.success(),
            "promtool check rules:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => {
            assert!(std::env::var("CI").is_err(), "promtool required in CI: {e}");
            eprintln!("skipped promtool: {e}");
        }
    }
    // Prometheus may scrape the nodes through the NetworkPolicy.
    let policy = file("networkpolicy.yaml");
    assert!(policy.contains("kubernetes.io/metadata.name: monitoring"), "{policy}");
}

#[test]
fn async_queues_give_each_node_its_queue_and_a_keda_trigger_on_its_depth() {
    use stowage_deployment::jobs::{AsyncQueueOptions, TRIGGER_AUTH};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../planner/tests/data");
    let plan_json = std::fs::read_to_string(dir.join("small.plan.json")).unwrap();
    let plan = Plan::parse("small.plan.json", &plan_json).unwrap();
    let catalog = Catalog::load(dir.join("small.toml")).unwrap();
    let toml = std::fs::read_to_string(dir.join("small.toml")).unwrap();
    let q = AsyncQueueOptions {
        queue_url: "https://sqs.eu-west-1.amazonaws.com/123456789012/stowage-{node}".into(),
        results: "s3://jobs/results/".into(),
        region: "eu-west-1".into(),
        queue_length: 50,
        activation_queue_length: 0,
        visibility_seconds: 60,
    };
    let o = ManifestOptions { hpa_max_replicas: Some(4), async_queue: Some(q), ..opts() };
    let files = render(&plan, &catalog, &plan_json, &toml, &o).unwrap();
    let file = |name: &str| files.iter().find(|f| f.name == name).unwrap_or_else(|| panic!("no {name}")).yaml.clone();
    let docs = |text: &str| -> Vec<serde_json::Value> {
        text.split("---\n").map(|d| serde_yaml_ng::from_str(d).unwrap()).collect()
    };
    assert!(file("kustomization.yaml").contains("  - async.yaml\n"));
    let auth = &docs(&file("async.yaml"))[0];
    assert_eq!(
        (auth["kind"].as_str(), auth["metadata"]["name"].as_str()),
        (Some("TriggerAuthentication"), Some(TRIGGER_AUTH))
    );
    assert_eq!(auth["spec"]["podIdentity"], serde_json::json!({"provider": "aws", "identityOwner": "workload"}));
    for n in &plan.nodes {
        let node = docs(&file(&format!("node-{}.yaml", n.id)));
        let queue = format!("https://sqs.eu-west-1.amazonaws.com/123456789012/stowage-{}", n.id);
        // The node's container: the queue as `stowage serve` reads it.
        let deployment = node.iter().find(|d| d["kind"] == "Deployment").unwrap();
        let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"].as_array().unwrap();
        let var = |name: &str| env.iter().find(|e| e["name"] == name).map(|e| e["value"].clone());
        assert_eq!(var("STOWAGE_ASYNC_QUEUE_URL"), Some(queue.clone().into()));
        assert_eq!(var("STOWAGE_ASYNC_RESULTS"), Some("s3://jobs/results/".into()));
        // KEDA instead of the CPU HPA: one trigger on the queue's depth, authenticated by IRSA.
        assert!(!node.iter().any(|d| d["kind"] == "HorizontalPodAutoscaler"));
        let so = node.iter().find(|d| d["kind"] == "ScaledObject").unwrap();
        let triggers = so["spec"]["triggers"].as_array().unwrap();
        assert_eq!(triggers.len(), 1);
        let t = &triggers[0];
        assert_eq!(
            (t["type"].as_str(), t["authenticationRef"]["name"].as_str()),
            (Some("aws-sqs-queue"), Some(TRIGGER_AUTH))
        );
        assert_eq!(t["metadata"]["queueURL"], queue);
        assert_eq!(
            (
                t["metadata"]["queueLength"].as_str(),
                t["metadata"]["activationQueueLength"].as_str(),
                t["metadata"]["awsRegion"].as_str()
            ),
            (Some("50"), Some("0"), Some("eu-west-1")),
            "KEDA's metadata values are strings"
        );
        assert_eq!(
            (so["spec"]["minReplicaCount"].as_i64(), so["spec"]["maxReplicaCount"].as_i64()),
            (Some(1), Some(4))
        );
    }
}

/// A 3,000-model plan over three instance types (c5 may be Spot), one of its nodes scaling to
/// zero; its catalog and plan JSON.
fn mixed(n: usize) -> (Plan, Catalog, String, String) {
    let types = [
        ("c5.xlarge", "c5", 0.17, 7, 4, true),
        ("g4dn.xlarge", "g4dn", 0.526, 15, 1, false),
        ("inf1.6xlarge", "inf1", 1.18, 47, 16, false),
    ];
    let mut toml = String::new();
    for (name, family, price, mem, compute, spot) in types {
        toml += &format!("[instance_types.\"{name}\"]\nfamily = \"{family}\"\nprice_per_hour = {price}\nmemory_gib = {mem}\ncompute = {compute}\n");
        if spot {
            toml += "spot = true\n";
        }
        toml += &format!("\n[profiles.\"bert-base\".{family}]\nmemory_mib = 600\nservice_ms = 6.0\n\n");
    }
    for i in 0..n {
        toml += &format!(
            "[[models]]\nid = \"model-{i:05}\"\nprofile = \"bert-base\"\nartifact = \"s3://stowage-models/model-{i:05}/model.onnx\"\npeak_rps = 0.5\n\n"
        );
    }
    let catalog = Catalog::parse("models.toml", &toml).unwrap();
    let nodes: Vec<serde_json::Value> = (0..n.div_ceil(20))
        .map(|k| {
            let (ty, family, price, ..) = types[k % 3];
            let models: Vec<String> = (k * 20..((k + 1) * 20).min(n)).map(|i| format!("model-{i:05}")).collect();
            let mut node = serde_json::json!({"id": format!("{}-{k:03}", ty.replace('.', "-")), "instance_type": ty,
                "family": family, "price_per_hour": price, "models": models, "usage": {"memory": 0.5, "utilization": 0.1}});
            if k == 0 {
                node["min_replicas"] = 0.into();
            }
            node
        })
        .collect();
    fixture(catalog, toml, nodes, 1.0)
}

#[test]
fn karpenter_pools_cover_a_3000_model_plan_and_validate_with_keda_against_their_crds() {
    use stowage_deployment::karpenter::{karpenter_yaml, shape, KarpenterOptions, TAINT_KEY};
    use stowage_deployment::monitoring::{KedaOptions, MonitoringOptions};
    let (plan, catalog, plan_json, toml) = mixed(3000);
    let k = KarpenterOptions {
        role: "KarpenterNodeRole-stowage".into(),
        ami_alias: "al2023@latest".into(),
        discovery: "stowage".into(),
        headroom: 0.25,
    };
    let yaml = karpenter_yaml(&plan, &catalog, 3, &k).unwrap();
    let docs: Vec<serde_json::Value> = yaml.split("---\n").map(|d| serde_yaml_ng::from_str(d).unwrap()).collect();
    assert_eq!(docs.iter().filter(|d| d["kind"] == "EC2NodeClass").count(), 1);
    let pools: Vec<&serde_json::Value> = docs.iter().filter(|d| d["kind"] == "NodePool").collect();
    assert_eq!(pools.len(), 3);
    for pool in pools {
        let reqs = pool["spec"]["template"]["spec"]["requirements"].as_array().unwrap();
        let req = |key: &str| reqs.iter().find(|r| r["key"] == key).unwrap()["values"].clone();
        let ty = req("node.kubernetes.io/instance-type")[0].as_str().unwrap().to_string();
        let capacity = req("karpenter.sh/capacity-type");
        assert_eq!(
            capacity,
            if ty.starts_with("c5") {
                serde_json::json!(["spot", "on-demand"])
            } else {
                serde_json::json!(["on-demand"])
            }
        );
        // The limits cover every node of the type at its most replicas (3), with surge room.
        let (cpu, mem) = shape(&ty).unwrap();
        let nodes = plan.nodes.iter().filter(|n| n.instance_type == ty).count() as u64;
        let limit_cpu: u64 = pool["spec"]["limits"]["cpu"].as_str().unwrap().parse().unwrap();
        let limit_mem: u64 = pool["spec"]["limits"]["memory"].as_str().unwrap().trim_end_matches("Gi").parse().unwrap();
        assert!(
            limit_cpu >= u64::from(cpu) * nodes * 3 + u64::from(cpu) && limit_mem >= u64::from(mem) * nodes * 3,
            "{pool}"
        );
        assert!(limit_cpu <= u64::from(cpu) * (nodes * 3 * 5 / 4 + 1), "{pool}");
        assert_eq!(pool["spec"]["template"]["spec"]["taints"][0]["key"], TAINT_KEY);
        assert_eq!(pool["spec"]["disruption"]["budgets"][0]["nodes"], "1");
    }
    // An instance type whose shape is unknown is refused, by name.
    let mut odd = plan.clone();
    odd.nodes[1].instance_type = "m7i.large".into();
    assert!(karpenter_yaml(&odd, &catalog, 1, &k).unwrap_err().to_string().contains("\"m7i.large\""));

    // The nodes' pods tolerate the pools' taint; KEDA scales them, the first from zero.
    let keda = KedaOptions { prometheus_url: "http://prometheus.monitoring:9090".into(), inflight_per_pod: 8.0 };
    let o = ManifestOptions {
        hpa_max_replicas: Some(3),
        karpenter: true,
        monitoring: Some(MonitoringOptions { prometheus_namespace: "monitoring".into(), keda: Some(keda) }),
        ..opts()
    };
    let files = render(&plan, &catalog, &plan_json, &toml, &o).unwrap();
    let first = files.iter().find(|f| f.name == format!("node-{}.yaml", plan.nodes[0].id)).unwrap();
    assert!(
        first.yaml.contains(&format!("key: {TAINT_KEY}")) && first.yaml.contains("minReplicaCount: 0"),
        "{}",
        first.yaml
    );

    // Against Karpenter's and KEDA's schemas as the kubernetes-models packages ship them (npm,
    // tests/clients/package.json; scripts/test.sh installs them and makes them required).
    let dir = tempfile::tempdir().unwrap();
    let mut objects: Vec<serde_json::Value> = docs.clone();
    for f in files.iter().filter(|f| f.name.starts_with("node-")) {
        objects.extend(f.yaml.split("---\n").map(|d| serde_yaml_ng::from_str::<serde_json::Value>(d).unwrap()));
    }
    let json = dir.path().join("objects.json");
    std::fs::write(&json, serde_json::to_string(&objects).unwrap()).unwrap();
    let clients = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/clients");
    let required = std::env::var("STOWAGE_REQUIRE_K8S_MODELS").is_ok_and(|v| v == "1");
    if clients.join("node_modules/@kubernetes-models/karpenter").is_dir() {
        let out =
            std::process::Command::new("node").arg(clients.join("k8s_models_check.mjs")).arg(&json).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{text}");
        let want = format!("valid: 1 EC2NodeClass, 3 NodePool, {} ScaledObject;", plan.nodes.len());
        assert!(text.contains(&want), "{text}");
    } else {
        assert!(!required, "the kubernetes-models packages are required: npm ci --prefix tests/clients");
        eprintln!("skipped the kubernetes-models check: npm ci --prefix tests/clients");
    }
    // Against Karpenter's and KEDA's own CRD files too, where STOWAGE_CRD_DIR holds them (their
    // repositories' pkg/apis/crds/ and config/crd/bases/; not shipped here).
    let Ok(crds) = std::env::var("STOWAGE_CRD_DIR") else {
        eprintln!("skipped the CRD file check: set STOWAGE_CRD_DIR to a folder of Karpenter's and KEDA's CRDs");
        return;
    };
    let mut paths = vec![dir.path().join("karpenter.yaml")];
    std::fs::write(&paths[0], &yaml).unwrap();
    for f in files.iter().filter(|f| f.name.starts_with("node-")) {
        let path = dir.path().join(&f.name);
        std::fs::write(&path, &f.yaml).unwrap();
        paths.push(path);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/clients/crd_check.py");
    let out = std::process::Command::new("python3").arg(script).arg(crds).args(&paths).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    eprintln!("{text}");
    assert!(text.contains(&format!("crd check: {} objects valid", 4 + plan.nodes.len())), "{text}");
}

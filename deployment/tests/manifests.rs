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
    }
}

fn files() -> Vec<stowage_deployment::manifests::ManifestFile> {
    // The planner's golden plan of its small catalog is the input.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../planner/tests/data");
    let plan_json = std::fs::read_to_string(dir.join("small.plan.json")).unwrap();
    let plan = Plan::parse("small.plan.json", &plan_json).unwrap();
    let catalog = Catalog::load(dir.join("small.toml")).unwrap();
    let toml = std::fs::read_to_string(dir.join("small.toml")).unwrap();
    render(&plan, &catalog, &plan_json, &toml, &opts())
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
    let inf = node("node-inf1-xlarge-000.yaml");
    assert!(inf.contains("aws.amazon.com/neuron: '1'") && inf.contains("key: aws.amazon.com/neuron"));
    assert!(inf.contains("IPC_LOCK") && inf.contains("image: registry.example/stowage-inf:1"));
    let cpu = node("node-c5-xlarge-000.yaml");
    assert!(!cpu.contains("nvidia.com") && !cpu.contains("neuron") && !cpu.contains("tolerations"));
    for y in [&gpu, &inf, &cpu] {
        assert!(y.contains("readOnlyRootFilesystem: true") && y.contains("runAsNonRoot: true") && y.contains("- ALL"));
        assert!(y.contains("terminationGracePeriodSeconds: 50"), "grace above the 5 s delay and the 30 s drain");
        assert!(y.contains("- --shutdown-delay-seconds\n") && y.contains("- '5'\n"), "{y}");
        assert!(y.contains("path: /ping") && y.contains("path: /ready") && y.contains("startupProbe"));
        assert_eq!(y.split("---\n").count(), 3);
        for kind in ["kind: Deployment", "kind: Service", "kind: PodDisruptionBudget"] {
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
    let with = render(&plan, &catalog, &plan_json, "", &ManifestOptions { hpa_max_replicas: Some(4), ..opts() });
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
    let files = render(&plan, &catalog, &plan_json, "", &o);
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

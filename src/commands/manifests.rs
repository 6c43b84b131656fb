//! `stowage manifests`: plan → Kubernetes manifests + kustomization.yaml.

use anyhow::{ensure, Context, Result};
use stowage_core::{is_dns_label, Plan};
use stowage_deployment::manifests::{loadtest, render, LoadtestOptions, ManifestOptions};
use stowage_deployment::targets::{targets, BaseUrls, Order};

use crate::cli::ManifestsArgs;

pub fn run(args: &ManifestsArgs) -> Result<()> {
    ensure!(is_dns_label(&args.namespace), "--namespace {:?} is not a DNS label", args.namespace);
    ensure!(args.replicas >= 1, "--replicas must be at least 1");
    let plan_json =
        std::fs::read_to_string(&args.plan).with_context(|| format!("cannot read plan {}", args.plan.display()))?;
    let plan = Plan::parse(&args.plan.display().to_string(), &plan_json)?;
    let catalog = plan.catalog(&args.plan, args.catalog.as_deref())?;
    let catalog_toml =
        std::fs::read_to_string(&catalog.path).with_context(|| format!("cannot read {}", catalog.path.display()))?;
    let image = |kind: &str, own: &Option<String>| {
        own.clone().or_else(|| args.image.clone()).unwrap_or_else(|| {
            let prefix = args.registry.as_deref().map(|r| format!("{}/", r.trim_end_matches('/'))).unwrap_or_default();
            format!("{prefix}stowage-{kind}:{}", args.tag)
        })
    };
    let opts = ManifestOptions {
        namespace: args.namespace.clone(),
        image_cpu: image("cpu", &args.image_cpu),
        image_gpu: image("gpu", &args.image_gpu),
        image_inf: image("inf", &args.image_inf),
        replicas: args.replicas,
        ingress_class: args.ingress_class.clone(),
        ingress_host: args.ingress_host.clone(),
        irsa_role_arn: args.irsa_role_arn.clone(),
        drain_seconds: args.drain_seconds,
        shutdown_delay_seconds: args.shutdown_delay_seconds,
        startup_seconds: args.startup_seconds,
        hpa_max_replicas: args.hpa_max_replicas,
    };
    let mut files = render(&plan, &catalog, &plan_json, &catalog_toml, &opts);
    if let Some(clients) = args.loadtest_clients {
        ensure!(clients >= 1, "--loadtest-clients must be at least 1");
        let urls = BaseUrls::Cluster { namespace: args.namespace.clone() };
        let list = targets(
            &plan,
            &urls,
            args.loadtest_requests,
            Order::Random,
            1,
            "I love this product, the delivery was fast",
        )?;
        let targets_json: String =
            list.iter().map(|t| serde_json::to_string(t).map(|s| s + "\n")).collect::<Result<_, _>>()?;
        let l = LoadtestOptions {
            clients,
            rate: args.loadtest_rate,
            duration_seconds: args.loadtest_duration,
            image: args.loadtest_image.clone(),
            targets_json,
        };
        files.push(loadtest(&opts, &l));
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    // Node files of an earlier plan would linger unreferenced: remove them.
    for entry in std::fs::read_dir(&args.out)?.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with("node-") && name.ends_with(".yaml") && !files.iter().any(|f| f.name == name) {
            std::fs::remove_file(entry.path())?;
        }
    }
    for f in &files {
        let path = args.out.join(&f.name);
        std::fs::write(&path, &f.yaml).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if args.loadtest_clients.is_some() {
        println!(
            "load test: kubectl apply -f {}; then scripts/loadtest-gather.sh {}",
            args.out.join("loadtest.yaml").display(),
            args.namespace
        );
    }
    println!(
        "wrote {} files to {} ({} nodes, {} models, namespace {}); apply with: kubectl apply -k {}",
        files.len(),
        args.out.display(),
        plan.nodes.len(),
        plan.model_count(),
        args.namespace,
        args.out.display()
    );
    Ok(())
}

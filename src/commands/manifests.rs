//! `stowage manifests`: plan → Kubernetes manifests + kustomization.yaml.

use anyhow::{ensure, Context, Result};
use stowage_core::{is_dns_label, Plan};
use stowage_deployment::manifests::{loadtest, render, LoadtestOptions, ManifestOptions, NetworkAccess};
use stowage_deployment::monitoring::{KedaOptions, MonitoringOptions};
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
    if !args.models_in_image {
        refuse_local_files(&catalog, &plan)?;
    }
    let inf1 = plan.nodes.iter().filter(|n| n.family == "inf1").count();
    ensure!(
        inf1 == 0 || args.allow_cpu_on_inf1,
        "{}: {inf1} of the plan's nodes are inf1, but Stowage has no engine that runs on Inferentia \
         (Neuron) yet: their pods would run ONNX Runtime on the CPU, far slower than the plan assumed. \
         Plan without inf1 instance types, or pass --allow-cpu-on-inf1 to deploy them as CPU pods anyway",
        args.plan.display()
    );
    if inf1 > 0 {
        eprintln!(
            "warning: {inf1} inf1 nodes deployed as CPU pods (ONNX Runtime, no Neuron device): the plan assumed \
             Inferentia speed, so they will serve less than it says"
        );
    }
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
        gateway_replicas: args.gateway_replicas,
        gateway_max_replicas: args.gateway_max_replicas,
        alb_scheme: args.alb_scheme.clone(),
        network_policy: (!args.no_network_policy).then(|| NetworkAccess {
            ingress_namespace: args.ingress_namespace.clone(),
            cidrs: args.allow_cidrs.clone(),
        }),
        monitoring: args.monitoring.then(|| MonitoringOptions {
            prometheus_namespace: args.prometheus_namespace.clone(),
            keda: args
                .keda_inflight
                .map(|n| KedaOptions { prometheus_url: args.prometheus_url.clone(), inflight_per_pod: n }),
        }),
        async_queue: None,
        prometheus_url: args.prometheus_url.clone(),
        idle_seconds: args.idle_seconds,
        karpenter: args.karpenter,
    };
    ensure!(args.idle_seconds >= 1, "--idle-seconds must be at least 1");
    let asleep = plan.nodes.iter().filter(|n| n.scales_to_zero()).count();
    if asleep > 0 && !args.monitoring {
        eprintln!(
            "manifests: {asleep} node(s) scale to zero: their KEDA ScaledObjects read the gateway's metrics from Prometheus \
             ({}): add --monitoring for the PodMonitors that scrape them, or scrape the gateway yourself",
            args.prometheus_url
        );
    }
    let mut opts = opts;
    if let Some(url) = &args.async_queue_url {
        ensure!(url.contains("{node}"), "--async-queue-url must name each node's queue with {{node}}");
        let results = args.async_results.clone().unwrap_or_default();
        ensure!(results.starts_with("s3://"), "--async-results must be s3://bucket/prefix/");
        let region = args.aws_region.clone().or_else(|| stowage_deployment::jobs::region_of(url));
        let Some(region) = region else {
            anyhow::bail!("--async-queue-url {url:?} names no region (sqs.REGION.amazonaws.com): give --aws-region")
        };
        ensure!(args.async_queue_length >= 1, "--async-queue-length must be at least 1");
        opts.async_queue = Some(stowage_deployment::jobs::AsyncQueueOptions {
            queue_url: url.clone(),
            results,
            region,
            queue_length: args.async_queue_length,
            activation_queue_length: args.async_activation_queue_length,
            visibility_seconds: args.async_visibility_timeout_seconds,
        });
    }
    if let Some(n) = args.keda_inflight {
        ensure!(n.is_finite() && n > 0.0, "--keda-inflight must be a positive number of requests per pod");
    }
    let mut files = render(&plan, &catalog, &plan_json, &catalog_toml, &opts)
        .with_context(|| catalog.path.display().to_string())?;
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
    if args.karpenter {
        ensure!(
            args.karpenter_headroom.is_finite() && args.karpenter_headroom >= 0.0,
            "--karpenter-headroom must be a share >= 0"
        );
        let k = stowage_deployment::karpenter::KarpenterOptions {
            role: args.karpenter_role.clone().unwrap_or_default(),
            ami_alias: args.karpenter_ami.clone(),
            discovery: args.karpenter_discovery.clone(),
            headroom: args.karpenter_headroom,
        };
        let most = args.hpa_max_replicas.unwrap_or(args.replicas).max(args.replicas);
        let yaml = stowage_deployment::karpenter::karpenter_yaml(&plan, &catalog, most, &k)
            .with_context(|| args.plan.display().to_string())?;
        files.push(stowage_deployment::manifests::ManifestFile { name: "karpenter.yaml".into(), yaml });
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
    if args.karpenter {
        println!(
            "karpenter: kubectl apply -f {} first (NodePools and their EC2NodeClass, cluster-scoped)",
            args.out.join("karpenter.yaml").display()
        );
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

/// A catalog whose model files are on this machine's disk cannot be served by pods: say so, with
/// the first few, instead of deploying nodes whose every model fails.
fn refuse_local_files(catalog: &stowage_core::Catalog, plan: &Plan) -> Result<()> {
    let local: Vec<String> = plan
        .nodes
        .iter()
        .flat_map(|n| &n.models)
        .filter_map(|id| catalog.model(id))
        .flat_map(|m| {
            let files = [Some(&m.artifact), m.tokenizer.as_ref(), m.config.as_ref()];
            files.into_iter().flatten().filter(|f| !f.starts_with("s3://")).map(move |f| format!("{} {f}", m.id))
        })
        .collect();
    ensure!(
        local.is_empty(),
        "{}: {} model files are local paths (e.g. {}), which pods cannot read: upload them \
         (stowage upload --catalog {} --bucket …) or, if the images carry them at these paths, pass --models-in-image",
        catalog.path.display(),
        local.len(),
        local.iter().take(3).cloned().collect::<Vec<_>>().join(", "),
        catalog.path.display()
    );
    Ok(())
}

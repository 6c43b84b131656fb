//! Generated catalogs: the standard instance types and profiles, and synthetic model populations
//! for tests, benchmarks and the repository's example `models.toml`.
//!
//! Footprints of `bert-base` reproduce the reference deployment's densities (AWS × Salesforce,
//! 3,040 BERT-base models): inf1.6xlarge 76, inf1.2xlarge 24, inf1.xlarge 11, g4dn.xlarge 18,
//! g4dn.12xlarge 72 models per node. `memory_gib` is what holds models: host RAM less 1 GiB for the
//! OS and runtime on inf1 and c5 (compiled Neuron models live in host memory too), and the usable
//! memory of the T4 GPUs on g4dn (15 GiB each).

use std::fmt::Write;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub use stowage_core::instance_types::INSTANCE_TYPES;

/// Profiles: memory per model and busy time per request (batch 1, ~128 tokens) per family.
pub const PROFILES: &str = r#"[profiles."minilm".inf1]
memory_mib = 150
service_ms = 2.0
[profiles."minilm".g4dn]
memory_mib = 260
service_ms = 2.5
[profiles."minilm".c5]
memory_mib = 190
service_ms = 12.0

[profiles."distilbert".inf1]
memory_mib = 330
service_ms = 3.5
[profiles."distilbert".g4dn]
memory_mib = 450
service_ms = 4.5
[profiles."distilbert".c5]
memory_mib = 420
service_ms = 45.0

[profiles."bert-base".inf1]
memory_mib = 565
service_ms = 6.0
[profiles."bert-base".g4dn]
memory_mib = 760
service_ms = 8.0
[profiles."bert-base".c5]
memory_mib = 680
service_ms = 90.0

[profiles."bert-large".inf1]
memory_mib = 1450
service_ms = 15.0
[profiles."bert-large".g4dn]
memory_mib = 1700
service_ms = 20.0
[profiles."bert-large".c5]
memory_mib = 1650
service_ms = 280.0
"#;

const LIMITS: &str = "[limits]\nmax_memory = 0.90\nmax_utilization = 0.83\n";

fn model_entry(out: &mut String, id: &str, profile: &str, rps: f64) {
    let _ = write!(
        out,
        "\n[[models]]\nid = \"{id}\"\nprofile = \"{profile}\"\nartifact = \"s3://stowage-models/{id}/model.onnx\"\ntokenizer = \"s3://stowage-models/{id}/tokenizer.json\"\npeak_rps = {rps}\n"
    );
}

/// `n` bert-base models at 2 requests/s each, every instance type available.
pub fn uniform(n: usize) -> String {
    let mut s = format!("{LIMITS}\n{INSTANCE_TYPES}\n{PROFILES}");
    for i in 0..n {
        model_entry(&mut s, &format!("bert-{:04}", i + 1), "bert-base", 2.0);
    }
    s
}

/// A profile drawn from the mix of `heterogeneous`: 40 % minilm, 30 % distilbert, 25 % bert-base,
/// 5 % bert-large.
fn mixed_profile(rng: &mut ChaCha8Rng) -> &'static str {
    match rng.random::<f64>() {
        r if r < 0.40 => "minilm",
        r if r < 0.70 => "distilbert",
        r if r < 0.95 => "bert-base",
        _ => "bert-large",
    }
}

/// `n` models of mixed sizes (40% minilm, 30% distilbert, 25% bert-base, 5% bert-large) with
/// skewed traffic: a few hot models (Zipf over a random rank) on a floor of cold ones.
pub fn heterogeneous(n: usize, seed: u64) -> String {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut s = format!("{LIMITS}\n{INSTANCE_TYPES}\n{PROFILES}");
    for i in 0..n {
        let profile = mixed_profile(&mut rng);
        let rank = rng.random_range(1..=n) as f64;
        let rps = (0.2 + 60.0 / rank.powf(0.9) + rng.random_range(0.0..2.0) * 100.0).round() / 100.0;
        model_entry(&mut s, &format!("model-{:05}", i + 1), profile, rps);
    }
    s
}

/// The reference's 78-model shape: 78 heterogeneous models, every node capped at 7.4 GB of memory
/// (8 GiB × 0.925) and 83% utilization, inf1 and g4dn types only.
pub fn reference78(seed: u64) -> String {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut s = String::from("[limits]\nmax_memory = 0.925\nmax_utilization = 0.83\n\n");
    for (name, family, price, compute) in
        [("inf1.xlarge", "inf1", 0.228, 4), ("inf1.2xlarge", "inf1", 0.362, 4), ("g4dn.xlarge", "g4dn", 0.526, 1)]
    {
        let _ = write!(s, "[instance_types.\"{name}\"]\nfamily = \"{family}\"\nprice_per_hour = {price}\nmemory_gib = 8\ncompute = {compute}\n\n");
    }
    for i in 0..78 {
        let mem: f64 = rng.random_range(200.0..1500.0_f64).round();
        let svc: f64 = (rng.random_range(2.0..15.0_f64) * 10.0).round() / 10.0;
        // Heavy-tailed traffic (0.5 to 150 requests/s, log-uniform): compute binds on the hot ones.
        let rps: f64 = (rng.random_range(0.5_f64.ln()..150.0_f64.ln()).exp() * 10.0).round() / 10.0;
        let _ = write!(
            s,
            "[[models]]\nid = \"m{i:02}\"\nartifact = \"s3://stowage-models/m{i:02}/model.onnx\"\npeak_rps = {rps}\n[models.footprint.inf1]\nmemory_mib = {mem}\nservice_ms = {svc}\n[models.footprint.g4dn]\nmemory_mib = {}\nservice_ms = {}\n\n",
            (mem * 1.3).round(),
            (svc * 1.2 * 10.0).round() / 10.0
        );
    }
    s
}

/// A day-2 change of a generated catalog: `retire` and `add` are shares of its models (at least
/// one each when above 0), `double` the share whose traffic doubles. New models copy a random
/// existing model's profile and traffic under ids `new-00001`…; the rest is unchanged.
pub fn churn(toml: &str, retire: f64, add: f64, double: f64, seed: u64) -> String {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (head, models) = split_models(toml);
    let n = models.len();
    let count = |share: f64| if share <= 0.0 { 0 } else { ((share * n as f64).round() as usize).max(1) };
    let mut order: Vec<usize> = (0..n).collect();
    shuffle(&mut order, &mut rng);
    let gone: std::collections::HashSet<usize> = order[..count(retire).min(n)].iter().copied().collect();
    let mut kept: Vec<String> = (0..n).filter(|i| !gone.contains(i)).map(|i| models[i].clone()).collect();
    let mut order: Vec<usize> = (0..kept.len()).collect();
    shuffle(&mut order, &mut rng);
    for &i in &order[..count(double).min(kept.len())] {
        kept[i] = kept[i]
            .lines()
            .map(|l| match l.strip_prefix("peak_rps = ").and_then(|v| v.parse::<f64>().ok()) {
                Some(rps) => format!("peak_rps = {}", (rps * 200.0).round() / 100.0),
                None => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n");
    }
    let mut out = head;
    for m in &kept {
        out.push_str(m);
    }
    for j in 0..count(add) {
        let template = &models[rng.random_range(0..n)];
        let id = template.lines().find_map(|l| l.strip_prefix("id = \"")).and_then(|l| l.strip_suffix('"'));
        let new = format!("new-{:05}", j + 1);
        out.push_str(&id.map_or_else(|| template.clone(), |id| template.replace(id, &new)));
    }
    out
}

/// The catalog without instance type `name` (its `[instance_types."name"]` table).
pub fn without_type(toml: &str, name: &str) -> String {
    let header = format!("[instance_types.\"{name}\"]");
    let mut out = String::new();
    let mut skipping = false;
    for line in toml.lines() {
        if line.starts_with('[') {
            skipping = line == header;
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The text before the first `[[models]]`, and each `[[models]]` block (with its leading newline).
fn split_models(toml: &str) -> (String, Vec<String>) {
    let mut parts = toml.split("\n[[models]]");
    let head = parts.next().unwrap_or_default().to_string();
    (head, parts.map(|b| format!("\n[[models]]{b}")).collect())
}

fn shuffle(v: &mut [usize], rng: &mut ChaCha8Rng) {
    for i in (1..v.len()).rev() {
        v.swap(i, rng.random_range(0..=i));
    }
}

/// More instance types than `INSTANCE_TYPES` (14: the inf1, g4dn and c5 sizes from the smallest
/// to the largest) and a wide spread of model sizes (memory log-uniform from 40 MiB to 3 GiB on
/// inf1, each model with its own inline footprints), with skewed traffic: the harder shape for
/// the planner's speed. Traffic is ten times `heterogeneous`'s, so that compute binds on many nodes.
pub fn wide(n: usize, seed: u64) -> String {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut s = String::from(LIMITS);
    s.push('\n');
    for (name, family, price, memory, compute) in [
        ("inf1.xlarge", "inf1", 0.228, 7, 4),
        ("inf1.2xlarge", "inf1", 0.362, 15, 4),
        ("inf1.6xlarge", "inf1", 1.180, 47, 16),
        ("inf1.24xlarge", "inf1", 4.721, 191, 64),
        ("g4dn.xlarge", "g4dn", 0.526, 15, 1),
        ("g4dn.2xlarge", "g4dn", 0.752, 15, 1),
        ("g4dn.4xlarge", "g4dn", 1.204, 15, 1),
        ("g4dn.12xlarge", "g4dn", 3.912, 60, 4),
        ("c5.large", "c5", 0.085, 3, 2),
        ("c5.xlarge", "c5", 0.170, 7, 4),
        ("c5.2xlarge", "c5", 0.340, 15, 8),
        ("c5.4xlarge", "c5", 0.680, 31, 16),
        ("c5.9xlarge", "c5", 1.530, 71, 36),
        ("c5.18xlarge", "c5", 3.060, 143, 72),
    ] {
        let _ = write!(
            s,
            "[instance_types.\"{name}\"]\nfamily = \"{family}\"\nprice_per_hour = {price}\nmemory_gib = {memory}\ncompute = {compute}\n\n"
        );
    }
    for i in 0..n {
        let mem: f64 = rng.random_range(40.0_f64.ln()..3072.0_f64.ln()).exp().round();
        // Busy time grows with size: about 1 ms per 100 MiB on inf1, 1.3× on g4dn, 15× on c5.
        let svc = (mem / 100.0 * rng.random_range(0.7..1.4) * 10.0).round().max(1.0) / 10.0;
        let rank = rng.random_range(1..=n) as f64;
        let rps = (2.0 + 600.0 / rank.powf(0.8) + rng.random_range(0.0..20.0) * 100.0).round() / 100.0;
        let id = format!("model-{:05}", i + 1);
        let _ = write!(
            s,
            "[[models]]\nid = \"{id}\"\nartifact = \"s3://stowage-models/{id}/model.onnx\"\npeak_rps = {rps}\n\
             [models.footprint.inf1]\nmemory_mib = {mem}\nservice_ms = {svc}\n\
             [models.footprint.g4dn]\nmemory_mib = {}\nservice_ms = {}\n\
             [models.footprint.c5]\nmemory_mib = {}\nservice_ms = {}\n\n",
            (mem * 1.3).round(),
            (svc * 1.3 * 10.0).round() / 10.0,
            (mem * 1.2).round(),
            (svc * 15.0 * 10.0).round() / 10.0
        );
    }
    s
}

/// A long tail: `n` models of `heterogeneous`'s sizes where a fifth carry its skewed traffic and
/// the rest see 0.36 to 180 requests an hour (log-uniform 0.0001–0.05 rps), below the default
/// `cold_below_rps`: cold under `residency = "auto"`. `cold_below_rps` overrides the limit (0:
/// every model hot, the comparison).
pub fn long_tail(n: usize, seed: u64, cold_below_rps: f64) -> String {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let limits = format!("[limits]\nmax_memory = 0.90\nmax_utilization = 0.83\ncold_below_rps = {cold_below_rps}\n");
    let mut s = format!("{limits}\n{INSTANCE_TYPES}\n{PROFILES}");
    for i in 0..n {
        let profile = mixed_profile(&mut rng);
        let rps = if rng.random_bool(0.2) {
            let rank = rng.random_range(1..=n) as f64;
            ((5.0 + 60.0 / rank.powf(0.9) + rng.random_range(0.0..2.0) * 100.0).round() / 100.0).max(0.05)
        } else {
            let x: f64 = rng.random_range(0.0001_f64.ln()..0.05_f64.ln());
            (x.exp() * 1e5).round() / 1e5
        };
        model_entry(&mut s, &format!("model-{:05}", i + 1), profile, rps);
    }
    s
}

/// The BERT family from BERT-tiny to BERT-large (the Turc et al. miniatures, base and large):
/// memory is the fp32 weights plus the runtime's share, busy time per request (batch 1, ~128
/// tokens) on inf1; g4dn 1.3× both, c5 1.2× the memory and 15× the time.
const BERT_FAMILY: [(&str, f64, f64, f64); 6] = [
    // (name, share of the catalog, memory MiB on inf1, service ms on inf1)
    ("bert-tiny", 0.15, 60.0, 0.5),
    ("bert-mini", 0.15, 100.0, 1.0),
    ("bert-small", 0.15, 190.0, 2.0),
    ("bert-medium", 0.15, 260.0, 3.0),
    ("bert-base", 0.25, 565.0, 6.0),
    ("bert-large", 0.15, 1450.0, 15.0),
];

/// `n` models of the whole BERT family (`BERT_FAMILY`) on nine instance types (the standard
/// eight and c5.large), with forty times `heterogeneous`'s skewed traffic, so that compute binds
/// on most nodes and small ones pay: the shape issue 32 reported a loose bound on.
pub fn bert_family(n: usize, seed: u64) -> String {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut s = format!(
        "{LIMITS}\n{INSTANCE_TYPES}\n[instance_types.\"c5.large\"]\nfamily = \"c5\"\nprice_per_hour = 0.085\nmemory_gib = 3\ncompute = 2\n\n"
    );
    for (name, _, mem, ms) in BERT_FAMILY {
        for (family, m, t) in [("inf1", 1.0, 1.0), ("g4dn", 1.3, 1.3), ("c5", 1.2, 15.0)] {
            let _ = write!(
                s,
                "[profiles.\"{name}\".{family}]\nmemory_mib = {}\nservice_ms = {}\n",
                (mem * m).round(),
                (ms * t * 10.0).round() / 10.0
            );
        }
    }
    for i in 0..n {
        let r: f64 = rng.random();
        let mut acc = 0.0;
        let profile = BERT_FAMILY
            .iter()
            .find(|(_, share, _, _)| {
                acc += share;
                r < acc
            })
            .map_or("bert-large", |f| f.0);
        let rank = rng.random_range(1..=n) as f64;
        let rps = (40.0 * (0.2 + 60.0 / rank.powf(0.9) + rng.random_range(0.0..2.0)) * 100.0).round() / 100.0;
        model_entry(&mut s, &format!("model-{:05}", i + 1), profile, rps);
    }
    s
}

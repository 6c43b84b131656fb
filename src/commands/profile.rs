//! `stowage profile`: loads each model on this machine, one at a time, and measures what the planner
//! needs — the resident memory the model adds and its service time per request (batch 1, a given
//! length) — then writes them as `[models.footprint.<family>]` into a catalog, so plans come from
//! measured sizes rather than file size × a guess.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use stowage_core::{Catalog, Engine};

use stowage_engine::{EngineOptions, Inputs};
use stowage_node::lifecycle::choice::Verdicts;
use stowage_node::lifecycle::load::{self, LoadedModel};
use stowage_node::lifecycle::spec::ModelSpec;
use stowage_node::lifecycle::storage::Fetcher;
use stowage_node::process::{release_freed_memory, rss_bytes};

use crate::cli::ProfileArgs;

/// What was measured for one model.
#[derive(Debug, Clone)]
pub struct Measured {
    pub id: String,
    pub engine: String,
    pub weights_bytes: u64,
    pub memory_bytes: u64,
    pub service_ms_p50: f64,
    pub service_ms_p90: f64,
    /// Load from local disk and warm-up (what a cold model's first request waits for).
    pub load_ms: f64,
    pub tokens: usize,
    /// The catalog asked for `auto` and this engine ran the model fastest: written into the
    /// catalog as the model's `engine`.
    pub chosen: bool,
}

pub fn run(args: &ProfileArgs) -> Result<()> {
    let catalog = Catalog::load_unmeasured(&args.catalog)?;
    let families: Vec<&str> = catalog.instance_types.iter().map(|t| t.family.as_str()).collect();
    if !families.contains(&args.family.as_str()) {
        bail!(
            "{}: --family {:?} is not a family of the catalog's instance types ({})",
            args.catalog.display(),
            args.family,
            families.join(", ")
        );
    }
    if args.out.is_none() && !args.in_place {
        bail!("say where to write the measured catalog: --out FILE, or --in-place");
    }
    let ids: Vec<String> = if args.models.is_empty() {
        catalog.models.iter().map(|m| m.id.clone()).collect()
    } else {
        args.models.clone()
    };
    let specs = ids
        .iter()
        .map(|id| ModelSpec::from_catalog(&catalog, id, args.engine.engine))
        .collect::<Result<Vec<_>, _>>()?;
    let engine = args.engine.options();
    if specs.iter().any(|s| s.engine == Engine::Ort) {
        stowage_engine::ort::init(args.engine.ort_library.as_deref(), engine.ort_intra_threads)
            .context("the ort engine is needed")?;
    } else if specs.iter().any(|s| s.engine == Engine::Auto) {
        if let Err(e) = stowage_engine::ort::init(args.engine.ort_library.as_deref(), engine.ort_intra_threads) {
            eprintln!("ONNX Runtime is not available ({e}): auto models are measured on tract only");
        }
    }
    tokenizers::utils::parallelism::set_parallelism(false);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let fetcher = Fetcher::new(args.s3.fetch_options());

    eprintln!(
        "{:<24} {:<6} {:>11} {:>10} {:>6} {:>10} {:>10}",
        "model", "engine", "weights MiB", "memory MiB", "ratio", "p50 ms", "p90 ms"
    );
    let mut measured = Vec::new();
    let mut warm = Vec::new();
    for spec in &specs {
        let files = runtime.block_on(load::fetch(spec, &fetcher)).with_context(|| spec.id.clone())?;
        // `auto`: every engine is tried, and the fastest is written into the catalog.
        let auto = spec.engine == Engine::Auto;
        let kinds = if auto { vec![Engine::Tract, Engine::Ort] } else { vec![spec.engine] };
        let mut runs = Vec::new();
        for kind in kinds {
            let one = ModelSpec { engine: kind, ..spec.clone() };
            let result = (|| -> Result<Measured> {
                if !warm.contains(&kind) {
                    // An engine's and the tokenizer's one-time set-up (thread pools, lazy
                    // tables) is the process's, not the first model's: pay it before measuring.
                    drop(load::load_files(&one, &files, &engine, &Verdicts::new(None))?);
                    warm.push(kind);
                }
                measure(&one, &files, &engine, args.tokens, args.iterations)
            })();
            match result {
                Ok(m) => {
                    print_row(&m);
                    runs.push(m);
                }
                // Under auto an engine that cannot run the model is passed over, as serve does.
                Err(e) if auto => eprintln!("{:<24} {:<6} cannot run it: {e:#}", one.id, kind.to_string()),
                Err(e) => return Err(e.context(one.id.clone())),
            }
        }
        if auto {
            let best = runs.iter_mut().min_by(|a, b| a.service_ms_p50.total_cmp(&b.service_ms_p50));
            best.with_context(|| format!("{}: neither engine runs it", spec.id))?.chosen = true;
            runs.retain(|m| m.chosen);
        }
        measured.extend(runs);
    }

    let text = std::fs::read_to_string(&args.catalog)?;
    let out = args.out.clone().unwrap_or_else(|| args.catalog.clone());
    let written = write_footprints(&text, &args.catalog, &out, &args.family, &measured)?;
    // Write beside and rename: an interrupted run never leaves half a catalog.
    let tmp = out.with_extension("toml.tmp");
    std::fs::write(&tmp, written).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &out).with_context(|| format!("cannot write {}", out.display()))?;
    eprintln!(
        "wrote {} ({} models measured on {}, {} tokens)",
        out.display(),
        measured.len(),
        args.family,
        args.tokens
    );
    Ok(())
}

fn print_row(m: &Measured) {
    let mib = |b: u64| b as f64 / 1048576.0;
    eprintln!(
        "{:<24} {:<6} {:>11.1} {:>10.1} {:>6.2} {:>10.2} {:>10.2}",
        m.id,
        m.engine,
        mib(m.weights_bytes),
        mib(m.memory_bytes),
        m.memory_bytes as f64 / m.weights_bytes.max(1) as f64,
        m.service_ms_p50,
        m.service_ms_p90
    );
}

/// Loads one model alone and measures it; the model is dropped (and its memory returned) after.
pub fn measure(
    spec: &ModelSpec,
    files: &load::Files,
    engine: &EngineOptions,
    tokens: usize,
    iterations: usize,
) -> Result<Measured> {
    release_freed_memory();
    let before = rss_bytes();
    let started = Instant::now();
    let loaded = load::load_files(spec, files, engine, &Verdicts::new(None))?;
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    release_freed_memory();
    let memory = rss_bytes().saturating_sub(before);
    let inputs = typical_input(&loaded.model, tokens)?;
    let mut times = Vec::with_capacity(iterations);
    for i in 0..iterations.max(1) + 3 {
        let t = Instant::now();
        loaded.model.model.predict(&inputs)?;
        if i >= 3 {
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    Ok(Measured {
        id: spec.id.clone(),
        engine: spec.engine.to_string(),
        weights_bytes: loaded.weights_bytes,
        memory_bytes: memory,
        service_ms_p50: at(0.5),
        service_ms_p90: at(0.9),
        load_ms,
        tokens: inputs.seq,
        chosen: false,
    })
}

/// One request of `tokens` tokens (capped at the model's length): real words of its vocabulary,
/// tokenized as the server would.
fn typical_input(model: &LoadedModel, tokens: usize) -> Result<Inputs> {
    let vocab = model.text.tokenizer.get_vocab(false);
    let mut words: Vec<&String> =
        vocab.keys().filter(|w| w.chars().all(|c| c.is_alphabetic()) && !w.starts_with('[')).collect();
    words.sort();
    if words.is_empty() {
        bail!("the tokenizer has no plain words to build a request from");
    }
    let text: Vec<&str> = words.iter().cycle().take(tokens).map(|w| w.as_str()).collect();
    let x = model.text.encode(&[text.join(" ")], None)?;
    let want = tokens.clamp(2, x.seq);
    if want == x.seq {
        return Ok(x);
    }
    // Keep the first want-1 tokens and the closing [SEP].
    let keep = |v: &[i64]| v[..want - 1].iter().chain(v.last()).copied().collect::<Vec<_>>();
    Ok(model.text.pad(vec![(keep(&x.input_ids), keep(&x.attention_mask), keep(&x.token_type_ids))]))
}

/// The catalog text with each measured model's `[models.footprint.<family>]` set; other text and
/// comments stay. Relative file paths are made absolute when the output is in another folder.
pub fn write_footprints(text: &str, from: &Path, to: &Path, family: &str, measured: &[Measured]) -> Result<String> {
    let mut doc: toml_edit::DocumentMut = text.parse().with_context(|| format!("{}: not TOML", from.display()))?;
    let dir = |p: &Path| -> PathBuf {
        let d = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        d.canonicalize().unwrap_or_else(|_| d.to_path_buf())
    };
    let (from_dir, moved) = (dir(from), dir(from) != dir(to));
    let models = doc
        .get_mut("models")
        .and_then(|m| m.as_array_of_tables_mut())
        .with_context(|| format!("{}: models must be [[models]] tables to be rewritten", from.display()))?;
    for table in models.iter_mut() {
        if moved {
            for field in ["artifact", "tokenizer", "config"] {
                let Some(v) = table.get(field).and_then(|v| v.as_str()) else { continue };
                let local = v.strip_prefix("file://").unwrap_or(v);
                if !v.starts_with("s3://") && Path::new(local).is_relative() {
                    table[field] = toml_edit::value(from_dir.join(local).display().to_string());
                }
            }
        }
        let id = table.get("id").and_then(|v| v.as_str()).unwrap_or_default();
        let Some(m) = measured.iter().find(|m| m.id == id) else { continue };
        let footprints = table.entry("footprint").or_insert_with(toml_edit::table);
        let footprints = footprints.as_table_mut().context("footprint must be a table")?;
        footprints.set_implicit(true);
        let fp = footprints.entry(family).or_insert_with(toml_edit::table);
        let fp = fp.as_table_mut().with_context(|| format!("footprint.{family} must be a table"))?;
        fp["memory_mib"] = toml_edit::value(m.memory_bytes.div_ceil(1 << 20).max(1) as i64);
        fp["service_ms"] = toml_edit::value((m.service_ms_p50 * 100.0).ceil() / 100.0);
        fp["load_ms"] = toml_edit::value(m.load_ms.ceil().max(1.0) as i64);
        if m.chosen {
            table["engine"] = toml_edit::value(m.engine.as_str());
        }
    }
    Ok(doc.to_string())
}

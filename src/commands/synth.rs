//! `stowage synth`: synthetic models for demos, tests and benchmarks.

use anyhow::Result;

use crate::cli::SynthArgs;
use stowage_synth::{self as synth, BertShape, SynthSpec};

pub fn run(args: &SynthArgs) -> Result<()> {
    let base = args.preset.shape(args.labels);
    let shape = BertShape {
        layers: args.layers.unwrap_or(base.layers),
        hidden: args.hidden.unwrap_or(base.hidden),
        heads: args.heads.unwrap_or(base.heads),
        intermediate: args.hidden.map_or(base.intermediate, |h| 4 * h),
        vocab: args.vocab.unwrap_or(base.vocab).max(300),
        ..base
    };
    let spec = SynthSpec {
        out: args.out.clone(),
        count: args.count,
        shape,
        profile: format!("synth-{}", args.preset.name()),
        prefix: args.prefix.clone().unwrap_or_else(|| args.preset.name().to_string()),
        embedding_every: args.embedding_every,
        seed: args.seed,
        peak_rps: args.peak_rps,
        local_per_node: args.per_node,
    };
    let models = synth::write(&spec)?;
    let bytes: u64 = models.iter().map(|m| m.bytes).sum();
    println!(
        "wrote {} models ({} parameters each, {:.1} MiB of weights in all) and {}",
        models.len(),
        shape.params(),
        bytes as f64 / 1048576.0,
        args.out.join("models.toml").display()
    );
    Ok(())
}

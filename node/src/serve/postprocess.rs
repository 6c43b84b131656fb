//! An engine's output → what each input gets back: softmax over a classifier's logits (with the
//! model's labels), or mean pooling and L2 normalization of an encoder's hidden states.

use std::collections::BTreeMap;

use stowage_engine::{Inputs, Output, OutputKind};

use crate::serve::request::{PredictError, Prediction};

fn softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let exp: Vec<f64> = row.iter().map(|&x| (x as f64 - max).exp()).collect();
    let sum: f64 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum).collect()
}

/// Per input of `x`: a class or an embedding. An answer that would hold NaN or an infinity (JSON
/// has neither: serde_json would write `null`) is an error: the model is broken for this input
/// (fp16 overflow on a GPU, say), and the client must not read nulls as scores.
pub fn predictions(
    kind: OutputKind,
    labels: &[String],
    x: &Inputs,
    out: &Output,
) -> Result<Vec<Prediction>, PredictError> {
    let finite = |v: &[f64], input: usize| {
        if v.iter().all(|a| a.is_finite()) {
            Ok(())
        } else {
            Err(PredictError::Inference(format!(
                "the model's output for input {input} is not finite (NaN or infinity)"
            )))
        }
    };
    match kind {
        OutputKind::Logits => {
            let width = out.shape[1];
            out.data
                .chunks(width.max(1))
                .enumerate()
                .map(|(input, row)| {
                    let p = softmax(row);
                    finite(&p, input)?;
                    let best = p.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i);
                    let name = |i: usize| labels.get(i).cloned().unwrap_or_else(|| format!("LABEL_{i}"));
                    let scores: BTreeMap<String, f64> = p.iter().enumerate().map(|(i, &s)| (name(i), s)).collect();
                    Ok(Prediction::Class {
                        label: name(best),
                        score: p[best],
                        scores,
                        probabilities: p,
                        logits: row.to_vec(),
                    })
                })
                .collect()
        }
        OutputKind::LastHiddenState => {
            let (seq, hidden) = (out.shape[1], out.shape[2]);
            (0..x.batch)
                .map(|b| {
                    // Mean over attended positions, then L2 normalization.
                    let mut v = vec![0f64; hidden];
                    let mut n: f64 = 0.0;
                    for s in 0..seq {
                        if x.attention_mask[b * x.seq + s] == 0 {
                            continue;
                        }
                        n += 1.0;
                        let row = &out.data[(b * seq + s) * hidden..(b * seq + s + 1) * hidden];
                        for (acc, &h) in v.iter_mut().zip(row) {
                            *acc += h as f64;
                        }
                    }
                    finite(&v, b)?;
                    let norm = v.iter().map(|a| (a / n.max(1.0)).powi(2)).sum::<f64>().sqrt().max(1e-12);
                    Ok(Prediction::Embedding { embedding: v.iter().map(|a| (a / n.max(1.0) / norm) as f32).collect() })
                })
                .collect()
        }
    }
}

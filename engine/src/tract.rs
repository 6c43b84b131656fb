//! tract-onnx: pure Rust, runs everywhere. A runnable model is shared across threads (`run(&self)`).

use tract_onnx::prelude::*;

use super::{check_output, EngineError, Inputs, Model, Output, Signature};
use stowage_core::Engine as EngineKind;

pub struct TractModel {
    plan: std::sync::Arc<TypedRunnableModel>,
    /// For each model input, in order: which of our inputs feeds it.
    order: Vec<String>,
    sig: Signature,
}

impl TractModel {
    pub fn load(bytes: &[u8], sig: &Signature) -> Result<Self, EngineError> {
        let err = |e: TractError| EngineError::Load(format!("{e:#}"));
        let mut model = tract_onnx::onnx().model_for_read(&mut &bytes[..]).map_err(err)?;
        model.select_outputs_by_name([sig.output.as_str()]).map_err(err)?;
        let order = model.input_outlets().map_err(err)?.iter().map(|o| model.node(o.node).name.clone()).collect();
        let plan = model.into_optimized().map_err(err)?.into_runnable().map_err(err)?;
        Ok(Self { plan, order, sig: sig.clone() })
    }
}

impl Model for TractModel {
    fn backend(&self) -> EngineKind {
        EngineKind::Tract
    }

    fn predict(&self, x: &Inputs) -> Result<Output, EngineError> {
        let err = |e: TractError| EngineError::Run(format!("{e:#}"));
        let mut feed: TVec<TValue> = tvec![];
        for name in &self.order {
            let data = match name.as_str() {
                "input_ids" => &x.input_ids,
                "attention_mask" => &x.attention_mask,
                "token_type_ids" => &x.token_type_ids,
                other => return Err(EngineError::Run(format!("unexpected input {other:?}"))),
            };
            let t = tract_ndarray::Array2::from_shape_vec((x.batch, x.seq), data.clone())
                .map_err(|e| EngineError::Run(e.to_string()))?;
            feed.push(t.into_tensor().into());
        }
        let out = self.plan.run(feed).map_err(err)?;
        let view = out[0].to_plain_array_view::<f32>().map_err(err)?;
        let shape = view.shape().to_vec();
        let data: Vec<f32> = view.iter().copied().collect();
        check_output(&self.sig, x, &shape, data.len())?;
        Ok(Output { shape, data })
    }
}

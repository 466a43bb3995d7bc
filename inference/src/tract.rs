//! The tract back-end: pure Rust, compiled into the agent, the default everywhere.

use std::io::Cursor;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use edgefleet_protocol::DType;
use edgefleet_protocol::interface::ModelInterface;
use tract_onnx::prelude::*;

use crate::{Error, F32Tensor, Inputs, Loaded, LoadedModel, Outputs, check_inputs};

const NAME: &str = "tract";

#[derive(Debug, Default, Clone, Copy)]
pub struct TractRuntime;

impl crate::Runtime for TractRuntime {
    fn name(&self) -> &'static str {
        NAME
    }

    fn load(&self, bytes: &[u8], interface: &ModelInterface) -> Result<Loaded, Error> {
        let started = Instant::now();
        let load_err = |detail: String| Error::Load {
            runtime: NAME,
            detail,
        };
        let mut model = tract_onnx::onnx()
            .model_for_read(&mut Cursor::new(bytes))
            .map_err(|e| load_err(format!("{e:#}")))?;

        // Fix input facts from the signed interface, matched by name, so that shapes are checked
        // and the optimizer can specialise; dynamic dimensions share one batch symbol.
        let batch = model.sym("batch");
        let graph_inputs: Vec<String> = model
            .input_outlets()
            .map_err(|e| load_err(format!("{e:#}")))?
            .iter()
            .map(|o| model.node(o.node).name.clone())
            .collect();
        if graph_inputs.len() != interface.inputs.len() {
            return Err(load_err(format!(
                "graph has inputs {graph_inputs:?}, interface declares {:?}",
                interface.inputs.iter().map(|s| &s.name).collect::<Vec<_>>()
            )));
        }
        let mut input_order = Vec::with_capacity(graph_inputs.len());
        for (index, name) in graph_inputs.iter().enumerate() {
            let spec = interface
                .input(name)
                .ok_or_else(|| load_err(format!("graph input {name:?} is not in the interface")))?;
            if spec.dtype != DType::Float32 {
                return Err(load_err(format!(
                    "input {name:?} is {:?}; this runtime serves float32 inputs only",
                    spec.dtype
                )));
            }
            let dims: TVec<TDim> = spec
                .shape
                .iter()
                .map(|&d| {
                    if d < 0 {
                        TDim::Sym(batch.clone())
                    } else {
                        TDim::Val(d)
                    }
                })
                .collect();
            model
                .set_input_fact(index, InferenceFact::dt_shape(f32::datum_type(), dims))
                .map_err(|e| load_err(format!("{e:#}")))?;
            input_order.push(name.clone());
        }
        let optimized = model
            .into_optimized()
            .map_err(|e| load_err(format!("{e:#}")))?;
        let output_names: Vec<String> = optimized
            .output_outlets()
            .map_err(|e| load_err(format!("{e:#}")))?
            .iter()
            .map(|o| {
                optimized
                    .outlet_label(*o)
                    .map(str::to_string)
                    .unwrap_or_else(|| optimized.node(o.node).name.clone())
            })
            .collect();
        for spec in &interface.outputs {
            if !output_names.contains(&spec.name) {
                return Err(load_err(format!(
                    "interface output {:?} is not among the graph's outputs {output_names:?}",
                    spec.name
                )));
            }
        }
        let plan = optimized
            .into_runnable()
            .map_err(|e| load_err(format!("{e:#}")))?;
        Ok(Loaded {
            model: Box::new(TractModel {
                plan,
                interface: interface.clone(),
                input_order,
                output_names,
                states: Mutex::new(Vec::new()),
            }),
            load_time: started.elapsed(),
        })
    }
}

struct TractModel {
    plan: Arc<TypedRunnableModel>,
    interface: ModelInterface,
    input_order: Vec<String>,
    output_names: Vec<String>,
    /// Idle run states, reused so that a call does not rebuild per-node scratch state; one is
    /// taken per call, so concurrent calls never share one.
    states: Mutex<Vec<TypedSimpleState>>,
}

impl TractModel {
    fn take_state(&self) -> TractResult<TypedSimpleState> {
        let pooled = self.states.lock().ok().and_then(|mut pool| pool.pop());
        match pooled {
            Some(state) => Ok(state),
            None => self.plan.spawn(),
        }
    }

    fn return_state(&self, state: TypedSimpleState) {
        // Keep one idle state per core: enough for every core to run without rebuilding one,
        // while a burst of concurrent calls does not leave its scratch buffers behind.
        let keep = crate::cores();
        if let Ok(mut pool) = self.states.lock()
            && pool.len() < keep
        {
            pool.push(state);
        }
    }
}

impl LoadedModel for TractModel {
    fn runtime(&self) -> &'static str {
        NAME
    }

    fn run(&self, inputs: &Inputs) -> Result<Outputs, Error> {
        check_inputs(&self.interface, inputs)?;
        let run_err = |e: TractError| Error::Run {
            runtime: NAME,
            detail: format!("{e:#}"),
        };
        let mut values: TVec<TValue> = TVec::with_capacity(self.input_order.len());
        for name in &self.input_order {
            // check_inputs guarantees presence and a matching element count.
            let Some(t) = inputs.get(name) else {
                continue;
            };
            let tensor = Tensor::from_shape(&t.shape, &t.data).map_err(run_err)?;
            values.push(tensor.into_tvalue());
        }
        let mut state = self.take_state().map_err(run_err)?;
        let result = state.run(values);
        self.return_state(state);
        let outputs = result.map_err(run_err)?;
        let mut named = Outputs::new();
        for (name, value) in self.output_names.iter().zip(outputs) {
            if self.interface.output(name).is_none() {
                continue;
            }
            let view = value.to_plain_array_view::<f32>().map_err(run_err)?;
            named.insert(
                name.clone(),
                F32Tensor {
                    shape: view.shape().to_vec(),
                    data: view.iter().copied().collect(),
                },
            );
        }
        Ok(named)
    }
}

//! The pure-Rust backend: tract. The embedded default, no native libraries.

use crate::onnx;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tract_onnx::prelude::*;
use vigil_core::{
    Backend, DataType, Error, ErrorCode, LoadOptions, LoadedModel, OperatorTime, Profile, Signature, Tensor, TensorData,
};

#[derive(Debug, Default, Clone, Copy)]
pub struct TractBackend;

impl Backend for TractBackend {
    fn name(&self) -> &'static str {
        "tract"
    }

    fn load(&self, model: &[u8], signature: &Signature, _: &LoadOptions) -> Result<Box<dyn LoadedModel>, String> {
        let plan = plan(model, signature)?;
        let output_names: Vec<String> = signature.outputs.iter().map(|o| o.name.clone()).collect();
        Ok(Box::new(TractModel { plan, output_names }))
    }

    /// Times each node of the optimised plan by wrapping its evaluation.
    fn profile(
        &self,
        model: &[u8],
        signature: &Signature,
        _: &LoadOptions,
        inputs: &[Tensor],
        warmup: usize,
        runs: usize,
    ) -> Result<Profile, String> {
        let plan = plan(model, signature)?;
        let mut state = TypedSimpleState::new(&plan).map_err(|e| format!("{e:#}"))?;
        let mut times: HashMap<usize, (usize, Duration)> = HashMap::new();
        let mut wall = Duration::ZERO;
        for run in 0..warmup.saturating_add(runs) {
            let values: TVec<TValue> = inputs.iter().cloned().map(to_tract).collect::<Result<_, _>>()?;
            let measured = run >= warmup;
            let started = Instant::now();
            state
                .run_plan_with_eval(values, |context, op_state, node, input| {
                    let at = Instant::now();
                    let out = tract_onnx::tract_core::plan::eval(context, op_state, node, input);
                    if measured {
                        let entry = times.entry(node.id).or_default();
                        entry.0 += 1;
                        entry.1 += at.elapsed();
                    }
                    out
                })
                .map_err(|e| format!("the model failed while profiled: {e:#}"))?;
            if measured {
                wall += started.elapsed();
            }
        }
        let graph = plan.model();
        let operators = times
            .into_iter()
            .map(|(id, (calls, time))| {
                let node = graph.node(id);
                OperatorTime { node: node.name.clone(), op: node.op().name().into_owned(), calls, time }
            })
            .collect();
        Ok(Profile { runs, wall, operators })
    }
}

/// The model's optimised plan, its inputs fixed to `signature`'s types and
/// shapes (dynamic axes as named symbols).
fn plan(model: &[u8], signature: &Signature) -> Result<Arc<TypedRunnableModel>, String> {
    let proto = onnx::parse(model)?;
    let onnx = tract_onnx::onnx();
    let mut graph = onnx.model_for_proto_model(&proto).map_err(|e| format!("tract could not read the graph: {e:#}"))?;
    let input_names: Vec<String> =
        graph.input_outlets().map_err(|e| format!("{e:#}"))?.iter().map(|o| graph.node(o.node).name.clone()).collect();
    for (index, name) in input_names.iter().enumerate() {
        let spec =
            signature.input(name).ok_or_else(|| format!("the graph input '{name}' is missing from the signature"))?;
        let dims: TVec<TDim> = spec
            .shape
            .iter()
            .enumerate()
            .map(|(axis, &d)| match usize::try_from(d) {
                Ok(d) => d.to_dim(),
                // The same symbols the signature checks requests against.
                Err(_) => graph.sym(&spec.symbol(axis).unwrap_or_default()).into(),
            })
            .collect();
        let fact = TypedFact::dt_shape(datum_type(spec.datatype), &*dims);
        graph.set_input_fact(index, fact.into()).map_err(|e| format!("input '{name}': {e:#}"))?;
    }
    graph
        .into_optimized()
        .and_then(|m| m.into_runnable())
        .map_err(|e| format!("tract could not prepare the model: {e:#}"))
}

struct TractModel {
    plan: Arc<TypedRunnableModel>,
    output_names: Vec<String>,
}

impl LoadedModel for TractModel {
    fn infer(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, Error> {
        let inputs: TVec<TValue> =
            inputs.into_iter().map(to_tract).collect::<Result<_, _>>().map_err(Error::invalid_input)?;
        let failed = |e: String| Error::new(ErrorCode::InferenceFailed, e);
        let outputs = self.plan.run(inputs).map_err(|e| failed(format!("{e:#}")))?;
        if outputs.len() != self.output_names.len() {
            return Err(failed(format!(
                "the model returned {} outputs, its signature has {}",
                outputs.len(),
                self.output_names.len()
            )));
        }
        outputs
            .into_iter()
            .zip(&self.output_names)
            .map(|(t, name)| from_tract(name, t.into_tensor()).map_err(failed))
            .collect()
    }
}

fn datum_type(d: DataType) -> DatumType {
    match d {
        DataType::Bool => DatumType::Bool,
        DataType::Uint8 => DatumType::U8,
        DataType::Uint16 => DatumType::U16,
        DataType::Uint32 => DatumType::U32,
        DataType::Uint64 => DatumType::U64,
        DataType::Int8 => DatumType::I8,
        DataType::Int16 => DatumType::I16,
        DataType::Int32 => DatumType::I32,
        DataType::Int64 => DatumType::I64,
        DataType::Fp16 => DatumType::F16,
        DataType::Fp32 => DatumType::F32,
        DataType::Fp64 => DatumType::F64,
        DataType::Bytes => DatumType::String,
    }
}

fn array<T: Datum>(shape: &[usize], v: Vec<T>) -> Result<TValue, String> {
    tract_ndarray::ArrayD::from_shape_vec(shape, v).map(|a| a.into_tvalue()).map_err(|e| format!("{e}"))
}

fn to_tract(t: Tensor) -> Result<TValue, String> {
    let shape = t.shape;
    match t.data {
        TensorData::Bool(v) => array(&shape, v),
        TensorData::Uint8(v) => array(&shape, v),
        TensorData::Uint16(v) => array(&shape, v),
        TensorData::Uint32(v) => array(&shape, v),
        TensorData::Uint64(v) => array(&shape, v),
        TensorData::Int8(v) => array(&shape, v),
        TensorData::Int16(v) => array(&shape, v),
        TensorData::Int32(v) => array(&shape, v),
        TensorData::Int64(v) => array(&shape, v),
        TensorData::Fp16(v) => array(&shape, v),
        TensorData::Fp32(v) => array(&shape, v),
        TensorData::Fp64(v) => array(&shape, v),
        TensorData::Bytes(v) => {
            // tract keeps strings as UTF-8 `String`s.
            let strings = v
                .into_iter()
                .enumerate()
                .map(|(i, b)| {
                    String::from_utf8(b).map_err(|_| format!("input '{}' element {i} is not valid UTF-8", t.name))
                })
                .collect::<Result<Vec<_>, _>>()?;
            array(&shape, strings)
        }
    }
}

fn from_tract(name: &str, t: tract_onnx::prelude::Tensor) -> Result<Tensor, String> {
    fn vec<T: Datum>(t: tract_onnx::prelude::Tensor) -> Result<Vec<T>, String> {
        Ok(t.into_plain_array::<T>().map_err(|e| format!("{e:#}"))?.into_iter().collect())
    }
    let shape = t.shape().to_vec();
    let data = match t.datum_type() {
        DatumType::Bool => TensorData::Bool(vec(t)?),
        DatumType::U8 => TensorData::Uint8(vec(t)?),
        DatumType::U16 => TensorData::Uint16(vec(t)?),
        DatumType::U32 => TensorData::Uint32(vec(t)?),
        DatumType::U64 => TensorData::Uint64(vec(t)?),
        DatumType::I8 => TensorData::Int8(vec(t)?),
        DatumType::I16 => TensorData::Int16(vec(t)?),
        DatumType::I32 => TensorData::Int32(vec(t)?),
        DatumType::I64 => TensorData::Int64(vec(t)?),
        DatumType::F16 => TensorData::Fp16(vec(t)?),
        DatumType::F32 => TensorData::Fp32(vec(t)?),
        DatumType::F64 => TensorData::Fp64(vec(t)?),
        DatumType::String => TensorData::Bytes(vec::<String>(t)?.into_iter().map(String::into_bytes).collect()),
        // Some ONNX ops (e.g. label outputs of classifiers) come out as symbolic dims.
        DatumType::TDim => TensorData::Int64(vec(t.cast_to::<i64>().map_err(|e| format!("{e:#}"))?.into_owned())?),
        other => return Err(format!("output '{name}' has tract type {other:?}, which Vigil cannot serve")),
    };
    Tensor::new(name, shape, data)
}

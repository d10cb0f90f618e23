//! Reading what an ONNX model declares, independent of the backend that runs it.

use tract_onnx::pb;
use tract_onnx::pb::tensor_proto::DataType as OnnxType;
use tract_onnx::prelude::Framework;
use vigil_core::{DataType, Signature, TensorSpec};

/// Parses the protobuf, refusing anything without a graph.
pub fn parse(model: &[u8]) -> Result<pb::ModelProto, String> {
    let proto = tract_onnx::onnx()
        .proto_model_for_read(&mut &model[..])
        .map_err(|e| format!("not a valid ONNX model: {e:#}"))?;
    if proto.graph.is_none() {
        return Err("not a valid ONNX model: it has no graph".into());
    }
    Ok(proto)
}

/// The model's declared inputs and outputs, with -1 for dynamic dimensions.
/// A model that keeps weights in external files is refused here, before any
/// backend could go looking for them.
pub fn read_signature(model: &[u8]) -> Result<Signature, String> {
    refuse_unchecked_fields(model)?;
    let proto = parse(model)?;
    if let Some(graph) = &proto.graph {
        check_external_data(graph)?;
    }
    signature_of(&proto)
}

/// `ModelProto` fields this reader cannot see into (the protobuf types drop
/// them) but a backend given the raw bytes would: training information (20) and
/// model-local functions (25). Their tensors could point at external files, so
/// a model carrying them is refused rather than let through unchecked.
fn refuse_unchecked_fields(mut bytes: &[u8]) -> Result<(), String> {
    fn varint(bytes: &mut &[u8]) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = bytes.split_first()?;
            *bytes = rest;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }
    let malformed = || "not a valid ONNX model: malformed protobuf".to_owned();
    while !bytes.is_empty() {
        let key = varint(&mut bytes).ok_or_else(malformed)?;
        match key >> 3 {
            20 => {
                return Err("the model carries training information (training_info), which Vigil does not serve".into());
            }
            25 => return Err("the model defines model-local functions, which Vigil does not serve yet".into()),
            _ => {}
        }
        let skip = match key & 7 {
            0 => {
                varint(&mut bytes).ok_or_else(malformed)?;
                0
            }
            1 => 8,
            2 => usize::try_from(varint(&mut bytes).ok_or_else(malformed)?).map_err(|_| malformed())?,
            5 => 4,
            _ => return Err(malformed()),
        };
        bytes = bytes.get(skip..).ok_or_else(malformed)?;
    }
    Ok(())
}

/// ONNX `data_location = EXTERNAL`.
const EXTERNAL: i32 = 1;

/// Refuses tensors stored outside the model file. One whose `location` leaves
/// the model's directory (absolute, `..`) is an attack on the server's files and
/// says so; one inside it is not supported yet (models are single files).
fn check_external_data(graph: &pb::GraphProto) -> Result<(), String> {
    let mut tensors: Vec<&pb::TensorProto> = graph.initializer.iter().collect();
    tensors.extend(graph.sparse_initializer.iter().filter_map(|s| s.values.as_ref()));
    let mut subgraphs = Vec::new();
    for node in &graph.node {
        for a in &node.attribute {
            tensors.extend(a.t.iter().chain(&a.tensors));
            tensors.extend(a.sparse_tensor.iter().chain(&a.sparse_tensors).filter_map(|s| s.values.as_ref()));
            subgraphs.extend(a.g.iter().chain(&a.graphs));
        }
    }
    for t in tensors {
        if t.data_location != Some(EXTERNAL) && t.external_data.is_empty() {
            continue;
        }
        let location = t.external_data.iter().find(|e| e.key == "location").map_or("", |e| e.value.as_str());
        let path = std::path::Path::new(location);
        let escapes = location.is_empty()
            || location.contains('\\')
            || path.components().any(|c| !matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir));
        return Err(if escapes {
            format!(
                "tensor '{}' keeps its data at external path {:?}, outside the model's directory: refused",
                t.name,
                location.chars().take(200).collect::<String>()
            )
        } else {
            format!(
                "tensor '{}' keeps its data in the external file {location:?}; external data is not supported yet, \
                 save the model with its weights inside model.onnx",
                t.name
            )
        });
    }
    subgraphs.into_iter().try_for_each(check_external_data)
}

/// Graph inputs that are not initializers (older exporters list weights as inputs).
pub(crate) fn graph_inputs(graph: &pb::GraphProto) -> impl Iterator<Item = &pb::ValueInfoProto> {
    graph.input.iter().filter(|i| !graph.initializer.iter().any(|t| t.name == i.name))
}

fn signature_of(proto: &pb::ModelProto) -> Result<Signature, String> {
    let graph = proto.graph.as_ref().ok_or("the model has no graph")?;
    let spec = |v: &pb::ValueInfoProto| -> Result<TensorSpec, String> {
        let Some(pb::type_proto::Value::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
            return Err(format!("'{}' is not a tensor (sequences and maps are not supported)", v.name));
        };
        let datatype = v2_type(t.elem_type)
            .ok_or_else(|| format!("'{}' has ONNX element type {}, which Vigil does not serve", v.name, t.elem_type))?;
        let (shape, dim_names): (Vec<i64>, Vec<Option<String>>) = t
            .shape
            .as_ref()
            .ok_or_else(|| format!("'{}' has no declared shape; set it in config.toml", v.name))?
            .dim
            .iter()
            .map(|d| match &d.value {
                Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) if *v >= 0 => (*v, None),
                Some(pb::tensor_shape_proto::dimension::Value::DimParam(p)) if !p.is_empty() => (-1, Some(p.clone())),
                _ => (-1, None),
            })
            .unzip();
        Ok(TensorSpec { name: v.name.clone(), datatype, shape, dim_names })
    };
    Ok(Signature {
        inputs: graph_inputs(graph).map(spec).collect::<Result<_, _>>()?,
        outputs: graph.output.iter().map(spec).collect::<Result<_, _>>()?,
    })
}

fn v2_type(onnx: i32) -> Option<DataType> {
    Some(match OnnxType::try_from(onnx).ok()? {
        OnnxType::Bool => DataType::Bool,
        OnnxType::Uint8 => DataType::Uint8,
        OnnxType::Uint16 => DataType::Uint16,
        OnnxType::Uint32 => DataType::Uint32,
        OnnxType::Uint64 => DataType::Uint64,
        OnnxType::Int8 => DataType::Int8,
        OnnxType::Int16 => DataType::Int16,
        OnnxType::Int32 => DataType::Int32,
        OnnxType::Int64 => DataType::Int64,
        OnnxType::Float16 => DataType::Fp16,
        OnnxType::Float => DataType::Fp32,
        OnnxType::Double => DataType::Fp64,
        OnnxType::String => DataType::Bytes,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// A model whose one initializer keeps its data at `location` (or in the file itself when `None`).
    fn model_with_weights_at(location: Option<&str>) -> Vec<u8> {
        let mut weights = pb::TensorProto { name: "w".into(), dims: vec![1], data_type: 1, ..Default::default() };
        match location {
            Some(l) => {
                weights.data_location = Some(EXTERNAL);
                weights.external_data = vec![pb::StringStringEntryProto { key: "location".into(), value: l.into() }];
            }
            None => weights.float_data = vec![1.0],
        }
        let tensor = |name: &str| pb::ValueInfoProto {
            name: name.into(),
            r#type: Some(pb::TypeProto {
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: 1,
                    shape: Some(pb::TensorShapeProto {
                        dim: vec![pb::tensor_shape_proto::Dimension {
                            value: Some(pb::tensor_shape_proto::dimension::Value::DimValue(1)),
                            ..Default::default()
                        }],
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        let graph = pb::GraphProto {
            node: vec![pb::NodeProto {
                op_type: "Add".into(),
                input: vec!["x".into(), "w".into()],
                output: vec!["y".into()],
                ..Default::default()
            }],
            initializer: vec![weights],
            input: vec![tensor("x")],
            output: vec![tensor("y")],
            ..Default::default()
        };
        let model = pb::ModelProto {
            ir_version: 8,
            opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: 17 }],
            graph: Some(graph),
            ..Default::default()
        };
        model.encode_to_vec()
    }

    #[test]
    fn external_data_outside_the_model_directory_is_refused() {
        assert!(read_signature(&model_with_weights_at(None)).is_ok());
        for escaping in ["/etc/passwd", "../../secrets.bin", "a/../../b", "C:\\x", ""] {
            let e = read_signature(&model_with_weights_at(Some(escaping))).unwrap_err();
            assert!(e.contains("outside the model's directory"), "{escaping}: {e}");
        }
        let e = read_signature(&model_with_weights_at(Some("weights.bin"))).unwrap_err();
        assert!(e.contains("not supported yet"), "{e}");
    }

    #[test]
    fn fields_the_check_cannot_see_are_refused() {
        let mut bytes = model_with_weights_at(None);
        // Field 25 (functions), length-delimited, empty.
        bytes.extend_from_slice(&[(25 << 3 | 2) as u8, 1, 0]);
        assert!(read_signature(&bytes).unwrap_err().contains("functions"));
        let mut bytes = model_with_weights_at(None);
        bytes.extend_from_slice(&[(20 << 3 | 2) as u8, 1, 0]);
        assert!(read_signature(&bytes).unwrap_err().contains("training"));
        for cut in [1, 3, 7] {
            let mut truncated = model_with_weights_at(None);
            truncated.truncate(truncated.len() - cut);
            assert!(read_signature(&truncated).is_err());
        }
    }
}

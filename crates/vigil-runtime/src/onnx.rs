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

/// What a model's graph may hold before a backend is let at it.
#[derive(Debug, Clone, Copy)]
pub struct GraphLimits {
    /// Nodes in the graph and its subgraphs together.
    pub max_nodes: usize,
    /// Elements of a tensor that an operator with constant shape inputs
    /// (`ConstantOfShape`, `Expand`, `Tile`) would make: a backend folds such
    /// constants while it prepares the model, before any request limits apply.
    pub max_elements: usize,
}

impl Default for GraphLimits {
    fn default() -> Self {
        GraphLimits { max_nodes: 50_000, max_elements: 16 * 1024 * 1024 }
    }
}

/// Refuses graphs whose preparation alone would take unbounded time or memory:
/// too many nodes, or constant-shaped operators that would materialise a
/// tensor past `max_elements`.
pub fn check_graph(model: &[u8], limits: GraphLimits) -> Result<(), String> {
    let proto = parse(model)?;
    let graph = proto.graph.as_ref().ok_or("the model has no graph")?;
    let nodes = count_nodes(graph);
    if nodes > limits.max_nodes {
        return Err(format!(
            "the graph has {nodes} nodes, over limits.max_model_nodes ({}); raise it for a model this large",
            limits.max_nodes
        ));
    }
    check_constant_shapes(graph, limits.max_elements)
}

fn subgraphs(node: &pb::NodeProto) -> impl Iterator<Item = &pb::GraphProto> {
    node.attribute.iter().flat_map(|a| a.g.iter().chain(&a.graphs))
}

fn count_nodes(graph: &pb::GraphProto) -> usize {
    graph.node.iter().map(|n| 1 + subgraphs(n).map(count_nodes).sum::<usize>()).sum()
}

/// The integers a tensor holds (int64 or int32, inline or raw), if it is small.
fn integers(t: &pb::TensorProto) -> Option<Vec<i64>> {
    const MAX: usize = 64;
    if !t.int64_data.is_empty() {
        return (t.int64_data.len() <= MAX).then(|| t.int64_data.clone());
    }
    if !t.int32_data.is_empty() {
        return (t.int32_data.len() <= MAX).then(|| t.int32_data.iter().map(|&v| i64::from(v)).collect());
    }
    let width = match OnnxType::try_from(t.data_type).ok()? {
        OnnxType::Int64 => 8,
        OnnxType::Int32 => 4,
        _ => return None,
    };
    if t.raw_data.len() > MAX * width || !t.raw_data.len().is_multiple_of(width) {
        return None;
    }
    Some(
        t.raw_data
            .chunks_exact(width)
            .map(|c| match c.try_into() {
                Ok(b8) => i64::from_le_bytes(b8),
                Err(_) => i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            })
            .collect(),
    )
}

/// The elements a shape describes, saturating (negative dims count as 0).
fn elements(dims: &[i64]) -> u128 {
    dims.iter().fold(1u128, |n, &d| n.saturating_mul(u128::try_from(d).unwrap_or(0)))
}

fn check_constant_shapes(graph: &pb::GraphProto, max_elements: usize) -> Result<(), String> {
    // Constant integer tensors by name: initializers and `Constant` nodes.
    let mut constants: std::collections::HashMap<&str, Vec<i64>> = std::collections::HashMap::new();
    let mut dims: std::collections::HashMap<&str, &[i64]> = std::collections::HashMap::new();
    for t in &graph.initializer {
        dims.insert(&t.name, &t.dims);
        if let Some(v) = integers(t) {
            constants.insert(&t.name, v);
        }
    }
    for node in graph.node.iter().filter(|n| n.op_type == "Constant") {
        let value = node.attribute.iter().find_map(|a| match a.name.as_str() {
            "value" => a.t.as_ref().and_then(integers),
            "value_ints" => Some(a.ints.clone()),
            _ => None,
        });
        if let (Some(out), Some(v)) = (node.output.first(), value) {
            constants.insert(out, v);
        }
    }
    for node in &graph.node {
        let constant = |i: usize| node.input.get(i).and_then(|name| constants.get(name.as_str()));
        let made = match node.op_type.as_str() {
            "ConstantOfShape" | "Expand" => {
                let shape_input = usize::from(node.op_type == "Expand");
                constant(shape_input).map(|shape| elements(shape))
            }
            "Tile" => constant(1).map(|repeats| {
                let input = node.input.first().and_then(|n| dims.get(n.as_str())).map_or(1, |d| elements(d));
                input.saturating_mul(elements(repeats))
            }),
            _ => None,
        };
        if let Some(n) = made.filter(|&n| n > max_elements as u128) {
            return Err(format!(
                "node '{}' ({}) would make a tensor of {n} elements, over limits.max_tensor_elements ({max_elements})",
                node.name, node.op_type
            ));
        }
        for g in subgraphs(node) {
            check_constant_shapes(g, max_elements)?;
        }
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

    fn int64s(name: &str, values: &[i64]) -> pb::TensorProto {
        pb::TensorProto {
            name: name.into(),
            dims: vec![values.len() as i64],
            data_type: OnnxType::Int64 as i32,
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        }
    }

    fn node(op: &str, inputs: &[&str], output: &str) -> pb::NodeProto {
        pb::NodeProto {
            name: format!("{op}_{output}"),
            op_type: op.into(),
            input: inputs.iter().map(|&i| i.into()).collect(),
            output: vec![output.into()],
            ..Default::default()
        }
    }

    fn graph_model(node: Vec<pb::NodeProto>, initializer: Vec<pb::TensorProto>) -> Vec<u8> {
        let graph = pb::GraphProto { node, initializer, ..Default::default() };
        pb::ModelProto { ir_version: 8, graph: Some(graph), ..Default::default() }.encode_to_vec()
    }

    #[test]
    fn graphs_that_would_materialise_huge_constants_are_refused() {
        let limits = GraphLimits { max_nodes: 1000, max_elements: 1 << 20 };
        let huge = [100_000, 100_000];
        let cases = [
            graph_model(vec![node("ConstantOfShape", &["s"], "y")], vec![int64s("s", &huge)]),
            graph_model(vec![node("Expand", &["x", "s"], "y")], vec![int64s("s", &huge)]),
            graph_model(
                vec![node("Tile", &["x", "r"], "y")],
                vec![
                    pb::TensorProto { name: "x".into(), dims: vec![1000], data_type: 1, ..Default::default() },
                    int64s("r", &[10_000]),
                ],
            ),
        ];
        for (i, bytes) in cases.iter().enumerate() {
            let e = check_graph(bytes, limits).unwrap_err();
            assert!(e.contains("max_tensor_elements"), "case {i}: {e}");
        }
        // A `Constant` node as the shape, in an int64 attribute tensor.
        let mut constant = node("Constant", &[], "s");
        constant.attribute = vec![pb::AttributeProto {
            name: "value".into(),
            t: Some(pb::TensorProto { int64_data: huge.to_vec(), data_type: 7, dims: vec![2], ..Default::default() }),
            ..Default::default()
        }];
        let bytes = graph_model(vec![constant, node("ConstantOfShape", &["s"], "y")], vec![]);
        assert!(check_graph(&bytes, limits).is_err());
        // Small shapes pass.
        let ok = graph_model(vec![node("ConstantOfShape", &["s"], "y")], vec![int64s("s", &[1, 512, 512])]);
        check_graph(&ok, limits).unwrap();
    }

    #[test]
    fn graphs_past_the_node_limit_are_refused() {
        let limits = GraphLimits { max_nodes: 10_000, max_elements: 1 << 20 };
        let chain: Vec<pb::NodeProto> =
            (0..10_001).map(|i| node("Identity", &[&format!("t{i}")], &format!("t{}", i + 1))).collect();
        let e = check_graph(&graph_model(chain, vec![]), limits).unwrap_err();
        assert!(e.contains("10001 nodes") && e.contains("max_model_nodes"), "{e}");
        let chain: Vec<pb::NodeProto> =
            (0..100).map(|i| node("Identity", &[&format!("t{i}")], &format!("t{}", i + 1))).collect();
        check_graph(&graph_model(chain, vec![]), limits).unwrap();
    }
}

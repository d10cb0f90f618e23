//! The records of a request, row- or column-oriented, as parsed from its JSON body.

use crate::Error;
use crate::names::quoted;
use serde::Deserialize;
use serde_json::{Map, Value};

/// The records of one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Records {
    /// `{"instances": [...]}`: each record an object of features, or an array
    /// of values in the spec's feature order.
    Rows(Vec<Value>),
    /// `{"inputs": {"feature": [values…], …}}`: one array per feature, all of
    /// the same length.
    Columns { columns: Map<String, Value>, len: usize },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    #[serde(default)]
    instances: Option<Vec<Value>>,
    #[serde(default)]
    inputs: Option<Value>,
    /// TensorFlow Serving's signature and KServe V1's parameters: accepted
    /// (clients send them), not used (a version has one feature spec).
    #[serde(default, rename = "signature_name")]
    _signature_name: Option<String>,
    #[serde(default, rename = "parameters")]
    _parameters: Option<Value>,
}

impl Records {
    /// Parses a request body: KServe V1 / TensorFlow Serving's row
    /// (`instances`) or column (`inputs`) format.
    pub fn from_json(body: &[u8]) -> Result<Records, Error> {
        let body: Body =
            serde_json::from_slice(body).map_err(|e| Error::invalid_input(format!("malformed JSON body: {e}")))?;
        let records = match (body.instances, body.inputs) {
            (Some(rows), None) => Records::Rows(rows),
            (None, Some(Value::Object(columns))) => {
                let mut len = None;
                for (name, values) in &columns {
                    let Value::Array(values) = values else {
                        return Err(Error::invalid_input(format!(
                            "inputs.{}: a column is an array of values, one per record",
                            quoted(name)
                        )));
                    };
                    match len {
                        None => len = Some(values.len()),
                        Some(n) if n != values.len() => {
                            return Err(Error::invalid_input(format!(
                                "inputs.{}: has {} values but the other columns have {n}",
                                quoted(name),
                                values.len()
                            )));
                        }
                        Some(_) => {}
                    }
                }
                Records::Columns { len: len.unwrap_or(0), columns }
            }
            (None, Some(_)) => {
                return Err(Error::invalid_input(
                    "inputs: an object of feature columns ({\"feature\": [values…]}); V2 tensors go to /v2/models/…/infer",
                ));
            }
            (Some(_), Some(_)) => return Err(Error::invalid_input("give either instances or inputs, not both")),
            (None, None) => return Err(Error::invalid_input("instances: missing (or give column-oriented inputs)")),
        };
        if records.is_empty() {
            return Err(Error::invalid_input("instances: give at least one record"));
        }
        Ok(records)
    }

    pub fn len(&self) -> usize {
        match self {
            Records::Rows(rows) => rows.len(),
            Records::Columns { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rows_and_columns() {
        let r = Records::from_json(br#"{"instances": [{"a": 1}, [2]]}"#).unwrap();
        assert_eq!(r.len(), 2);
        let r = Records::from_json(br#"{"inputs": {"a": [1, 2, 3], "b": ["x", "y", "z"]}}"#).unwrap();
        assert_eq!(r.len(), 3);
        let r = Records::from_json(br#"{"signature_name": "serving_default", "parameters": {}, "instances": [{}]}"#);
        assert_eq!(r.unwrap().len(), 1, "TF Serving and KServe V1 fields are accepted");
    }

    #[test]
    fn refuses_hostile_bodies_naming_the_field() {
        let cases: [(&[u8], &str); 9] = [
            (b"", "malformed JSON"),
            (b"[1, 2]", "malformed JSON"),
            (br#"{"instances": [], "x": 1}"#, "unknown field"),
            (br#"{"instances": []}"#, "at least one record"),
            (br#"{"inputs": {"a": [1], "b": [1, 2]}}"#, "inputs.'b'"),
            (br#"{"inputs": {"a": 3}}"#, "inputs.'a'"),
            (br#"{"inputs": [{"name": "x"}]}"#, "V2 tensors"),
            (br#"{"instances": [1], "inputs": {}}"#, "not both"),
            (br#"{"instances": [NaN]}"#, "malformed JSON"),
        ];
        for (body, expected) in cases {
            let e = Records::from_json(body).unwrap_err();
            assert!(e.message().contains(expected), "{:?}: {}", String::from_utf8_lossy(body), e.message());
        }
        let deep = format!("{{\"instances\": [{}1{}]}}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(Records::from_json(deep.as_bytes()).unwrap_err().message().contains("recursion"));
    }
}

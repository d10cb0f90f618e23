//! The demo models, embedded in the binary so that `vigil serve --demo` needs
//! nothing else. Built by `models/make_models.py`; `models/demo` is the same set
//! as a model repository on disk.

use crate::model_config::ModelConfig;
use crate::repository::{Artifact, ModelSource};

const BREAST_CANCER: &[u8] = include_bytes!("../../../models/demo/breast_cancer/1/model.onnx");
const BREAST_CANCER_CONFIG: &str = include_str!("../../../models/demo/breast_cancer/config.toml");
const CREDIT: &[u8] = include_bytes!("../../../models/demo/credit/1/model.onnx");
const CREDIT_CONFIG: &str = include_str!("../../../models/demo/credit/config.toml");
const DIGITS_CNN: &[u8] = include_bytes!("../../../models/demo/digits_cnn/1/model.onnx");

pub fn sources() -> Vec<ModelSource> {
    vec![
        ModelSource {
            model: "breast_cancer".into(),
            version: "1".into(),
            artifact: Artifact::Embedded(BREAST_CANCER),
            digest: None,
            config: ModelConfig::parse(BREAST_CANCER_CONFIG),
            manifest: BREAST_CANCER_CONFIG.to_owned(),
        },
        ModelSource {
            model: "credit".into(),
            version: "1".into(),
            artifact: Artifact::Embedded(CREDIT),
            digest: None,
            config: ModelConfig::parse(CREDIT_CONFIG),
            manifest: CREDIT_CONFIG.to_owned(),
        },
        ModelSource {
            model: "digits_cnn".into(),
            version: "1".into(),
            artifact: Artifact::Embedded(DIGITS_CNN),
            digest: None,
            config: Ok(ModelConfig::default()),
            manifest: String::new(),
        },
    ]
}

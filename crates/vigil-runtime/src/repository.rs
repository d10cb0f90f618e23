//! Where models come from: a model repository directory (`DIR/<model>/<version>/model.onnx`
//! with an optional `DIR/<model>/config.toml`, in the spirit of Triton's) or the demo.

use crate::model_config::ModelConfig;
use std::fs;
use std::path::{Path, PathBuf};
use vigil_core::names::is_valid_name;

/// The file name of a version's model inside its directory.
pub const MODEL_FILE: &str = "model.onnx";
/// The optional per-model config file, beside the version directories.
pub const CONFIG_FILE: &str = "config.toml";

/// One model version to load.
#[derive(Debug, Clone)]
pub struct ModelSource {
    pub model: String,
    pub version: String,
    pub artifact: Artifact,
    /// The artifact's digest when it comes from the registry.
    pub digest: Option<String>,
    /// The parsed `config.toml`, or why it could not be read: a bad config fails
    /// that model's load instead of stopping the server.
    pub config: Result<ModelConfig, String>,
    /// `config.toml`'s text ("" when there is none): the manifest when the
    /// version is imported into the registry.
    pub manifest: String,
}

#[derive(Debug, Clone)]
pub enum Artifact {
    Embedded(&'static [u8]),
    File(PathBuf),
    /// Already read (from the registry's artifact store, verified against its digest).
    Bytes(bytes::Bytes),
}

/// The largest model file read: protobuf caps an ONNX model at 2 GiB (bigger
/// models keep weights in external data, which comes with the registry).
pub const MAX_MODEL_BYTES: u64 = 2 << 30;

impl Artifact {
    /// The model's bytes. Only regular files are read, up to [`MAX_MODEL_BYTES`]:
    /// a FIFO or a link to a device must fail this version, not hang the loader.
    pub fn read(&self) -> Result<bytes::Bytes, String> {
        let path = match self {
            Artifact::Embedded(b) => return Ok(bytes::Bytes::from_static(b)),
            Artifact::Bytes(b) => return Ok(b.clone()),
            Artifact::File(p) => p,
        };
        let fail = |e: &dyn std::fmt::Display| format!("cannot read {}: {e}", path.display());
        let meta = fs::metadata(path).map_err(|e| fail(&e))?;
        if !meta.is_file() {
            return Err(fail(&"not a regular file"));
        }
        if meta.len() > MAX_MODEL_BYTES {
            return Err(fail(&format_args!("{} bytes is over the {MAX_MODEL_BYTES}-byte limit", meta.len())));
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        fs::File::open(path)
            .and_then(|f| std::io::Read::read_to_end(&mut std::io::Read::take(f, MAX_MODEL_BYTES + 1), &mut bytes))
            .map_err(|e| fail(&e))?;
        if bytes.len() as u64 > MAX_MODEL_BYTES {
            return Err(fail(&"the file grew past the size limit while being read"));
        }
        Ok(bytes::Bytes::from(bytes))
    }
}

/// Scans a model repository. Entries that cannot be models (files, hidden or
/// badly named directories) are skipped with a warning; a version directory
/// without `model.onnx` becomes a source whose load fails with that reason.
pub fn scan(dir: &Path) -> Result<Vec<ModelSource>, String> {
    let mut sources = Vec::new();
    for model_dir in sorted_dirs(dir).map_err(|e| format!("cannot read the model repository {}: {e}", dir.display()))? {
        let Some(model) = valid_dir_name(&model_dir) else { continue };
        let config_path = model_dir.join(CONFIG_FILE);
        let text = if config_path.exists() {
            fs::read_to_string(&config_path).map_err(|e| format!("cannot read {}: {e}", config_path.display()))
        } else {
            Ok(String::new())
        };
        let config = text.as_deref().map_err(Clone::clone).and_then(ModelConfig::parse);
        let manifest = text.unwrap_or_default();
        let versions = match sorted_dirs(&model_dir) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(model, error = %e, "skipping model: cannot list its versions");
                continue;
            }
        };
        let before = sources.len();
        for version_dir in versions {
            let Some(version) = valid_dir_name(&version_dir) else { continue };
            sources.push(ModelSource {
                model: model.clone(),
                version,
                artifact: Artifact::File(version_dir.join(MODEL_FILE)),
                digest: None,
                config: config.clone(),
                manifest: manifest.clone(),
            });
        }
        if sources.len() == before {
            tracing::warn!(model, "skipping model: it has no version directories");
        }
    }
    if sources.is_empty() {
        return Err(format!(
            "the model repository {} holds no models (expected <model>/<version>/{MODEL_FILE})",
            dir.display()
        ));
    }
    Ok(sources)
}

fn sorted_dirs(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        // Follows symlinks on purpose: Kubernetes mounts ConfigMaps and volumes through them.
        if path.is_dir() {
            dirs.push(path);
        }
    }
    dirs.sort();
    Ok(dirs)
}

fn valid_dir_name(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    if name.starts_with('.') {
        return None;
    }
    if !is_valid_name(name) {
        tracing::warn!(path = %path.display(), "skipping: names are letters, digits, '_', '-', '.'");
        return None;
    }
    Some(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_models_versions_and_configs() {
        let root = std::env::temp_dir().join(format!("vigil-scan-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("a/1")).unwrap();
        fs::create_dir_all(root.join("a/2")).unwrap();
        fs::write(root.join("a/config.toml"), "backend = 'tract'").unwrap();
        fs::create_dir_all(root.join("b/1")).unwrap();
        fs::write(root.join("b/config.toml"), "nonsense = [").unwrap();
        fs::create_dir_all(root.join("bad name/1")).unwrap();
        fs::create_dir_all(root.join(".git/1")).unwrap();
        fs::create_dir_all(root.join("empty")).unwrap();
        fs::write(root.join("README"), "not a model").unwrap();

        let s = scan(&root).unwrap();
        let ids: Vec<_> = s.iter().map(|s| format!("{}/{}", s.model, s.version)).collect();
        assert_eq!(ids, ["a/1", "a/2", "b/1"]);
        assert!(s[0].config.is_ok());
        assert!(s[2].config.as_ref().unwrap_err().contains("config.toml"));
        assert!(s[0].artifact.read().unwrap_err().contains("model.onnx"));
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn only_regular_files_are_read() {
        for path in ["/dev/zero", "/tmp", "/proc/self/mem"] {
            let err = Artifact::File(path.into()).read().unwrap_err();
            assert!(err.contains(path), "{err}");
        }
    }

    #[test]
    fn an_empty_repository_is_an_error() {
        let root = std::env::temp_dir().join(format!("vigil-empty-{}", std::process::id()));
        fs::create_dir_all(root.join("nothing-here")).unwrap();
        assert!(scan(&root).unwrap_err().contains("holds no models"));
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_missing_repository_is_an_error() {
        assert!(scan(Path::new("/definitely/not/here")).unwrap_err().contains("cannot read the model repository"));
    }
}

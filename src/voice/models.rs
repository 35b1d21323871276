//! Where each voice model file lives under the models directory, checked with
//! `models::fetch::require` so a missing file gives the one-line "run `sofia-phone models
//! fetch`" error.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::models::fetch::{require, MissingModel};

/// Paths of the provisioned voice models.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoiceModels {
    pub whisper: PathBuf,
    pub piper_model: PathBuf,
    pub piper_config: PathBuf,
    pub silero_vad: PathBuf,
    /// Smart Turn; required only when the profile's agent.end_of_turn is "model".
    pub smart_turn: PathBuf,
    pub onnxruntime: PathBuf,
    pub minilm_dir: PathBuf,
}

impl VoiceModels {
    /// The standard layout under `models_dir` (what `models fetch` writes); nothing is
    /// checked yet.
    pub fn under(models_dir: &Path) -> Self {
        Self {
            whisper: models_dir.join("ggml-tiny.en.bin"),
            piper_model: models_dir.join("piper/en_US-joe-medium.onnx"),
            piper_config: models_dir.join("piper/en_US-joe-medium.onnx.json"),
            silero_vad: models_dir.join("vad/silero_vad.onnx"),
            smart_turn: models_dir.join(crate::models::catalog::SMART_TURN_MODEL),
            onnxruntime: models_dir.join("onnxruntime/libonnxruntime.so.1.32.0"),
            minilm_dir: models_dir.join("minilm"),
        }
    }

    /// Checks that every voice model file is present and complete.
    pub fn require_all(&self) -> Result<(), MissingModel> {
        for path in [
            &self.whisper,
            &self.piper_model,
            &self.piper_config,
            &self.silero_vad,
            &self.onnxruntime,
        ] {
            require(path)?;
        }
        Ok(())
    }
}

/// An ONNX Runtime session for `model` (checked like every model file, ONNX Runtime
/// loaded first) on one intra-op and one inter-op thread: Silero and Smart Turn are
/// small, and run beside Whisper on few cores. ONNX Runtime's defaults give the rest:
/// sequential execution, every graph optimisation. `what` names the model in errors.
pub fn single_thread_session(
    model: &Path,
    onnxruntime: &Path,
    what: &str,
) -> anyhow::Result<ort::session::Session> {
    require(model)?;
    init_onnxruntime(onnxruntime)?;
    let options = |e: &dyn std::fmt::Display| anyhow::anyhow!("ONNX Runtime session options: {e}");
    let mut builder = ort::session::Session::builder()
        .map_err(|e| options(&e))?
        .with_intra_threads(1)
        .map_err(|e| options(&e))?
        .with_inter_threads(1)
        .map_err(|e| options(&e))?;
    builder
        .commit_from_file(model)
        .map_err(|e| anyhow::anyhow!("cannot load {what} {}: {e}", model.display()))
}

/// Why ONNX Runtime could not be set up.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OrtSetupError {
    #[error(transparent)]
    Missing(#[from] MissingModelText),
    #[error("cannot load ONNX Runtime from {path}: {reason}")]
    Load { path: PathBuf, reason: String },
}

/// [`MissingModel`] as text, so the error can be cloned out of the once-cell.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct MissingModelText(String);

static ORT: OnceLock<Result<PathBuf, OrtSetupError>> = OnceLock::new();

/// Loads the fetched ONNX Runtime shared library, once per process, before any ort
/// session is made (Piper and Silero both need it). ort is built with `load-dynamic`, so
/// without this it would look for `libonnxruntime.so` on the library path.
pub fn init_onnxruntime(library: &Path) -> Result<(), OrtSetupError> {
    let result = ORT.get_or_init(|| {
        require(library).map_err(|e| OrtSetupError::Missing(MissingModelText(e.to_string())))?;
        let builder = ort::init_from(library).map_err(|e| OrtSetupError::Load {
            path: library.to_path_buf(),
            reason: e.to_string(),
        })?;
        // `false` means an environment already existed: still usable.
        let _ = builder.with_name("sofia-phone").commit();
        Ok(library.to_path_buf())
    });
    match result {
        Ok(loaded) if loaded == library => Ok(()),
        Ok(loaded) => Err(OrtSetupError::Load {
            path: library.to_path_buf(),
            reason: format!("ONNX Runtime was already loaded from {}", loaded.display()),
        }),
        Err(e) => Err(e.clone()),
    }
}

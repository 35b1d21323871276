//! Local sentence embeddings: all-MiniLM-L6-v2 run with candle on the CPU.
//!
//! The model files come from `sofia-phone models fetch` (`<models_dir>/minilm/`).
//! Pooling follows sentence-transformers for this model: the mean of the last hidden
//! state over the attention mask, then L2 normalisation, so the dot product of two
//! embeddings is their cosine similarity.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context as _};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{Tokenizer, TruncationParams};

use crate::models::fetch::require;

/// Embedding width of all-MiniLM-L6-v2.
pub const DIM: usize = 384;
const _: () = assert!(
    DIM == sofia_memory::DIM,
    "the memory engine stores MiniLM vectors"
);

/// Longest input in tokens, [CLS] and [SEP] included; longer texts are truncated.
/// sentence-transformers uses 256 for this model (`max_seq_length`); the position
/// table has 512 rows.
const MAX_TOKENS: usize = 256;

/// Texts per forward pass. Each batch is padded only to its own longest text, and
/// texts are grouped by length first, so little is spent on padding.
const BATCH: usize = 32;

/// all-MiniLM-L6-v2 on the CPU: 384-dim unit vectors. Loading takes a fraction of a
/// second; `embed` is CPU-bound (tens of ms per sentence): call it from a blocking
/// thread, never on a tokio worker.
pub struct MiniLm {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
}

impl std::fmt::Debug for MiniLm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MiniLm")
            .field("dim", &DIM)
            .finish_non_exhaustive()
    }
}

impl MiniLm {
    /// Loads from a directory holding model.safetensors, tokenizer.json and
    /// config.json. Errors name the missing file and say to run
    /// `sofia-phone models fetch`.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        // `require` also catches a truncated download (size against the checksum record
        // `models fetch` writes); its error names the file and says to run the fetch.
        let file = |name: &str| -> anyhow::Result<PathBuf> {
            let path = dir.join(name);
            require(&path)?;
            Ok(path)
        };
        let (weights, tokenizer, config) = (
            file("model.safetensors")?,
            file("tokenizer.json")?,
            file("config.json")?,
        );

        let config: Config = serde_json::from_slice(
            &std::fs::read(&config).with_context(|| format!("reading {}", config.display()))?,
        )
        .with_context(|| format!("parsing {}", config.display()))?;

        let mut tokenizer = Tokenizer::from_file(&tokenizer)
            .map_err(|e| anyhow!("loading {}: {e}", tokenizer.display()))?;
        // The shipped tokenizer pads every input to 128 tokens and truncates at 128;
        // we pad per batch ourselves and allow the model's 256.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| anyhow!("configuring the MiniLM tokenizer: {e}"))?;

        let device = Device::Cpu;
        let bytes =
            std::fs::read(&weights).with_context(|| format!("reading {}", weights.display()))?;
        let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, &device)
            .with_context(|| format!("parsing {}", weights.display()))?;
        let model = BertModel::load(vb, &config)
            .with_context(|| format!("loading the BERT weights from {}", weights.display()))?;
        Ok(Self {
            model,
            tokenizer,
            device,
        })
    }

    /// Unit-length embeddings, one per text, in order. Empty input → empty output.
    /// Batches internally (32 at a time, padding within a batch only to the batch's
    /// longest text).
    pub fn embed(&self, texts: &[&str]) -> anyhow::Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| anyhow!("tokenizing for MiniLM: {e}"))?;
        let ids: Vec<&[u32]> = encodings.iter().map(|e| e.get_ids()).collect();

        // Group texts of similar length so that batches carry little padding.
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| ids[i].len());

        let mut out = vec![Vec::new(); texts.len()];
        for chunk in order.chunks(BATCH) {
            let batch: Vec<&[u32]> = chunk.iter().map(|&i| ids[i]).collect();
            for (&i, v) in chunk.iter().zip(self.forward(&batch)?) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    pub fn embed_one(&self, text: &str) -> anyhow::Result<Vec<f32>> {
        self.embed(&[text])?
            .pop()
            .ok_or_else(|| anyhow!("MiniLM returned no embedding"))
    }

    /// One forward pass over token ids (special tokens included), padded to the
    /// longest; returns one unit vector per row.
    fn forward(&self, batch: &[&[u32]]) -> anyhow::Result<Vec<Vec<f32>>> {
        let rows = batch.len();
        let len = batch.iter().map(|ids| ids.len()).max().unwrap_or(0).max(1);
        let mut input = vec![0u32; rows * len]; // 0 is [PAD]
        let mut mask = vec![0u32; rows * len];
        for (r, ids) in batch.iter().enumerate() {
            input[r * len..r * len + ids.len()].copy_from_slice(ids);
            mask[r * len..r * len + ids.len()].fill(1);
        }
        let input = Tensor::from_vec(input, (rows, len), &self.device)?;
        let mask = Tensor::from_vec(mask, (rows, len), &self.device)?;
        let types = input.zeros_like()?;

        let hidden = self.model.forward(&input, &types, Some(&mask))?; // (rows, len, DIM)
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // (rows, len, 1)
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?; // (rows, DIM)
        let counts = mask.sum(1)?; // (rows, 1)
        let mean = summed.broadcast_div(&counts)?;
        let norm = mean
            .sqr()?
            .sum_keepdim(1)?
            .sqrt()?
            .clamp(1e-12f32, f32::MAX)?;
        let unit = mean.broadcast_div(&norm)?;
        Ok(unit.to_vec2::<f32>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<MiniLm>();
    }

    #[test]
    fn load_names_the_missing_file() {
        let dir = std::env::temp_dir().join("sofia-minilm-missing");
        let err = MiniLm::load(&dir).unwrap_err().to_string();
        assert!(err.contains("model.safetensors"), "{err}");
        assert!(err.contains("sofia-phone models fetch"), "{err}");
    }
}

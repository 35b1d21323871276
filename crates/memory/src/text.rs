//! Words for the lexical leg of retrieval: lower-cased alphanumeric tokens, English stop
//! words dropped, Snowball (Porter 2) stems. Stemming is what lifts BM25 on LoCoMo from
//! recall@10 0.558 to 0.606 on our dev files (../shared/notes/memory.md).

use rust_stemmers::{Algorithm, Stemmer};

/// Function words that carry no topic. Kept short: pronouns that matter for questions
/// ("my", "you") are dropped, negations are kept.
const STOP_WORDS: &[&str] = &[
    "a", "about", "after", "again", "all", "am", "an", "and", "any", "are", "as", "at", "be",
    "been", "before", "being", "both", "but", "by", "can", "could", "did", "do", "does", "doing",
    "for", "from", "had", "has", "have", "having", "he", "her", "here", "hers", "him", "his",
    "how", "i", "if", "in", "into", "is", "it", "its", "itself", "just", "me", "more", "most",
    "my", "myself", "of", "off", "on", "once", "only", "or", "other", "our", "ours", "out", "over",
    "own", "same", "she", "should", "so", "some", "such", "than", "that", "the", "their", "theirs",
    "them", "then", "there", "these", "they", "this", "those", "through", "to", "too", "under",
    "until", "up", "very", "was", "we", "were", "what", "when", "where", "which", "while", "who",
    "whom", "why", "will", "with", "would", "you", "your", "yours", "yourself", "s", "t", "d",
    "ll", "m", "re", "ve", "oh", "yeah", "hey", "hi", "um", "uh", "ok", "okay", "really", "also",
    "get", "got",
];

pub struct Analyzer {
    stemmer: Stemmer,
}

impl Default for Analyzer {
    fn default() -> Self {
        Self {
            stemmer: Stemmer::create(Algorithm::English),
        }
    }
}

impl std::fmt::Debug for Analyzer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Analyzer(english)")
    }
}

impl Analyzer {
    /// The stemmed terms of `text`, in order, stop words removed.
    pub fn terms(&self, text: &str) -> Vec<String> {
        words(text)
            .filter(|w| !is_stop_word(w))
            .map(|w| self.stemmer.stem(&w).into_owned())
            .collect()
    }
}

/// Lower-cased runs of letters and digits (apostrophes split: "don't" -> "don", "t").
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

pub fn is_stop_word(word: &str) -> bool {
    STOP_WORDS.contains(&word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_are_stemmed_lowercase_and_skip_stop_words() {
        let a = Analyzer::default();
        assert_eq!(
            a.terms("I went PAINTING with my Kids, they loved it!"),
            vec!["went", "paint", "kid", "love"]
        );
        assert_eq!(a.terms("paints"), a.terms("painted"));
    }

    #[test]
    fn unicode_and_punctuation_do_not_break_words() {
        let a = Analyzer::default();
        assert_eq!(a.terms("Zürich—café!!"), vec!["zürich", "café"]);
        assert!(a.terms("...").is_empty());
    }
}

//! Splits streamed reply text into sentences, so speech can start as soon as the first
//! sentence is complete rather than when the whole reply has arrived. With
//! [`SentenceSplitter::with_first_clause`] the first piece may end at a clause ("Of
//! course I can, ..."): it is synthesized and playing while the rest is synthesized.

/// Abbreviations whose full stop does not end a sentence.
const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "etc", "e.g", "i.e", "approx", "no",
    "mt", "ave",
];

/// A sentence longer than this (in bytes) is cut at a comma or space, so one long
/// unpunctuated run does not hold back the first audio.
const MAX_SENTENCE: usize = 220;

/// Words a first clause needs before it is cut off on its own. Fewer makes a clip so
/// short that the next one may not be synthesized by the time it has played (Piper runs
/// at about 0.15 real time here: a 3-word clause plays for ~0.8 s, long enough to
/// synthesize a 5 s sentence behind it).
const MIN_FIRST_CLAUSE_WORDS: usize = 3;

#[derive(Debug, Default, Clone)]
pub struct SentenceSplitter {
    pending: String,
    /// The next piece may end at a clause mark (only the reply's first piece does).
    first_clause: bool,
}

impl SentenceSplitter {
    pub fn new() -> Self {
        Self::default()
    }

    /// A splitter whose first piece ends at the first clause mark (`,` `;` `:` `—`
    /// before a space) once it has [`MIN_FIRST_CLAUSE_WORDS`] words: what the caller
    /// hears first is then ready after a fraction of the sentence's synthesis time.
    pub fn with_first_clause() -> Self {
        Self {
            pending: String::new(),
            first_clause: true,
        }
    }

    /// Adds a chunk of text; returns the sentences it completed, trimmed, in order.
    pub fn push(&mut self, chunk: &str) -> Vec<String> {
        self.pending.push_str(chunk);
        let mut out = Vec::new();
        while let Some(end) = self.sentence_end() {
            let rest = self.pending.split_off(end);
            let sentence = std::mem::replace(&mut self.pending, rest);
            let sentence = sentence.trim();
            if !sentence.is_empty() {
                out.push(sentence.to_string());
                self.first_clause = false;
            }
        }
        out
    }

    /// The text left over when the reply is complete.
    pub fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.pending);
        let rest = rest.trim();
        (!rest.is_empty()).then(|| rest.to_string())
    }

    /// Byte offset just past the first complete sentence in `pending`, if any. A
    /// terminator only counts once the next character is known to be whitespace, so
    /// "3.5" and "e.g." arriving in pieces are not cut early.
    fn sentence_end(&self) -> Option<usize> {
        let text = &self.pending;
        let chars: Vec<(usize, char)> = text.char_indices().collect();
        for (i, &(pos, c)) in chars.iter().enumerate() {
            if c == '\n' {
                return Some(pos + 1);
            }
            if self.first_clause && matches!(c, ',' | ';' | ':' | '—') {
                // "1,000" is not a clause: the mark must be followed by a space.
                let next = chars.get(i + 1).map(|&(_, n)| n);
                let words = text[..pos].split_whitespace().count();
                // Nor is a sentence's short tail worth a clip of its own ("Nice to meet
                // you, | Ada!"): when the rest of the sentence is already here and short,
                // the sentence goes whole.
                let rest = &text[pos + c.len_utf8()..];
                let short_tail = rest.find(['.', '!', '?', '…']).is_some_and(|end| {
                    rest[..end].split_whitespace().count() < MIN_FIRST_CLAUSE_WORDS
                });
                if next.is_some_and(char::is_whitespace)
                    && words >= MIN_FIRST_CLAUSE_WORDS
                    && !short_tail
                {
                    return Some(pos + c.len_utf8());
                }
                continue;
            }
            if !matches!(c, '.' | '!' | '?' | '…') {
                continue;
            }
            // Swallow runs of terminators and closing quotes/brackets: `?!"` ends once.
            let mut j = i + 1;
            while j < chars.len()
                && matches!(chars[j].1, '.' | '!' | '?' | '"' | '\'' | ')' | '”' | '’')
            {
                j += 1;
            }
            let Some(&(next_pos, next)) = chars.get(j) else {
                return None; // the next chunk decides
            };
            if !next.is_whitespace() {
                continue;
            }
            if c == '.' && is_abbreviation(&text[..pos]) {
                continue;
            }
            return Some(next_pos);
        }
        if text.len() > MAX_SENTENCE {
            let head = &text[..floor_char_boundary(text, MAX_SENTENCE)];
            let cut = head
                .rfind([',', ';', ':'])
                .map(|p| p + 1)
                .or_else(|| head.rfind(' '))
                .unwrap_or(head.len());
            return Some(cut.max(1));
        }
        None
    }
}

fn is_abbreviation(before_dot: &str) -> bool {
    let word = before_dot
        .rsplit(|c: char| c.is_whitespace())
        .next()
        .unwrap_or("")
        .trim_start_matches(['(', '"', '\''])
        .to_ascii_lowercase();
    // Single capital letters ("J. Smith") are initials.
    ABBREVIATIONS.contains(&word.as_str())
        || (word.len() == 1 && word.chars().all(char::is_alphabetic))
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(chunks: &[&str]) -> Vec<String> {
        let mut s = SentenceSplitter::new();
        let mut out: Vec<String> = chunks.iter().flat_map(|c| s.push(c)).collect();
        out.extend(s.finish());
        out
    }

    #[test]
    fn sentences_complete_as_chunks_arrive() {
        let got = split_all(&["Hello there", "! How are", " you? I am", " fine."]);
        assert_eq!(got, ["Hello there!", "How are you?", "I am fine."]);
    }

    #[test]
    fn decimals_and_abbreviations_do_not_split() {
        let got = split_all(&[
            "It costs 3",
            ".5 dollars, says Dr",
            ". Smith. e.g. this. Done",
        ]);
        assert_eq!(
            got,
            [
                "It costs 3.5 dollars, says Dr. Smith.",
                "e.g. this.",
                "Done"
            ]
        );
    }

    #[test]
    fn terminator_waits_for_the_next_character() {
        let mut s = SentenceSplitter::new();
        assert!(s.push("Wait.").is_empty());
        assert_eq!(s.push(" Go"), ["Wait."]);
        assert_eq!(s.finish().as_deref(), Some("Go"));
    }

    #[test]
    fn the_first_clause_goes_ahead_and_the_rest_stays_whole() {
        let mut s = SentenceSplitter::with_first_clause();
        let mut got: Vec<String> = [
            "Of course, I have",
            " noted it, see",
            " you on Friday, bye. Later, then.",
        ]
        .iter()
        .flat_map(|c| s.push(c))
        .collect();
        got.extend(s.finish());
        // "Of course," is too short to go alone; "Of course, I have noted it," is not.
        assert_eq!(
            got,
            [
                "Of course, I have noted it,",
                "see you on Friday, bye.",
                "Later, then."
            ]
        );
    }

    #[test]
    fn a_short_tail_stays_with_its_sentence() {
        let mut s = SentenceSplitter::with_first_clause();
        assert_eq!(
            s.push("Nice to meet you, Ada! How can I help? "),
            ["Nice to meet you, Ada!", "How can I help?"]
        );
    }

    #[test]
    fn a_first_clause_needs_a_space_after_its_mark() {
        let mut s = SentenceSplitter::with_first_clause();
        assert!(s.push("That costs 1,000 dollars").is_empty());
        assert_eq!(s.push(" today. Yes"), ["That costs 1,000 dollars today."]);
        assert_eq!(s.finish().as_deref(), Some("Yes"));
    }

    #[test]
    fn long_runs_are_cut_at_a_comma() {
        let long = format!("{}, and then {}", "word ".repeat(30), "more ".repeat(30));
        let got = split_all(&[&long]);
        assert!(got.len() >= 2, "{got:?}");
        assert!(got[0].ends_with(','));
    }
}

//! Small, deterministic text helpers for the built-in responder and the controller:
//! intents (goodbye, "what did I tell you"), names, and turning the caller's words round
//! ("my bike" -> "your bike").

/// Lower-case words, apostrophes kept, punctuation dropped.
pub fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .replace(['’', '‘'], "'")
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .map(|w| w.trim_matches('\''))
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

fn has_phrase(words: &[String], phrase: &str) -> bool {
    let p: Vec<&str> = phrase.split(' ').collect();
    words
        .windows(p.len())
        .any(|w| w.iter().zip(&p).all(|(a, b)| a == b))
}

/// Digits said as words or written as numbers: a run of them ("one zero zero zero") is
/// an extension or a phone number, not a decoding loop.
fn is_number_word(word: &str) -> bool {
    matches!(
        word,
        "zero"
            | "oh"
            | "one"
            | "two"
            | "three"
            | "four"
            | "five"
            | "six"
            | "seven"
            | "eight"
            | "nine"
    ) || word.chars().all(|c| c.is_ascii_digit())
}

/// Removes what is left of a speech-to-text repetition loop, which on a short clip
/// repeats the last words until the token budget runs out: a sentence said again
/// ("Hi. Hi. Hi." -> "Hi."), a phrase said twice or more in a row, a single word three
/// times or more ("Goodbye Goodbye Goodbye" -> "Goodbye", "thank you bye bye bye bye"
/// -> "thank you bye"; "bye bye" is how people talk), and the cut-off start of one more
/// repeat at the end ("Thank you, bye. Thank"). Runs of digits are kept.
pub fn collapse_repeats(text: &str) -> String {
    collapse_repeated_phrases(&collapse_repeated_sentences(text))
}

/// A sentence that was said before, or the start of one (a repeat cut off by the budget).
fn collapse_repeated_sentences(text: &str) -> String {
    let mut sentences: Vec<&str> = Vec::new();
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if matches!(c, '.' | '!' | '?') {
            let end = i + c.len_utf8();
            sentences.push(text[start..end].trim());
            start = end;
        }
    }
    let tail = text[start..].trim();
    let mut out: Vec<&str> = Vec::new();
    for s in sentences
        .into_iter()
        .chain((!tail.is_empty()).then_some(tail))
    {
        let key = words(s);
        // Compared by words, so "Thank you, bye." repeats "Thank you. Bye." and the
        // cut-off "Thank" is the start of an earlier sentence.
        let repeat = !key.is_empty()
            && out
                .iter()
                .any(|o| words(o).starts_with(&key) && !key.iter().all(|w| is_number_word(w)));
        if !repeat && !s.is_empty() {
            out.push(s);
        }
    }
    out.join(" ")
}

/// Longest phrase, in words, checked for repetition.
const MAX_REPEATED_PHRASE: usize = 8;

/// A phrase said again right after itself, and an unfinished repeat at the very end.
/// The first copy is kept as it was written.
fn collapse_repeated_phrases(text: &str) -> String {
    let mut tokens: Vec<&str> = text.split_whitespace().collect();
    let mut keys: Vec<String> = tokens.iter().map(|t| words(t).join(" ")).collect();
    let mut i = 0;
    while i < tokens.len() {
        let run = (1..=MAX_REPEATED_PHRASE.min((tokens.len() - i) / 2)).find_map(|n| {
            let unit = &keys[i..i + n];
            let copies = keys[i..].chunks_exact(n).take_while(|c| *c == unit).count();
            let needed = if n == 1 { 3 } else { 2 };
            let loops = copies >= needed && !unit.iter().all(|w| w.is_empty() || is_number_word(w));
            loops.then_some((n, i + copies * n))
        });
        let Some((n, mut end)) = run else {
            i += 1;
            continue;
        };
        // What follows the run, if it is the start of the phrase and ends the text, is
        // one more repeat that the budget cut off.
        let rest = tokens.len() - end;
        if rest < n && keys[end..] == keys[i..i + rest] {
            end = tokens.len();
        }
        tokens.drain(i + n..end);
        keys.drain(i + n..end);
        // The shorter text may now repeat a longer phrase that began earlier.
        i = 0;
    }
    tokens
        .join(" ")
        .trim_end_matches([',', ';', ':'])
        .to_string()
}

/// Whom the caller asks to be put through to: an extension of `allowed` said as digits
/// ("transfer me to 1001", "connect me to one zero zero one"), or `default` for "a
/// person", "a human", "the operator", "someone", or the key 0 (`[DTMF 0]`). `None`
/// when the words are not a request to be connected.
pub fn handoff_target(text: &str, default: Option<&str>, allowed: &[String]) -> Option<String> {
    if text.trim() == "[DTMF 0]" {
        return default.map(str::to_owned);
    }
    let w = words(text);
    let asks = [
        "transfer",
        "connect",
        "put me through",
        "speak to",
        "talk to",
        "speak with",
        "talk with",
    ]
    .iter()
    .any(|p| has_phrase(&w, p));
    if !asks {
        return None;
    }
    // Digits, whether Whisper wrote them as numbers or as words.
    let mut digits = String::new();
    for word in &w {
        let d = match word.as_str() {
            "zero" | "oh" | "o" => "0",
            "one" => "1",
            "two" | "to" if !digits.is_empty() => "2",
            "three" => "3",
            "four" | "for" if !digits.is_empty() => "4",
            "five" => "5",
            "six" => "6",
            "seven" => "7",
            "eight" => "8",
            "nine" => "9",
            other if other.chars().all(|c| c.is_ascii_digit()) => other,
            _ => {
                if allowed.contains(&digits) {
                    break;
                }
                digits.clear();
                continue;
            }
        };
        digits.push_str(d);
    }
    if allowed.contains(&digits) {
        return Some(digits);
    }
    let person = [
        "person",
        "human",
        "operator",
        "someone",
        "somebody",
        "receptionist",
        "real person",
    ]
    .iter()
    .any(|p| has_phrase(&w, p));
    person.then(|| default.map(str::to_owned)).flatten()
}

/// The caller wants to end the call.
pub fn is_goodbye(text: &str) -> bool {
    // A goodbye caught in a transcription loop ("Goodbye Goodbye ...") is still one.
    let w = words(&collapse_repeats(text));
    if w.is_empty() || w.len() > 8 {
        return false;
    }
    ["bye", "goodbye", "byebye"]
        .iter()
        .any(|b| w.iter().any(|x| x == b))
        || [
            "hang up",
            "that's all",
            "that is all",
            "see you",
            "talk to you later",
        ]
        .iter()
        .any(|p| has_phrase(&w, p))
}

/// The caller asks what they said in an earlier call.
pub fn asks_about_last_time(text: &str) -> bool {
    let w = words(text);
    let earlier = has_phrase(&w, "last time")
        || has_phrase(&w, "last call")
        || has_phrase(&w, "before")
        || has_phrase(&w, "remember");
    let said = [
        "tell",
        "told",
        "say",
        "said",
        "talk",
        "talked",
        "remember",
        "mention",
        "mentioned",
    ]
    .iter()
    .any(|v| w.iter().any(|x| x == v));
    earlier && said
}

/// The caller asks whether their name is known.
pub fn asks_own_name(text: &str) -> bool {
    let w = words(text);
    let what = w.iter().any(|x| x == "what" || x == "what's");
    has_phrase(&w, "my name")
        && (what || has_phrase(&w, "do you know") || has_phrase(&w, "remember"))
        || has_phrase(&w, "who am i")
}

/// The caller checks that someone is there ("Hello?", "Are you there?").
pub fn is_presence_check(text: &str) -> bool {
    const WORDS: &[&str] = &[
        "hello", "hi", "hey", "are", "you", "there", "anyone", "anybody", "is", "still", "can",
        "hear", "me", "oh",
    ];
    let w = words(text);
    !w.is_empty()
        && w.len() <= 6
        && w.iter().all(|x| WORDS.contains(&x.as_str()))
        && w.iter()
            .any(|x| matches!(x.as_str(), "hello" | "hi" | "hey" | "there" | "hear"))
}

/// The caller asks a question.
pub fn is_question(text: &str) -> bool {
    const OPENERS: &[&str] = &[
        "what", "what's", "when", "where", "who", "why", "how", "which", "can", "could", "do",
        "does", "did", "is", "are", "will", "would", "should",
    ];
    text.trim_end().ends_with('?')
        || words(text)
            .first()
            .is_some_and(|w| OPENERS.contains(&w.as_str()))
}

/// Words that follow "I'm" but are not names.
const NOT_NAMES: &[&str] = &[
    "calling",
    "looking",
    "trying",
    "just",
    "fine",
    "good",
    "well",
    "here",
    "not",
    "so",
    "sorry",
    "ok",
    "okay",
    "great",
    "interested",
    "going",
    "wondering",
    "having",
    "the",
    "a",
    "an",
    "still",
    "very",
    "really",
    "back",
    "thinking",
    "planning",
    "hoping",
    "glad",
    "happy",
    "i",
    "yes",
    "no",
    "yeah",
    "hello",
    "hi",
    "thanks",
    "thank",
    "sure",
    "what",
    "why",
    "who",
    "it",
    "that",
    "this",
];

/// A name the caller gives in `text` ("my name is Ada", "I'm Ada", "call me Ada").
/// `just_asked` means the agent's last words asked for the name, so a bare "Ada." counts.
pub fn extract_name(text: &str, just_asked: bool) -> Option<String> {
    let tokens: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || matches!(c, ',' | '.' | '!' | '?' | ';' | ':'))
        .filter(|t| !t.is_empty())
        .collect();
    let lower: Vec<String> = tokens
        .iter()
        .map(|t| t.to_lowercase().replace('’', "'"))
        .collect();
    let cue_ends = |cue: &[&str]| -> Option<usize> {
        lower
            .windows(cue.len())
            .position(|w| w.iter().zip(cue).all(|(a, b)| a == b))
            .map(|p| p + cue.len())
    };
    let mut start = None;
    let mut strict = false;
    for (cue, needs_capital) in [
        (&["my", "name", "is"][..], false),
        (&["name's"][..], false),
        (&["call", "me"][..], false),
        (&["this", "is"][..], true),
        (&["i'm"][..], true),
        (&["i", "am"][..], true),
        (&["it's"][..], true),
    ] {
        if let Some(p) = cue_ends(cue) {
            start = Some(p);
            strict = needs_capital;
            break;
        }
    }
    if start.is_none() && just_asked && (1..=2).contains(&tokens.len()) {
        start = Some(0);
        strict = true;
    }
    let start = start?;
    let name_words: Vec<&str> = tokens[start..]
        .iter()
        .take(2)
        .take_while(|t| t.chars().next().is_some_and(char::is_alphabetic))
        .take_while(|t| !NOT_NAMES.contains(&t.to_lowercase().as_str()))
        .copied()
        .collect();
    let first = name_words.first()?;
    if strict && !first.chars().next().is_some_and(char::is_uppercase) {
        return None;
    }
    // A second word only if it is capitalised too ("Ada Lovelace", not "Ada and").
    let take =
        if name_words.len() == 2 && name_words[1].chars().next().is_some_and(char::is_uppercase) {
            2
        } else {
            1
        };
    Some(
        name_words[..take]
            .iter()
            .map(|w| capitalise(w))
            .collect::<Vec<_>>()
            .join(" "),
    )
}

fn capitalise(w: &str) -> String {
    let mut c = w.chars();
    match c.next() {
        Some(f) => f
            .to_uppercase()
            .chain(c.flat_map(char::to_lowercase))
            .collect(),
        None => String::new(),
    }
}

/// Words after which "you" is a subject ("can you" -> "can I"), not an object.
const SUBJECT_CUES: &[&str] = &[
    "can", "could", "will", "would", "should", "do", "did", "if", "and", "that", "when", "but",
    "so", "because", "think", "hope", "said",
];

/// The caller's words as the agent would say them back: "I need my bike fixed" ->
/// "you need your bike fixed". Trailing punctuation is dropped.
pub fn second_person(text: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut prev_was_i = false;
    let mut prev = String::new();
    for raw in text.split_whitespace() {
        let core_end = raw
            .trim_end_matches(|c: char| !c.is_alphanumeric() && c != '\'')
            .len();
        let (core, tail) = raw.split_at(core_end);
        let lower = core.to_lowercase().replace('’', "'");
        let swapped = match lower.as_str() {
            "i" => Some("you"),
            "i'm" => Some("you're"),
            "i've" => Some("you've"),
            "i'll" => Some("you'll"),
            "i'd" => Some("you'd"),
            "me" => Some("you"),
            "my" => Some("your"),
            "mine" => Some("yours"),
            "myself" => Some("yourself"),
            "we" => Some("you"),
            "we're" => Some("you're"),
            "our" => Some("your"),
            "us" => Some("you"),
            "am" if prev_was_i => Some("are"),
            "was" if prev_was_i => Some("were"),
            "you" if out.is_empty() || SUBJECT_CUES.contains(&prev.as_str()) => Some("I"),
            "you" => Some("me"),
            "your" => Some("my"),
            "yours" => Some("mine"),
            "you're" => Some("I'm"),
            "yourself" => Some("myself"),
            _ => None,
        };
        prev_was_i = lower == "i";
        prev = lower.clone();
        let word = match swapped {
            Some(s) => s.to_string(),
            None if core.len() > 1
                && core.chars().next().is_some_and(char::is_uppercase)
                && out.is_empty() =>
            {
                // Sentence-initial capital that is not a proper noun; names usually keep
                // theirs, but we cannot tell here, so only lower the first word.
                core.to_lowercase()
            }
            None => core.to_string(),
        };
        out.push(format!("{word}{tail}"));
    }
    let joined = out.join(" ");
    joined
        .trim_end_matches(['.', '!', '?', ',', ';', ':'])
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intents() {
        assert!(is_goodbye("Okay, bye!"));
        assert!(is_goodbye("Goodbye."));
        assert!(is_goodbye("Bye."));
        assert!(is_goodbye("Thank you, bye."));
        assert!(is_goodbye("Okay, bye then."));
        assert!(is_goodbye(&"Goodbye ".repeat(16)));
        assert!(!is_goodbye(
            "Bye the way, I need a taxi to the station tomorrow at nine."
        ));
        assert!(!is_goodbye("I bought a bicycle"));
        assert!(asks_about_last_time("What did I tell you last time?"));
        assert!(asks_about_last_time("Do you remember what I said?"));
        assert!(!asks_about_last_time("I need a table for two"));
        assert!(asks_own_name("What's my name?"));
        assert!(is_presence_check("Hello?"));
        assert!(is_presence_check("Are you there?"));
        assert!(!is_presence_check("Hello, I need a taxi."));
        assert!(is_question("When do you open?"));
        assert!(!is_question("I need a taxi."));
    }

    #[test]
    fn repetition_loops_collapse() {
        assert_eq!(
            collapse_repeats("Goodbye Goodbye Goodbye Goodbye"),
            "Goodbye"
        );
        assert_eq!(
            collapse_repeats("thank you bye bye bye bye"),
            "thank you bye"
        );
        assert_eq!(collapse_repeats("Hi. Hi. Hi."), "Hi.");
        assert_eq!(
            collapse_repeats("Thank you. Bye. Thank you. Bye. Thank you. Bye. Bye. Thank"),
            "Thank you. Bye."
        );
        assert_eq!(
            collapse_repeats("Okay, bye then Bye then Okay, bye then Okay, bye then"),
            "Okay, bye then"
        );
        assert_eq!(
            collapse_repeats("Okay, okay, okay, okay, okay, okay, okay, okay"),
            "Okay"
        );
        assert_eq!(
            collapse_repeats("Good evening. Good evening. Good"),
            "Good evening."
        );
        // Not loops: a doubled word, digits, words said once.
        assert_eq!(collapse_repeats("Bye bye!"), "Bye bye!");
        assert_eq!(
            collapse_repeats("Transfer me to one zero zero zero."),
            "Transfer me to one zero zero zero."
        );
        assert_eq!(collapse_repeats("Call 12 12 12 12."), "Call 12 12 12 12.");
        assert_eq!(
            collapse_repeats("I need a taxi to the station, please."),
            "I need a taxi to the station, please."
        );
    }

    #[test]
    fn names() {
        assert_eq!(
            extract_name("My name is Ada.", false).as_deref(),
            Some("Ada")
        );
        assert_eq!(
            extract_name("Hi, I'm Grace Hopper", false).as_deref(),
            Some("Grace Hopper")
        );
        assert_eq!(extract_name("I'm calling about my order", false), None);
        assert_eq!(extract_name("Ada.", true).as_deref(), Some("Ada"));
        assert_eq!(extract_name("Ada.", false), None);
        assert_eq!(extract_name("I like boats.", true), None);
        assert_eq!(extract_name("Yes.", true), None);
        assert_eq!(
            extract_name("call me ishmael", false).as_deref(),
            Some("Ishmael")
        );
    }

    #[test]
    fn turns_words_round() {
        assert_eq!(
            second_person("I need to fix my bike."),
            "you need to fix your bike"
        );
        assert_eq!(
            second_person("I am planning a trip to Lisbon"),
            "you are planning a trip to Lisbon"
        );
        assert_eq!(
            second_person("Can you call me back?"),
            "can I call you back"
        );
    }

    #[test]
    fn handoff_requests_name_their_target() {
        let allowed = vec!["1001".to_string(), "1002".to_string()];
        let target = |t: &str| handoff_target(t, Some("1001"), &allowed);
        assert_eq!(
            target("Connect me to a person, please."),
            Some("1001".into())
        );
        assert_eq!(target("Can I talk to a human?"), Some("1001".into()));
        assert_eq!(target("Transfer me to 1002."), Some("1002".into()));
        assert_eq!(
            target("transfer me to one zero zero two"),
            Some("1002".into())
        );
        assert_eq!(target("[DTMF 0]"), Some("1001".into()));
        // An extension that is not allowed is not dialled; a person still is.
        assert_eq!(target("Transfer me to 9196."), None);
        assert_eq!(
            target("Transfer me to 9196, or a person."),
            Some("1001".into())
        );
        // Talk about people is not a request.
        assert_eq!(target("I met a person in Paris."), None);
        assert_eq!(target("My brother is a nice person."), None);
        assert_eq!(
            handoff_target("Connect me to a person", None, &allowed),
            None
        );
    }
}

//! Consolidation and interference resolution for facts about a caller.
//!
//! **Consolidation** ([`extract`], [`consolidate_turns`]) is rule-based: the caller's
//! sentences (Whisper transcripts: capitals and punctuation) are split into clauses and
//! matched against first-person patterns ("my name is ...", "I live in ...", "I work at
//! ...", "I'm a nurse", "I like ...", "my wife is called ...", "I need to ...").
//! Each hit becomes a slot and a value, with a second-person sentence for prompts ("You
//! live in Berlin."). Rules rather than a model because they are predictable, cost
//! nothing per turn, and a wrong guess is cheap to correct: the next statement
//! supersedes it.
//!
//! **Slots** (the names callers of this module match on):
//!
//! | slot | from | one value at a time |
//! |---|---|---|
//! | `name` | "my name is X", "I'm X", "this is X", "call me X", "I go by X" | yes |
//! | `home` | "I live in X", "I moved to X", "I moved from A to B" (A, then B) | yes |
//! | `from` | "I'm from X", "I come from X" | yes |
//! | `address` | "my address is X" | yes |
//! | `work` | "I work at / for / in X", "I'm employed by X" | yes |
//! | `job` | "I work as a X", "I'm a nurse", "my job is X", "I'm retired" | yes |
//! | `likes` | "I like / love / enjoy X", "I'm into X", "I'm a fan of X", "my favourite X is Y" | no |
//! | `dislikes` | "I don't like X", "I hate X", "I can't stand X", "I used to like X" | no |
//! | `allergy` | "I'm allergic to X" | no |
//! | `person:<relation>` | "my wife is called X", "my son's name is X", "my friend Tom", "I have a daughter called X" | wife, husband, partner, girlfriend, boyfriend, fiance, spouse, mother, father, boss: yes; others no |
//! | `pet` | "I have a dog called X", "my cat is called X", "I have two cats" | no |
//! | `plan` | "I need to X", "I want to X", "I'd like to X", "remind me to X", "I have an appointment with X on Thursday", "I'm going to X next week", "my trip to Paris" | no |
//! | `birthday` | "my birthday is X", "I was born on X" | yes |
//! | `birth_year`, `birthplace` | "I was born in 1980" / "in Lyon" | yes |
//! | `age` | "I'm 45 years old", "I turned 50" | yes |
//! | `not:<slot>` | negations and past tense: "I don't live in Paris anymore", "I used to work at X", "I don't need to X any more" | no |
//!
//! Relations are normalised: mom/mum → `mother`, dad → `father`, grandma → `grandmother`,
//! neighbor → `neighbour`, kid → `child`, "best friend" → `friend`.
//!
//! **Interference resolution** ([`resolve`]): a repeated value merges into the fact in
//! force (provenance unioned, `unix_ms` becomes the latest mention, the id keeps the
//! first); a new value of a single-valued slot supersedes the one in force (the old one
//! stays, marked, for "where did I live before?"); a fact supersedes the fact in force
//! of the *opposite* slot with the same value: `likes` ↔ `dislikes`, `X` ↔ `not:X`. So
//! "I don't like coffee anymore" (`dislikes` coffee) retires `likes` coffee, and "I no
//! longer live in Paris" (`not:home` Paris) retires `home` Paris. A fact said earlier
//! than the one in force (a late consolidation) is stored already superseded by it.

use std::collections::HashSet;

use crate::types::{Fact, Speaker, Turn};

/// A candidate fact pulled out of one sentence the caller said.
#[derive(Debug, Clone, PartialEq)]
pub struct Extracted {
    pub slot: String,
    pub value: String,
    pub text: String,
}

/// The most words a value keeps: facts are short; a long tail is usually a misparse.
const MAX_VALUE_WORDS: usize = 8;

// ---------------------------------------------------------------------------------
// Word lists
// ---------------------------------------------------------------------------------

/// Words that start a new first-person clause after "and", "but" or a comma.
const STARTERS: &str = "i my we our";

/// Conjunctions that may join two clauses.
const CONJUNCTIONS: &str = "and but so plus then because cause though although while or \
    whereas";

/// Soft words that may sit between a conjunction and the next clause ("and also I").
const SOFT: &str = "also now then actually really still recently";

/// Verbs that continue a clause without repeating its subject ("I live in Berlin and
/// work at Siemens").
const BARE_VERBS: &str = "work live moved like love enjoy need want hate have";

/// Words between the subject and the verb that change nothing ("I really like", "I've
/// always lived"); negation, "used to", be and have are read separately.
const FILLERS: &str = "do does did really just also still actually absolutely totally \
    definitely truly honestly genuinely so very now currently already always usually \
    generally particularly especially quite even all both recently finally mostly \
    normally basically literally been originally again presently only personally \
    certainly probably simply sometimes";

/// Words that are never (part of) a name even when capitalised: "I'm Sorry", "I'm
/// English", "this is Monday".
const NOT_NAMES: &str = "i a an the and or but so not just very really also still here \
    there back home sorry fine good great ok okay alright well glad happy sad tired busy \
    free done ready sure new old calling looking trying going doing having getting \
    wondering thinking hoping interested listening speaking retired married single \
    divorced pregnant sick ill better worse late early right wrong serious kidding joking \
    afraid aware excited nervous worried confused lost bored hungry thirsty cold hot warm \
    awake alone yes no yeah hello hi hey thanks thank please sir madam mister is was from \
    with in at on up out over about after before everyone nobody someone today tomorrow \
    yesterday monday tuesday wednesday thursday friday saturday sunday english british \
    american german french spanish italian dutch polish russian chinese japanese indian \
    irish scottish welsh canadian australian mexican brazilian portuguese greek turkish \
    swedish norwegian danish finnish swiss austrian belgian jewish christian catholic \
    muslim hindu buddhist vegan vegetarian gay straight sofia it that this what who you \
    me my your we our he she they";

/// Single-word greetings and fillers that may come before "this is Daniel".
const GREETINGS: &str = "hi hello hey hiya yes yeah oh well um uh so ok okay good morning \
    afternoon evening there sofia and";

/// Relations a person can be named by; `word=norm` where the slot uses another word.
const RELATIONS: &str = "wife husband partner girlfriend boyfriend fiance fiancé=fiance \
    fiancee=fiance fiancée=fiance spouse daughter son child kid=child mother mom=mother \
    mum=mother mommy=mother mummy=mother father dad=father daddy=father brother sister \
    friend boss grandmother grandma=grandmother granny=grandmother grandfather \
    grandpa=grandfather grandson granddaughter aunt uncle cousin niece nephew colleague \
    neighbour neighbor=neighbour doctor dentist";

/// Relations a person has one of at a time: a new name replaces the old.
const SINGLE_RELATIONS: &str = "wife husband partner girlfriend boyfriend fiance spouse \
    mother father boss";

/// Words that may stand between "my" and a relation: "my little sister", "my best friend".
const RELATION_MODIFIERS: &str = "best little big older younger eldest oldest youngest \
    baby twin new dear late step";

const ANIMALS: &str = "dog dogs cat cats puppy kitten parrot bird birds budgie rabbit \
    rabbits bunny hamster horse pony fish goldfish tortoise turtle snake lizard ferret \
    gerbil rat mouse guinea";

/// Nouns of things one has coming up: "I have an appointment ...", "my trip to Paris".
const EVENTS: &str = "appointment meeting interview flight trip holiday vacation journey \
    visit exam test operation surgery check-up checkup wedding party reservation booking \
    conference date";

/// Jobs that no suffix rule finds ("nurse", "chef").
const JOB_WORDS: &str = "nurse chef cook pilot judge nanny mechanic architect clerk \
    surgeon paramedic midwife vet barista coach tutor model priest pastor rabbi imam monk \
    nun housewife homemaker intern apprentice ceo cto cfo retiree pensioner secretary \
    attorney chemist dentist physio carer builder plumber electrician lawyer cleaner \
    student";

/// Suffixes of most job nouns: teacher, doctor, dentist, librarian, accountant.
const JOB_SUFFIXES: &str = "er or ist ian ant ent eer man woman";

/// Nouns that look like jobs by their suffix but are not ("I'm a customer").
const NOT_JOBS: &str = "customer member user caller beginner fan lover believer smoker \
    drinker vegetarian christian parent resident patient client foreigner stranger \
    newcomer winner loser mother father brother sister daughter grandmother grandfather \
    partner widow widower friend neighbour neighbor citizen native person man woman \
    gentleman human other number order wonder mess disaster monster killer dinosaur \
    idiot genius regular german american indian italian canadian australian brazilian \
    asian european african russian norwegian austrian belgian hungarian ukrainian iranian \
    egyptian libertarian vegan";

/// First words of "I'm a ..." phrases that are not jobs: "I'm a bit tired".
const NOT_JOB_FIRST: &str = "bit little lot big huge real bad good great total complete \
    kind sort fan member part couple few mess fool pain problem quick new long very \
    pretty bloody massive";

/// Verbs of "I need to ..." that are about this conversation, not a plan.
const TRANSIENT: &str = "know ask say tell talk speak hear understand be leave hang think \
    chat explain mention repeat clarify check hold admit warn apologise apologize lie sit \
    calm breathe";

/// First words that make a liked thing a pronoun or a clause, not a thing ("I like it").
const NOT_THINGS: &str = "it that this them you him her those these what how when where \
    why which who everything anything nothing something someone your one being";

/// Trailing words dropped from a value ("Berlin now", "coffee anymore"), comma-separated
/// phrases; the dangling little words ("and", "of", "to") are among them.
const TRAILING_FILLER: &str = "now, anymore, any more, these days, nowadays, \
    at the moment, right now, currently, too, as well, actually, though, again, still, \
    already, please, thanks, thank you, you know, i think, i guess, or something, \
    and stuff, a lot, very much, so much, really, then, by the way, and, or, the, a, an, \
    of, with, in, at, on, for, from, by, to, um, uh, er, erm";

const WEEKDAYS: &str = "monday tuesday wednesday thursday friday saturday sunday";

const MONTHS: &str = "january february march april may june july august september october \
    november december";

/// Whether `w` is one of the space-separated words of `list`.
fn is_in(list: &str, w: &str) -> bool {
    !w.is_empty() && list.split_whitespace().any(|x| x == w)
}

// ---------------------------------------------------------------------------------
// Tokens and clauses
// ---------------------------------------------------------------------------------

/// One word of a clause. Contractions are split ("I'm" → "i" + "am", "don't" → "do" +
/// "not") so patterns see one form; `orig` keeps the spelling for values.
#[derive(Debug, Clone)]
struct Tok {
    /// Lower case, for matching.
    low: String,
    /// As said, for values.
    orig: String,
    /// Written onto the previous word without a space ("'s", "n't").
    glue: bool,
    /// A comma followed it.
    comma: bool,
}

impl Tok {
    fn new(orig: &str, low: &str, glue: bool) -> Self {
        Tok {
            low: low.to_string(),
            orig: orig.to_string(),
            glue,
            comma: false,
        }
    }

    /// Capitalised like a name: an upper-case first letter, then letters, '-' or '\''.
    fn is_capitalised(&self) -> bool {
        let mut chars = self.orig.chars();
        match chars.next() {
            Some(c) if c.is_uppercase() => {}
            _ => return false,
        }
        self.orig != "I" && chars.all(|c| c.is_alphabetic() || c == '-' || c == '\'')
    }

    fn is_alphabetic(&self) -> bool {
        !self.orig.is_empty() && self.orig.chars().all(|c| c.is_alphabetic() || c == '-')
    }
}

fn low(c: &[Tok], k: usize) -> &str {
    c.get(k).map(|t| t.low.as_str()).unwrap_or("")
}

/// "is" or its contraction ("name's", "wife's called").
fn is_be(c: &[Tok], k: usize) -> bool {
    matches!(low(c, k), "is" | "'s")
}

/// Splits the end of `s` off by characters (not bytes), so a multi-byte character is
/// never cut: `split_tail(s, 3)` of "don't" is ("do", "n't").
fn split_tail(s: &str, n: usize) -> Option<(&str, &str)> {
    if n == 0 {
        return None;
    }
    let (at, _) = s.char_indices().rev().nth(n - 1)?;
    if at == 0 {
        return None;
    }
    Some((&s[..at], &s[at..]))
}

/// Abbreviations whose full stop does not end a sentence.
fn is_abbreviation(w: &str) -> bool {
    matches!(
        w.to_lowercase().as_str(),
        "mr" | "mrs" | "ms" | "dr" | "st" | "prof" | "jr" | "sr" | "mt" | "vs" | "etc"
    )
}

/// Appends a cleaned word, splitting contractions.
fn push_word(word: &str, out: &mut Vec<Tok>) {
    let low = word.to_lowercase();
    let whole: Option<&[&str]> = match low.as_str() {
        "gonna" => Some(&["going", "to"]),
        "wanna" => Some(&["want", "to"]),
        "gotta" => Some(&["got", "to"]),
        "im" => Some(&["i", "am"]),
        "cannot" | "cant" => Some(&["can", "not"]),
        "dont" => Some(&["do", "not"]),
        "doesnt" => Some(&["does", "not"]),
        "didnt" => Some(&["did", "not"]),
        "ive" => Some(&["i", "have"]),
        _ => None,
    };
    if let Some(parts) = whole {
        // The spelling stays on the first part; the others are glued on, unspelt.
        for (n, part) in parts.iter().enumerate() {
            let orig = if n == 0 { word } else { "" };
            out.push(Tok::new(orig, part, n > 0));
        }
        return;
    }
    if low.ends_with("n't") {
        if let Some((head, tail)) = split_tail(word, 3) {
            let head_low = head.to_lowercase();
            let base = match head_low.as_str() {
                "ca" => "can",
                "wo" => "will",
                "sha" => "shall",
                "ai" => "is",
                other => other,
            };
            out.push(Tok::new(head, base, false));
            out.push(Tok::new(tail, "not", true));
            return;
        }
    }
    for (suffix, expansion) in [
        ("'m", "am"),
        ("'re", "are"),
        ("'ve", "have"),
        ("'ll", "will"),
        ("'d", "would"),
        ("'s", "'s"),
    ] {
        if low.ends_with(suffix) {
            if let Some((head, tail)) = split_tail(word, suffix.chars().count()) {
                if tail.to_lowercase() == suffix {
                    out.push(Tok::new(head, &head.to_lowercase(), false));
                    out.push(Tok::new(tail, expansion, true));
                    return;
                }
            }
        }
    }
    out.push(Tok::new(word, &low, false));
}

/// Sentences of a text as tokens; punctuation is read into sentence ends and commas.
fn sentences(text: &str) -> Vec<Vec<Tok>> {
    let text: String = text
        .chars()
        .map(|c| match c {
            '\u{2019}' | '\u{2018}' | '\u{02BC}' | '`' => '\'',
            '\u{201C}' | '\u{201D}' => '"',
            c => c,
        })
        .collect();
    let mut out = Vec::new();
    let mut current: Vec<Tok> = Vec::new();
    for raw in text.split_whitespace() {
        let core = raw.trim_start_matches(|c: char| {
            matches!(
                c,
                '"' | '(' | '[' | '{' | '\'' | '¿' | '¡' | '-' | '—' | '–' | '*'
            )
        });
        let body = core.trim_end_matches(|c: char| !(c.is_alphanumeric()));
        let trail = &core[body.len()..];
        let ends = trail.contains(['.', '!', '?', ';', '…']) && !is_abbreviation(body);
        let comma = trail.contains([',', ':', '—', '–', '-', ')']);
        if !body.is_empty() {
            push_word(body, &mut current);
        }
        if comma {
            if let Some(last) = current.last_mut() {
                last.comma = true;
            }
        }
        if ends && !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Splits a sentence into clauses at "and" / "but" / a comma before a new first-person
/// clause ("my name is Daniel and I live in Paris"), and before a verb that continues
/// the subject ("I live in Berlin and work at Siemens", which gets its "I" back).
fn clauses(sentence: &[Tok]) -> Vec<Vec<Tok>> {
    let mut out = Vec::new();
    let mut cur: Vec<Tok> = Vec::new();
    let mut k = 0;
    while k < sentence.len() {
        let t = &sentence[k];
        if is_in(CONJUNCTIONS, &t.low) && !cur.is_empty() {
            let mut m = k + 1;
            while m < sentence.len()
                && (is_in(CONJUNCTIONS, &sentence[m].low) || is_in(SOFT, &sentence[m].low))
            {
                m += 1;
            }
            if m < sentence.len() && is_in(STARTERS, &sentence[m].low) {
                out.push(std::mem::take(&mut cur));
                k = m;
                continue;
            }
            let subject = if cur.iter().any(|t| t.low == "i") {
                Some("i")
            } else if cur.iter().any(|t| t.low == "we") {
                Some("we")
            } else {
                None
            };
            if let (Some(s), true) = (subject, m < sentence.len()) {
                if is_in(BARE_VERBS, &sentence[m].low) {
                    out.push(std::mem::take(&mut cur));
                    cur.push(Tok::new("", s, false));
                    k = m;
                    continue;
                }
            }
        }
        cur.push(t.clone());
        if t.comma && k + 1 < sentence.len() && is_in(STARTERS, &sentence[k + 1].low) {
            out.push(std::mem::take(&mut cur));
        }
        k += 1;
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

// ---------------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------------

/// How a value ends.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// A place: stops at "with", "near", "for", "since" and time words.
    Place,
    /// An employer: as a place, and also at "in", "as", "at".
    Org,
    /// A liked or disliked thing.
    Thing,
    /// A plan: keeps its time ("the dentist on Thursday").
    Plan,
    /// A date: at most a few words.
    Date,
}

/// A value as said, and as it reads in a second-person sentence.
#[derive(Debug)]
struct Val {
    said: String,
    second: String,
    /// Index of the first token after the value (where collection stopped).
    stop: usize,
}

fn is_time_word(c: &[Tok], k: usize) -> bool {
    let w = low(c, k);
    let next = low(c, k + 1);
    match w {
        "last" | "next" | "yesterday" | "today" | "tomorrow" | "tonight" | "recently"
        | "lately" | "earlier" | "soon" => true,
        "this" => is_in(
            "week month year morning afternoon evening weekend summer winter spring autumn",
            next,
        ),
        "in" | "on" => {
            is_in(MONTHS, next)
                || is_in(WEEKDAYS, next)
                || (next.len() == 4 && next.chars().all(|c| c.is_ascii_digit()))
        }
        _ => false,
    }
}

fn is_stop(c: &[Tok], k: usize, kind: Kind) -> bool {
    let w = low(c, k);
    let always = matches!(
        w,
        "because" | "cause" | "but" | "although" | "though" | "whereas" | "unless" | "which"
    );
    if always {
        return true;
    }
    match kind {
        Kind::Plan => w == "so" && low(c, k + 1) == "that",
        Kind::Thing => matches!(w, "so" | "if" | "when" | "whenever" | "while" | "since"),
        Kind::Date => matches!(w, "and" | "so" | "when"),
        Kind::Place | Kind::Org => {
            is_in(
                "so if with near for since during when where while who from until before after",
                w,
            ) || is_time_word(c, k)
                || (kind == Kind::Org && matches!(w, "in" | "as" | "at"))
        }
    }
}

/// First-person words of a value said in second person: "call my mother" → "call your
/// mother".
fn second_person(w: &str) -> Option<&'static str> {
    match w {
        "my" | "our" => Some("your"),
        "me" | "i" | "we" | "us" => Some("you"),
        "myself" => Some("yourself"),
        "mine" | "ours" => Some("yours"),
        "am" => Some("are"),
        _ => None,
    }
}

fn join(toks: &[Tok], second: bool) -> String {
    let mut s = String::new();
    for (n, t) in toks.iter().enumerate() {
        let word = match (second, second_person(&t.low)) {
            (true, Some(w)) if !t.glue => w.to_string(),
            _ => t.orig.clone(),
        };
        // Synthetic tokens ("I" restored after "and") have no spelling.
        let word = if word.is_empty() && !t.glue {
            t.low.clone()
        } else {
            word
        };
        if n > 0 && !t.glue {
            s.push(' ');
        }
        s.push_str(&word);
        if t.comma && n + 1 < toks.len() {
            s.push(',');
        }
    }
    s
}

/// Collects a value from `start` until a stop for `kind` or `extra_stops`, then trims
/// trailing filler and "two years ago", and caps it at [`MAX_VALUE_WORDS`].
fn value(c: &[Tok], start: usize, kind: Kind, extra_stops: &[&str]) -> Option<Val> {
    value_within(c, start, kind, extra_stops, MAX_VALUE_WORDS)
}

/// [`value`] capped at `max_words`, for values that get words put before them ("going
/// to ...").
fn value_within(
    c: &[Tok],
    start: usize,
    kind: Kind,
    extra_stops: &[&str],
    max_words: usize,
) -> Option<Val> {
    let mut k = start;
    while k < c.len() && !is_stop(c, k, kind) && !extra_stops.contains(&low(c, k)) {
        if kind == Kind::Date && k - start >= 6 {
            break;
        }
        k += 1;
    }
    let stop = k;
    let mut toks: Vec<Tok> = c.get(start..stop)?.to_vec();

    // "Berlin two years ago" → "Berlin": drop a duration that ends in "ago".
    if kind != Kind::Plan {
        if let Some(ago) = toks.iter().position(|t| t.low == "ago") {
            let from = ago.saturating_sub(4);
            let cut = (from..ago)
                .find(|&q| is_quantity(&toks[q].low))
                .unwrap_or(ago.saturating_sub(1));
            toks.truncate(cut);
        }
    }
    trim_trailing(&mut toks);
    if toks.len() > max_words {
        toks.truncate(max_words);
        trim_trailing(&mut toks);
    }
    if toks.is_empty() {
        return None;
    }
    if let Some(last) = toks.last_mut() {
        last.comma = false;
    }
    Some(Val {
        said: join(&toks, false),
        second: join(&toks, true),
        stop,
    })
}

fn is_quantity(w: &str) -> bool {
    is_in(
        "a an one two three four five six seven eight nine ten eleven twelve few couple \
         several many some half",
        w,
    ) || (!w.is_empty() && w.chars().all(|c| c.is_ascii_digit()))
}

fn trim_trailing(toks: &mut Vec<Tok>) {
    loop {
        let before = toks.len();
        for filler in TRAILING_FILLER.split(',') {
            let filler: Vec<&str> = filler.split_whitespace().collect();
            let n = filler.len();
            if n > 0
                && toks.len() >= n
                && toks[toks.len() - n..]
                    .iter()
                    .zip(filler.iter())
                    .all(|(t, f)| t.low == *f)
            {
                toks.truncate(toks.len() - n);
                break;
            }
        }
        if toks.len() == before {
            return;
        }
    }
}

/// A run of up to `max` capitalised words that are not common words: a name.
fn name_run(c: &[Tok], start: usize, max: usize) -> Option<(String, usize)> {
    let mut k = start;
    while k < c.len()
        && k - start < max
        && c[k].is_capitalised()
        && !is_in(NOT_NAMES, &c[k].low)
        && !c[k].glue
    {
        k += 1;
        // "I'm Peter, Peter Jones": a name ends at a comma.
        if c[k - 1].comma {
            break;
        }
    }
    if k == start {
        return None;
    }
    // "I'm Daniel's wife": a possessive is not a name.
    if low(c, k) == "'s" {
        return None;
    }
    Some((join(&c[start..k], false), k))
}

/// A name after a strong cue ("my name is", "is called"): capitalised words, or else
/// one plain word (transcripts sometimes miss the capital).
fn strong_name(c: &[Tok], start: usize) -> Option<(String, usize)> {
    if let Some(found) = name_run(c, start, 3) {
        return Some(found);
    }
    let t = c.get(start)?;
    if t.is_alphabetic() && !is_in(NOT_NAMES, &t.low) && !t.glue {
        let mut s = t.orig.clone();
        // Capitalise the first letter: it is a name.
        if let Some(first) = s.chars().next() {
            let upper: String = first.to_uppercase().collect();
            s = format!("{upper}{}", &s[first.len_utf8()..]);
        }
        return Some((s, start + 1));
    }
    None
}

fn article(word: &str) -> &'static str {
    match word.chars().next().map(|c| c.to_ascii_lowercase()) {
        Some('a' | 'e' | 'i' | 'o' | 'u') => "an",
        _ => "a",
    }
}

fn relation_at(c: &[Tok], k: usize) -> Option<(&'static str, usize)> {
    let w = low(c, k);
    if w == "best" && low(c, k + 1) == "friend" {
        return Some(("friend", k + 2));
    }
    let mut k = k;
    if is_in(RELATION_MODIFIERS, low(c, k)) {
        k += 1;
    }
    let w = low(c, k);
    RELATIONS.split_whitespace().find_map(|entry| {
        let (word, norm) = entry.split_once('=').unwrap_or((entry, entry));
        (!w.is_empty() && word == w).then_some((norm, k + 1))
    })
}

/// An animal noun at `k` ("dog", "guinea pig"), with the index after it.
fn animal_at(c: &[Tok], k: usize) -> Option<(String, usize)> {
    let w = low(c, k);
    if w == "guinea" {
        return (matches!(low(c, k + 1), "pig" | "pigs"))
            .then(|| (join(&c[k..k + 2], false), k + 2));
    }
    is_in(ANIMALS, w).then(|| (c[k].orig.to_lowercase(), k + 1))
}

fn has_time_cue(toks: &[Tok]) -> bool {
    toks.iter().any(|t| {
        let w = t.low.as_str();
        is_in(
            "tomorrow tonight next soon later weekend week month year summer winter spring \
             autumn christmas easter",
            w,
        ) || is_in(WEEKDAYS, w)
            || is_in(MONTHS, w)
            || w.chars().any(|c| c.is_ascii_digit())
    })
}

// ---------------------------------------------------------------------------------
// Patterns
// ---------------------------------------------------------------------------------

/// What stands between the subject and the verb.
#[derive(Debug, Default)]
struct Subject {
    we: bool,
    /// Index of the verb.
    verb: usize,
    neg: bool,
    /// "used to", "was": said of the past.
    past: bool,
    /// "am", "are", "was".
    be: bool,
    have: bool,
    /// Exactly "I am" with nothing between (for "I'm Daniel").
    plain_am: bool,
}

fn subject(c: &[Tok], i: usize) -> Subject {
    let mut s = Subject {
        we: low(c, i) == "we",
        plain_am: low(c, i + 1) == "am",
        ..Subject::default()
    };
    let mut k = i + 1;
    let mut steps = 0;
    while k < c.len() && steps < 6 {
        match low(c, k) {
            "not" | "never" => s.neg = true,
            "no" if low(c, k + 1) == "longer" => {
                s.neg = true;
                k += 1;
            }
            "used" if low(c, k + 1) == "to" => {
                s.past = true;
                k += 1;
            }
            "kind" | "sort" if low(c, k + 1) == "of" => k += 1,
            "am" | "are" => s.be = true,
            "was" | "were" => {
                s.be = true;
                s.past = true;
            }
            "have" | "has" => s.have = true,
            w if is_in(FILLERS, w) => {}
            _ => break,
        }
        k += 1;
        steps += 1;
    }
    s.verb = k;
    if k != i + 2 {
        s.plain_am = false;
    }
    s
}

/// Collects facts of one clause into `out`.
struct Found<'a> {
    out: &'a mut Vec<Extracted>,
}

impl Found<'_> {
    fn push(&mut self, slot: &str, value: &str, text: String) {
        // A value without a letter or digit ("☕", "...") is nothing to remember.
        if !value.chars().any(char::is_alphanumeric) {
            return;
        }
        self.out.push(Extracted {
            slot: slot.to_string(),
            value: value.to_string(),
            text,
        });
    }
}

fn extract_clause(c: &[Tok], out: &mut Vec<Extracted>) {
    let mut found = Found { out };
    let mut i = 0;
    while i < c.len() {
        let end = match low(c, i) {
            "i" | "we" => subject_patterns(c, i, &mut found),
            "my" | "our" => my_patterns(c, i, &mut found),
            "remind" => remind(c, i, &mut found),
            "call" => call_me(c, i, &mut found),
            "this" | "it" => this_is(c, i, &mut found),
            _ => None,
        };
        i = match end {
            Some(e) if e > i => e,
            _ => i + 1,
        };
    }
}

fn subject_patterns(c: &[Tok], i: usize, f: &mut Found) -> Option<usize> {
    let s = subject(c, i);
    let j = s.verb;
    let v = low(c, j);

    // "I'm Daniel".
    if s.plain_am && !s.we {
        if let Some((name, end)) = name_run(c, j, 2) {
            f.push("name", &name, format!("Your name is {name}."));
            return Some(end);
        }
    }
    match v {
        "live" | "lives" | "living" | "reside" | "residing" | "lived" => live(c, j, &s, f),
        "moved" | "relocated" => moved(c, j, &s, f),
        "moving" | "relocating" if s.be && !s.neg && !s.past => {
            if low(c, j + 1) != "to" {
                return None;
            }
            let val = value_within(c, j + 2, Kind::Plan, &[], MAX_VALUE_WORDS - 2)?;
            f.push(
                "plan",
                &format!("moving to {}", val.said),
                format!("You are moving to {}.", val.second),
            );
            Some(val.stop)
        }
        "work" | "works" | "working" | "worked" if !s.we => work(c, j, &s, f),
        "employed" if s.be && !s.we && matches!(low(c, j + 1), "by" | "at") => {
            let val = value(c, j + 2, Kind::Org, &[])?;
            let (slot, text) = if s.neg || s.past {
                (
                    "not:work",
                    format!("You are no longer employed by {}.", val.second),
                )
            } else {
                ("work", format!("You are employed by {}.", val.second))
            };
            f.push(slot, &val.said, text);
            Some(val.stop)
        }
        "like" | "likes" | "love" | "loves" | "enjoy" | "enjoys" | "adore" | "liked" | "loved"
        | "enjoyed"
            if !s.we =>
        {
            likes(c, j, &s, f)
        }
        "hate" | "dislike" | "detest" | "despise" | "loathe" if !s.we && !s.neg => {
            let val = thing(c, j + 1)?;
            let verb = if v == "dislike" { "dislike" } else { "hate" };
            f.push("dislikes", &val.said, format!("You {verb} {}.", val.second));
            Some(val.stop)
        }
        "can" if !s.we && low(c, j + 1) == "not" && low(c, j + 2) == "stand" => {
            let val = thing(c, j + 3)?;
            f.push(
                "dislikes",
                &val.said,
                format!("You can't stand {}.", val.second),
            );
            Some(val.stop)
        }
        "need" | "want" | "plan" | "intend" | "planning" | "hoping" | "hope" | "would" => {
            want(c, j, &s, f)
        }
        "to" if s.have && !s.past => want(c, j, &s, f),
        "going" | "flying" | "travelling" | "traveling" | "heading" | "driving" | "off" if s.be => {
            going(c, j, &s, f)
        }
        "from" if s.be && !s.neg && !s.past => from(c, j + 1, f),
        "come" | "comes" if low(c, j + 1) == "from" && !s.neg => from(c, j + 2, f),
        "a" | "an" if s.be && !s.we => job_or_fan(c, j, &s, f),
        "retired" | "unemployed" | "self-employed" | "semi-retired" if s.be && !s.we => {
            let word = c[j].orig.to_lowercase();
            let (slot, text) = if s.neg || s.past {
                ("not:job", format!("You are no longer {word}."))
            } else {
                ("job", format!("You are {word}."))
            };
            f.push(slot, &word, text);
            Some(j + 1)
        }
        "into" if s.be && !s.we => {
            let val = thing(c, j + 1)?;
            let (slot, text) = if s.neg || s.past {
                (
                    "dislikes",
                    format!("You are not into {} any more.", val.second),
                )
            } else {
                ("likes", format!("You are into {}.", val.second))
            };
            f.push(slot, &val.said, text);
            Some(val.stop)
        }
        "fond" if s.be && !s.we && low(c, j + 1) == "of" => {
            let val = thing(c, j + 2)?;
            let (slot, text) = if s.neg || s.past {
                ("dislikes", format!("You are not fond of {}.", val.second))
            } else {
                ("likes", format!("You are fond of {}.", val.second))
            };
            f.push(slot, &val.said, text);
            Some(val.stop)
        }
        "allergic" if s.be && !s.we && !s.neg && low(c, j + 1) == "to" => {
            let val = thing(c, j + 2)?;
            f.push(
                "allergy",
                &val.said,
                format!("You are allergic to {}.", val.second),
            );
            Some(val.stop)
        }
        "born" if s.be && s.past && !s.we => born(c, j, f),
        "go" if !s.we && low(c, j + 1) == "by" => {
            let (name, end) = name_run(c, j + 2, 3)?;
            f.push("name", &name, format!("Your name is {name}."));
            Some(end)
        }
        "turned" if !s.we => age(c, j + 1, f),
        w if s.be && !s.we && !s.neg && !s.past && w.chars().all(|c| c.is_ascii_digit()) => {
            // "I'm 45 years old", or "I'm 45" ending the clause ("I'm 5 minutes away" is
            // no age).
            if (low(c, j + 1) == "years" && low(c, j + 2) == "old") || j + 1 == c.len() {
                age(c, j, f)
            } else {
                None
            }
        }
        "a" | "an" | "one" | "two" | "three" | "four" | "some" | "got" if s.have && !s.neg => {
            have_thing(c, j, f)
        }
        "got" if !s.neg => have_thing(c, j, f),
        // "I used to be a teacher".
        "be" if s.past && !s.we && is_in("a an", low(c, j + 1)) => job_or_fan(c, j + 1, &s, f),
        _ => None,
    }
}

fn live(c: &[Tok], j: usize, s: &Subject, f: &mut Found) -> Option<usize> {
    let prep = low(c, j + 1);
    if !matches!(prep, "in" | "at" | "on") {
        return None;
    }
    let val = value(c, j + 2, Kind::Place, &[])?;
    let former = s.past || (low(c, j) == "lived" && !s.have);
    let (slot, text) = if s.neg {
        (
            "not:home",
            format!("You no longer live {prep} {}.", val.second),
        )
    } else if former {
        (
            "not:home",
            format!("You used to live {prep} {}.", val.second),
        )
    } else {
        ("home", format!("You live {prep} {}.", val.second))
    };
    f.push(slot, &val.said, text);
    Some(val.stop)
}

/// "I moved to B", "I moved from A to B", "I moved to B from A", "I moved here from A".
fn moved(c: &[Tok], j: usize, s: &Subject, f: &mut Found) -> Option<usize> {
    if s.neg {
        return None;
    }
    let mut k = j + 1;
    while matches!(
        low(c, k),
        "back" | "here" | "there" | "away" | "over" | "out"
    ) {
        k += 1;
    }
    match low(c, k) {
        "to" => {
            let to = value(c, k + 1, Kind::Place, &[])?;
            let mut end = to.stop;
            if low(c, to.stop) == "from" {
                if let Some(from) = value(c, to.stop + 1, Kind::Place, &[]) {
                    end = from.stop;
                    f.push(
                        "home",
                        &from.said,
                        format!("You used to live in {}.", from.second),
                    );
                }
            }
            f.push("home", &to.said, format!("You live in {}.", to.second));
            Some(end)
        }
        "from" => {
            let from = value(c, k + 1, Kind::Place, &["to"])?;
            if low(c, from.stop) == "to" {
                let to = value(c, from.stop + 1, Kind::Place, &[])?;
                // The earlier home first, so that the later one supersedes it.
                f.push(
                    "home",
                    &from.said,
                    format!("You used to live in {}.", from.second),
                );
                f.push("home", &to.said, format!("You live in {}.", to.second));
                Some(to.stop)
            } else {
                // Where to is not said: all we know is that it is no longer home.
                f.push(
                    "not:home",
                    &from.said,
                    format!("You used to live in {}.", from.second),
                );
                Some(from.stop)
            }
        }
        _ => None,
    }
}

fn from(c: &[Tok], k: usize, f: &mut Found) -> Option<usize> {
    let val = value(c, k, Kind::Place, &[])?;
    // "I'm from the bank" is who they call for, not where they are from: a place has a
    // capital ("Berlin", "the United States").
    let has_capital = c
        .get(k..val.stop)?
        .iter()
        .take(2)
        .any(|t| t.is_capitalised());
    if !has_capital {
        return None;
    }
    f.push("from", &val.said, format!("You are from {}.", val.second));
    Some(val.stop)
}

fn work(c: &[Tok], j: usize, s: &Subject, f: &mut Found) -> Option<usize> {
    let former = s.past || (low(c, j) == "worked" && !s.have);
    let gone = s.neg || former;
    let k = j + 1;
    match low(c, k) {
        "at" | "for" | "in" => {
            let prep = low(c, k).to_string();
            let org = value(c, k + 1, Kind::Org, &[])?;
            f.push(
                if gone { "not:work" } else { "work" },
                &org.said,
                work_text(&prep, &org.second, s.neg, former),
            );
            let mut end = org.stop;
            // "... at the hospital (for five years) as a nurse".
            let as_at = (org.stop..(org.stop + 6).min(c.len())).find(|&m| {
                low(c, m) == "as" && (m == org.stop || is_in("a an the", low(c, m + 1)))
            });
            if let Some(m) = as_at {
                if let Some(job) = job_phrase(c, m + 1, true) {
                    end = job.stop;
                    push_job(f, &job, gone, "You work as");
                }
            }
            Some(end)
        }
        "as" => {
            let job = job_phrase(c, k + 1, true)?;
            push_job(f, &job, gone, "You work as");
            let mut end = job.stop;
            if matches!(low(c, job.stop), "at" | "for" | "in") {
                let prep = low(c, job.stop).to_string();
                if let Some(org) = value(c, job.stop + 1, Kind::Org, &[]) {
                    end = org.stop;
                    f.push(
                        if gone { "not:work" } else { "work" },
                        &org.said,
                        work_text(&prep, &org.second, s.neg, former),
                    );
                }
            }
            Some(end)
        }
        _ => None,
    }
}

fn work_text(prep: &str, org: &str, neg: bool, former: bool) -> String {
    if neg {
        format!("You no longer work {prep} {org}.")
    } else if former {
        format!("You used to work {prep} {org}.")
    } else {
        format!("You work {prep} {org}.")
    }
}

/// A job noun phrase after "a"/"an" ("a retired teacher"). `strong` after "work as" or
/// "my job is", where any phrase is taken; otherwise ("I'm a ...") it must look like a
/// job. The value is without the article.
fn job_phrase(c: &[Tok], k: usize, strong: bool) -> Option<Val> {
    let mut k = k;
    while matches!(low(c, k), "a" | "an" | "the" | "being") {
        k += 1;
    }
    let mut val = value(c, k, Kind::Org, &["of", "and", "who", "that", "to"])?;
    let words = val.stop - k;
    if words > 4 {
        // "I'm a ... " running on: cap at the first three words.
        let toks = c.get(k..k + 3)?;
        val.said = join(toks, false);
        val.second = join(toks, true);
        val.stop = k + 3;
    }
    if !strong {
        let first = low(c, k);
        let last_word = val.said.split_whitespace().last()?.to_lowercase();
        let looks_like_job = is_in(JOB_WORDS, &last_word)
            || JOB_SUFFIXES
                .split_whitespace()
                .any(|s| last_word.ends_with(s) && last_word.len() > s.len() + 2);
        if is_in(NOT_JOB_FIRST, first) || is_in(NOT_JOBS, &last_word) || !looks_like_job {
            return None;
        }
    }
    Some(val)
}

fn push_job(f: &mut Found, job: &Val, gone: bool, verb: &str) {
    let a = article(&job.said);
    if gone {
        f.push(
            "not:job",
            &job.said,
            format!("You used to be {a} {}.", job.second),
        );
    } else {
        f.push("job", &job.said, format!("{verb} {a} {}.", job.second));
    }
}

/// "I'm a nurse (at St Mary's)", "I'm a (big) fan of jazz".
fn job_or_fan(c: &[Tok], j: usize, s: &Subject, f: &mut Found) -> Option<usize> {
    let fan_at = if low(c, j + 1) == "fan" {
        Some(j + 1)
    } else if low(c, j + 2) == "fan"
        && matches!(low(c, j + 1), "big" | "huge" | "great" | "real" | "massive")
    {
        Some(j + 2)
    } else {
        None
    };
    if let Some(fan) = fan_at {
        if low(c, fan + 1) != "of" {
            return None;
        }
        let val = thing(c, fan + 2)?;
        let (slot, text) = if s.neg || s.past {
            ("dislikes", format!("You are not a fan of {}.", val.second))
        } else {
            ("likes", format!("You are a fan of {}.", val.second))
        };
        f.push(slot, &val.said, text);
        return Some(val.stop);
    }
    let job = job_phrase(c, j + 1, false)?;
    let a = article(&job.said);
    if s.neg {
        f.push(
            "not:job",
            &job.said,
            format!("You are no longer {a} {}.", job.second),
        );
    } else if s.past {
        f.push(
            "not:job",
            &job.said,
            format!("You used to be {a} {}.", job.second),
        );
    } else {
        f.push("job", &job.said, format!("You are {a} {}.", job.second));
    }
    let mut end = job.stop;
    if !s.neg && !s.past && matches!(low(c, job.stop), "at" | "for") {
        let prep = low(c, job.stop).to_string();
        if let Some(org) = value(c, job.stop + 1, Kind::Org, &[]) {
            end = org.stop;
            f.push(
                "work",
                &org.said,
                work_text(&prep, &org.second, false, false),
            );
        }
    }
    Some(end)
}

/// A liked or disliked thing; not a pronoun ("I like it") nor "to think".
fn thing(c: &[Tok], k: usize) -> Option<Val> {
    let first = low(c, k);
    if is_in(NOT_THINGS, first) || first.is_empty() || (first == "the" && low(c, k + 1) == "way") {
        return None;
    }
    if first == "to" && (is_in(TRANSIENT, low(c, k + 1)) || low(c, k + 1).is_empty()) {
        return None;
    }
    value(c, k, Kind::Thing, &[])
}

fn likes(c: &[Tok], j: usize, s: &Subject, f: &mut Found) -> Option<usize> {
    let v = low(c, j);
    let val = thing(c, j + 1)?;
    let past_form = v.ends_with("ed") && !s.have;
    let base = match v {
        "love" | "loves" | "loved" => "love",
        "enjoy" | "enjoys" | "enjoyed" => "enjoy",
        "adore" => "adore",
        _ => "like",
    };
    if s.neg {
        f.push(
            "dislikes",
            &val.said,
            format!("You don't {base} {}.", val.second),
        );
    } else if s.past || past_form {
        f.push(
            "dislikes",
            &val.said,
            format!("You used to {base} {}.", val.second),
        );
    } else {
        f.push("likes", &val.said, format!("You {base} {}.", val.second));
    }
    Some(val.stop)
}

/// A plan's verb phrase after "to": not one about this conversation ("I need to ask").
fn plan_phrase(c: &[Tok], k: usize) -> Option<Val> {
    let first = low(c, k);
    if first.is_empty() || is_in(TRANSIENT, first) {
        return None;
    }
    let val = value(c, k, Kind::Plan, &[])?;
    // "I need to go" (now) is not a plan; "I need to go to the doctor" is.
    if first == "go" && val.stop <= k + 1 {
        return None;
    }
    Some(val)
}

/// "I need to X", "I want to X", "I'd like to X", "I have to X", "I plan to X", "I'm
/// planning to X", "I need a new passport".
fn want(c: &[Tok], j: usize, s: &Subject, f: &mut Found) -> Option<usize> {
    if s.past {
        return None;
    }
    let v = low(c, j);
    let (verb, mut k) = match v {
        "would" => match low(c, j + 1) {
            "like" => ("would like", j + 2),
            "love" => ("would love", j + 2),
            _ => return None,
        },
        "to" => ("have", j),
        "planning" if s.be && low(c, j + 1) == "on" => {
            let val = plan_phrase(c, j + 2)?;
            f.push(
                "plan",
                &val.said,
                format!("You are planning on {}.", val.second),
            );
            return Some(val.stop);
        }
        "planning" | "hoping" if s.be => (
            if v == "planning" {
                "are planning"
            } else {
                "are hoping"
            },
            j + 1,
        ),
        "planning" | "hoping" => return None,
        "hope" => ("hope", j + 1),
        "plan" => ("plan", j + 1),
        "intend" => ("intend", j + 1),
        "need" => ("need", j + 1),
        _ => ("want", j + 1),
    };
    if low(c, k) == "to" {
        k += 1;
        let val = plan_phrase(c, k)?;
        if s.neg {
            let text = match verb {
                "need" | "have" => format!("You no longer need to {}.", val.second),
                _ => format!("You no longer want to {}.", val.second),
            };
            f.push("not:plan", &val.said, text);
        } else {
            f.push("plan", &val.said, format!("You {verb} to {}.", val.second));
        }
        return Some(val.stop);
    }
    // "I need a plumber", "I'd like a table for two": a request for something.
    // "I'm planning a trip to Japan".
    if matches!(verb, "need" | "would like" | "are planning")
        && !s.neg
        && matches!(low(c, k), "a" | "an" | "some" | "new" | "another")
    {
        let val = value(c, k, Kind::Plan, &[])?;
        f.push("plan", &val.said, format!("You {verb} {}.", val.second));
        return Some(val.stop);
    }
    None
}

/// "I'm going to Paris next week", "I'm flying to Rome on Friday", "we're going on
/// holiday in June". Only with a time or a named destination: "I'm going to be honest"
/// is no plan.
fn going(c: &[Tok], j: usize, s: &Subject, f: &mut Found) -> Option<usize> {
    if s.neg || s.past {
        return None;
    }
    let v = low(c, j);
    let prep = low(c, j + 1);
    if !(prep == "to" || (prep == "on" && v == "going")) {
        return None;
    }
    let k = j + 2;
    if is_in(TRANSIENT, low(c, k)) || low(c, k) == "have" {
        return None;
    }
    let val = value_within(c, k, Kind::Plan, &[], MAX_VALUE_WORDS - 2)?;
    let toks = c.get(k..val.stop)?;
    let named = toks.first().is_some_and(|t| t.is_capitalised());
    let event = toks.iter().any(|t| is_in(EVENTS, &t.low));
    if !(has_time_cue(toks) || named || (prep == "on" && event)) {
        return None;
    }
    let said = format!("{v} {prep} {}", val.said);
    f.push("plan", &said, format!("You are {v} {prep} {}.", val.second));
    Some(val.stop)
}

/// "I have a dog (called Rex)", "I've got two cats", "I have a daughter called Emma",
/// "I have an appointment with the dentist on Thursday".
fn have_thing(c: &[Tok], j: usize, f: &mut Found) -> Option<usize> {
    let mut k = j;
    if low(c, k) == "got" {
        k += 1;
    }
    let count = k;
    if !matches!(
        low(c, count),
        "a" | "an" | "one" | "two" | "three" | "four" | "some"
    ) {
        return None;
    }
    // The noun may follow up to two adjectives: "a little black dog".
    for m in count + 1..(count + 4).min(c.len()) {
        if let Some((animal, after)) = animal_at(c, m) {
            let named = if matches!(low(c, after), "called" | "named") {
                strong_name(c, after + 1)
            } else {
                // "I have a dog, Rex".
                name_run(c, after, 2)
            };
            if let Some((name, end)) = named {
                f.push("pet", &name, format!("You have a {animal} called {name}."));
                return Some(end);
            }
            let phrase = join(&c[count..after], false);
            let second = join(&c[count..after], true);
            f.push("pet", &phrase, format!("You have {second}."));
            return Some(after);
        }
        if let Some((rel, after)) = relation_at(c, m) {
            if matches!(low(c, after), "called" | "named") {
                let (name, end) = strong_name(c, after + 1)?;
                f.push(
                    &format!("person:{rel}"),
                    &name,
                    format!("Your {rel} is called {name}."),
                );
                return Some(end);
            }
            return None;
        }
        if is_in(EVENTS, low(c, m)) {
            let val = value(c, count, Kind::Plan, &[])?;
            f.push("plan", &val.said, format!("You have {}.", val.second));
            return Some(val.stop);
        }
    }
    None
}

fn born(c: &[Tok], j: usize, f: &mut Found) -> Option<usize> {
    match low(c, j + 1) {
        "on" => {
            let val = value(c, j + 2, Kind::Date, &[])?;
            f.push(
                "birthday",
                &val.said,
                format!("You were born on {}.", val.second),
            );
            Some(val.stop)
        }
        "in" => {
            let next = low(c, j + 2);
            if next.len() == 4 && next.chars().all(|c| c.is_ascii_digit()) {
                f.push("birth_year", next, format!("You were born in {next}."));
                return Some(j + 3);
            }
            if is_in(MONTHS, next) {
                let val = value(c, j + 2, Kind::Date, &[])?;
                f.push(
                    "birthday",
                    &val.said,
                    format!("You were born in {}.", val.second),
                );
                return Some(val.stop);
            }
            let val = value(c, j + 2, Kind::Place, &[])?;
            if !c.get(j + 2)?.is_capitalised() {
                return None;
            }
            f.push(
                "birthplace",
                &val.said,
                format!("You were born in {}.", val.second),
            );
            Some(val.stop)
        }
        _ => None,
    }
}

fn age(c: &[Tok], k: usize, f: &mut Found) -> Option<usize> {
    let n: u32 = low(c, k).parse().ok()?;
    if !(1..=120).contains(&n) {
        return None;
    }
    f.push("age", &n.to_string(), format!("You are {n} years old."));
    Some(k + 1)
}

/// Patterns that start with "my" / "our".
fn my_patterns(c: &[Tok], i: usize, f: &mut Found) -> Option<usize> {
    let ours = low(c, i) == "our";
    let k = i + 1;
    let w = low(c, k);

    // "my name is Daniel", "my first name's Daniel".
    let name_at = match w {
        "name" => Some(k + 1),
        "first" if low(c, k + 1) == "name" => Some(k + 2),
        _ => None,
    };
    if let (Some(m), false) = (name_at, ours) {
        if is_be(c, m) {
            let (name, end) = strong_name(c, m + 1)?;
            f.push("name", &name, format!("Your name is {name}."));
            return Some(end);
        }
        return None;
    }

    // "my favourite food is pizza".
    if !ours && matches!(w, "favourite" | "favorite") {
        let is_at = (k + 1..(k + 5).min(c.len())).find(|&m| is_be(c, m) || low(c, m) == "are")?;
        let what = join(&c[k + 1..is_at], true);
        let val = thing(c, is_at + 1)?;
        let text = if what.is_empty() {
            format!("You like {}.", val.second)
        } else {
            format!("Your favourite {what} is {}.", val.second)
        };
        f.push("likes", &val.said, text);
        return Some(val.stop);
    }

    // "my wife is called Anna", "my son's name is Tom", "my friend Tom". Without a
    // name ("my doctor's appointment") other patterns may still apply.
    if let Some((rel, m)) = relation_at(c, k) {
        if let Some((name, end)) = person_name(c, m) {
            f.push(
                &format!("person:{rel}"),
                &name,
                format!("Your {rel} is called {name}."),
            );
            return Some(end);
        }
    }

    // "my dog is called Rex", "our cat's name is Tom".
    if let Some((animal, m)) = animal_at(c, k) {
        if let Some((name, end)) = person_name(c, m) {
            f.push("pet", &name, format!("You have a {animal} called {name}."));
            return Some(end);
        }
    }

    if !ours && matches!(w, "job" | "profession" | "occupation") && is_be(c, k + 1) {
        let job = job_phrase(c, k + 2, true)?;
        push_job(f, &job, false, "You work as");
        return Some(job.stop);
    }

    if !ours && w == "birthday" && is_be(c, k + 1) {
        let mut m = k + 2;
        if low(c, m) == "on" || (low(c, m) == "in" && is_in(MONTHS, low(c, m + 1))) {
            m += 1;
        }
        // "my birthday is next week" is true only this week: no fact to keep.
        if matches!(
            low(c, m),
            "next" | "this" | "tomorrow" | "today" | "tonight" | "soon" | "coming" | "in"
        ) {
            return None;
        }
        let val = value(c, m, Kind::Date, &[])?;
        f.push(
            "birthday",
            &val.said,
            format!("Your birthday is {}.", val.second),
        );
        return Some(val.stop);
    }

    if w == "address" && is_be(c, k + 1) {
        let val = value(c, k + 2, Kind::Plan, &[])?;
        f.push(
            "address",
            &val.said,
            format!("Your address is {}.", val.second),
        );
        return Some(val.stop);
    }

    if matches!(w, "home" | "house" | "flat" | "apartment")
        && is_be(c, k + 1)
        && low(c, k + 2) == "in"
    {
        let val = value(c, k + 3, Kind::Place, &[])?;
        f.push("home", &val.said, format!("You live in {}.", val.second));
        return Some(val.stop);
    }

    // "my trip to Paris", "my dentist appointment is on Friday".
    let event = (k..(k + 3).min(c.len())).find(|&m| is_in(EVENTS, low(c, m)))?;
    let mut after = event + 1;
    if matches!(
        low(c, after),
        "was" | "got" | "has" | "had" | "been" | "went"
    ) {
        return None;
    }
    if is_be(c, after) {
        after += 1;
    }
    let head: Vec<Tok> = c.get(k..=event)?.to_vec();
    let room = MAX_VALUE_WORDS.saturating_sub(head.len()).max(1);
    let details = value_within(c, after, Kind::Plan, &[], room)?;
    let said = format!("{} {}", join(&head, false), details.said);
    let second = format!("{} {}", join(&head, true), details.second);
    f.push(
        "plan",
        &said,
        format!("You have {} {second}.", article(&said)),
    );
    Some(details.stop)
}

/// The name after "my wife" / "my dog": "'s name is X", "is called X", "called X",
/// "is X" (capitalised), "X" (capitalised).
fn person_name(c: &[Tok], m: usize) -> Option<(String, usize)> {
    if low(c, m) == "'s" && low(c, m + 1) == "name" && is_be(c, m + 2) {
        return strong_name(c, m + 3);
    }
    if is_be(c, m) && matches!(low(c, m + 1), "called" | "named") {
        return strong_name(c, m + 2);
    }
    if matches!(low(c, m), "called" | "named") {
        return strong_name(c, m + 1);
    }
    if is_be(c, m) {
        return name_run(c, m + 1, 2);
    }
    name_run(c, m, 2)
}

fn remind(c: &[Tok], i: usize, f: &mut Found) -> Option<usize> {
    if low(c, i + 1) != "me" || (i > 0 && matches!(low(c, i - 1), "not" | "never")) {
        return None;
    }
    let how = low(c, i + 2);
    if !matches!(how, "to" | "about" | "that" | "of") {
        return None;
    }
    let val = value(c, i + 3, Kind::Plan, &[])?;
    let how = if how == "of" { "about" } else { how };
    f.push(
        "plan",
        &val.said,
        format!("You asked to be reminded {how} {}.", val.second),
    );
    Some(val.stop)
}

fn call_me(c: &[Tok], i: usize, f: &mut Found) -> Option<usize> {
    if low(c, i + 1) != "me" {
        return None;
    }
    if i > 0 && matches!(low(c, i - 1), "to" | "not" | "never" | "will") {
        return None;
    }
    let (name, end) = name_run(c, i + 2, 2)?;
    f.push("name", &name, format!("Your name is {name}."));
    Some(end)
}

/// "(Hi,) this is Maria", "Hello Sofia, it's Maria": only after nothing but greetings,
/// and "it's" only after one ("It's Christmas" names no caller).
fn this_is(c: &[Tok], i: usize, f: &mut Found) -> Option<usize> {
    let prefix = c.get(..i)?;
    if !is_be(c, i + 1)
        || !prefix.iter().all(|t| is_in(GREETINGS, &t.low))
        || (low(c, i) == "it" && prefix.is_empty())
    {
        return None;
    }
    let (name, end) = name_run(c, i + 2, 2)?;
    f.push("name", &name, format!("Your name is {name}."));
    Some(end)
}

// ---------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------

/// Facts stated in one caller sentence (first person); several sentences are fine too.
/// `text` is a second-person sentence for prompts: "You live in Berlin.". Repeats
/// within the input (same slot and normalised value) are given once.
pub fn extract(sentence: &str) -> Vec<Extracted> {
    let mut out = Vec::new();
    for s in sentences(sentence) {
        for clause in clauses(&s) {
            extract_clause(&clause, &mut out);
        }
    }
    let mut seen = HashSet::new();
    out.retain(|e| seen.insert((e.slot.clone(), normalise(&e.value))));
    out
}

/// Whether a slot holds one value at a time (a new value supersedes the old) or many.
pub fn is_single_valued(slot: &str) -> bool {
    if let Some(rel) = slot.strip_prefix("person:") {
        return is_in(SINGLE_RELATIONS, rel);
    }
    matches!(
        slot,
        "name"
            | "home"
            | "from"
            | "address"
            | "work"
            | "job"
            | "birthday"
            | "birth_year"
            | "birthplace"
            | "age"
    )
}

/// The slot whose fact with the same value a fact of `slot` contradicts: `likes` ↔
/// `dislikes`, `X` ↔ `not:X`.
pub fn opposite(slot: &str) -> String {
    match slot {
        "likes" => "dislikes".to_string(),
        "dislikes" => "likes".to_string(),
        _ => match slot.strip_prefix("not:") {
            Some(positive) => positive.to_string(),
            None => format!("not:{slot}"),
        },
    }
}

/// A value as compared for duplicates: lower case, letters and digits only, without
/// leading articles ("The Bank." = "bank", "a nurse" = "nurse").
pub fn normalise(value: &str) -> String {
    let lowered = value.to_lowercase();
    let words: Vec<&str> = lowered
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .map(|w| w.trim_matches('\''))
        .filter(|w| !w.is_empty())
        .collect();
    let skip = words
        .iter()
        .take_while(|w| matches!(**w, "a" | "an" | "the" | "my" | "your" | "to"))
        .count();
    words[skip..].join(" ")
}

fn same_value(a: &Fact, b: &Fact) -> bool {
    normalise(&a.value) == normalise(&b.value)
}

/// Folds newly consolidated facts into the caller's existing ones (interference
/// resolution, see the module docs). `existing` is updated in place; the facts that
/// changed or were added are returned (what the store must upsert), in `existing`'s
/// order. Facts of other slots or other callers are never touched. New facts with an
/// empty slot or value are ignored.
pub fn resolve(existing: &mut Vec<Fact>, new: Vec<Fact>) -> Vec<Fact> {
    let mut changed: Vec<bool> = vec![false; existing.len()];
    for mut nf in new {
        if nf.slot.trim().is_empty() || normalise(&nf.value).is_empty() {
            continue;
        }
        // The same fact consolidated again (same id), or the same value in force:
        // one fact, provenance unioned.
        let duplicate = existing.iter().position(|e| {
            e.caller == nf.caller
                && e.slot == nf.slot
                && same_value(e, &nf)
                && (e.id == nf.id || e.in_force())
        });
        if let Some(d) = duplicate {
            if merge_into(&mut existing[d], &nf) {
                changed[d] = true;
            }
            continue;
        }
        // A different fact under a taken id: make it distinct.
        if existing.iter().any(|e| e.id == nf.id) {
            let base = nf.id.clone();
            let mut n = 2;
            while existing.iter().any(|e| e.id == format!("{base}#{n}")) {
                n += 1;
            }
            nf.id = format!("{base}#{n}");
        }
        // Given already superseded: it is history and displaces nothing.
        if !nf.in_force() {
            existing.push(nf);
            changed.push(true);
            continue;
        }
        let single = is_single_valued(&nf.slot);
        let contrary = opposite(&nf.slot);
        let rivals: Vec<usize> = existing
            .iter()
            .enumerate()
            .filter(|(_, e)| {
                e.caller == nf.caller
                    && e.in_force()
                    && ((single && e.slot == nf.slot) || (e.slot == contrary && same_value(e, &nf)))
            })
            .map(|(i, _)| i)
            .collect();
        // Said before what is in force (a late consolidation): it is history already.
        let newer_rival = rivals
            .iter()
            .copied()
            .filter(|&r| existing[r].unix_ms > nf.unix_ms)
            .max_by_key(|&r| existing[r].unix_ms);
        if let Some(r) = newer_rival {
            nf.superseded_by = Some(existing[r].id.clone());
        } else {
            for &r in &rivals {
                existing[r].superseded_by = Some(nf.id.clone());
                changed[r] = true;
            }
        }
        existing.push(nf);
        changed.push(true);
    }
    existing
        .iter()
        .zip(changed)
        .filter(|(_, c)| *c)
        .map(|(f, _)| f.clone())
        .collect()
}

/// Unions `from`'s provenance into `into`; the mention time becomes the latest. Returns
/// whether anything changed.
fn merge_into(into: &mut Fact, from: &Fact) -> bool {
    let mut changed = false;
    for t in &from.source_turns {
        if !into.source_turns.contains(t) {
            into.source_turns.push(t.clone());
            changed = true;
        }
    }
    if from.unix_ms > into.unix_ms {
        into.unix_ms = from.unix_ms;
        changed = true;
    }
    changed
}

/// Whether a fact's slot answers `slot`: the slot itself, or any `person:*` for
/// `person`.
fn slot_matches(fact_slot: &str, slot: &str) -> bool {
    fact_slot == slot
        || fact_slot
            .strip_prefix(slot)
            .is_some_and(|rest| rest.starts_with(':') && !slot.is_empty())
}

/// The facts in force answering a slot, oldest first. `person` gives every
/// `person:<relation>`.
pub fn in_force<'a>(facts: &'a [Fact], slot: &str) -> Vec<&'a Fact> {
    let mut out: Vec<&Fact> = facts
        .iter()
        .filter(|f| f.in_force() && slot_matches(&f.slot, slot))
        .collect();
    out.sort_by_key(|f| f.unix_ms);
    out
}

/// Earlier values of a slot, oldest first, for "where did I live before?": its
/// superseded facts, and the `not:<slot>` facts in force ("I used to live in Paris")
/// whose value is not already among them.
pub fn history<'a>(facts: &'a [Fact], slot: &str) -> Vec<&'a Fact> {
    let mut out: Vec<&Fact> = facts
        .iter()
        .filter(|f| !f.in_force() && slot_matches(&f.slot, slot))
        .collect();
    let negated = format!("not:{slot}");
    for f in facts
        .iter()
        .filter(|f| f.in_force() && slot_matches(&f.slot, &negated))
    {
        if !out.iter().any(|o| same_value(o, f)) {
            out.push(f);
        }
    }
    out.sort_by_key(|f| f.unix_ms);
    out
}

/// Which slot a caller's question asks about, if any, and whether it asks for earlier
/// values ("where did I live before?"). Only questions about the caller ("I", "my")
/// count, and only questions: "I live in Berlin" asks nothing.
pub fn question_slot(question: &str) -> Option<(String, bool)> {
    let words: Vec<Tok> = sentences(question).into_iter().flatten().collect();
    let w: Vec<&str> = words.iter().map(|t| t.low.as_str()).collect();
    // Any of the space-separated words.
    let any = |list: &str| w.iter().any(|x| is_in(list, x));
    // Any of the '|'-separated phrases, as consecutive words.
    let phrase = |list: &str| {
        list.split('|').any(|p| {
            let p: Vec<&str> = p.split_whitespace().collect();
            !p.is_empty() && w.windows(p.len()).any(|win| win == p.as_slice())
        })
    };
    let answer = |slot: &str, history: bool| Some((slot.to_string(), history));

    let first_person = any("i my me");
    let opener = w.first().copied().unwrap_or("");
    let asks = question.contains('?')
        || is_in(
            "what whats where who when which how do did does can could is are was were have \
             tell remind",
            opener,
        )
        || any("remember recall")
        || phrase("tell me|do you know|you know");
    if !first_person || !asks || phrase("remind me to") {
        return None;
    }
    let before = any("before previously formerly former earlier originally")
        || phrase("used to|use to|my old");

    // A person named by relation ("what's my wife's name", "who is my boss"), a pet.
    for (k, word) in w.iter().enumerate() {
        if *word == "my" {
            if let Some((rel, _)) = relation_at(&words, k + 1) {
                return answer(&format!("person:{rel}"), before);
            }
            if animal_at(&words, k + 1).is_some() || is_in("pet pets", low(&words, k + 1)) {
                return answer("pet", before);
            }
        }
    }
    if phrase("my name|who am i|who i am|call me") {
        return answer("name", before);
    }
    if any("born") {
        return answer(
            if any("where") {
                "birthplace"
            } else {
                "birthday"
            },
            false,
        );
    }
    if any("birthday") {
        return answer("birthday", false);
    }
    if phrase("how old|my age") {
        return answer("age", false);
    }
    if phrase("my address") {
        return answer("address", before);
    }
    if (any("from") && any("where") && !any("call calling")) || phrase("come from") {
        return answer("from", before);
    }
    if any("allergic allergies allergy") {
        return answer("allergy", false);
    }
    // Before "live": "what do I do for a living" is about the job.
    if any("profession occupation") || phrase("my job|for a living|do for work|work as") {
        return answer("job", before);
    }
    let lived = any("lived") || phrase("did i live|was i living");
    if lived || any("live living moved move reside") || phrase("my home") {
        return answer("home", before || lived);
    }
    let worked = any("worked") || phrase("did i work");
    if worked || any("work working employer") || phrase("my company") {
        return answer("work", before || worked);
    }
    if any("like love enjoy favourite favorite hobbies hobby interests hate dislike") {
        let negative = any("not hate dislike");
        return answer(if negative { "dislikes" } else { "likes" }, before);
    }
    if any("plan plans planning planned appointment appointments remind reminder meeting trip schedule")
        || phrase("need to|needed to|wanted to|want to|going to|to do")
    {
        return answer("plan", before);
    }
    None
}

/// Caller turns turned into fact records: `source_turns = [turn.id]`, `unix_ms =
/// turn.unix_ms`, embedding left empty, id `{slot}@{unix_ms}` (then `#2`, `#3` for
/// more of one slot at one instant). Agent turns never create facts. Repeats are merged
/// (provenance unioned) unless a contrary fact came between them, so the order of
/// changes survives for [`resolve`].
pub fn consolidate_turns(caller: &str, turns: &[&Turn]) -> Vec<Fact> {
    let mut out: Vec<Fact> = Vec::new();
    let mut ids: HashSet<String> = HashSet::new();
    for turn in turns.iter().filter(|t| t.speaker == Speaker::Caller) {
        for e in extract(&turn.text) {
            let norm = normalise(&e.value);
            if norm.is_empty() {
                continue;
            }
            // Merge into the latest earlier mention, unless something contrary (another
            // value of a single-valued slot, or the opposite slot) was said after it.
            let single = is_single_valued(&e.slot);
            let contrary = opposite(&e.slot);
            let mut merged = false;
            for f in out.iter_mut().rev() {
                let same_norm = normalise(&f.value) == norm;
                if f.slot == e.slot && same_norm {
                    if !f.source_turns.contains(&turn.id) {
                        f.source_turns.push(turn.id.clone());
                    }
                    f.unix_ms = f.unix_ms.max(turn.unix_ms);
                    merged = true;
                    break;
                }
                if (single && f.slot == e.slot) || (f.slot == contrary && same_norm) {
                    break;
                }
            }
            if merged {
                continue;
            }
            let base = format!("{}@{}", e.slot, turn.unix_ms);
            let mut id = base.clone();
            let mut n = 2;
            while ids.contains(&id) {
                id = format!("{base}#{n}");
                n += 1;
            }
            ids.insert(id.clone());
            out.push(Fact {
                id,
                caller: caller.to_string(),
                slot: e.slot,
                value: e.value,
                text: e.text,
                unix_ms: turn.unix_ms,
                source_turns: vec![turn.id.clone()],
                superseded_by: None,
                embedding: Vec::new(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The (slot, value) pairs of a sentence.
    fn pairs(sentence: &str) -> Vec<(String, String)> {
        extract(sentence)
            .into_iter()
            .map(|e| (e.slot, e.value))
            .collect()
    }

    fn p(slot: &str, value: &str) -> (String, String) {
        (slot.to_string(), value.to_string())
    }

    fn text_of(sentence: &str, slot: &str) -> String {
        extract(sentence)
            .into_iter()
            .find(|e| e.slot == slot)
            .map(|e| e.text)
            .unwrap_or_default()
    }

    fn fact(id: &str, slot: &str, value: &str, unix_ms: i64, turn: &str) -> Fact {
        Fact {
            id: id.into(),
            caller: "alice".into(),
            slot: slot.into(),
            value: value.into(),
            text: format!("{slot}: {value}"),
            unix_ms,
            source_turns: vec![turn.into()],
            superseded_by: None,
            embedding: Vec::new(),
        }
    }

    fn turn(id: &str, unix_ms: i64, speaker: Speaker, text: &str) -> Turn {
        Turn {
            id: id.into(),
            caller: "alice".into(),
            call_id: "c1".into(),
            seq: 0,
            unix_ms,
            speaker,
            text: text.into(),
            embedding: Vec::new(),
            surprise: 0.0,
            strength: 1.0,
            access_count: 0,
            last_access_ms: unix_ms,
            episode_id: String::new(),
        }
    }

    #[test]
    fn several_facts_in_one_sentence() {
        assert_eq!(
            pairs("Hi, my name is Daniel and I live in Paris."),
            vec![p("name", "Daniel"), p("home", "Paris")]
        );
        assert_eq!(
            pairs("I live in Berlin and work at Siemens."),
            vec![p("home", "Berlin"), p("work", "Siemens")]
        );
        assert_eq!(
            pairs("I'm a nurse at St Mary's, and my husband is called Tom."),
            vec![
                p("job", "nurse"),
                p("work", "St Mary's"),
                p("person:husband", "Tom")
            ]
        );
    }

    #[test]
    fn names() {
        assert_eq!(pairs("My name is Daniel."), vec![p("name", "Daniel")]);
        assert_eq!(
            pairs("My name's Daniel Smith."),
            vec![p("name", "Daniel Smith")]
        );
        assert_eq!(pairs("my name is daniel"), vec![p("name", "Daniel")]);
        assert_eq!(pairs("I'm Daniel."), vec![p("name", "Daniel")]);
        assert_eq!(
            pairs("Hello, this is Maria calling."),
            vec![p("name", "Maria")]
        );
        assert_eq!(pairs("You can call me Dan."), vec![p("name", "Dan")]);
        assert_eq!(
            text_of("My name is Daniel.", "name"),
            "Your name is Daniel."
        );
    }

    #[test]
    fn greetings_with_its_and_names_ending_at_a_comma() {
        assert_eq!(
            pairs("Hello Sofia, it's Maria again."),
            vec![p("name", "Maria")]
        );
        assert!(pairs("It's Christmas.").is_empty(), "no greeting before it");
        assert_eq!(pairs("I'm Peter, Peter Jones."), vec![p("name", "Peter")]);
        assert_eq!(pairs("I'm sorry, I'm David."), vec![p("name", "David")]);
    }

    #[test]
    fn everyday_talk_yields_no_facts() {
        for s in [
            "I like, um, I don't know.",
            "I need to know what time it is.",
            "I love that!",
            "Is this Sofia?",
            "I want to speak to a human.",
            "I'm going to the shop.",
            "I work there.",
            "I live nearby.",
            "I'm from the bank.",
            "This is ridiculous.",
            "I'm Here.",
            "I'm so happy.",
            "I'm a little confused.",
            "My phone is broken.",
            "I had a dog called Rex.",
            "I'm calling for my mother.",
            "I like the way you talk.",
            "We like it here.",
            "I need you to help me.",
            "I'd like that.",
            "I'm Going To Say This Once.",
            "I'm heading home.",
            "I'm 5 minutes away.",
            "I think I need to lie down.",
        ] {
            assert!(extract(s).is_empty(), "{s}: {:?}", extract(s));
        }
    }

    #[test]
    fn im_is_a_name_only_for_a_capitalised_uncommon_word() {
        for s in [
            "I'm sorry.",
            "I'm Sorry.",
            "I'm fine, thanks.",
            "I'm calling about my bill.",
            "I'm English.",
            "I'm Not sure.",
            "I'm in Berlin.",
            "I am tired.",
            "Call me back tomorrow.",
            "Please call me Tuesday.",
            "This is Great.",
            "I think this is Paris.",
        ] {
            assert!(
                !extract(s).iter().any(|e| e.slot == "name"),
                "{s}: {:?}",
                extract(s)
            );
        }
    }

    #[test]
    fn homes_and_moves() {
        assert_eq!(pairs("I live in Berlin now."), vec![p("home", "Berlin")]);
        assert_eq!(
            pairs("We live in New York City."),
            vec![p("home", "New York City")]
        );
        assert_eq!(
            pairs("I've lived in Portland, Oregon for ten years."),
            vec![p("home", "Portland, Oregon")]
        );
        assert_eq!(
            pairs("I moved to Berlin last month."),
            vec![p("home", "Berlin")]
        );
        assert_eq!(
            pairs("I moved from Paris to Berlin last month."),
            vec![p("home", "Paris"), p("home", "Berlin")]
        );
        assert_eq!(
            pairs("We moved to Lyon from Marseille two years ago."),
            vec![p("home", "Marseille"), p("home", "Lyon")]
        );
        assert_eq!(
            pairs("I moved here from Madrid."),
            vec![p("not:home", "Madrid")]
        );
        assert_eq!(text_of("I live in Berlin.", "home"), "You live in Berlin.");
        assert_eq!(
            pairs("I live in Hamburg with my wife and two kids."),
            vec![p("home", "Hamburg")]
        );
    }

    #[test]
    fn negated_and_past_homes() {
        assert_eq!(
            pairs("I don't live in Paris anymore."),
            vec![p("not:home", "Paris")]
        );
        assert_eq!(
            pairs("I no longer live in Paris."),
            vec![p("not:home", "Paris")]
        );
        assert_eq!(
            pairs("I used to live in Rome."),
            vec![p("not:home", "Rome")]
        );
        assert_eq!(
            pairs("I lived in Rome for years."),
            vec![p("not:home", "Rome")]
        );
        assert_eq!(
            text_of("I don't live in Paris anymore.", "not:home"),
            "You no longer live in Paris."
        );
    }

    #[test]
    fn work_and_jobs() {
        assert_eq!(pairs("I work at Siemens."), vec![p("work", "Siemens")]);
        assert_eq!(
            pairs("I work for the council."),
            vec![p("work", "the council")]
        );
        assert_eq!(
            pairs("I work for Siemens as an engineer."),
            vec![p("work", "Siemens"), p("job", "engineer")]
        );
        assert_eq!(pairs("I work as a nurse."), vec![p("job", "nurse")]);
        assert_eq!(pairs("I'm a nurse."), vec![p("job", "nurse")]);
        assert_eq!(
            pairs("I am a retired teacher."),
            vec![p("job", "retired teacher")]
        );
        assert_eq!(pairs("I'm an accountant."), vec![p("job", "accountant")]);
        assert_eq!(pairs("I'm retired."), vec![p("job", "retired")]);
        assert_eq!(pairs("My job is being a chef."), vec![p("job", "chef")]);
        assert_eq!(text_of("I'm a nurse.", "job"), "You are a nurse.");
        assert_eq!(
            text_of("I work as an engineer.", "job"),
            "You work as an engineer."
        );
        assert_eq!(
            text_of("I work for Siemens.", "work"),
            "You work for Siemens."
        );
        assert_eq!(
            pairs("I used to work at Siemens."),
            vec![p("not:work", "Siemens")]
        );
        assert_eq!(
            pairs("I don't work at Siemens anymore."),
            vec![p("not:work", "Siemens")]
        );
        assert_eq!(
            pairs("I used to be a teacher."),
            vec![p("not:job", "teacher")]
        );
        assert_eq!(
            pairs("I've been working at the hospital for five years as a nurse."),
            vec![p("work", "the hospital"), p("job", "nurse")]
        );
        assert_eq!(
            pairs("I'm a software engineer at Google."),
            vec![p("job", "software engineer"), p("work", "Google")]
        );
    }

    #[test]
    fn not_every_im_a_is_a_job() {
        for s in [
            "I'm a bit tired.",
            "I'm a customer of yours.",
            "I'm a big mess today.",
            "I'm a vegetarian.",
            "I'm a mother of two.",
        ] {
            assert!(
                !extract(s).iter().any(|e| e.slot == "job"),
                "{s}: {:?}",
                extract(s)
            );
        }
        assert_eq!(pairs("I'm a big fan of jazz."), vec![p("likes", "jazz")]);
    }

    #[test]
    fn likes_and_dislikes() {
        assert_eq!(pairs("I like coffee."), vec![p("likes", "coffee")]);
        assert_eq!(
            pairs("I really love hiking in the Alps."),
            vec![p("likes", "hiking in the Alps")]
        );
        assert_eq!(pairs("I enjoy cooking."), vec![p("likes", "cooking")]);
        assert_eq!(pairs("I love to swim."), vec![p("likes", "to swim")]);
        assert_eq!(
            pairs("My favourite food is pizza."),
            vec![p("likes", "pizza")]
        );
        assert_eq!(
            text_of("My favourite food is pizza.", "likes"),
            "Your favourite food is pizza."
        );
        assert_eq!(pairs("I'm into jazz these days."), vec![p("likes", "jazz")]);
        assert_eq!(
            pairs("I don't like coffee anymore."),
            vec![p("dislikes", "coffee")]
        );
        assert_eq!(pairs("I hate mushrooms."), vec![p("dislikes", "mushrooms")]);
        assert_eq!(
            pairs("I can't stand traffic."),
            vec![p("dislikes", "traffic")]
        );
        assert_eq!(
            pairs("I like tea but I don't like coffee."),
            vec![p("likes", "tea"), p("dislikes", "coffee")]
        );
        assert_eq!(
            text_of("I don't like coffee anymore.", "dislikes"),
            "You don't like coffee."
        );
        assert_eq!(
            pairs("I like cats and love dogs."),
            vec![p("likes", "cats"), p("likes", "dogs")]
        );
    }

    #[test]
    fn pronouns_and_requests_are_not_likes() {
        for s in [
            "I like it.",
            "I love you.",
            "I like that idea.",
            "I like to think so.",
        ] {
            assert!(extract(s).is_empty(), "{s}: {:?}", extract(s));
        }
        assert_eq!(
            pairs("I'd like to book an appointment."),
            vec![p("plan", "book an appointment")]
        );
    }

    #[test]
    fn people_by_relation() {
        assert_eq!(
            pairs("My wife is called Anna."),
            vec![p("person:wife", "Anna")]
        );
        assert_eq!(
            pairs("My wife's name is Anna."),
            vec![p("person:wife", "Anna")]
        );
        assert_eq!(
            pairs("My husband is named Tom."),
            vec![p("person:husband", "Tom")]
        );
        assert_eq!(
            pairs("My mum is Margaret."),
            vec![p("person:mother", "Margaret")]
        );
        assert_eq!(
            pairs("My best friend Jake lives nearby."),
            vec![p("person:friend", "Jake")]
        );
        assert_eq!(
            pairs("I have a daughter called Emma."),
            vec![p("person:daughter", "Emma")]
        );
        assert_eq!(
            text_of("My wife is called Anna.", "person:wife"),
            "Your wife is called Anna."
        );
        // "is" + an adjective is not a name.
        assert!(pairs("My wife is sick.").is_empty());
        assert!(pairs("My wife is French.").is_empty());
        assert!(pairs("My son and I went fishing.").is_empty());
    }

    #[test]
    fn pets() {
        assert_eq!(pairs("I have a dog called Rex."), vec![p("pet", "Rex")]);
        assert_eq!(
            pairs("I've got a little cat named Luna."),
            vec![p("pet", "Luna")]
        );
        assert_eq!(pairs("My dog's name is Bella."), vec![p("pet", "Bella")]);
        assert_eq!(pairs("We have two cats."), vec![p("pet", "two cats")]);
        assert_eq!(
            text_of("I have a dog called Rex.", "pet"),
            "You have a dog called Rex."
        );
        assert_eq!(text_of("We have two cats.", "pet"), "You have two cats.");
    }

    #[test]
    fn plans_and_open_requests() {
        assert_eq!(
            pairs("I need to call the bank."),
            vec![p("plan", "call the bank")]
        );
        assert_eq!(
            text_of("I need to call my mother.", "plan"),
            "You need to call your mother."
        );
        assert_eq!(
            pairs("I want to learn Spanish."),
            vec![p("plan", "learn Spanish")]
        );
        assert_eq!(pairs("Remind me to buy milk."), vec![p("plan", "buy milk")]);
        assert_eq!(
            text_of("Can you remind me to buy milk?", "plan"),
            "You asked to be reminded to buy milk."
        );
        assert_eq!(
            pairs("I have an appointment with the dentist on Thursday."),
            vec![p("plan", "an appointment with the dentist on Thursday")]
        );
        assert_eq!(
            text_of(
                "I have an appointment with the dentist on Thursday.",
                "plan"
            ),
            "You have an appointment with the dentist on Thursday."
        );
        assert_eq!(
            pairs("I'm going to Rome next week."),
            vec![p("plan", "going to Rome next week")]
        );
        assert_eq!(
            pairs("I'm really excited about my trip to Paris."),
            vec![p("plan", "trip to Paris")]
        );
        assert_eq!(
            text_of("my trip to Paris", "plan"),
            "You have a trip to Paris."
        );
        assert_eq!(
            pairs("I need a new passport."),
            vec![p("plan", "a new passport")]
        );
        assert_eq!(
            text_of("I'm planning a trip to Japan in April.", "plan"),
            "You are planning a trip to Japan in April."
        );
        assert_eq!(
            pairs("I don't need to call the bank anymore."),
            vec![p("not:plan", "call the bank")]
        );
    }

    #[test]
    fn talk_about_the_call_is_no_plan() {
        for s in [
            "I need to ask you something.",
            "I want to know my balance.",
            "I'm going to be honest.",
            "I'm going to tell you a story.",
            "I need to go.",
            "I have to say, that was quick.",
        ] {
            assert!(
                !extract(s).iter().any(|e| e.slot == "plan"),
                "{s}: {:?}",
                extract(s)
            );
        }
    }

    #[test]
    fn birthdays_and_ages() {
        assert_eq!(
            pairs("My birthday is on the 5th of May."),
            vec![p("birthday", "the 5th of May")]
        );
        assert_eq!(
            pairs("I was born on 12 March 1980."),
            vec![p("birthday", "12 March 1980")]
        );
        assert_eq!(pairs("I was born in 1980."), vec![p("birth_year", "1980")]);
        assert_eq!(pairs("I was born in Lyon."), vec![p("birthplace", "Lyon")]);
        assert_eq!(pairs("I'm 45 years old."), vec![p("age", "45")]);
        assert_eq!(pairs("I'm 34."), vec![p("age", "34")]);
        assert!(pairs("My birthday is next week.").is_empty());
        assert_eq!(
            text_of("My birthday is May 5th.", "birthday"),
            "Your birthday is May 5th."
        );
    }

    #[test]
    fn values_are_trimmed_and_capped() {
        assert_eq!(
            pairs("I live in Berlin now, actually."),
            vec![p("home", "Berlin")]
        );
        assert_eq!(
            pairs("I like coffee these days!"),
            vec![p("likes", "coffee")]
        );
        assert_eq!(
            pairs("I live in Berlin since 2019."),
            vec![p("home", "Berlin")]
        );
        let long = pairs("I need to fix the old blue fence at the very back of our garden soon");
        assert_eq!(long.len(), 1);
        assert_eq!(long[0].1.split_whitespace().count(), MAX_VALUE_WORDS);
        assert_eq!(long[0].1, "fix the old blue fence at the very");
        // Values with words put before them are capped as a whole.
        for said in [
            "I'm going to Rome next week with my two sisters and their kids",
            "I'm moving to a small village near the coast of Cornwall in June",
            "My trip to the mountains of northern Italy with all my old friends",
        ] {
            let got = pairs(said);
            assert_eq!(got.len(), 1, "{said}");
            let words = got[0].1.split_whitespace().count();
            assert!(words <= MAX_VALUE_WORDS, "{said}: {:?}", got[0].1);
            assert!(words >= MAX_VALUE_WORDS - 1, "{said}: {:?}", got[0].1);
        }
    }

    #[test]
    fn curly_apostrophes_and_odd_input_do_not_panic() {
        assert_eq!(
            pairs("I’m Daniel and I don’t like tea."),
            vec![p("name", "Daniel"), p("dislikes", "tea")]
        );
        for s in [
            "",
            " ",
            "...",
            "I",
            "my",
            "my name is",
            "I'm",
            "I live in",
            "I moved from",
            "'s",
            "n't",
            "I’",
            "ünïcödé 日本語 I like ☕.",
            "I like ☕",
            "My name is Ångström.",
            "I'm Élodie.",
            "remind me to",
            "call me",
            "this is",
            "I have a",
            "my wife is",
            "I moved from Paris to",
            "İ'M İSTANBUL",
            "a\u{0301}n't",
            "I was born in",
            "my trip",
        ] {
            let _ = extract(s);
            let _ = question_slot(s);
        }
        assert_eq!(pairs("I'm Élodie."), vec![p("name", "Élodie")]);
        assert!(pairs("I like ☕").is_empty(), "nothing nameable");
        assert_eq!(pairs("I like 寿司."), vec![p("likes", "寿司")]);
    }

    #[test]
    fn random_fragment_soup_never_panics() {
        // Pattern words, punctuation and multi-byte text in random orders: every prefix
        // and combination must be handled without a panic.
        let pieces = [
            "I",
            "I'm",
            "my",
            "name",
            "is",
            "'s",
            "n't",
            "don't",
            "live",
            "in",
            "moved",
            "from",
            "to",
            "work",
            "at",
            "as",
            "a",
            "an",
            "like",
            "love",
            "wife",
            "called",
            "dog",
            "have",
            "got",
            "need",
            "remind",
            "me",
            "call",
            "this",
            "it's",
            "born",
            "on",
            "was",
            "used",
            "and",
            "but",
            ",",
            ".",
            "?",
            "’",
            "Ünïcode",
            "日本語",
            "é",
            "İ",
            "Berlin",
            "Anna",
            "45",
            "years",
            "old",
            "appointment",
            "trip",
            "going",
            "favourite",
            "moving",
            "next",
            "week",
            "Rome",
            "the",
            "blue",
            "fence",
            "by",
            "river",
            "'",
            "-",
            "—",
            "...",
            "",
            " ",
        ];
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..3000 {
            let n = (next() % 16) as usize;
            let mut text = String::new();
            for _ in 0..n {
                let piece = pieces[(next() % pieces.len() as u64) as usize];
                // Sometimes glue pieces together with no space.
                if next() % 4 != 0 {
                    text.push(' ');
                }
                text.push_str(piece);
            }
            for e in extract(&text) {
                assert!(!e.slot.is_empty() && !e.value.is_empty() && e.text.ends_with('.'));
                assert!(
                    e.value.split_whitespace().count() <= MAX_VALUE_WORDS,
                    "{text}"
                );
            }
            let _ = question_slot(&text);
            let t = turn("c/0", 1, Speaker::Caller, &text);
            let new = consolidate_turns("alice", &[&t]);
            let mut existing = Vec::new();
            resolve(&mut existing, new);
        }
    }

    #[test]
    fn single_and_multi_valued_slots() {
        for s in [
            "name",
            "home",
            "work",
            "job",
            "birthday",
            "person:wife",
            "person:boss",
        ] {
            assert!(is_single_valued(s), "{s}");
        }
        for s in [
            "likes",
            "dislikes",
            "plan",
            "pet",
            "person:friend",
            "person:son",
            "not:home",
        ] {
            assert!(!is_single_valued(s), "{s}");
        }
        assert_eq!(opposite("likes"), "dislikes");
        assert_eq!(opposite("dislikes"), "likes");
        assert_eq!(opposite("home"), "not:home");
        assert_eq!(opposite("not:plan"), "plan");
    }

    #[test]
    fn normalised_values_ignore_case_articles_and_punctuation() {
        assert_eq!(normalise("The Bank."), "bank");
        assert_eq!(normalise("a nurse"), normalise("Nurse"));
        assert_eq!(normalise("  Berlin!! "), "berlin");
        assert_ne!(normalise("Paris"), normalise("Berlin"));
    }

    #[test]
    fn duplicates_merge_provenance() {
        let mut existing = vec![fact("home@1", "home", "Berlin", 1, "c1/0")];
        let changed = resolve(
            &mut existing,
            vec![fact("home@5", "home", "berlin.", 5, "c2/3")],
        );
        assert_eq!(existing.len(), 1, "no second row");
        assert_eq!(existing[0].source_turns, vec!["c1/0", "c2/3"]);
        assert_eq!(existing[0].unix_ms, 5, "last mentioned now");
        assert_eq!(existing[0].id, "home@1");
        assert_eq!(changed, existing);
        // The same again changes nothing.
        let changed = resolve(
            &mut existing,
            vec![fact("home@5", "home", "Berlin", 5, "c2/3")],
        );
        assert!(changed.is_empty());
    }

    #[test]
    fn a_new_single_value_supersedes_the_old() {
        let mut existing = vec![
            fact("home@1", "home", "Paris", 1, "c1/0"),
            fact("likes@1", "likes", "tea", 1, "c1/1"),
        ];
        let changed = resolve(
            &mut existing,
            vec![fact("home@9", "home", "Berlin", 9, "c2/0")],
        );
        assert_eq!(existing.len(), 3);
        assert_eq!(existing[0].superseded_by.as_deref(), Some("home@9"));
        assert!(existing[1].in_force(), "other slots untouched");
        assert!(existing[2].in_force());
        let ids: Vec<&str> = changed.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(ids, vec!["home@1", "home@9"]);
        let now: Vec<&str> = in_force(&existing, "home")
            .iter()
            .map(|f| f.value.as_str())
            .collect();
        assert_eq!(now, vec!["Berlin"]);
        let before: Vec<&str> = history(&existing, "home")
            .iter()
            .map(|f| f.value.as_str())
            .collect();
        assert_eq!(before, vec!["Paris"]);
    }

    #[test]
    fn multi_valued_slots_accumulate() {
        let mut existing = vec![fact("likes@1", "likes", "tea", 1, "c1/0")];
        resolve(
            &mut existing,
            vec![fact("likes@2", "likes", "jazz", 2, "c1/1")],
        );
        let values: Vec<&str> = in_force(&existing, "likes")
            .iter()
            .map(|f| f.value.as_str())
            .collect();
        assert_eq!(values, vec!["tea", "jazz"]);
    }

    #[test]
    fn negations_supersede_the_matching_fact_only() {
        let mut existing = vec![
            fact("likes@1", "likes", "coffee", 1, "c1/0"),
            fact("likes@2", "likes", "tea", 2, "c1/1"),
            fact("home@1", "home", "Paris", 1, "c1/2"),
        ];
        let changed = resolve(
            &mut existing,
            vec![
                fact("dislikes@5", "dislikes", "coffee", 5, "c2/0"),
                fact("not:home@5", "not:home", "Paris", 5, "c2/1"),
            ],
        );
        assert_eq!(existing[0].superseded_by.as_deref(), Some("dislikes@5"));
        assert!(existing[1].in_force(), "tea still liked");
        assert_eq!(existing[2].superseded_by.as_deref(), Some("not:home@5"));
        assert_eq!(changed.len(), 4);
        assert!(in_force(&existing, "home").is_empty());
        // Liking it again supersedes the dislike.
        resolve(
            &mut existing,
            vec![fact("likes@9", "likes", "Coffee", 9, "c3/0")],
        );
        assert_eq!(existing[3].superseded_by.as_deref(), Some("likes@9"));
        let liked: Vec<&str> = in_force(&existing, "likes")
            .iter()
            .map(|f| f.value.as_str())
            .collect();
        assert_eq!(liked, vec!["tea", "Coffee"]);
    }

    #[test]
    fn a_late_older_fact_is_stored_as_history() {
        let mut existing = vec![fact("home@9", "home", "Berlin", 9, "c2/0")];
        resolve(
            &mut existing,
            vec![fact("home@1", "home", "Paris", 1, "c1/0")],
        );
        assert!(existing[0].in_force());
        assert_eq!(existing[1].superseded_by.as_deref(), Some("home@9"));
    }

    #[test]
    fn other_callers_are_never_touched_and_ids_stay_unique() {
        let mut bob = fact("home@1", "home", "Oslo", 1, "b/0");
        bob.caller = "bob".into();
        let mut existing = vec![bob];
        resolve(
            &mut existing,
            vec![fact("home@1", "home", "Rome", 1, "a/0")],
        );
        assert!(existing[0].in_force());
        assert_eq!(existing[1].id, "home@1#2", "a taken id gets a suffix");
        // Empty values are ignored.
        let changed = resolve(
            &mut existing,
            vec![fact("home@3", "home", " ... ", 3, "a/1")],
        );
        assert!(changed.is_empty());
        assert_eq!(existing.len(), 2);
    }

    #[test]
    fn moving_back_is_a_new_fact_not_a_merge_into_history() {
        let mut existing = Vec::new();
        resolve(
            &mut existing,
            vec![fact("home@1", "home", "Paris", 1, "t1")],
        );
        resolve(
            &mut existing,
            vec![fact("home@2", "home", "Berlin", 2, "t2")],
        );
        resolve(
            &mut existing,
            vec![fact("home@3", "home", "Paris", 3, "t3")],
        );
        assert_eq!(existing.len(), 3);
        assert_eq!(in_force(&existing, "home")[0].id, "home@3");
        let before: Vec<&str> = history(&existing, "home")
            .iter()
            .map(|f| f.id.as_str())
            .collect();
        assert_eq!(before, vec!["home@1", "home@2"]);
    }

    #[test]
    fn history_includes_used_to_facts() {
        let facts = vec![
            fact("home@5", "home", "Berlin", 5, "t2"),
            fact("not:home@3", "not:home", "Rome", 3, "t1"),
        ];
        let before: Vec<&str> = history(&facts, "home")
            .iter()
            .map(|f| f.value.as_str())
            .collect();
        assert_eq!(before, vec!["Rome"]);
        assert_eq!(in_force(&facts, "home").len(), 1);
    }

    #[test]
    fn person_answers_every_relation() {
        let facts = vec![
            fact("person:wife@1", "person:wife", "Anna", 1, "t"),
            fact("person:son@2", "person:son", "Tom", 2, "t"),
            fact("personal@2", "personal", "x", 2, "t"),
        ];
        assert_eq!(in_force(&facts, "person").len(), 2);
        assert_eq!(in_force(&facts, "person:wife").len(), 1);
    }

    #[test]
    fn questions_name_their_slot() {
        let q = question_slot;
        let yes = |slot: &str, h: bool| Some((slot.to_string(), h));
        assert_eq!(q("Where do I live?"), yes("home", false));
        assert_eq!(q("Where did I live before?"), yes("home", true));
        assert_eq!(q("Where did I use to live?"), yes("home", true));
        assert_eq!(q("What's my name?"), yes("name", false));
        assert_eq!(q("Do you remember my name?"), yes("name", false));
        assert_eq!(q("Who am I?"), yes("name", false));
        assert_eq!(q("Where do I work?"), yes("work", false));
        assert_eq!(q("Who did I work for before?"), yes("work", true));
        assert_eq!(q("What's my job?"), yes("job", false));
        assert_eq!(q("What do I do for a living?"), yes("job", false));
        assert_eq!(q("What do I like?"), yes("likes", false));
        assert_eq!(q("What food don't I like?"), yes("dislikes", false));
        assert_eq!(q("What's my wife's name?"), yes("person:wife", false));
        assert_eq!(q("Do you remember my mum?"), yes("person:mother", false));
        assert_eq!(q("What's my dog called?"), yes("pet", false));
        assert_eq!(q("What was I planning?"), yes("plan", false));
        assert_eq!(q("When is my appointment?"), yes("plan", false));
        assert_eq!(q("When is my birthday?"), yes("birthday", false));
        assert_eq!(q("How old am I?"), yes("age", false));
        assert_eq!(q("Where am I from?"), yes("from", false));
    }

    #[test]
    fn statements_and_other_people_are_not_questions_about_a_slot() {
        assert_eq!(question_slot("I live in Berlin."), None);
        assert_eq!(question_slot("Remind me to call the bank."), None);
        assert_eq!(question_slot("Where does the president live?"), None);
        assert_eq!(question_slot("What's the weather like today?"), None);
        assert_eq!(question_slot(""), None);
    }

    #[test]
    fn extracted_values_answer_the_matching_questions() {
        // What extract writes, question_slot must find.
        let cases = [
            ("I live in Berlin.", "Where do I live?"),
            ("My name is Daniel.", "What's my name?"),
            ("I work at Siemens.", "Where do I work?"),
            ("I like jazz.", "What do I like?"),
            ("My wife is called Anna.", "What's my wife's name?"),
            ("I need to call the bank.", "What was I planning to do?"),
            ("My birthday is on 5 May.", "When's my birthday?"),
            ("I have a dog called Rex.", "What's my dog's name?"),
        ];
        for (said, asked) in cases {
            let slot = question_slot(asked).map(|(s, _)| s);
            let found = extract(said).into_iter().map(|e| e.slot).next();
            assert_eq!(slot, found, "{said} / {asked}");
        }
    }

    #[test]
    fn consolidation_takes_caller_turns_only() {
        let t1 = turn(
            "c1/0",
            1000,
            Speaker::Caller,
            "Hi, my name is Daniel and I live in Paris.",
        );
        let t2 = turn(
            "c1/1",
            2000,
            Speaker::Agent,
            "Nice to meet you. I live in the cloud.",
        );
        let t3 = turn(
            "c1/2",
            3000,
            Speaker::Caller,
            "I moved from Paris to Berlin last month.",
        );
        let facts = consolidate_turns("alice", &[&t1, &t2, &t3]);
        let got: Vec<(&str, &str, &str)> = facts
            .iter()
            .map(|f| (f.id.as_str(), f.slot.as_str(), f.value.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("name@1000", "name", "Daniel"),
                ("home@1000", "home", "Paris"),
                ("home@3000", "home", "Berlin"),
            ],
            "Paris said again in t3 merges into t1's Paris"
        );
        assert_eq!(facts[1].source_turns, vec!["c1/0", "c1/2"]);
        assert!(facts
            .iter()
            .all(|f| f.caller == "alice" && f.embedding.is_empty()));
        assert!(facts.iter().all(|f| f.superseded_by.is_none()));

        // Folded in, Berlin is in force and Paris is history.
        let mut existing = Vec::new();
        resolve(&mut existing, facts);
        assert_eq!(in_force(&existing, "home")[0].value, "Berlin");
        assert_eq!(history(&existing, "home")[0].value, "Paris");
    }

    #[test]
    fn consolidation_ids_are_distinct_within_a_turn() {
        let t = turn("c1/0", 7, Speaker::Caller, "I like tea and I like jazz.");
        let facts = consolidate_turns("alice", &[&t]);
        let ids: Vec<&str> = facts.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(ids, vec!["likes@7", "likes@7#2"]);
        assert_eq!(facts[0].unix_ms, 7);
        assert_eq!(facts[0].source_turns, vec!["c1/0"]);
    }

    #[test]
    fn consolidation_keeps_a_change_of_mind_in_order() {
        let t1 = turn("c1/0", 1, Speaker::Caller, "I like coffee.");
        let t2 = turn(
            "c1/1",
            2,
            Speaker::Caller,
            "Actually I don't like coffee anymore.",
        );
        let t3 = turn("c1/2", 3, Speaker::Caller, "No wait, I like coffee.");
        let facts = consolidate_turns("alice", &[&t1, &t2, &t3]);
        assert_eq!(facts.len(), 3, "the third is not merged across the dislike");
        let mut existing = Vec::new();
        resolve(&mut existing, facts);
        let liked: Vec<&str> = in_force(&existing, "likes")
            .iter()
            .map(|f| f.id.as_str())
            .collect();
        assert_eq!(liked, vec!["likes@3"]);
        assert!(in_force(&existing, "dislikes").is_empty());
    }
}

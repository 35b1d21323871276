//! The built-in offline responder: deterministic, memory-aware replies with no model.
//!
//! It is the default when no language-model endpoint is configured and the fallback when
//! the endpoint fails. It greets, learns the caller's name, says back what it heard,
//! answers "what did I tell you last time?" from memory and ends the call on "bye".

use crate::stage::{GenerateRequest, Recollection, Remembered, RememberedFact, Role};
use crate::text;

/// The greeting for a first-time caller. Fixed, so it can be synthesized once and cached.
pub const NEW_CALLER_GREETING: &str = "Hello! How can I help you today?";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub text: String,
    /// The agent ends the call once this reply has been played.
    pub hang_up: bool,
}

impl Reply {
    fn say(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            hang_up: false,
        }
    }
}

fn asks_name(agent_text: &str) -> bool {
    let w = agent_text.to_lowercase();
    w.contains("your name") && w.contains('?')
}

/// "about X" if the caller said what it was about, else "that <their words turned round>".
fn topic_phrase(said: &str) -> String {
    let turned = text::second_person(said);
    let lower = turned.to_lowercase();
    if let Some(p) = lower
        .find(" about ")
        .or_else(|| lower.starts_with("about ").then_some(0))
    {
        let start = if p == 0 { 0 } else { p + 1 };
        return turned[start..].to_string();
    }
    format!("that {turned}")
}

/// Most of the caller's words the agent says back ("You said ..."): enough to show it
/// heard, short enough that it never reads a long turn (or a transcription loop) back.
const MAX_SAID_BACK_WORDS: usize = 12;

/// The caller's first sentence, if it is short enough to say back.
fn said_back(said: &str) -> Option<&str> {
    let end = said.find(['.', '!', '?']).map_or(said.len(), |i| i + 1);
    let first = said[..end].trim();
    (!first.is_empty() && text::words(first).len() <= MAX_SAID_BACK_WORDS).then_some(first)
}

/// The first words of a call: a returning caller is welcomed by name with the most
/// salient thing from their last call.
pub fn greeting(memory: &Recollection, now_ms: i64) -> String {
    if memory.is_empty() {
        return NEW_CALLER_GREETING.to_string();
    }
    let who = memory
        .name
        .as_deref()
        .map(|n| format!(", {n}"))
        .unwrap_or_default();
    // A call that was only "Bye." left nothing to bring up ("you told me that bye").
    let topic = memory
        .last_topic
        .as_ref()
        .filter(|t| !text::is_goodbye(&t.text));
    match topic {
        Some(topic) => format!(
            "Welcome back{who}! {} you told me {}. How can I help you today?",
            when_said(topic.unix_ms, now_ms, true),
            topic_phrase(&topic.text)
        ),
        None => format!("Welcome back{who}! How can I help you today?"),
    }
}

/// "Last time" for the greeting, else the memory's date ("On Monday", "On 8 May").
fn when_said(unix_ms: i64, now_ms: i64, last_time: bool) -> String {
    if last_time {
        return "Last time".to_string();
    }
    let d = sofia_memory::timecue::describe(unix_ms, now_ms);
    let mut c = d.chars();
    match c.next() {
        Some(f) if d.starts_with("on ") || d == "today" || d == "yesterday" => {
            f.to_uppercase().collect::<String>() + c.as_str()
        }
        _ => format!("On {d}"),
    }
}

/// The best remembered words of the caller from an earlier call.
fn best_caller_memory(request: &GenerateRequest) -> Option<&Remembered> {
    request
        .memory
        .turns
        .iter()
        .filter(|t| t.role == Role::Caller && t.call_id != request.call_id)
        .find(|t| !text::asks_about_last_time(&t.text) && !is_memory_question(&t.text))
}

/// "what did I tell you about X", "do you remember X", "when did I ...": answered from
/// the recalled turns themselves.
fn is_memory_question(said: &str) -> bool {
    let w = said.to_lowercase();
    (w.contains("did i ") && (w.contains("tell you") || w.contains("say") || w.contains("mention")))
        || w.contains("do you remember")
        || w.starts_with("when did i")
        || w.starts_with("remind me what")
}

/// Answers a question about a slot the caller told us ("where do I live?") from facts.
fn answer_from_facts(request: &GenerateRequest, said: &str) -> Option<String> {
    let (slot, wants_history) = sofia_memory::facts::question_slot(said)?;
    let of_slot = |f: &&RememberedFact| f.slot == slot || f.slot.starts_with(&format!("{slot}:"));
    let current: Vec<&RememberedFact> = request
        .memory
        .facts
        .iter()
        .filter(of_slot)
        .filter(|f| !f.superseded)
        .collect();
    let earlier: Vec<&RememberedFact> = request
        .memory
        .facts
        .iter()
        .filter(of_slot)
        .filter(|f| f.superseded)
        .collect();
    if wants_history {
        let before = earlier.iter().max_by_key(|f| f.unix_ms)?;
        let now = current
            .first()
            .map(|f| format!(" Now: {}", f.text))
            .unwrap_or_default();
        return Some(format!("Before that, {}{now}", lower_first(&before.text)));
    }
    let fact = current.first()?;
    Some(fact.text.clone())
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// The reply to the caller's newest turn.
pub fn reply(request: &GenerateRequest) -> Reply {
    let said = text::collapse_repeats(request.caller_text().trim());
    let said = said.as_str();
    let mut name = request.memory.name.clone();
    // Names given earlier in this call count too.
    let mut last_agent = "";
    let mut asked_name_this_call = false;
    let turns = request.history.len();
    for (i, m) in request.history.iter().enumerate() {
        match m.role {
            Role::Agent => {
                last_agent = &m.text;
                asked_name_this_call |= asks_name(&m.text);
            }
            Role::Caller if i + 1 < turns => {
                if let Some(n) = text::extract_name(&m.text, asks_name(last_agent)) {
                    name = Some(n);
                }
            }
            Role::Caller => {}
        }
    }
    let name_suffix = name
        .as_deref()
        .map(|n| format!(", {n}"))
        .unwrap_or_default();

    if said.is_empty() {
        return Reply::say("Sorry, I didn't catch that. Could you say it again?");
    }
    if let Some(digits) = said
        .strip_prefix("[DTMF ")
        .and_then(|s| s.strip_suffix(']'))
    {
        return Reply::say(format!("You pressed {digits}."));
    }
    if text::is_goodbye(said) {
        return Reply {
            text: format!("Goodbye{name_suffix}! Thanks for calling."),
            hang_up: true,
        };
    }
    if text::asks_own_name(said) {
        return Reply::say(match &name {
            Some(n) => format!("Your name is {n}."),
            None => "You haven't told me your name yet. What is it?".to_string(),
        });
    }
    if let Some(answer) = answer_from_facts(request, said) {
        return Reply::say(answer);
    }
    if text::asks_about_last_time(said) {
        return Reply::say(match &request.memory.last_topic {
            Some(topic) => format!("Last time you told me {}.", topic_phrase(&topic.text)),
            None => match best_caller_memory(request) {
                Some(t) => format!(
                    "{} you told me {}.",
                    when_said(t.unix_ms, request.unix_ms, false),
                    topic_phrase(&t.text)
                ),
                None => "I don't have anything from an earlier call with you yet.".to_string(),
            },
        });
    }
    if is_memory_question(said) {
        return Reply::say(match best_caller_memory(request) {
            Some(t) => format!(
                "{} you told me {}.",
                when_said(t.unix_ms, request.unix_ms, false),
                topic_phrase(&t.text)
            ),
            None => "I don't remember you telling me about that.".to_string(),
        });
    }
    if let Some(name) = text::extract_name(said, asks_name(last_agent)) {
        return Reply::say(format!("Nice to meet you, {name}! How can I help you?"));
    }
    if text::is_presence_check(said) {
        return Reply::say(format!("Yes, I'm here{name_suffix}. How can I help you?"));
    }
    if text::is_question(said) {
        let noted = "I can't look that up right now, but I've noted your question.";
        return Reply::say(match said_back(said) {
            Some(asked) => format!(
                "You asked: {}? {noted}",
                asked.trim_end_matches(['?', '.', '!'])
            ),
            None => noted.to_string(),
        });
    }
    let restated = match said_back(said) {
        Some(first) => format!("You said {}.", text::second_person(first)),
        None => "Got it.".to_string(),
    };
    if name.is_none() && !asked_name_this_call {
        return Reply::say(format!(
            "{restated} I'll remember that. By the way, what's your name?"
        ));
    }
    Reply::say(format!(
        "{restated} I'll remember that{name_suffix}. Is there anything else?"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::Message;

    const DAY: i64 = 86_400_000;
    /// Thursday 1 June 2023, noon UTC.
    const NOW: i64 = 1_685_620_800_000;

    fn said(text: &str, days_ago: i64) -> Remembered {
        Remembered {
            role: Role::Caller,
            text: text.into(),
            unix_ms: NOW - days_ago * DAY,
            call_id: "a".into(),
            score: 1.0,
        }
    }

    fn fact(slot: &str, value: &str, text: &str, superseded: bool) -> RememberedFact {
        RememberedFact {
            slot: slot.into(),
            value: value.into(),
            text: text.into(),
            unix_ms: NOW - 3 * DAY,
            superseded,
        }
    }

    fn request(memory: Recollection, history: &[(Role, &str)]) -> GenerateRequest {
        GenerateRequest {
            caller: "1001".into(),
            call_id: "b".into(),
            unix_ms: NOW,
            memory,
            history: history
                .iter()
                .map(|(role, text)| Message {
                    role: *role,
                    text: (*text).into(),
                })
                .collect(),
        }
    }

    #[test]
    fn greets_new_and_returning_callers() {
        assert_eq!(greeting(&Recollection::default(), NOW), NEW_CALLER_GREETING);
        let memory = Recollection {
            name: Some("Ada".into()),
            last_topic: Some(said("I need to fix my bike before Saturday.", 2)),
            ..Recollection::default()
        };
        assert_eq!(
            greeting(&memory, NOW),
            "Welcome back, Ada! Last time you told me that you need to fix your bike before Saturday. How can I help you today?"
        );
    }

    #[test]
    fn a_goodbye_is_not_brought_up_as_the_last_topic() {
        let memory = Recollection {
            last_topic: Some(said("Thank you, bye.", 1)),
            ..Recollection::default()
        };
        assert_eq!(
            greeting(&memory, NOW),
            "Welcome back! How can I help you today?"
        );
    }

    #[test]
    fn restates_asks_name_and_answers_from_memory() {
        let r = reply(&request(
            Recollection::default(),
            &[(Role::Caller, "I am calling about my broken printer.")],
        ));
        assert_eq!(
            r.text,
            "You said you are calling about your broken printer. I'll remember that. By the way, what's your name?"
        );
        let r = reply(&request(
            Recollection::default(),
            &[(Role::Agent, r.text.as_str()), (Role::Caller, "Grace.")],
        ));
        assert_eq!(r.text, "Nice to meet you, Grace! How can I help you?");

        let memory = Recollection {
            last_topic: Some(said("I am calling about my broken printer.", 7)),
            ..Recollection::default()
        };
        let r = reply(&request(
            memory,
            &[(Role::Caller, "What did I tell you last time?")],
        ));
        assert_eq!(r.text, "Last time you told me about your broken printer.");
    }

    #[test]
    fn answers_what_did_i_tell_you_from_the_recalled_turn_with_its_date() {
        let memory = Recollection {
            turns: vec![
                said("The plumber is coming on Thursday to fix the sink.", 3),
                said("I like tea.", 1),
            ],
            ..Recollection::default()
        };
        let r = reply(&request(
            memory,
            &[(Role::Caller, "What did I tell you about the plumber?")],
        ));
        assert_eq!(
            r.text,
            "On Monday you told me that the plumber is coming on Thursday to fix the sink."
        );
        let r = reply(&request(
            Recollection::default(),
            &[(Role::Caller, "What did I tell you about the plumber?")],
        ));
        assert_eq!(r.text, "I don't remember you telling me about that.");
    }

    #[test]
    fn answers_where_i_live_from_the_fact_in_force_and_before_from_the_superseded_one() {
        let memory = Recollection {
            facts: vec![
                fact("home", "Berlin", "You live in Berlin.", false),
                fact("home", "Paris", "You lived in Paris.", true),
            ],
            ..Recollection::default()
        };
        let r = reply(&request(
            memory.clone(),
            &[(Role::Caller, "Where do I live?")],
        ));
        assert_eq!(r.text, "You live in Berlin.");
        let r = reply(&request(
            memory,
            &[(Role::Caller, "Where did I live before?")],
        ));
        assert_eq!(
            r.text,
            "Before that, you lived in Paris. Now: You live in Berlin."
        );
    }

    #[test]
    fn answers_presence_checks_and_notes_questions() {
        let r = reply(&request(
            Recollection::default(),
            &[(Role::Caller, "Are you there?")],
        ));
        assert_eq!(r.text, "Yes, I'm here. How can I help you?");
        let r = reply(&request(
            Recollection::default(),
            &[(Role::Caller, "When do you open on Sunday?")],
        ));
        assert_eq!(
            r.text,
            "You asked: When do you open on Sunday? I can't look that up right now, but I've noted your question."
        );
    }

    #[test]
    fn says_goodbye_and_hangs_up() {
        for said in [
            "Bye!",
            "Bye.",
            "Goodbye.",
            "Thank you, bye.",
            "Okay, bye then.",
            "Goodbye Goodbye Goodbye Goodbye Goodbye Goodbye Goodbye Goodbye Goodbye",
        ] {
            let r = reply(&request(Recollection::default(), &[(Role::Caller, said)]));
            assert!(r.hang_up, "{said:?} did not end the call: {r:?}");
            assert_eq!(r.text, "Goodbye! Thanks for calling.");
        }
    }

    #[test]
    fn never_reads_a_long_turn_back() {
        let answer = |said: &str| reply(&request(Recollection::default(), &[(Role::Caller, said)]));
        let long = "I would like to book a table for six people on Friday evening \
                    at eight near the window because it is my mother's birthday";
        assert_eq!(
            answer(long).text,
            "Got it. I'll remember that. By the way, what's your name?"
        );
        for (said, starts) in [
            // A loop is said back once.
            (
                "I need a taxi. I need a taxi. I need a taxi. I need",
                "You said you need a taxi. ",
            ),
            // Only the first sentence.
            (
                "When do you open? I also wanted to ask about parking.",
                "You asked: When do you open? ",
            ),
        ] {
            let r = answer(said);
            assert!(r.text.starts_with(starts), "{said:?}: {}", r.text);
        }
    }
}

//! The built-in offline responder: deterministic, memory-aware replies with no model.
//!
//! It is the default when no language-model endpoint is configured and the fallback when
//! the endpoint fails. It greets, learns the caller's name, says back what it heard,
//! answers "what did I tell you last time?" from memory and ends the call on "bye".

use crate::stage::{GenerateRequest, Role, TurnRecord};
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

/// What the responder knows about a caller, distilled from remembered turns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallerFacts {
    pub name: Option<String>,
    /// Substantive things the caller said in earlier calls, most recent last.
    pub topics: Vec<String>,
}

impl CallerFacts {
    /// Reads name and topics out of remembered turns (oldest first).
    pub fn from_memory(remembered: &[TurnRecord]) -> Self {
        let mut facts = Self::default();
        let mut last_agent = "";
        for turn in remembered {
            match turn.role {
                Role::Agent => last_agent = &turn.text,
                Role::Caller => {
                    let asked = asks_name(last_agent);
                    if let Some(name) = text::extract_name(&turn.text, asked) {
                        facts.name = Some(name);
                    } else if is_substantive(&turn.text) {
                        facts.topics.push(turn.text.clone());
                    }
                }
            }
        }
        facts
    }
}

fn asks_name(agent_text: &str) -> bool {
    let w = agent_text.to_lowercase();
    w.contains("your name") && w.contains('?')
}

/// Worth remembering as a topic: not a name, a goodbye, a question about memory, a
/// keypress, and at least three words.
fn is_substantive(text: &str) -> bool {
    !text::is_goodbye(text)
        && !text::asks_about_last_time(text)
        && !text::asks_own_name(text)
        && !text.starts_with("[DTMF")
        && text::words(text).len() >= 3
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

/// The first words of a call.
pub fn greeting(remembered: &[TurnRecord]) -> String {
    let facts = CallerFacts::from_memory(remembered);
    let has_history = remembered.iter().any(|t| t.role == Role::Caller);
    if !has_history {
        return NEW_CALLER_GREETING.to_string();
    }
    let who = facts
        .name
        .as_deref()
        .map(|n| format!(", {n}"))
        .unwrap_or_default();
    match facts.topics.last() {
        Some(topic) => format!(
            "Welcome back{who}! Last time you told me {}. How can I help you today?",
            topic_phrase(topic)
        ),
        None => format!("Welcome back{who}! How can I help you today?"),
    }
}

/// The reply to the caller's newest turn.
pub fn reply(request: &GenerateRequest) -> Reply {
    let said = request.caller_text().trim();
    let mut facts = CallerFacts::from_memory(&request.remembered);
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
                    facts.name = Some(n);
                }
            }
            Role::Caller => {}
        }
    }
    let name_suffix = facts
        .name
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
    if text::asks_about_last_time(said) {
        return Reply::say(match facts.topics.as_slice() {
            [] => "I don't have anything from an earlier call with you yet.".to_string(),
            [only] => format!("Last time you told me {}.", topic_phrase(only)),
            [.., before, last] => format!(
                "Last time you told me {}. Before that, you told me {}.",
                topic_phrase(last),
                topic_phrase(before)
            ),
        });
    }
    if text::asks_own_name(said) {
        return Reply::say(match &facts.name {
            Some(n) => format!("Your name is {n}."),
            None => "You haven't told me your name yet. What is it?".to_string(),
        });
    }
    if let Some(name) = text::extract_name(said, asks_name(last_agent)) {
        return Reply::say(format!("Nice to meet you, {name}! How can I help you?"));
    }
    if text::is_presence_check(said) {
        return Reply::say(format!("Yes, I'm here{name_suffix}. How can I help you?"));
    }
    if text::is_question(said) {
        let asked = said.trim_end_matches(['?', '.', '!']);
        return Reply::say(format!(
            "You asked: {asked}? I can't look that up right now, but I've noted your question."
        ));
    }
    let restated = format!("You said {}.", text::second_person(said));
    if facts.name.is_none() && !asked_name_this_call {
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

    fn turn(role: Role, text: &str) -> TurnRecord {
        TurnRecord {
            caller: "1001".into(),
            call_id: "a".into(),
            unix_ms: 0,
            role,
            text: text.into(),
        }
    }

    fn request(remembered: Vec<TurnRecord>, history: &[(Role, &str)]) -> GenerateRequest {
        GenerateRequest {
            caller: "1001".into(),
            call_id: "b".into(),
            remembered,
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
        assert_eq!(greeting(&[]), NEW_CALLER_GREETING);
        let memory = vec![
            turn(Role::Agent, NEW_CALLER_GREETING),
            turn(Role::Caller, "I need to fix my bike before Saturday."),
            turn(Role::Agent, "You said ... By the way, what's your name?"),
            turn(Role::Caller, "Ada."),
        ];
        assert_eq!(
            greeting(&memory),
            "Welcome back, Ada! Last time you told me that you need to fix your bike before Saturday. How can I help you today?"
        );
    }

    #[test]
    fn restates_asks_name_and_answers_from_memory() {
        let r = reply(&request(
            vec![],
            &[(Role::Caller, "I am calling about my broken printer.")],
        ));
        assert_eq!(
            r.text,
            "You said you are calling about your broken printer. I'll remember that. By the way, what's your name?"
        );
        let r = reply(&request(
            vec![],
            &[(Role::Agent, r.text.as_str()), (Role::Caller, "Grace.")],
        ));
        assert_eq!(r.text, "Nice to meet you, Grace! How can I help you?");

        let memory = vec![turn(Role::Caller, "I am calling about my broken printer.")];
        let r = reply(&request(
            memory,
            &[(Role::Caller, "What did I tell you last time?")],
        ));
        assert_eq!(r.text, "Last time you told me about your broken printer.");
    }

    #[test]
    fn answers_presence_checks_and_notes_questions() {
        let r = reply(&request(vec![], &[(Role::Caller, "Are you there?")]));
        assert_eq!(r.text, "Yes, I'm here. How can I help you?");
        let r = reply(&request(
            vec![],
            &[(Role::Caller, "When do you open on Sunday?")],
        ));
        assert_eq!(
            r.text,
            "You asked: When do you open on Sunday? I can't look that up right now, but I've noted your question."
        );
    }

    #[test]
    fn says_goodbye_and_hangs_up() {
        let r = reply(&request(vec![], &[(Role::Caller, "Bye!")]));
        assert!(r.hang_up);
        assert_eq!(r.text, "Goodbye! Thanks for calling.");
    }
}

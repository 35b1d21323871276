//! Parallel forking (RFC 3261 16.7, done by the switch as a B2BUA): one call offered to
//! every contact of a user at once. The first 2xx wins and the others are cancelled;
//! when every branch has failed, one final status is chosen for the caller. A plain
//! value: the shell places the INVITEs and feeds their outcomes in.

use crate::ids::CallHandle;

/// What became of one branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Branch {
    Ringing,
    Failed(u16),
    Answered,
    Cancelled,
}

/// What the shell must do after an outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForkAction {
    /// Nothing yet: other branches are still trying.
    Wait,
    /// This branch answered first: bridge it, and CANCEL these (or BYE, if they answer
    /// too late).
    Connect {
        winner: CallHandle,
        cancel: Vec<CallHandle>,
    },
    /// This branch answered after another won: hang it up.
    HangUp(CallHandle),
    /// Every branch failed: answer the caller with this status.
    Fail(u16),
}

/// The branches of one forked call.
#[derive(Debug, Clone, Default)]
pub struct Fork {
    branches: Vec<(CallHandle, Branch)>,
    winner: Option<CallHandle>,
    done: bool,
}

impl Fork {
    pub fn new(branches: impl IntoIterator<Item = CallHandle>) -> Self {
        Self {
            branches: branches.into_iter().map(|c| (c, Branch::Ringing)).collect(),
            winner: None,
            done: false,
        }
    }

    pub fn contains(&self, call: CallHandle) -> bool {
        self.branches.iter().any(|(c, _)| *c == call)
    }

    pub fn winner(&self) -> Option<CallHandle> {
        self.winner
    }

    fn set(&mut self, call: CallHandle, state: Branch) {
        if let Some(b) = self.branches.iter_mut().find(|(c, _)| *c == call) {
            b.1 = state;
        }
    }

    /// A branch was answered.
    pub fn answered(&mut self, call: CallHandle) -> ForkAction {
        if !self.contains(call) {
            return ForkAction::Wait;
        }
        if self.winner.is_some() || self.done {
            self.set(call, Branch::Cancelled);
            return ForkAction::HangUp(call);
        }
        self.set(call, Branch::Answered);
        self.winner = Some(call);
        self.done = true;
        let cancel = self
            .branches
            .iter_mut()
            .filter(|(c, s)| *c != call && *s == Branch::Ringing)
            .map(|(c, s)| {
                *s = Branch::Cancelled;
                *c
            })
            .collect();
        ForkAction::Connect {
            winner: call,
            cancel,
        }
    }

    /// A branch failed with a final status (408 when it never answered).
    pub fn failed(&mut self, call: CallHandle, status: u16) -> ForkAction {
        if !self.contains(call) || self.done {
            self.set(call, Branch::Failed(status));
            return ForkAction::Wait;
        }
        self.set(call, Branch::Failed(status));
        if self.branches.iter().any(|(_, s)| *s == Branch::Ringing) {
            return ForkAction::Wait;
        }
        self.done = true;
        ForkAction::Fail(self.best_failure())
    }

    /// Ring time is up, or the caller hung up: every branch still ringing is
    /// cancelled. Returns them.
    pub fn give_up(&mut self) -> Vec<CallHandle> {
        self.done = true;
        self.branches
            .iter_mut()
            .filter(|(_, s)| *s == Branch::Ringing)
            .map(|(c, s)| {
                *s = Branch::Cancelled;
                *c
            })
            .collect()
    }

    /// The status the caller gets when nobody answered (RFC 3261 16.7 step 6, as a
    /// PBX user expects it): a 6xx wins; else busy (486) if any phone was busy, since
    /// "busy" is what the caller can act on; else the lowest 4xx/5xx class seen, with
    /// 408 standing for phones that never answered; 480 when nothing specific is known.
    fn best_failure(&self) -> u16 {
        let statuses: Vec<u16> = self
            .branches
            .iter()
            .filter_map(|(_, s)| match s {
                Branch::Failed(code) => Some(*code),
                _ => None,
            })
            .collect();
        if let Some(six) = statuses.iter().find(|s| (600..700).contains(*s)) {
            return *six;
        }
        if statuses.contains(&486) {
            return 486;
        }
        if !statuses.is_empty() && statuses.iter().all(|s| *s == 408) {
            return 408;
        }
        statuses
            .iter()
            .copied()
            .filter(|s| (400..500).contains(s) && *s != 408 && *s != 487)
            .min()
            .unwrap_or(480)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: CallHandle = CallHandle(1);
    const B: CallHandle = CallHandle(2);
    const C: CallHandle = CallHandle(3);

    #[test]
    fn first_answer_wins_and_the_others_are_cancelled() {
        let mut fork = Fork::new([A, B, C]);
        assert_eq!(fork.failed(C, 486), ForkAction::Wait);
        assert_eq!(
            fork.answered(B),
            ForkAction::Connect {
                winner: B,
                cancel: vec![A]
            }
        );
        // A answers anyway before its CANCEL took: hang it up.
        assert_eq!(fork.answered(A), ForkAction::HangUp(A));
        assert_eq!(fork.winner(), Some(B));
    }

    #[test]
    fn all_busy_is_486_and_nobody_answering_is_408() {
        let mut fork = Fork::new([A, B]);
        assert_eq!(fork.failed(A, 486), ForkAction::Wait);
        assert_eq!(fork.failed(B, 486), ForkAction::Fail(486));
        let mut fork = Fork::new([A, B]);
        fork.failed(A, 408);
        assert_eq!(fork.failed(B, 408), ForkAction::Fail(408));
    }

    #[test]
    fn busy_beats_not_found_and_a_6xx_beats_everything() {
        let mut fork = Fork::new([A, B, C]);
        fork.failed(A, 404);
        fork.failed(B, 486);
        assert_eq!(fork.failed(C, 480), ForkAction::Fail(486));
        let mut fork = Fork::new([A, B]);
        fork.failed(A, 486);
        assert_eq!(fork.failed(B, 603), ForkAction::Fail(603));
    }

    #[test]
    fn giving_up_cancels_whoever_still_rings() {
        let mut fork = Fork::new([A, B]);
        fork.failed(A, 486);
        assert_eq!(fork.give_up(), vec![B]);
        // Outcomes after giving up change nothing.
        assert_eq!(fork.failed(B, 487), ForkAction::Wait);
    }
}

//! The update lifecycle of one model on the device (design brief §4), as a pure state machine:
//! a `match` on (state, event) that returns the next state, and an error for anything else.
//! The store journals each state before its side effects happen, and [`recover`] says what to do
//! with whatever was in flight when the process died.

use std::fmt;

use edgefleet_protocol::message::UpdateState;

/// States an install can be in while it is in flight; each is journaled in SQLite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InstallState {
    /// Files are being written to the staging area.
    Staging,
    /// Files are complete and fsynced in the model store.
    Staged,
    /// The candidate is loaded and its health check is running.
    Checking,
    /// The candidate serves; live traffic decides whether it stays.
    Probation,
}

/// How an install ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The candidate is the active version for good.
    Committed,
    /// The candidate never served; nothing changed for clients.
    Rejected,
    /// The candidate served and was replaced by the previous version.
    RolledBack,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    FilesWritten,
    CheckStarted,
    Activated,
    ProbationPassed,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Continue(InstallState),
    Done(Outcome),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event {event:?} is not allowed in install state {state:?}")]
pub struct IllegalTransition {
    pub state: InstallState,
    pub event: Event,
}

pub fn next(state: InstallState, event: Event) -> Result<Next, IllegalTransition> {
    use Event as E;
    use InstallState as S;
    match (state, event) {
        (S::Staging, E::FilesWritten) => Ok(Next::Continue(S::Staged)),
        (S::Staged, E::CheckStarted) => Ok(Next::Continue(S::Checking)),
        (S::Checking, E::Activated) => Ok(Next::Continue(S::Probation)),
        (S::Probation, E::ProbationPassed) => Ok(Next::Done(Outcome::Committed)),
        (S::Staging | S::Staged | S::Checking, E::Failed) => Ok(Next::Done(Outcome::Rejected)),
        (S::Probation, E::Failed) => Ok(Next::Done(Outcome::RolledBack)),
        (state, event) => Err(IllegalTransition { state, event }),
    }
}

/// How the process that left an install in flight ended, as the journal tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interruption {
    /// It was stopped (SIGTERM, a reboot through systemd): it recorded how long probation had
    /// served. Otherwise it died (a crash, a kill, power loss).
    pub stopped_cleanly: bool,
    /// There is a version to go back to.
    pub has_previous: bool,
    /// Times a probation of this install already ended in a crash and was resumed.
    pub crashes: u32,
}

/// What start-up does with an install in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    Finish(Outcome),
    /// The candidate keeps serving and its probation goes on, with the time it already served.
    ResumeProbation,
}

/// A first version whose probation crashed the agent this many times is given up (the device
/// then serves nothing for that model, as it did before the install).
pub const MAX_PROBATION_CRASHES: u32 = 3;

/// What start-up does with an install the journal says was in flight. Before activation the
/// candidate never served, so it is dropped. During probation, a stop is not a failure: probation
/// resumes with the time already served. A crash may have been the candidate's doing, so with a
/// previous version to go back to, that version comes back (the conservative choice: a crash
/// loop on a bad model is worse than a retried update); with none, going back would leave the
/// model unserved, so probation resumes, until crashes show the candidate cannot be kept.
pub fn recover(state: InstallState, how: Interruption) -> Recovery {
    match state {
        InstallState::Staging | InstallState::Staged | InstallState::Checking => {
            Recovery::Finish(Outcome::Rejected)
        }
        InstallState::Probation if how.stopped_cleanly => Recovery::ResumeProbation,
        InstallState::Probation if how.has_previous => Recovery::Finish(Outcome::RolledBack),
        InstallState::Probation if how.crashes + 1 < MAX_PROBATION_CRASHES => {
            Recovery::ResumeProbation
        }
        InstallState::Probation => Recovery::Finish(Outcome::RolledBack),
    }
}

impl InstallState {
    pub const ALL: [InstallState; 4] = [
        InstallState::Staging,
        InstallState::Staged,
        InstallState::Checking,
        InstallState::Probation,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            InstallState::Staging => "staging",
            InstallState::Staged => "staged",
            InstallState::Checking => "checking",
            InstallState::Probation => "probation",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl Outcome {
    pub const ALL: [Outcome; 3] = [Outcome::Committed, Outcome::Rejected, Outcome::RolledBack];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Committed => "committed",
            Outcome::Rejected => "rejected",
            Outcome::RolledBack => "rolled_back",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// What the device tells the server (and its local API's callers) about a model's update, in
/// the protocol's one vocabulary: the install in flight if there is one, else how the last one
/// ended. The journal's own states stay inside the agent; this is where they meet the wire.
pub fn reported_state(install: Option<InstallState>, last: Option<Outcome>) -> UpdateState {
    match (install, last) {
        (Some(InstallState::Staging), _) => UpdateState::Downloading,
        (Some(InstallState::Staged), _) => UpdateState::Staged,
        (Some(InstallState::Checking), _) => UpdateState::HealthChecking,
        (Some(InstallState::Probation), _) => UpdateState::Probation,
        (None, Some(Outcome::Committed)) => UpdateState::Committed,
        (None, Some(Outcome::Rejected)) => UpdateState::Rejected,
        (None, Some(Outcome::RolledBack)) => UpdateState::RolledBack,
        (None, None) => UpdateState::Idle,
    }
}

impl fmt::Display for InstallState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_journal_state_and_outcome_has_one_reported_state() {
        let in_flight: Vec<UpdateState> = InstallState::ALL
            .into_iter()
            .map(|s| reported_state(Some(s), Some(Outcome::Committed)))
            .collect();
        assert_eq!(
            in_flight,
            [
                UpdateState::Downloading,
                UpdateState::Staged,
                UpdateState::HealthChecking,
                UpdateState::Probation
            ],
            "an install in flight wins over the last outcome"
        );
        for outcome in Outcome::ALL {
            assert_eq!(Outcome::parse(outcome.as_str()), Some(outcome));
            let reported = serde_json::to_value(reported_state(None, Some(outcome))).unwrap();
            assert_eq!(
                reported,
                outcome.as_str(),
                "outcomes read the same on the wire"
            );
        }
        assert_eq!(reported_state(None, None), UpdateState::Idle);
    }

    #[test]
    fn the_happy_path_runs_staging_to_committed() {
        let mut state = InstallState::Staging;
        for event in [Event::FilesWritten, Event::CheckStarted, Event::Activated] {
            match next(state, event).unwrap() {
                Next::Continue(s) => state = s,
                Next::Done(o) => panic!("ended early: {o:?}"),
            }
        }
        assert_eq!(state, InstallState::Probation);
        assert_eq!(
            next(state, Event::ProbationPassed),
            Ok(Next::Done(Outcome::Committed))
        );
    }

    #[test]
    fn failure_before_activation_rejects_and_after_it_rolls_back() {
        for s in [
            InstallState::Staging,
            InstallState::Staged,
            InstallState::Checking,
        ] {
            assert_eq!(next(s, Event::Failed), Ok(Next::Done(Outcome::Rejected)));
        }
        assert_eq!(
            next(InstallState::Probation, Event::Failed),
            Ok(Next::Done(Outcome::RolledBack))
        );
    }

    #[test]
    fn recovery_drops_what_never_served_resumes_a_stopped_probation_and_rolls_back_a_crashed_one() {
        let how = |stopped_cleanly, has_previous, crashes| Interruption {
            stopped_cleanly,
            has_previous,
            crashes,
        };
        for s in [
            InstallState::Staging,
            InstallState::Staged,
            InstallState::Checking,
        ] {
            for i in [how(true, true, 0), how(false, false, 0)] {
                assert_eq!(recover(s, i), Recovery::Finish(Outcome::Rejected), "{s}");
            }
        }
        let p = InstallState::Probation;
        // A stop is not a failure, with or without a previous version.
        assert_eq!(recover(p, how(true, true, 0)), Recovery::ResumeProbation);
        assert_eq!(recover(p, how(true, false, 2)), Recovery::ResumeProbation);
        // A crash with somewhere to go back to: back.
        assert_eq!(
            recover(p, how(false, true, 0)),
            Recovery::Finish(Outcome::RolledBack)
        );
        // A first version is not left unserved by a crash, until it keeps crashing.
        assert_eq!(recover(p, how(false, false, 0)), Recovery::ResumeProbation);
        assert_eq!(recover(p, how(false, false, 1)), Recovery::ResumeProbation);
        assert_eq!(
            recover(p, how(false, false, MAX_PROBATION_CRASHES - 1)),
            Recovery::Finish(Outcome::RolledBack)
        );
    }

    #[test]
    fn skipping_a_step_is_an_error() {
        assert!(next(InstallState::Staging, Event::Activated).is_err());
        assert!(next(InstallState::Staged, Event::ProbationPassed).is_err());
        assert!(next(InstallState::Probation, Event::FilesWritten).is_err());
    }

    #[test]
    fn states_round_trip_through_their_names() {
        for s in InstallState::ALL {
            assert_eq!(InstallState::parse(s.as_str()), Some(s));
        }
    }
}

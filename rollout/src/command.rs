//! What an operator may do to a rollout, as one [`Command`]: each applies in some states only,
//! and a refusal says which state the rollout is in.

use crate::{DeviceState, Rollout, RolloutState};

/// An operator's command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Stop notifying devices; what is in flight goes on.
    Pause,
    /// Go on from a pause.
    Resume,
    /// Start the next wave of a rollout that waits for approval.
    Approve,
    /// End the rollout; devices keep what they run.
    Abort,
    /// Send the rollout again to failed, timed-out and rolled-back devices of the waves so far,
    /// resuming a halted rollout at its wave.
    RetryFailed,
}

impl Command {
    pub fn name(self) -> &'static str {
        match self {
            Command::Pause => "pause",
            Command::Resume => "resume",
            Command::Approve => "approve",
            Command::Abort => "abort",
            Command::RetryFailed => "retry-failed",
        }
    }
}

/// Why a command does not apply to the rollout as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("a {state} rollout cannot be paused")]
    CannotPause { state: &'static str },
    #[error("only a paused rollout can be resumed (this one is {state})")]
    NotPaused { state: &'static str },
    #[error("the rollout is {state}, not awaiting approval")]
    NotAwaitingApproval { state: &'static str },
    #[error("the rollout is already {state}")]
    Finished { state: &'static str },
    #[error("a {state} rollout has nothing to retry")]
    NothingToRetry { state: &'static str },
}

/// What a command did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Done,
    /// Devices set to be tried again.
    Retrying(usize),
}

impl Rollout {
    /// Applies `command` by `by` at `now`, noting it in the history.
    pub fn command(&mut self, command: Command, now: i64, by: &str) -> Result<Applied, Refused> {
        let state = self.state.name();
        match (command, &self.state) {
            (
                Command::Pause,
                RolloutState::Running { wave }
                | RolloutState::Baking { wave, .. }
                | RolloutState::AwaitingApproval { wave },
            ) => {
                self.state = RolloutState::Paused { wave: *wave };
                self.note(now, format!("paused by {by}"));
                Ok(Applied::Done)
            }
            (Command::Pause, _) => Err(Refused::CannotPause { state }),
            (Command::Resume, RolloutState::Paused { wave }) => {
                self.state = RolloutState::Running { wave: *wave };
                self.note(now, format!("resumed by {by}"));
                Ok(Applied::Done)
            }
            (Command::Resume, _) => Err(Refused::NotPaused { state }),
            (Command::Approve, RolloutState::AwaitingApproval { wave }) => {
                let wave = *wave;
                self.state = RolloutState::Running { wave: wave + 1 };
                self.approvals.push(crate::Approval {
                    wave: wave + 1,
                    by: by.to_owned(),
                    at: now,
                });
                self.note(now, format!("wave {} approved by {by}", wave + 2));
                Ok(Applied::Done)
            }
            (Command::Approve, _) => Err(Refused::NotAwaitingApproval { state }),
            (Command::Abort, s) if !s.is_active() => Err(Refused::Finished { state }),
            (Command::Abort, _) => {
                self.state = RolloutState::Aborted;
                self.note(now, format!("aborted by {by}; devices keep what they run"));
                Ok(Applied::Done)
            }
            (
                Command::RetryFailed,
                RolloutState::Halted { wave, .. }
                | RolloutState::Running { wave }
                | RolloutState::Paused { wave },
            ) => {
                let wave = *wave;
                let mut count = 0;
                for d in &mut self.devices {
                    if d.wave <= wave && (d.state.failed() || d.state == DeviceState::RolledBack) {
                        d.state = DeviceState::Pending;
                        d.detail = None;
                        count += 1;
                    }
                }
                // Devices of the halted wave that were never notified stay pending too.
                self.state = RolloutState::Running { wave };
                self.note(now, format!("retry of {count} devices by {by}"));
                Ok(Applied::Retrying(count))
            }
            (Command::RetryFailed, _) => Err(Refused::NothingToRetry { state }),
        }
    }
}

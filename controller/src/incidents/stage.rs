//! The stages of an incident (after `../shared/seed/incident-management.txt`) and which moves
//! between them are allowed.
//!
//! Open stages run alert → assessment → collection → analysis → escalation → response →
//! investigation → remediation; an incident ends `closed` or `false_positive`. Within the open
//! stages a responder may move forwards, skip ahead, or go back (more data is often needed after
//! analysis). The rules that protect the record:
//!
//! - `alert` is where an incident starts; nothing moves back into it.
//! - `false_positive` only before anything was done about it (up to `analysis`).
//! - `closed` from `remediation`; from an earlier open stage only when forced, with a reason.
//! - closing (either way) while containment is still active (a host isolated, addresses
//!   blocked) only when forced, with a reason.
//! - a closed incident can be reopened into `assessment` only, with a reason.

pub use cordon_api::incidents::{Stage, UnknownStage};

/// A move the rules refuse, saying which rule and how to get past it where one can.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoveRefused {
    #[error("the incident is already in {0}")]
    Same(Stage),
    #[error("an incident cannot move back to alert (it starts there); move it to assessment")]
    BackToAlert,
    #[error("the incident is {from}; reopen it into assessment (with a reason), not {to}")]
    ReopenElsewhere { from: Stage, to: Stage },
    #[error("reopening a {0} incident needs a reason")]
    ReopenWithoutReason(Stage),
    #[error("an incident in {0} cannot be a false positive: something was already done about it; close it instead")]
    FalsePositiveTooLate(Stage),
    #[error("closing from {0} skips remediation; move it to remediation first, or force it with a reason")]
    CloseEarly(Stage),
    #[error("containment is still active ({0}); release it first, or force with a reason")]
    ContainmentActive(String),
    #[error("forcing a move needs a reason")]
    ForceWithoutReason,
}

/// What the caller asked for besides the target stage.
#[derive(Debug, Clone, Copy, Default)]
pub struct MoveOptions<'a> {
    pub force: bool,
    pub reason: Option<&'a str>,
    /// Containment still active on the incident's hosts, described for humans; None if none.
    pub active_containment: Option<&'a str>,
}

/// Checks a move from `from` to `to`.
pub fn check_move(from: Stage, to: Stage, options: MoveOptions<'_>) -> Result<(), MoveRefused> {
    let reason = options.reason.map(str::trim).filter(|r| !r.is_empty());
    if options.force && reason.is_none() {
        return Err(MoveRefused::ForceWithoutReason);
    }
    if from == to {
        return Err(MoveRefused::Same(from));
    }
    if from.is_closed() {
        if to != Stage::Assessment {
            return Err(MoveRefused::ReopenElsewhere { from, to });
        }
        if reason.is_none() {
            return Err(MoveRefused::ReopenWithoutReason(from));
        }
        return Ok(());
    }
    match to {
        Stage::Alert => Err(MoveRefused::BackToAlert),
        Stage::FalsePositive if from.position() > Stage::Analysis.position() => {
            Err(MoveRefused::FalsePositiveTooLate(from))
        }
        Stage::Closed if from != Stage::Remediation && !options.force => {
            Err(MoveRefused::CloseEarly(from))
        }
        _ => match options.active_containment {
            Some(active) if to.is_closed() && !options.force => {
                Err(MoveRefused::ContainmentActive(active.to_owned()))
            }
            _ => Ok(()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain() -> MoveOptions<'static> {
        MoveOptions::default()
    }

    #[test]
    fn names_round_trip_and_accept_dashes() {
        for stage in Stage::ALL {
            assert_eq!(stage.as_str().parse::<Stage>(), Ok(stage));
        }
        assert_eq!("False-Positive".parse::<Stage>(), Ok(Stage::FalsePositive));
        assert!("triage".parse::<Stage>().is_err());
    }

    #[test]
    fn open_stages_move_freely_but_never_back_to_alert() {
        assert!(check_move(Stage::Alert, Stage::Collection, plain()).is_ok());
        assert!(check_move(Stage::Investigation, Stage::Collection, plain()).is_ok());
        assert_eq!(
            check_move(Stage::Assessment, Stage::Alert, plain()),
            Err(MoveRefused::BackToAlert)
        );
        assert_eq!(
            check_move(Stage::Response, Stage::Response, plain()),
            Err(MoveRefused::Same(Stage::Response))
        );
    }

    #[test]
    fn closing_early_or_with_containment_needs_force_and_reason() {
        assert!(check_move(Stage::Remediation, Stage::Closed, plain()).is_ok());
        assert_eq!(
            check_move(Stage::Response, Stage::Closed, plain()),
            Err(MoveRefused::CloseEarly(Stage::Response))
        );
        let active = MoveOptions {
            active_containment: Some("host-1 isolated"),
            ..plain()
        };
        assert!(matches!(
            check_move(Stage::Remediation, Stage::Closed, active),
            Err(MoveRefused::ContainmentActive(_))
        ));
        let forced_silently = MoveOptions {
            force: true,
            ..active
        };
        assert_eq!(
            check_move(Stage::Remediation, Stage::Closed, forced_silently),
            Err(MoveRefused::ForceWithoutReason)
        );
        let forced = MoveOptions {
            force: true,
            reason: Some("isolation lifts itself in 5 minutes"),
            ..active
        };
        assert!(check_move(Stage::Response, Stage::Closed, forced).is_ok());
    }

    #[test]
    fn false_positive_only_before_response() {
        assert!(check_move(Stage::Analysis, Stage::FalsePositive, plain()).is_ok());
        assert_eq!(
            check_move(Stage::Response, Stage::FalsePositive, plain()),
            Err(MoveRefused::FalsePositiveTooLate(Stage::Response))
        );
    }

    #[test]
    fn reopening_goes_to_assessment_with_a_reason() {
        assert_eq!(
            check_move(Stage::Closed, Stage::Response, plain()),
            Err(MoveRefused::ReopenElsewhere {
                from: Stage::Closed,
                to: Stage::Response
            })
        );
        assert_eq!(
            check_move(Stage::FalsePositive, Stage::Assessment, plain()),
            Err(MoveRefused::ReopenWithoutReason(Stage::FalsePositive))
        );
        let why = MoveOptions {
            reason: Some("seen again"),
            ..plain()
        };
        assert!(check_move(Stage::Closed, Stage::Assessment, why).is_ok());
    }
}

//! The one structured log line per decision (ARCHITECTURE §6): every input and the output, so an
//! operator can replay any decision through `autoscaler simulate` or the policy tests.

use crate::policy::{Decision, Inputs};

/// What the caller did with the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The count already matched.
    None,
    /// The fleet was resized.
    Applied,
    /// `DRY_RUN`: a change was decided but not made.
    DryRun,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Applied => "applied",
            Self::DryRun => "dry_run",
        }
    }
}

/// Logs the decision at info; `mode` is `lambda` or `local`.
pub fn log(mode: &str, inputs: &Inputs<'_>, decision: &Decision, action: Action) {
    emit(mode, inputs, decision, action, false);
}

/// Logs the decision at debug when `quiet` (the local loop, when neither the decision nor
/// its inputs changed since the last interval), else at info.
pub fn emit(mode: &str, inputs: &Inputs<'_>, decision: &Decision, action: Action, quiet: bool) {
    let window = serde_json::to_string(inputs.window).unwrap_or_default();
    macro_rules! line {
        ($level:ident) => {
            tracing::$level!(
                target: "autoscaler::decision",
                mode,
                window = %window,
                window_periods = inputs.window.len(),
                current = inputs.current,
                busy_slots = inputs.busy_slots,
                min = inputs.bounds.min,
                max = inputs.bounds.max,
                slots_per_agent = inputs.bounds.slots_per_agent,
                utilisation_permille = inputs.bounds.utilisation_permille,
                want = decision.want,
                window_want = decision.window_want,
                desired = decision.desired,
                reason = decision.reason.as_str(),
                action = action.as_str(),
                "scaling decision"
            )
        };
    }
    if quiet {
        line!(debug);
    } else {
        line!(info);
    }
}

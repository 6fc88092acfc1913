//! The release queue's state machine, pure: given the queue as it is, who
//! asks and when, each step either says what changes or refuses with the
//! rule it breaks and what to do. Nothing here talks to the host, so every
//! transition and every refusal is tested below.
//!
//! ```text
//! requested ──accept──▶ accepted ──start──▶ started ──finish──▶ finished
//!     │                    │                   │                   │
//!     └──cancel──┐         └──cancel──┐        ├──cancel──┐        │
//!                ▼                    ▼        │          ▼        │
//!            cancelled            cancelled    └─rollback─▶ rolled back ◀─rollback─┘
//! ```
//!
//! `here` (ops) records the admin who takes a release, in any open state.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Waiting for an approver.
    Requested,
    /// Approved, not started.
    Accepted,
    /// Being released; holds its component's lock if the component is
    /// critical.
    Started,
    /// Done.
    Finished,
    /// Ended before or during the release.
    Cancelled,
    /// Undone after it started.
    RolledBack,
}

impl State {
    /// Still in the queue.
    pub fn is_open(self) -> bool {
        matches!(self, State::Requested | State::Accepted | State::Started)
    }

    /// How it reads in replies.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Requested => "requested",
            State::Accepted => "accepted",
            State::Started => "started",
            State::Finished => "finished",
            State::Cancelled => "cancelled",
            State::RolledBack => "rolled back",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One request for permission to release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Its number, in the order requests were made.
    pub n: u64,
    /// The tracker's ticket.
    pub ticket: String,
    /// What is released.
    pub component: String,
    /// Who asked.
    pub initiator: String,
    /// Whether an admin must take it before it starts (`--no-admin` says
    /// not).
    pub needs_admin: bool,
    /// The admin who took it.
    pub admin: Option<String>,
    /// Who accepted it.
    pub approver: Option<String>,
    /// Where it is.
    pub state: State,
}

/// Who is asking, with the roles that matter here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The user id.
    pub user: String,
    /// Holds the approver role.
    pub approver: bool,
    /// Holds the ops role.
    pub ops: bool,
}

/// No release of `component` (or of anything, for `all`) starts before
/// `until_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Freeze {
    /// A component, or `all`.
    pub component: String,
    /// When it ends, ms since the epoch.
    pub until_ms: i64,
    /// Why, as the ops user said.
    pub reason: String,
    /// Who froze it.
    pub by: String,
}

impl Freeze {
    /// Whether it stops `component` at `now_ms`.
    pub fn covers(&self, component: &str, now_ms: i64) -> bool {
        now_ms < self.until_ms && (self.component == "all" || self.component == component)
    }
}

/// The operator's rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// An approver may accept their own request.
    pub self_accept: bool,
    /// Components of which only one release may run at a time.
    pub critical: Vec<String>,
}

/// What one step changes: the request's new state and fields, the lock it
/// takes or frees, and how the change reads on record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The request after the step.
    pub request: Request,
    /// The component whose lock this step takes (start of a critical one).
    pub takes_lock: Option<String>,
    /// The component whose lock this step frees.
    pub frees_lock: Option<String>,
    /// Said on record, e.g. "started with --force past #3".
    pub note: Option<String>,
}

/// Why a step is refused: the rule, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The step does not apply in this state.
    WrongState {
        /// The request.
        n: u64,
        /// Where it is.
        state: State,
        /// What was tried.
        step: &'static str,
        /// What would allow it.
        hint: &'static str,
    },
    /// The caller lacks the role or is not the initiator.
    NotAllowed {
        /// What was tried.
        step: &'static str,
        /// Who may.
        who: &'static str,
    },
    /// An approver accepting their own request.
    OwnRequest {
        /// The request.
        n: u64,
    },
    /// The release needs an admin and none took it.
    NoAdmin {
        /// The request.
        n: u64,
    },
    /// Another release of the same critical component is running.
    Locked {
        /// The component.
        component: String,
        /// The running release.
        holder: u64,
        /// Its initiator.
        by: String,
    },
    /// An earlier accepted request for the component is not done.
    EarlierFirst {
        /// The component.
        component: String,
        /// The earlier request.
        earlier: u64,
        /// Its initiator.
        by: String,
    },
    /// A freeze covers the component.
    Frozen {
        /// The component.
        component: String,
        /// The freeze.
        freeze: Freeze,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::WrongState {
                n,
                state,
                step,
                hint,
            } => write!(f, "#{n} is {state}, so it cannot be {step}; {hint}"),
            Refusal::NotAllowed { step, who } => write!(f, "only {who} can {step} a release"),
            Refusal::OwnRequest { n } => write!(
                f,
                "#{n} is your own request; another approver has to accept it"
            ),
            Refusal::NoAdmin { n } => write!(
                f,
                "#{n} needs an admin and nobody has taken it yet; an ops user takes it with `!release here {n}`, or request it with --no-admin"
            ),
            Refusal::Locked {
                component,
                holder,
                by,
            } => write!(
                f,
                "{component} is being released in #{holder} by {by}, and only one release of it runs at a time; wait until #{holder} is finished or cancelled"
            ),
            Refusal::EarlierFirst {
                component,
                earlier,
                by,
            } => write!(
                f,
                "#{earlier} by {by} was accepted earlier for {component} and is not finished; releases of a component go in order, so wait for it (ops can start with --force)"
            ),
            Refusal::Frozen { component, freeze } => write!(
                f,
                "{component} is frozen by {} ({}); nothing of it starts until the freeze ends or ops say `!release unfreeze {}`",
                freeze.by, freeze.reason, freeze.component
            ),
        }
    }
}

/// `request` moved to `state`, as a step with no lock and no note.
fn moved(request: &Request, state: State) -> Step {
    Step {
        request: Request {
            state,
            ..request.clone()
        },
        takes_lock: None,
        frees_lock: None,
        note: None,
    }
}

fn is_initiator_or_ops(request: &Request, by: &Actor) -> bool {
    by.ops || by.user == request.initiator
}

/// An approver accepts `request`.
pub fn accept(request: &Request, by: &Actor, rules: &Rules) -> Result<Step, Refusal> {
    if !by.approver {
        return Err(Refusal::NotAllowed {
            step: "accept",
            who: "approvers",
        });
    }
    if request.state != State::Requested {
        return Err(Refusal::WrongState {
            n: request.n,
            state: request.state,
            step: "accepted",
            hint: "only a requested release is accepted",
        });
    }
    if by.user == request.initiator && !rules.self_accept {
        return Err(Refusal::OwnRequest { n: request.n });
    }
    let mut step = moved(request, State::Accepted);
    step.request.approver = Some(by.user.clone());
    Ok(step)
}

/// An ops user takes `request` as its admin, or hands it to `to`.
pub fn here(request: &Request, by: &Actor, to: Option<&str>) -> Result<Step, Refusal> {
    if !by.ops {
        return Err(Refusal::NotAllowed {
            step: "take",
            who: "ops users",
        });
    }
    if !request.state.is_open() {
        return Err(Refusal::WrongState {
            n: request.n,
            state: request.state,
            step: "taken",
            hint: "only an open release is taken",
        });
    }
    let mut step = moved(request, request.state);
    step.request.admin = Some(to.unwrap_or(&by.user).to_owned());
    if let Some(to) = to {
        step.note = Some(format!("handed to {to} by {}", by.user));
    }
    Ok(step)
}

/// `request` starts, if every rule allows it now. `queue` is every
/// request (including this one), `freezes` every freeze.
pub fn start(
    request: &Request,
    by: &Actor,
    force: bool,
    queue: &[Request],
    freezes: &[Freeze],
    rules: &Rules,
    now_ms: i64,
) -> Result<Step, Refusal> {
    if !is_initiator_or_ops(request, by) {
        return Err(Refusal::NotAllowed {
            step: "start",
            who: "its initiator or ops",
        });
    }
    if force && !by.ops {
        return Err(Refusal::NotAllowed {
            step: "force the start of",
            who: "ops users",
        });
    }
    if request.state != State::Accepted {
        return Err(Refusal::WrongState {
            n: request.n,
            state: request.state,
            step: "started",
            hint: match request.state {
                State::Requested => "an approver accepts it first",
                _ => "only an accepted release starts",
            },
        });
    }
    if request.needs_admin && request.admin.is_none() {
        return Err(Refusal::NoAdmin { n: request.n });
    }
    let component = &request.component;
    let critical = rules.critical.iter().any(|c| c == component);
    let same = |r: &&Request| r.n != request.n && r.component == *component;
    if critical
        && let Some(holder) = queue
            .iter()
            .filter(same)
            .find(|r| r.state == State::Started)
    {
        return Err(Refusal::Locked {
            component: component.clone(),
            holder: holder.n,
            by: holder.initiator.clone(),
        });
    }
    let earlier = queue
        .iter()
        .filter(same)
        .filter(|r| r.n < request.n && matches!(r.state, State::Accepted | State::Started))
        .min_by_key(|r| r.n);
    if let Some(earlier) = earlier
        && !force
    {
        return Err(Refusal::EarlierFirst {
            component: component.clone(),
            earlier: earlier.n,
            by: earlier.initiator.clone(),
        });
    }
    if let Some(freeze) = freezes.iter().find(|f| f.covers(component, now_ms)) {
        return Err(Refusal::Frozen {
            component: component.clone(),
            freeze: freeze.clone(),
        });
    }
    let mut step = moved(request, State::Started);
    step.takes_lock = critical.then(|| component.clone());
    step.note = earlier.map(|e| format!("started with --force by {} past #{}", by.user, e.n));
    Ok(step)
}

/// The lock a step out of `Started` frees.
fn freed(request: &Request, rules: &Rules) -> Option<String> {
    (request.state == State::Started && rules.critical.contains(&request.component))
        .then(|| request.component.clone())
}

/// The release is done.
pub fn finish(request: &Request, by: &Actor, rules: &Rules) -> Result<Step, Refusal> {
    end(
        request,
        by,
        rules,
        End {
            to: State::Finished,
            verb: "finish",
            done: "finished",
            from: |s| s == State::Started,
            hint: "only a started release is finished",
        },
    )
}

/// The request is called off, before or during the release.
pub fn cancel(request: &Request, by: &Actor, rules: &Rules) -> Result<Step, Refusal> {
    end(
        request,
        by,
        rules,
        End {
            to: State::Cancelled,
            verb: "cancel",
            done: "cancelled",
            from: State::is_open,
            hint: "it is already over",
        },
    )
}

/// A started or finished release is undone.
pub fn rollback(request: &Request, by: &Actor, rules: &Rules) -> Result<Step, Refusal> {
    end(
        request,
        by,
        rules,
        End {
            to: State::RolledBack,
            verb: "roll back",
            done: "rolled back",
            from: |s| matches!(s, State::Started | State::Finished),
            hint: "only a started or finished release is rolled back; cancel it instead",
        },
    )
}

/// One way a release ends: where it goes, from where, and how it reads.
struct End {
    to: State,
    verb: &'static str,
    done: &'static str,
    from: fn(State) -> bool,
    hint: &'static str,
}

/// The steps that end a release (finish, cancel, rollback) share their
/// rules: the initiator or ops, from the states `how` allows, freeing the
/// lock a started critical release held.
fn end(request: &Request, by: &Actor, rules: &Rules, how: End) -> Result<Step, Refusal> {
    if !is_initiator_or_ops(request, by) {
        return Err(Refusal::NotAllowed {
            step: how.verb,
            who: "its initiator or ops",
        });
    }
    if !(how.from)(request.state) {
        return Err(Refusal::WrongState {
            n: request.n,
            state: request.state,
            step: how.done,
            hint: how.hint,
        });
    }
    let mut step = moved(request, how.to);
    step.frees_lock = freed(request, rules);
    Ok(step)
}

/// Why an open request waits, for `!release queue`; none when it can go.
pub fn waits_for(
    request: &Request,
    queue: &[Request],
    freezes: &[Freeze],
    rules: &Rules,
    now_ms: i64,
) -> Option<String> {
    match request.state {
        State::Requested => Some("approval".into()),
        State::Accepted => {
            let ops = Actor {
                user: request.initiator.clone(),
                approver: false,
                ops: false,
            };
            start(request, &ops, false, queue, freezes, rules, now_ms)
                .err()
                .map(|refusal| match refusal {
                    Refusal::NoAdmin { .. } => "an admin".into(),
                    Refusal::Locked { holder, .. } => format!("lock held by #{holder}"),
                    Refusal::EarlierFirst { earlier, .. } => format!("#{earlier} first"),
                    Refusal::Frozen { freeze, .. } => format!("freeze: {}", freeze.reason),
                    other => other.to_string(),
                })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(n: u64, component: &str, initiator: &str, state: State) -> Request {
        Request {
            n,
            ticket: format!("REL-{n}"),
            component: component.into(),
            initiator: initiator.into(),
            needs_admin: false,
            admin: None,
            approver: None,
            state,
        }
    }

    fn user(name: &str) -> Actor {
        Actor {
            user: name.into(),
            approver: false,
            ops: false,
        }
    }

    fn approver(name: &str) -> Actor {
        Actor {
            approver: true,
            ..user(name)
        }
    }

    fn ops(name: &str) -> Actor {
        Actor {
            ops: true,
            ..user(name)
        }
    }

    fn rules() -> Rules {
        Rules {
            self_accept: false,
            critical: vec!["billing".into()],
        }
    }

    const ALICE: &str = "@alice:x";

    #[test]
    fn the_whole_way_from_request_to_finish() {
        let r = req(1, "billing", ALICE, State::Requested);
        let accepted = accept(&r, &approver("@bob:x"), &rules()).expect("accepted");
        assert_eq!(accepted.request.state, State::Accepted);
        assert_eq!(accepted.request.approver.as_deref(), Some("@bob:x"));
        let queue = [accepted.request.clone()];
        let started = start(
            &accepted.request,
            &user(ALICE),
            false,
            &queue,
            &[],
            &rules(),
            0,
        )
        .expect("started");
        assert_eq!(started.request.state, State::Started);
        assert_eq!(started.takes_lock.as_deref(), Some("billing"));
        let finished = finish(&started.request, &user(ALICE), &rules()).expect("finished");
        assert_eq!(finished.request.state, State::Finished);
        assert_eq!(finished.frees_lock.as_deref(), Some("billing"));
        let undone = rollback(&finished.request, &ops("@olga:x"), &rules()).expect("rolled back");
        assert_eq!(undone.request.state, State::RolledBack);
        assert_eq!(undone.frees_lock, None, "the lock went with the finish");
    }

    #[test]
    fn only_approvers_accept_and_not_their_own() {
        let r = req(1, "web", ALICE, State::Requested);
        assert_eq!(
            accept(&r, &user("@bob:x"), &rules()),
            Err(Refusal::NotAllowed {
                step: "accept",
                who: "approvers"
            })
        );
        let own = accept(&r, &approver(ALICE), &rules());
        assert_eq!(own, Err(Refusal::OwnRequest { n: 1 }));
        let allowed = Rules {
            self_accept: true,
            ..rules()
        };
        assert!(accept(&r, &approver(ALICE), &allowed).is_ok());
        let again = accept(
            &req(1, "web", ALICE, State::Accepted),
            &approver("@bob:x"),
            &rules(),
        );
        assert!(matches!(
            again,
            Err(Refusal::WrongState {
                step: "accepted",
                ..
            })
        ));
    }

    #[test]
    fn start_needs_acceptance_and_an_admin_when_asked() {
        let requested = req(1, "web", ALICE, State::Requested);
        let refused = start(&requested, &user(ALICE), false, &[], &[], &rules(), 0);
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.to_string().contains("an approver accepts it first")),
            "{refused:?}"
        );
        let mut needs = req(1, "web", ALICE, State::Accepted);
        needs.needs_admin = true;
        assert_eq!(
            start(&needs, &user(ALICE), false, &[], &[], &rules(), 0),
            Err(Refusal::NoAdmin { n: 1 })
        );
        let taken = here(&needs, &ops("@olga:x"), None).expect("taken");
        assert_eq!(taken.request.admin.as_deref(), Some("@olga:x"));
        assert!(start(&taken.request, &user(ALICE), false, &[], &[], &rules(), 0).is_ok());
        let handed = here(&needs, &ops("@olga:x"), Some("@pavel:x")).expect("handed");
        assert_eq!(handed.request.admin.as_deref(), Some("@pavel:x"));
        assert!(
            handed
                .note
                .is_some_and(|n| n.contains("handed to @pavel:x"))
        );
        assert!(here(&needs, &user("@bob:x"), None).is_err());
    }

    #[test]
    fn strangers_cannot_start_finish_cancel_or_roll_back() {
        let accepted = req(1, "web", ALICE, State::Accepted);
        let started = req(1, "web", ALICE, State::Started);
        let mallory = user("@mallory:x");
        assert!(start(&accepted, &mallory, false, &[], &[], &rules(), 0).is_err());
        assert!(finish(&started, &mallory, &rules()).is_err());
        assert!(cancel(&started, &mallory, &rules()).is_err());
        assert!(rollback(&started, &mallory, &rules()).is_err());
        // Ops can do each.
        assert!(start(&accepted, &ops("@olga:x"), false, &[], &[], &rules(), 0).is_ok());
        assert!(finish(&started, &ops("@olga:x"), &rules()).is_ok());
    }

    #[test]
    fn one_release_of_a_critical_component_at_a_time() {
        let running = req(1, "billing", "@bob:x", State::Started);
        let next = req(2, "billing", ALICE, State::Accepted);
        let queue = [running.clone(), next.clone()];
        let refused = start(&next, &ops("@olga:x"), true, &queue, &[], &rules(), 0);
        assert_eq!(
            refused,
            Err(Refusal::Locked {
                component: "billing".into(),
                holder: 1,
                by: "@bob:x".into()
            })
        );
        assert!(
            refused.is_err_and(|e| e.to_string().contains("being released in #1 by @bob:x")),
            "--force does not pass a lock"
        );
        // Finishing #1 frees it.
        let done = finish(&running, &user("@bob:x"), &rules()).expect("finished");
        let queue = [done.request, next.clone()];
        assert!(start(&next, &user(ALICE), false, &queue, &[], &rules(), 0).is_ok());
    }

    #[test]
    fn earlier_accepted_requests_go_first_unless_ops_force() {
        let earlier = req(1, "web", "@bob:x", State::Accepted);
        let later = req(2, "web", ALICE, State::Accepted);
        let queue = [earlier, later.clone()];
        let refused = start(&later, &user(ALICE), false, &queue, &[], &rules(), 0);
        assert_eq!(
            refused,
            Err(Refusal::EarlierFirst {
                component: "web".into(),
                earlier: 1,
                by: "@bob:x".into()
            })
        );
        assert_eq!(
            start(&later, &user(ALICE), true, &queue, &[], &rules(), 0),
            Err(Refusal::NotAllowed {
                step: "force the start of",
                who: "ops users"
            })
        );
        let forced =
            start(&later, &ops("@olga:x"), true, &queue, &[], &rules(), 0).expect("forced");
        assert_eq!(
            forced.note.as_deref(),
            Some("started with --force by @olga:x past #1")
        );
        // Requests that are only requested, or for another component, or
        // already over, do not hold anyone up.
        let queue = [
            req(1, "web", "@bob:x", State::Requested),
            req(3, "api", "@bob:x", State::Accepted),
            req(4, "web", "@bob:x", State::Cancelled),
            later.clone(),
        ];
        assert!(start(&later, &user(ALICE), false, &queue, &[], &rules(), 0).is_ok());
    }

    #[test]
    fn a_freeze_stops_starts_until_it_ends() {
        let r = req(1, "web", ALICE, State::Accepted);
        let freeze = Freeze {
            component: "all".into(),
            until_ms: 1_000,
            reason: "Black Friday".into(),
            by: "@olga:x".into(),
        };
        let refused = start(
            &r,
            &user(ALICE),
            false,
            &[],
            std::slice::from_ref(&freeze),
            &rules(),
            999,
        );
        assert!(refused.is_err_and(|e| e.to_string().contains("frozen by @olga:x (Black Friday)")));
        assert!(
            start(
                &r,
                &user(ALICE),
                false,
                &[],
                std::slice::from_ref(&freeze),
                &rules(),
                1_000
            )
            .is_ok()
        );
        let other = Freeze {
            component: "api".into(),
            ..freeze
        };
        assert!(start(&r, &user(ALICE), false, &[], &[other], &rules(), 0).is_ok());
    }

    #[test]
    fn ends_only_from_where_they_make_sense() {
        for state in [State::Finished, State::Cancelled, State::RolledBack] {
            let r = req(1, "web", ALICE, state);
            assert!(cancel(&r, &user(ALICE), &rules()).is_err(), "{state}");
            assert!(finish(&r, &user(ALICE), &rules()).is_err(), "{state}");
        }
        for state in [State::Requested, State::Accepted] {
            let r = req(1, "web", ALICE, state);
            let refused = rollback(&r, &user(ALICE), &rules());
            assert!(refused.is_err_and(|e| e.to_string().contains("cancel it instead")));
            assert_eq!(
                cancel(&r, &user(ALICE), &rules()).map(|s| s.request.state),
                Ok(State::Cancelled)
            );
        }
        let running = req(1, "billing", ALICE, State::Started);
        let cancelled = cancel(&running, &user(ALICE), &rules()).expect("cancelled");
        assert_eq!(cancelled.frees_lock.as_deref(), Some("billing"));
    }

    #[test]
    fn the_queue_says_why_each_waits() {
        let mut needs_admin = req(3, "api", ALICE, State::Accepted);
        needs_admin.needs_admin = true;
        let queue = [
            req(1, "billing", "@bob:x", State::Started),
            req(2, "billing", ALICE, State::Accepted),
            needs_admin.clone(),
            req(4, "web", ALICE, State::Requested),
        ];
        let why = |r: &Request| waits_for(r, &queue, &[], &rules(), 0);
        assert_eq!(why(&queue[0]), None);
        assert_eq!(why(&queue[1]).as_deref(), Some("lock held by #1"));
        assert_eq!(why(&needs_admin).as_deref(), Some("an admin"));
        assert_eq!(why(&queue[3]).as_deref(), Some("approval"));
    }
}

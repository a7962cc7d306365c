//! Plan (D1): normalized requests in, a deterministic ordered list of actions out.
//!
//! Contract: the same [`PlanInput`] (up to request order) yields the same [`Plan`] —
//! same order, same `plan_id`, same `action_id`s — on any machine: IDs are UUIDv5
//! over the canonical text of the sorted input in the fixed [`NAMESPACE`]. A plan has
//! at most one action per target, no target is also a source, and it is never larger
//! than the configured limit. Planning reads nothing from the filesystem.

use crate::error::{Error, ErrorId, Result};
use crate::path::SafePath;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The project namespace for UUIDv5 identifiers (fixed forever).
pub const NAMESPACE: Uuid = Uuid::from_u128(0x5d1c_8a0e_4b7e_4f39_9d35_77a2_c0de_5e1d);

/// Prefix of Switchyard's own names beside targets; plans may not name them.
pub const RESERVED_PREFIX: &str = ".switchyard.";

/// "Make `target` a symlink to `source`."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkRequest {
    /// Root-relative target path.
    pub target: SafePath,
    /// Root-relative source the target will link to.
    pub source: SafePath,
}

/// "Put back the latest backup of `target`."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreRequest {
    /// Root-relative target path.
    pub target: SafePath,
}

/// What the caller asks for. Holds `SafePath`s only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanInput {
    /// Targets to turn into links.
    pub links: Vec<LinkRequest>,
    /// Targets whose latest backup to put back.
    pub restores: Vec<RestoreRequest>,
}

impl PlanInput {
    /// Adds a link request.
    pub fn link(mut self, target: SafePath, source: SafePath) -> PlanInput {
        self.links.push(LinkRequest { target, source });
        self
    }

    /// Adds a restore request.
    pub fn restore(mut self, target: SafePath) -> PlanInput {
        self.restores.push(RestoreRequest { target });
        self
    }
}

/// The kind of an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// Make the target a symlink to the source.
    Link,
    /// Put the target's latest backup back.
    Restore,
}

impl ActionKind {
    /// Lower-case name, as in facts.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Link => "link",
            ActionKind::Restore => "restore",
        }
    }
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    /// UUIDv5 of the action's canonical text within the plan (D1).
    pub action_id: Uuid,
    /// `link` or `restore`.
    pub kind: ActionKind,
    /// Root-relative target path.
    pub target: SafePath,
    /// The link's destination (root-relative); `None` for restores.
    pub source: Option<SafePath>,
}

impl Action {
    fn canonical(&self) -> String {
        let src = self.source.as_ref().map_or("", SafePath::as_str);
        format!("{}\0{}\0{}", self.kind.as_str(), self.target, src)
    }
}

/// An ordered list of actions with stable identifiers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// UUIDv5 of the sorted canonical input (D1).
    pub plan_id: Uuid,
    /// The actions, sorted by target.
    pub actions: Vec<Action>,
}

/// Builds the plan for `input`, refusing more than `max_actions` actions.
pub fn build(input: &PlanInput, max_actions: usize) -> Result<Plan> {
    let n = input.links.len() + input.restores.len();
    if n > max_actions {
        return Err(Error::new(
            ErrorId::Usage,
            format!("plan has {n} actions, more than the limit of {max_actions} (policy max_plan_actions)"),
        ));
    }
    let mut actions: Vec<Action> = input
        .links
        .iter()
        .map(|l| (ActionKind::Link, l.target.clone(), Some(l.source.clone())))
        .chain(
            input
                .restores
                .iter()
                .map(|r| (ActionKind::Restore, r.target.clone(), None)),
        )
        .map(|(kind, target, source)| Action {
            action_id: Uuid::nil(),
            kind,
            target,
            source,
        })
        .collect();
    actions.sort_by(|a, b| a.target.cmp(&b.target));
    for w in actions.windows(2) {
        if w[0].target == w[1].target {
            return Err(Error::new(
                ErrorId::Usage,
                format!("duplicate target {}", w[0].target),
            ));
        }
    }
    for a in &actions {
        for p in [Some(&a.target), a.source.as_ref()].into_iter().flatten() {
            if p.as_str()
                .split('/')
                .any(|c| c.starts_with(RESERVED_PREFIX))
            {
                return Err(Error::new(
                    ErrorId::Usage,
                    format!("{p}: names starting with {RESERVED_PREFIX} are Switchyard's own backups and stages"),
                ));
            }
        }
        if let Some(src) = &a.source {
            if src == &a.target {
                return Err(Error::new(
                    ErrorId::Usage,
                    format!("target {} links to itself", a.target),
                ));
            }
            if actions.binary_search_by(|b| b.target.cmp(src)).is_ok() {
                return Err(Error::new(
                    ErrorId::Usage,
                    format!("{src} is both a source (of {}) and a target", a.target),
                ));
            }
        }
    }
    let canonical: String = actions.iter().map(|a| a.canonical() + "\n").collect();
    let plan_id = Uuid::new_v5(&NAMESPACE, canonical.as_bytes());
    for a in &mut actions {
        a.action_id = Uuid::new_v5(&plan_id, a.canonical().as_bytes());
    }
    Ok(Plan { plan_id, actions })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> SafePath {
        SafePath::new(s).unwrap()
    }

    #[test]
    fn ids_are_stable_and_order_independent() {
        let a = PlanInput::default()
            .link(p("usr/bin/ls"), p("opt/ls"))
            .link(p("usr/bin/cat"), p("opt/cat"));
        let b = PlanInput::default()
            .link(p("/usr/bin/cat"), p("opt/cat"))
            .link(p("usr/bin/ls"), p("opt/ls"));
        let (pa, pb) = (build(&a, 10).unwrap(), build(&b, 10).unwrap());
        assert_eq!(pa, pb);
        assert_eq!(pa.actions[0].target, p("usr/bin/cat"));
        // Pinned: the same input gives these IDs on every machine (D1).
        assert_eq!(
            pa.plan_id.to_string(),
            "b2f70da4-953e-58db-a4f0-9f56ea49a94c"
        );
        assert_eq!(pa.plan_id.get_version_num(), 5);
        let c = PlanInput::default().link(p("usr/bin/ls"), p("opt/ls2"));
        assert_ne!(build(&c, 10).unwrap().plan_id, pa.plan_id);
    }

    #[test]
    fn rejects_duplicates_cycles_and_oversize() {
        let dup = PlanInput::default().link(p("a"), p("b")).restore(p("a"));
        assert_eq!(build(&dup, 10).unwrap_err().id(), ErrorId::Usage);
        let chain = PlanInput::default()
            .link(p("a"), p("b"))
            .link(p("b"), p("c"));
        assert!(build(&chain, 10)
            .unwrap_err()
            .message()
            .contains("both a source"));
        let selfl = PlanInput::default().link(p("a"), p("a"));
        assert!(build(&selfl, 10).is_err());
        let big = PlanInput::default()
            .link(p("a"), p("b"))
            .link(p("c"), p("d"));
        assert!(build(&big, 1).unwrap_err().message().contains("limit of 1"));
    }
}

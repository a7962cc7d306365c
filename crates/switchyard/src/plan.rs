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

/// Prefix of Switchyard's own names: the backup store it keeps beside swapped targets
/// is a directory of exactly this name, and plans may not name anything starting with
/// it.
pub const RESERVED_PREFIX: &str = ".switchyard";

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

/// Why two requests (or one) cannot be planned together; fields are request indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    /// Request `again` names the target of the earlier request `first`.
    DuplicateTarget {
        /// The first request naming the target.
        first: usize,
        /// The later request naming it again.
        again: usize,
    },
    /// Request `index` links its target to itself.
    SelfLink {
        /// The offending request.
        index: usize,
    },
    /// The source of request `index` is the target of request `target_of`.
    SourceIsTarget {
        /// The request whose source is also a target.
        index: usize,
        /// The (first) request with that target.
        target_of: usize,
    },
}

/// The plan rule "one action per target, no self-link, no target is also a source",
/// over `(target, source)` requests (`None` for a restore) in the caller's order.
/// Returns the first conflict: duplicates and self-links in request order, then
/// sources that are targets. [`build`] applies it to links then restores; the manifest
/// applies it in its own order to name the offending entries.
pub fn conflict<'a>(
    requests: impl IntoIterator<Item = (&'a SafePath, Option<&'a SafePath>)>,
) -> Option<Conflict> {
    let requests: Vec<_> = requests.into_iter().collect();
    let mut first: std::collections::BTreeMap<&SafePath, usize> = Default::default();
    for (i, &(target, source)) in requests.iter().enumerate() {
        if let Some(&f) = first.get(target) {
            return Some(Conflict::DuplicateTarget { first: f, again: i });
        }
        first.insert(target, i);
        if source == Some(target) {
            return Some(Conflict::SelfLink { index: i });
        }
    }
    requests.iter().enumerate().find_map(|(i, &(_, source))| {
        let target_of = *first.get(source?)?;
        Some(Conflict::SourceIsTarget {
            index: i,
            target_of,
        })
    })
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
    // `actions` is still in request order (links, then restores): indexes name actions.
    if let Some(c) = conflict(actions.iter().map(|a| (&a.target, a.source.as_ref()))) {
        let target = |i: usize| actions.get(i).map_or("", |a| a.target.as_str());
        let msg = match c {
            Conflict::DuplicateTarget { again, .. } => {
                format!("duplicate target {}", target(again))
            }
            Conflict::SelfLink { index } => format!("target {} links to itself", target(index)),
            Conflict::SourceIsTarget { index, target_of } => format!(
                "{} is both a source (of {}) and a target",
                target(target_of),
                target(index)
            ),
        };
        return Err(Error::new(ErrorId::Usage, msg));
    }
    actions.sort_by(|a, b| a.target.cmp(&b.target));
    for a in &actions {
        for p in [Some(&a.target), a.source.as_ref()].into_iter().flatten() {
            if p.as_str()
                .split('/')
                .any(|c| c.starts_with(RESERVED_PREFIX))
            {
                return Err(Error::new(
                    ErrorId::Usage,
                    format!("{p}: names starting with {RESERVED_PREFIX} are Switchyard's own (its backup store)"),
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

    #[test]
    fn conflict_names_request_indexes_in_caller_order() {
        let (a, b, c) = (p("a"), p("b"), p("c"));
        assert_eq!(conflict([(&a, Some(&b)), (&c, Some(&b))]), None);
        assert_eq!(
            conflict([(&a, Some(&b)), (&c, None), (&a, None)]),
            Some(Conflict::DuplicateTarget { first: 0, again: 2 })
        );
        assert_eq!(
            conflict([(&c, None), (&a, Some(&a))]),
            Some(Conflict::SelfLink { index: 1 })
        );
        // Duplicates and self-links are found first, in order; then a source that is a target.
        assert_eq!(
            conflict([(&a, Some(&b)), (&b, Some(&c)), (&c, Some(&c))]),
            Some(Conflict::SelfLink { index: 2 })
        );
        assert_eq!(
            conflict([(&a, Some(&b)), (&b, Some(&c))]),
            Some(Conflict::SourceIsTarget {
                index: 0,
                target_of: 1
            })
        );
        // `build` applies the same rule, with its own messages.
        let chain = PlanInput::default().link(a.clone(), b.clone()).link(b, c);
        assert_eq!(
            build(&chain, 10).unwrap_err().message(),
            "b is both a source (of a) and a target"
        );
        let selfl = PlanInput::default().link(a.clone(), a);
        assert_eq!(
            build(&selfl, 10).unwrap_err().message(),
            "target a links to itself"
        );
    }
}

//! What one sync changes: the feed's deployments against the ones the gateway lists. Pure,
//! no I/O, so every rule is tested without a gateway.
//!
//! The rules:
//! - Only deployments sonde created (tagged `sonde_managed` in `model_info`) are changed or
//!   deleted. An untagged deployment holding a target's id is a conflict: reported, left alone,
//!   and the target is not pushed.
//! - A routable target without a deployment gets one; a target that is not routable gets
//!   none created.
//! - A weight moves only by `min_change` or more, or to or from 0 (a down target stops
//!   receiving traffic at once, a recovered one gets it back at once). A deployment whose
//!   route group, model or base URL differs from the config's is updated whatever its weight.
//! - A target that is not routable is set to weight 0, or deleted with `on_down = remove`.
//!   A deployment of a target sonde no longer has is deleted.
//! - No group is left without a deployment of weight above 0: LiteLLM then shares the group
//!   evenly among all of them, down ones included (its simple-shuffle falls back to a uniform
//!   pick), or has nothing to route to. Such a group is held: none of its changes are made,
//!   its deployments keep their last weights, and the caller alerts.
//! - Changes are ordered so that no group passes through a worse state than the end one:
//!   creations and raised weights first, then lowered weights, then deletions.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::config::OnDown;
use crate::publish::gateway::Deployment;

/// A deployment as the gateway lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    /// Its id (`model_info.id`).
    pub id: String,
    /// Its route group (`model_name`).
    pub group: String,
    /// `litellm_params.model`.
    pub model: Option<String>,
    /// `litellm_params.api_base`.
    pub api_base: Option<String>,
    /// `litellm_params.weight`; LiteLLM counts a missing one as 0.
    pub weight: Option<f64>,
    /// Whether sonde created it (`model_info.sonde_managed`).
    pub managed: bool,
}

/// Why a deployment is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gone {
    /// Its target is not routable and `on_down = remove`.
    Down,
    /// sonde's config no longer has its target.
    Unknown,
}

/// One change to make on the gateway.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A deployment for a routable target the gateway lacks.
    Create(Deployment),
    /// A deployment brought to the feed: its weight (from `from`), or its group or params.
    Update {
        /// What it becomes.
        deployment: Deployment,
        /// Its weight before.
        from: Option<f64>,
    },
    /// A deployment deleted.
    Delete {
        /// Its id.
        id: String,
        /// Its group.
        group: String,
        /// Why.
        why: Gone,
    },
}

impl Change {
    /// The deployment's id.
    pub fn id(&self) -> &str {
        match self {
            Change::Create(deployment) | Change::Update { deployment, .. } => &deployment.id,
            Change::Delete { id, .. } => id,
        }
    }

    /// `create`, `update` or `delete`.
    pub fn action(&self) -> &'static str {
        match self {
            Change::Create(_) => "create",
            Change::Update { .. } => "update",
            Change::Delete { .. } => "delete",
        }
    }

    /// The route group the deployment is in once the change is made (a deletion's: the one
    /// it leaves).
    pub fn group(&self) -> &str {
        match self {
            Change::Create(d) | Change::Update { deployment: d, .. } => &d.group,
            Change::Delete { group, .. } => group,
        }
    }

    /// Whether it takes weight away: a lowered weight or a deletion.
    pub fn lowers(&self) -> bool {
        match self {
            Change::Create(_) => false,
            Change::Update { deployment, from } => deployment.weight < from.unwrap_or(0.0),
            Change::Delete { .. } => true,
        }
    }

    /// The order class: raising (0), lowering (1), deleting (2).
    fn stage(&self) -> u8 {
        match self {
            Change::Delete { .. } => 2,
            change if change.lowers() => 1,
            _ => 0,
        }
    }
}

/// A group whose changes were not made, so that it keeps a deployment to route to.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    /// The route group.
    pub group: String,
    /// The targets sonde would have set to 0 or deleted there.
    pub targets: Vec<String>,
}

/// What one sync does.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// The changes, in the order to make them.
    pub changes: Vec<Change>,
    /// Groups held at their last weights.
    pub held: Vec<Held>,
    /// Target ids an untagged (not sonde's) deployment already uses.
    pub conflicts: Vec<String>,
    /// sonde's deployments already at the feed's weights (within `min_change`).
    pub unchanged: usize,
}

/// The changes that bring `listed` to `desired`, with `on_down` and `min_change` as in
/// `[[sync]]`.
pub fn plan(desired: &[Deployment], listed: &[Listed], on_down: OnDown, min_change: f64) -> Plan {
    let managed: HashMap<&str, &Listed> = listed
        .iter()
        .filter(|l| l.managed)
        .map(|l| (l.id.as_str(), l))
        .collect();
    let foreign: HashSet<&str> = listed
        .iter()
        .filter(|l| !l.managed)
        .map(|l| l.id.as_str())
        .collect();
    let mut plan = Plan::default();
    for deployment in desired {
        match managed.get(deployment.id.as_str()) {
            Some(_) if deployment.weight <= 0.0 && on_down == OnDown::Remove => {
                plan.changes.push(Change::Delete {
                    id: deployment.id.clone(),
                    group: deployment.group.clone(),
                    why: Gone::Down,
                });
            }
            Some(now) if differs(deployment, now, min_change) => {
                plan.changes.push(Change::Update {
                    deployment: deployment.clone(),
                    from: now.weight,
                });
            }
            Some(_) => plan.unchanged += 1,
            None if foreign.contains(deployment.id.as_str()) => {
                plan.conflicts.push(deployment.id.clone());
            }
            None if deployment.weight > 0.0 => {
                plan.changes.push(Change::Create(deployment.clone()));
            }
            None => {}
        }
    }
    let wanted: HashSet<&str> = desired.iter().map(|d| d.id.as_str()).collect();
    for now in listed
        .iter()
        .filter(|l| l.managed && !wanted.contains(l.id.as_str()))
    {
        plan.changes.push(Change::Delete {
            id: now.id.clone(),
            group: now.group.clone(),
            why: Gone::Unknown,
        });
    }
    hold_groups_left_empty(&mut plan, listed);
    plan.changes
        .sort_by(|a, b| a.stage().cmp(&b.stage()).then_with(|| a.id().cmp(b.id())));
    plan
}

/// Whether `now` must be updated to `deployment`.
fn differs(deployment: &Deployment, now: &Listed, min_change: f64) -> bool {
    if now.group != deployment.group
        || now.model.as_deref() != Some(deployment.model.as_str())
        || now.api_base != deployment.api_base
    {
        return true;
    }
    let Some(weight) = now.weight else {
        return true;
    };
    (weight > 0.0) != (deployment.weight > 0.0)
        || ((weight - deployment.weight).abs() >= min_change && weight != deployment.weight)
}

/// Takes out the changes of every group they would leave without a deployment of weight
/// above 0, and records the group as held.
fn hold_groups_left_empty(plan: &mut Plan, listed: &[Listed]) {
    let was: HashMap<&str, &str> = listed
        .iter()
        .map(|l| (l.id.as_str(), l.group.as_str()))
        .collect();
    // Each deployment's (group, weight) after the plan, starting from the gateway's.
    let mut after: HashMap<&str, (&str, f64)> = listed
        .iter()
        .map(|l| (l.id.as_str(), (l.group.as_str(), l.weight.unwrap_or(0.0))))
        .collect();
    for change in &plan.changes {
        match change {
            Change::Create(d) | Change::Update { deployment: d, .. } => {
                after.insert(&d.id, (&d.group, d.weight));
            }
            Change::Delete { id, .. } => {
                after.remove(id.as_str());
            }
        }
    }
    let empty: BTreeSet<String> = plan
        .changes
        .iter()
        .flat_map(|change| touches(&was, change))
        .flatten()
        .filter(|group| !after.values().any(|(g, w)| g == group && *w > 0.0))
        .map(str::to_owned)
        .collect();
    let mut held: BTreeMap<String, Vec<String>> = BTreeMap::new();
    plan.changes.retain(|change| {
        let Some(group) = touches(&was, change)
            .into_iter()
            .flatten()
            .find(|group| empty.contains(*group))
        else {
            return true;
        };
        held.entry(group.to_owned())
            .or_default()
            .push(change.id().to_owned());
        false
    });
    plan.held = held
        .into_iter()
        .map(|(group, mut targets)| {
            targets.sort();
            Held { group, targets }
        })
        .collect();
}

/// The groups `change` touches: where its deployment was (`was`, by id), then where it is
/// once made.
fn touches<'a>(was: &HashMap<&'a str, &'a str>, change: &'a Change) -> [Option<&'a str>; 2] {
    [was.get(change.id()).copied(), Some(change.group())]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(id: &str, group: &str, weight: f64) -> Deployment {
        Deployment {
            id: id.into(),
            group: group.into(),
            model: format!("openai/{id}"),
            api_base: Some("http://sim/v1".into()),
            api_key: Some("os.environ/SIM_KEY".into()),
            weight,
        }
    }

    fn have(id: &str, group: &str, weight: f64, managed: bool) -> Listed {
        Listed {
            id: id.into(),
            group: group.into(),
            model: Some(format!("openai/{id}")),
            api_base: Some("http://sim/v1".into()),
            weight: Some(weight),
            managed,
        }
    }

    fn ids(plan: &Plan) -> Vec<(&str, String)> {
        plan.changes
            .iter()
            .map(|c| {
                let what = match c {
                    Change::Create(d) => format!("create {}", d.weight),
                    Change::Update { deployment, from } => {
                        format!("update {:?} -> {}", from, deployment.weight)
                    }
                    Change::Delete { why, .. } => format!("delete {why:?}"),
                };
                (c.id(), what)
            })
            .collect()
    }

    #[test]
    fn creates_routable_targets_and_not_down_ones() {
        let plan = plan(
            &[
                want("a", "chat", 0.7),
                want("b", "chat", 0.3),
                want("c", "chat", 0.0),
            ],
            &[],
            OnDown::Zero,
            0.05,
        );
        assert_eq!(
            ids(&plan),
            vec![("a", "create 0.7".into()), ("b", "create 0.3".into())]
        );
        assert!(plan.held.is_empty());
    }

    #[test]
    fn small_moves_are_left_and_moves_to_or_from_zero_always_made() {
        let listed = [
            have("a", "chat", 0.50, true),
            have("b", "chat", 0.30, true),
            have("c", "chat", 0.20, true),
            have("d", "chat", 0.0, true),
        ];
        let desired = [
            want("a", "chat", 0.54),
            want("b", "chat", 0.36),
            want("c", "chat", 0.0),
            want("d", "chat", 0.01),
        ];
        let plan = plan(&desired, &listed, OnDown::Zero, 0.05);
        assert_eq!(
            ids(&plan),
            vec![
                ("b", "update Some(0.3) -> 0.36".into()),
                ("d", "update Some(0.0) -> 0.01".into()),
                ("c", "update Some(0.2) -> 0".into()),
            ]
        );
        assert_eq!(plan.unchanged, 1);
    }

    #[test]
    fn remove_deletes_down_targets_and_gone_targets_always() {
        let listed = [
            have("a", "chat", 0.5, true),
            have("b", "chat", 0.5, true),
            have("old", "chat", 0.2, true),
        ];
        let plan = plan(
            &[want("a", "chat", 1.0), want("b", "chat", 0.0)],
            &listed,
            OnDown::Remove,
            0.05,
        );
        assert_eq!(
            ids(&plan),
            vec![
                ("a", "update Some(0.5) -> 1".into()),
                ("b", "delete Down".into()),
                ("old", "delete Unknown".into()),
            ]
        );
    }

    #[test]
    fn deployments_sonde_did_not_create_are_never_touched() {
        let listed = [
            have("manual", "chat", 0.0, false),
            have("a", "chat", 0.2, false),
            have("b", "chat", 0.5, true),
        ];
        let plan = plan(
            &[want("a", "chat", 0.9), want("b", "chat", 0.1)],
            &listed,
            OnDown::Zero,
            0.05,
        );
        assert_eq!(ids(&plan), vec![("b", "update Some(0.5) -> 0.1".into())]);
        assert_eq!(plan.conflicts, vec!["a".to_owned()]);
    }

    #[test]
    fn a_group_left_with_no_weight_is_held_whole() {
        let listed = [
            have("a", "chat", 0.6, true),
            have("b", "chat", 0.4, true),
            have("x", "other", 1.0, true),
        ];
        let plan = plan(
            &[
                want("a", "chat", 0.0),
                want("b", "chat", 0.0),
                want("x", "other", 0.0),
            ],
            &listed,
            OnDown::Remove,
            0.05,
        );
        assert!(plan.changes.is_empty(), "{:?}", plan.changes);
        assert_eq!(
            plan.held,
            vec![
                Held {
                    group: "chat".into(),
                    targets: vec!["a".into(), "b".into()]
                },
                Held {
                    group: "other".into(),
                    targets: vec!["x".into()]
                },
            ]
        );
    }

    #[test]
    fn a_manual_deployment_with_weight_keeps_the_group_routable() {
        let listed = [
            have("a", "chat", 0.6, true),
            have("manual", "chat", 1.0, false),
        ];
        let plan = plan(&[want("a", "chat", 0.0)], &listed, OnDown::Zero, 0.05);
        assert_eq!(ids(&plan), vec![("a", "update Some(0.6) -> 0".into())]);
        assert!(plan.held.is_empty());
    }

    #[test]
    fn a_changed_route_or_base_is_pushed_whatever_the_weight() {
        let mut moved = have("a", "chat", 0.5, true);
        moved.api_base = Some("http://old/v1".into());
        let mut weightless = have("b", "chat", 0.5, true);
        weightless.weight = None;
        let plan = plan(
            &[want("a", "chat", 0.5), want("b", "chat", 0.5)],
            &[moved, weightless],
            OnDown::Zero,
            0.05,
        );
        assert_eq!(
            ids(&plan),
            vec![
                ("a", "update Some(0.5) -> 0.5".into()),
                ("b", "update None -> 0.5".into()),
            ]
        );
    }
}

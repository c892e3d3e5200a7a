//! Thinning: the narrower model that keeps only some channels of each group.
//!
//! Every member of a group is sliced with the same keep-list (conv output channels, the
//! BatchNorm's affine parameters and running statistics, the next layer's input channels or
//! flattened columns, every conv writing into or reading from a residual stream), so the
//! result is an ordinary model of smaller widths: its spec describes it, and it saves, loads,
//! resumes and runs like any other.

use std::collections::{BTreeMap, HashSet};

use crate::params::{self, Edit};
use crate::{InputShape, Model};

/// Which channels each group keeps: group name to sorted, distinct indices. Groups left out
/// keep all their channels.
pub type KeepPlan = BTreeMap<String, Vec<usize>>;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ThinError {
    #[error("no channel group {name:?} in this {kind} model (its groups: {known})")]
    UnknownGroup {
        name: String,
        kind: &'static str,
        known: String,
    },
    #[error("group {group}: {message}")]
    BadKeep { group: String, message: String },
    #[error("the thinned model is inconsistent: {0}")]
    Inconsistent(String),
}

/// A copy of `model` with only the channels `keep` names. Errors: an unknown group, an empty
/// or out-of-range keep-list, a result whose spec would not rebuild it.
pub fn thin(model: &Model, input: &InputShape, keep: &KeepPlan) -> Result<Model, ThinError> {
    let groups = model.channel_groups(input);
    let mut edits: BTreeMap<String, Vec<(usize, Vec<usize>)>> = BTreeMap::new();
    for (name, kept) in keep {
        let Some(group) = groups.iter().find(|g| &g.name == name) else {
            return Err(ThinError::UnknownGroup {
                name: name.clone(),
                kind: model.kind(),
                known: groups
                    .iter()
                    .map(|g| g.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let bad = |message: String| ThinError::BadKeep {
            group: name.clone(),
            message,
        };
        if kept.is_empty() {
            return Err(bad(format!(
                "keeps no channel of {}: a group needs at least one",
                group.width
            )));
        }
        if kept.windows(2).any(|w| w[0] >= w[1]) {
            return Err(bad("channel indices must be increasing and distinct".into()));
        }
        if let Some(&last) = kept.last().filter(|&&last| last >= group.width) {
            return Err(bad(format!(
                "channel {last} does not exist (width {})",
                group.width
            )));
        }
        if kept.len() == group.width {
            continue;
        }
        for member in &group.members {
            let entries = kept
                .iter()
                .flat_map(|&c| c * member.span..(c + 1) * member.span)
                .collect();
            edits
                .entry(member.param.clone())
                .or_default()
                .push((member.axis, entries));
        }
    }
    if edits.is_empty() {
        return Ok(model.clone());
    }
    let wanted: HashSet<String> = edits.keys().cloned().collect();
    let edits: BTreeMap<String, Edit> = edits
        .into_iter()
        .map(|(path, cuts)| (path, Edit::Select(cuts)))
        .collect();
    // Not `model.clone()`: clones share their BatchNorm running statistics (burn keeps them
    // behind one lock, updated in place), so slicing a clone would slice the original too. A
    // copy through the record gets its own, synchronised across threads first.
    let device = model.device();
    let copy = model
        .copy_to(input, &device)
        .map_err(|e| ThinError::Inconsistent(e.to_string()))?;
    let (thinned, done) = params::edit(copy, &edits);
    let missing: Vec<&String> = wanted.iter().filter(|p| !done.contains(p)).collect();
    if !missing.is_empty() {
        return Err(ThinError::Inconsistent(format!(
            "group members not found in the model: {missing:?}"
        )));
    }
    check_rebuilds(&thinned, input)?;
    // Rebuilt from its spec and loaded with its own record: a layer's settings that are not
    // tensors follow its widths (a depthwise convolution's `groups` is its channel count).
    thinned
        .copy_to(input, &device)
        .map_err(|e| ThinError::Inconsistent(e.to_string()))
}

/// Checks that the spec the thinned model reports builds a model of exactly its shapes, so it
/// saves, reloads and resumes (a ResNet stage whose blocks ended up at different widths
/// would not).
pub fn check_rebuilds(model: &Model, input: &InputShape) -> Result<(), ThinError> {
    let spec = model.spec();
    let device = burn::prelude::Device::default();
    let rebuilt = Model::new(&spec, input, &device)
        .map_err(|e| ThinError::Inconsistent(format!("its spec {spec:?} is invalid: {e}")))?;
    let (have, want) = (params::shapes(model), params::shapes(&rebuilt));
    if have != want {
        let differ: Vec<String> = have
            .iter()
            .filter(|(path, shape)| want.get(*path) != Some(shape))
            .map(|(path, shape)| format!("{path} {shape:?} vs {:?}", want.get(path)))
            .collect();
        return Err(ThinError::Inconsistent(format!(
            "its spec {spec:?} builds other shapes: {}",
            differ.join(", ")
        )));
    }
    Ok(())
}

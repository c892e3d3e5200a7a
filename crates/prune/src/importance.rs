//! Channel importance over whole groups: every member of a group (the layer producing the
//! channels, the layers reading them, their BatchNorms) contributes to each channel's score,
//! as in Torch-Pruning's group importance.

use std::collections::BTreeMap;

use burn::prelude::*;
use data::{make_batch, Dataset, Preprocess, SplitMix64};
use models::params::{self, HostTensor};
use models::{ChannelGroup, GroupMember, InputShape, Model, Role};

use crate::config::Criterion;

/// Samples per batch of the Taylor criterion.
const TAYLOR_BATCH: usize = 64;

/// What the data-driven criteria read (Taylor's batches, random's seed).
pub struct ScoreData<'a> {
    pub dataset: &'a Dataset,
    pub prep: Preprocess,
    pub input: InputShape,
    /// The inference device (Taylor runs on its autodiff twin).
    pub device: Device,
    pub seed: u64,
    /// Which draw of batches / random scores this is (the pruning step).
    pub draw: usize,
    pub taylor_batches: usize,
}

/// Per-channel scores of every group of `model` (higher: more important). Taylor needs
/// gradients: `model` must then live on an autodiff device.
pub fn channel_scores(
    model: &Model,
    criterion: Criterion,
    data: &ScoreData,
) -> BTreeMap<String, Vec<f64>> {
    let groups = model.channel_groups(&data.input);
    match criterion {
        Criterion::Random => {
            let mut rng = SplitMix64::for_stream(data.seed ^ 0x9e37_79b9, data.draw as u64);
            groups
                .iter()
                .map(|g| (g.name.clone(), (0..g.width).map(|_| rng.unit()).collect()))
                .collect()
        }
        Criterion::Taylor => {
            let wanted: Vec<&str> = groups
                .iter()
                .flat_map(|g| &g.members)
                .filter(|m| scored_by_taylor(m.role))
                .map(|m| m.param.as_str())
                .collect();
            let mut scores: BTreeMap<String, Vec<f64>> = groups
                .iter()
                .map(|g| (g.name.clone(), vec![0.0; g.width]))
                .collect();
            let train = &data.dataset.train;
            let mut order: Vec<usize> = (0..train.len()).collect();
            SplitMix64::for_stream(data.seed ^ 0x7a7, data.draw as u64).shuffle(&mut order);
            let device = data.device.clone().autodiff();
            for indices in order.chunks(TAYLOR_BATCH).take(data.taylor_batches) {
                let batch = make_batch(train, indices, &data.prep, None, &device);
                let logits = model.forward(batch.images); // [batch, classes]
                let loss = models::loss::cross_entropy(logits, batch.labels);
                let grads = loss.backward();
                let products = params::grad_products(model, &grads, |p| wanted.contains(&p));
                for g in &groups {
                    if let Some(s) = scores.get_mut(&g.name) {
                        add_taylor(g, &products, s);
                    }
                }
            }
            scores
        }
        criterion => {
            let wanted: Vec<&str> = groups
                .iter()
                .flat_map(|g| &g.members)
                .map(|m| m.param.as_str())
                .collect();
            let values = params::values(model, |p| wanted.contains(&p));
            groups
                .iter()
                .map(|g| (g.name.clone(), magnitude(g, criterion, &values)))
                .collect()
        }
    }
}

/// The members whose values a magnitude criterion scores: weights (both sides) and gammas.
pub fn scored_by_magnitude(role: Role) -> bool {
    matches!(
        role,
        Role::ConvOut | Role::ConvIn | Role::LinearOut | Role::LinearIn | Role::BnGamma
    )
}

/// The members a Taylor criterion scores: everything trained (running statistics are not).
pub fn scored_by_taylor(role: Role) -> bool {
    !matches!(role, Role::BnRunningMean | Role::BnRunningVar)
}

/// Calls `f(channel, value)` for every entry of `tensor` that belongs to a channel of
/// `member` (`span` consecutive entries per channel along `axis`).
fn for_each_entry(member: &GroupMember, tensor: &HostTensor, mut f: impl FnMut(usize, f32)) {
    let axis_len = tensor.shape[member.axis];
    let inner: usize = tensor.shape[member.axis + 1..].iter().product();
    let outer: usize = tensor.shape[..member.axis].iter().product();
    for o in 0..outer {
        for e in 0..axis_len {
            let start = (o * axis_len + e) * inner;
            for &v in &tensor.values[start..start + inner] {
                f(e / member.span, v);
            }
        }
    }
}

/// Per-channel magnitude scores of `group` (L1, L2, or BatchNorm gamma).
pub fn magnitude(
    group: &ChannelGroup,
    criterion: Criterion,
    values: &BTreeMap<String, HostTensor>,
) -> Vec<f64> {
    let mut scores = vec![0.0_f64; group.width];
    let use_gamma =
        criterion == Criterion::BnGamma && group.members.iter().any(|m| m.role == Role::BnGamma);
    // L2, and BN gamma's fallback for groups without BatchNorm, sum squares then take the root.
    let squared = criterion == Criterion::L2 || (criterion == Criterion::BnGamma && !use_gamma);
    for member in &group.members {
        let counted = if use_gamma {
            member.role == Role::BnGamma
        } else {
            scored_by_magnitude(member.role)
        };
        let Some(tensor) = values.get(&member.param).filter(|_| counted) else {
            continue;
        };
        for_each_entry(member, tensor, |c, v| {
            let v = f64::from(v);
            scores[c] += if squared { v * v } else { v.abs() };
        });
    }
    if squared {
        scores.iter_mut().for_each(|s| *s = s.sqrt());
    }
    scores
}

/// Adds one batch's first-order Taylor scores of `group` to `scores`: for each channel,
/// (sum over the channel's entries in every member of w * dL/dw)^2.
pub fn add_taylor(
    group: &ChannelGroup,
    products: &BTreeMap<String, HostTensor>,
    scores: &mut [f64],
) {
    let mut sums = vec![0.0_f64; group.width];
    for member in group.members.iter().filter(|m| scored_by_taylor(m.role)) {
        if let Some(tensor) = products.get(&member.param) {
            for_each_entry(member, tensor, |c, v| sums[c] += f64::from(v));
        }
    }
    for (score, sum) in scores.iter_mut().zip(sums) {
        *score += sum * sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(param: &str, role: Role, axis: usize, span: usize) -> GroupMember {
        GroupMember {
            param: param.into(),
            role,
            axis,
            span,
        }
    }

    #[test]
    fn every_member_contributes_along_its_own_axis() {
        // Linear a: [d_in 2, d_out 3] produces 3 channels; linear b reads them with span 1.
        let group = ChannelGroup {
            name: "a".into(),
            width: 3,
            members: vec![
                member("a.weight", Role::LinearOut, 1, 1),
                member("b.weight", Role::LinearIn, 0, 1),
            ],
        };
        let values = BTreeMap::from([
            (
                "a.weight".to_string(),
                HostTensor {
                    shape: vec![2, 3],
                    values: vec![1.0, -2.0, 0.0, 1.0, 0.0, 0.0],
                },
            ),
            (
                "b.weight".to_string(),
                HostTensor {
                    shape: vec![3, 1],
                    values: vec![0.0, 0.0, 5.0],
                },
            ),
        ]);
        assert_eq!(
            magnitude(&group, Criterion::L1, &values),
            vec![2.0, 2.0, 5.0]
        );
        let l2 = magnitude(&group, Criterion::L2, &values);
        assert!((l2[0] - 2f64.sqrt()).abs() < 1e-12 && l2[1] == 2.0 && l2[2] == 5.0);
        // No BatchNorm in the group: gamma falls back to L2.
        assert_eq!(magnitude(&group, Criterion::BnGamma, &values), l2);
    }

    #[test]
    fn flattened_columns_count_for_their_channel() {
        // A conv with 2 channels flattened into 2 positions each: rows 0-1 are channel 0.
        let group = ChannelGroup {
            name: "c".into(),
            width: 2,
            members: vec![member("fc.weight", Role::LinearIn, 0, 2)],
        };
        let values = BTreeMap::from([(
            "fc.weight".to_string(),
            HostTensor {
                shape: vec![4, 1],
                values: vec![1.0, 1.0, 3.0, -3.0],
            },
        )]);
        assert_eq!(magnitude(&group, Criterion::L1, &values), vec![2.0, 6.0]);
        let mut taylor = vec![0.0; 2];
        add_taylor(&group, &values, &mut taylor);
        assert_eq!(taylor, vec![4.0, 0.0]);
    }
}

//! Pruning plans: how many channels each group keeps at each step, and which ones.
//!
//! A plan is plain data (group name to the kept channel indices), printed at each step and
//! saved in the run summary. Counts come from the targets (a uniform ratio, a MACs target,
//! per-group ratios by pattern, exclusions, `min_channels`, `round_to`); which channels is
//! the criterion's ranking.

use std::collections::BTreeMap;

use models::{InputShape, KeepPlan, Model};
use technique::Invalid;

use technique::matches;

/// What a `[prune]` section asks for (see [`crate::PruneConfig`]).
#[derive(Debug, Clone, Copy)]
pub struct Targets<'a> {
    pub ratio: Option<f64>,
    pub macs_ratio: Option<f64>,
    pub layers: &'a BTreeMap<String, f64>,
    pub exclude: &'a [String],
    pub min_channels: usize,
    pub round_to: usize,
}

/// The channels a group of `width` keeps when a fraction `ratio` is removed: the nearest
/// multiple of `round_to`, at least `min_channels`, at most `width`.
pub fn keep_count(width: usize, ratio: f64, min_channels: usize, round_to: usize) -> usize {
    if ratio <= 0.0 {
        // Nothing removed: rounding must not change a group the plan leaves alone.
        return width;
    }
    let wanted = width as f64 * (1.0 - ratio);
    let rounded = (wanted / round_to as f64).round() as usize * round_to;
    rounded.max(min_channels).min(width)
}

/// How a group's ratio is decided.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Rule {
    Excluded,
    Fixed(f64),
    Uniform,
}

fn group_names(model: &Model, input: &InputShape) -> Vec<(String, usize)> {
    model
        .channel_groups(input)
        .into_iter()
        .map(|g| (g.name, g.width))
        .collect()
}

fn rules(groups: &[(String, usize)], targets: &Targets) -> Result<BTreeMap<String, Rule>, Invalid> {
    let known = || {
        format!(
            "a pattern matching at least one channel group; this model's groups: {}",
            groups
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    for pattern in targets.exclude {
        if !groups.iter().any(|(n, _)| matches(pattern, n)) {
            return Err(Invalid::new(
                "prune.exclude",
                format!("{pattern:?}"),
                known(),
            ));
        }
    }
    for pattern in targets.layers.keys() {
        if !groups.iter().any(|(n, _)| matches(pattern, n)) {
            return Err(Invalid::new(
                &format!("prune.layers.\"{pattern}\""),
                format!("{pattern:?}"),
                known(),
            ));
        }
    }
    Ok(groups
        .iter()
        .map(|(name, _)| {
            let rule = if targets.exclude.iter().any(|p| matches(p, name)) {
                Rule::Excluded
            } else if let Some((_, &r)) = targets.layers.iter().find(|(p, _)| matches(p, name)) {
                Rule::Fixed(r)
            } else {
                Rule::Uniform
            };
            (name.clone(), rule)
        })
        .collect())
}

/// MACs of `model` with each group cut to `counts` (its first channels: the count is all that
/// matters here).
fn macs_with(
    model: &Model,
    input: &InputShape,
    counts: &BTreeMap<String, usize>,
) -> Result<u64, Invalid> {
    let plan: KeepPlan = counts
        .iter()
        .map(|(name, &n)| (name.clone(), (0..n).collect()))
        .collect();
    models::thin(model, input, &plan)
        .map(|m| m.macs(input))
        .map_err(|e| Invalid::new("prune", "(plan)", e.to_string()))
}

/// The final removal ratio of every prunable group (excluded groups are left out), after the
/// MACs search when the target is in MACs. Errors: patterns that match no group, a group a
/// ratio would empty, a MACs target the excluded and fixed groups alone already exceed.
pub fn final_ratios(
    model: &Model,
    input: &InputShape,
    targets: &Targets,
) -> Result<BTreeMap<String, f64>, Invalid> {
    let groups = group_names(model, input);
    let rules = rules(&groups, targets)?;
    let ratios_for = |uniform: f64| -> BTreeMap<String, f64> {
        rules
            .iter()
            .filter_map(|(name, rule)| match rule {
                Rule::Excluded => None,
                Rule::Fixed(r) => Some((name.clone(), *r)),
                Rule::Uniform => Some((name.clone(), uniform)),
            })
            .collect()
    };
    let counts_for = |ratios: &BTreeMap<String, f64>| -> Result<BTreeMap<String, usize>, Invalid> {
        groups
            .iter()
            .filter_map(|(name, width)| ratios.get(name).map(|r| (name, *width, *r)))
            .map(|(name, width, r)| {
                let keep = keep_count(width, r, targets.min_channels, targets.round_to);
                if keep == 0 {
                    return Err(Invalid::new(
                        "prune",
                        format!("{name} (width {width}) at ratio {r}"),
                        "the plan leaves this group without channels; lower its ratio, exclude \
                         it, or set prune.min_channels >= 1",
                    ));
                }
                Ok((name.clone(), keep))
            })
            .collect()
    };
    let Some(macs_ratio) = targets.macs_ratio else {
        let ratios = ratios_for(targets.ratio.unwrap_or(0.0));
        counts_for(&ratios)?;
        check_removes_some(&groups, &ratios, targets)?;
        check_rounding(&groups, &ratios, targets)?;
        return Ok(ratios);
    };
    let parent = model.macs(input);
    let target = (parent as f64 * (1.0 - macs_ratio)).floor() as u64;
    let most = 1.0 - 1e-9;
    let floor = macs_with(model, input, &counts_for(&ratios_for(most))?)?;
    if floor > target {
        return Err(Invalid::new(
            "prune.macs_ratio",
            macs_ratio,
            format!(
                "unreachable: with every other group at its minimum, the excluded and \
                 fixed-ratio groups alone leave {floor} MACs ({:.1}% of the parent's {parent}), \
                 above the target {target}; lower macs_ratio or prune those groups too",
                100.0 * floor as f64 / parent.max(1) as f64
            ),
        ));
    }
    // The smallest uniform ratio that meets the target (MACs fall as the ratio grows).
    let (mut lo, mut hi) = (0.0_f64, most);
    if macs_with(model, input, &counts_for(&ratios_for(lo))?)? <= target {
        hi = lo;
    }
    for _ in 0..40 {
        if hi - lo < 1e-6 {
            break;
        }
        let mid = 0.5 * (lo + hi);
        if macs_with(model, input, &counts_for(&ratios_for(mid))?)? <= target {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    let ratios = ratios_for(hi);
    check_removes_some(&groups, &ratios, targets)?;
    check_rounding(&groups, &ratios, targets)?;
    Ok(ratios)
}

/// Refuses a plan under which no group loses a channel: every step would be fine-tuning
/// that prunes nothing. Names the setting that stops it.
fn check_removes_some(
    groups: &[(String, usize)],
    ratios: &BTreeMap<String, f64>,
    targets: &Targets,
) -> Result<(), Invalid> {
    let narrowed = groups.iter().any(|(name, width)| {
        ratios.get(name).is_some_and(|&r| {
            keep_count(*width, r, targets.min_channels, targets.round_to) < *width
        })
    });
    if narrowed {
        return Ok(());
    }
    let widest = groups.iter().map(|(_, w)| *w).max().unwrap_or(0);
    let (key, value, why) = if ratios.is_empty() {
        (
            "prune.exclude",
            format!("{:?}", targets.exclude),
            "excludes every channel group".to_string(),
        )
    } else if targets.min_channels >= widest {
        (
            "prune.min_channels",
            targets.min_channels.to_string(),
            format!("keeps every channel of every group (the widest has {widest})"),
        )
    } else {
        (
            "prune",
            "(targets)".to_string(),
            "removes no channel from any group at these ratios".to_string(),
        )
    };
    Err(Invalid::new(
        key,
        value,
        format!(
            "this pruning plan {why}, so the stage would prune nothing; groups: {}",
            groups
                .iter()
                .map(|(n, w)| format!("{n} ({w})"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ))
}

/// Refuses a plan that `prune.round_to` would carry far from its target: a rounding step
/// larger than a group it prunes, or a count more than one step from what the ratio asks
/// (`round_to = 1000` on LeNet-5 would cut every group to 1 channel for a 2x target).
fn check_rounding(
    groups: &[(String, usize)],
    ratios: &BTreeMap<String, f64>,
    targets: &Targets,
) -> Result<(), Invalid> {
    let step = targets.round_to;
    let plan = || {
        groups
            .iter()
            .map(|(name, width)| {
                let after = ratios.get(name).map_or(*width, |&r| {
                    keep_count(*width, r, targets.min_channels, step)
                });
                format!("{name} {width}->{after}")
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (name, width) in groups {
        let Some(&ratio) = ratios.get(name).filter(|&&r| r > 0.0) else {
            continue;
        };
        let wanted = *width as f64 * (1.0 - ratio);
        let keep = keep_count(*width, ratio, targets.min_channels, step);
        // A count the `min_channels` floor raised is what the user asked for.
        let floored = targets.min_channels as f64 > wanted;
        if step > *width || ((keep as f64 - wanted).abs() > step as f64 && !floored) {
            return Err(Invalid::new(
                "prune.round_to",
                step,
                format!(
                    "group {name} has {width} channels and its ratio {ratio:.3} asks to keep \
                     {wanted:.1}; rounding to multiples of {step} would keep {keep}. The plan \
                     would be: {}. Use a round_to no larger than the narrowest pruned group",
                    plan()
                ),
            ));
        }
    }
    Ok(())
}

/// Each prunable group's width now and after the last step, for a model of `spec` (widths
/// only: nothing is initialised), e.g. for `train check`.
pub fn final_widths(
    spec: &models::ModelSpec,
    input: &InputShape,
    targets: &Targets,
) -> Result<Vec<(String, usize, usize)>, Invalid> {
    let model = Model::new(spec, input, &burn::prelude::Device::default())
        .map_err(|e| Invalid::new("from", format!("{spec:?}"), e.to_string()))?;
    let widths: BTreeMap<String, usize> = group_names(&model, input).into_iter().collect();
    let ratios = final_ratios(&model, input, targets)?;
    let counts = step_counts(&widths, &ratios, 1.0, targets);
    Ok(group_names(&model, input)
        .into_iter()
        .map(|(name, width)| {
            let after = counts.get(&name).copied().unwrap_or(width);
            (name, width, after)
        })
        .collect())
}

/// The counts each group keeps after a step that reaches `fraction` of the final ratios, for
/// groups of the original `widths`.
pub fn step_counts(
    widths: &BTreeMap<String, usize>,
    ratios: &BTreeMap<String, f64>,
    fraction: f64,
    targets: &Targets,
) -> BTreeMap<String, usize> {
    ratios
        .iter()
        .filter_map(|(name, r)| {
            let width = *widths.get(name)?;
            Some((
                name.clone(),
                keep_count(width, r * fraction, targets.min_channels, targets.round_to),
            ))
        })
        .collect()
}

/// The `count` highest-scoring channels, in their original order (ties keep the lower
/// index).
pub fn top_channels(scores: &[f64], count: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let mut kept: Vec<usize> = order.into_iter().take(count).collect();
    kept.sort_unstable();
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_counts_round_and_respect_the_floor() {
        assert_eq!(keep_count(16, 0.5, 1, 1), 8);
        assert_eq!(keep_count(16, 0.5, 1, 8), 8);
        assert_eq!(keep_count(20, 0.5, 1, 8), 8); // 10 rounds to 8
        assert_eq!(keep_count(6, 0.9, 1, 1), 1);
        assert_eq!(keep_count(6, 0.9, 0, 1), 1); // 0.6 rounds to 1
        assert_eq!(keep_count(6, 0.95, 0, 1), 0);
        assert_eq!(keep_count(6, 0.0, 8, 1), 6); // never more than the width
    }

    #[test]
    fn top_channels_keeps_the_best_in_order() {
        assert_eq!(top_channels(&[0.1, 0.9, 0.5, 0.7], 2), vec![1, 3]);
        assert_eq!(top_channels(&[1.0, 1.0, 1.0], 2), vec![0, 1]);
    }
}

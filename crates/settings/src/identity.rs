//! Run identity: the hash naming a stage's run folder.
//!
//! 12 hex digits of SHA-256 over the config's canonical JSON (keys sorted), with the execution
//! settings left out and every parent key's path replaced by the parent's own identity (its
//! hash, or a model file's SHA-256), so a changed parent means a new stage. Nothing here
//! knows which technique named a parent.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::context::Execution;
use crate::schema::StageConfig;

/// The identity of `config` whose parents (dotted key, parent identity) are `parents`.
pub fn stage_hash(config: &StageConfig, parents: &[(String, String)]) -> String {
    let mut value = serde_json::to_value(config).unwrap_or(Value::Null);
    for key in Execution::KEYS {
        remove(&mut value, key);
    }
    for (key, identity) in parents {
        set(&mut value, key, Value::String(format!("hash:{identity}")));
    }
    let canonical = serde_json::to_vec(&value).unwrap_or_default();
    hex::encode(&Sha256::digest(&canonical)[..6])
}

/// What a run records as its hyperparameters (TensorBoard's HParams): every leaf of the
/// resolved config as a dotted key (`train.optimizer.lr`, `model.hidden`), without the
/// execution settings (they do not change the result), the name and the parents' paths (the
/// run records its parent by name).
pub fn hparams(
    config: &StageConfig,
    parents: &[String],
) -> Vec<(String, measure::hparams::HValue)> {
    let value = serde_json::to_value(config).unwrap_or(Value::Null);
    let skip = |key: &str| {
        key == "name"
            || parents.iter().any(|p| p == key)
            || Execution::KEYS
                .iter()
                .any(|k| key == *k || key.starts_with(&format!("{k}.")))
    };
    let mut out = Vec::new();
    measure::hparams::leaves("", &value, &skip, &mut out);
    out
}

/// A run as TensorBoard's HParams see it: what made it (`technique`, `parent`, from its
/// summary when it finished) and every key of its resolved config ([`hparams`]).
pub fn run_hparams(
    loaded: &crate::LoadedConfig,
    summary: Option<&measure::RunSummary>,
) -> Vec<(String, measure::hparams::HValue)> {
    use measure::hparams::HValue;
    let parent_keys: Vec<String> = loaded.parents.iter().map(|p| p.key.clone()).collect();
    let mut out = Vec::new();
    if let Some(summary) = summary {
        out.push(("technique".to_string(), HValue::Text(summary.technique())));
        // `none` rather than absent: a key some sessions lack drops them from TensorBoard's
        // parallel coordinates.
        let parent = summary.parent.as_ref().map_or("none", |p| p.name.as_str());
        out.push(("parent".to_string(), HValue::Text(parent.to_string())));
    }
    out.extend(hparams(&loaded.config, &parent_keys));
    out
}

/// The identity of a stage `hash` run with `extras` that change its result (test hooks).
pub fn with_extras(hash: &str, extras: &[String]) -> String {
    let mut digest = Sha256::new();
    digest.update(hash.as_bytes());
    for extra in extras {
        digest.update(b"\0");
        digest.update(extra.as_bytes());
    }
    hex::encode(&digest.finalize()[..6])
}

fn remove(value: &mut Value, key: &str) {
    let (parent, last) = match key.rsplit_once('.') {
        Some((parent, last)) => (lookup(value, parent), last),
        None => (Some(value), key),
    };
    if let Some(Value::Object(map)) = parent {
        map.remove(last);
    }
}

fn set(value: &mut Value, key: &str, new: Value) {
    let (parent, last) = match key.rsplit_once('.') {
        Some((parent, last)) => (lookup(value, parent), last),
        None => (Some(value), key),
    };
    if let Some(Value::Object(map)) = parent {
        map.insert(last.to_string(), new);
    }
}

fn lookup<'a>(value: &'a mut Value, dotted: &str) -> Option<&'a mut Value> {
    dotted
        .split('.')
        .try_fold(value, |v, part| v.as_object_mut()?.get_mut(part))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> StageConfig {
        toml::from_str(&format!(
            "name = \"t\"\n{extra}\n[data]\ndataset = \"digits\"\n[model]\nkind = \"mlp\"\nhidden = [8]\n\
             [train]\nepochs = 1\noptimizer = {{ kind = \"sgd\", lr = 0.1 }}\n"
        ))
        .unwrap()
    }

    #[test]
    fn execution_settings_are_not_identity() {
        let base = stage_hash(&config(""), &[]);
        let mut other = config("device = \"cpu\"\nthreads = 1");
        other.measure.latency_images = 100;
        other.train.log_every = 7;
        other.train.eval_batch_size = 10;
        other.output.dir = "elsewhere".into();
        assert_eq!(stage_hash(&other, &[]), base);
        assert_ne!(stage_hash(&config("seed = 2"), &[]), base);
    }

    #[test]
    fn a_parent_is_identified_by_its_hash_not_its_path() {
        let mut a = config("");
        a.from = Some("a.toml".into());
        let mut b = config("");
        b.from = Some("b.toml".into());
        let same = [("from".to_string(), "abc".to_string())];
        assert_eq!(stage_hash(&a, &same), stage_hash(&b, &same));
        let other = [("from".to_string(), "abd".to_string())];
        assert_ne!(stage_hash(&a, &same), stage_hash(&a, &other));
    }
}

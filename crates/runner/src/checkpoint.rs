//! Checkpoints: everything needed to continue a run exactly where an epoch ended.
//!
//! One file holds the training state (JSON), the model record and the optimiser state,
//! followed by a SHA-256 of all of it; it is written with [`write_atomic`], so a run killed at
//! any moment finds either the previous checkpoint or the new one, whole.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use settings::run_dir::write_atomic;

const MAGIC: &[u8; 8] = b"CMPCKPT1";

/// The largest checkpoint read back: a model at the 2^28-parameter cap with two optimiser
/// moments (3 GiB) and its state, with room to spare.
const MAX_CHECKPOINT_BYTES: u64 = 4 << 30;

/// One scalar of the run's history, replayed into TensorBoard when a run resumes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScalarPoint {
    pub tag: String,
    pub step: usize,
    pub value: f64,
}

/// Where training stands after a completed epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// The identity of the run that wrote this checkpoint: its name, its hash (the run
    /// folder's name) and the architecture it started from. Compared on resume
    /// ([`TrainState::check_owner`]): a checkpoint copied or moved into another run's folder
    /// is refused, never resumed.
    #[serde(default)]
    pub run_name: String,
    pub config_hash: String,
    #[serde(default)]
    pub start_model: Option<models::ModelSpec>,
    /// The model's spec as it stands at this checkpoint (a technique may have narrowed it):
    /// resume rebuilds the model from it before loading the weights.
    pub model_spec: models::ModelSpec,
    pub epochs_done: usize,
    pub global_step: usize,
    /// Seconds spent training so far, across restarts.
    pub train_seconds: f64,
    /// Seconds spent in forward/backward/step only (for samples/s).
    pub step_seconds: f64,
    pub samples_seen: u64,
    pub history: Vec<ScalarPoint>,
    /// Each technique's own state ([`technique::Technique::state`]), in stage order.
    #[serde(default)]
    pub technique_state: Vec<serde_json::Value>,
}

/// The run a checkpoint must belong to, to be resumed.
pub struct Owner<'a> {
    pub name: &'a str,
    pub hash: &'a str,
    pub start_model: &'a models::ModelSpec,
}

impl<'a> Owner<'a> {
    /// The run `loaded` describes.
    pub fn of(loaded: &'a settings::LoadedConfig) -> Self {
        Self {
            name: &loaded.config.name,
            hash: &loaded.hash,
            start_model: &loaded.model,
        }
    }
}

impl TrainState {
    /// `Ok` when this state was written by the run `owner`; otherwise the reason, naming both
    /// runs. A checkpoint from before identities were recorded in full carries only the hash.
    pub fn check_owner(&self, owner: &Owner) -> Result<(), String> {
        let same_name = self.run_name.is_empty() || self.run_name == owner.name;
        let same_model = self
            .start_model
            .as_ref()
            .is_none_or(|m| m.clone().normalized() == owner.start_model.clone().normalized());
        if self.config_hash == owner.hash && same_name && same_model {
            return Ok(());
        }
        let describe = |name: &str, hash: &str, model: Option<&models::ModelSpec>| {
            let model = model.map_or_else(
                || "model not recorded".to_string(),
                |m| format!("a {} model {m:?}", m.kind()),
            );
            let name = if name.is_empty() { "?" } else { name };
            format!("run {name}/{hash} ({model})")
        };
        Err(format!(
            "it was written by {}, not by this {}: it is not this run's and was not resumed. Move \
             it back to its own run folder, or delete it to train this run from the start",
            describe(&self.run_name, &self.config_hash, self.start_model.as_ref()),
            describe(owner.name, owner.hash, Some(owner.start_model)),
        ))
    }
}

#[derive(Debug)]
pub struct Checkpoint {
    pub state: TrainState,
    pub model: Vec<u8>,
    pub optimizer: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
#[error("checkpoint {path}: {reason}")]
pub struct CheckpointError {
    pub path: String,
    pub reason: String,
}

impl Checkpoint {
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let state = serde_json::to_vec(&self.state).expect("state serialises");
        let mut bytes = MAGIC.to_vec();
        for part in [&state, &self.model, &self.optimizer] {
            bytes.extend_from_slice(&(part.len() as u64).to_le_bytes());
            bytes.extend_from_slice(part);
        }
        let digest = Sha256::digest(&bytes);
        bytes.extend_from_slice(&digest);
        write_atomic(path, &bytes)
    }

    pub fn load(path: &Path) -> Result<Self, CheckpointError> {
        let err = |reason: String| CheckpointError {
            path: path.display().to_string(),
            reason,
        };
        let bytes =
            safeio::read_bounded(path, MAX_CHECKPOINT_BYTES).map_err(|e| CheckpointError {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
        if bytes.len() < MAGIC.len() + 32 || &bytes[..MAGIC.len()] != MAGIC {
            return Err(err("not a checkpoint of this tool".into()));
        }
        let (body, digest) = bytes.split_at(bytes.len() - 32);
        if Sha256::digest(body).as_slice() != digest {
            return Err(err(
                "checksum mismatch (corrupt file); delete it to start over".into(),
            ));
        }
        let mut at = MAGIC.len();
        let mut parts = Vec::new();
        for _ in 0..3 {
            let len = body
                .get(at..at + 8)
                .map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize)
                .ok_or_else(|| err("truncated".into()))?;
            let part = body
                .get(at + 8..at + 8 + len)
                .ok_or_else(|| err("truncated".into()))?;
            parts.push(part.to_vec());
            at += 8 + len;
        }
        let optimizer = parts.pop().unwrap();
        let model = parts.pop().unwrap();
        let state = serde_json::from_slice(&parts[0]).map_err(|e| err(e.to_string()))?;
        Ok(Self {
            state,
            model,
            optimizer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.bin");
        let ckpt = Checkpoint {
            state: TrainState {
                run_name: "r".into(),
                config_hash: "abc".into(),
                start_model: None,
                model_spec: models::ModelSpec::Mlp {
                    hidden: vec![4],
                    dropout: 0.0,
                    input_dropout: 0.0,
                },
                epochs_done: 2,
                global_step: 10,
                train_seconds: 1.5,
                step_seconds: 1.0,
                samples_seen: 100,
                history: vec![ScalarPoint {
                    tag: "t".into(),
                    step: 1,
                    value: 0.5,
                }],
                technique_state: vec![serde_json::json!({"kept": [1, 2]})],
            },
            model: vec![1, 2, 3],
            optimizer: vec![4, 5],
        };
        ckpt.save(&path).unwrap();
        let back = Checkpoint::load(&path).unwrap();
        assert_eq!(back.state, ckpt.state);
        assert_eq!((back.model, back.optimizer), (vec![1, 2, 3], vec![4, 5]));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[20] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(Checkpoint::load(&path)
            .unwrap_err()
            .reason
            .contains("checksum"));
    }
}

#[cfg(test)]
mod owner_tests {
    use super::*;

    fn state(name: &str, hash: &str, model: models::ModelSpec) -> TrainState {
        TrainState {
            run_name: name.into(),
            config_hash: hash.into(),
            start_model: Some(model.clone()),
            model_spec: model,
            epochs_done: 1,
            global_step: 1,
            train_seconds: 0.0,
            step_seconds: 0.0,
            samples_seen: 1,
            history: Vec::new(),
            technique_state: Vec::new(),
        }
    }

    #[test]
    fn only_the_run_that_wrote_a_checkpoint_may_resume_it() {
        let mlp = models::ModelSpec::Mlp {
            hidden: vec![4],
            dropout: 0.0,
            input_dropout: 0.0,
        };
        let lenet = models::ModelSpec::LeNet5 {
            channels: [6, 16],
            fc: [120, 84],
        };
        let owner = Owner {
            name: "a",
            hash: "h1",
            start_model: &mlp,
        };
        assert!(state("a", "h1", mlp.clone()).check_owner(&owner).is_ok());
        let other_seed = state("a", "h2", mlp.clone())
            .check_owner(&owner)
            .unwrap_err();
        assert!(other_seed.contains("run a/h2") && other_seed.contains("run a/h1"));
        let other_model = state("a", "h1", lenet).check_owner(&owner).unwrap_err();
        assert!(other_model.contains("lenet5"), "{other_model}");
        assert!(state("b", "h1", mlp.clone()).check_owner(&owner).is_err());
    }
}

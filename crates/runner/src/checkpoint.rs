//! Checkpoints: everything needed to continue a run exactly where an epoch ended.
//!
//! One file holds the training state (JSON), the model record and the optimiser state,
//! followed by a SHA-256 of all of it; it is written with [`write_atomic`], so a run killed at
//! any moment finds either the previous checkpoint or the new one, whole.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::run_dir::write_atomic;

const MAGIC: &[u8; 8] = b"CMPCKPT1";

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
    pub config_hash: String,
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
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
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
                config_hash: "abc".into(),
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

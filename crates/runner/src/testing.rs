//! Test-only technique, switched on by an environment variable like the other fault
//! injections: `TRAIN_TEST_NARROW_AFTER_EPOCH=N` halves the first hidden layer of an MLP
//! after epoch N (keeping its first units). It exercises the reshape seam end to end through
//! the real binary: the loop rebuilding its optimiser, the checkpoint recording the new spec,
//! kill -9 and resume, and the narrower model file reloading for bench, profile and as a
//! teacher. Pruning proper lives in its own crate.

use burn::module::Param;
use burn::nn::{Linear, LinearConfig};
use models::Model;
use technique::{Technique, TechniqueError, Trainee};

pub const NARROW_ENV: &str = "TRAIN_TEST_NARROW_AFTER_EPOCH";

pub struct NarrowAfterEpoch {
    /// 1-based epoch after which to narrow.
    after: usize,
}

impl NarrowAfterEpoch {
    pub fn from_env() -> Option<Self> {
        let after = std::env::var(NARROW_ENV).ok()?.parse().ok()?;
        Some(Self { after })
    }
}

/// `linear` with only the input rows `rows` and output columns `cols` kept.
fn slice_linear(linear: &Linear, rows: usize, cols: usize) -> Linear {
    let device = linear.weight.val().device();
    let mut out = LinearConfig::new(rows, cols)
        .with_bias(linear.bias.is_some())
        .init(&device);
    out.weight = Param::from_tensor(linear.weight.val().slice([0..rows, 0..cols]).detach());
    out.bias = linear
        .bias
        .as_ref()
        .map(|b| Param::from_tensor(b.val().narrow(0, 0, cols).detach()));
    out
}

impl Technique for NarrowAfterEpoch {
    fn name(&self) -> &'static str {
        "test-narrow"
    }

    fn after_epoch(
        &mut self,
        epoch: usize,
        mut trainee: Trainee,
    ) -> Result<Trainee, TechniqueError> {
        if epoch + 1 != self.after {
            return Ok(trainee);
        }
        let Model::Mlp(mlp) = &mut trainee.model else {
            return Err(TechniqueError {
                technique: "test-narrow",
                message: "narrows MLPs only".into(),
            });
        };
        let [d_in, width] = mlp.layers[0].weight.dims();
        let keep = (width / 2).max(1);
        let next_out = mlp.layers[1].weight.dims()[1];
        mlp.layers[0] = slice_linear(&mlp.layers[0], d_in, keep);
        mlp.layers[1] = slice_linear(&mlp.layers[1], keep, next_out);
        Ok(trainee)
    }
}

//! The technique behind the `TRAIN_TEST_NARROW_AFTER_EPOCH` test hook
//! ([`settings::testing`]): it halves an MLP's first hidden layer after an epoch, so the
//! end-to-end tests can exercise a model that changes shape mid-run (what pruning does)
//! through the real binary. It is not in the registry of techniques: the stage adds it when
//! the hook is set, and a run under the hook has a run folder of its own.

use burn::module::Param;
use burn::nn::{Linear, LinearConfig};
use models::Model;
use settings::testing::TestHooks;
use technique::{Technique, TechniqueError, Trainee};

/// The test-only techniques `hooks` ask for (none for an ordinary run).
pub fn from_hooks<'a>(hooks: &TestHooks) -> Vec<Box<dyn Technique + 'a>> {
    hooks
        .narrow_after_epoch
        .map(|after| Box::new(NarrowAfterEpoch::new(after)) as Box<dyn Technique>)
        .into_iter()
        .collect()
}

pub struct NarrowAfterEpoch {
    /// 1-based epoch after which to narrow.
    after: usize,
}

impl NarrowAfterEpoch {
    pub fn new(after: usize) -> Self {
        Self { after }
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

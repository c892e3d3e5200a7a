//! CPU data parallelism: a training step split across model replicas.
//!
//! flex runs much of a small model's step on one thread (elementwise ops, BatchNorm, max-pool
//! with indices are serial; STACK.md measured 127% CPU on 2 cores), so two replicas, each on
//! its own one-thread pool and each forwarding and backpropagating part of the batch, use the
//! machine better than one model on a two-thread pool. Replicas sharing one pool gained nothing.
//!
//! Each replica is a view of the trainee made with `valid().train()`: fresh autodiff leaves
//! over the same weight buffers (nothing is copied) and its own BatchNorm running statistics.
//! A replica's loss is weighted by its share of the batch, so the gradients, summed replica by
//! replica in a fixed order, are the whole batch's; one optimiser step follows. The running
//! statistics are combined the same way (weighted by share, fixed order): the running mean is
//! exactly the single-replica one, the running variance misses only the spread between the
//! shards' means. Dropout masks come from per-sample streams ([`models::dropout`]), so they do
//! not depend on which replica or thread draws them. The result depends on the seed and the
//! replica count only, never on thread timing.

use std::sync::Mutex;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use technique::Trainee;

use crate::error::RunError;

/// One single-thread compute pool per replica.
pub struct Replicas {
    pools: Vec<rayon::ThreadPool>,
}

impl Replicas {
    /// `count` replicas (at least 1).
    pub fn new(count: usize) -> Result<Self, RunError> {
        let pools = (0..count.max(1))
            .map(|_| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(1)
                    .build()
                    .map_err(|e| RunError::Threads {
                        threads: count,
                        message: e.to_string(),
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { pools })
    }

    pub fn count(&self) -> usize {
        self.pools.len()
    }

    /// Runs `work(r)` for `r` in `0..count`, each on its own pool, concurrently; returns the
    /// results in replica order. `count` is at most [`Replicas::count`]: dropping work silently
    /// would drop part of a batch's gradient, so more is a bug and panics.
    pub fn run<T: Send>(&self, count: usize, work: impl Fn(usize) -> T + Sync) -> Vec<T> {
        assert!(
            count <= self.pools.len(),
            "{count} parts of work for {} replicas",
            self.pools.len()
        );
        if count == 0 {
            return Vec::new();
        }
        let slots: Vec<Mutex<Option<T>>> = (0..count).map(|_| Mutex::new(None)).collect();
        self.run_from(0, count, &work, &slots);
        slots
            .into_iter()
            .map(|slot| {
                slot.into_inner()
                    .unwrap_or_else(|e| e.into_inner())
                    .expect("every replica's work ran")
            })
            .collect()
    }

    /// Hands replica `r`'s work to its pool and runs the rest from this thread; the last one
    /// runs here, inside its own pool. A panic in any replica reaches the caller.
    fn run_from<T: Send>(
        &self,
        r: usize,
        count: usize,
        work: &(impl Fn(usize) -> T + Sync),
        slots: &[Mutex<Option<T>>],
    ) {
        let store = |r: usize, value: T| {
            *slots[r].lock().unwrap_or_else(|e| e.into_inner()) = Some(value);
        };
        if r + 1 == count {
            store(r, self.pools[r].install(|| work(r)));
            return;
        }
        self.pools[r].in_place_scope(|scope| {
            scope.spawn(|_| store(r, work(r)));
            self.run_from(r + 1, count, work, slots);
        });
    }
}

/// The replicas' views of `trainee`: new autodiff leaves over the same weights, with their own
/// BatchNorm running statistics.
pub fn views(trainee: &Trainee, count: usize) -> Vec<Trainee> {
    (0..count).map(|_| trainee.valid().train()).collect()
}

/// Sums the replicas' gradients parameter by parameter, in replica order.
pub fn sum_gradients(trainee: &Trainee, mut parts: Vec<GradientsParams>) -> GradientsParams {
    struct Sum<'a> {
        parts: &'a mut [GradientsParams],
        out: GradientsParams,
    }
    impl ModuleVisitor for Sum<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let mut sum: Option<Tensor<D>> = None;
            for grads in self.parts.iter_mut() {
                if let Some(g) = grads.remove::<D>(param.id) {
                    sum = Some(match sum {
                        Some(s) => s + g,
                        None => g,
                    });
                }
            }
            if let Some(sum) = sum {
                self.out.register(param.id, sum);
            }
        }
    }
    let mut visitor = Sum {
        parts: &mut parts,
        out: GradientsParams::new(),
    };
    trainee.visit(&mut visitor);
    visitor.out
}

/// `trainee` with BatchNorm running statistics combined from the replicas' `views`: each
/// replica's weighted by its share `weights[r]` of the batch, added in replica order.
pub fn combine_running_stats(trainee: Trainee, views: &[Trainee], weights: &[f64]) -> Trainee {
    let mut combined: Option<Vec<Tensor<1>>> = None;
    for (view, &weight) in views.iter().zip(weights) {
        let stats = models::params::running_stats(&view.model.valid());
        if stats.is_empty() {
            return trainee;
        }
        let weighted = stats.into_iter().map(|s| s.mul_scalar(weight));
        combined = Some(match combined {
            None => weighted.collect(),
            Some(sums) => sums.into_iter().zip(weighted).map(|(a, b)| a + b).collect(),
        });
    }
    match combined {
        Some(stats) => Trainee {
            model: models::params::set_running_stats(trainee.model, stats),
            aux: trainee.aux,
        },
        None => trainee,
    }
}

/// Splits a batch of `n` samples into at most `count` contiguous shards of near-equal size:
/// `(offset, len)` each, none empty.
pub fn shard_ranges(n: usize, count: usize) -> Vec<(usize, usize)> {
    let count = count.clamp(1, n.max(1));
    let (base, extra) = (n / count, n % count);
    let mut offset = 0;
    (0..count)
        .map(|r| {
            let len = base + usize::from(r < extra);
            let range = (offset, len);
            offset += len;
            range
        })
        .filter(|&(_, len)| len > 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::{train_step, Shard, StageForward, StepKey};
    use burn::tensor::Distribution;
    use models::{InputShape, Model, ModelSpec};

    /// A LeNet-5 trainee on the autodiff device, the same weights every call.
    fn lenet() -> Trainee {
        let device = Device::flex().autodiff();
        device.seed(11);
        let spec: ModelSpec = toml::from_str("kind = \"lenet5\"").unwrap();
        let input = InputShape {
            channels: 1,
            height: 28,
            width: 28,
            classes: 10,
        };
        Trainee {
            model: Model::new(&spec, &input, &device).unwrap(),
            aux: Vec::new(),
        }
    }

    /// One SGD step of `trainee` on `images` split into `shards` (on replicas when > 1);
    /// returns the trainee and the step's loss.
    fn step(trainee: Trainee, images: &Tensor<4>, labels: &[i64], shards: usize) -> (Trainee, f64) {
        let config = settings::schema::OptimizerConfig::Sgd {
            lr: 0.1,
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        };
        let mut optim = crate::optim::build_optimizer(&config);
        let indices: Vec<usize> = (0..labels.len()).collect();
        let parts = Shard::split(images, labels, &indices, shards);
        let replicas = Replicas::new(shards).unwrap();
        let outcome = train_step(
            trainee,
            &mut optim,
            StageForward {
                loss: &technique::CrossEntropy,
                hook: None,
            },
            &parts,
            (shards > 1).then_some(&replicas),
            StepKey { seed: 1, step: 0 },
            0.1,
            false,
        )
        .unwrap_or_else(|loss| panic!("non-finite loss {loss}"));
        (outcome.trainee, outcome.loss)
    }

    fn host(t: Tensor<1>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn replicas_combine_batchnorm_statistics_like_one_batch() {
        let device = Device::flex().autodiff();
        device.seed(5);
        let images = Tensor::<4>::random([16, 1, 28, 28], Distribution::Normal(0.0, 1.0), &device);
        let labels: Vec<i64> = (0..16).map(|i| i % 10).collect();
        // One initialisation for both (other tests draw from flex's global RNG concurrently, so
        // two seeded initialisations need not agree); each run on its own copy, whose running
        // statistics are its own (a plain clone would share them).
        let net = lenet();
        let stats = |t: &Trainee| models::params::running_stats(&t.model.valid());
        let before = stats(&net);
        let (one, loss_one) = step(net.valid().train(), &images, &labels, 1);
        let (two, loss_two) = step(net.valid().train(), &images, &labels, 2);
        assert!(
            (loss_one - loss_two).abs() < 0.05 * loss_one,
            "{loss_one} vs {loss_two}"
        );
        let (a, b) = (stats(&one), stats(&two));
        assert_eq!(a.len(), 4, "two BatchNorms, mean and variance each");
        for (k, ((a, b), before)) in a.into_iter().zip(b).zip(before).enumerate() {
            let (a, b, before) = (host(a), host(b), host(before));
            assert_ne!(a, before, "statistic {k} was updated");
            for (x, y) in a.iter().zip(&b) {
                // The first BatchNorm sees the same inputs either way: its running mean is
                // exactly the whole batch's (up to rounding). Its running variance misses the
                // spread between the halves' means, and the second BatchNorm's inputs went
                // through the first's per-half normalisation: close, not equal.
                let tolerance = if k == 0 { 1e-6 } else { 1e-3 + 0.02 * x.abs() };
                assert!((x - y).abs() <= tolerance, "statistic {k}: {x} vs {y}");
            }
        }
    }

    #[test]
    fn shards_cover_the_batch_in_order() {
        assert_eq!(shard_ranges(10, 3), vec![(0, 4), (4, 3), (7, 3)]);
        assert_eq!(shard_ranges(2, 4), vec![(0, 1), (1, 1)]);
        assert_eq!(shard_ranges(64, 1), vec![(0, 64)]);
    }

    #[test]
    fn replicas_run_in_order_on_their_own_threads() {
        let replicas = Replicas::new(3).unwrap();
        let ids = replicas.run(3, |r| (r, std::thread::current().id()));
        assert_eq!(ids.iter().map(|(r, _)| *r).collect::<Vec<_>>(), [0, 1, 2]);
        let mut threads: Vec<_> = ids.iter().map(|(_, t)| format!("{t:?}")).collect();
        threads.sort();
        threads.dedup();
        assert_eq!(threads.len(), 3, "{threads:?}");
    }
}

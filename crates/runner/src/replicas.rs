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

    /// Runs `work(r)` for `r` in `0..count` (at most [`Replicas::count`]), each on its own
    /// pool, concurrently; returns the results in replica order.
    pub fn run<T: Send>(&self, count: usize, work: impl Fn(usize) -> T + Sync) -> Vec<T> {
        let count = count.min(self.pools.len());
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

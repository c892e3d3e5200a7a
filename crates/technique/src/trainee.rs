//! What the optimiser trains.

use burn::module::Param;
use burn::nn::Linear;
use burn::prelude::*;
use models::Model;

/// A module a technique keeps beside the model: trained with it and checkpointed with it,
/// dropped from the final model file.
#[derive(Module, Debug)]
pub enum Aux {
    /// A learned linear map, e.g. a hint adapter `[d_student, d_teacher]`.
    Linear(Linear),
    /// A tensor of technique state, e.g. a mask or an observer's range. Create state that
    /// must not be trained with `Param::from_tensor(t).set_require_grad(false)`: it gets no
    /// gradient, so the optimiser leaves it alone, and it is still checkpointed.
    Tensor(Param<Tensor<1>>),
}

/// The model plus its technique modules. The loop checkpoints the whole trainee, so a killed
/// run resumes with its adapters and masks exactly as they were.
#[derive(Module, Debug)]
pub struct Trainee {
    pub model: Model,
    pub aux: Vec<Aux>,
}

impl Trainee {
    /// The `index`-th aux module when it is a linear map.
    pub fn aux_linear(&self, index: usize) -> Option<&Linear> {
        match self.aux.get(index)? {
            Aux::Linear(linear) => Some(linear),
            Aux::Tensor(_) => None,
        }
    }
}

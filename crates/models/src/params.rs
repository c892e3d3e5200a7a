//! Parameters by path: read a model's tensors (shapes without initialising them, values on the
//! host) and edit them in place (slice channels away, apply masks, replace values).
//!
//! Paths are the ones [`crate::ChannelGroup`] members use: relative to the architecture struct,
//! enum variants left out (`conv1.conv.weight`, `blocks.0.conv2.bn.running_var`), the same
//! names burn's stores use with `skip_enum_variants`.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::TensorData;

use crate::Model;

/// The module path a visitor or mapper is at.
#[derive(Default)]
struct PathStack(Vec<String>);

impl PathStack {
    fn enter(&mut self, name: &str, container_type: &str) {
        if !container_type.starts_with("Enum:") {
            self.0.push(name.to_string());
        }
    }

    fn exit(&mut self, container_type: &str) {
        if !container_type.starts_with("Enum:") {
            self.0.pop();
        }
    }

    fn path(&self) -> String {
        self.0.join(".")
    }
}

/// Every float tensor's shape (parameters and BatchNorm running statistics), by path, read
/// without initialising anything.
pub fn shapes(model: &Model) -> BTreeMap<String, Vec<usize>> {
    struct Shapes {
        at: PathStack,
        out: BTreeMap<String, Vec<usize>>,
    }
    impl ModuleVisitor for Shapes {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.at.enter(name, container_type);
        }
        fn exit_module(&mut self, _name: &str, container_type: &str) {
            self.at.exit(container_type);
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.out
                .insert(self.at.path(), param.lazy_shape().dims::<D>().to_vec());
        }
    }
    let mut visitor = Shapes {
        at: PathStack::default(),
        out: BTreeMap::new(),
    };
    model.visit(&mut visitor);
    visitor.out
}

/// A tensor's values on the host, row-major, with its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

impl HostTensor {
    /// A copy of `tensor` on the host.
    pub fn from_tensor<const D: usize>(tensor: Tensor<D>) -> Self {
        let shape = tensor.dims().to_vec();
        let values = tensor
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap_or_default();
        Self { shape, values }
    }
}

/// The values of the float tensors whose path `wanted` accepts, copied to the host.
pub fn values(model: &Model, wanted: impl Fn(&str) -> bool) -> BTreeMap<String, HostTensor> {
    struct Values<F> {
        at: PathStack,
        wanted: F,
        out: BTreeMap<String, HostTensor>,
    }
    impl<F: Fn(&str) -> bool> ModuleVisitor for Values<F> {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.at.enter(name, container_type);
        }
        fn exit_module(&mut self, _name: &str, container_type: &str) {
            self.at.exit(container_type);
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let path = self.at.path();
            if !(self.wanted)(&path) {
                return;
            }
            self.out.insert(path, HostTensor::from_tensor(param.val()));
        }
    }
    let mut visitor = Values {
        at: PathStack::default(),
        wanted,
        out: BTreeMap::new(),
    };
    model.visit(&mut visitor);
    visitor.out
}

/// A change to one tensor. Few live at once (one per edited tensor), so the tensor handle
/// inside `Mask` is not worth a `Box`.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum Edit {
    /// Keep only these entries along these axes, in order: `(axis, indices)`.
    Select(Vec<(usize, Vec<usize>)>),
    /// Multiply element-wise by this mask, given flattened (row-major).
    Mask(Tensor<1>),
    /// Replace the values (same shape).
    Replace(HostTensor),
}

/// Applies `edits` (by path) in place and returns the paths edited. BatchNorm running
/// statistics are shared by a model's clones (burn updates them in place), so edit them only
/// on a copy made with [`Model::copy_to`]. A tensor keeps its
/// parameter id and trainability; its new value has no autodiff history.
pub fn edit(model: Model, edits: &BTreeMap<String, Edit>) -> (Model, Vec<String>) {
    struct Editor<'a> {
        at: PathStack,
        edits: &'a BTreeMap<String, Edit>,
        done: Vec<String>,
    }
    impl ModuleMapper for Editor<'_> {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.at.enter(name, container_type);
        }
        fn exit_module(&mut self, _name: &str, container_type: &str) {
            self.at.exit(container_type);
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let path = self.at.path();
            let Some(change) = self.edits.get(&path) else {
                return param;
            };
            let id = param.id;
            // Edited off the autodiff graph and re-attached as a fresh leaf: an op on a
            // tracked parameter would give a non-leaf that cannot be trained.
            let value = param.val();
            let autodiff = value.is_autodiff();
            let mut tensor = value.without_autodiff();
            let device = tensor.device();
            match change {
                Edit::Select(cuts) => {
                    for (axis, keep) in cuts {
                        let keep: Vec<i64> = keep.iter().map(|&i| i as i64).collect();
                        let n = keep.len();
                        let index =
                            Tensor::<1, Int>::from_data(TensorData::new(keep, [n]), &device);
                        tensor = tensor.select(*axis, index);
                    }
                }
                // A mask or values of another size leave the tensor alone (and it is not
                // reported as edited).
                Edit::Mask(mask) if mask.dims()[0] != tensor.shape().num_elements() => {
                    return param;
                }
                Edit::Replace(host) if host.shape != tensor.dims().to_vec() => return param,
                Edit::Mask(mask) => {
                    let shape = tensor.shape();
                    tensor = tensor.mul(mask.clone().without_autodiff().reshape(shape));
                }
                Edit::Replace(host) => {
                    tensor = Tensor::<1>::from_data(
                        TensorData::new(host.values.clone(), [host.values.len()]),
                        &device,
                    )
                    .reshape(tensor.shape());
                }
            }
            self.done.push(path);
            if autodiff {
                tensor = tensor.autodiff();
            }
            param.transform_for_load(tensor, id)
        }
    }
    let mut editor = Editor {
        at: PathStack::default(),
        edits,
        done: Vec::new(),
    };
    let model = model.map(&mut editor);
    (model, editor.done)
}

/// Whether `path` names a BatchNorm running statistic.
fn is_running_stat(path: &str) -> bool {
    path.ends_with("running_mean") || path.ends_with("running_var")
}

/// The BatchNorm running statistics of `model`, in the model's visiting order. burn keeps
/// pending updates beside the stored value; read them from a model passed through
/// [`Module::valid`], which folds those in.
pub fn running_stats(model: &Model) -> Vec<Tensor<1>> {
    struct Stats {
        at: PathStack,
        out: Vec<Tensor<1>>,
    }
    impl ModuleVisitor for Stats {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.at.enter(name, container_type);
        }
        fn exit_module(&mut self, _name: &str, container_type: &str) {
            self.at.exit(container_type);
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if is_running_stat(&self.at.path()) {
                self.out.push(param.val().reshape([-1]));
            }
        }
    }
    let mut visitor = Stats {
        at: PathStack::default(),
        out: Vec::new(),
    };
    model.visit(&mut visitor);
    visitor.out
}

/// `model` with its BatchNorm running statistics replaced by `stats` (as [`running_stats`]
/// returns them, same order and shapes). burn shares running statistics between a model's
/// clones: the new values are seen by every clone.
pub fn set_running_stats(model: Model, stats: Vec<Tensor<1>>) -> Model {
    struct Set {
        at: PathStack,
        stats: std::vec::IntoIter<Tensor<1>>,
    }
    impl ModuleMapper for Set {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.at.enter(name, container_type);
        }
        fn exit_module(&mut self, _name: &str, container_type: &str) {
            self.at.exit(container_type);
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            if !is_running_stat(&self.at.path()) {
                return param;
            }
            match self.stats.next() {
                Some(value) => {
                    let shape = param.val().shape();
                    Param::initialized(param.id, value.reshape(shape))
                }
                None => param,
            }
        }
    }
    model.map(&mut Set {
        at: PathStack::default(),
        stats: stats.into_iter(),
    })
}

/// The max-norm constraint of Srivastava et al. 2014 (section 5.1): every unit's vector of
/// incoming weights in a fully connected layer (a column of a `[d_in, d_out]` weight) is
/// rescaled to L2 norm `limit` when it is longer; shorter ones are left alone. Applied after
/// each optimiser step, it lets dropout nets train at learning rates that would otherwise blow
/// the weights up. Convolutions, biases and BatchNorm are not constrained (the 2-D weights
/// are exactly the linear layers'). Parameter ids and trainability are kept.
pub fn max_norm(model: Model, limit: f64) -> Model {
    struct MaxNorm(f64);
    impl ModuleMapper for MaxNorm {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            if D != 2 {
                return param;
            }
            let require_grad = param.is_require_grad();
            // Consumed, not cloned: the kernel then rescales the weight's own buffer in place.
            let (id, value, mapper) = param.consume();
            let autodiff = value.is_autodiff();
            let value = value.without_autodiff();
            let dims = value.dims();
            let weight: Tensor<2> = value.reshape([dims[0], dims[1]]); // [d_in, d_out]
            let weight = if kernels::max_norm_applies(&weight) {
                kernels::max_norm_columns(weight, self.0 as f32)
            } else {
                Self::composed(weight, self.0)
            };
            let mut weight: Tensor<D> = weight.reshape(dims);
            if autodiff {
                weight = weight.autodiff();
                if require_grad {
                    weight = weight.require_grad();
                }
            }
            Param::from_mapped_value(id, weight, mapper)
        }
    }
    impl MaxNorm {
        /// The constraint from burn's operations (backends our kernel does not cover).
        fn composed(weight: Tensor<2>, limit: f64) -> Tensor<2> {
            // limit / norm, capped at 1 (a zero column divides to +inf and is capped too).
            let norms = weight.clone().powi_scalar(2).sum_dim(0).sqrt(); // [1, d_out]
            let scale = norms.recip().mul_scalar(limit).clamp_max(1.0);
            weight.mul(scale)
        }
    }
    model.map(&mut MaxNorm(limit))
}

/// For the float parameters whose path `wanted` accepts, the element-wise product of the
/// value and its gradient in `grads` (first-order Taylor terms), copied to the host.
/// Parameters without a gradient are left out.
pub fn grad_products(
    model: &Model,
    grads: &burn::tensor::Gradients,
    wanted: impl Fn(&str) -> bool,
) -> BTreeMap<String, HostTensor> {
    struct Products<'g, F> {
        at: PathStack,
        grads: &'g burn::tensor::Gradients,
        wanted: F,
        out: BTreeMap<String, HostTensor>,
    }
    impl<F: Fn(&str) -> bool> ModuleVisitor for Products<'_, F> {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.at.enter(name, container_type);
        }
        fn exit_module(&mut self, _name: &str, container_type: &str) {
            self.at.exit(container_type);
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let path = self.at.path();
            if !(self.wanted)(&path) {
                return;
            }
            let value = param.val();
            let Some(grad) = value.grad(self.grads) else {
                return;
            };
            self.out
                .insert(path, HostTensor::from_tensor(value.inner().mul(grad)));
        }
    }
    let mut visitor = Products {
        at: PathStack::default(),
        grads,
        wanted,
        out: BTreeMap::new(),
    };
    model.visit(&mut visitor);
    visitor.out
}

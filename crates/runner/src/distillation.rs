//! The distillation objective: the student's loss against a teacher's soft targets
//! (`distill::distillation_loss`), with the teacher run in inference mode, without an autodiff
//! graph, and its logits cached when the inputs are not augmented.

use burn::prelude::*;
use data::{make_batch, Batch, Dataset, Preprocess, Split};
use models::{Model, Tap};

use crate::objective::{Objective, StepLoss, Trainee};
use crate::schema::{DistillConfig, HintConfig};

/// A hint between two taps, with the widths the adapter maps between.
pub struct Hint {
    pub config: HintConfig,
    pub student_width: usize,
    pub teacher_width: usize,
}

pub struct Distillation<'a> {
    teacher: Model,
    temperature: f64,
    alpha: f64,
    hint: Option<Hint>,
    classes: usize,
    /// Teacher logits of every training sample (`[n_train * classes]`), when cacheable.
    train_logits: Option<Vec<f32>>,
    test: &'a Split,
    prep: Preprocess,
    batch_size: usize,
    device: Device,
    /// Teacher's top-1 class of every test sample.
    test_classes: Vec<usize>,
    pub teacher_accuracy: f64,
}

/// Teacher logits of `split`, row-major `[len, classes]`.
fn logits_of(
    model: &Model,
    split: &Split,
    prep: &Preprocess,
    batch_size: usize,
    device: &Device,
) -> Vec<f32> {
    let indices: Vec<usize> = (0..split.len()).collect();
    let mut out = Vec::new();
    for chunk in indices.chunks(batch_size.max(1)) {
        let batch = make_batch(split, chunk, prep, None, device);
        let logits = model.forward(batch.images).into_data();
        out.extend(logits.iter::<f32>());
    }
    out
}

fn argmax_rows(values: &[f32], classes: usize) -> Vec<usize> {
    values
        .chunks(classes)
        .map(|row| {
            row.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0, |(i, _)| i)
        })
        .collect()
}

impl<'a> Distillation<'a> {
    /// `teacher` is an inference model on `device` (the non-autodiff device).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        teacher: Model,
        config: &DistillConfig,
        hint: Option<Hint>,
        dataset: &'a Dataset,
        prep: Preprocess,
        augmented: bool,
        batch_size: usize,
        device: Device,
    ) -> Self {
        let classes = dataset.classes;
        // With a hint the teacher runs on every batch anyway, for its features.
        let train_logits = (config.cache_teacher_logits && !augmented && hint.is_none())
            .then(|| logits_of(&teacher, &dataset.train, &prep, batch_size, &device));
        let test_logits = logits_of(&teacher, &dataset.test, &prep, batch_size, &device);
        let test_classes = argmax_rows(&test_logits, classes);
        let correct = test_classes
            .iter()
            .zip(&dataset.test.labels)
            .filter(|(p, l)| **p == **l as usize)
            .count();
        Self {
            teacher,
            temperature: config.temperature,
            alpha: config.alpha,
            hint,
            classes,
            train_logits,
            test: &dataset.test,
            prep,
            batch_size,
            device,
            test_classes,
            teacher_accuracy: correct as f64 / dataset.test.len().max(1) as f64,
        }
    }

    pub fn caches_train_logits(&self) -> bool {
        self.train_logits.is_some()
    }

    /// Fraction of test samples where student and teacher agree on the top class.
    pub fn agreement(&self, student: &Model) -> f64 {
        let student = logits_of(
            student,
            self.test,
            &self.prep,
            self.batch_size,
            &self.device,
        );
        let same = argmax_rows(&student, self.classes)
            .iter()
            .zip(&self.test_classes)
            .filter(|(a, b)| a == b)
            .count();
        same as f64 / self.test_classes.len().max(1) as f64
    }
}

impl Objective for Distillation<'_> {
    fn loss(&mut self, trainee: &Trainee, batch: &Batch, indices: &[usize]) -> StepLoss {
        let mut student_tap = match &self.hint {
            Some(hint) => Tap::at(&hint.config.student_layer),
            None => Tap::none(),
        };
        let logits = trainee
            .model
            .forward_tapped(batch.images.clone(), &mut student_tap);
        let [rows, classes] = logits.dims();
        let device = logits.device();
        let to_student_device = |values: Vec<f32>, cols: usize| {
            Tensor::<2>::from_data(TensorData::new(values, [rows, cols]), &device)
        };
        let mut teacher_feature = None;
        let teacher_logits: Vec<f32> = match &self.train_logits {
            Some(cache) => indices
                .iter()
                .flat_map(|&i| cache[i * classes..(i + 1) * classes].iter().copied())
                .collect(),
            // Augmented inputs differ every epoch (and hints need features): run the teacher on
            // exactly what the student sees, outside the autodiff graph.
            None => {
                let mut tap = match &self.hint {
                    Some(hint) => Tap::at(&hint.config.teacher_layer),
                    None => Tap::none(),
                };
                let out = self
                    .teacher
                    .forward_tapped(batch.images.clone().inner(), &mut tap);
                teacher_feature = tap.found.map(|f| f.into_data().iter::<f32>().collect());
                out.into_data().iter::<f32>().collect()
            }
        };
        let teacher = to_student_device(teacher_logits, classes);
        let loss = distill::distillation_loss(
            logits.clone(),
            teacher,
            batch.labels.clone(),
            self.temperature,
            self.alpha,
        );
        let mut total = loss.total;
        let mut parts = vec![("distill/kd_loss", loss.kd), ("distill/ce_loss", loss.ce)];
        if let (Some(hint), Some(adapter), Some(student), Some(target)) = (
            &self.hint,
            &trainee.adapter,
            student_tap.found,
            teacher_feature,
        ) {
            let target = to_student_device(target, hint.teacher_width);
            let hint_loss = distill::hint_loss(adapter.forward(student), target);
            total = total + hint_loss.clone().mul_scalar(hint.config.weight);
            parts.push(("distill/hint_loss", hint_loss));
        }
        StepLoss {
            logits,
            total,
            parts,
        }
    }

    fn adapter_dims(&self) -> Option<[usize; 2]> {
        self.hint
            .as_ref()
            .map(|h| [h.student_width, h.teacher_width])
    }

    fn epoch_metrics(&mut self, model: &Model) -> Vec<(&'static str, f64)> {
        vec![
            ("distill/agreement", self.agreement(model)),
            ("distill/teacher_accuracy", self.teacher_accuracy),
        ]
    }
}

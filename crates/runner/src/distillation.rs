//! The distillation objective: the student's loss against a teacher's soft targets
//! (`distill::distillation_loss`), with the teacher run in inference mode, without an autodiff
//! graph, and its logits cached when the inputs are not augmented.

use burn::prelude::*;
use data::{make_batch, Batch, Dataset, Preprocess, Split};
use models::Model;

use crate::objective::{LossPart, Objective};
use crate::schema::DistillConfig;

pub struct Distillation<'a> {
    teacher: Model,
    temperature: f64,
    alpha: f64,
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
    pub fn new(
        teacher: Model,
        config: &DistillConfig,
        dataset: &'a Dataset,
        prep: Preprocess,
        augmented: bool,
        batch_size: usize,
        device: Device,
    ) -> Self {
        let classes = dataset.classes;
        let train_logits = (config.cache_teacher_logits && !augmented)
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
    fn loss(
        &mut self,
        logits: Tensor<2>,
        batch: &Batch,
        indices: &[usize],
    ) -> (Tensor<1>, Vec<LossPart>) {
        let [rows, classes] = logits.dims();
        let teacher: Vec<f32> = match &self.train_logits {
            Some(cache) => indices
                .iter()
                .flat_map(|&i| cache[i * classes..(i + 1) * classes].iter().copied())
                .collect(),
            // Augmented inputs differ every epoch: run the teacher on exactly what the student
            // sees, outside the autodiff graph.
            None => self
                .teacher
                .forward(batch.images.clone().inner())
                .into_data()
                .iter::<f32>()
                .collect(),
        };
        let teacher =
            Tensor::<2>::from_data(TensorData::new(teacher, [rows, classes]), &logits.device());
        let loss = distill::distillation_loss(
            logits,
            teacher,
            batch.labels.clone(),
            self.temperature,
            self.alpha,
        );
        (
            loss.total,
            vec![("distill/kd_loss", loss.kd), ("distill/ce_loss", loss.ce)],
        )
    }

    fn epoch_metrics(&mut self, model: &Model) -> Vec<(&'static str, f64)> {
        vec![
            ("distill/agreement", self.agreement(model)),
            ("distill/teacher_accuracy", self.teacher_accuracy),
        ]
    }
}

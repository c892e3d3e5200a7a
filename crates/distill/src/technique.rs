//! Distillation as a technique: the student's loss against a teacher's soft targets, with the
//! teacher run in inference mode (no autodiff graph) on the stage's device, and its logits on
//! the training set computed once when the inputs are not augmented. Teacher logits never
//! leave the device.

use burn::prelude::*;
use data::{make_batch, Batch, Split};
use models::{ForwardHook, Model, Tap};
use technique::{Aux, Loss, StageContext, StepLoss, Technique, TechniqueError, Trainee};

use crate::config::{DistillConfig, TEACHER_KEY};

/// The distillation loss: KD + cross-entropy, plus an optional hint through `trainee.aux[0]`.
struct DistillationLoss {
    teacher: Model,
    temperature: f64,
    alpha: f64,
    hint: Option<Hint>,
    /// Teacher logits of every training sample, `[n_train, classes]` on the device, when
    /// cacheable.
    train_logits: Option<Tensor<2>>,
    /// How the student's inputs are made, and how the teacher's are (its own recorded
    /// preprocessing: another size or other statistics).
    student_prep: data::Preprocess,
    teacher_prep: data::Preprocess,
}

/// A hint between two taps, with the widths the adapter maps between.
struct Hint {
    student_layer: String,
    teacher_layer: String,
    weight: f64,
    teacher_width: usize,
}

pub struct Distillation {
    loss: DistillationLoss,
    /// The teacher's top-1 class of every test sample.
    test_classes: Tensor<1, Int>,
    test: Split,
    prep: data::Preprocess,
    batch_size: usize,
    device: Device,
    input: models::InputShape,
    pub teacher_accuracy: f64,
}

/// Logits of `model` on `split`, `[len, classes]` on `device`.
fn logits_of(
    model: &Model,
    split: &Split,
    prep: &data::Preprocess,
    batch_size: usize,
    device: &Device,
) -> Tensor<2> {
    let indices: Vec<usize> = (0..split.len()).collect();
    let parts: Vec<Tensor<2>> = indices
        .chunks(batch_size.max(1))
        .map(|chunk| model.forward(make_batch(split, chunk, prep, None, device).images))
        .collect();
    Tensor::cat(parts, 0)
}

fn error(message: impl Into<String>) -> TechniqueError {
    TechniqueError {
        technique: "distill",
        message: message.into(),
    }
}

/// The teacher's classes and accuracy on the test split (what the student is compared with),
/// refusing a teacher whose outputs are not finite or whose accuracy is far below what its run
/// recorded.
fn teacher_on_test(
    teacher: &Model,
    ctx: &StageContext,
    parent: &technique::ReadyParent,
) -> Result<(Tensor<1, Int>, f64), TechniqueError> {
    let test_logits = logits_of(
        teacher,
        &ctx.dataset.test,
        &parent.prep.unwrap_or(ctx.prep),
        ctx.eval_batch_size,
        &ctx.device,
    );
    let finite = test_logits
        .clone()
        .is_nan()
        .bool_or(test_logits.clone().is_inf());
    if finite.any().into_scalar::<bool>() {
        return Err(error(
            "the teacher's outputs on the test split are not finite (NaN or Inf weights); \
             use another teacher",
        ));
    }
    let labels: Vec<i64> = ctx.dataset.test.labels.iter().map(|&l| l as i64).collect();
    let labels = Tensor::<1, Int>::from_data(TensorData::from(labels.as_slice()), &ctx.device);
    let correct = models::loss::correct(test_logits.clone(), labels) as f64;
    let test_classes = test_logits.argmax(1).flatten::<1>(0, 1);
    let teacher_accuracy = correct / ctx.dataset.test.len().max(1) as f64;
    // Test limits may differ between the stages, so only a far lower accuracy is a sign
    // of a model file that changed since its run measured it.
    if let Some(recorded) = parent.recorded_accuracy {
        if teacher_accuracy < recorded - 0.1 {
            return Err(error(format!(
                "the teacher measures {:.2}% test accuracy here but its run recorded \
                 {:.2}%: its model file does not match its run; delete the teacher's run \
                 folder to train it again",
                teacher_accuracy * 100.0,
                recorded * 100.0
            )));
        }
    }
    Ok((test_classes, teacher_accuracy))
}

impl Distillation {
    /// Builds distillation for a stage whose teacher (parent `distill.teacher`) is ready.
    pub fn new(config: &DistillConfig, ctx: &StageContext) -> Result<Self, TechniqueError> {
        let parent = ctx
            .parent(TEACHER_KEY)
            .ok_or_else(|| error("no teacher was prepared for distill.teacher"))?;
        let teacher = parent.model.clone();
        let teacher_prep = parent.prep.unwrap_or(ctx.prep);
        let teacher_input = models::InputShape::made_by(&teacher_prep, ctx.input.classes);
        let hint = match &config.hint {
            Some(h) => Some(Hint {
                student_layer: h.student_layer.clone(),
                teacher_layer: h.teacher_layer.clone(),
                weight: h.weight,
                teacher_width: teacher
                    .tap_width(&h.teacher_layer, &teacher_input, &ctx.device)
                    .ok_or_else(|| {
                        error(format!("the teacher has no tap {:?}", h.teacher_layer))
                    })?,
            }),
            None => None,
        };
        // With a hint the teacher runs on every batch anyway, for its features.
        let cache = config.cache_teacher_logits && !ctx.augmented && hint.is_none();
        let train_logits = cache.then(|| {
            logits_of(
                &teacher,
                &ctx.dataset.train,
                &teacher_prep,
                ctx.eval_batch_size,
                &ctx.device,
            )
        });
        let (test_classes, teacher_accuracy) = teacher_on_test(&teacher, ctx, parent)?;
        Ok(Self {
            loss: DistillationLoss {
                teacher,
                temperature: config.temperature,
                alpha: config.alpha,
                hint,
                train_logits,
                student_prep: ctx.prep,
                teacher_prep,
            },
            test_classes,
            test: ctx.dataset.test.clone(),
            prep: ctx.prep,
            batch_size: ctx.eval_batch_size,
            device: ctx.device.clone(),
            input: ctx.input,
            teacher_accuracy,
        })
    }

    pub fn caches_train_logits(&self) -> bool {
        self.loss.train_logits.is_some()
    }

    /// Fraction of test samples where student and teacher agree on the top class.
    pub fn agreement(&self, student: &Model) -> f64 {
        let student = logits_of(
            student,
            &self.test,
            &self.prep,
            self.batch_size,
            &self.device,
        );
        let same = models::loss::correct(student, self.test_classes.clone()) as f64;
        same / self.test.len().max(1) as f64
    }
}

impl Loss for DistillationLoss {
    fn loss(
        &self,
        trainee: &Trainee,
        batch: &Batch,
        indices: &[usize],
        hook: Option<&dyn ForwardHook>,
    ) -> StepLoss {
        // The student runs as the stage trains it (fake-quantized in a QAT stage); the
        // teacher in float.
        let student_tap = match &self.hint {
            Some(hint) => Tap::at(&hint.student_layer),
            None => Tap::none(),
        };
        let mut student_tap = student_tap.with_hook(hook, true);
        let logits = trainee
            .model
            .forward_tapped(batch.images.clone(), &mut student_tap); // [batch, classes]
        let device = logits.device();
        let mut teacher_feature = None;
        let teacher = match &self.train_logits {
            Some(cache) => {
                let rows: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
                let rows =
                    Tensor::<1, Int>::from_data(TensorData::from(rows.as_slice()), &cache.device());
                cache.clone().select(0, rows) // [batch, classes]
            }
            // Augmented inputs differ every epoch (and hints need features): run the teacher
            // on exactly what the student sees, outside the autodiff graph.
            None => {
                let mut tap = match &self.hint {
                    Some(hint) => Tap::at(&hint.teacher_layer),
                    None => Tap::none(),
                };
                let images = self
                    .student_prep
                    .convert(batch.images.clone().inner(), &self.teacher_prep);
                let out = self.teacher.forward_tapped(images, &mut tap);
                teacher_feature = tap.found;
                out
            }
        };
        // Constants for the student's graph: on its device, no gradient.
        let teacher = teacher.autodiff().to_device(&device);
        let loss = crate::distillation_loss(
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
            trainee.aux_linear(0),
            student_tap.found,
            teacher_feature,
        ) {
            let target = target.autodiff().to_device(&device); // [batch, teacher_width]
            let hint_loss = crate::hint_loss(adapter.forward(student), target);
            total = total + hint_loss.clone().mul_scalar(hint.weight);
            parts.push(("distill/hint_loss", hint_loss));
        }
        StepLoss {
            logits,
            total,
            parts,
        }
    }
}

impl Technique for Distillation {
    fn name(&self) -> &'static str {
        "distill"
    }

    fn describe(&self) -> Option<String> {
        Some(format!(
            "distilling at T = {}, alpha = {}; teacher test accuracy {:.2}%{}",
            self.loss.temperature,
            self.loss.alpha,
            self.teacher_accuracy * 100.0,
            if self.caches_train_logits() {
                ", teacher logits cached (inputs not augmented)"
            } else {
                ""
            }
        ))
    }

    fn aux(&self, model: &Model, device: &Device) -> Vec<Aux> {
        let Some(hint) = &self.loss.hint else {
            return Vec::new();
        };
        // Measured on a throwaway copy of the architecture on the inference device: touching
        // `model` itself would initialise its lazy parameters (and draw dropout masks) here,
        // not at the first training step, and change the run's random stream.
        let probe_device = device.clone().inner();
        let student_width = Model::new(&model.spec(), &self.input, &probe_device)
            .ok()
            .and_then(|m| m.tap_width(&hint.student_layer, &self.input, &probe_device))
            .unwrap_or(0);
        vec![Aux::Linear(
            burn::nn::LinearConfig::new(student_width, hint.teacher_width).init(device),
        )]
    }

    fn loss(&self) -> Option<&dyn Loss> {
        Some(&self.loss)
    }

    fn metrics(&mut self, model: &Model, _accuracy: f64) -> Vec<(String, f64)> {
        vec![
            ("distill/agreement".into(), self.agreement(model)),
            ("distill/teacher_accuracy".into(), self.teacher_accuracy),
        ]
    }
}

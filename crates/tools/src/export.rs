//! `train export TARGET --format onnx`: what a run measured (its technique's artefact, else
//! its model file), or a model file with its config, as an ONNX graph beside it, with the
//! model's input preprocessing in the graph's metadata (and, with `--raw-input`, as its first
//! nodes).

use std::path::{Path, PathBuf};

use measure::{largest_difference, top1};
use runner::RunError;
use settings::run_dir::SUMMARY;

use crate::bench::open_target;

/// What to export and where.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    /// A finished run folder, or a model file with `config`.
    pub target: PathBuf,
    pub config: Option<PathBuf>,
    /// Default: the exported file's name with `.onnx`, beside it.
    pub out: Option<PathBuf>,
    /// The graph reads `uint8` pixels `[batch, height, width, channels]`.
    pub raw_input: bool,
    /// Replace an existing output file.
    pub force: bool,
    /// Then run the graph in ONNX Runtime beside our evaluation ([`verify`]); `Some(true)`
    /// also times it.
    pub verify: Option<bool>,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct ExportReport {
    pub out: PathBuf,
    pub bytes: u64,
    /// The file the graph was made from, and its size.
    pub from: PathBuf,
    pub from_bytes: u64,
    pub description: String,
    pub input: String,
}

impl ExportReport {
    pub fn table(&self) -> String {
        format!(
            "wrote {} ({} bytes) from {} ({} bytes)\n  {}\n  input: {}\n",
            self.out.display(),
            self.bytes,
            self.from.display(),
            self.from_bytes,
            self.description,
            self.input
        )
    }
}

fn refused(path: &Path, message: impl Into<String>) -> RunError {
    RunError::Record {
        what: "export",
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Checks `out` before anything is written: an `.onnx` name, an existing folder, and no file
/// there unless `force`.
fn check_out(out: &Path, force: bool) -> Result<(), RunError> {
    if out.extension().is_none_or(|e| e != "onnx") {
        return Err(refused(out, "the output file's name must end in .onnx"));
    }
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty());
    if parent.is_some_and(|p| !p.is_dir()) {
        return Err(refused(out, "its folder does not exist"));
    }
    if out.is_dir() || (out.exists() && !force) {
        return Err(refused(out, "exists: pass --force to replace it"));
    }
    Ok(())
}

/// Exports the request's target (nothing is written unless the whole graph is), then, when
/// asked, verifies the graph on the same opened target.
pub fn export(request: &ExportRequest) -> Result<(ExportReport, Option<Verification>), RunError> {
    let target = &request.target;
    if target.is_dir() && !target.join(SUMMARY).exists() {
        return Err(refused(
            target,
            format!(
                "the run has not finished (no {SUMMARY}): its files are a checkpoint's, not its \
                 result; finish it by running its config again"
            ),
        ));
    }
    if let Some(out) = &request.out {
        check_out(out, request.force)?;
    }
    let mut opened = open_target(target, request.config.as_deref(), Some("cpu"))?;
    let out = match &request.out {
        Some(out) => out.clone(),
        None => {
            let out = opened.model_path.with_extension("onnx");
            check_out(&out, request.force)?;
            out
        }
    };
    let preprocessing = data::Preprocessing::of(&opened.prep, &opened.dataset.class_names);
    let source = runner::onnx_file::source(
        &opened.model_path,
        &opened.model,
        &opened.input,
        Some(preprocessing),
    )?;
    let options = onnx::Options {
        raw_input: request.raw_input,
    };
    let bytes = runner::onnx_file::write(&source, &options, &out)?;
    let from_bytes = std::fs::metadata(&opened.model_path)
        .map_err(RunError::io(&opened.model_path))?
        .len();
    let input = match request.raw_input {
        true => format!(
            "{}: uint8 [batch, height, width, channels]",
            onnx::RAW_INPUT
        ),
        false => format!(
            "{}: float32 [batch, channels, height, width], (pixel / 255 - mean) / std",
            onnx::INPUT
        ),
    };
    let qdq = !source.quantized.is_empty() || !source.activations.is_empty();
    let verified = match request.verify {
        Some(time) => Some(verify(&out, &mut opened, (time, qdq))?),
        None => None,
    };
    let report = ExportReport {
        out,
        bytes,
        from: opened.model_path,
        from_bytes,
        description: source.description,
        input,
    };
    Ok((report, verified))
}

/// ONNX Runtime's evaluation of an export beside ours, on the same test images.
#[derive(Debug, Clone)]
pub struct Verification {
    pub samples: usize,
    /// Our evaluation of the exported file (its loader's model), and ONNX Runtime's.
    pub accuracy: f64,
    pub runtime_accuracy: f64,
    /// The share of images both give the same top class.
    pub agreement: f64,
    pub max_logit_difference: f32,
    pub opset: i64,
    pub runtime_batch1_p50_ms: Option<f64>,
    pub runtime_batch32_images_per_s: Option<f64>,
    /// For a QDQ graph: the agreement and largest logit difference with ONNX Runtime's bias
    /// rounding left out ([`onnx::runtime::BIAS_ROUNDING`]), where it computes the file's
    /// arithmetic.
    pub without_bias_rounding: Option<(f64, f32)>,
}

impl Verification {
    pub fn table(&self) -> String {
        let mut out = format!(
            "  checked: onnx.checker passed (opset {}); ONNX Runtime on {} test images: accuracy \
             {:.2}% (ours {:.2}%), top-1 agreement {:.2}%, largest logit difference {:.2e}\n",
            self.opset,
            self.samples,
            100.0 * self.runtime_accuracy,
            100.0 * self.accuracy,
            100.0 * self.agreement,
            self.max_logit_difference
        );
        if let Some((agreement, difference)) = self.without_bias_rounding {
            out += &format!(
                "  without ONNX Runtime's {} pass (it rounds float biases to int32 to fuse \
                 QLinearConv/QGemm; the file keeps them in f32): top-1 agreement {:.2}%, largest \
                 logit difference {difference:.2e}\n",
                onnx::runtime::BIAS_ROUNDING,
                100.0 * agreement
            );
        }
        if let (Some(p50), Some(ips)) = (
            self.runtime_batch1_p50_ms,
            self.runtime_batch32_images_per_s,
        ) {
            out += &format!(
                "  ONNX Runtime, 1 thread, forward pass only: batch-1 p50 {p50:.3} ms, batch 32 \
                 {ips:.0} images/s\n"
            );
        }
        out
    }
}

/// The values of `data` as `E`.
fn values<E: burn::tensor::Element>(data: burn::tensor::TensorData) -> Vec<E> {
    data.convert::<E>().try_to_vec::<E>().unwrap_or_default()
}

/// For the test images `rows` of `opened`: the images as the graph reads them (`f32`, little
/// endian, back to back), our logits from `classifier`, and the labels.
fn our_part(
    opened: &crate::bench::Target,
    classifier: &dyn models::Classifier,
    rows: &[usize],
    batch: usize,
) -> (Vec<u8>, Vec<f32>, Vec<i64>) {
    let (mut input, mut logits, mut labels) = (Vec::new(), Vec::new(), Vec::new());
    for rows in rows.chunks(batch) {
        let b = data::make_batch(
            &opened.dataset.test,
            rows,
            &opened.prep,
            None,
            &opened.device,
        );
        let images = values::<f32>(b.images.clone().into_data());
        input.extend(images.iter().flat_map(|v| v.to_le_bytes()));
        logits.extend(values::<f32>(classifier.classify(b.images).into_data()));
        labels.extend(values::<i64>(b.labels.into_data()));
    }
    (input, logits, labels)
}

/// Runs the graph at `graph` in ONNX Runtime (the project's Python environment, 1 thread) on
/// the test images of `opened`, the target it was exported from, in parts of at most 256 MiB
/// of input, beside our own evaluation of that file; with `time`, also ONNX Runtime's latency;
/// for a `qdq` graph, also without ONNX Runtime's bias rounding.
fn verify(
    graph: &Path,
    opened: &mut crate::bench::Target,
    (time, qdq): (bool, bool),
) -> Result<Verification, RunError> {
    let measured = runner::artifacts::Measured::new(opened.export.take(), &opened.model);
    let classifier = measured.classifier();
    let split = &opened.dataset.test;
    let per_image = opened.input.channels * opened.input.height * opened.input.width;
    let part = ((256 << 20) / (4 * per_image.max(1))).clamp(1, 10_000);
    let batch = opened.config.train.eval_batch_size.clamp(1, part);
    let failed = |message: String| refused(graph, message);
    let (mut ours, mut theirs, mut labels) = (Vec::new(), Vec::new(), Vec::new());
    let mut exact = Vec::new();
    let mut checked = None;
    let indices: Vec<usize> = (0..split.len()).collect();
    for (p, chunk) in indices.chunks(part).enumerate() {
        let (input, logits, truth) = our_part(opened, classifier, chunk, batch);
        ours.extend(logits);
        labels.extend(truth);
        let session = onnx::runtime::Session {
            threads: 1,
            time: time && p == 0,
            disabled_optimizers: &[],
        };
        let (c, logits) = onnx::runtime::run(graph, &input, session).map_err(failed)?;
        theirs.extend(logits);
        if qdq {
            let session = onnx::runtime::Session {
                time: false,
                disabled_optimizers: &[onnx::runtime::BIAS_ROUNDING],
                ..session
            };
            exact.extend(
                onnx::runtime::run(graph, &input, session)
                    .map_err(failed)?
                    .1,
            );
        }
        checked.get_or_insert(c);
    }
    let checked = checked.ok_or_else(|| failed("the test split is empty".into()))?;
    if ours.len() != theirs.len() {
        return Err(failed(format!(
            "{} logits from ONNX Runtime, {} of ours",
            theirs.len(),
            ours.len()
        )));
    }
    let classes = opened.input.classes;
    let (a, b) = (top1(&ours, classes), top1(&theirs, classes));
    let n = labels.len().max(1) as f64;
    let agreement = |t: &[usize]| a.iter().zip(t).filter(|(x, y)| x == y).count() as f64 / n;
    let hits = |t: &[usize]| {
        t.iter()
            .zip(&labels)
            .filter(|(p, l)| **p as i64 == **l)
            .count() as f64
            / n
    };
    Ok(Verification {
        samples: labels.len(),
        accuracy: hits(&a),
        runtime_accuracy: hits(&b),
        agreement: agreement(&b),
        max_logit_difference: largest_difference(&ours, &theirs),
        without_bias_rounding: (qdq && exact.len() == ours.len()).then(|| {
            (
                agreement(&top1(&exact, classes)),
                largest_difference(&ours, &exact),
            )
        }),
        opset: checked.opset,
        runtime_batch1_p50_ms: checked.batch1_p50_ms,
        runtime_batch32_images_per_s: checked.batch32_images_per_s,
    })
}

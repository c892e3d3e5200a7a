//! ONNX Runtime from Rust, for tests and experiments: `scripts/onnx_run.py` run by the
//! project's own Python environment (`scripts/onnx-venv.sh`: `onnx` and `onnxruntime` from
//! PyPI, prepared on first use; the global Python is never touched). Not for deployments:
//! they load the `.onnx` file in their own runtime.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository's scripts folder (this crate's source lives two folders below it).
fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts")
}

/// The project's Python with `onnx` and `onnxruntime`, prepared when missing.
pub fn python() -> Result<PathBuf, String> {
    let out = Command::new(scripts().join("onnx-venv.sh"))
        .output()
        .map_err(|e| format!("cannot run scripts/onnx-venv.sh: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "scripts/onnx-venv.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let venv = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Ok(Path::new(&venv).join("bin/python"))
}

/// What `onnx_run.py` reports of a model: it passed `onnx.checker`'s full check.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Checked {
    pub opset: i64,
    pub input: String,
    pub dtype: String,
    pub shape: Vec<usize>,
    pub metadata: std::collections::BTreeMap<String, String>,
    /// With timing: the median latency of one image (ms) and images/s at batch 32, forward
    /// pass only (the inputs are already preprocessed).
    #[serde(default)]
    pub batch1_p50_ms: Option<f64>,
    #[serde(default)]
    pub batch32_images_per_s: Option<f64>,
}

fn run_script(args: &[&std::ffi::OsStr]) -> Result<Checked, String> {
    let out = Command::new(python()?)
        .arg(scripts().join("onnx_run.py"))
        .args(args)
        .output()
        .map_err(|e| format!("cannot run onnx_run.py: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).map_err(|e| format!("onnx_run.py printed {text:?}: {e}"))
}

/// Runs `onnx.checker.check_model(full_check=True)` on `model`.
pub fn check(model: &Path) -> Result<Checked, String> {
    run_script(&[model.as_os_str()])
}

/// How ONNX Runtime runs a graph.
#[derive(Debug, Clone, Copy, Default)]
pub struct Session<'a> {
    /// Intra-op threads (0: 1).
    pub threads: usize,
    /// Also time the forward pass (see [`Checked::batch1_p50_ms`]).
    pub time: bool,
    /// Graph optimisers to leave out (`WeightBiasQuantization`), by name.
    pub disabled_optimizers: &'a [&'a str],
}

/// ONNX Runtime's default optimiser that rounds a float bias to `int32` at the scale
/// `input scale x weight scale` of a convolution or `Gemm` between quantized values, so that
/// it can run as `QLinearConv`: our integer model keeps biases in `f32`, so this is the one
/// step where the default runtime leaves the file's arithmetic.
pub const BIAS_ROUNDING: &str = "WeightBiasQuantization";

/// The logits ONNX Runtime (CPU) computes for `input` (the graph input's bytes, samples back
/// to back) in `session`, after the checker passed.
pub fn run(model: &Path, input: &[u8], session: Session) -> Result<(Checked, Vec<f32>), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (x, y) = (dir.path().join("input.bin"), dir.path().join("logits.bin"));
    std::fs::write(&x, input).map_err(|e| e.to_string())?;
    let threads = session.threads.max(1).to_string();
    let mut args = vec![
        model.as_os_str(),
        x.as_os_str(),
        y.as_os_str(),
        "--threads".as_ref(),
        threads.as_ref(),
    ];
    if session.time {
        args.push("--time".as_ref());
    }
    for name in session.disabled_optimizers {
        args.push("--disable-optimizer".as_ref());
        args.push(name.as_ref());
    }
    let checked = run_script(&args)?;
    let bytes = std::fs::read(&y).map_err(|e| e.to_string())?;
    let logits = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((checked, logits))
}

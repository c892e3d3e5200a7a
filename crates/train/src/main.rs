//! `train`: run an experiment stage from a TOML config, or check a config without running it.
//!
//! ```text
//! train configs/teacher.toml [--set train.epochs=3]...
//! train check configs/teacher.toml
//! ```

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// The system allocator, keeping large freed blocks and glibc's heaps for the next step
/// instead of faulting their pages in again (crates/block_cache).
#[global_allocator]
static ALLOCATOR: block_cache::BlockCache = block_cache::BlockCache;

#[derive(Parser)]
#[command(
    version,
    about = "Train, distill, prune and quantize vision models from TOML experiment configs",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: StageArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run a stage (the default when the first argument is a config file).
    Run(StageArgs),
    /// Validate a config (and its overrides) without training.
    Check(StageArgs),
    /// Measure a trained model's latency: a run folder, or a model file with --config.
    Bench(BenchArgs),
    /// Export what a run measured (or a model file, with --config) as an ONNX graph, checked
    /// by ONNX Runtime in the project's tests: float, pruned, sparse, 16-bit, and 8/4-bit
    /// quantized models as QuantizeLinear/DequantizeLinear graphs.
    Export(ExportArgs),
    /// Time a trained model's forward pass layer by layer, with a Chrome trace.
    Profile(ProfileArgs),
    /// Prune each channel group of a stage's trained model alone at ratios 0.1 to 0.9 (no
    /// fine-tuning) and plot accuracy against ratio, one curve per group.
    Sensitivity {
        #[command(flatten)]
        stage: StageArgs,
        /// How channels are ranked: l1, l2, bn-gamma, taylor or random.
        #[arg(long, default_value = "l2")]
        criterion: String,
    },
    /// Tabulate and plot every finished run under a folder (report.md and PNG plots).
    Report {
        /// A folder of runs, e.g. `runs`.
        dir: PathBuf,
    },
    /// Run a sweep: every trial of a sweep file, locally or as a Slurm job array, then one
    /// results table, plots and TensorBoard HParams data in the sweep folder.
    Sweep(SweepArgs),
    /// Run one trial of a sweep (what the launchers start; `--index` counts from 0).
    RunTrial {
        sweep: PathBuf,
        #[arg(long)]
        index: usize,
        #[arg(long)]
        plain: bool,
        /// The local launcher's process: the trial dies with it.
        #[arg(long, hide = true)]
        parent_pid: Option<u32>,
    },
}

#[derive(Args)]
struct SweepArgs {
    /// The sweep file (e.g. configs/sweep-prune.toml).
    sweep: PathBuf,
    /// Slurm: print the job scripts and submit nothing.
    #[arg(long)]
    dry_run: bool,
    /// Show each trial's state; with nothing queued, write the results.
    #[arg(long)]
    status: bool,
    /// Slurm: wait for the submitted trials to leave the queue, then write the results.
    #[arg(long)]
    wait: bool,
    /// Run only the parents the trials share (the Slurm parents job does this).
    #[arg(long)]
    run_parents: bool,
    #[arg(long)]
    plain: bool,
}

#[derive(Args)]
struct ProfileArgs {
    /// A finished run folder (runs/NAME/HASH), or a model file (.bpk) with --config.
    target: PathBuf,
    /// The stage config of a model file (architecture and dataset).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Timed forward passes (the medians are reported).
    #[arg(long, default_value_t = 200)]
    runs: usize,
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Where to write the Chrome trace (default: profile.trace.json in the run folder).
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Profile on this device instead of the run's: cpu, libtorch, cuda, cuda:N.
    #[arg(long)]
    device: Option<String>,
}

/// The formats `train export` writes.
#[derive(Clone, Copy, clap::ValueEnum)]
enum ExportFormat {
    Onnx,
}

#[derive(Args)]
struct ExportArgs {
    /// A finished run folder (runs/NAME/HASH), or a model file (.bpk, .sparse, .qnt, .f16)
    /// with --config.
    target: PathBuf,
    #[arg(long, value_enum)]
    format: ExportFormat,
    /// The stage config of a model file (architecture and dataset).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where to write (default: beside the exported file, as NAME.onnx).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The graph reads uint8 pixels [batch, height, width, channels] and normalises them
    /// itself (mean and std from the model's preprocessing).
    #[arg(long)]
    raw_input: bool,
    /// Replace the output file if it exists.
    #[arg(long)]
    force: bool,
    /// Then run the graph in ONNX Runtime (the project's own Python environment,
    /// scripts/onnx-venv.sh) on the test split beside our evaluation of the same file:
    /// accuracy, top-1 agreement, the largest logit difference.
    #[arg(long, conflicts_with = "raw_input")]
    verify: bool,
    /// With --verify: also ONNX Runtime's batch-1 and batch-32 latency on 1 thread.
    #[arg(long, requires = "verify")]
    time: bool,
}

#[derive(Args)]
struct BenchArgs {
    /// A finished run folder (runs/NAME/HASH), or a model file (.bpk) with --config.
    target: PathBuf,
    /// The stage config of a model file (architecture and dataset).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Images timed one by one at batch 1 (and in total at batch N).
    #[arg(long, default_value_t = 500)]
    images: usize,
    /// Untimed warm-up images.
    #[arg(long, default_value_t = 50)]
    warmup: usize,
    /// The batch size N of the batched measurement.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Threads used for inference.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Measure on this device instead of the run's: cpu, libtorch, cuda, cuda:N.
    #[arg(long)]
    device: Option<String>,
}

#[derive(Args)]
struct StageArgs {
    /// The stage's TOML config.
    config: Option<PathBuf>,
    /// Override a config key, e.g. `--set train.epochs=3` (repeatable). Environment variables
    /// `COMPRESS_<SECTION>__<KEY>` override too, e.g. `COMPRESS_TRAIN__EPOCHS=3`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Print plain log lines instead of progress bars.
    #[arg(long)]
    plain: bool,
}

impl StageArgs {
    fn load(&self) -> anyhow::Result<settings::LoadedConfig> {
        let Some(path) = &self.config else {
            anyhow::bail!("no config file given: try `train configs/teacher.toml`");
        };
        let env: HashMap<String, String> = std::env::vars().collect();
        Ok(settings::load(path, &self.overrides, &env)?)
    }
}

fn run_options(plain: bool) -> runner::RunOptions {
    StageArgs {
        config: None,
        overrides: Vec::new(),
        plain,
    }
    .options()
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Some(Command::Sweep(args)) => {
            let env: HashMap<String, String> = std::env::vars().collect();
            let request = sweep::SweepRequest {
                path: args.sweep,
                dry_run: args.dry_run,
                status: args.status,
                wait: args.wait,
                run_parents: args.run_parents,
                exe: std::env::current_exe()?,
            };
            sweep::sweep(&request, &env, &run_options(args.plain))?;
            Ok(())
        }
        Some(Command::RunTrial {
            sweep: path,
            index,
            plain,
            parent_pid,
        }) => {
            if let Some(parent) = parent_pid {
                sweep::local::die_with_parent(parent).map_err(anyhow::Error::msg)?;
            }
            let env: HashMap<String, String> = std::env::vars().collect();
            sweep::run_trial(&path, index, &env, &run_options(plain))?;
            Ok(())
        }
        Some(Command::Check(args)) => check(&args),
        Some(Command::Run(args)) => run_stage(&args),
        Some(Command::Sensitivity { stage, criterion }) => {
            let analysis = tools::analysis::find("sensitivity", &criterion)?;
            let loaded = stage.load()?;
            let report = tools::analysis::run(&analysis, &loaded, &stage.options(), &criterion)?;
            safeio::out!("{}", report.table);
            safeio::outln!("{}", report.summary);
            Ok(())
        }
        Some(Command::Report { dir }) => report(&dir),
        Some(Command::Profile(args)) => profile(args),
        Some(Command::Bench(args)) => bench(args),
        Some(Command::Export(args)) => export(args),
        None => run_stage(&cli.run),
    }
}

/// `train check`: the config, its parents and what the stage would do, without training.
fn check(args: &StageArgs) -> anyhow::Result<()> {
    let loaded = args.load()?;
    let config = &loaded.config;
    safeio::outln!(
        "{}: ok ({} on {}, {}; results in {})",
        loaded.path.display(),
        loaded.model.kind(),
        serde_json::to_value(config.data.dataset)?
            .as_str()
            .unwrap_or("?"),
        measure::summary::plural(config.train.epochs, "epoch"),
        loaded.run_path().display()
    );
    let state = runner::stage::planned;
    for parent in &loaded.parents {
        match &parent.source {
            settings::parents::ParentSource::Stage(stage) => safeio::outln!(
                "  {} = stage {} ({}), {}",
                parent.key,
                stage.config.name,
                stage.run_path().display(),
                state(stage)
            ),
            settings::parents::ParentSource::File { path, .. } => {
                safeio::outln!("  {} = file {}", parent.key, path.display())
            }
        }
    }
    safeio::outln!("  this stage: {}", state(&loaded));
    for section in settings::techniques::sections(config) {
        if let Some(plan) = section.plan(&loaded.model, &loaded.input)? {
            safeio::outln!("  {plan}");
        }
    }
    Ok(())
}

/// `train report DIR`.
fn report(dir: &std::path::Path) -> anyhow::Result<()> {
    if !dir.is_dir() {
        anyhow::bail!("{} is not a folder of runs", dir.display());
    }
    let report = measure::report::write_report(dir)?;
    for (folder, reason) in &report.skipped {
        safeio::errln!("warning: skipped {}: {reason}", folder.display());
    }
    safeio::out!("{}", measure::report::table(&report.runs));
    safeio::outln!(
        "{} runs; wrote {} and {}",
        report.runs.len(),
        report.markdown.display(),
        report
            .plots
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// `train profile TARGET`.
fn profile(args: ProfileArgs) -> anyhow::Result<()> {
    check_counts(&[
        ("--batch", args.batch, settings::validate::MAX_MEASURE_BATCH),
        ("--runs", args.runs, settings::validate::MAX_LATENCY_IMAGES),
        ("--threads", args.threads, settings::context::max_threads()),
    ])?;
    let report = tools::profile::profile(&tools::profile::ProfileRequest {
        target: args.target,
        config: args.config,
        batch: args.batch,
        runs: args.runs,
        threads: args.threads,
        trace: args.trace,
        device: args.device,
    })?;
    safeio::out!("{}", report.table());
    Ok(())
}

/// `train bench TARGET`.
fn bench(args: BenchArgs) -> anyhow::Result<()> {
    check_counts(&[
        (
            "--images",
            args.images,
            settings::validate::MAX_LATENCY_IMAGES,
        ),
        ("--batch", args.batch, settings::validate::MAX_MEASURE_BATCH),
        ("--threads", args.threads, settings::context::max_threads()),
    ])?;
    if args.warmup > settings::validate::MAX_LATENCY_IMAGES {
        anyhow::bail!(
            "--warmup {}: must be at most {}",
            args.warmup,
            settings::validate::MAX_LATENCY_IMAGES
        );
    }
    let report = tools::bench::bench(&tools::bench::BenchRequest {
        target: args.target,
        config: args.config,
        images: args.images,
        warmup: args.warmup,
        batch: args.batch,
        threads: args.threads,
        device: args.device,
    })?;
    safeio::out!("{}", report.table());
    Ok(())
}

/// `train export TARGET --format onnx`.
fn export(args: ExportArgs) -> anyhow::Result<()> {
    let ExportFormat::Onnx = args.format;
    let request = tools::export::ExportRequest {
        target: args.target,
        config: args.config,
        out: args.out,
        raw_input: args.raw_input,
        force: args.force,
        verify: args.verify.then_some(args.time),
    };
    let (report, verified) = tools::export::export(&request)?;
    safeio::out!("{}", report.table());
    if let Some(verified) = verified {
        safeio::out!("{}", verified.table());
    }
    Ok(())
}

/// Each `(flag, value, max)` must be in `1..=max`: these numbers size allocations and
/// thread pools.
fn check_counts(counts: &[(&str, usize, usize)]) -> anyhow::Result<()> {
    for &(flag, value, max) in counts {
        if value == 0 || value > max {
            anyhow::bail!("{flag} {value}: must be between 1 and {max}");
        }
    }
    Ok(())
}

impl StageArgs {
    fn options(&self) -> runner::RunOptions {
        runner::RunOptions { plain: self.plain }
    }
}

fn run_stage(args: &StageArgs) -> anyhow::Result<()> {
    let loaded = args.load()?;
    let options = args.options();
    let outcome = runner::run_stage(&loaded, &options)?;
    if outcome.reused {
        safeio::out!("{}", outcome.summary.table());
    }
    Ok(())
}

/// `train a.toml b.toml` would get clap's message about a subcommand named `b.toml`: say
/// instead that a run takes one config.
fn several_configs(args: &[String]) -> Option<String> {
    const SUBCOMMANDS: [&str; 10] = [
        "run",
        "check",
        "bench",
        "export",
        "profile",
        "report",
        "sensitivity",
        "sweep",
        "run-trial",
        "help",
    ];
    let mut positional = Vec::new();
    let mut skip_value = false;
    for arg in args {
        if skip_value {
            skip_value = false;
        } else if arg == "--set" {
            skip_value = true;
        } else if !arg.starts_with('-') {
            positional.push(arg.as_str());
        }
    }
    match positional.as_slice() {
        [first, second, ..] if !SUBCOMMANDS.contains(first) => Some(format!(
            "one config at a time: got {first} and {second}. Run them one after the other (a \
             stage's parents, such as its teacher, run first on their own)"
        )),
        _ => None,
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(message) = several_configs(&args) {
        safeio::errln!("error: {message}");
        return ExitCode::FAILURE;
    }
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Once: a cause whose text the message already holds is not repeated.
            let mut shown = err.to_string();
            safeio::errln!("error: {shown}");
            let mut source = err.source();
            while let Some(cause) = source {
                let text = cause.to_string();
                if !shown.contains(&text) {
                    safeio::errln!("  caused by: {text}");
                    shown += &text;
                }
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}

//! What the user sees while a stage runs: indicatif bars on a terminal, plain lines otherwise
//! (CI logs, pipes, Slurm output files). Every line also goes to the run's `train.log`.

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::Path;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    bars: Option<Bars>,
    log: Option<File>,
    /// The epoch (1-based) and step count being shown, for plain step lines.
    epoch: usize,
    steps: usize,
}

struct Bars {
    multi: MultiProgress,
    epochs: ProgressBar,
    batches: Option<ProgressBar>,
}

impl Progress {
    /// Bars when stdout is a terminal (and `plain` is false), lines otherwise.
    pub fn new(plain: bool) -> Self {
        let bars = (!plain && std::io::stdout().is_terminal()).then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
            // Shown from `start_run` on, not while data loads and parents run.
            let epochs = ProgressBar::hidden();
            epochs.set_style(
                ProgressStyle::with_template("{prefix:>8} [{bar:30.cyan/blue}] {pos}/{len} {msg}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            epochs.set_prefix("epochs");
            Bars {
                multi,
                epochs,
                batches: None,
            }
        });
        Self {
            bars,
            log: None,
            epoch: 0,
            steps: 0,
        }
    }

    /// Also append every line to `path`.
    pub fn log_to(&mut self, path: &Path) -> std::io::Result<()> {
        self.log = Some(File::options().create(true).append(true).open(path)?);
        Ok(())
    }

    /// A line for the user and the log.
    pub fn line(&mut self, text: &str) {
        match &self.bars {
            Some(bars) => {
                let _ = bars.multi.println(text);
            }
            None => safeio::outln!("{text}"),
        }
        if let Some(log) = self.log.as_mut() {
            let _ = writeln!(log, "{text}");
        }
    }

    /// A line for the log alone: the error that stopped a run, which the caller prints.
    pub fn log_only(&mut self, text: &str) {
        if let Some(log) = self.log.as_mut() {
            let _ = writeln!(log, "{text}");
        }
    }

    pub fn start_run(&mut self, epochs: usize, done: usize) {
        if let Some(bars) = &mut self.bars {
            bars.epochs = bars.multi.add(bars.epochs.clone());
            bars.epochs.set_length(epochs as u64);
            bars.epochs.set_position(done as u64);
        }
    }

    pub fn start_epoch(&mut self, epoch: usize, steps: usize) {
        (self.epoch, self.steps) = (epoch, steps);
        if let Some(bars) = self.bars.as_mut() {
            let bar = bars.multi.add(ProgressBar::new(steps as u64));
            // `wide_msg` takes what the terminal has left: the line never wraps.
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>8} [{bar:25.green/white}] {pos}/{len} ETA {eta} {wide_msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(format!("epoch {epoch}"));
            bars.batches = Some(bar);
        }
    }

    /// After each step; `text` holds loss, accuracy and samples/s (the bar shows the step
    /// counter). In plain mode, `log_line` says whether this step also prints a line.
    pub fn step(&mut self, done: usize, text: &str, log_line: bool) {
        match self.bars.as_ref().and_then(|b| b.batches.as_ref()) {
            Some(bar) => {
                bar.set_position(done as u64);
                bar.set_message(text.to_string());
            }
            None if log_line => {
                let line = format!("epoch {} step {done}/{} {text}", self.epoch, self.steps);
                self.line(&line)
            }
            None => {}
        }
    }

    pub fn end_epoch(&mut self, summary: &str) {
        if let Some(bars) = self.bars.as_mut() {
            if let Some(bar) = bars.batches.take() {
                bar.finish_and_clear();
                bars.multi.remove(&bar);
            }
            bars.epochs.inc(1);
            bars.epochs.set_message(summary.to_string());
        }
        self.line(summary);
    }

    pub fn finish(&mut self) {
        if let Some(bars) = self.bars.take() {
            bars.epochs.finish_and_clear();
        }
    }
}

//! Checks every value a stage config can hold, before anything runs.

use burn::tensor::Device;
use models::InputShape;
pub use technique::Invalid;

use crate::schema::{DatasetName, MeasureConfig, OptimizerConfig, ScheduleConfig, StageConfig};
use crate::techniques;

fn invalid(key: &str, value: impl std::fmt::Display, allowed: impl Into<String>) -> Invalid {
    Invalid::new(key, value, allowed)
}

/// What validation derives, so nothing downstream derives it again.
pub struct Valid {
    pub input: InputShape,
    pub device: Device,
}

fn at_least(key: &str, value: usize, min: usize) -> Result<(), Invalid> {
    if value < min {
        return Err(invalid(key, value, format!("must be at least {min}")));
    }
    Ok(())
}

fn at_most(key: &str, value: usize, max: usize, why: &str) -> Result<(), Invalid> {
    if value > max {
        return Err(invalid(
            key,
            value,
            format!("must be at most {max} ({why})"),
        ));
    }
    Ok(())
}

/// The longest run name: a folder name, with room for a sweep's trial suffix.
pub const MAX_NAME_CHARS: usize = 100;

/// Batch sizes beyond this are refused: they only size allocations.
pub const MAX_BATCH: usize = 65_536;
/// The largest inference batch measured for throughput and bench.
pub const MAX_MEASURE_BATCH: usize = 4096;
/// The most images timed one by one.
pub const MAX_LATENCY_IMAGES: usize = 100_000;

/// Refuses a spec whose training needs more memory than this machine has (at `batch`
/// samples per step), naming `key`, the estimate and the budget.
pub fn check_fits(
    key: &str,
    spec: &models::ModelSpec,
    input: &InputShape,
    batch: usize,
) -> Result<(), Invalid> {
    let footprint = spec.footprint(input);
    let needed = footprint.training_bytes(batch);
    fits(
        key,
        spec,
        footprint,
        needed,
        &format!("to train at batch {batch}"),
    )
}

/// Refuses a spec whose inference at `batch` needs more memory than this machine has: a
/// model file named as a teacher or measured by bench gets the bound a config's model gets.
pub fn check_inference_fits(
    key: &str,
    spec: &models::ModelSpec,
    input: &InputShape,
    batch: usize,
) -> Result<(), Invalid> {
    let footprint = spec.footprint(input);
    let needed = footprint.inference_bytes(batch);
    fits(
        key,
        spec,
        footprint,
        needed,
        &format!("to run at batch {batch}"),
    )
}

/// The evaluation batch `spec` can run at on this machine: `requested` when its inference fits
/// the memory bound [`check_inference_fits`] applies, else the largest batch that does (0 when
/// not even one sample fits).
pub fn fitting_eval_batch(spec: &models::ModelSpec, input: &InputShape, requested: usize) -> usize {
    let footprint = spec.footprint(input);
    let limit = memory_limit();
    let fixed = footprint.inference_bytes(0);
    let per_sample = footprint.inference_bytes(1).saturating_sub(fixed).max(1);
    let fitting = limit.saturating_sub(fixed) / per_sample;
    requested.min(usize::try_from(fitting).unwrap_or(usize::MAX))
}

/// The evaluation batch to run `spec` at: the default lowered to what fits this machine's
/// memory ([`fitting_eval_batch`], at least 1), a batch the user chose as it is (the memory
/// checks then refuse it if it does not fit).
pub fn eval_batch_for(spec: &models::ModelSpec, input: &InputShape, requested: usize) -> usize {
    match requested == crate::schema::default_eval_batch() {
        true => fitting_eval_batch(spec, input, requested).max(1),
        false => requested,
    }
}

/// The most bytes a model may need: 80% of this machine's memory.
fn memory_limit() -> u128 {
    crate::context::memory_bytes() as u128 * 8 / 10
}

fn fits(
    key: &str,
    spec: &models::ModelSpec,
    footprint: models::Footprint,
    needed: u128,
    what: &str,
) -> Result<(), Invalid> {
    let budget = crate::context::memory_bytes() as u128;
    if needed > memory_limit() {
        let gib = |b: u128| b as f64 / (1u128 << 30) as f64;
        return Err(invalid(
            key,
            format!("a {} model of {} parameters", spec.kind(), footprint.params),
            format!(
                "needs about {:.1} GiB {what}, more than this machine's {:.1} GiB allows: use \
                 smaller widths (or smaller batches)",
                gib(needed),
                gib(budget)
            ),
        ));
    }
    Ok(())
}

fn positive_finite(key: &str, value: f64) -> Result<(), Invalid> {
    if !(value.is_finite() && value > 0.0) {
        return Err(invalid(key, value, "must be a finite number > 0"));
    }
    Ok(())
}

fn in_range(key: &str, value: f64, lo: f64, hi: f64, what: &str) -> Result<(), Invalid> {
    if !(value.is_finite() && value >= lo && value < hi) {
        return Err(invalid(key, value, format!("must be {what}")));
    }
    Ok(())
}

/// Where a config's data comes from.
pub fn data_source(config: &StageConfig) -> data::Source {
    let data = &config.data;
    // Validation guarantees the path where one is needed; an empty one fails to load with
    // the reason.
    let path = || data.path.clone().unwrap_or_default();
    match data.dataset {
        DatasetName::Mnist => data::Source::Mnist,
        DatasetName::FashionMnist => data::Source::FashionMnist,
        DatasetName::Digits => data::Source::Digits,
        DatasetName::Idx => data::Source::IdxFolder(path()),
        DatasetName::ImageFolder => data::Source::ImageFolder(data::folder::FolderOptions {
            path: path(),
            channels: data.channels,
            size: data.input_size,
            memory_bound: data
                .max_decoded_mb
                .map_or_else(|| crate::context::memory_bytes() / 4, |mb| mb << 20),
            limits: [data.train_limit, data.test_limit],
        }),
        DatasetName::Cifar10 => data::Source::Cifar10(path()),
        DatasetName::Cifar100 => data::Source::Cifar100(path()),
    }
}

/// The per-sample input shape and class count a config's data section produces, without
/// fetching anything: a user's IDX or CIFAR folder is read, an image folder's headers are
/// (not its pixels); the built-in datasets have 10 classes.
pub fn input_shape(config: &StageConfig) -> Result<InputShape, Invalid> {
    let data = &config.data;
    let path_error = |e: data::DataError| {
        let path = data.path.clone().unwrap_or_default();
        invalid("data.path", path.display(), e.to_string())
    };
    let (channels, height, width, classes) = match data_source(config) {
        data::Source::Mnist | data::Source::FashionMnist => (1, 28, 28, 10),
        data::Source::Digits => (1, 8, 8, 10),
        data::Source::IdxFolder(dir) => {
            let ds = data::Dataset::idx_folder(&dir, "idx").map_err(path_error)?;
            (1, ds.train.rows, ds.train.cols, ds.classes)
        }
        data::Source::ImageFolder(options) => {
            let scan = data::folder::scan(&options).map_err(path_error)?;
            (scan.channels, scan.rows, scan.cols, scan.class_names.len())
        }
        data::Source::Cifar10(dir) | data::Source::Cifar100(dir) => {
            let kind = match data.dataset {
                DatasetName::Cifar10 => data::cifar::Kind::Cifar10,
                _ => data::cifar::Kind::Cifar100,
            };
            data::cifar::files(&dir, kind).map_err(path_error)?;
            (3, 32, 32, kind.classes())
        }
    };
    let (height, width) = data.input_size.map_or((height, width), |s| (s, s));
    Ok(InputShape {
        channels,
        height,
        width,
        classes,
    })
}

/// Checks `config` (the first problem found is returned) and derives its input and device.
pub fn validate(config: &StageConfig) -> Result<Valid, Invalid> {
    check_name(&config.name)?;
    check_paths(config)?;
    let device = crate::device::parse_device(&config.device)
        .map_err(|e| invalid("device", format!("{:?}", config.device), e.to_string()))?;

    at_most(
        "threads",
        config.threads,
        crate::context::max_threads(),
        &threads_why(),
    )?;

    check_data(config)?;
    check_train(config)?;
    for section in techniques::sections(config) {
        section.validate()?;
        section.check_training(config.train.epochs)?;
    }
    techniques::check_combination(config)?;

    check_measure(&config.measure)?;

    let input = input_shape(config)?;
    if let Some(model) = &config.model {
        model.validate(&input)?;
        check_fits("model", model, &input, config.train.batch_size)?;
    }
    Ok(Valid { input, device })
}

/// Why a thread count is bounded: the machine's cores.
fn threads_why() -> String {
    let cores = crate::context::cores();
    format!("4 per core on this {cores}-core machine, or 8")
}

/// A run name names a folder.
fn check_name(name: &str) -> Result<(), Invalid> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        || name.starts_with('.')
    {
        return Err(invalid(
            "name",
            format!("{:?}", name),
            "a folder name: letters, digits, '-', '_' or '.', not starting with '.'",
        ));
    }
    if name.len() > MAX_NAME_CHARS {
        return Err(invalid(
            "name",
            format!("{:?}", name),
            format!(
                "at most {MAX_NAME_CHARS} characters (it names a folder, and file systems \
                 allow 255 bytes per name)"
            ),
        ));
    }
    Ok(())
}

fn check_paths(config: &StageConfig) -> Result<(), Invalid> {
    // An empty path would put results or downloads in the current folder.
    let paths = [
        ("output.dir", Some(&config.output.dir)),
        ("data.cache_dir", config.data.cache_dir.as_ref()),
        ("data.path", config.data.path.as_ref()),
        ("from", config.from.as_ref()),
    ];
    for (key, path) in paths {
        if path.is_some_and(|p| p.as_os_str().is_empty()) {
            return Err(invalid(
                key,
                "\"\"",
                "an empty path; give a folder (or leave the key out for its default)",
            ));
        }
    }
    Ok(())
}

/// The keys that say where the data comes from and how an image folder is read: `path` where
/// (and only where) the dataset reads one, `channels` and `max_decoded_mb` for image folders.
fn check_data_source(config: &StageConfig) -> Result<(), Invalid> {
    let data = &config.data;
    match (data.dataset.reads_path(), &data.path) {
        (false, Some(path)) => {
            return Err(invalid(
                "data.path",
                path.display(),
                "only used with data.dataset = \"idx\", \"image-folder\", \"cifar10\" or \
                 \"cifar100\"; remove it or set the dataset",
            ))
        }
        (true, None) => {
            return Err(invalid(
                "data.dataset",
                format!("{:?}", data.dataset),
                "needs data.path, the folder to read (see the README's \"Your own data\")",
            ))
        }
        _ => {}
    }
    if let Some(channels) = data.channels {
        if data.dataset != DatasetName::ImageFolder {
            return Err(invalid(
                "data.channels",
                channels,
                "only used with data.dataset = \"image-folder\" (the other datasets have \
                 their own channels); remove it",
            ));
        }
        if channels != 1 && channels != 3 {
            return Err(invalid(
                "data.channels",
                channels,
                "1 (grayscale) or 3 (RGB)",
            ));
        }
    }
    if let Some(mb) = data.max_decoded_mb {
        if data.dataset != DatasetName::ImageFolder {
            return Err(invalid(
                "data.max_decoded_mb",
                mb,
                "only used with data.dataset = \"image-folder\" (the other datasets are held in \
                 memory); remove it",
            ));
        }
        if mb > 1 << 24 {
            return Err(invalid(
                "data.max_decoded_mb",
                mb,
                "between 0 (always stream) and 16777216 (16 TiB)",
            ));
        }
    }
    Ok(())
}

fn check_data(config: &StageConfig) -> Result<(), Invalid> {
    let data = &config.data;
    check_data_source(config)?;
    let augment = &data.augment;
    if augment.crop_padding > 0 && augment.shift_pixels > 0 {
        return Err(invalid(
            "data.augment.crop_padding",
            augment.crop_padding,
            "is the same operation as data.augment.shift_pixels (set too): keep one",
        ));
    }
    if augment.crop_padding > 8 {
        return Err(invalid(
            "data.augment.crop_padding",
            augment.crop_padding,
            "must be between 0 and 8 pixels",
        ));
    }
    for (key, limit) in [
        ("data.train_limit", data.train_limit),
        ("data.test_limit", data.test_limit),
    ] {
        if let Some(limit) = limit {
            at_least(key, limit, 1)?;
        }
    }
    if let Some(size) = data.input_size {
        if !(4..=1024).contains(&size) {
            return Err(invalid(
                "data.input_size",
                size,
                "must be between 4 and 1024 pixels",
            ));
        }
    }
    if data.augment.shift_pixels > 8 {
        return Err(invalid(
            "data.augment.shift_pixels",
            data.augment.shift_pixels,
            "must be between 0 and 8 pixels",
        ));
    }
    let noise = data.augment.noise_std as f64;
    in_range(
        "data.augment.noise_std",
        noise,
        0.0,
        f64::INFINITY,
        "a finite number >= 0",
    )?;
    Ok(())
}

fn check_train(config: &StageConfig) -> Result<(), Invalid> {
    let train = &config.train;
    // A stage that starts from a parent may train 0 epochs: it then measures the parent.
    at_least(
        "train.epochs",
        train.epochs,
        usize::from(config.from.is_none()),
    )?;
    at_least("train.batch_size", train.batch_size, 1)?;
    at_least("train.eval_batch_size", train.eval_batch_size, 1)?;
    at_most(
        "train.batch_size",
        train.batch_size,
        MAX_BATCH,
        "a batch only sizes memory",
    )?;
    at_most(
        "train.eval_batch_size",
        train.eval_batch_size,
        MAX_BATCH,
        "a batch only sizes memory",
    )?;
    at_least("train.log_every", train.log_every, 1)?;
    at_most(
        "train.replicas",
        train.replicas,
        crate::context::max_threads(),
        "each replica is a thread (0 chooses one per worker thread)",
    )?;
    let lr = train.optimizer.lr();
    positive_finite("train.optimizer.lr", lr)?;
    if let Some(limit) = train.max_norm {
        positive_finite("train.max_norm", limit)?;
    }
    let decay = train.optimizer.weight_decay();
    in_range("train.optimizer.weight_decay", decay, 0.0, 1.0, "in [0, 1)")?;
    match &train.optimizer {
        OptimizerConfig::Sgd {
            momentum, nesterov, ..
        } => {
            in_range("train.optimizer.momentum", *momentum, 0.0, 1.0, "in [0, 1)")?;
            if *nesterov && *momentum == 0.0 {
                return Err(invalid(
                    "train.optimizer.nesterov",
                    true,
                    "Nesterov momentum needs train.optimizer.momentum > 0",
                ));
            }
        }
        OptimizerConfig::Adam {
            beta1, beta2, eps, ..
        }
        | OptimizerConfig::Adamw {
            beta1, beta2, eps, ..
        } => {
            in_range("train.optimizer.beta1", *beta1, 0.0, 1.0, "in [0, 1)")?;
            in_range("train.optimizer.beta2", *beta2, 0.0, 1.0, "in [0, 1)")?;
            positive_finite("train.optimizer.eps", *eps)?;
        }
    }
    check_schedule(config, lr)
}

/// The schedule's settings, its minimum against the optimiser's rate `lr`.
fn check_schedule(config: &StageConfig, lr: f64) -> Result<(), Invalid> {
    let train = &config.train;
    let warmup = match &train.schedule {
        ScheduleConfig::Constant { warmup_epochs } => *warmup_epochs,
        ScheduleConfig::Step {
            step_epochs,
            gamma,
            warmup_epochs,
        } => {
            at_least("train.schedule.step_epochs", *step_epochs, 1)?;
            if !(gamma.is_finite() && *gamma > 0.0 && *gamma <= 1.0) {
                return Err(invalid("train.schedule.gamma", gamma, "must be in (0, 1]"));
            }
            *warmup_epochs
        }
        ScheduleConfig::Cosine {
            min_lr,
            warmup_epochs,
        } => {
            in_range(
                "train.schedule.min_lr",
                *min_lr,
                0.0,
                lr,
                "in [0, train.optimizer.lr)",
            )?;
            *warmup_epochs
        }
    };
    if warmup != 0.0 {
        in_range(
            "train.schedule.warmup_epochs",
            warmup,
            0.0,
            train.epochs as f64,
            "in [0, train.epochs)",
        )?;
    }
    Ok(())
}

fn check_measure(m: &MeasureConfig) -> Result<(), Invalid> {
    at_least("measure.latency_images", m.latency_images, 1)?;
    at_least("measure.latency_threads", m.latency_threads, 1)?;
    at_least("measure.throughput_batch", m.throughput_batch, 1)?;
    at_most(
        "measure.latency_images",
        m.latency_images,
        MAX_LATENCY_IMAGES,
        "enough for stable percentiles",
    )?;
    at_most(
        "measure.latency_warmup",
        m.latency_warmup,
        MAX_LATENCY_IMAGES,
        "enough to warm any cache",
    )?;
    at_most(
        "measure.latency_threads",
        m.latency_threads,
        crate::context::max_threads(),
        &threads_why(),
    )?;
    at_most(
        "measure.throughput_batch",
        m.throughput_batch,
        MAX_MEASURE_BATCH,
        "a batch only sizes memory",
    )?;
    Ok(())
}

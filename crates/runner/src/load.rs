//! Reading a stage config: the TOML file, then environment overrides, then `--set` overrides,
//! then validation. Parse, validate, convert: the rest of the code trusts what comes out.
//!
//! The file is parsed with `toml` + serde first because its errors carry line, column and a
//! snippet; the `config` crate then layers the overrides (it names keys, not lines).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat, Value, ValueKind};

use crate::run_dir::config_hash;
use crate::schema::StageConfig;
use crate::teacher::{file_sha256, load_model_file, resolve_path, TeacherFormat, TeacherSource};
use crate::validate::{input_shape, validate, Invalid};

/// Prefix of environment overrides: `COMPRESS_TRAIN__EPOCHS=3` sets `train.epochs`.
pub const ENV_PREFIX: &str = "COMPRESS";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("--set {text}: expected KEY=VALUE, e.g. --set train.epochs=3")]
    BadOverride { text: String },
    #[error("{}: after applying overrides ({overrides}): {message}", path.display())]
    Override {
        path: PathBuf,
        overrides: String,
        message: String,
    },
    #[error("{location}: {invalid}")]
    Invalid { location: String, invalid: Invalid },
}

/// A config that parsed and validated, with where it came from and its resolved teacher.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub path: PathBuf,
    pub config: StageConfig,
    pub teacher: Option<TeacherSource>,
}

impl LoadedConfig {
    /// The hash naming this stage's run folder: its config plus its teacher's identity (the
    /// teacher stage's hash, or the teacher file's SHA-256).
    pub fn hash(&self) -> String {
        let parent = match &self.teacher {
            Some(TeacherSource::Stage(teacher)) => Some(teacher.hash()),
            Some(TeacherSource::File { sha256, .. }) => Some(sha256.clone()),
            None => None,
        };
        config_hash(&self.config, parent.as_deref())
    }
}

/// Loads `path`, applies `COMPRESS_*` variables from `env` and the `KEY=VALUE` `overrides`
/// (later wins), and validates the result.
pub fn load(
    path: &Path,
    overrides: &[String],
    env: &HashMap<String, String>,
) -> Result<LoadedConfig, ConfigError> {
    load_chain(path, overrides, env, &mut Vec::new())
}

/// `chain` holds the configs that led here (teacher of a teacher ...), to refuse cycles.
fn load_chain(
    path: &Path,
    overrides: &[String],
    env: &HashMap<String, String>,
    chain: &mut Vec<PathBuf>,
) -> Result<LoadedConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let from_file: StageConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    })?;

    let env: HashMap<String, String> = env
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}_")))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut set = Vec::new();
    for text in overrides {
        let (key, value) = text
            .split_once('=')
            .filter(|(k, _)| !k.trim().is_empty())
            .ok_or_else(|| ConfigError::BadOverride { text: text.clone() })?;
        set.push((key.trim().to_string(), value.trim().to_string()));
    }

    let config = if env.is_empty() && set.is_empty() {
        from_file
    } else {
        let described: Vec<String> = env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .chain(set.iter().map(|(k, v)| format!("--set {k}={v}")))
            .collect();
        let err = |message: String| ConfigError::Override {
            path: path.to_path_buf(),
            overrides: described.join(", "),
            message,
        };
        let mut builder = Config::builder()
            .add_source(File::from_str(&text, FileFormat::Toml))
            .add_source(
                Environment::with_prefix(ENV_PREFIX)
                    .prefix_separator("_")
                    .separator("__")
                    .try_parsing(true)
                    .source(Some(env.clone().into_iter().collect())),
            );
        for (key, value) in &set {
            builder = builder
                .set_override(key.as_str(), parse_value(value))
                .map_err(|e| err(e.to_string()))?;
        }
        builder
            .build()
            .and_then(|c| c.try_deserialize::<StageConfig>())
            .map_err(|e| err(e.to_string()))?
    };

    // Which overrides set which key, to point at the right culprit.
    let overridden: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| {
            let key = k[ENV_PREFIX.len() + 1..].to_lowercase().replace("__", ".");
            (key, format!("{k}={v}"))
        })
        .chain(
            set.iter()
                .map(|(k, v)| (k.clone(), format!("--set {k}={v}"))),
        )
        .collect();
    validate(&config).map_err(|invalid| {
        let by_override = overridden.iter().rev().find(|(k, _)| *k == invalid.key);
        let location = match (by_override, key_line(&text, &invalid.key)) {
            (Some((_, how)), _) => format!("{} (set by {how})", path.display()),
            (None, Some(line)) => format!("{}:{line}", path.display()),
            (None, None) => format!("{} (default value)", path.display()),
        };
        ConfigError::Invalid { location, invalid }
    })?;
    let teacher_error = |allowed: String| ConfigError::Invalid {
        location: match key_line(&text, "distill.teacher") {
            Some(line) => format!("{}:{line}", path.display()),
            None => path.display().to_string(),
        },
        invalid: Invalid {
            key: "distill.teacher".into(),
            value: config
                .distill
                .as_ref()
                .map(|d| format!("{:?}", d.teacher.display().to_string()))
                .unwrap_or_default(),
            allowed,
        },
    };
    let teacher = match &config.distill {
        None => None,
        Some(distill) => {
            let teacher_path = resolve_path(&distill.teacher, path);
            if !teacher_path.exists() {
                return Err(teacher_error(format!(
                    "no such file (looked beside {} and in the current directory)",
                    path.display()
                )));
            }
            let student_input = input_shape(&config).expect("validated");
            match TeacherFormat::from_path(&teacher_path) {
                None => {
                    let here = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
                    chain.push(here);
                    let there = teacher_path.canonicalize().unwrap_or(teacher_path.clone());
                    if chain.contains(&there) {
                        return Err(teacher_error(
                            "the teacher chain loops back to this config".into(),
                        ));
                    }
                    let mut teacher = load_chain(&teacher_path, &[], &HashMap::new(), chain)?;
                    chain.pop();
                    // Storage locations follow the student; they are not part of any hash.
                    teacher.config.data.cache_dir = config.data.cache_dir.clone();
                    teacher.config.output.dir = config.output.dir.clone();
                    let teacher_input = input_shape(&teacher.config).expect("validated");
                    if (teacher_input.height, teacher_input.width)
                        != (student_input.height, student_input.width)
                    {
                        return Err(teacher_error(format!(
                            "the teacher sees {}x{} inputs but this stage {}x{}; they must match \
                             (data.dataset / data.input_size)",
                            teacher_input.height,
                            teacher_input.width,
                            student_input.height,
                            student_input.width
                        )));
                    }
                    Some(TeacherSource::Stage(Box::new(teacher)))
                }
                Some(format) => {
                    let spec = distill.teacher_model.clone().expect("validated");
                    // Load it once now, so a file that does not fit fails before any training.
                    load_model_file(
                        &teacher_path,
                        format,
                        &spec,
                        &distill.key_map,
                        &student_input,
                        &burn::tensor::Device::flex(),
                    )
                    .map_err(|e| {
                        teacher_error(format!(
                            "its weights do not fit distill.teacher_model ({}) built for this \
                             stage's {}x{} inputs and {} classes: {e}",
                            spec.kind(),
                            student_input.height,
                            student_input.width,
                            student_input.classes
                        ))
                    })?;
                    let sha256 = file_sha256(&teacher_path)
                        .map_err(|e| teacher_error(format!("cannot read it: {e}")))?;
                    Some(TeacherSource::File {
                        path: teacher_path,
                        format,
                        spec,
                        key_map: distill.key_map.clone(),
                        sha256,
                    })
                }
            }
        }
    };
    if let (Some(hint), Some(teacher)) = (
        config.distill.as_ref().and_then(|d| d.hint.as_ref()),
        &teacher,
    ) {
        let flex = burn::tensor::Device::flex();
        let input = input_shape(&config).expect("validated");
        let student = models::Model::new(&config.model, &input, &flex).expect("validated");
        let teacher_spec = match teacher {
            TeacherSource::Stage(t) => &t.config.model,
            TeacherSource::File { spec, .. } => spec,
        };
        let teacher_model = models::Model::new(teacher_spec, &input, &flex).expect("validated");
        for (key, layer, model) in [
            ("distill.hint.student_layer", &hint.student_layer, &student),
            (
                "distill.hint.teacher_layer",
                &hint.teacher_layer,
                &teacher_model,
            ),
        ] {
            if !model.taps().contains(layer) {
                return Err(ConfigError::Invalid {
                    location: match key_line(&text, key) {
                        Some(line) => format!("{}:{line}", path.display()),
                        None => path.display().to_string(),
                    },
                    invalid: Invalid {
                        key: key.into(),
                        value: format!("{layer:?}"),
                        allowed: format!(
                            "one of this {} model's taps: {}",
                            model.kind(),
                            model.taps().join(", ")
                        ),
                    },
                });
            }
        }
    }
    Ok(LoadedConfig {
        path: path.to_path_buf(),
        config,
        teacher,
    })
}

/// Reads an override's value as TOML (`3`, `0.1`, `true`, `[800, 800]`, `"text"`), falling
/// back to a plain string (`--set data.dataset=digits`).
fn parse_value(text: &str) -> Value {
    match toml::from_str::<toml::Table>(&format!("v = {text}")) {
        Ok(mut table) => toml_to_config(table.remove("v").expect("parsed key")),
        Err(_) => Value::from(text),
    }
}

fn toml_to_config(value: toml::Value) -> Value {
    let kind = match value {
        toml::Value::String(s) => ValueKind::String(s),
        toml::Value::Integer(i) => ValueKind::I64(i),
        toml::Value::Float(f) => ValueKind::Float(f),
        toml::Value::Boolean(b) => ValueKind::Boolean(b),
        toml::Value::Datetime(d) => ValueKind::String(d.to_string()),
        toml::Value::Array(items) => {
            ValueKind::Array(items.into_iter().map(toml_to_config).collect())
        }
        toml::Value::Table(table) => ValueKind::Table(
            table
                .into_iter()
                .map(|(k, v)| (k, toml_to_config(v)))
                .collect(),
        ),
    };
    Value::new(None, kind)
}

/// 1-based line of the dotted `key` in the TOML `text`, when the file sets it.
pub fn key_line(text: &str, key: &str) -> Option<usize> {
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    let mut table: &dyn toml_edit::TableLike = doc.as_table();
    let parts: Vec<&str> = key.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let (k, item) = table.get_key_value(part)?;
        if i + 1 == parts.len() {
            let span = k.span().or_else(|| item.span())?;
            return Some(text[..span.start].matches('\n').count() + 1);
        }
        table = item.as_table_like()?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_lines_are_found_in_tables_and_inline_tables() {
        let text =
            "name = \"x\"\n\n[train]\nepochs = 3\noptimizer = { kind = \"sgd\", lr = 0.1 }\n";
        assert_eq!(key_line(text, "name"), Some(1));
        assert_eq!(key_line(text, "train.epochs"), Some(4));
        assert_eq!(key_line(text, "train.optimizer.lr"), Some(5));
        assert_eq!(key_line(text, "train.batch_size"), None);
    }

    #[test]
    fn override_values_are_typed() {
        assert_eq!(parse_value("3").into_int().unwrap(), 3);
        assert_eq!(parse_value("0.5").into_float().unwrap(), 0.5);
        assert_eq!(parse_value("digits").into_string().unwrap(), "digits");
        assert_eq!(parse_value("[1, 2]").into_array().unwrap().len(), 2);
    }
}

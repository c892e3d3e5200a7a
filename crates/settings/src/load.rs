//! Reading a stage config: the TOML file, then environment overrides, then `--set` overrides,
//! then validation. Parse, validate, convert: the rest of the code trusts what comes out.
//!
//! The file is parsed with `toml` + serde first because its errors carry line, column and a
//! snippet; the `config` crate then layers the overrides (it names keys, not lines).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use config::{Config, File, FileFormat, Value, ValueKind};

use technique::{Invalid, ParentKey, ParentShape};

use crate::context::Execution;
use crate::identity::stage_hash;
pub use crate::loaded::{ConfigError, LoadedConfig};
use crate::parents::{self, ChildSide, Parent, ResolveError, FROM_KEY};
use crate::schema::StageConfig;
use crate::techniques;
use crate::testing::TestHooks;
use crate::validate::validate;
use models::{InputShape, ModelFormat, ModelSpec};

/// Prefix of environment overrides: `COMPRESS_TRAIN__EPOCHS=3` sets `train.epochs`.
pub const ENV_PREFIX: &str = "COMPRESS";

/// Loads `path`, applies `COMPRESS_*` variables from `env` and the `KEY=VALUE` `overrides`
/// (later wins), validates the result and resolves its parents (which run with this stage's
/// execution context).
pub fn load(
    path: &Path,
    overrides: &[String],
    env: &HashMap<String, String>,
) -> Result<LoadedConfig, ConfigError> {
    let mut loaded = load_chain(path, overrides, env, None, &mut Vec::new())?;
    loaded.hooks = TestHooks::from_env(env).map_err(|message| ConfigError::Parse {
        path: path.to_path_buf(),
        message,
    })?;
    let changing = loaded.hooks.result_changing();
    if !changing.is_empty() {
        // A run under a hook that changes its result is another run.
        loaded.hash = crate::identity::with_extras(&loaded.hash, &changing);
        loaded
            .overrides
            .extend(changing.iter().map(|h| format!("{h} (test hook)")));
    }
    Ok(loaded)
}

/// A config file with its overrides applied.
struct Layered {
    /// The file's text (for line numbers).
    text: String,
    config: StageConfig,
    /// `(dotted key, how it was set)` for every override, to point at the right culprit.
    overridden: Vec<(String, String)>,
}

/// One override: the dotted key, its raw text, and how it was given (for messages).
struct Override {
    key: String,
    raw: String,
    how: String,
}

/// Reads an override's text the way the file would hold it: as a TOML value (`3`, `0.1`,
/// `true`, `[800, 800]`, `"text"`), falling back to a plain string (`digits`, `cuda:0`). A
/// key that holds a string in the file stays a string (`--set name=0x10` names the run
/// `0x10`, not 16).
fn typed_value(raw: &str, string_key: bool) -> Value {
    if string_key {
        return Value::from(raw.trim_matches('"'));
    }
    parse_value(raw)
}

/// Reads the file and layers the overrides on it. The layered result must meet exactly the
/// schema the file meets: the `config` crate merges, and the result is deserialized by the
/// same strict TOML deserializer as the file (no `true` for a number, no `2.7` for an integer).
fn read_layered(
    path: &Path,
    overrides: &[String],
    env: &HashMap<String, String>,
) -> Result<Layered, ConfigError> {
    let text = safeio::read_text(path).map_err(ConfigError::Read)?;
    let from_file = parse_file(path, &text)?;

    let all = collect_overrides(overrides, env)?;
    let overridden: Vec<(String, String)> =
        all.iter().map(|o| (o.key.clone(), o.how.clone())).collect();
    if all.is_empty() {
        return Ok(Layered {
            text,
            config: from_file,
            overridden,
        });
    }
    let config = apply_overrides(path, &text, &from_file, &all)?;
    Ok(Layered {
        text,
        config,
        overridden,
    })
}

/// The file as the schema reads it; a type error names its key and line.
fn parse_file(path: &Path, text: &str) -> Result<StageConfig, ConfigError> {
    toml::from_str(text).map_err(|e| {
        match type_error_key(text, &e) {
            // serde's tagged enums (`kind = ...` tables) lose the key's span and point at
            // the table header: name the key and its line instead.
            Some((key, value, line)) => ConfigError::Invalid {
                location: format!("{}:{line}", path.display()),
                invalid: Invalid::new(&key, value, e.message().to_string()),
            },
            None => ConfigError::Parse {
                path: path.to_path_buf(),
                message: e.to_string().trim_end().to_string(),
            },
        }
    })
}

/// The overrides in the order they apply: `COMPRESS_*` variables (sorted), then `--set`.
fn collect_overrides(
    overrides: &[String],
    env: &HashMap<String, String>,
) -> Result<Vec<Override>, ConfigError> {
    let mut all = Vec::new();
    let mut env: Vec<(&String, &String)> = env
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}_")))
        .collect();
    env.sort();
    for (name, value) in env {
        let key = name[ENV_PREFIX.len() + 1..]
            .to_lowercase()
            .replace("__", ".");
        // An environment variable `COMPRESS_<KEY>...` whose first part is not a key of the
        // schema belongs to some other tool and is ignored.
        let top = key.split('.').next().unwrap_or_default();
        if StageConfig::top_level_keys().contains(&top) {
            all.push(Override {
                key,
                raw: value.clone(),
                how: format!("{name}={value}"),
            });
        }
    }
    for text in overrides {
        let (key, value) = text
            .split_once('=')
            .filter(|(k, _)| !k.trim().is_empty())
            .ok_or_else(|| ConfigError::BadOverride { text: text.clone() })?;
        let (key, value) = (key.trim().to_string(), value.trim().to_string());
        all.push(Override {
            how: format!("--set {key}={value}"),
            key,
            raw: value,
        });
    }
    Ok(all)
}

/// The file with `all` layered on it, read by the schema again.
fn apply_overrides(
    path: &Path,
    text: &str,
    from_file: &StageConfig,
    all: &[Override],
) -> Result<StageConfig, ConfigError> {
    let err = |message: String| ConfigError::Override {
        path: path.to_path_buf(),
        overrides: all
            .iter()
            .map(|o| o.how.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        message,
    };
    // Which overridden keys hold strings in the file's config.
    let in_file = serde_json::to_value(from_file).unwrap_or_default();
    let holds = |key: &str| {
        key.split('.')
            .try_fold(&in_file, |v, part| v.get(part))
            .cloned()
    };
    let layer = |strings_for_absent: bool| -> Result<StageConfig, String> {
        let mut builder = Config::builder().add_source(File::from_str(text, FileFormat::Toml));
        for o in all {
            let string_key = match holds(&o.key) {
                Some(v) => v.is_string(),
                None => strings_for_absent,
            };
            builder = builder
                .set_override(o.key.as_str(), typed_value(&o.raw, string_key))
                .map_err(|e| e.to_string())?;
        }
        let merged: toml::Value = builder
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| e.to_string())?;
        merged.try_into::<StageConfig>().map_err(|e| e.to_string())
    };
    // A key the file leaves out (`from`, `data.path`) may be a string too: when the typed
    // reading does not fit the schema, try the overrides of absent keys as strings.
    match layer(false) {
        Ok(config) => Ok(config),
        Err(typed) => layer(true).map_err(|_| err(typed.trim().replace('\n', " "))),
    }
}

/// `inherited`: the execution context of the stage that named this one as a parent. `chain`
/// holds the configs that led here, to refuse cycles.
fn load_chain(
    path: &Path,
    overrides: &[String],
    env: &HashMap<String, String>,
    inherited: Option<&Execution>,
    chain: &mut Vec<PathBuf>,
) -> Result<LoadedConfig, ConfigError> {
    let Layered {
        text,
        mut config,
        overridden,
    } = read_layered(path, overrides, env)?;
    if let Some(execution) = inherited {
        execution.apply_to(&mut config);
    }
    let where_set = WhereSet {
        path,
        text: &text,
        overridden: &overridden,
        inherited: inherited.is_some(),
    };
    let locate = |invalid: Invalid| where_set.locate(invalid);
    let valid = validate(&config).map_err(locate)?;

    let execution = Execution::of(&config);
    let mut parents = Vec::new();
    for key in parent_keys(&config) {
        let child = ChildSide {
            path,
            execution: &execution,
            input: &valid.input,
            device: &valid.device,
            batch: config.train.batch_size,
            chain,
            load_parent: &|path, execution, chain| {
                load_chain(path, &[], &HashMap::new(), Some(execution), chain)
            },
        };
        match parents::resolve(&key, child) {
            Ok(parent) => parents.push(parent),
            Err(ResolveError::Invalid(invalid)) => return Err(locate(invalid)),
            Err(ResolveError::InParent(error)) => return Err(*error),
        }
    }
    let model = start_model(&config, &parents, &valid.input).map_err(locate)?;
    fit_eval_batch(&mut config, &model, &valid.input).map_err(locate)?;
    let shapes: Vec<ParentShape> = parents
        .iter()
        .map(|p| ParentShape {
            key: &p.key,
            spec: p.spec(),
        })
        .collect();
    for section in techniques::sections(&config) {
        section
            .check(&model, &shapes, &valid.input)
            .map_err(locate)?;
    }
    let identities: Vec<(String, String)> = parents
        .iter()
        .map(|p| (p.key.clone(), p.identity()))
        .collect();
    Ok(LoadedConfig {
        path: path.to_path_buf(),
        overrides: overridden.iter().map(|(_, how)| how.clone()).collect(),
        hash: stage_hash(&config, &identities),
        hooks: TestHooks::default(),
        config,
        input: valid.input,
        model,
        device: valid.device,
        parents,
    })
}

/// Lowers the default evaluation batch (an execution setting: results do not depend on it) to
/// what this model's inference fits in memory at this input size: 1000 images of ResNet-18 at
/// 224x224 would need about 46 GiB. A batch the user chose is refused instead, with the
/// largest that fits.
fn fit_eval_batch(
    config: &mut StageConfig,
    model: &ModelSpec,
    input: &InputShape,
) -> Result<(), Invalid> {
    let key = "train.eval_batch_size";
    let requested = config.train.eval_batch_size;
    let batch = crate::validate::eval_batch_for(model, input, requested);
    config.train.eval_batch_size = batch;
    crate::validate::check_inference_fits(key, model, input, batch).map_err(|e| {
        let fitting = crate::validate::fitting_eval_batch(model, input, requested);
        Invalid::new(
            key,
            requested,
            format!(
                "at most {fitting} for this model: {} {}",
                e.value, e.allowed
            ),
        )
    })
}

/// Where a config's key was set, for its error: the override that set it (or a key inside
/// it), else its line in the file, else inherited or a default.
struct WhereSet<'a> {
    path: &'a Path,
    text: &'a str,
    overridden: &'a [(String, String)],
    /// Whether the stage runs as a parent, with its child's execution context.
    inherited: bool,
}

impl WhereSet<'_> {
    fn locate(&self, invalid: Invalid) -> ConfigError {
        // The override that set the key, or a key inside it (`--set model.hidden=...` for
        // an error about `model`).
        // Either way round: `--set prune.layers={...}` for an error about the pattern
        // `prune.layers."conv*"` inside it.
        let within = |k: &str| {
            k == invalid.key
                || k.starts_with(&format!("{}.", invalid.key))
                || invalid.key.starts_with(&format!("{k}."))
        };
        let by_override = self.overridden.iter().rev().find(|(k, _)| within(k));
        let location = match (by_override, key_line(self.text, &invalid.key)) {
            (Some((_, how)), _) => format!("{} (set by {how})", self.path.display()),
            (None, Some(line)) => format!("{}:{line}", self.path.display()),
            (None, None) if self.inherited && is_execution_key(&invalid.key) => format!(
                "{} (inherited from the stage that uses it as a parent)",
                self.path.display()
            ),
            (None, None) => format!("{} (default value)", self.path.display()),
        };
        ConfigError::Invalid { location, invalid }
    }
}

/// The architecture the stage starts from: its `[model]`, or its `from` parent's (which must
/// fit memory at this stage's batch size).
fn start_model(
    config: &StageConfig,
    parents: &[Parent],
    input: &InputShape,
) -> Result<ModelSpec, Invalid> {
    match (&config.model, parents.iter().find(|p| p.key == FROM_KEY)) {
        (Some(model), None) => Ok(model.clone()),
        (None, Some(parent)) => {
            // The parent's model is this stage's: it trains at this stage's batch size.
            let spec = parent.spec().clone();
            crate::validate::check_fits(FROM_KEY, &spec, input, config.train.batch_size)?;
            Ok(spec)
        }
        // A foreign file's architecture is the `[model]` it was loaded with.
        (Some(model), Some(parent)) if parent.is_foreign_file() => Ok(model.clone()),
        (Some(_), Some(_)) => Err(Invalid::new(
            "model",
            "a [model] table",
            "leave it out: the model is the one `from` names (only a PyTorch or safetensors \
             file needs its architecture here)",
        )),
        (None, None) => Err(Invalid::new(
            "model",
            "missing",
            "a [model] table (kind = \"mlp\", \"lenet5\", \"vgg\", \"resnet\" or \"mobilenet-v2\"), or \
                 `from` naming the stage or model file to start from",
        )),
    }
}

/// Every parent a config names: `from`, then each technique section's.
fn parent_keys(config: &StageConfig) -> Vec<ParentKey> {
    // A PyTorch or safetensors file holds weights only: its architecture is the stage's
    // `[model]` (a ResNet reads torchvision's key names).
    let from = config.from.as_ref().map(|path| {
        let foreign = matches!(
            ModelFormat::from_path(path),
            Some(ModelFormat::Pytorch | ModelFormat::Safetensors)
        );
        ParentKey {
            key: FROM_KEY.into(),
            path: path.clone(),
            spec: config.model.clone().filter(|_| foreign),
            spec_key: foreign.then(|| "model".to_string()),
            key_map: Vec::new(),
        }
    });
    from.into_iter()
        .chain(
            techniques::sections(config)
                .into_iter()
                .flat_map(|s| s.parents()),
        )
        .collect()
}

fn is_execution_key(key: &str) -> bool {
    Execution::KEYS
        .iter()
        .any(|k| key == *k || key.starts_with(&format!("{k}.")))
}

/// Reads an override's value as TOML (`3`, `0.1`, `true`, `[800, 800]`, `"text"`), falling
/// back to a plain string (`--set data.dataset=digits`).
fn parse_value(text: &str) -> Value {
    match toml::from_str::<toml::Table>(&format!("v = {text}")) {
        Ok(mut table) => match table.remove("v") {
            Some(value) => toml_to_config(value),
            None => Value::from(text),
        },
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

/// For a type error that toml reports at a table header (`invalid type: string "0.05",
/// expected f64` at `[train.optimizer]`), the dotted key in that table holding the offending
/// value, and its line.
fn type_error_key(text: &str, error: &toml::de::Error) -> Option<(String, String, usize)> {
    let span = error.span()?;
    let header = text.get(span.clone())?.trim().lines().next()?.trim();
    let table = header
        .strip_prefix('[')?
        .strip_suffix(']')?
        .trim()
        .to_string();
    let message = error.message();
    let rest = message.strip_prefix("invalid type: ")?;
    let shown = rest.split(", expected").next()?;
    // `string "0.05"`, `integer `5``, `floating point `0.5``, `boolean `true``.
    let value = match shown.split_once(' ') {
        Some(("string", v)) => v.to_string(),
        _ => shown.rsplit('`').nth(1)?.to_string(),
    };
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    let mut item: &dyn toml_edit::TableLike = doc.as_table();
    for part in table.split('.') {
        item = item.get(part)?.as_table_like()?;
    }
    let (key, found) = item.iter().find(|(_, v)| {
        v.as_value()
            .is_some_and(|v| v.to_string().trim() == value.trim())
    })?;
    let dotted = format!("{table}.{key}");
    let line = key_line(text, &dotted)?;
    let found = found.as_value()?.to_string().trim().to_string();
    Some((dotted, found, line))
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

    /// A small digits config in `dir` whose learning rate is the TOML text `lr` (line 11).
    fn digits_config(dir: &Path, lr: &str) -> PathBuf {
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            format!(
                "name = \"x\"\n[data]\ndataset = \"digits\"\n[model]\nkind = \"mlp\"\n\
                 hidden = [4]\n[train]\nepochs = 1\n[train.optimizer]\nkind = \"sgd\"\nlr = {lr}\n"
            ),
        )
        .unwrap();
        path
    }

    #[test]
    fn a_type_error_inside_a_kind_table_names_the_key_and_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = digits_config(dir.path(), "\"0.05\"");
        let err = load(&path, &[], &HashMap::new()).unwrap_err().to_string();
        assert!(
            err.contains("c.toml:11: train.optimizer.lr = \"0.05\": invalid type: string"),
            "{err}"
        );
    }

    #[test]
    fn the_environment_reaches_every_top_level_key_of_the_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = digits_config(dir.path(), "0.1");
        assert!(load(&path, &[], &HashMap::new()).is_ok());
        // A key no section has: every section must see it and refuse it.
        for key in StageConfig::top_level_keys() {
            let var = format!("{ENV_PREFIX}_{}__NO_SUCH_KEY", key.to_uppercase());
            let env = HashMap::from([(var.clone(), "1".to_string())]);
            let err = load(&path, &[], &env).expect_err(&var).to_string();
            assert!(err.contains(&var), "{var}: {err}");
        }
    }

    #[test]
    fn a_default_evaluation_batch_too_large_for_memory_is_lowered_and_a_chosen_one_refused() {
        // ResNet-18 at 1024x1024: 1000 images at once need terabytes on any machine.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "name = \"x\"\n[data]\ndataset = \"digits\"\ninput_size = 1024\n[model]\n\
             kind = \"resnet\"\nstem_layout = \"imagenet\"\nstem = 64\n\
             stages = [64, 128, 256, 512]\nblocks = 2\n[train]\nepochs = 1\nbatch_size = 1\n\
             [train.optimizer]\nkind = \"sgd\"\nlr = 0.1\n",
        )
        .unwrap();
        let loaded = load(&path, &[], &HashMap::new()).unwrap();
        let batch = loaded.config.train.eval_batch_size;
        assert!((1..1000).contains(&batch), "{batch}");
        crate::validate::check_inference_fits("x", &loaded.model, &loaded.input, batch).unwrap();
        assert!(crate::validate::check_inference_fits(
            "x",
            &loaded.model,
            &loaded.input,
            batch + 1
        )
        .is_err());

        let chosen = ["train.eval_batch_size=900".to_string()];
        let err = load(&path, &chosen, &HashMap::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("train.eval_batch_size = 900")
                && err.contains(&format!("at most {batch} for this model")),
            "{err}"
        );
    }

    #[test]
    fn override_values_are_typed() {
        assert_eq!(parse_value("3").into_int().unwrap(), 3);
        assert_eq!(parse_value("0.5").into_float().unwrap(), 0.5);
        assert_eq!(parse_value("digits").into_string().unwrap(), "digits");
        assert_eq!(parse_value("[1, 2]").into_array().unwrap().len(), 2);
    }
}

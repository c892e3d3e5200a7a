//! TensorBoard's HParams plugin data (`tensorboard/plugins/hparams/plugin_data.proto`,
//! `api.proto`), built from the types the `tensorboard-proto` crate generates from
//! TensorBoard's own `.proto` files (the crate `tensorboard-rs` writes event files with), so
//! the messages cannot drift from what TensorBoard reads.
//!
//! Every run is an HParams session (its resolved config's keys and what made it, against its
//! summary's figures as metrics); a sweep adds an experiment naming the swept keys.

use protobuf::well_known_types::{ListValue, Value};
use protobuf::Message;
use tensorboard_proto::api::{
    DataType, Experiment, HParamInfo, Interval, MetricInfo, MetricName, Status,
};
use tensorboard_proto::plugin_hparams::{HParamsPluginData, SessionEndInfo, SessionStartInfo};

/// One hyperparameter value (`google.protobuf.Value`).
#[derive(Debug, Clone, PartialEq)]
pub enum HValue {
    Number(f64),
    Text(String),
    Bool(bool),
}

impl HValue {
    /// The value a config value becomes: numbers, booleans and strings as themselves, arrays
    /// and tables as their compact JSON text (`[800,800]`), null as `None` (not recorded).
    pub fn from_json(value: &serde_json::Value) -> Option<Self> {
        Some(match value {
            serde_json::Value::Null => return None,
            serde_json::Value::Number(n) => HValue::Number(n.as_f64()?),
            serde_json::Value::Bool(b) => HValue::Bool(*b),
            serde_json::Value::String(s) => HValue::Text(s.clone()),
            other => HValue::Text(other.to_string()),
        })
    }

    /// The value as JSON (what `summary.json` records).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            HValue::Number(x) => serde_json::json!(x),
            HValue::Text(s) => serde_json::json!(s),
            HValue::Bool(b) => serde_json::json!(b),
        }
    }

    /// Its `DataType` in `api.proto`.
    fn data_type(&self) -> DataType {
        match self {
            HValue::Text(_) => DataType::DATA_TYPE_STRING,
            HValue::Bool(_) => DataType::DATA_TYPE_BOOL,
            HValue::Number(_) => DataType::DATA_TYPE_FLOAT64,
        }
    }
}

/// A number as a person writes it: `0.05`, `128`, `1e30`, `2.5e-5` (Rust's shortest
/// round-tripping digits, in exponent form outside 1e-4..1e15).
pub fn human_number(x: f64) -> String {
    let a = x.abs();
    if a != 0.0 && !(1e-4..1e15).contains(&a) {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

/// The leaves of `value` as dotted keys under `prefix` (`train.optimizer.lr`), arrays as one
/// leaf; `skip` says which dotted keys (and everything under them) to leave out.
pub fn leaves(
    prefix: &str,
    value: &serde_json::Value,
    skip: &dyn Fn(&str) -> bool,
    out: &mut Vec<(String, HValue)>,
) {
    if !prefix.is_empty() && skip(prefix) {
        return;
    }
    match value {
        serde_json::Value::Object(fields) => {
            for (key, v) in fields {
                let key = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                leaves(&key, v, skip, out);
            }
        }
        leaf => {
            if let Some(v) = HValue::from_json(leaf) {
                out.push((prefix.to_string(), v));
            }
        }
    }
}

pub const PLUGIN: &str = "hparams";

/// The figures every run records as `summary/*` scalars and the HParams views compare: the
/// metrics of a sweep's and a report's experiment.
pub const RUN_METRICS: [&str; 14] = [
    "summary/accuracy",
    "summary/test_errors",
    "summary/latency_ms_p50",
    "summary/latency_ms_p95",
    "summary/throughput_samples_per_s",
    "summary/model_bytes",
    "summary/params",
    "summary/macs",
    "summary/train_seconds",
    "summary/params_ratio",
    "summary/model_bytes_ratio",
    "summary/macs_ratio",
    "summary/latency_p50_ratio",
    "summary/accuracy_delta_points",
];

/// Each hyperparameter of `runs` with the values they take, by name (TensorBoard shows an
/// experiment's hyperparameters sorted by name whatever their order here).
pub fn domains(runs: &[Vec<(String, HValue)>]) -> Vec<(String, Vec<HValue>)> {
    let mut out: std::collections::BTreeMap<String, Vec<HValue>> = Default::default();
    for (key, v) in runs.iter().flatten() {
        let values = out.entry(key.clone()).or_default();
        if !values.contains(v) {
            values.push(v.clone());
        }
    }
    out.into_iter().collect()
}
pub const EXPERIMENT_TAG: &str = "_hparams_/experiment";
pub const SESSION_START_TAG: &str = "_hparams_/session_start_info";
pub const SESSION_END_TAG: &str = "_hparams_/session_end_info";

/// A hyperparameter value as `google.protobuf.Value`.
fn value(v: &HValue) -> Value {
    let mut out = Value::new();
    match v {
        HValue::Number(x) => out.set_number_value(*x),
        HValue::Text(s) => out.set_string_value(s.clone()),
        HValue::Bool(b) => out.set_bool_value(*b),
    }
    out
}

/// `HParamsPluginData { version: 0, data }`, serialised.
fn plugin_data(fill: impl FnOnce(&mut HParamsPluginData)) -> Vec<u8> {
    let mut data = HParamsPluginData::new();
    data.set_version(0);
    fill(&mut data);
    // Writing a message to memory cannot fail (there is no I/O), and every message here has
    // only optional proto3 fields.
    data.write_to_bytes().unwrap_or_default()
}

/// The experiment: each hyperparameter with its type and the values the sweep takes, and the
/// metrics (scalar tags) to show against them.
pub fn experiment(
    hparams: &[(String, Vec<HValue>)],
    metrics: &[&str],
    created_secs: f64,
) -> Vec<u8> {
    let mut e = Experiment::new();
    e.set_time_created_secs(created_secs);
    for (name, values) in hparams {
        let mut info = HParamInfo::new();
        info.set_name(name.clone());
        if let Some(first) = values.first() {
            info.set_field_type(first.data_type());
        }
        let numbers: Vec<f64> = values
            .iter()
            .filter_map(|v| match v {
                HValue::Number(x) => Some(*x),
                _ => None,
            })
            .collect();
        if !numbers.is_empty() && numbers.len() == values.len() {
            // Numbers: an interval (what TensorBoard's parallel-coordinates axes use).
            let mut interval = Interval::new();
            interval.set_min_value(numbers.iter().copied().fold(f64::INFINITY, f64::min));
            interval.set_max_value(numbers.iter().copied().fold(f64::NEG_INFINITY, f64::max));
            info.set_domain_interval(interval);
        } else {
            let mut list = ListValue::new();
            list.set_values(values.iter().map(value).collect());
            info.set_domain_discrete(list);
        }
        e.mut_hparam_infos().push(info);
    }
    for tag in metrics {
        let mut name = MetricName::new();
        name.set_tag(tag.to_string());
        let mut info = MetricInfo::new();
        info.set_name(name);
        info.set_display_name(tag.to_string());
        e.mut_metric_infos().push(info);
    }
    plugin_data(|d| d.set_experiment(e))
}

/// One session's start: its hyperparameter values, its group and when it started.
pub fn session_start(hparams: &[(String, HValue)], group: &str, start_secs: f64) -> Vec<u8> {
    let mut s = SessionStartInfo::new();
    for (name, v) in hparams {
        s.mut_hparams().insert(name.clone(), value(v));
    }
    s.set_group_name(group.to_string());
    s.set_start_time_secs(start_secs);
    plugin_data(|d| d.set_session_start_info(s))
}

/// One session's end: `SUCCESS` or `FAILURE`.
pub fn session_end(success: bool, end_secs: f64) -> Vec<u8> {
    let mut s = SessionEndInfo::new();
    s.set_status(if success {
        Status::STATUS_SUCCESS
    } else {
        Status::STATUS_FAILURE
    });
    s.set_end_time_secs(end_secs);
    plugin_data(|d| d.set_session_end_info(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_print_as_people_write_them() {
        assert_eq!(human_number(1e30), "1e30");
        assert_eq!(human_number(0.05), "0.05");
        assert_eq!(human_number(128.0), "128");
        assert_eq!(human_number(2.5e-5), "2.5e-5");
        assert_eq!(human_number(0.0), "0");
        assert_eq!(human_number(-3.0e20), "-3e20");
    }

    #[test]
    fn config_leaves_are_dotted_keys() {
        let config = serde_json::json!({
            "seed": 1, "name": "x", "model": {"kind": "mlp", "hidden": [800, 800]},
            "train": {"optimizer": {"lr": 0.05}}, "from": null
        });
        let mut out = Vec::new();
        leaves("", &config, &|k| k == "name", &mut out);
        assert_eq!(
            out,
            vec![
                ("model.hidden".to_string(), HValue::Text("[800,800]".into())),
                ("model.kind".to_string(), HValue::Text("mlp".into())),
                ("seed".to_string(), HValue::Number(1.0)),
                ("train.optimizer.lr".to_string(), HValue::Number(0.05)),
            ]
        );
    }

    #[test]
    fn a_session_reads_back_as_tensorboard_parses_it() {
        let bytes = session_start(
            &[
                ("seed".into(), HValue::Number(3.0)),
                ("technique".into(), HValue::Text("distill".into())),
            ],
            "student/abc",
            12.5,
        );
        let data = HParamsPluginData::parse_from_bytes(&bytes).unwrap();
        let start = data.get_session_start_info();
        assert_eq!(start.get_group_name(), "student/abc");
        assert_eq!(start.get_start_time_secs(), 12.5);
        assert_eq!(start.get_hparams()["seed"].get_number_value(), 3.0);
        assert_eq!(
            start.get_hparams()["technique"].get_string_value(),
            "distill"
        );
        let end = HParamsPluginData::parse_from_bytes(&session_end(false, 1.0)).unwrap();
        assert_eq!(
            end.get_session_end_info().get_status(),
            Status::STATUS_FAILURE
        );
    }
}

//! TensorBoard's HParams plugin data (`tensorboard/plugins/hparams/plugin_data.proto`,
//! `api.proto`), encoded by hand: the messages are small and the project's protobuf crate has
//! no generated types for them. Field numbers are the protos' own.
//!
//! Every run is an HParams session (its resolved config's keys and what made it, against its
//! summary's figures as metrics); a sweep adds an experiment naming the swept keys.

/// One hyperparameter value: `google.protobuf.Value`.
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

    /// `DataType` of `api.proto`: STRING 1, BOOL 2, FLOAT64 3.
    fn data_type(&self) -> u64 {
        match self {
            HValue::Text(_) => 1,
            HValue::Bool(_) => 2,
            HValue::Number(_) => 3,
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
pub const EXPERIMENT_TAG: &str = "_hparams_/experiment";
pub const SESSION_START_TAG: &str = "_hparams_/session_start_info";
pub const SESSION_END_TAG: &str = "_hparams_/session_end_info";

#[derive(Default)]
struct Writer(Vec<u8>);

impl Writer {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    fn key(&mut self, field: u32, wire: u8) {
        self.varint(((field as u64) << 3) | wire as u64);
    }
    fn uint(&mut self, field: u32, v: u64) {
        self.key(field, 0);
        self.varint(v);
    }
    fn double(&mut self, field: u32, v: f64) {
        self.key(field, 1);
        self.0.extend(v.to_le_bytes());
    }
    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend(b);
    }
    fn text(&mut self, field: u32, s: &str) {
        self.bytes(field, s.as_bytes());
    }
}

fn value(v: &HValue) -> Vec<u8> {
    let mut w = Writer::default();
    match v {
        HValue::Number(x) => w.double(2, *x),
        HValue::Text(s) => w.text(3, s),
        HValue::Bool(b) => w.uint(4, *b as u64),
    }
    w.0
}

/// `HParamsPluginData { version = 0; <field> = message }`.
fn plugin_data(field: u32, message: &[u8]) -> Vec<u8> {
    let mut w = Writer::default();
    w.uint(1, 0);
    w.bytes(field, message);
    w.0
}

/// The experiment: each hyperparameter with its type and the values the sweep takes, and the
/// metrics (scalar tags) to show against them.
pub fn experiment(
    hparams: &[(String, Vec<HValue>)],
    metrics: &[&str],
    created_secs: f64,
) -> Vec<u8> {
    let mut e = Writer::default();
    e.double(3, created_secs);
    for (name, values) in hparams {
        let mut info = Writer::default();
        info.text(1, name);
        if let Some(first) = values.first() {
            info.uint(4, first.data_type());
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
            let mut interval = Writer::default();
            interval.double(1, numbers.iter().copied().fold(f64::INFINITY, f64::min));
            interval.double(2, numbers.iter().copied().fold(f64::NEG_INFINITY, f64::max));
            info.bytes(6, &interval.0);
        } else {
            let mut list = Writer::default();
            for v in values {
                list.bytes(1, &value(v));
            }
            info.bytes(5, &list.0);
        }
        e.bytes(4, &info.0);
    }
    for tag in metrics {
        let mut name = Writer::default();
        name.text(2, tag);
        let mut info = Writer::default();
        info.bytes(1, &name.0);
        info.text(3, tag);
        e.bytes(5, &info.0);
    }
    plugin_data(2, &e.0)
}

/// One trial's start: its hyperparameter values.
pub fn session_start(hparams: &[(String, HValue)], group: &str, start_secs: f64) -> Vec<u8> {
    let mut s = Writer::default();
    for (name, v) in hparams {
        let mut entry = Writer::default();
        entry.text(1, name);
        entry.bytes(2, &value(v));
        s.bytes(1, &entry.0);
    }
    s.text(4, group);
    s.double(5, start_secs);
    plugin_data(3, &s.0)
}

/// One trial's end: `SUCCESS` (1) or `FAILURE` (2).
pub fn session_end(success: bool, end_secs: f64) -> Vec<u8> {
    let mut s = Writer::default();
    s.uint(1, if success { 1 } else { 2 });
    s.double(2, end_secs);
    plugin_data(4, &s.0)
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
    fn messages_encode_as_protobuf_does() {
        // Checked against protoc's encoding of the same messages.
        assert_eq!(value(&HValue::Bool(true)), [0x20, 0x01]);
        assert_eq!(value(&HValue::Text("a".into())), [0x1a, 0x01, b'a']);
        let mut w = Writer::default();
        w.varint(300);
        assert_eq!(w.0, [0xac, 0x02]);
        assert_eq!(session_end(true, 0.0)[..4], [0x08, 0x00, 0x22, 0x0b]);
    }
}

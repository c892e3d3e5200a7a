//! Runs seen the way users see them: TensorBoard itself (from the project's venv) serves a
//! folder of real runs. Its HParams HTTP API lists every run with what made it and its
//! figures, a sweep's sessions each have a value for every swept key, and its profile plugin
//! lists a profiled run and serves its recorded timeline.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// Starts TensorBoard on `argv[1]` (an unused port, the plain Python loader), waits until its
/// HParams API lists `argv[2]` session groups (60 s at most), and prints the experiment and
/// the session groups as JSON.
const QUERY: &str = r#"
import json, sys, time, urllib.parse, urllib.request
from tensorboard import program
tb = program.TensorBoard()
tb.configure(argv=[None, "--logdir", sys.argv[1], "--host", "127.0.0.1", "--port", "0",
                   "--load_fast", "false", "--reload_interval", "1"])
url = tb.launch()
def get(route, request):
    query = urllib.parse.urlencode({"request": json.dumps(request)})
    with urllib.request.urlopen(f"{url}data/plugin/hparams/{route}?{query}", timeout=30) as r:
        return json.loads(r.read())
statuses = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]
want, deadline = int(sys.argv[2]), time.time() + 60
while True:
    try:
        experiment = get("experiment", {"experimentName": ""})
        groups = get("session_groups", {"experimentName": "", "allowedStatuses": statuses,
                                        "colParams": [], "startIndex": 0, "sliceSize": 1000})
        if len(groups.get("sessionGroups", [])) >= want:
            break
    except Exception as e:
        experiment, groups = {"error": str(e)}, {}
    if time.time() > deadline:
        break
    time.sleep(0.5)
print(json.dumps({"experiment": experiment, "groups": groups.get("sessionGroups", [])}))
"#;

/// Starts TensorBoard on `argv[1]` and prints, as JSON, what its profile plugin lists (runs,
/// each run's tools and hosts) and the trace it serves for each run's first host.
const PROFILE_QUERY: &str = r#"
import gzip, json, sys, time, urllib.parse, urllib.request
from tensorboard import program
tb = program.TensorBoard()
tb.configure(argv=[None, "--logdir", sys.argv[1], "--host", "127.0.0.1", "--port", "0",
                   "--load_fast", "false", "--reload_interval", "1"])
url = tb.launch()
def get(route):
    with urllib.request.urlopen(url + "data/plugin/profile/" + route, timeout=60) as r:
        body = r.read()
    return json.loads(gzip.decompress(body) if body[:2] == bytes([0x1f, 0x8b]) else body)
deadline, runs = time.time() + 60, []
while not runs and time.time() < deadline:
    try:
        runs = get("runs")
    except Exception:
        pass
    time.sleep(0.5)
out = {"runs": runs, "tools": {}, "traces": {}}
for run in runs:
    q = urllib.parse.quote(run)
    out["tools"][run] = get(f"run_tools?run={q}")
    hosts = get(f"hosts?run={q}&tag=trace_viewer%23")
    host = urllib.parse.quote(hosts[0]["hostname"])
    out["traces"][run] = get(f"data?run={q}&tag=trace_viewer%23&host={host}")
print(json.dumps(out))
"#;

fn python_with_tensorboard() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(root.join("scripts/tensorboard-venv.sh"))
        .output()
        .expect("bash runs scripts/tensorboard-venv.sh");
    assert!(out.status.success(), "{}", text(&out));
    format!("{}/bin/python", String::from_utf8_lossy(&out.stdout).trim())
}

/// What TensorBoard's HParams API says about the runs under `logdir`.
fn hparams_api(logdir: &Path, sessions: usize) -> serde_json::Value {
    let out = Command::new(python_with_tensorboard())
        .args(["-c", QUERY])
        .arg(logdir)
        .arg(sessions.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A session group's hyperparameter `name`, as the API returns it (a number, string or bool).
fn hparam<'a>(group: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    &group["hparams"][name]
}

/// A session group's metric `tag`.
fn metric(group: &serde_json::Value, tag: &str) -> Option<f64> {
    group["metricValues"]
        .as_array()?
        .iter()
        .find(|m| m["name"]["tag"] == tag)?["value"]
        .as_f64()
}

#[test]
fn tensorboard_lists_every_run_with_its_technique_seed_and_figures() {
    let (dir, student) = teacher_and_student(96);
    train_ok(dir.path(), &student, &[]);
    let teacher = dir.path().join("teacher.toml");
    train_ok(dir.path(), &teacher, &["--set", "seed=4"]);

    // `train report` writes the folder's experiment: the hyperparameters every run has against
    // the summary figures as metrics (without it, TensorBoard would take every scalar as one).
    let out = train(dir.path()).args(["report", "runs"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let api = hparams_api(&dir.path().join("runs"), 3);
    let names: Vec<&str> = api["experiment"]["hparamInfos"]
        .as_array()
        .unwrap_or_else(|| panic!("no hparams in {}", api["experiment"]))
        .iter()
        .filter_map(|h| h["name"].as_str())
        .collect();
    for name in [
        "technique",
        "parent",
        "seed",
        "model.kind",
        "model.hidden",
        "train.optimizer.lr",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    let metrics: Vec<&str> = api["experiment"]["metricInfos"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["name"]["tag"].as_str())
        .collect();
    for tag in [
        "summary/accuracy",
        "summary/latency_ms_p50",
        "summary/model_bytes",
    ] {
        assert!(metrics.contains(&tag), "{tag} missing from {metrics:?}");
    }
    assert!(
        metrics.iter().all(|m| m.starts_with("summary/")),
        "{metrics:?}"
    );

    let groups = api["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 3, "one session group per run: {groups:?}");
    let mut seen = Vec::new();
    for group in groups {
        let name = group["name"].as_str().unwrap();
        let run = dir.path().join("runs").join(name);
        let summary = summary(&run);
        // The run's summary.json and its HParams entry agree.
        let technique = hparam(group, "technique").as_str().unwrap();
        let seed = hparam(group, "seed").as_f64().unwrap();
        assert_eq!(seed, summary["seed"].as_f64().unwrap(), "{name}");
        // Every hyperparameter TensorBoard shows is the one summary.json records.
        for (key, value) in summary["hparams"].as_object().unwrap() {
            assert_eq!(hparam(group, key), value, "{name}: {key}");
        }
        let accuracy = metric(group, "summary/accuracy").unwrap();
        assert!((accuracy - summary["accuracy"].as_f64().unwrap()).abs() < 1e-6);
        let errors = metric(group, "summary/test_errors").unwrap();
        assert_eq!(errors, summary["test_errors"].as_f64().unwrap(), "{name}");
        seen.push((
            name.split('/').next().unwrap().to_string(),
            technique.to_string(),
            seed,
        ));
    }
    seen.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert_eq!(
        seen,
        [
            ("student".to_string(), "distill".to_string(), 3.0),
            ("teacher".to_string(), "train".to_string(), 3.0),
            ("teacher".to_string(), "train".to_string(), 4.0),
        ]
    );
}

#[test]
fn every_sweep_session_has_a_value_for_every_swept_key() {
    let (dir, data) = folder_with_data(64);
    write(
        &dir.path().join("base.toml"),
        &small_config(&data).replace("epochs = 2", "epochs = 1"),
    );
    // The listed trial sets a key the grid does not; the grid's trials take the base's 0.05.
    let sweep = write(
        &dir.path().join("lr.toml"),
        "name = \"lr\"\nbase = \"base.toml\"\n[grid]\nseed = [1, 2]\n\
         [[trials]]\n\"train.optimizer.lr\" = 1e-3\n[launcher]\nkind = \"local\"\n",
    );
    let out = train(dir.path())
        .args(["sweep", "--plain"])
        .arg(&sweep)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    // Numbers as a person writes them, in labels and folder names.
    let tensorboard = dir.path().join("runs/sweeps/lr/tensorboard");
    assert!(tensorboard.join("002-train.optimizer.lr=0.001").is_dir());

    let api = hparams_api(&tensorboard, 3);
    let names: Vec<&str> = api["experiment"]["hparamInfos"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["name"].as_str())
        .collect();
    assert_eq!(names, ["seed", "train.optimizer.lr"]);
    let groups = api["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 3, "{groups:?}");
    let mut lrs: Vec<f64> = Vec::new();
    for group in groups {
        for name in &names {
            assert!(
                !hparam(group, name).is_null(),
                "{} has no value for {name}: {group}",
                group["name"]
            );
        }
        lrs.push(hparam(group, "train.optimizer.lr").as_f64().unwrap());
        assert!(metric(group, "summary/accuracy").is_some(), "{group}");
    }
    lrs.sort_by(f64::total_cmp);
    assert_eq!(lrs, [0.001, 0.05, 0.05]);
}

#[test]
fn the_profile_timeline_opens_in_tensorboards_profile_tab() {
    let (dir, data) = folder_with_data(64);
    let config = write(&dir.path().join("c.toml"), &small_config(&data));
    train_ok(dir.path(), &config, &[]);
    let run = only_run_dir(dir.path(), "small");
    let out = train(dir.path())
        .args(["profile", "--runs", "5"])
        .arg(&run)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));

    let out = Command::new(python_with_tensorboard())
        .args(["-c", PROFILE_QUERY])
        .arg(dir.path().join("runs"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let api: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let runs = api["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{api}");
    let session = runs[0].as_str().unwrap();
    let hash = run.file_name().unwrap().to_string_lossy();
    assert!(session.starts_with(&format!("small/{hash}/")), "{session}");
    assert!(api["tools"][session]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("trace_viewer#")));

    // The trace: named threads, and the model's layers as they ran in the recorded passes
    // and training steps, on a wall clock, each pass's layers in order inside it.
    let events = api["traces"][session]["traceEvents"].as_array().unwrap();
    let threads: Vec<&str> = events
        .iter()
        .filter(|e| e["name"] == "thread_name")
        .filter_map(|e| e["args"]["name"].as_str())
        .collect();
    assert_eq!(threads.len(), 3, "{threads:?}");
    let spans = |cat: &str, tid: u64| -> Vec<&serde_json::Value> {
        events
            .iter()
            .filter(|e| e["cat"] == cat && e["tid"] == tid)
            .collect()
    };
    assert_eq!(spans("forward", 1).len(), 3, "three inference passes");
    assert_eq!(spans("backward", 2).len(), 3, "three backward passes");
    assert_eq!(spans("data", 3).len(), 2, "two batches prepared");
    let layers = spans("layer", 1);
    assert!(layers.len() >= 6, "{layers:?}");
    let pass = spans("forward", 1)[0];
    let (start, end) = (
        pass["ts"].as_f64().unwrap(),
        pass["ts"].as_f64().unwrap() + pass["dur"].as_f64().unwrap(),
    );
    let inside: Vec<f64> = layers
        .iter()
        .map(|l| l["ts"].as_f64().unwrap())
        .filter(|&ts| ts >= start && ts <= end)
        .collect();
    assert!(
        inside.len() >= 2,
        "layers inside the first pass: {inside:?}"
    );
    assert!(inside.windows(2).all(|w| w[0] <= w[1]), "{inside:?}");
    assert!(start > 1.6e15, "wall-clock microseconds: {start}");
}

//! Hostile input and faults, through the real binary: every one ends with a clear message and
//! a non-zero exit (never a signal or a panic), changes nothing that poses as a result, and a
//! later good command completes.

mod common;

use std::path::Path;
use std::process::Output;

use common::*;

/// The command failed cleanly: an exit code (no signal), no panic, the message it must give.
fn assert_clean_failure(out: &Output, wants: &[&str]) {
    let t = text(out);
    assert!(out.status.code().is_some(), "killed by a signal:\n{t}");
    assert!(!out.status.success(), "it succeeded:\n{t}");
    assert!(!t.contains("panicked"), "it panicked:\n{t}");
    for want in wants {
        assert!(t.contains(want), "missing {want:?} in:\n{t}");
    }
}

fn check(dir: &Path, config: &Path, sets: &[&str]) -> Output {
    let mut cmd = train(dir);
    cmd.arg("check").arg(config);
    for set in sets {
        cmd.args(["--set", set]);
    }
    cmd.output().unwrap()
}

#[test]
fn overrides_meet_the_schema_the_file_meets() {
    let (dir, data) = folder_with_data(32);
    let config = write(&dir.path().join("c.toml"), &small_config(&data));
    for (set, key) in [
        ("train.batch_size=true", "train.batch_size"),
        ("train.batch_size=0.5", "train.batch_size"),
        ("train.batch_size=false", "train.batch_size"),
        ("train.epochs=2.7", "train.epochs"),
    ] {
        assert_clean_failure(&check(dir.path(), &config, &[set]), &[set, key]);
    }
    // A string key stays a string.
    let out = check(dir.path(), &config, &["name=0x10"]);
    assert!(text(&out).contains("runs/0x10/"), "{}", text(&out));
    // Arrays through the environment; other tools' COMPRESS_ variables are not ours.
    let out = train(dir.path())
        .arg("check")
        .arg(&config)
        .env("COMPRESS_MODEL__HIDDEN", "[12, 6]")
        .env("COMPRESS_LEVEL", "9")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let with_env = text(&out);
    let direct = text(&check(dir.path(), &config, &["model.hidden=[12, 6]"]));
    assert_eq!(checked_folder(&with_env), checked_folder(&direct));
}

#[test]
fn sizes_that_only_allocate_are_bounded_before_anything_runs() {
    let (dir, data) = folder_with_data(32);
    let config = write(&dir.path().join("c.toml"), &small_config(&data));
    for (set, wants) in [
        (
            "model.hidden=[100000000,100000000]",
            &["model", "GiB", "smaller widths"][..],
        ),
        (
            "measure.throughput_batch=1000000000",
            &["measure.throughput_batch", "at most"],
        ),
        ("threads=100000", &["threads", "at most"]),
        (
            "train.batch_size=100000000",
            &["train.batch_size", "at most"],
        ),
    ] {
        let out = train(dir.path())
            .arg(&config)
            .args(["--set", set])
            .output()
            .unwrap();
        assert_clean_failure(&out, wants);
        assert!(
            !dir.path().join("runs").exists(),
            "{set} created a run folder"
        );
    }
    // The good command still runs; bench and profile bound their own numbers.
    train_ok(dir.path(), &config, &["--plain"]);
    let run = only_run_dir(dir.path(), "small");
    for args in [
        &["bench", "--batch", "100000000"][..],
        &["bench", "--threads", "100000"],
        &["profile", "--runs", "0"],
        &["profile", "--batch", "0"],
    ] {
        let out = train(dir.path())
            .arg(args[0])
            .arg(&run)
            .args(&args[1..])
            .output()
            .unwrap();
        assert_clean_failure(&out, &["must be between 1 and"]);
    }
}

#[test]
fn a_corrupted_model_file_is_refused_by_bench_and_by_a_student() {
    let (dir, student) = teacher_and_student(64);
    train_ok(dir.path(), &dir.path().join("teacher.toml"), &["--plain"]);
    let run = only_run_dir(dir.path(), "teacher");
    let model = run.join("model.bpk");
    let mut bytes = std::fs::read(&model).unwrap();
    let at = bytes.len() - 7;
    bytes[at] ^= 0x40;
    std::fs::write(&model, bytes).unwrap();

    let out = train(dir.path()).arg("bench").arg(&run).output().unwrap();
    assert_clean_failure(&out, &["model.bpk", "changed since its run recorded it"]);
    // Named by its path, the file is checked against its run's record too.
    let by_path = student.with_file_name("by-path.toml");
    let text = std::fs::read_to_string(&student).unwrap();
    let text = text.replace("teacher.toml", model.to_str().unwrap());
    write(
        &by_path,
        &text.replace("name = \"student\"", "name = \"by-path\""),
    );
    for args in [
        vec!["check".to_string(), by_path.display().to_string()],
        vec![
            "bench".into(),
            model.display().to_string(),
            "--config".into(),
            dir.path().join("teacher.toml").display().to_string(),
        ],
    ] {
        let out = train(dir.path()).args(&args).output().unwrap();
        assert_clean_failure(&out, &["model.bpk", "changed since its run recorded it"]);
    }
    assert!(!dir.path().join("runs/by-path").exists());

    // `check` says the finished teacher cannot be reused; a stage that needs it trains it
    // again, saying so, and keeps the old summary aside.
    let out = train(dir.path())
        .arg("check")
        .arg(&student)
        .output()
        .unwrap();
    assert!(
        text_of(&out).contains("would be trained again"),
        "{}",
        text_of(&out)
    );
    let out = train_ok(dir.path(), &student, &["--plain"]);
    assert!(out.contains("cannot be reused"), "{out}");
    assert!(run.join("summary.stale.json").exists());
    bench_ok(dir.path(), &run, &[]);
    std::fs::remove_file(&model).unwrap();
    let out = train(dir.path())
        .arg("check")
        .arg(dir.path().join("teacher.toml"))
        .output()
        .unwrap();
    assert!(
        text_of(&out).contains("model.bpk is missing"),
        "{}",
        text_of(&out)
    );
}

fn text_of(out: &Output) -> String {
    text(out)
}

#[test]
fn names_paths_and_override_blame_are_checked_at_validation() {
    let (dir, data) = folder_with_data(8);
    let config = write(&dir.path().join("c.toml"), &small_config(&data));
    let long = format!("name={}", "n".repeat(300));
    for (set, want) in [
        (long.as_str(), "at most 100 characters"),
        ("output.dir=", "output.dir = \"\": an empty path"),
        ("data.cache_dir=", "data.cache_dir = \"\": an empty path"),
    ] {
        assert_clean_failure(&check(dir.path(), &config, &[set]), &[want]);
    }
    // A pattern set by --set is blamed on the --set, not on a default.
    let stage = pruning_stage(dir.path(), &data, "ratio = 0.5");
    let out = check(dir.path(), &stage, &["prune.layers={ \"nope*\" = 0.5 }"]);
    assert_clean_failure(&out, &["(set by --set prune.layers="]);
    assert!(!text(&out).contains("default value"), "{}", text(&out));
    assert!(!dir.path().join("runs").exists());
}

/// A sweep file at `path` named `s` over the base `config`, with `launcher` and `body` (its
/// grid and trials).
fn sweep_file(path: &Path, config: &Path, launcher: &str, body: &str) -> std::path::PathBuf {
    let text = format!(
        "name = \"s\"\nbase = \"{}\"\n\n[launcher]\nkind = \"{launcher}\"\n\n{body}",
        config.display()
    );
    write(path, &text)
}

#[test]
fn a_sweep_that_would_run_one_trial_twice_is_refused() {
    let (dir, data) = folder_with_data(8);
    let config = write(&dir.path().join("c.toml"), &small_config(&data));
    let sweep = |body: &str| {
        let path = sweep_file(&dir.path().join("s.toml"), &config, "local", body);
        train(dir.path()).arg("sweep").arg(path).output().unwrap()
    };
    assert_clean_failure(&sweep("[grid]\nseed = [1, 1]\n"), &["lists 1 twice"]);
    let out = sweep("[grid]\nseed = [1, 2]\n\n[[trials]]\nseed = 2\n");
    assert_clean_failure(&out, &["trials 1 (seed=2) and 2 (seed=2) are the same run"]);
    assert!(!dir.path().join("runs").exists());
}

#[test]
fn a_full_disk_while_logging_stops_cleanly_and_the_run_resumes_later() {
    let (dir, data) = folder_with_data(64);
    let config = small_config(&data).replace("epochs = 2", "epochs = 3");
    let config = write(&dir.path().join("c.toml"), &config);
    let out = run_with_hook(
        dir.path(),
        &config,
        &[],
        ("TRAIN_FAULT_EVENTS_FULL_AT_EPOCH", "2"),
    );
    assert_clean_failure(
        &out,
        &[
            "TensorBoard event file",
            "events.out.tfevents.",
            "No space left on device",
        ],
    );
    let run = only_run_dir(dir.path(), "small");
    assert!(!run.join("summary.json").exists());
    let log = std::fs::read_to_string(run.join("train.log")).unwrap();
    assert!(
        log.contains("error: ") && log.contains("No space left"),
        "{log}"
    );
    // Writes fail from the end of epoch 2 on, so epoch 3's events cannot be written: the
    // run stops before epoch 3's checkpoint, keeps epoch 2's and resumes from it.
    let again = train_ok(dir.path(), &config, &["--plain"]);
    assert!(again.contains("from the end of epoch 2"), "{again}");
    assert_eq!(summary(&run)["epochs"], 3);
}

#[test]
fn stale_temporaries_of_a_killed_write_are_removed_at_the_next_start() {
    let (dir, data) = folder_with_data(32);
    let config = write(&dir.path().join("c.toml"), &small_config(&data));
    let out = train(dir.path())
        .arg("check")
        .arg(&config)
        .output()
        .unwrap();
    let t = text(&out);
    let folder = dir.path().join(checked_folder(&t));
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join(".checkpoint.bin.tmp-99999"), b"torn").unwrap();
    train_ok(dir.path(), &config, &["--plain"]);
    assert!(!folder.join(".checkpoint.bin.tmp-99999").exists());
    assert!(folder.join("summary.json").exists());
}

#[test]
fn two_configs_on_the_command_line_get_a_plain_message() {
    let (dir, data) = folder_with_data(32);
    let a = write(&dir.path().join("a.toml"), &small_config(&data));
    let out = train(dir.path()).arg(&a).arg(&a).output().unwrap();
    assert_clean_failure(&out, &["one config at a time"]);
    assert!(!text(&out).contains("subcommand"), "{}", text(&out));
}

/// Runs `cmd`, killing it if it has not ended within `seconds` (a hang fails the test
/// instead of stalling the suite).
fn output_within(cmd: &mut std::process::Command, seconds: u64) -> Output {
    use std::process::Stdio;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed().as_secs() >= seconds {
            child.kill().unwrap();
            panic!("still running after {seconds} s: {cmd:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// `train CONFIG --plain ARGS...` in `dir` with the test hook `(variable, value)` set.
fn run_with_hook(dir: &Path, config: &Path, args: &[&str], hook: (&str, &str)) -> Output {
    train(dir)
        .arg(config)
        .arg("--plain")
        .args(args)
        .env(hook.0, hook.1)
        .output()
        .unwrap()
}

/// Runs `train CONFIG ARGS...` in `dir`, the failure of `epoch`'s event writes stopping it
/// after that epoch with its checkpoint kept.
fn stop_after_epoch(dir: &Path, config: &Path, epoch: usize, args: &[&str]) {
    let epoch = epoch.to_string();
    let out = run_with_hook(
        dir,
        config,
        args,
        ("TRAIN_FAULT_EVENTS_FULL_AT_EPOCH", &epoch),
    );
    assert!(!out.status.success(), "{}", text(&out));
}

#[test]
fn a_checkpoint_is_resumed_only_by_the_run_that_wrote_it() {
    let (dir, data) = folder_with_data(64);
    let config = small_config(&data).replace("epochs = 2", "epochs = 3");
    let config = write(&dir.path().join("c.toml"), &config);
    stop_after_epoch(dir.path(), &config, 2, &[]);
    stop_after_epoch(dir.path(), &config, 1, &["--set", "seed=2"]);
    let folder = |sets: &[&str]| {
        let mut cmd = train(dir.path());
        cmd.arg("check").arg(&config);
        for s in sets {
            cmd.args(["--set", s]);
        }
        dir.path()
            .join(checked_folder(&text(&cmd.output().unwrap())))
    };
    let (a, b) = (folder(&[]), folder(&["seed=2"]));
    assert_ne!(a, b);
    // A's checkpoint (end of epoch 2) copied into B's folder.
    std::fs::copy(a.join("checkpoint.bin"), b.join("checkpoint.bin")).unwrap();
    let before: Vec<_> = ["checkpoint.bin", "config.resolved.toml", "train.log"]
        .iter()
        .map(|f| std::fs::read(b.join(f)).unwrap())
        .collect();
    let out = train(dir.path())
        .arg(&config)
        .args(["--plain", "--set", "seed=2"])
        .output()
        .unwrap();
    let a_name = a.file_name().unwrap().to_str().unwrap();
    let b_name = b.file_name().unwrap().to_str().unwrap();
    assert_clean_failure(
        &out,
        &[
            &format!("run small/{a_name}"),
            &format!("run small/{b_name}"),
            "not this run's",
        ],
    );
    assert!(!text(&out).contains("resuming"), "{}", text(&out));
    assert!(!b.join("summary.json").exists());
    let out = train(dir.path())
        .arg("check")
        .arg(&config)
        .args(["--set", "seed=2"])
        .output()
        .unwrap();
    assert!(text(&out).contains("would be refused"), "{}", text(&out));
    let after: Vec<_> = ["checkpoint.bin", "config.resolved.toml", "train.log"]
        .iter()
        .map(|f| std::fs::read(b.join(f)).unwrap())
        .collect();
    assert!(before == after, "the refused run changed its folder");
    // Its own run starts over once the foreign file is gone, and A resumes its own.
    std::fs::remove_file(b.join("checkpoint.bin")).unwrap();
    let out = train_ok(dir.path(), &config, &["--plain", "--set", "seed=2"]);
    assert!(!out.contains("resuming"), "{out}");
    assert_eq!(summary(&b)["seed"], 2);
    let out = train_ok(dir.path(), &config, &["--plain"]);
    assert!(out.contains("from the end of epoch 2"), "{out}");
}

#[test]
fn files_that_are_not_regular_or_too_large_are_refused_at_once() {
    let (dir, _data) = folder_with_data(8);
    let huge = dir.path().join("huge.toml");
    let file = std::fs::File::create(&huge).unwrap();
    file.set_len(64 << 20).unwrap(); // sparse: no disk used
                                     // A FIFO: opening it would wait for a writer that never comes.
    let fifo = dir.path().join("fifo.toml");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo");
    for args in [
        &["check", fifo.to_str().unwrap()][..],
        &["check", "/dev/zero"][..],
        &["/dev/zero"][..],
        &["sweep", "/dev/zero"][..],
        &["check", huge.to_str().unwrap()][..],
        &["check", dir.path().to_str().unwrap()][..],
    ] {
        let out = output_within(train(dir.path()).args(args), 30);
        assert_clean_failure(&out, &[args[args.len() - 1]]);
        let t = text(&out);
        assert!(
            t.contains("not a regular file") || t.contains("larger than"),
            "{args:?}: {t}"
        );
    }
    assert!(!dir.path().join("runs").exists());

    // A dataset file that is a FIFO is refused, not waited on.
    let (data_dir, data) = folder_with_data(8);
    let images = data.join("train-images-idx3-ubyte");
    std::fs::remove_file(&images).unwrap();
    let made = std::process::Command::new("mkfifo").arg(&images).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo");
    let config = write(&data_dir.path().join("c.toml"), &small_config(&data));
    let out = output_within(train(data_dir.path()).arg(&config).arg("--plain"), 30);
    assert_clean_failure(&out, &["train-images-idx3-ubyte", "not a regular file"]);
    assert!(!data_dir.path().join("runs").exists());
}

#[test]
fn environment_overrides_reach_the_technique_sections() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let check_env = |config: &str, var: &str, value: &str| {
        train(&root)
            .arg("check")
            .arg(root.join(config))
            .env(var, value)
            .output()
            .unwrap()
    };
    for (config, var, value, key) in [
        ("ptq.toml", "COMPRESS_QUANT__BITS", "3", "quant.bits"),
        ("prune.toml", "COMPRESS_PRUNE__FOO", "1", "foo"),
        (
            "sparse.toml",
            "COMPRESS_SPARSIFY__SPARSITY",
            "1.5",
            "sparsify.sparsity",
        ),
        (
            "distill.toml",
            "COMPRESS_DISTILL__ALPHA",
            "2",
            "distill.alpha",
        ),
    ] {
        let out = check_env(config, var, value);
        assert_clean_failure(&out, &[&format!("{var}={value}"), key]);
    }
    // A valid one is a different run, as the same --set is.
    let folder = |out: Output| checked_folder(&text(&out));
    let plain = folder(
        train(&root)
            .arg("check")
            .arg(root.join("prune.toml"))
            .output()
            .unwrap(),
    );
    let by_env = folder(check_env("prune.toml", "COMPRESS_PRUNE__MACS_RATIO", "0.3"));
    let by_set = folder(
        train(&root)
            .arg("check")
            .arg(root.join("prune.toml"))
            .args(["--set", "prune.macs_ratio=0.3"])
            .output()
            .unwrap(),
    );
    assert_ne!(plain, by_env);
    assert_eq!(by_env, by_set);
}

#[test]
fn a_closed_stdout_ends_no_command_with_a_panic() {
    use std::process::Stdio;
    let (dir, data) = folder_with_data(32);
    let config = write(&dir.path().join("c.toml"), &small_config(&data));
    let config_arg = config.to_str().unwrap();
    // The reader goes away before the command prints anything.
    let closed = |args: &[&str]| {
        let mut child = train(dir.path())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let t = text(&out);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {t}");
        assert!(!t.contains("panicked") && !t.contains("Broken pipe"), "{t}");
    };
    closed(&[config_arg, "--plain"]);
    let run = only_run_dir(dir.path(), "small");
    assert!(
        run.join("summary.json").exists(),
        "the run finished its work"
    );
    closed(&["check", config_arg]);
    closed(&[config_arg]); // reused: the table
    closed(&[
        "bench",
        run.to_str().unwrap(),
        "--images",
        "5",
        "--warmup",
        "1",
    ]);
    let sweep = sweep_file(
        &dir.path().join("s.toml"),
        &config,
        "slurm",
        "[grid]\nseed = [1, 2]\n",
    );
    closed(&["sweep", sweep.to_str().unwrap(), "--dry-run"]);
}

#[test]
fn a_test_hook_that_changes_the_model_is_part_of_the_runs_identity() {
    let (dir, data) = folder_with_data(64);
    let config = small_config(&data).replace("hidden = [16]", "hidden = [32, 16]");
    let config = write(&dir.path().join("c.toml"), &config);
    let out = run_with_hook(
        dir.path(),
        &config,
        &[],
        ("TRAIN_TEST_NARROW_AFTER_EPOCH", "1"),
    );
    assert!(out.status.success(), "{}", text(&out));
    let ordinary = train_ok(dir.path(), &config, &["--plain"]);
    assert!(!ordinary.contains("reusing"), "{ordinary}");
    let runs: Vec<_> = std::fs::read_dir(dir.path().join("runs/small"))
        .unwrap()
        .map(|e| summary(&e.unwrap().path()))
        .collect();
    assert_eq!(runs.len(), 2);
    let hooked = runs
        .iter()
        .find(|s| {
            s["overrides"]
                .to_string()
                .contains("TRAIN_TEST_NARROW_AFTER_EPOCH=1")
        })
        .expect("the hooked run records its hook");
    let plain = runs.iter().find(|s| s["overrides"].is_null()).unwrap();
    assert!(hooked["params"].as_u64() < plain["params"].as_u64());
    // A malformed hook is refused, not ignored.
    let out = train(dir.path())
        .arg(&config)
        .env("TRAIN_TEST_NARROW_AFTER_EPOCH", "soon")
        .output()
        .unwrap();
    assert_clean_failure(&out, &["TRAIN_TEST_NARROW_AFTER_EPOCH=soon"]);
}

/// A teacher run and a pruning stage `from` it, on the small IDX data.
fn pruning_stage(dir: &Path, data: &Path, prune: &str) -> std::path::PathBuf {
    let teacher = small_config(data)
        .replace("name = \"small\"", "name = \"teacher\"")
        .replace("hidden = [16]", "hidden = [16, 12]");
    write(&dir.join("teacher.toml"), &teacher);
    let stage = format!(
        "name = \"pruned\"\nfrom = \"teacher.toml\"\n\n[data]\ndataset = \"idx\"\npath = \"{}\"\n\n\
         [prune]\n{prune}\n\n[train]\nepochs = 1\nbatch_size = 16\n\n[train.optimizer]\n\
         kind = \"sgd\"\nlr = 0.01\n\n[measure]\nlatency_images = 10\nlatency_warmup = 1\n",
        data.display()
    );
    write(&dir.join("pruned.toml"), &stage)
}

#[test]
fn a_rounding_step_that_would_wreck_the_plan_is_refused_at_validation() {
    let (dir, data) = folder_with_data(32);
    let stage = pruning_stage(dir.path(), &data, "ratio = 0.5\nround_to = 1000");
    for cmd in [&["check"][..], &[][..]] {
        let out = train(dir.path()).args(cmd).arg(&stage).output().unwrap();
        assert_clean_failure(
            &out,
            &["prune.round_to = 1000", "layers.0 16->1", "layers.1 12->1"],
        );
    }
    for (prune, want) in [
        (
            "ratio = 0.5\nmin_channels = 1000",
            "prune.min_channels = 1000",
        ),
        ("ratio = 0.5\nexclude = [\"*\"]", "prune.exclude"),
    ] {
        let stage = pruning_stage(dir.path(), &data, prune);
        let out = train(dir.path()).arg("check").arg(&stage).output().unwrap();
        assert_clean_failure(&out, &[want, "would prune nothing"]);
    }
    assert!(!dir.path().join("runs").exists());
    let stage = pruning_stage(dir.path(), &data, "ratio = 0.5\nround_to = 4");
    let out = train_ok(dir.path(), &stage, &["--plain"]);
    assert!(out.contains("layers.0 16->8"), "{out}");
}

/// A correctly sealed `.sparse` file that describes `spec_json` and holds no tensors.
fn crafted_sparse(path: &Path, spec_json: &str) {
    use sha2::Digest;
    let mut bytes = b"CSPR".to_vec();
    bytes.extend(1u32.to_le_bytes());
    bytes.extend((spec_json.len() as u32).to_le_bytes());
    bytes.extend(spec_json.as_bytes());
    bytes.extend(0u32.to_le_bytes());
    let digest = sha2::Sha256::digest(&bytes);
    bytes.extend(digest);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_model_file_describing_a_model_too_large_for_memory_is_refused_before_it_is_built() {
    let (dir, data) = folder_with_data(32);
    // 225M parameters (under the files' 2^28 cap); at batch 60,000 its activations alone
    // need terabytes.
    let file = dir.path().join("huge.sparse");
    crafted_sparse(
        &file,
        r#"{"kind":"lenet5","channels":[3000,3000],"fc":[120,84]}"#,
    );
    let config = small_config(&data)
        .replace(
            "batch_size = 16",
            "batch_size = 60000\neval_batch_size = 60000",
        )
        .replace("[model]\nkind = \"mlp\"\nhidden = [16]\n", "")
        .replace(
            "seed = 3",
            &format!("seed = 3\nfrom = \"{}\"", file.display()),
        )
        .replace("dataset = \"idx\"", "dataset = \"idx\"\ninput_size = 28");
    let config = write(&dir.path().join("c.toml"), &config);
    for args in [&["check"][..], &[][..]] {
        let out = train(dir.path()).args(args).arg(&config).output().unwrap();
        assert_clean_failure(&out, &["a lenet5 model of", "GiB"]);
    }
    assert!(!dir.path().join("runs").exists());
    let out = train(dir.path())
        .arg("bench")
        .arg(&file)
        .arg("--config")
        .arg(config.with_file_name("bench.toml"))
        .output()
        .unwrap();
    assert_clean_failure(&out, &["bench.toml"]);
    let bench_config = small_config(&data)
        .replace(
            "batch_size = 16",
            "batch_size = 16\neval_batch_size = 60000",
        )
        .replace("dataset = \"idx\"", "dataset = \"idx\"\ninput_size = 28");
    let bench_config = write(&dir.path().join("bench.toml"), &bench_config);
    let out = train(dir.path())
        .arg("bench")
        .arg(&file)
        .arg("--config")
        .arg(&bench_config)
        .output()
        .unwrap();
    assert_clean_failure(&out, &["huge.sparse", "a lenet5 model of", "GiB"]);
}

#[test]
fn the_same_training_gives_the_same_model_file() {
    let (dir, data) = folder_with_data(64);
    let config = write(&dir.path().join("c.toml"), &small_config(&data));
    let sha = |out: &str| {
        train_ok(
            dir.path(),
            &config,
            &["--plain", "--set", &format!("output.dir={out}")],
        );
        let runs = dir.path().join(out).join("small");
        let run = std::fs::read_dir(runs)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        summary(&run)["model_sha256"].clone()
    };
    let (a, b) = (sha("a"), sha("b"));
    assert!(a.is_string());
    assert_eq!(a, b, "two identical trainings wrote different model files");
}

#[test]
fn a_sweep_finds_its_trials_where_they_ran_and_never_shrinks_its_results() {
    let (dir, data) = folder_with_data(32);
    let config = write(&dir.path().join("c.toml"), &small_config(&data));
    let sweep = sweep_file(
        &dir.path().join("s.toml"),
        &config,
        "local",
        "[grid]\nseed = [1, 2]\n",
    );
    let out = train(dir.path())
        .arg("sweep")
        .arg(&sweep)
        .arg("--plain")
        .env("COMPRESS_OUTPUT__DIR", "elsewhere")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(dir.path().join("elsewhere/small").is_dir());
    let results = dir.path().join("runs/sweeps/s/results.md");
    let before = std::fs::read_to_string(&results).unwrap();
    // Status from a shell without the variable still finds both trials.
    let out = train(dir.path())
        .arg("sweep")
        .arg(&sweep)
        .arg("--status")
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("recorded in") && !t.contains("not run"), "{t}");
    assert_eq!(std::fs::read_to_string(&results).unwrap(), before);
    // A trial's run gone: the results keep what they had, and say why.
    std::fs::remove_dir_all(dir.path().join("elsewhere")).unwrap();
    let out = train(dir.path())
        .arg("sweep")
        .arg(&sweep)
        .arg("--status")
        .output()
        .unwrap();
    assert!(text(&out).contains("left as they were"), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&results).unwrap(), before);
}

/// Processes whose command line holds `needle`.
fn processes_with(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}

#[test]
fn a_killed_sweep_takes_its_trials_with_it() {
    let (dir, data) = folder_with_data(2000);
    let config = small_config(&data)
        .replace("epochs = 2", "epochs = 200")
        .replace("batch_size = 16", "batch_size = 4");
    let config = write(&dir.path().join("c.toml"), &config);
    let sweep = sweep_file(
        &dir.path().join("killed-sweep.toml"),
        &config,
        "local",
        "[grid]\nseed = [1]\n",
    );
    let mut parent = train(dir.path())
        .arg("sweep")
        .arg(&sweep)
        .arg("--plain")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let needle = "killed-sweep.toml";
    let start = std::time::Instant::now();
    let trial = loop {
        let trials: Vec<u32> = processes_with(needle)
            .into_iter()
            .filter(|&p| p != parent.id())
            .collect();
        if let Some(&t) = trials.first() {
            break t;
        }
        assert!(start.elapsed().as_secs() < 60, "no trial process started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    parent.kill().unwrap(); // SIGKILL
    parent.wait().unwrap();
    let start = std::time::Instant::now();
    while std::path::Path::new(&format!("/proc/{trial}")).exists()
        && !std::fs::read_to_string(format!("/proc/{trial}/stat")).is_ok_and(|s| s.contains(") Z "))
    {
        assert!(
            start.elapsed().as_secs() < 10,
            "trial process {trial} outlived its sweep"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

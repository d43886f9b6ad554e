//! Replays every committed corpus file and crash artifact of `server/fuzz` and
//! `shared/fuzz` through the harnesses, each input in a child process (this test
//! binary, re-executed), so an abort or a segfault fails the test and names the input
//! instead of killing the test runner.

use std::path::PathBuf;
use std::process::Command as Process;

use super::TARGETS;
use base64::Engine as _;

/// Set in a child: `<target>:<path>` of the one input it runs.
const INPUT_ENV: &str = "WEFT_FUZZ_REPLAY_INPUT";

/// The committed inputs of `target`: its corpus, plus the artifacts kept as regressions.
fn inputs(target: &str) -> Vec<PathBuf> {
    let server = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = if target == "decode_frame" {
        server.join("../shared/fuzz")
    } else {
        server.join("fuzz")
    };
    let mut out = Vec::new();
    for dir in [
        root.join("corpus").join(target),
        root.join("regressions").join(target),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if e.path().is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// Pseudo-target: one long-lived room fed every committed `room_messages` input, then
/// [`SEQUENCE_MUTANTS`] seeded mutations of them, in one process. The room bugs the fuzzer
/// found depend on the document's history, so no single input reproduces them alone.
const SEQUENCE: &str = "room_sequence";

/// Mutated inputs per sequence run (before the room fixes, the first failure came within
/// 100 of them).
const SEQUENCE_MUTANTS: usize = 600;

/// Feeds the committed inputs, then mutations of them (bit flips, inserted, removed and
/// spliced bytes, as libFuzzer makes them), to one room; panics on the first broken invariant.
fn replay_room_sequence(seed: u64) {
    let corpus: Vec<Vec<u8>> = inputs("room_messages")
        .iter()
        .map(|p| std::fs::read(p).expect("reading the input"))
        .collect();
    for input in &corpus {
        super::room_messages(input);
    }
    // xorshift64: reproducible from the seed, no dependency.
    let mut state = seed.max(1);
    let mut next = move |below: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % below.max(1) as u64) as usize
    };
    for n in 0..SEQUENCE_MUTANTS {
        let mut input = corpus[next(corpus.len())].clone();
        for _ in 0..1 + next(7) {
            match next(4) {
                0 if !input.is_empty() => {
                    let at = next(input.len());
                    input[at] ^= 1 << next(8);
                }
                1 => input.insert(next(input.len() + 1), next(256) as u8),
                2 if input.len() > 1 => {
                    input.remove(next(input.len()));
                }
                _ => {
                    let other = &corpus[next(corpus.len())];
                    let from = next(other.len());
                    let to = from + next(other.len() - from + 1);
                    let at = next(input.len() + 1);
                    input.splice(at..at, other[from..to].iter().copied());
                }
            }
        }
        let run = std::panic::catch_unwind(|| super::room_messages(&input));
        if let Err(e) = run {
            let b64 = base64::engine::general_purpose::STANDARD.encode(&input);
            eprintln!("seed {seed}, mutant {n} broke the room; input (base64): {b64}");
            std::panic::resume_unwind(e);
        }
    }
}

/// Child side: runs the input named in the environment. Ignored in normal runs; the parent
/// runs it with `--ignored --exact`.
#[test]
#[ignore = "run by replay_corpora_in_child_processes in a child process"]
fn replay_one_input() {
    /// Removes the room's temporary directory however the test ends (a crash still leaves
    /// it behind).
    struct DropRoom;
    impl Drop for DropRoom {
        fn drop(&mut self) {
            super::room_messages_reset();
        }
    }
    let _drop_room = DropRoom;
    let spec = std::env::var(INPUT_ENV).expect("run by the parent test with an input");
    let (target, path) = spec.split_once(':').expect("target:path");
    // yrs draws every document's client id from this thread's generator: seeded, a replay
    // builds the same documents every time, so a failure here reproduces.
    fastrand::seed(0x5eed);
    if target == SEQUENCE {
        replay_room_sequence(path.parse().expect("a seed"));
        return;
    }
    let run = TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|(_, f)| *f)
        .expect("known target");
    let data = std::fs::read(path).expect("reading the input");
    run(&data);
}

/// The path libtest names [`replay_one_input`] by (this module's path without the crate's
/// name), so the child's exact filter follows this module wherever it moves.
fn child_test() -> String {
    let module = module_path!();
    let module = module
        .split_once("::")
        .map_or(module, |(_crate, path)| path);
    format!("{module}::replay_one_input")
}

/// Runs `target` on `input` in a child process; the failure, described, if it failed.
fn run_child(exe: &std::path::Path, target: &str, input: &str) -> Option<String> {
    // The child's temporary directories go in this one, removed when it is dropped below: a
    // child killed by a signal cannot remove its own.
    let scratch = super::temp_dir();
    let out = Process::new(exe)
        .env("RUST_BACKTRACE", "0")
        .args([
            "--ignored",
            "--exact",
            &child_test(),
            "--test-threads=1",
            "--nocapture",
        ])
        .env(INPUT_ENV, format!("{target}:{input}"))
        .env(super::TEMP_DIR_ENV, scratch.path())
        .output()
        .expect("spawning the test binary");
    drop(scratch);
    let stdout = String::from_utf8_lossy(&out.stdout);
    // libtest prints this only when the child really ran the one test.
    if out.status.success() && stdout.contains("1 passed") {
        return None;
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: String = stderr
        .lines()
        .chain(stdout.lines())
        .filter(|l| !l.trim().is_empty())
        .take(12)
        .collect::<Vec<_>>()
        .join("\n");
    Some(format!("{target} {input}: {}\n{tail}", out.status))
}

/// Every committed corpus input and crash artifact of every fuzz target runs clean in its
/// own process; a crash of any kind fails this test and names the input.
#[test]
fn replay_corpora_in_child_processes() {
    let exe = std::env::current_exe().expect("test binary path");
    let mut failures = Vec::new();
    let mut ran = 0;
    for (target, _) in TARGETS {
        let inputs = inputs(target);
        assert!(!inputs.is_empty(), "no committed corpus for {target}");
        for input in inputs {
            if let Some(failure) = run_child(&exe, target, &input.display().to_string()) {
                failures.push(failure);
            }
            ran += 1;
        }
    }
    for seed in [1, 2] {
        if let Some(failure) = run_child(&exe, SEQUENCE, &seed.to_string()) {
            failures.push(failure);
        }
        ran += 1;
    }
    assert!(
        failures.is_empty(),
        "{} of {ran} fuzz inputs failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

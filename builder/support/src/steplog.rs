//! The one checkpoint / step log of every resumable or recorded flow (`seed create`,
//! post-pivot, `ibi install`): a JSON file naming the run, the step running (or the one that
//! failed), the steps done with their seconds, and the error.
//!
//! ```json
//! {"run": "…", "status": "running|failed|done", "step": "deploy",
//!  "done": ["preflight", "partition"], "seconds": {"preflight": 0.4}, "error": "…"}
//! ```
//!
//! A resumable flow opens the log with [`StepLog::resume`] and wraps each step in
//! [`StepLog::once`]: a step recorded as done is skipped on the next run, so an interrupted
//! run continues where it stopped. A recorded flow ([`StepLog::fresh`]) starts over every time
//! and only reports. The file is replaced atomically after every change.

use crate::progress::Steps;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What the log file holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepState {
    /// The run's identity (its options), so a resume with other options is refused.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub run: String,
    /// `running`, `failed` or `done`.
    pub status: String,
    /// The step running, or the one that failed.
    pub step: String,
    pub done: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub seconds: BTreeMap<String, f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// [`StepLog::resume`] found an interrupted run with another identity at `path`.
#[derive(Debug)]
pub struct OtherRun {
    pub path: PathBuf,
    /// The identity the log records.
    pub run: String,
}

impl std::fmt::Display for OtherRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} records an interrupted run with other options ({}); run that command again to resume it, or remove {} to start over",
            self.path.display(),
            self.run,
            self.path.display()
        )
    }
}

impl std::error::Error for OtherRun {}

/// A step log bound to its file, reporting steps to the user through [`Steps`].
pub struct StepLog {
    path: PathBuf,
    state: StepState,
    steps: Steps,
    started: Option<Instant>,
}

impl StepLog {
    /// A log that starts over: any earlier file at `path` is replaced.
    pub fn fresh(path: &Path, steps: Steps) -> Result<Self> {
        let log = StepLog {
            path: path.to_path_buf(),
            state: StepState {
                status: "running".into(),
                ..Default::default()
            },
            steps,
            started: None,
        };
        log.write()?;
        Ok(log)
    }

    /// A log that continues the run recorded at `path` when its identity is `run`; a run with
    /// another identity is refused with an [`OtherRun`] error (its message says how to resume
    /// or start over; a caller may word it for its flow). Returns the log and whether it
    /// resumed.
    pub fn resume(path: &Path, run: &str, steps: Steps) -> Result<(Self, bool)> {
        let earlier = match std::fs::read(path) {
            Ok(b) => Some(
                serde_json::from_slice::<StepState>(&b)
                    .with_context(|| format!("{} is not a step log", path.display()))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let resumed = earlier.is_some();
        let state = match earlier {
            Some(s) if s.run != run => {
                return Err(OtherRun {
                    path: path.to_path_buf(),
                    run: s.run,
                }
                .into())
            }
            Some(s) => StepState {
                status: "running".into(),
                error: None,
                ..s
            },
            None => StepState {
                run: run.to_string(),
                status: "running".into(),
                ..Default::default()
            },
        };
        let log = StepLog {
            path: path.to_path_buf(),
            state,
            steps,
            started: None,
        };
        log.write()?;
        Ok((log, resumed))
    }

    /// The state as last written.
    pub fn state(&self) -> &StepState {
        &self.state
    }

    /// The progress printer the log reports through.
    pub fn steps(&self) -> &Steps {
        &self.steps
    }

    /// Was `step` done (in this run or an earlier one)?
    pub fn is_done(&self, step: &str) -> bool {
        self.state.done.iter().any(|d| d == step)
    }

    /// Record that `step` starts (the previous step is done); `what` is printed.
    pub fn step(&mut self, step: &str, what: &str) -> Result<()> {
        self.close_step();
        self.steps.step(what);
        self.state.step = step.to_string();
        self.started = Some(Instant::now());
        self.write()
    }

    /// Record that `step` starts, as [`StepLog::step`] does, without printing: for a step that
    /// prints its own line once it knows what to say (or none).
    pub fn enter(&mut self, step: &str) -> Result<()> {
        self.close_step();
        self.state.step = step.to_string();
        self.started = Some(Instant::now());
        self.write()
    }

    /// Run `f` as `step` unless the log already records it as done; failures say which step.
    pub fn once<T: Default>(
        &mut self,
        step: &str,
        what: &str,
        f: impl FnOnce(&mut Self) -> Result<T>,
    ) -> Result<T> {
        if self.is_done(step) {
            self.steps.step(&format!("{what}: done in an earlier run"));
            return Ok(T::default());
        }
        self.step(step, what)?;
        let out = f(self).with_context(|| format!("{what} (step {step})"))?;
        self.close_step();
        self.write()?;
        Ok(out)
    }

    /// Record the end of the run: `done`, or `failed` with the error (at the step running).
    pub fn finish<T>(&mut self, r: &Result<T>) -> Result<()> {
        match r {
            Ok(_) => {
                self.close_step();
                self.state.step.clear();
                self.state.status = "done".into();
            }
            Err(e) => {
                self.started = None;
                self.state.status = "failed".into();
                self.state.error = Some(format!("{e:#}"));
            }
        }
        self.write()
    }

    /// The step running is done: only a step this run started (a resumed log's failed step is
    /// not done until it runs again and succeeds).
    fn close_step(&mut self) {
        if self.state.step.is_empty() || self.is_done(&self.state.step) {
            return;
        }
        let Some(t) = self.started.take() else {
            return;
        };
        let step = self.state.step.clone();
        self.state
            .seconds
            .insert(step.clone(), t.elapsed().as_secs_f64());
        self.state.done.push(step);
    }

    fn write(&self) -> Result<()> {
        crate::fs::write_atomic(&self.path, &serde_json::to_vec_pretty(&self.state)?, 0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::bail;

    fn read(p: &Path) -> StepState {
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    }

    #[test]
    fn a_resumed_run_skips_what_is_done_and_records_the_failure() {
        let td = tempfile::tempdir().unwrap();
        let p = td.path().join("log.json");
        let (mut log, resumed) = StepLog::resume(&p, "opts-a", Steps::hidden()).unwrap();
        assert!(!resumed);
        log.once("one", "step one", |_| Ok(())).unwrap();
        let r: Result<()> = log.once("two", "step two", |_| bail!("boom"));
        let e = format!("{:#}", r.as_ref().unwrap_err());
        assert!(e.starts_with("step two (step two): boom"), "{e}");
        log.finish(&r).unwrap();
        let s = read(&p);
        assert_eq!((s.status.as_str(), s.step.as_str()), ("failed", "two"));
        assert_eq!(s.done, ["one"]);
        assert!(s.seconds.contains_key("one"));

        let (mut log, resumed) = StepLog::resume(&p, "opts-a", Steps::hidden()).unwrap();
        assert!(resumed);
        let mut ran = vec![];
        log.once("one", "step one", |_| {
            ran.push("one");
            Ok(())
        })
        .unwrap();
        log.once("two", "step two", |_| {
            ran.push("two");
            Ok(())
        })
        .unwrap();
        log.finish(&Ok(())).unwrap();
        assert_eq!(ran, ["two"]);
        let s = read(&p);
        assert_eq!(s.status, "done");
        assert_eq!(s.done, ["one", "two"]);
        assert_eq!(s.error, None);

        let e = StepLog::resume(&p, "opts-b", Steps::hidden())
            .err()
            .unwrap();
        assert!(e.to_string().contains("other options (opts-a)"), "{e}");
    }

    #[test]
    fn a_step_that_fails_again_after_a_resume_is_not_done() {
        let td = tempfile::tempdir().unwrap();
        let p = td.path().join("log.json");
        for _ in 0..2 {
            let (mut log, _) = StepLog::resume(&p, "r", Steps::hidden()).unwrap();
            log.once("one", "step one", |_| Ok(())).unwrap();
            let r: Result<()> = log.once("two", "step two", |_| bail!("boom"));
            log.finish(&r).unwrap();
            let s = read(&p);
            assert_eq!((s.status.as_str(), s.step.as_str()), ("failed", "two"));
            assert_eq!(s.done, ["one"]);
        }
        let (mut log, _) = StepLog::resume(&p, "r", Steps::hidden()).unwrap();
        log.once("two", "step two", |_| Ok(())).unwrap();
        assert_eq!(read(&p).done, ["one", "two"]);
        assert!(read(&p).seconds.contains_key("two"));
    }

    #[test]
    fn a_fresh_log_records_steps_in_order() {
        let td = tempfile::tempdir().unwrap();
        let p = td.path().join("state.json");
        std::fs::write(&p, "stale").unwrap();
        let mut log = StepLog::fresh(&p, Steps::hidden()).unwrap();
        log.step("preflight", "checking").unwrap();
        log.step("partition", "partitioning").unwrap();
        assert_eq!(read(&p).step, "partition");
        assert_eq!(read(&p).done, ["preflight"]);
        log.finish(&Ok(())).unwrap();
        assert_eq!(read(&p).step, "", "a finished run names no step");
        let s = read(&p);
        assert_eq!((s.status.as_str(), s.done.len()), ("done", 2));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}

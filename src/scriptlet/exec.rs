//! Running a [`plan`](super::plan) — and the treefile's postprocess scripts —
//! inside a [`Sandbox`].

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Result, bail};
use serde::Serialize;

use super::plan::Step;
use crate::sandbox::{Job, Outcome, Sandbox};

/// How to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Per-script time limit.
    pub timeout: Duration,
    /// Failures that do not fail the compose: `"NAME %KIND"` → reason (treefile
    /// `ignore-scriptlet-failures`).
    pub ignore: BTreeMap<String, String>,
    /// Whether a failure's message suggests the treefile's ignore list (composes do).
    pub treefile_hint: bool,
}

/// What ran.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Scripts run.
    pub ran: usize,
    /// Of those, lua scripts (run natively).
    pub lua: usize,
    /// Failures ignored by the treefile, with their reasons.
    pub ignored: Vec<String>,
    /// Milliseconds spent in scripts.
    pub millis: u64,
}

/// Runs `steps` in order; `names` maps each step's package NEVRA to its name
/// (the treefile's ignore list is by name). Stops at the first failure not ignored.
pub fn run_steps(sb: &mut Sandbox, steps: &[Step], names: &BTreeMap<String, String>, opts: &Options) -> Result<Report> {
    let mut report = Report::default();
    let bar = crate::progress::Progress::bar(steps.len() as u64, "scriptlets");
    for step in steps {
        bar.message(&format!("{} {}", step.package, step.phase));
        let done = run_step(sb, step, names, opts, &mut report);
        bar.inc();
        if done.is_err() {
            bar.finish();
        }
        done?;
    }
    bar.finish();
    Ok(report)
}

/// Runs one step and adds it to `report`; a failure the treefile does not
/// ignore is an error naming the package, the script and its output.
pub fn run_step(
    sb: &mut Sandbox,
    step: &Step,
    names: &BTreeMap<String, String>,
    opts: &Options,
    report: &mut Report,
) -> Result<()> {
    let label = format!("{} {}", step.package, step.phase);
    let lua = step.script.is_lua();
    let job = Job {
        label: label.clone(),
        program: if lua { Vec::new() } else { step.script.program.clone() },
        script: step.script.body.clone(),
        lua,
        args: step.args.clone(),
        stdin: step.stdin.clone(),
        timeout_ms: opts.timeout.as_millis() as u64,
    };
    let outcome = sb.run(&job)?;
    report.ran += 1;
    report.lua += usize::from(lua);
    report.millis += outcome.millis;
    tracing::debug!(script = %label, status = outcome.status, millis = outcome.millis, "scriptlet ran");
    if outcome.status == 0 && !outcome.timed_out {
        return Ok(());
    }
    let name = names.get(&step.package).map(String::as_str).unwrap_or(&step.package);
    let key = format!("{name} {}", step.phase);
    if let Some(reason) = opts.ignore.get(&key) {
        tracing::warn!("{} (ignored: {reason})", failure(&label, &outcome, opts));
        report.ignored.push(format!("{key}: {reason}"));
        return Ok(());
    }
    if !opts.treefile_hint {
        bail!("{}", failure(&label, &outcome, opts));
    }
    bail!(
        "{}\n(if this failure is harmless, list it in the treefile: ignore-scriptlet-failures: {{\"{key}\": \"<why>\"}})",
        failure(&label, &outcome, opts)
    );
}

/// Runs the treefile's `postprocess` scripts, then its `postprocess-script`
/// file, in the tree (rpm-ostree's order). A script's `#!` line picks its
/// interpreter; without one it runs under /bin/sh.
pub fn run_postprocess(sb: &mut Sandbox, inline: &[String], file: Option<&Path>, timeout: Duration) -> Result<usize> {
    let mut scripts: Vec<(String, String)> = inline
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("treefile postprocess #{}", i + 1), s.clone()))
        .collect();
    if let Some(f) = file {
        let text = crate::input::read_text(f, "postprocess-script", crate::input::CONFIG_CAP)?;
        scripts.push((format!("treefile postprocess-script {}", f.display()), text));
    }
    for (label, body) in &scripts {
        let program = match body.strip_prefix("#!") {
            Some(rest) => rest
                .lines()
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .map(String::from)
                .collect(),
            None => vec!["/bin/sh".to_string()],
        };
        if program.is_empty() {
            bail!("{label}: the #! line names no interpreter");
        }
        let outcome = sb.run(&Job {
            label: label.clone(),
            program,
            script: Some(body.clone()),
            timeout_ms: timeout.as_millis() as u64,
            ..Job::default()
        })?;
        if outcome.status != 0 || outcome.timed_out {
            bail!(
                "{}",
                failure(
                    label,
                    &outcome,
                    &Options {
                        timeout,
                        ignore: BTreeMap::new(),
                        treefile_hint: false,
                    }
                )
            );
        }
    }
    Ok(scripts.len())
}

fn failure(label: &str, o: &Outcome, opts: &Options) -> String {
    let what = if o.timed_out {
        format!("was killed after the time limit of {} s", opts.timeout.as_secs())
    } else if o.status > 128 {
        format!("was killed by signal {}", o.status - 128)
    } else {
        format!("failed with exit status {}", o.status)
    };
    let output = o.output.trim_end();
    if output.is_empty() {
        format!("{label} {what} (no output)")
    } else {
        let indented: Vec<String> = output.lines().map(|l| format!("  | {l}")).collect();
        format!("{label} {what}; its output:\n{}", indented.join("\n"))
    }
}

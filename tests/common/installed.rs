//! The real gateways the suites run against, installed by their setup scripts into caches
//! outside the checkout (`tests/<suite>/setup.sh`), or skipped loudly on purpose.

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// A suite's tool: how it is skipped, found and installed.
pub struct Tool {
    /// What it is, for the messages (`the LiteLLM proxy`).
    pub name: &'static str,
    /// `1` in this variable skips the suite.
    pub skip_var: &'static str,
    /// This variable, when set, is the tool's path (`.ci/run` sets it).
    pub path_var: &'static str,
    /// The setup script, which prints the path last.
    pub setup: &'static str,
    /// What the setup script needs, for its failure message.
    pub needs: &'static str,
    /// What goes untested when the suite is skipped.
    pub untested: &'static str,
}

/// The tool's path, installing it first when needed; `None` when the suite is skipped.
pub fn installed(tool: &Tool) -> Option<PathBuf> {
    if std::env::var(tool.skip_var).as_deref() == Ok("1") {
        eprintln!(
            "\n!!!!!!!! SKIPPED: the suite of {} ({}=1). {} NOT tested in this run. !!!!!!!!\n",
            tool.name, tool.skip_var, tool.untested
        );
        return None;
    }
    if let Ok(path) = std::env::var(tool.path_var) {
        return Some(PathBuf::from(path));
    }
    let setup = Command::new("bash")
        .arg(tool.setup)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|err| panic!("run {}: {err}", tool.setup));
    assert!(
        setup.status.success(),
        "installing {} failed ({}); it needs {}. Set {}=1 to skip this suite deliberately.",
        tool.name,
        tool.setup,
        tool.needs,
        tool.skip_var
    );
    let path = String::from_utf8_lossy(&setup.stdout).trim().to_owned();
    Some(PathBuf::from(path.lines().last().unwrap_or_default()))
}

//! Which executables run the broker, the collector and the agents: the
//! subcommands of one `dockline-sim` (the demo, chaos, fleet and bench, so a
//! user needs nothing but that program), or the workspace's own binaries
//! (the end-to-end tests, which must check `dockline-agent` and
//! `dockline-collector` as they ship).

use std::path::{Path, PathBuf};

use super::child::{Child, ChildError};

/// A part of the system under test that runs as a child process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The embedded MQTT broker (`dockline-sim broker`).
    Broker,
    /// A collector.
    Collector,
    /// An agent.
    Agent,
}

/// One executable and the arguments before a role's own.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Program {
    path: PathBuf,
    args: Vec<String>,
}

impl Program {
    fn sub(exe: &Path, sub: &str) -> Self {
        Self {
            path: exe.into(),
            args: vec![sub.to_string()],
        }
    }

    fn bare(path: PathBuf) -> Self {
        Self {
            path,
            args: Vec::new(),
        }
    }
}

/// How the children are started; see the module docs.
#[derive(Debug, Clone)]
pub struct Programs {
    broker: Program,
    collector: Program,
    agent: Program,
    envs: Vec<(String, String)>,
}

impl Programs {
    /// `{exe} broker|collector|agent …`, `exe` being a `dockline-sim`.
    pub fn simulator(exe: &Path) -> Self {
        Self {
            broker: Program::sub(exe, "broker"),
            collector: Program::sub(exe, "collector"),
            agent: Program::sub(exe, "agent"),
            envs: Vec::new(),
        }
    }

    /// `{dir}/dockline-sim broker`, `{dir}/dockline-collector`,
    /// `{dir}/dockline-agent`, each child with `RUST_LOG` set (to this
    /// process's, else `info`).
    pub fn binaries(dir: &Path) -> Self {
        Self {
            broker: Program::sub(&dir.join("dockline-sim"), "broker"),
            collector: Program::bare(dir.join("dockline-collector")),
            agent: Program::bare(dir.join("dockline-agent")),
            envs: vec![(
                "RUST_LOG".to_string(),
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )],
        }
    }

    /// Agents run by the real `dockline-agent` beside the broker's
    /// executable when it was built there (`cargo build --release` builds
    /// both), so the bench measures the binary that ships.
    pub fn with_agent_binary_beside(mut self) -> Self {
        let sibling = self.broker.path.with_file_name("dockline-agent");
        if sibling.is_file() {
            self.agent = Program::bare(sibling);
        }
        self
    }

    fn program(&self, role: Role) -> &Program {
        match role {
            Role::Broker => &self.broker,
            Role::Collector => &self.collector,
            Role::Agent => &self.agent,
        }
    }

    /// The executable that runs `role`.
    pub fn path(&self, role: Role) -> &Path {
        &self.program(role).path
    }

    /// Starts `role` named `name` with `args` after the role's own and
    /// `envs` on top, logging to `{log_dir}/{name}.log`.
    pub fn spawn(
        &self,
        role: Role,
        name: &str,
        args: &[String],
        envs: &[(String, String)],
        log_dir: &Path,
    ) -> Result<Child, ChildError> {
        let program = self.program(role);
        if !program.path.exists() {
            return Err(ChildError::Spawn {
                name: name.into(),
                program: program.path.display().to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "not built; run `cargo build --workspace --bins` (or `cargo test --workspace`, which builds every binary) first",
                ),
            });
        }
        let mut all_args = program.args.clone();
        all_args.extend_from_slice(args);
        let mut all_envs = self.envs.clone();
        all_envs.extend_from_slice(envs);
        Child::spawn(name, &program.path, &all_args, &all_envs, log_dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulator_runs_subcommands_and_binaries_run_themselves() {
        let sim = Programs::simulator(Path::new("/x/dockline-sim"));
        assert_eq!(sim.path(Role::Agent), Path::new("/x/dockline-sim"));
        assert_eq!(sim.agent.args, ["agent"]);
        let bins = Programs::binaries(Path::new("/t/debug"));
        assert_eq!(
            bins.path(Role::Collector),
            Path::new("/t/debug/dockline-collector")
        );
        assert!(bins.collector.args.is_empty());
        assert_eq!(
            bins.broker.args,
            ["broker"],
            "the broker is the simulator's"
        );
    }

    #[test]
    fn a_missing_binary_names_the_build_to_run() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = Programs::binaries(dir.path())
            .spawn(Role::Agent, "a", &[], &[], dir.path())
            .expect_err("not built");
        assert!(err.to_string().contains("cargo build"), "{err}");
    }
}

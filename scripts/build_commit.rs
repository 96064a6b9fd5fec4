//! Build script shared by the agent and the collector: stamps the git commit
//! the binary was built from into `DOCKLINE_BUILD_COMMIT` (read with `env!`),
//! for `--version`, the status API and the heartbeat.
//!
//! A build outside a git checkout (a source tarball) says `unknown`, or
//! whatever `DOCKLINE_BUILD_COMMIT` holds in the build's environment (a
//! packaging job that knows the commit). Uncommitted changes are not marked:
//! the script reruns only when HEAD or the index moves, so a `-dirty` flag
//! would often be stale.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    Some(text.trim().to_string())
}

fn main() {
    println!("cargo:rerun-if-env-changed=DOCKLINE_BUILD_COMMIT");
    let commit = match std::env::var("DOCKLINE_BUILD_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_string(),
        _ => match git(&["rev-parse", "--short=12", "HEAD"]) {
            Some(hash) => {
                // Rebuild when HEAD moves (a commit, a checkout): HEAD, its
                // reflog (written on every move), the branch's ref and
                // packed-refs. Only files that exist: cargo
                // reruns the script on every build for a missing one (a fresh
                // clone keeps its refs in packed-refs). Not the index, which
                // `git add` touches without changing the commit.
                let mut watched = vec![
                    "HEAD".to_string(),
                    "logs/HEAD".to_string(),
                    "packed-refs".to_string(),
                ];
                if let Some(head_ref) = git(&["symbolic-ref", "-q", "HEAD"]) {
                    watched.push(head_ref);
                }
                for file in watched {
                    if let Some(path) = git(&["rev-parse", "--git-path", &file])
                        && std::path::Path::new(&path).exists()
                    {
                        println!("cargo:rerun-if-changed={path}");
                    }
                }
                hash
            }
            None => "unknown".to_string(),
        },
    };
    println!("cargo:rustc-env=DOCKLINE_BUILD_COMMIT={commit}");
}

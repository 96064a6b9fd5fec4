//! The one schema migration runner of both backends: each dialect lists
//! its steps (a version and the SQL text that reaches it) and says how to
//! read and write its version number ([`SchemaTx`]); the order, the
//! refusal of a newer schema and the version bookkeeping live here.
//!
//! # Invariants
//!
//! - All pending steps and the new version number run in the caller's one
//!   transaction: a crash mid-way leaves the schema at the version it had
//!   (DDL is transactional in both SQLite and PostgreSQL).
//! - Steps run in ascending version order, each once: a step runs only
//!   when the stored version is below it.
//! - A schema newer than the newest step is refused and left untouched
//!   ([`InboxError::SchemaTooNew`]): this collector would misread it.

use crate::inbox::InboxError;

/// One migration step: the SQL that brings the schema to `version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Step {
    /// The version after this step.
    pub version: i64,
    /// Its statements.
    pub sql: &'static str,
}

/// What the runner needs of a dialect, each in the migration's
/// transaction.
pub(crate) trait SchemaTx {
    /// Where the schema lives, for messages (a file, or a URL without its
    /// password).
    fn place(&self) -> String;

    /// The stored schema version (0 for an empty database).
    async fn version(&self) -> Result<i64, InboxError>;

    /// Runs one step's statements.
    async fn run(&self, sql: &'static str) -> Result<(), InboxError>;

    /// Work a step needs besides its SQL (filling new columns from stored
    /// envelopes), right after the step to `version`.
    async fn after_step(&self, version: i64) -> Result<(), InboxError> {
        let _ = version;
        Ok(())
    }

    /// Stores the schema version.
    async fn set_version(&self, version: i64) -> Result<(), InboxError>;
}

/// The steps `migrate` would run from `version`, in order; refuses a
/// version newer than the newest step.
pub(crate) fn pending(
    steps: &[Step],
    version: i64,
    place: impl FnOnce() -> String,
) -> Result<Vec<Step>, InboxError> {
    let newest = steps.iter().map(|s| s.version).max().unwrap_or(0);
    if version > newest {
        return Err(InboxError::SchemaTooNew {
            path: place().into(),
            found: version,
            supported: newest,
        });
    }
    let mut todo: Vec<Step> = steps
        .iter()
        .copied()
        .filter(|s| s.version > version)
        .collect();
    todo.sort_by_key(|s| s.version);
    Ok(todo)
}

/// Brings the schema to the newest of `steps` through `tx`; see the module
/// docs.
pub(crate) async fn migrate<T: SchemaTx>(tx: &T, steps: &[Step]) -> Result<(), InboxError> {
    let version = tx.version().await?;
    let todo = pending(steps, version, || tx.place())?;
    for step in &todo {
        tx.run(step.sql).await?;
        tx.after_step(step.version).await?;
    }
    if let Some(last) = todo.last() {
        tx.set_version(last.version).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    const STEPS: [Step; 3] = [
        Step {
            version: 1,
            sql: "one",
        },
        Step {
            version: 2,
            sql: "two",
        },
        Step {
            version: 3,
            sql: "three",
        },
    ];

    /// A schema in memory: its version and every call, in order.
    struct Model {
        version: RefCell<i64>,
        log: RefCell<Vec<String>>,
    }

    impl SchemaTx for Model {
        fn place(&self) -> String {
            "model".into()
        }
        async fn version(&self) -> Result<i64, InboxError> {
            Ok(*self.version.borrow())
        }
        async fn run(&self, sql: &'static str) -> Result<(), InboxError> {
            self.log.borrow_mut().push(sql.into());
            Ok(())
        }
        async fn after_step(&self, version: i64) -> Result<(), InboxError> {
            self.log.borrow_mut().push(format!("after {version}"));
            Ok(())
        }
        async fn set_version(&self, version: i64) -> Result<(), InboxError> {
            self.log.borrow_mut().push(format!("version {version}"));
            *self.version.borrow_mut() = version;
            Ok(())
        }
    }

    fn model(version: i64) -> Model {
        Model {
            version: RefCell::new(version),
            log: RefCell::new(Vec::new()),
        }
    }

    fn run(m: &Model) -> Result<(), InboxError> {
        crate::inbox::ready(migrate(m, &STEPS))?
    }

    #[test]
    fn an_old_schema_runs_each_missing_step_once_in_order() {
        let m = model(1);
        run(&m).expect("migrate");
        assert_eq!(
            *m.log.borrow(),
            ["two", "after 2", "three", "after 3", "version 3"]
        );
        m.log.borrow_mut().clear();
        run(&m).expect("again");
        assert!(m.log.borrow().is_empty(), "nothing left to do");
    }

    #[test]
    fn a_newer_schema_is_refused_untouched_naming_both_versions() {
        let m = model(9);
        let err = run(&m).expect_err("too new");
        assert!(m.log.borrow().is_empty());
        let text = err.to_string();
        assert!(
            text.contains("schema version 9") && text.contains("this collector's 3"),
            "{text}"
        );
    }
}

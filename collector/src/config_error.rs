//! The one refusal every config section gives: [`ConfigCheckError`], the
//! dotted key and what is wrong with it (and how to fix it).
//!
//! A leaf: each section's `check` (in the module that owns the section)
//! returns it, and `crate::config` composes the sections, so no section
//! imports the whole config.

/// A config value that parsed but cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config key `{key}` {problem}")]
pub struct ConfigCheckError {
    /// The dotted key path.
    pub key: &'static str,
    /// What is wrong and how to fix it.
    pub problem: String,
}

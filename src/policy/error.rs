//! Policy loading errors: every problem names the document, the object and the issue.

use std::fmt;

/// One problem found in a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The document (file name) the problem is in.
    pub document: String,
    /// The object inside it, e.g. ``roles[2] `Security Reader` ``.
    pub object: String,
    /// What is wrong, lowercase, with bad values in backticks.
    pub message: String,
}

impl Problem {
    pub fn new(document: impl Into<String>, object: impl Into<String>, message: String) -> Self {
        Self {
            document: document.into(),
            object: object.into(),
            message,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.document, self.object, self.message)
    }
}

/// A policy that could not be loaded, with every problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyError {
    pub problems: Vec<Problem>,
}

impl PolicyError {
    pub fn one(problem: Problem) -> Self {
        Self {
            problems: vec![problem],
        }
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problems.as_slice() {
            [] => f.write_str("invalid policy"),
            [one] => write!(f, "invalid policy: {one}"),
            many => {
                write!(f, "invalid policy: {} problems", many.len())?;
                for p in many {
                    write!(f, "\n  {p}")?;
                }
                Ok(())
            }
        }
    }
}

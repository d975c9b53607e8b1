//! The two kinds of session the demo stores, as JSON on the wire.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    /// Who said it: `user`, `assistant`, `system`, ...
    pub role: String,
    /// What was said.
    pub content: String,
}

/// A task session: one conversation with its state and variables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskSession {
    /// The task this session belongs to.
    pub task_id: String,
    /// The task's state, e.g. `running`.
    pub state: String,
    /// The conversation so far.
    #[serde(default)]
    pub messages: Vec<Message>,
    /// Named string variables.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
}

/// An orchestrator session: which task sessions it drives and where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrchestratorSession {
    /// Ids of the task sessions it drives.
    #[serde(default)]
    pub task_session_ids: Vec<String>,
    /// The current step.
    pub current_step: i64,
    /// Named string context values.
    #[serde(default)]
    pub context: BTreeMap<String, String>,
}

/// The kinds of session in the URL: `/api/sessions/{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `task`
    Task,
    /// `orchestrator`
    Orchestrator,
}

impl Kind {
    /// Parses the URL segment.
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "task" => Some(Kind::Task),
            "orchestrator" => Some(Kind::Orchestrator),
            _ => None,
        }
    }

    /// The namespace the kind is stored under.
    pub fn namespace(self) -> &'static str {
        match self {
            Kind::Task => "task",
            Kind::Orchestrator => "orchestrator",
        }
    }
}

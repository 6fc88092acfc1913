//! Typed access to the arguments the host parsed for a command.
//!
//! The host has already checked every value against the command's
//! declaration, so lookups here return `Option` only for optional arguments;
//! they never parse text.

use crate::Value;
use crate::bindings::ikkyu::plugin::types::Arg;

/// The arguments and flags of one command, by name.
#[derive(Debug, Clone)]
pub struct Args {
    items: Vec<Arg>,
}

impl Args {
    /// Wraps what the host passed.
    pub fn new(items: Vec<Arg>) -> Self {
        Self { items }
    }

    fn values<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a Value> {
        self.items
            .iter()
            .filter(move |a| a.name == name)
            .map(|a| &a.value)
    }

    /// The text of a word, text, user, room or time argument.
    pub fn text<'a>(&'a self, name: &str) -> Option<&'a str> {
        self.values(name).find_map(|v| match v {
            Value::Text(t) => Some(t.as_str()),
            _ => None,
        })
    }

    /// Every value of a repeated text-like argument or flag, in order.
    pub fn texts<'a>(&'a self, name: &str) -> Vec<&'a str> {
        self.values(name)
            .filter_map(|v| match v {
                Value::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }

    /// An integer argument.
    pub fn integer(&self, name: &str) -> Option<i64> {
        self.values(name).find_map(|v| match v {
            Value::Integer(n) => Some(*n),
            _ => None,
        })
    }

    /// A duration argument, in seconds.
    pub fn duration(&self, name: &str) -> Option<u64> {
        self.values(name).find_map(|v| match v {
            Value::Duration(s) => Some(*s),
            _ => None,
        })
    }

    /// Whether a switch was given.
    pub fn switch(&self, name: &str) -> bool {
        self.values(name).any(|v| matches!(v, Value::Switch))
    }
}
